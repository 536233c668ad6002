"""Prometheus HTTP API v1 over the StoreAPI fan-out, shaped byte for byte like Prometheus's."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from querier.promql import Engine, EngineOptions, PromQLError, QueryResult, nhist

from .config import QueryConfig
from .downsampled import lookback_delta_for, parse_max_source_resolution
from .fanout import FanoutQueryable, SelectOptions, StoreSet, StoreUnavailable
from .histjson import histogram_point, matrix_entry
from .jsonfmt import format_value, points_json, ts_fragment
from .params import MAX_TIME_MS, MIN_TIME_MS, BadParam, parse_duration_ms, parse_matchers, parse_time
from receiver.tsdb.labels import Matcher, MatchType

log = logging.getLogger(__name__)

VERSION = "0.1.0"
MAX_POINTS = 11000

_STATUS = {"bad_data": 400, "execution": 422, "timeout": 503, "canceled": 503, "internal": 500}


def _json(payload: dict, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def error_response(kind: str, msg: str) -> web.Response:
    return _json({"status": "error", "errorType": kind, "error": msg}, _STATUS.get(kind, 422))


def _points(ts, vals) -> orjson.Fragment:
    return orjson.Fragment(points_json(ts, vals))


def result_payload(res: QueryResult) -> dict:
    if res.kind == "vector":
        result = [{"metric": dict(lbls), "histogram": orjson.Fragment(histogram_point(t, v))}
                  if isinstance(v, nhist.H) else
                  {"metric": dict(lbls), "value": orjson.Fragment(f'[{ts_fragment(t)},"{format_value(v)}"]')}
                  for lbls, t, v in res.series]
    elif res.kind == "matrix":
        result = [matrix_entry(dict(lbls), ts, vals) if vals.dtype == object else
                  {"metric": dict(lbls), "values": _points(ts, vals)} for lbls, ts, vals in res.series]
    elif res.kind == "scalar":
        t, v = res.series
        result = orjson.Fragment(f'[{ts_fragment(t)},"{format_value(v)}"]')
    else:
        t, s = res.series
        result = orjson.Fragment(f"[{ts_fragment(t)},{orjson.dumps(s).decode()}]")
    payload: dict = {"status": "success", "data": {"resultType": res.kind, "result": result}}
    if res.warnings:
        payload["warnings"] = list(res.warnings)
    if res.infos:
        payload["infos"] = list(res.infos)
    return payload


class QueryAPI:
    def __init__(self, cfg: QueryConfig, stores: StoreSet, registry: CollectorRegistry) -> None:
        self.cfg = cfg
        self.stores = stores
        self.requests = Counter("http_requests", "Query API requests by handler and code.",
                                ["handler", "code"], registry=registry)
        self.latency = Histogram("http_request_duration_seconds", "Query API latency.",
                                 ["handler"], registry=registry)
        self.engine = Engine(EngineOptions(lookback_delta_ms=cfg.lookback_delta_ms,
                                           max_samples=cfg.max_samples, timeout_s=cfg.timeout_s))
        self._slots = asyncio.Semaphore(cfg.max_concurrent)

    def register(self, app: web.Application) -> None:
        app.middlewares.append(self._instrument)
        r = app.router
        for path, handler in (("/api/v1/query", self.query), ("/api/v1/query_range", self.query_range),
                              ("/api/v1/series", self.series), ("/api/v1/labels", self.labels)):
            r.add_get(path, handler)
            r.add_post(path, handler)
        r.add_get("/api/v1/label/{name}/values", self.label_values)
        r.add_get("/api/v1/status/buildinfo", self.buildinfo)
        r.add_get("/api/v1/metadata", self.empty_dict)
        r.add_get("/api/v1/rules", self.rules)
        r.add_get("/api/v1/alerts", self.alerts)

    @web.middleware
    async def _instrument(self, request: web.Request, handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        resp = await handler(request)
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "other"
        self.requests.labels(name, str(resp.status)).inc()
        self.latency.labels(name).observe(time.perf_counter() - t0)
        return resp

    @staticmethod
    async def _params(request: web.Request) -> dict[str, list[str]]:
        params: dict[str, list[str]] = {}
        for k, v in request.query.items():
            params.setdefault(k, []).append(v)
        if request.method == "POST":
            form = await request.post()
            for k, v in form.items():
                params.setdefault(k, []).append(str(v))
        return params

    def _options(self, request: web.Request, p: dict) -> SelectOptions:
        """Thanos's read parameters: ``dedup``, ``replicaLabels[]``, ``partial_response``, and the
        tenant (from ``--query.tenant-header``) when ``--query.enforce-tenancy`` is on."""
        replicas = tuple(p.get("replicaLabels[]") or self.cfg.replica_labels)
        if not _flag(_first(p, "dedup"), True):
            replicas = ()
        extra: tuple[Matcher, ...] = ()
        if self.cfg.enforce_tenancy:
            tenant = request.headers.get(self.cfg.tenant_header) or self.cfg.default_tenant
            extra = (Matcher(MatchType.EQ, self.cfg.tenant_label_name, tenant),)
        return SelectOptions(replica_labels=replicas, dedup_func=self.cfg.dedup_func,
                             partial_response=_flag(_first(p, "partial_response"),
                                                    self.cfg.partial_response),
                             extra_matchers=extra)

    async def _evaluate(self, fn, *args, opts: SelectOptions | None = None) -> web.Response:
        loop = asyncio.get_running_loop()
        queryable = FanoutQueryable(self.stores, loop, opts or SelectOptions())
        async with self._slots:
            try:
                res = await asyncio.wait_for(asyncio.to_thread(fn, queryable, *args),
                                             timeout=self.cfg.timeout_s)
            except PromQLError as e:
                return error_response(e.kind, str(e))
            except asyncio.TimeoutError:
                return error_response("timeout", "query timed out in expression evaluation")
            except StoreUnavailable as e:
                return error_response("execution", str(e))
            except Exception as e:  # an engine bug must not become a 5xx for the user's query
                log.exception("query evaluation failed")
                return error_response("execution", str(e))
        for w in queryable.warnings:
            if w not in res.warnings:
                res.warnings.append(w)
        return _json(result_payload(res))

    async def query(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        try:
            q = _one(p, "query")
            t = parse_time(_first(p, "time"), "time", default_ms=int(time.time() * 1000))
        except BadParam as e:
            return error_response("bad_data", str(e))
        try:
            opts, engine = self._resolution(p, self._options(request, p), None)
        except BadParam as e:
            return error_response("bad_data", str(e))
        return await self._evaluate(engine.instant, q, t, opts=opts)

    async def query_range(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        try:
            q = _one(p, "query")
            start = parse_time(_first(p, "start"), "start")
            end = parse_time(_first(p, "end"), "end")
            if end < start:
                raise BadParam('invalid parameter "end": end timestamp must not be before start time')
            step = parse_duration_ms(_first(p, "step"), "step")
            if step <= 0:
                raise BadParam('invalid parameter "step": zero or negative query resolution step '
                               "widths are not accepted. Try a positive integer")
            if (end - start) / step > MAX_POINTS:
                raise BadParam("exceeded maximum resolution of 11,000 points per timeseries. "
                               "Try decreasing the query resolution (?step=XX)")
        except BadParam as e:
            return error_response("bad_data", str(e))
        try:
            opts, engine = self._resolution(p, self._options(request, p), step)
        except BadParam as e:
            return error_response("bad_data", str(e))
        return await self._evaluate(engine.range, q, start, end, step, opts=opts)

    def _resolution(self, p: dict, opts: SelectOptions, step_ms: int | None
                    ) -> tuple[SelectOptions, Engine]:
        """Thanos's ``max_source_resolution`` (0s, 5m, 1h, auto): how coarse the downsampled
        data may be; coarser data also needs a longer lookback."""
        try:
            res = parse_max_source_resolution(_first(p, "max_source_resolution"), step_ms,
                                              auto=self.cfg.auto_downsampling)
        except ValueError as e:
            raise BadParam(f'invalid parameter "max_source_resolution": {e}') from None
        if res <= 0:
            return opts, self.engine
        lookback = lookback_delta_for(self.cfg.lookback_delta_ms, res)
        engine = self.engine if lookback == self.cfg.lookback_delta_ms else Engine(EngineOptions(
            lookback_delta_ms=lookback, max_samples=self.cfg.max_samples, timeout_s=self.cfg.timeout_s))
        return dataclasses.replace(opts, max_resolution_ms=res), engine

    def _range(self, p: dict) -> tuple[int, int]:
        return (parse_time(_first(p, "start"), "start", MIN_TIME_MS),
                parse_time(_first(p, "end"), "end", MAX_TIME_MS))

    async def series(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        try:
            selectors = p.get("match[]") or []
            if not selectors:
                raise BadParam("no match[] parameter provided")
            mint, maxt = self._range(p)
            sets = [parse_matchers(s) for s in selectors]
        except BadParam as e:
            return error_response("bad_data", str(e))
        seen: dict = {}
        opts, warnings = self._options(request, p), []
        try:
            results = await asyncio.gather(*(self.stores.series(
                mint, maxt, ms, skip_chunks=True, opts=opts, warnings=warnings) for ms in sets))
        except StoreUnavailable as e:
            return error_response("execution", str(e))
        for raw in results:
            for s in raw:
                seen.setdefault(s.labels, None)
        data = [dict(lbls) for lbls in sorted(seen)]
        return _json(_with_warnings({"status": "success", "data": data}, warnings))

    async def labels(self, request: web.Request) -> web.Response:
        return await self._label_query(request, lambda mint, maxt, ms, opts, warnings: (
            self.stores.label_names(mint, maxt, ms, opts=opts, warnings=warnings)))

    async def label_values(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return await self._label_query(request, lambda mint, maxt, ms, opts, warnings: (
            self.stores.label_values(name, mint, maxt, ms, opts=opts, warnings=warnings)))

    async def _label_query(self, request: web.Request, fetch) -> web.Response:
        """``labels`` and ``label/<name>/values``: the union over every ``match[]`` (or all)."""
        p = await self._params(request)
        try:
            mint, maxt = self._range(p)
            sets = [parse_matchers(s) for s in p.get("match[]") or []] or [[]]
        except BadParam as e:
            return error_response("bad_data", str(e))
        opts, warnings = self._options(request, p), []
        try:
            results = await asyncio.gather(*(fetch(mint, maxt, ms, opts, warnings) for ms in sets))
        except StoreUnavailable as e:
            return error_response("execution", str(e))
        return _json(_with_warnings({"status": "success", "data": sorted(set().union(*results))},
                                    warnings))

    async def buildinfo(self, _: web.Request) -> web.Response:
        return _json({"status": "success", "data": {
            "version": VERSION, "revision": "", "branch": "", "buildUser": "", "buildDate": "",
            "goVersion": "python"}})

    async def empty_dict(self, _: web.Request) -> web.Response:
        return _json({"status": "success", "data": {}})

    async def rules(self, _: web.Request) -> web.Response:
        return _json({"status": "success", "data": {"groups": []}})

    async def alerts(self, _: web.Request) -> web.Response:
        return _json({"status": "success", "data": {"alerts": []}})


def _first(p: dict, name: str) -> str | None:
    v = p.get(name)
    return v[0] if v else None


def _one(p: dict, name: str) -> str:
    v = _first(p, name)
    if v is None or v == "":
        raise BadParam(f'invalid parameter "{name}": query must not be empty' if name == "query"
                       else f'invalid parameter "{name}"')
    return v


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "t", "true", "yes", "on")


def _with_warnings(payload: dict, warnings: list[str]) -> dict:
    if warnings:
        payload["warnings"] = sorted(set(warnings))
    return payload
