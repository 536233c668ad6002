"""Prometheus HTTP API v1 over the StoreAPI fan-out, shaped byte for byte like Prometheus's."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import orjson
import re2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CollectorRegistry

from querier.promql import Engine, EngineOptions, PromQLError, QueryResult, nhist
from querier.promql.engine import parse as parse_promql
from querier.promql.printer import pretty
from receiver.exemplars import selectors_of as extract_selectors

from common.httpgzip import compress_response, send_pieces
from common.httpmetrics import http_metrics
from common.tls import certificate_field, peer_certificate, valid_query_tenant

from .config import DEFAULT_TENANT_HEADER, QueryConfig
from .downsampled import lookback_delta_for, parse_max_source_resolution
from .rulesjson import RULE_TYPES, alerts_json, group_json, merge_groups
from .fanout import TIMEOUT_MSG, FanoutQueryable, SelectOptions, StoreSet, StoreUnavailable
from ._request import range_args
from .inline import DEFAULT_INLINE_LIMITS, InlineQuery, fetch_plain, plan_nodes, plan_selects
from .parsecache import ParseCache
from .plainrange import plain_instant, plain_range, plain_selector
from .histjson import histogram_point, matrix_entry
from .querymetrics import add_engine_metrics
from .jsonfmt import format_value, points_json, ts_fragment
from .params import (MAX_TIME_MS, MIN_TIME_MS, BadParam, parse_bool, parse_duration_ns,
                     parse_limit, parse_matchers, parse_time)
from .status import (HEAD_WINDOW_MS, TSDB_STATUS_LIMIT, TSDB_STATUS_MAX_SERIES, ProcessInfo,
                     buildinfo, config_yaml, process_status, runtimeinfo,
                     tsdb_status)
from receiver.tsdb.labels import Matcher, MatchType
from storeapi import rules_pb2

log = logging.getLogger(__name__)

MAX_POINTS = 11000
# Prometheus's CORS answer headers (web/api/v1 SetCORS).
CORS_HEADERS = {"Access-Control-Allow-Headers": "Accept, Authorization, Content-Type, Origin",
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Expose-Headers": "Date"}

TRUNCATED = "results truncated due to limit"
CHUNK_BYTES = 1 << 20
DEADLINE_MSG = "context deadline exceeded"  # what Go's metadata calls fail with

_STATUS = {"bad_data": 400, "execution": 422, "timeout": 503, "canceled": 503, "internal": 500}

_UNREAD_BODY = web.RequestKey("unread_body", bool)  # its form body failed to decode
# Longest wait for a POST's form body, as Prometheus's --web.read-timeout (5 m): a client
# that stops short of its Content-Length holds no connection and handler beyond it.
BODY_READ_TIMEOUT_S = 300.0


def _json(payload: dict, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


@dataclass(slots=True)
class Answer:
    """A query's answer before an HTTP front sends it (aiohttp's, or querier.fasthttp's for
    the common case): its status and its JSON body in pieces."""
    status: int
    chunks: list[bytes]


def method_not_allowed(allowed) -> web.Response:
    """A method the route does not take (HEAD included), as Go's router answers it in Thanos's
    and Prometheus's API: 405, Go's http.Error body, the methods sorted in one Allow line."""
    return web.Response(status=405, text="Method Not Allowed\n",
                        content_type="text/plain", charset="utf-8",
                        headers={"Allow": ", ".join(sorted(allowed)),
                                 "X-Content-Type-Options": "nosniff"})


def error_answer(kind: str, msg: str) -> Answer:
    return Answer(_STATUS.get(kind, 422),
                  [orjson.dumps({"status": "error", "errorType": kind, "error": msg})])

def error_response(kind: str, msg: str) -> web.Response:
    answer = error_answer(kind, msg)
    return web.Response(body=answer.chunks[0], status=answer.status,
                        content_type="application/json")

class RequestHead(Protocol):
    """What a query reads of its request besides the parameters: the headers (the tenant's)."""
    headers: Mapping[str, str]

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

_ONE_MATRIX = b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":'


def one_matrix_json(res: QueryResult) -> list[bytes] | None:
    """``result_chunks(result_payload(res))`` of the one-series panel's answer (a matrix of one
    float series, no warnings, infos or stats), in a few calls instead of the general walk; None
    for any other answer. No ``limit`` cuts one series."""
    if res.kind != "matrix" or len(res.series) != 1 or res.warnings or res.infos:
        return None
    lbls, ts, vals = res.series[0]
    if vals.dtype == object:
        return None  # native histograms
    return [b"".join((_ONE_MATRIX, orjson.dumps(dict(lbls)), b',"values":', points_json(ts, vals),
                      b"}]}}"))]

def truncate(res: QueryResult, limit: int) -> QueryResult:
    """Prometheus's ``limit`` on a query: at most ``limit`` series, with a warning if cut."""
    if limit and res.kind in ("vector", "matrix") and len(res.series) > limit:
        res.series = res.series[:limit]
        res.warnings.append(TRUNCATED)
    return res

def json_chunks(payload: dict, items: list, marker: bytes) -> list[bytes]:
    """``orjson.dumps`` of ``payload`` with ``items`` where it has the empty list at ``marker``
    (e.g. ``"result":[]``), in pieces of about CHUNK_BYTES. One dumps (or join) of tens of MB
    holds the GIL for all of it, and the event loop waits that long."""
    head, _, tail = orjson.dumps(payload).partition(marker)
    if len(items) < 2:
        return [head + marker[:-1] + orjson.dumps(items)[1:] + tail]
    chunks: list[bytes] = []
    cur, size = [head, marker[:-1]], 0
    for i, item in enumerate(items):
        piece = orjson.dumps(item)
        cur.append(b"," + piece if i else piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            chunks.append(b"".join(cur))
            cur, size = [], 0
    cur.append(b"]" + tail)
    chunks.append(b"".join(cur))
    return chunks

def result_chunks(payload: dict) -> list[bytes]:
    result = payload["data"]["result"]
    if not isinstance(result, list) or len(result) < 2:  # small: one dumps, nothing to split
        return [orjson.dumps(payload)]
    return json_chunks({**payload, "data": {**payload["data"], "result": []}}, result,
                       b'"result":[]')

def evaluate_to_json(run, engine: Engine, queryable: FanoutQueryable, limit: int,
                     stats_queue_s: float | None = None, expr=None) -> list[bytes]:
    """The whole of a query that costs CPU, in a worker thread: evaluation and JSON encoding.
    With ``stats_queue_s`` (the time the query waited for a slot) the answer carries
    Prometheus's ``stats`` object. ``expr``: the query already parsed, or None."""
    t0 = time.perf_counter()
    res = run(engine, queryable, expr)
    return result_to_json(res, engine, queryable, limit, stats_queue_s, time.perf_counter() - t0)

def result_to_json(res: QueryResult, engine: Engine | None, queryable: FanoutQueryable,
                   limit: int, stats_queue_s: float | None, eval_s: float) -> list[bytes]:
    """An evaluated query's answer, with the stores' warnings (and ``stats`` if asked: then
    ``engine`` is the one that evaluated it)."""
    for w in queryable.warnings:
        if w not in res.warnings:
            res.warnings.append(w)
    payload = result_payload(truncate(res, limit))
    if stats_queue_s is not None:
        payload["data"]["stats"] = query_stats(engine, stats_queue_s, eval_s)
    return result_chunks(payload)

def query_stats(engine: Engine, queue_s: float, eval_s: float) -> dict:
    """Prometheus 3.14's ``stats`` (stats=all): timings in seconds and the sample counts. Store
    fetches happen inside the evaluation, so they count as inner evaluation time; the samples
    the selectors read are both the queryable and the read samples."""
    loaded, peak = engine.sample_stats()
    return {"timings": {"evalTotalTime": eval_s, "resultSortTime": 0, "queryPreparationTime": 0,
                        "innerEvalTime": eval_s, "execQueueTime": queue_s,
                        "execTotalTime": queue_s + eval_s},
            "samples": {"totalQueryableSamples": loaded, "samplesRead": loaded, "peakSamples": peak}}

async def send_chunks(request: web.Request, chunks: list[bytes], status: int = 200
                      ) -> web.StreamResponse:
    """The body piece by piece (a HEAD answer has none: aiohttp's Response knows that); a
    one-piece body is compressed, if asked, by the instrument middleware."""
    if len(chunks) == 1 or request.method == "HEAD":
        return web.Response(body=b"".join(chunks), status=status, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await send_pieces(request, resp, chunks)
    return resp

def metadata_to_json(data: list, limit: int, warnings: list[str]) -> list[bytes]:
    if limit and len(data) > limit:
        data = data[:limit]
        warnings = warnings + [TRUNCATED]
    return json_chunks(_with_warnings({"status": "success", "data": []}, warnings), data,
                       b'"data":[]')

def labels_to_json(results: list[list[str]], limit: int, warnings: list[str]) -> list[bytes]:
    return metadata_to_json(sorted(set().union(*results)), limit, warnings)

def series_to_json(results: list, limit: int, warnings: list[str]) -> list[bytes]:
    seen: dict = {}
    for raw in results:
        for s in raw:
            seen.setdefault(s.labels, None)
    return metadata_to_json([dict(lbls) for lbls in sorted(seen)], limit, warnings)

class _Slots(asyncio.Semaphore):
    """--query.max-concurrent's semaphore, with the uncontended take and give-back of a query
    as a few steps: Semaphore's locked(), acquire() and release() are a dozen Python lines a
    query. (querier.querymetrics reads the same _value and _waiters.)"""

    def take_now(self) -> bool:
        """Take a slot when acquire() would at once: one is free and no one waits for it;
        False (nothing taken) otherwise."""
        if self._value > 0 and not self._waiters:
            self._value -= 1
            return True
        return False

    def give_back(self) -> None:
        """release(): the slot freed, the next waiter (if any) woken."""
        self._value += 1
        if self._waiters:
            self._wake_up_next()


class QueryAPI:
    def __init__(self, cfg: QueryConfig, stores: StoreSet, registry: CollectorRegistry) -> None:
        self.cfg = cfg
        self.stores = stores
        self.registry = registry
        # http_requests_total and http_request_duration_seconds of a request to a route
        # answered with a status, started at a perf_counter() time
        self.observe = http_metrics(registry).observe
        self.engine_opts = EngineOptions(lookback_delta_ms=cfg.lookback_delta_ms,
                                         max_samples=cfg.max_samples, timeout_s=cfg.timeout_s,
                                         features=cfg.promql_features)
        # A query holds its slot until its worker is done, also after its answer (a timeout)
        # went out: --query.max-concurrent bounds the work running, not just the requests.
        self._slots = _Slots(cfg.max_concurrent)
        self._pool = ThreadPoolExecutor(max_workers=cfg.max_concurrent, thread_name_prefix="query")
        self._running: set[FanoutQueryable] = set()
        add_engine_metrics(registry, self._slots, cfg.max_concurrent)
        self.process = ProcessInfo()
        self.cors = re2.compile(f"^(?:{cfg.cors_origin})$")
        self.cors_any = cfg.cors_origin == ".*"
        self.inline = DEFAULT_INLINE_LIMITS  # what a query evaluated on the event loop may cost
        self.parsed = ParseCache(self.engine_opts.features)  # trees of short, repeated queries
        # tenant -> (SelectOptions, EngineOptions) of a request setting no option parameter
        self._tenant_defaults: dict[str, tuple[SelectOptions, EngineOptions]] = {}
        # the loop the querier serves on (Querier.start), kept: on 3.11 each
        # asyncio.get_running_loop() is a getpid() system call
        self.loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        """Stop taking queries; running ones fail at their next store call, so the process
        does not wait on them at exit."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for q in list(self._running):
            q.cancel()

    def register(self, app: web.Application) -> None:
        app.middlewares.append(self._instrument)
        app.on_response_prepare.append(self._on_prepare)
        r = app.router  # no HEAD: Thanos's and Prometheus's API answer it 405
        for path, handler in (("/api/v1/query", self.query), ("/api/v1/query_range", self.query_range),
                              ("/api/v1/series", self.series), ("/api/v1/labels", self.labels),
                              ("/api/v1/format_query", self.format_query),
                              ("/api/v1/query_exemplars", self.query_exemplars)):
            r.add_get(path, handler, allow_head=False)
            r.add_post(path, handler)
        r.add_get("/api/v1/label/{name}/values", self.label_values, allow_head=False)
        r.add_get("/api/v1/status/buildinfo", self.buildinfo, allow_head=False)
        r.add_get("/api/v1/status/config", self.status_config, allow_head=False)
        r.add_get("/api/v1/status/flags", self.status_flags, allow_head=False)
        r.add_get("/api/v1/status/runtimeinfo", self.status_runtimeinfo, allow_head=False)
        r.add_get("/api/v1/status/process", self.status_process, allow_head=False)
        r.add_get("/api/v1/status/tsdb", self.status_tsdb, allow_head=False)
        r.add_route("OPTIONS", "/api/v1/{path:.*}", self.options)
        r.add_get("/api/v1/metadata", self.metadata, allow_head=False)
        r.add_get("/api/v1/rules", self.rules, allow_head=False)
        r.add_get("/api/v1/alerts", self.alerts, allow_head=False)
        r.add_get("/api/v1/stores", self.endpoints, allow_head=False)

    @web.middleware
    async def _instrument(self, request: web.Request, handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        try:
            resp = await handler(request)
        except BadParam as e:
            resp = error_response("bad_data", str(e))
        except web.HTTPMethodNotAllowed as e:
            resp = method_not_allowed(e.allowed_methods)
        if request.get(_UNREAD_BODY) and not resp.prepared:
            resp.force_close()  # the rest of the body cannot be read: no next request on it
        if isinstance(resp, web.Response) and not resp.prepared:
            await compress_response(request, resp)
        route = request.match_info.route.resource
        self.observe(route.canonical if route is not None else "other", resp.status, t0)
        return resp

    async def _on_prepare(self, request: web.Request, resp: web.StreamResponse) -> None:
        """Just before the headers go out: CORS headers for a browser's request, as Prometheus's
        --web.cors.origin."""
        origin = request.headers.get("Origin")
        if origin:
            resp.headers.update(CORS_HEADERS)
            resp.headers.add("Vary", "Origin")  # after a compressed answer's Vary: Accept-Encoding
            if self.cors_any:
                resp.headers["Access-Control-Allow-Origin"] = "*"
            elif self.cors.match(origin):
                resp.headers["Access-Control-Allow-Origin"] = origin

    async def options(self, _: web.Request) -> web.Response:
        return web.Response(status=204)

    @staticmethod
    async def _params(request: web.Request) -> dict[str, list[str]]:
        params: dict[str, list[str]] = {}
        for k, v in request.query.items():
            params.setdefault(k, []).append(v)
        if request.method == "POST":
            try:
                async with asyncio.timeout(BODY_READ_TIMEOUT_S):
                    form = await request.post()
            except TimeoutError:
                request[_UNREAD_BODY] = True
                raise BadParam("error parsing form values: read timeout") from None
            except (ValueError, UnicodeDecodeError, RequestPayloadError,
                    HttpProcessingError) as e:  # as Prometheus's r.ParseForm(); also a body
                # that does not decode as its Content-Encoding says
                request[_UNREAD_BODY] = True
                raise BadParam(f"error parsing form values: {e}") from None
            for k, v in form.items():
                params.setdefault(k, []).append(str(v))
        return params

    def _read_options(self, request: RequestHead, p: dict, step_ms: int | None
                      ) -> tuple[SelectOptions, EngineOptions]:
        """``_resolution(p, _options(request, p), step_ms)``; for a request that sets none of
        the option parameters (a dashboard's every query), its tenant's defaults, worked out
        once per tenant (at most _MAX_TENANT_DEFAULTS kept)."""
        if self.cfg.auto_downsampling or not _OPTION_PARAMS.isdisjoint(p):
            return self._resolution(p, self._options(request, p), step_ms)
        tenant = self._tenant_name(request)  # a kept tenant's name was valid when kept
        got = self._tenant_defaults.get(tenant)
        if got is None:
            got = self._resolution(p, self._options(request, p), step_ms)  # (checks the name)
            if len(self._tenant_defaults) >= _MAX_TENANT_DEFAULTS:
                self._tenant_defaults.clear()
            self._tenant_defaults[tenant] = got
        return got

    def _timeout_s(self, p: dict) -> float:
        """The ``timeout`` parameter, capped by ``--query.timeout`` (<= 0: already expired)."""
        raw = p.get("timeout")  # (as _first, without its call for the usual absent one)
        if not raw or not raw[0]:
            return self.cfg.timeout_s
        return min(parse_duration_ns(raw[0], "timeout") / 1e9, self.cfg.timeout_s)

    def _options(self, request: RequestHead, p: dict) -> SelectOptions:
        """Thanos's read parameters: ``dedup``, ``replicaLabels[]``, ``partial_response``, and the
        tenant (from ``--query.tenant-header``) when ``--query.enforce-tenancy`` is on."""
        replicas = tuple(p.get("replicaLabels[]") or self.cfg.replica_labels)
        if not parse_bool(_first(p, "dedup"), "dedup", True):
            replicas = ()
        partial = parse_bool(_first(p, "partial_response"), "partial_response",
                             self.cfg.partial_response)
        tenant = self._tenant(request)
        extra: tuple[Matcher, ...] = ()
        if self.cfg.enforce_tenancy:
            extra = (Matcher(MatchType.EQ, self.cfg.tenant_label_name, tenant),)
        return SelectOptions(replica_labels=replicas, dedup_func=self.cfg.dedup_func,
                             partial_response=partial, extra_matchers=extra, tenant=tenant)

    def _tenant(self, request: RequestHead) -> str:
        """The request's tenant as Thanos reads it (tenancy.GetTenantFromHTTP): the
        ``--query.tenant-header``, else THANOS-TENANT, else ``--query.default-tenant-id``; with
        ``--query.tenant-certificate-field``, that field of the verified client certificate.
        BadParam for a name Thanos refuses (one with a ``/``) or one gRPC metadata cannot carry
        to the stores (not printable ASCII)."""
        tenant = self._tenant_name(request)
        if not valid_query_tenant(tenant):
            raise BadParam("Tenant name not valid")
        return tenant

    def _tenant_name(self, request: RequestHead) -> str:
        """The request's tenant (see _tenant), not checked yet."""
        if self.cfg.tenant_certificate_field:  # the headers are then ignored, as in Thanos
            # (the fast front serves plain HTTP only: a request there has no certificate)
            cert = peer_certificate(getattr(request, "transport", None))
            try:
                tenant = certificate_field(cert, self.cfg.tenant_certificate_field)
            except ValueError as e:
                raise BadParam(str(e)) from None
            return tenant
        tenant = request.headers.get(self.cfg.tenant_header)
        if not tenant and self.cfg.tenant_header != DEFAULT_TENANT_HEADER:  # (else read again)
            tenant = request.headers.get(DEFAULT_TENANT_HEADER)
        return tenant or self.cfg.default_tenant

    async def _evaluate(self, run, timeout_s: float, opts: SelectOptions,
                        eopts: EngineOptions, limit: int, stats: bool = False, query: str = "",
                        steps: int = 1, step_ms: int = 0, start_ms: int | None = None,
                        end_ms: int | None = None) -> Answer:
        """Run ``run(engine, queryable, expr)`` within ``timeout_s``: on the event loop when its
        plan is small (querier.inline), else in a worker; at the deadline the answer is
        Prometheus's timeout error whether or not the worker has stopped yet. ``start_ms``: the
        first step's time (lets the loop path fetch a plain selector's data up front);
        ``end_ms``: the range query's end, or the instant query's time (with ``step_ms`` 0):
        lets a plain selector skip the engine."""
        loop = self.loop or asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            if timeout_s <= 0 or not self._slots.take_now():  # wait for a slot until the deadline
                await asyncio.wait_for(self._slots.acquire(), timeout=timeout_s)
        except TimeoutError:
            return error_answer("timeout", "query timed out in query queue")
        left = deadline - loop.time()
        queued_s = timeout_s - left if stats else None
        queryable = FanoutQueryable(self.stores, loop, opts, deadline=deadline)
        self._running.add(queryable)

        def done(_=None) -> None:
            self._running.discard(queryable)
            self._slots.give_back()
        try:
            expr, body, engine = await self._on_loop(run, eopts, left, queryable, query, steps,
                                                     step_ms, limit, queued_s, start_ms, end_ms)
        except Exception as e:
            done()
            return query_error(e)
        except BaseException:
            done()
            raise
        if body is not None:
            done()
            return Answer(200, body)
        engine = engine or Engine(eopts, timeout_s=left)  # (the loop's, if it made one)
        try:
            work = loop.run_in_executor(self._pool, evaluate_to_json, run, engine, queryable,
                                        limit, queued_s, expr)
        except RuntimeError:  # the pool is shut down: the server is stopping
            done()
            return error_answer("canceled", "query was canceled in query queue")
        work.add_done_callback(done)
        try:
            body = await asyncio.wait_for(asyncio.shield(work), timeout=max(left, 0.0))
        except TimeoutError:
            queryable.cancel()
            return error_answer("timeout", TIMEOUT_MSG)
        except asyncio.CancelledError:
            queryable.cancel()
            raise
        except Exception as e:
            return query_error(e)
        return Answer(200, body)

    async def _on_loop(self, run, eopts: EngineOptions, timeout_s: float,
                       queryable: FanoutQueryable, query: str, steps: int, step_ms: int,
                       limit: int, queued_s: float | None, start_ms: int | None = None,
                       end_ms: int | None = None):
        """(the parsed query or None, the answer or None, the engine it made or None): the
        answer when the query was small enough to evaluate on the loop (querier.inline), else
        None for the worker to run it. The engine (``eopts``, ``timeout_s``) is made only once
        an evaluation needs it: not for a plain selector answered by querier.plainrange."""
        if not query or len(query) > self.inline.max_query_chars:
            return None, None, None  # long text is parsed in the worker: not on the loop
        t0 = time.perf_counter()
        expr = self.parsed.parse(query)
        nodes = plan_nodes(expr, self.inline)
        if nodes is None:
            return expr, None, None
        planned = []
        if start_ms is not None and not queryable.opts.max_resolution_ms:
            planned = plan_selects(expr, start_ms, start_ms + (steps - 1) * step_ms,
                                   eopts.lookback_delta_ms)
        engine: Engine | None = None

        def run_engine(q) -> QueryResult:
            nonlocal engine
            engine = engine or Engine(eopts, timeout_s=timeout_s)
            return run(engine, q, expr)
        if (end_ms is not None and queued_s is None and len(planned) == 1
                and plain_selector(expr) is not None):  # (querier.plainrange)
            key = planned[0][0]
            raw = await fetch_plain(queryable, key, nodes, steps, self.inline)
            if raw is None:
                return expr, None, None  # the worker's, with the data fetched
            lb, most = eopts.lookback_delta_ms, eopts.max_samples
            res = (plain_range(queryable, raw, start_ms, end_ms, step_ms, lb, most, limit,
                               CHUNK_BYTES) if step_ms > 0 else
                   plain_instant(queryable, raw, start_ms, lb, most))  # type: ignore[arg-type]
            if res is None:  # the engine's to answer, on the loop still
                res = await InlineQuery(queryable, nodes, steps, step_ms, self.inline).seed(
                    key, raw).evaluate(run_engine)
        else:
            res = await InlineQuery(queryable, nodes, steps, step_ms, self.inline).evaluate(
                run_engine, planned)
        if res is None:
            return expr, None, engine
        if type(res) is list:  # the answer's body itself (plain_range)
            return expr, res, engine
        if queued_s is None and not queryable.warnings and (body := one_matrix_json(res)):
            return expr, body, engine
        return expr, result_to_json(res, engine, queryable, limit, queued_s,
                                    time.perf_counter() - t0), engine

    async def query(self, request: web.Request) -> web.StreamResponse:
        answer = await self.instant_query(request, await self._params(request))
        return await send_chunks(request, answer.chunks, answer.status)

    async def query_range(self, request: web.Request) -> web.StreamResponse:
        answer = await self.range_query(request, await self._params(request))
        return await send_chunks(request, answer.chunks, answer.status)

    async def instant_query(self, request: RequestHead, p: dict[str, list[str]]) -> Answer:
        """/api/v1/query of the parameters ``p`` (shared by both HTTP fronts)."""
        try:
            limit = parse_limit(_first(p, "limit"))
            t = parse_time(_first(p, "time"), "time",
                           default_ms=int(time.time() * 1000), labelled=True)
            timeout_s = self._timeout_s(p)
            q = _one(p, "query")
            opts, eopts = self._read_options(request, p, None)
        except BadParam as e:
            return error_answer("bad_data", str(e))
        t0 = time.monotonic()
        resp = await self._evaluate(lambda engine, qa, expr: engine.instant(qa, q, t, expr),
                                    timeout_s, opts, eopts, limit,
                                    "stats" in p and bool(_first(p, "stats")), q,
                                    start_ms=t, end_ms=t)
        self._log_if_slow(t0, resp, query=q, time=t / 1000)
        return resp

    async def range_query(self, request: RequestHead, p: dict[str, list[str]]) -> Answer:
        """/api/v1/query_range of the parameters ``p`` (shared by both HTTP fronts)."""
        try:
            args = range_args(p)  # the usual parameters, read in C (querier/_request.c)
            start, end, step_ns, q, limit = read_range_args(p) if args is NotImplemented else args
            step = max(step_ns // 1_000_000, 1)
            timeout_s = self._timeout_s(p)
            opts, eopts = self._read_options(request, p, step)
        except BadParam as e:
            return error_answer("bad_data", str(e))
        t0 = time.monotonic()
        resp = await self._evaluate(
            lambda engine, qa, expr: engine.range(qa, q, start, end, step, expr),
            timeout_s, opts, eopts, limit, "stats" in p and bool(_first(p, "stats")), q,
            (end - start) // step + 1,
            step, start, end)
        self._log_if_slow(t0, resp, query=q, start=start / 1000, end=end / 1000, step=step / 1000)
        return resp

    def _log_if_slow(self, t0: float, resp: Answer, **what) -> None:
        """One line per query slower than --query.log-queries-longer-than (as Thanos's
        query-frontend logs them)."""
        took = time.monotonic() - t0
        limit = self.cfg.slow_query_s
        if limit < 0 or (limit > 0 and took > limit):
            log.info("slow query detected", extra={**what, "time_taken_s": round(took, 3),
                                                   "status": resp.status})

    def _resolution(self, p: dict, opts: SelectOptions, step_ms: int | None
                    ) -> tuple[SelectOptions, EngineOptions]:
        """Thanos's ``max_source_resolution`` (0s, 5m, 1h, auto): how coarse the downsampled
        data may be; coarser data also needs a longer lookback."""
        try:
            res = parse_max_source_resolution(_first(p, "max_source_resolution"),
                                              step_ms,
                                              auto=self.cfg.auto_downsampling)
        except ValueError as e:
            raise BadParam(f'invalid parameter "max_source_resolution": {e}') from None
        if res <= 0:
            return opts, self.engine_opts
        lookback = lookback_delta_for(self.cfg.lookback_delta_ms, res)
        return (dataclasses.replace(opts, max_resolution_ms=res),
                dataclasses.replace(self.engine_opts, lookback_delta_ms=lookback))

    def _metadata_params(self, p: dict) -> tuple[int, int, float, int]:
        """start, end (ms), timeout (s) and limit of series, labels and label values."""
        return (parse_time(_first(p, "start"), "start", MIN_TIME_MS, labelled=True),
                parse_time(_first(p, "end"), "end", MAX_TIME_MS, labelled=True),
                self._timeout_s(p), parse_limit(_first(p, "limit")))

    async def _fetch(self, timeout_s: float, calls) -> list:
        """The fan-out of a metadata request, cancelled when its timeout passes."""
        return await asyncio.wait_for(asyncio.gather(*calls), timeout=max(timeout_s, 0.0))

    async def series(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        try:
            selectors = p.get("match[]") or []
            if not selectors:
                raise BadParam("no match[] parameter provided")
            mint, maxt, timeout_s, limit = self._metadata_params(p)
            sets = [parse_matchers(s) for s in selectors]
            opts = self._options(request, p)
        except BadParam as e:
            return error_response("bad_data", str(e))
        warnings: list[str] = []
        try:
            results = await self._fetch(timeout_s, (self.stores.series(
                mint, maxt, ms, skip_chunks=True, opts=opts, warnings=warnings) for ms in sets))
        except TimeoutError:
            return error_response("timeout", DEADLINE_MSG)
        except StoreUnavailable as e:
            return error_response("execution", str(e))
        return await send_chunks(request, await asyncio.to_thread(
            series_to_json, results, limit, warnings))

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
            mint, maxt, timeout_s, limit = self._metadata_params(p)
            sets = [parse_matchers(s) for s in p.get("match[]") or []] or [[]]
            opts = self._options(request, p)
        except BadParam as e:
            return error_response("bad_data", str(e))
        warnings: list[str] = []
        try:
            results = await self._fetch(timeout_s, (fetch(mint, maxt, ms, opts, warnings)
                                                    for ms in sets))
        except TimeoutError:
            return error_response("timeout", DEADLINE_MSG)
        except StoreUnavailable as e:
            return error_response("execution", str(e))
        return await send_chunks(request, await asyncio.to_thread(
            labels_to_json, results, limit, warnings))

    async def endpoints(self, _: web.Request) -> web.Response:
        """Thanos's ``/api/v1/stores``: every endpoint by component type, with its last check
        and error (``unknown`` before its first successful Info)."""
        return _json({"status": "success", "data": self.stores.health.by_component()})

    async def buildinfo(self, _: web.Request) -> web.Response:
        return _json({"status": "success", "data": buildinfo()})

    async def status_config(self, _: web.Request) -> web.Response:
        return _json({"status": "success", "data": config_yaml(self.cfg)})

    async def status_flags(self, _: web.Request) -> web.Response:
        return _json({"status": "success", "data": self.cfg.flags})

    async def status_process(self, _: web.Request) -> web.Response:
        return _json({"status": "success", "data": process_status(self.registry)})

    async def status_runtimeinfo(self, _: web.Request) -> web.Response:
        return _json({"status": "success", "data": runtimeinfo(self.process, self.cfg)})

    async def status_tsdb(self, request: web.Request) -> web.Response:
        """Head cardinality as Prometheus's status/tsdb, counted over the series the stores hold
        in the last HEAD_WINDOW_MS (at most TSDB_STATUS_MAX_SERIES of them)."""
        p = await self._params(request)
        limit = parse_limit(_first(p, "limit")) or TSDB_STATUS_LIMIT
        opts = self._options(request, p)
        maxt = int(time.time() * 1000)
        mint = maxt - HEAD_WINDOW_MS
        warnings: list[str] = []
        try:
            found = await self._fetch(self.cfg.timeout_s, [self.stores.series(
                mint, maxt, [Matcher(MatchType.RE, "__name__", ".+")], skip_chunks=True,
                opts=opts, warnings=warnings, limit=TSDB_STATUS_MAX_SERIES)])
        except TimeoutError:
            return error_response("timeout", DEADLINE_MSG)
        except StoreUnavailable as e:
            return error_response("execution", str(e))
        labels = list(dict.fromkeys(s.labels for s in found[0]))[:TSDB_STATUS_MAX_SERIES]
        data = await asyncio.to_thread(tsdb_status, labels, mint, maxt, limit)
        return _json(_with_warnings({"status": "success", "data": data}, warnings))

    async def format_query(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        try:
            expr = parse_promql(_first(p, "query") or "", features=self.engine_opts.features)
        except PromQLError as e:
            return error_response(e.kind, str(e))
        return _json({"status": "success", "data": pretty(expr)})

    async def query_exemplars(self, request: web.Request) -> web.Response:
        """Prometheus's exemplar query over the endpoints' Thanos Exemplars API: the series of
        every selector in ``query`` (errors as Prometheus words them: no parameter prefix)."""
        p = await self._params(request)
        start = parse_time(_first(p, "start"), "start", MIN_TIME_MS)
        end = parse_time(_first(p, "end"), "end", MAX_TIME_MS)
        if end < start:
            raise BadParam("end timestamp must not be before start timestamp")
        try:
            expr = parse_promql(_first(p, "query") or "", features=self.engine_opts.features)
            selectors = extract_selectors(expr)
        except PromQLError as e:
            return error_response(e.kind, e.msg.removeprefix('invalid parameter "query": '))
        except ValueError as e:  # a regex Go's RE2 refuses
            return error_response("bad_data", str(e))
        if not selectors:
            return _json({"status": "success", "data": None})
        opts = self._options(request, p)
        warnings: list[str] = []
        try:
            found = await self._fetch(self.cfg.timeout_s, [self.stores.exemplars(
                selectors, start, end, opts, warnings)])
        except TimeoutError:
            return error_response("timeout", DEADLINE_MSG)
        except StoreUnavailable as e:
            return error_response("execution", str(e))
        data = [{"seriesLabels": dict(lbls),
                 "exemplars": [{"labels": dict(el), "value": format_value(v),
                                "timestamp": orjson.Fragment(ts_fragment(t))}
                               for el, v, t in exs]}
                for lbls, exs in found[0]]
        return _json(_with_warnings({"status": "success", "data": data}, warnings))

    async def metadata(self, request: web.Request) -> web.Response:
        """Prometheus's metric metadata (``metric``, ``limit``, ``limit_per_metric``), from the
        endpoints' Thanos Metadata API."""
        p = await self._params(request)
        limit = _metadata_limit(p, "limit")
        per_metric = _metadata_limit(p, "limit_per_metric")
        opts = self._options(request, p)
        warnings: list[str] = []
        try:
            found = await self._fetch(self.cfg.timeout_s, [self.stores.metric_metadata(
                _first(p, "metric") or "", limit, opts, warnings)])
        except TimeoutError:
            return error_response("timeout", DEADLINE_MSG)
        except StoreUnavailable as e:
            return error_response("execution", str(e))
        data = {}
        for name in sorted(found[0]):
            if 0 <= limit <= len(data):
                break
            metas = found[0][name][:per_metric] if per_metric >= 0 else found[0][name]
            data[name] = [{"type": t, "help": h, "unit": u} for t, h, u in metas]
        return _json(_with_warnings({"status": "success", "data": data}, warnings))

    async def rules(self, request: web.Request) -> web.Response:
        """Thanos's fan-out of the Rules API over the rulers among the endpoints."""
        kind = request.query.get("type", "").lower()
        if kind not in RULE_TYPES:
            return error_response("bad_data", f"unsupported type {kind!r}")
        got = await self._rule_groups(request, RULE_TYPES[kind])
        if isinstance(got, web.Response):
            return got
        groups, warnings, replicas = got
        return _json(_with_warnings({"status": "success", "data": {
            "groups": [group_json(g) for g in merge_groups(groups, replicas)]}}, warnings))

    async def alerts(self, request: web.Request) -> web.Response:
        got = await self._rule_groups(request, RULE_TYPES["alert"])
        if isinstance(got, web.Response):
            return got
        groups, warnings, replicas = got
        return _json(_with_warnings({"status": "success", "data": {
            "alerts": alerts_json(merge_groups(groups, replicas))}}, warnings))

    async def _rule_groups(self, request: web.Request, kind: int):
        p = await self._params(request)
        try:
            opts = self._options(request, p)
        except BadParam as e:
            return error_response("bad_data", str(e))
        warnings: list[str] = []
        try:
            groups = await asyncio.wait_for(self.stores.rule_groups(
                rules_pb2.RulesRequest(type=kind), opts, warnings), self.cfg.timeout_s)
        except asyncio.TimeoutError:
            return error_response("timeout", DEADLINE_MSG)
        except StoreUnavailable as e:
            return error_response("execution", str(e))
        return groups, warnings, opts.replica_labels

def query_error(e: Exception) -> Answer:
    """The error answer of a query that failed in evaluation (or in its store selects)."""
    if isinstance(e, TimeoutError):
        return error_answer("timeout", TIMEOUT_MSG)
    if isinstance(e, PromQLError):
        return error_answer(e.kind, str(e))
    if isinstance(e, StoreUnavailable):
        return error_answer("execution", str(e))
    if isinstance(e, OverflowError):
        return error_answer("bad_data", 'invalid parameter "query": a time or duration '
                              "is out of the range of int64 milliseconds")
    if isinstance(e, ValueError):
        return error_answer("bad_data", f'invalid parameter "query": {e}')
    # an engine bug must not become a 5xx for the user's query
    log.error("query evaluation failed", exc_info=e)
    return error_answer("execution", str(e))

# The parameters that change a query's read options (_options, _resolution).
_OPTION_PARAMS = frozenset({"dedup", "partial_response", "replicaLabels[]",
                            "max_source_resolution"})
_MAX_TENANT_DEFAULTS = 1024


def read_range_args(p: dict[str, list[str]]) -> tuple[int, int, int, str, int]:
    """/api/v1/query_range's start, end (ms), step (ns), query and limit, checked as
    Prometheus checks them (BadParam with its words); range_args reads the usual ones the same
    way in C."""
    limit = parse_limit(_first(p, "limit"))
    start = parse_time(_first(p, "start"), "start")
    end = parse_time(_first(p, "end"), "end")
    if end < start:
        raise BadParam('invalid parameter "end": end timestamp must not be before start time')
    step_ns = parse_duration_ns(_first(p, "step"), "step")
    if step_ns <= 0:
        raise BadParam('invalid parameter "step": zero or negative query resolution step '
                       "widths are not accepted. Try a positive integer")
    if (end - start) * 1_000_000 // step_ns > MAX_POINTS:
        raise BadParam("exceeded maximum resolution of 11,000 points per timeseries. "
                       "Try decreasing the query resolution (?step=XX)")
    return start, end, step_ns, _one(p, "query"), limit


def _first(p: dict, name: str) -> str | None:
    v = p.get(name)
    return v[0] if v else None

def _one(p: dict, name: str) -> str:
    v = _first(p, name)
    if v is None or v == "":
        raise BadParam(f'invalid parameter "{name}": query must not be empty' if name == "query"
                       else f'invalid parameter "{name}"')
    return v

def _metadata_limit(p: dict, name: str) -> int:
    """``limit``/``limit_per_metric`` of /api/v1/metadata: an int, negative or absent = none."""
    raw = _first(p, name)
    if not raw:
        return -1
    if not re.fullmatch(r"[+-]?\d{1,18}", raw):
        raise BadParam(f"{name} must be a number")
    return int(raw)

def _with_warnings(payload: dict, warnings: list[str]) -> dict:
    if warnings:
        payload["warnings"] = sorted(set(warnings))
    return payload
