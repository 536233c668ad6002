"""Thanos's store gateway limits: per-Series-request series and sample (chunk) limits, the
Series concurrency gate, and the ``--min-time``/``--max-time`` window of blocks served.

Why: one huge Series request (``{__name__=~".+"}`` over a year) must be refused by the store
itself, with Thanos's ResourceExhausted status, before its series and chunks are read.
Semantics follow Thanos v0.42's BucketStore: the series limit counts the postings matched in
each block (a series found in three blocks counts three times), the sample limit is a chunk
limit of ``samples // 120`` (Thanos's MaxSamplesPerChunk; 0 after the division means none)
counting the chunks in range of each block's matched series. Per block, the series count
is checked before its series entries are read and the chunk count before its chunk data
are, so a violating request fails before anything is streamed. Each failing request counts
once in ``thanos_bucket_store_queries_dropped_total{reason="series"|"chunks"|"bytes",tenant}``,
the tenant being the call's ``thanos-tenant`` gRPC metadata as in Thanos (``default-tenant``
without one); past MAX_TENANT_LABELS distinct tenants, further ones count as ``other``, so a
client inventing tenants cannot grow the metric without bound.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from common.plainhist import PlainHistogram
from common.units import parse_time_or_duration
from storeapi.server import DEFAULT_TENANT, ResourceExhausted

MAX_SAMPLES_PER_CHUNK = 120  # Thanos's store.MaxSamplesPerChunk
MAX_TENANT_LABELS = 1000  # distinct tenant label values of the dropped-queries counter
OVERFLOW_TENANT = "other"
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
    downloaded_bytes: int = 0  # --store.grpc.downloaded-bytes-limit


class LimitMetrics:
    """``thanos_bucket_store_queries_dropped_total{reason,tenant}``, as Thanos names it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.dropped = Counter("thanos_bucket_store_queries_dropped",
                               "Number of queries that were dropped due to the limit.",
                               ["reason", "tenant"], registry=registry)
        self._tenants = {DEFAULT_TENANT}
        for reason in ("bytes", "chunks", "series"):  # shown at 0 from the start
            self.dropped.labels(reason, DEFAULT_TENANT)

    def drop(self, reason: str, tenant: str) -> None:
        """One more query of ``tenant`` refused for ``reason``."""
        if tenant not in self._tenants:
            if len(self._tenants) >= MAX_TENANT_LABELS:
                tenant = OVERFLOW_TENANT
            else:
                self._tenants.add(tenant)
        self.dropped.labels(reason, tenant).inc()


class RequestLimiter:
    """The running series and chunk counts of one Series request, checked per block.
    Only made when a limit is set: without limits no Series call pays for any of this."""

    __slots__ = ("_series_limit", "_chunks_limit", "_series", "_chunks", "_metrics", "_failed",
                 "_label_call", "_cap", "_tenant", "_bytes_limit", "_bytes")

    def __init__(self, series_limit: int, chunks_limit: int, metrics: LimitMetrics,
                 label_call: bool = False, request_limit: int = 0,
                 tenant: str = DEFAULT_TENANT, bytes_limit: int = 0) -> None:
        self._series_limit, self._chunks_limit = series_limit, chunks_limit
        self._label_call = label_call  # LabelNames/LabelValues: Thanos names no block step
        # The request's own series limit (SeriesRequest.limit): Thanos reads at most that
        # many series of each block, and counts only those.
        self._cap = request_limit
        self._series = self._chunks = 0
        self._metrics = metrics
        self._failed = False
        self._tenant = tenant  # the dropped-queries counter's label
        self._bytes_limit, self._bytes = bytes_limit, 0

    @property
    def counts_bytes(self) -> bool:
        """Whether the block reads should estimate their bytes for ``read_bytes``."""
        return self._bytes_limit > 0

    def read_bytes(self, block: str, what: str, n: int) -> None:
        """``n`` more bytes of ``what`` (postings, series, chunks) about to be read from
        ``block``; ResourceExhausted past --store.grpc.downloaded-bytes-limit, worded as
        Thanos's store words each step."""
        if not self._bytes_limit:
            return
        self._bytes += n
        if self._bytes <= self._bytes_limit:
            return
        if what == "postings":
            step = "expanded matching posting: fetch and expand postings: get postings: "
            if not self._label_call:
                step = f"fetch postings for block {block}: " + step
        elif what == "series":
            step = (f"iterate series for block {block}: " if self._label_call
                    else f"receive series from {block}: ") + "preload series: "
        else:
            step = f"receive series from {block}: load chunks: "
        self._refuse("bytes", f"{step}rpc error: code = ResourceExhausted desc = exceeded "
                     f"bytes limit while fetching {what}: limit {self._bytes_limit} violated "
                     f"(got {self._bytes})")

    def capped(self, n: int) -> int:
        """How many of a block's ``n`` matched series Thanos reads (the request's limit)."""
        return min(n, self._cap) if self._cap else n

    def replay(self, block: str, reservations: list[tuple[str, int]]) -> None:
        """Reserve each (what, bytes) in turn (store.bytelimit's account of Thanos's reads)."""
        for what, n in reservations:
            self.read_bytes(block, what, n)

    def touched_series(self, block: str, n: int) -> None:
        """``n`` series matched in ``block``; ResourceExhausted past the series limit."""
        if self._series_limit:
            self._series += self.capped(n)
            self._check("series", "fetch postings for block", self._series_limit,
                        self._series, block)

    def chunks(self, block: str, bounds: Sequence[int]) -> None:
        """The chunks in range of ``block``'s matched series (``bounds``: n + 1 running
        totals, series by series); ResourceExhausted past the chunk limit. Thanos reserves
        series by series, so the count it reports is the running total at the first series
        over the limit: found by bisection, no step per series."""
        if not self._chunks_limit:
            return
        last = len(bounds) - 1 if not self._cap else min(self._cap, len(bounds) - 1)
        if self._chunks + bounds[last] > self._chunks_limit:
            k = bisect.bisect_right(bounds, self._chunks_limit - self._chunks, 0, last + 1)
            self._chunks += bounds[k]
            self._check("chunks", "receive series from", self._chunks_limit, self._chunks, block)
        self._chunks += bounds[last]

    def _check(self, reason: str, where: str, limit: int, got: int, block: str) -> None:
        """Thanos's message: its block step (Series only), the wrapped status, the
        limiter's words."""
        if got <= limit:
            return
        step = "" if self._label_call else f"{where} {block}: "
        self._refuse(reason, f"{step}rpc error: code = ResourceExhausted desc = exceeded "
                     f"{reason} limit: limit {limit} violated (got {got})")

    def _refuse(self, reason: str, message: str) -> None:
        if not self._failed:  # counted once per request, however many blocks cross it
            self._failed = True
            self._metrics.drop(reason, self._tenant)
        raise ResourceExhausted(message)


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
        self._bytes = cfg.downloaded_bytes
        self.window = (TimeWindow(cfg.min_time, cfg.max_time)
                       if (cfg.min_time, cfg.max_time) != (MIN_TIME_DEFAULT, MAX_TIME_DEFAULT)
                       else None)

    def request(self, request_limit: int = 0, tenant: str = DEFAULT_TENANT
                ) -> RequestLimiter | None:
        """``request_limit``: the Series request's own limit on series (0: none)."""
        if not self._series and not self._chunks and not self._bytes:
            return None
        return RequestLimiter(self._series, self._chunks, self.metrics,
                              request_limit=request_limit, tenant=tenant,
                              bytes_limit=self._bytes)

    def label_request(self, tenant: str = DEFAULT_TENANT) -> RequestLimiter | None:
        """LabelNames/LabelValues with matchers: the series and bytes limits, as Thanos."""
        if not self._series and not self._bytes:
            return None
        return RequestLimiter(self._series, 0, self.metrics, label_call=True, tenant=tenant,
                              bytes_limit=self._bytes)


SeriesHandler = Callable[..., AsyncIterator[bytes]]
_GATE = "thanos_bucket_store_series_gate_queries"


class SeriesGate:
    """``--store.grpc.series-max-concurrency``: at most that many Series calls run (from
    block reads through the last frame sent); the others wait their turn, first come first
    served. 0 or less: no bound. Metrics as Thanos's ``thanos_bucket_store_series_gate_*``,
    kept as plain numbers read at scrape time: a call that need not wait costs a few
    integer updates, no lock or semaphore round trip (every query passes here)."""

    def __init__(self, max_concurrency: int, registry: CollectorRegistry) -> None:
        self.max = max_concurrency
        self.running = 0  # calls holding a slot (the in-flight gauge)
        self.total = 0
        self.waited = PlainHistogram(
            f"{_GATE}_duration_seconds",
            "How many seconds it took for queries to wait at the gate.", GATE_BUCKETS, None,
            created=False)
        self._no_wait = self.waited.labels().counts  # [0]: calls that waited no time
        self._waiters: deque[asyncio.Future[None]] = deque()
        registry.register(_GateCollector(self))

    def enter(self) -> Awaitable[None] | None:
        """Take a slot for a Series call: None when one was free (no await needed: the usual
        call costs no coroutine), else an awaitable that waits its turn. Every entered call
        ``leave``s once it has sent its last frame, failed or stopped."""
        if self.max <= 0 or (self.running < self.max and not self._waiters):
            self.running += 1
            self._no_wait[0] += 1  # waited no time: observe(0) without the bisect
            self.total += 1
            return None
        return self._wait_turn()

    def wrap(self, series: SeriesHandler) -> SeriesHandler:
        """The Series handler ``series``, each call inside the gate (StoreServer enters and
        leaves the gate itself, with no wrapper generator in between)."""
        async def gated(request, context) -> AsyncIterator[bytes]:
            wait = self.enter()
            if wait is not None:
                await wait
            frames = series(request, context)
            finished = False
            try:
                async for frame in frames:
                    yield frame
                finished = True
            finally:
                self.leave()
                if not finished:  # the caller stopped early: end the handler now
                    await frames.aclose()
        return gated

    async def _wait_turn(self) -> None:
        """Until a finishing call hands its slot over (``running`` stays as it is)."""
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        t0 = time.perf_counter()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.leave()  # handed a slot just as the caller gave up: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(turn)
            raise
        self.total += 1
        self.observe_wait(time.perf_counter() - t0)

    def observe_wait(self, seconds: float) -> None:
        self.waited.observe(seconds)

    def leave(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.running -= 1


class _GateCollector:
    """SeriesGate's numbers as Thanos's gate metrics."""

    def __init__(self, gate: SeriesGate) -> None:
        self._gate = gate

    def collect(self):
        g = self._gate
        yield GaugeMetricFamily(f"{_GATE}_max", "Maximum number of concurrent queries.",
                                value=g.max)
        yield GaugeMetricFamily(f"{_GATE}_in_flight",
                                "Number of queries that are currently in flight.",
                                value=g.running)
        yield CounterMetricFamily(_GATE, "Total number of queries.", value=g.total)
        yield from g.waited.collect()
