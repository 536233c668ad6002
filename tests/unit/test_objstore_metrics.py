"""Thanos's objstore metrics around a real filesystem bucket: operations by name, a missing
object asked for is not a failure, a refused one is, and uploads set the last-upload time."""
from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from objstore import FilesystemBucket, ObjectNotFound
from objstore.bucket import InvalidObjectName
from objstore.metrics import instrumented


def test_operations_failures_and_last_upload(tmp_path):
    reg = CollectorRegistry()
    b = instrumented(FilesystemBucket(tmp_path / "bkt"), reg)

    def v(name: str, **labels: str) -> float:
        return reg.get_sample_value(name, {"bucket": b.name, **labels}) or 0.0

    async def main() -> None:
        before = time.time()
        await b.upload("a/meta.json", b"{}")
        assert v("thanos_objstore_bucket_last_successful_upload_time") >= before
        assert await b.get("a/meta.json") == b"{}"
        assert await b.iter("a/") == ["a/meta.json"]
        with pytest.raises(ObjectNotFound):
            await b.get("missing")
        with pytest.raises(InvalidObjectName):
            await b.get("../escape")
    asyncio.run(main())
    assert v("thanos_objstore_bucket_operations_total", operation="upload") == 1
    assert v("thanos_objstore_bucket_operations_total", operation="get") == 3
    assert v("thanos_objstore_bucket_operations_total", operation="iter") == 1
    assert v("thanos_objstore_bucket_operation_failures_total", operation="get") == 1  # not the 404
    assert v("thanos_objstore_bucket_operation_duration_seconds_count", operation="get") == 1


def test_range_reads_count_operations_bytes_failures_and_durations(tmp_path):
    """Ranged reads (a store's every index and chunk read) are counted like the rest: bytes
    read, a missing object not a failure, a refused name one."""
    reg = CollectorRegistry()
    b = instrumented(FilesystemBucket(tmp_path / "bkt"), reg)

    def v(name: str) -> float:
        return reg.get_sample_value(name, {"bucket": b.name, "operation": "get_range"}) or 0.0

    async def main() -> None:
        await b.upload("a/index", bytes(range(100)))
        assert await b.get_range("a/index", 10, 5) == bytes(range(10, 15))
        assert await b.get_range("a/index", 90, 50) == bytes(range(90, 100))
        with pytest.raises(ObjectNotFound):
            await b.get_range("a/missing", 0, 5)
        with pytest.raises(InvalidObjectName):
            await b.get_range("../escape", 0, 5)
    asyncio.run(main())
    assert v("thanos_objstore_bucket_operations_total") == 4
    assert v("thanos_objstore_bucket_operation_fetched_bytes_total") == 15
    assert v("thanos_objstore_bucket_operation_failures_total") == 1
    assert v("thanos_objstore_bucket_operation_duration_seconds_count") == 2


def test_exported_as_the_prometheus_client_metrics_they_replace(tmp_path, monkeypatch):
    """The plain counters and histogram (objstore.metrics.BucketMetrics) are exported exactly
    as the prometheus_client Counter and Histogram they replaced -- names, help, types,
    labels, series order and values, text and OpenMetrics formats, creation times aside --
    after every kind of operation: whole, ranged, a batch (``get_ranges``, with a missing
    object and a refused name in it) and a batch served at once (``get_ranges_now``). Each
    operation takes 0.25 s here (a clock that steps per reading), so the durations are
    exact."""
    import itertools
    import re
    import types

    from prometheus_client import Counter, Gauge, Histogram, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    import objstore.metrics
    from objstore.bucket import get_ranges, get_ranges_now

    clock = itertools.count(0.0, 0.25)
    monkeypatch.setattr(objstore.metrics, "time", types.SimpleNamespace(
        perf_counter=lambda: next(clock)))
    reg = CollectorRegistry()
    b = instrumented(FilesystemBucket(tmp_path / "bkt"), reg)

    async def main() -> None:
        await b.upload("a/index", bytes(range(100)))
        await b.upload("a/meta.json", b"{}")
        assert await b.get("a/meta.json") == b"{}"
        with pytest.raises(ObjectNotFound):
            await b.get("missing")
        with pytest.raises(InvalidObjectName):
            await b.get("../escape")
        assert await b.exists("a/index")
        assert await b.get_range("a/index", 10, 5) == bytes(range(10, 15))
        got = await get_ranges(b, [("a/index", 0, 3), ("a/missing", 0, 1), ("../escape", 0, 1),
                                   ("a/index", 50, 7)])
        assert [len(g) for g in got if isinstance(g, bytes)] == [3, 7]
    asyncio.run(main())
    now = get_ranges_now(b, [("a/index", 0, 10), ("a/index", 20, 11), ("a/meta.json", 0, 2),
                             ("a/index", 99, 1)])
    assert now is None or [len(g) for g in now] == [10, 11, 2, 1]

    ref = CollectorRegistry()
    labels = ["bucket", "operation"]
    ops = Counter("thanos_objstore_bucket_operations", "Operations against the bucket.",
                  labels, registry=ref)
    failures = Counter("thanos_objstore_bucket_operation_failures",
                       "Bucket operations that failed (a missing object asked for is not a "
                       "failure).", labels, registry=ref)
    seconds = Histogram("thanos_objstore_bucket_operation_duration_seconds",
                        "Duration of successful bucket operations.", labels,
                        buckets=objstore.metrics.BUCKETS, registry=ref)
    fetched = Counter("thanos_objstore_bucket_operation_fetched_bytes",
                      "Bytes read from the bucket by successful reads.", labels, registry=ref)
    Gauge("thanos_objstore_bucket_last_successful_upload_time",
          "Unix time of the last successful upload.", ["bucket"], registry=ref).labels(b.name)
    # (operation, operations, failures, durations observed, bytes fetched), in first-use order
    for op, n, failed, took, nbytes in [
            ("upload", 2, 0, [0.25, 0.25], None), ("get", 3, 1, [0.25], 2),
            ("exists", 1, 0, [0.25], None),
            ("get_range", 5 + (4 if now is not None else 0), 1,
             [0.25] + [0.0625] * 2 + ([0.0625] * 4 if now is not None else []),
             5 + 10 + (24 if now is not None else 0))]:
        ops.labels(b.name, op).inc(n)
        failures.labels(b.name, op).inc(failed)
        for t in took:
            seconds.labels(b.name, op).observe(t)
        fetched.labels(b.name, op).inc(nbytes or 0)

    def normalized(text: bytes) -> str:
        text = re.sub(r"_created(\{[^}]*\})? \S+", r"_created\1 T", text.decode())
        return re.sub(r"(_upload_time\{[^}]*\}) \S+", r"\1 U", text)
    for gen in (generate_latest, openmetrics):
        assert normalized(gen(reg)) == normalized(gen(ref))
    assert reg.get_sample_value("thanos_objstore_bucket_operation_duration_seconds_sum",
                                {"bucket": b.name, "operation": "get_range"}) == \
        0.25 + 0.125 + (0.25 if now is not None else 0)
