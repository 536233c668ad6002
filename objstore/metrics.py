"""Thanos's objstore metrics (``thanos_objstore_bucket_operations_total{bucket,operation}`` and
friends) around any bucket, so bucket dashboards and alerts written for Thanos apply."""
from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .bucket import (IS_BYTES, Bucket, ObjectAttributes, ObjectNotFound, RangeRequest,
                     UploadData, get_ranges, get_ranges_now)

T = TypeVar("T")
BUCKETS = (0.01, 0.1, 0.3, 0.6, 1, 3, 6, 9, 20, 30, 60, 90, 120)  # Thanos's


class BucketMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["bucket", "operation"]
        self.ops = Counter("thanos_objstore_bucket_operations", "Operations against the bucket.",
                           labels, registry=registry)
        self.failures = Counter("thanos_objstore_bucket_operation_failures",
                                "Bucket operations that failed (a missing object asked for is "
                                "not a failure).", labels, registry=registry)
        self.seconds = Histogram("thanos_objstore_bucket_operation_duration_seconds",
                                 "Duration of successful bucket operations.", labels,
                                 buckets=BUCKETS, registry=registry)
        self.fetched = Counter("thanos_objstore_bucket_operation_fetched_bytes",
                               "Bytes read from the bucket by successful reads.", labels,
                               registry=registry)
        self.last_upload = Gauge("thanos_objstore_bucket_last_successful_upload_time",
                                 "Unix time of the last successful upload.", ["bucket"],
                                 registry=registry)


class InstrumentedBucket:
    """``bucket`` with every operation counted and timed (a few counter updates per call)."""

    def __init__(self, bucket: Bucket, metrics: BucketMetrics) -> None:
        self._bkt = bucket
        self._m = metrics
        # operation -> its labelled (ops, failures, seconds, fetched) children, looked up once:
        # ``labels()`` per ranged read cost more than a page-cache read itself
        self._children: dict[str, tuple[Any, Any, Any, Any]] = {}
        self._range_adds: tuple[Callable[[float], None], ...] = ()  # see get_ranges

    def _of(self, op: str) -> tuple[Any, Any, Any, Any]:
        c = self._children.get(op)
        if c is None:
            m, name = self._m, self.name
            c = self._children[op] = (m.ops.labels(name, op), m.failures.labels(name, op),
                                      m.seconds.labels(name, op), m.fetched.labels(name, op))
        return c

    @property
    def name(self) -> str:
        return self._bkt.name

    async def _op(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        ops, failures, seconds, _ = self._of(op)
        ops.inc()
        t0 = time.perf_counter()
        try:
            got = await call()
        except ObjectNotFound:
            raise  # expected by the caller (Thanos's IsObjNotFoundErr)
        except BaseException:
            failures.inc()
            raise
        seconds.observe(time.perf_counter() - t0)
        return got

    async def get(self, name: str) -> bytes:
        data = await self._op("get", lambda: self._bkt.get(name))
        self._of("get")[3].inc(len(data))
        return data

    async def get_range(self, name: str, off: int, length: int) -> bytes:
        """As _op does, written out: a store's cold read of one small item per block is
        mostly this bookkeeping (no closure and no extra coroutine per read here)."""
        ops, failures, seconds, fetched = self._of("get_range")
        ops.inc()
        t0 = time.perf_counter()
        try:
            data = await self._bkt.get_range(name, off, length)
        except ObjectNotFound:
            raise
        except BaseException:
            failures.inc()
            raise
        seconds.observe(time.perf_counter() - t0)
        fetched.inc(len(data))
        return data

    async def get_ranges(self, reqs: Sequence[RangeRequest]) -> list[bytes | BaseException]:
        """A batch of ranged reads, counted as Thanos counts them: one ``get_range``
        operation per range (and a failure per range that failed other than as not found),
        the batch's time shared equally among its successful ranges."""
        ops, failures, seconds, fetched = self._of("get_range")
        add_ops, add_fetched = self._range_adds or self._adds(ops, fetched)
        add_ops(len(reqs))
        t0 = time.perf_counter()
        try:
            got = await get_ranges(self._bkt, reqs)
        except BaseException:  # cancelled: every range failed, as a single read counts it
            failures.inc(len(reqs))
            raise
        took = time.perf_counter() - t0
        ok = list(filter(IS_BYTES, got))
        if len(ok) < len(got):
            bad = sum(not isinstance(v, (bytes, ObjectNotFound)) for v in got)
            if bad:
                failures.inc(bad)
        if ok:
            observe_many(seconds, took / len(reqs), len(ok))
            add_fetched(sum(map(len, ok)))
        return got

    def get_ranges_now(self, reqs: list[RangeRequest]) -> list[bytes] | None:
        """``get_ranges`` without a coroutine where the bucket inside serves the whole batch at
        once (objstore.bucket.get_ranges_now), counted the same way; else None, nothing
        counted."""
        t0 = time.perf_counter()
        got = get_ranges_now(self._bkt, reqs)
        if got is not None:
            took = time.perf_counter() - t0
            ops, _, seconds, fetched = self._of("get_range")
            add_ops, add_fetched = self._range_adds or self._adds(ops, fetched)
            add_ops(len(reqs))
            observe_many(seconds, took / len(reqs), len(reqs))
            add_fetched(sum(map(len, got)))
        return got

    def _adds(self, ops: Any, fetched: Any) -> tuple[Callable[[float], None], ...]:
        """get_ranges' two counter updates, kept (see _adder)."""
        self._range_adds = (_adder(ops), _adder(fetched))
        return self._range_adds

    async def upload(self, name: str, data: UploadData) -> None:
        await self._op("upload", lambda: self._bkt.upload(name, data))
        self._m.last_upload.labels(self.name).set_to_current_time()

    async def exists(self, name: str) -> bool:
        return await self._op("exists", lambda: self._bkt.exists(name))

    async def delete(self, name: str) -> None:
        await self._op("delete", lambda: self._bkt.delete(name))

    async def iter(self, prefix: str = "", recursive: bool = False) -> list[str]:
        return await self._op("iter", lambda: self._bkt.iter(prefix, recursive))

    async def attributes(self, name: str) -> ObjectAttributes:
        return await self._op("attributes", lambda: self._bkt.attributes(name))

    async def close(self) -> None:
        await self._bkt.close()

    def __getattr__(self, name: str) -> Any:  # provider extras (prefix, inner, ...)
        return getattr(self._bkt, name)

    def __repr__(self) -> str:
        return f"InstrumentedBucket({self._bkt!r})"


def _adder(counter: Any) -> Callable[[float], None]:
    """``counter.inc``, as the ``inc`` of the value prometheus_client keeps it in where it has
    one: the same update and lock, without the three Python calls of the counter's checks
    (a store's cold Series call makes two per batch of reads; its amounts, counts and byte
    sizes, are never negative)."""
    inc = getattr(getattr(counter, "_value", None), "inc", None)
    return inc if callable(inc) else counter.inc


def observe_many(hist: Any, value: float, n: int) -> None:
    """``hist.observe(value)`` ``n`` times, as one update of the bucket it falls in (a
    prometheus_client histogram child; observed one by one if its layout is not the known
    one)."""
    try:
        bounds, buckets, total = hist._upper_bounds, hist._buckets, hist._sum
    except AttributeError:
        for _ in range(n):
            hist.observe(value)
        return
    total.inc(value * n)
    buckets[bisect.bisect_left(bounds, value)].inc(n)


def instrumented(bucket: Bucket, registry: CollectorRegistry | None) -> Bucket:
    """``bucket`` reporting Thanos's objstore metrics to ``registry`` (as is without one)."""
    if registry is None:
        return bucket
    from common.ops import registry_shared
    return InstrumentedBucket(bucket, registry_shared(registry, "objstore", BucketMetrics))
