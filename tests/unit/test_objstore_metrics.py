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
