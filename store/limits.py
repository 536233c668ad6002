"""Thanos's store gateway limits: per-Series-request series and sample (chunk) limits, the
Series concurrency gate, and the ``--min-time``/``--max-time`` window of blocks served.

Why: one huge Series request (``{__name__=~".+"}`` over a year) must be refused by the store
itself, with Thanos's ResourceExhausted status, before its series and chunks are read.
Semantics follow Thanos v0.42's BucketStore: the series limit counts the postings matched in
each block (a series found in three blocks counts three times), the sample limit is a chunk
limit of ``samples // 120`` (Thanos's MaxSamplesPerChunk; 0 after the division means none)
counting the chunks in range of each block's matched series; both are checked per block
before that block's series entries or chunk data are used, so a violating request fails
before anything is streamed. Each failing request counts once in
``thanos_bucket_store_queries_dropped_total{reason="series"|"chunks"}``.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.units import parse_time_or_duration
from storeapi.server import ResourceExhausted

MAX_SAMPLES_PER_CHUNK = 120  # Thanos's store.MaxSamplesPerChunk
DEFAULT_TENANT = "default-tenant"  # Thanos's tenancy default, the metric's tenant label
MIN_TIME_DEFAULT = "0000-01-01T00:00:00Z"  # Thanos's --min-time / --max-time defaults
MAX_TIME_DEFAULT = "9999-12-31T23:59:59Z"
GATE_BUCKETS = (0.01, 0.1, 0.3, 0.6, 1, 3, 6, 9, 20, 30, 60, 90, 120, 240, 360, 720)


@dataclass(frozen=True)
class StoreLimitsConfig:
    """``--store.limits.request-series`` / ``--store.limits.request-samples`` (and their
    deprecated ``--store.grpc.*`` spellings), ``--store.grpc.series-max-concurrency``,
    ``--min-time`` / ``--max-time``. Zero limits and the default times switch a check off."""

    request_series: int = 0
    request_samples: int = 0
    series_max_concurrency: int = 20
    min_time: str = MIN_TIME_DEFAULT
    max_time: str = MAX_TIME_DEFAULT


class LimitMetrics:
    """``thanos_bucket_store_queries_dropped_total{reason,tenant}``, as Thanos names it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.dropped = Counter("thanos_bucket_store_queries_dropped",
                               "Number of queries that were dropped due to the limit.",
                               ["reason", "tenant"], registry=registry)
        for reason in ("bytes", "chunks", "series"):  # shown at 0 from the start
            self.dropped.labels(reason, DEFAULT_TENANT)


class RequestLimiter:
    """The running series and chunk counts of one Series request, checked per block.
    Only made when a limit is set: without limits no Series call pays for any of this."""

    __slots__ = ("_series_limit", "_chunks_limit", "_series", "_chunks", "_metrics", "_failed")

    def __init__(self, series_limit: int, chunks_limit: int, metrics: LimitMetrics) -> None:
        self._series_limit, self._chunks_limit = series_limit, chunks_limit
        self._series = self._chunks = 0
        self._metrics = metrics
        self._failed = False

    def touched_series(self, block: str, n: int) -> None:
        """``n`` series matched in ``block``; ResourceExhausted past the series limit."""
        if self._series_limit:
            self._series += n
            self._check("series", "fetch postings for block", self._series_limit,
                        self._series, block)

    def chunks(self, block: str, n: int) -> None:
        """``n`` chunks in range in ``block``; ResourceExhausted past the chunk limit."""
        if self._chunks_limit:
            self._chunks += n
            self._check("chunks", "receive series from", self._chunks_limit, self._chunks, block)

    def _check(self, reason: str, where: str, limit: int, got: int, block: str) -> None:
        """Thanos's message: its block step, the wrapped status, the limiter's words."""
        if got <= limit:
            return
        if not self._failed:  # counted once per request, however many blocks cross it
            self._failed = True
            self._metrics.dropped.labels(reason, DEFAULT_TENANT).inc()
        raise ResourceExhausted(
            f"{where} {block}: rpc error: code = ResourceExhausted desc = exceeded {reason} "
            f"limit: limit {limit} violated (got {got})")


class TimeWindow:
    """``--min-time``/``--max-time``: blocks outside are not served and requests are
    clamped to the window. A duration (``-2w``) is taken relative to now at each use."""

    def __init__(self, min_time: str, max_time: str) -> None:
        self.min_ms: Callable[[], int] = parse_time_or_duration(min_time)
        self.max_ms: Callable[[], int] = parse_time_or_duration(max_time)

    def keeps(self, block_min: int, block_max: int) -> bool:
        """Thanos's TimePartitionMetaFilter."""
        return block_max >= self.min_ms() and block_min <= self.max_ms()

    def clamp(self, mint: int, maxt: int) -> tuple[int, int]:
        return max(mint, self.min_ms()), min(maxt, self.max_ms())


class StoreLimits:
    """What BucketStore consults per Series request: ``request()`` gives a RequestLimiter,
    or None when no limit is set; ``window`` is None for the default (everything)."""

    def __init__(self, cfg: StoreLimitsConfig, registry: CollectorRegistry) -> None:
        self.metrics = LimitMetrics(registry)
        self._series = cfg.request_series
        self._chunks = cfg.request_samples // MAX_SAMPLES_PER_CHUNK  # as Thanos: an estimate
        self.window = (TimeWindow(cfg.min_time, cfg.max_time)
                       if (cfg.min_time, cfg.max_time) != (MIN_TIME_DEFAULT, MAX_TIME_DEFAULT)
                       else None)

    def request(self) -> RequestLimiter | None:
        if not self._series and not self._chunks:
            return None
        return RequestLimiter(self._series, self._chunks, self.metrics)


SeriesHandler = Callable[..., AsyncIterator[bytes]]


class SeriesGate:
    """``--store.grpc.series-max-concurrency``: at most that many Series calls run (from
    block reads through the last frame sent); the others wait their turn. 0 or less: no
    bound. Metrics as Thanos's ``thanos_bucket_store_series_gate_queries_*``."""

    def __init__(self, max_concurrency: int, registry: CollectorRegistry) -> None:
        self._sem = asyncio.Semaphore(max_concurrency) if max_concurrency > 0 else None
        p = "thanos_bucket_store_series_gate_queries"
        Gauge(f"{p}_max", "Maximum number of concurrent queries.",
              registry=registry).set(max_concurrency)
        self.in_flight = Gauge(f"{p}_in_flight", "Number of queries that are currently in "
                               "flight.", registry=registry)
        self.total = Counter(p, "Total number of queries.", registry=registry)
        self.waited = Histogram(f"{p}_duration_seconds", "How many seconds it took for "
                                "queries to wait at the gate.", buckets=GATE_BUCKETS,
                                registry=registry)

    def wrap(self, series: SeriesHandler) -> SeriesHandler:
        """The Series handler ``series``, each call inside the gate."""
        sem = self._sem or contextlib.nullcontext()

        async def gated(request, context) -> AsyncIterator[bytes]:
            t0 = time.perf_counter()
            async with sem:
                self.waited.observe(time.perf_counter() - t0)
                self.total.inc()
                self.in_flight.inc()
                try:
                    async with contextlib.aclosing(series(request, context)) as frames:
                        async for frame in frames:
                            yield frame
                finally:
                    self.in_flight.dec()
        return gated
