"""``/api/v1/query_range`` through the frontend: align, split, answer parts from the results
cache where it can, fetch the rest from downstream in parallel, join sample-exactly."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import orjson
from multidict import CIMultiDict, MultiDict
from prometheus_client import CollectorRegistry, Counter

from querier.params import BadParam, parse_duration_ms, parse_time

from .cache import ResultsCache
from .config import FrontendConfig
from .downstream import Answer, Downstream, DownstreamError
from .extents import Extent, decode, encode, fold, plan
from .matrix import Series, join_series, slice_series
from .split import align_to_step, split_by_interval

MAX_POINTS = 11000  # Prometheus refuses more points per series; such a query goes downstream as is
_RANGE_PARAMS = ("query", "start", "end", "step")


class PartFailed(Exception):
    """A downstream part answered with an error; that answer is the query's answer."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


@dataclass
class PartAnswer:
    series: list[Series]
    warnings: list[str]
    infos: list[str]
    no_store: bool = False  # the downstream answered with Cache-Control: no-store


@dataclass(frozen=True)
class RangeRequest:
    query: str
    start_ms: int
    end_ms: int
    step_ms: int
    other: tuple[tuple[str, str], ...]   # every other parameter, sorted: part of the cache key
    tenant: str
    headers: CIMultiDict
    no_store: bool

    def form(self, start_ms: int, end_ms: int) -> bytes:
        params = [("query", self.query), ("start", _seconds(start_ms)), ("end", _seconds(end_ms)),
                  ("step", _seconds(self.step_ms)), *self.other]
        return urlencode(params).encode()


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}" if ms >= 0 else f"{ms / 1000:.3f}"


def parse_range_request(params: MultiDict, cfg: FrontendConfig, tenant: str, headers: CIMultiDict,
                        no_store: bool) -> RangeRequest | None:
    """The request when the frontend can split it; None when it should go downstream as it is
    (bad or unusual parameters: the downstream's own error is the exact answer)."""
    try:
        start = parse_time(params.get("start"), "start")
        end = parse_time(params.get("end"), "end")
        step = parse_duration_ms(params.get("step"), "step")
    except BadParam:
        return None
    if step <= 0 or end < start or (end - start) // step > MAX_POINTS or "stats" in params:
        return None
    if any(len(params.getall(k)) > 1 for k in _RANGE_PARAMS if k in params):
        return None
    if cfg.align_range_with_step:
        start, end = align_to_step(start, end, step)
    other = [(k, v) for k, v in params.items() if k not in _RANGE_PARAMS]
    if "partial_response" not in params:
        other.append(("partial_response", "true" if cfg.partial_response else "false"))
    return RangeRequest(params.get("query", ""), start, end, step, tuple(sorted(other)), tenant,
                        headers, no_store)


class RangeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.split = Counter("thanos_frontend_split_queries", "Total number of underlying query "
                             "requests after the split by interval is applied", registry=registry)
        self.downstream = Counter("thanos_frontend_downstream_range_requests",
                                  "Range requests sent to the downstream (parts and gaps the "
                                  "results cache could not answer).", registry=registry)


class RangeQuerier:
    def __init__(self, cfg: FrontendConfig, downstream: Downstream, cache: ResultsCache | None,
                 registry: CollectorRegistry) -> None:
        self.cfg, self.downstream, self.cache = cfg, downstream, cache
        self.m = RangeMetrics(registry)

    async def answer(self, req: RangeRequest) -> dict:
        """The joined success body; raises PartFailed with the first failing part's answer."""
        parts = split_by_interval(req.start_ms, req.end_ms, req.step_ms, self.cfg.split_interval_ms)
        self.m.split.inc(len(parts))
        limit = asyncio.Semaphore(max(1, self.cfg.max_query_parallelism))
        results = await asyncio.gather(*(self._part(req, s, e, limit) for s, e in parts))
        warnings = list(dict.fromkeys(w for r in results for w in r.warnings))
        infos = list(dict.fromkeys(i for r in results for i in r.infos))
        body: dict = {"status": "success",
                      "data": {"resultType": "matrix",
                               "result": join_series([r.series for r in results])}}
        if warnings:
            body["warnings"] = warnings
        if infos:
            body["infos"] = infos
        return body

    async def _fetch(self, req: RangeRequest, start_ms: int, end_ms: int,
                     limit: asyncio.Semaphore) -> PartAnswer:
        headers = CIMultiDict(req.headers)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Accept-Encoding"] = "identity"
        async with limit:
            self.m.downstream.inc()
            answer = await self.downstream.request("POST", "/api/v1/query_range",
                                                   body=req.form(start_ms, end_ms), headers=headers,
                                                   max_tries=self.cfg.max_retries)
        if answer.status != 200:
            raise PartFailed(answer)
        try:
            doc = orjson.loads(answer.body)
            result = doc["data"]["result"]
            if doc["data"]["resultType"] != "matrix" or not isinstance(result, list):
                raise ValueError("not a matrix")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise DownstreamError("downstream answered query_range with something other than "
                                  "a matrix") from None
        no_store = "no-store" in answer.headers.get("Cache-Control", "").lower()
        return PartAnswer(result, list(doc.get("warnings") or []), list(doc.get("infos") or []),
                          no_store)

    def _key(self, req: RangeRequest, start_ms: int) -> str:
        interval = self.cfg.split_interval_ms or 1
        return (f"fe:{req.tenant}:{req.step_ms}:{start_ms % req.step_ms}:{interval}:"
                f"{start_ms // interval}:{urlencode(req.other)}:{req.query}")

    async def _part(self, req: RangeRequest, start_ms: int, end_ms: int, limit: asyncio.Semaphore
                    ) -> PartAnswer:
        max_cache_ms = int(time.time() * 1000) - self.cfg.max_freshness_ms
        if self.cache is None or req.no_store or start_ms > max_cache_ms:
            return await self._fetch(req, start_ms, end_ms, limit)
        key = self._key(req, start_ms)
        cached = await self.cache.get(key)
        extents = decode(cached) if cached else []
        pieces, gaps = plan(extents, start_ms, end_ms, req.step_ms)
        fetched = dict(zip(gaps, await asyncio.gather(*(self._fetch(req, a, b, limit)
                                                        for a, b in gaps))))
        series = join_series([slice_series(ext.series, a, b) if ext is not None
                              else fetched[(a, b)].series for a, b, ext in pieces if a <= b])
        warnings = [w for f in fetched.values() for w in f.warnings]
        infos = list(dict.fromkeys([i for f in fetched.values() for i in f.infos] +
                                   [i for _, _, ext in pieces if ext is not None for i in ext.infos]))
        if gaps and not warnings and not any(f.no_store for f in fetched.values()):
            await self._store(key, extents, req, start_ms, min(end_ms, max_cache_ms), series, infos)
        return PartAnswer(series, warnings, infos)

    async def _store(self, key: str, extents: list[Extent], req: RangeRequest, start_ms: int,
                     cache_end_ms: int, series: list[Series], infos: list[str]) -> None:
        """Keeps the final (older than max_freshness) part of the answer as an extent."""
        last = start_ms + (cache_end_ms - start_ms) // req.step_ms * req.step_ms
        if last < start_ms:
            return
        new = Extent(start_ms, last, slice_series(series, start_ms, last), infos)
        await self.cache.set(key, encode(fold(extents, new, req.step_ms)))
