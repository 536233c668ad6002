"""Store gateways as real processes sharing one real memcached (Debian's): the first one's
queries warm the shared index cache and caching bucket, a fresh second one answers the same
queries from it with far fewer bucket reads; answers are identical with and without the cache,
with garbage injected under the real keys, and with memcached SIGKILLed mid-run."""
from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from harness import store_process
from memcached import MemcachedProcess
from receiver.tsdb.block import write_block_from_samples
from receiver.tsdb.labels import Matcher
from storeapi.client import StoreClient

H2 = 2 * 3600 * 1000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H2
GROUPS = 12


def _bucket(tmp: Path) -> Path:
    """One 2h block: GROUPS groups of 15 series, 240 samples each."""
    bucket = tmp / "bucket"
    bucket.mkdir()
    ts = T0 + np.arange(240, dtype=np.int64) * 30_000
    series = [((("__name__", "up"), ("group", f"g{g:02d}"), ("instance", f"h{i:03d}")),
               ts, np.sin(ts / 1e6 + g * 100 + i)) for g in range(GROUPS) for i in range(15)]
    meta = write_block_from_samples(tmp / "src", series, T0, T0 + H2,
                                    thanos_meta={"labels": {"cluster": "c"}})
    shutil.copytree(tmp / "src" / meta.ulid, bucket / meta.ulid)
    (tmp / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    return bucket


def _flags(mc: MemcachedProcess) -> list[str]:
    backend = f"type: MEMCACHED\nconfig:\n  addresses: [{mc.address}]\n  timeout: 200ms\n"
    return ["--index-cache.config", backend,
            "--store.caching-bucket.config", backend + "chunk_subrange_size: 4000\n"]


def _query(grpc: str, group: str) -> list:
    async def go():
        c = StoreClient(grpc, timeout_s=30)
        try:
            got = await c.series(T0, T0 + H2, [Matcher("=", "__name__", "up"),
                                               Matcher("=", "group", group)])
        finally:
            await c.close()
        return [(s.labels, [(a, b, bytes(d)) for a, b, d in s.chunks]) for s in got]
    return asyncio.run(go())


def _metric(proc, name: str) -> float:
    text = requests.get(proc.url("http", "/metrics"), timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _bucket_bytes(proc) -> float:
    """Bytes queries read from object storage: index items below the caches, chunk subranges
    below the caching bucket."""
    return (_metric(proc, 'promring_store_bucket_fetched_bytes_total{item_type="postings"}')
            + _metric(proc, 'promring_store_bucket_fetched_bytes_total{item_type="series"}')
            + _metric(proc, 'thanos_store_bucket_cache_getrange_fetched_bytes_total'
                            '{config="chunks",origin="bucket"}'))


@pytest.fixture
def mc():
    m = MemcachedProcess()
    yield m
    m.stop()


def _start(tmp: Path, name: str, *extra: str):
    return store_process(tmp, name, tmp / "objstore.yml", "--sync-block-duration", "1h",
                         *extra).start(timeout=60)


def test_second_gateway_answers_from_the_shared_cache(tmp_path: Path, mc: MemcachedProcess
                                                      ) -> None:
    _bucket(tmp_path)
    plain = _start(tmp_path, "plain")
    try:
        want = {g: _query(plain.grpc, f"g{g:02d}") for g in range(GROUPS)}
    finally:
        plain.stop()
    assert all(len(v) == 15 for v in want.values())

    first = _start(tmp_path, "first", *_flags(mc))
    try:
        for g in range(4):
            assert _query(first.grpc, f"g{g:02d}") == want[g]
        warm_reads = _bucket_bytes(first)
        time.sleep(0.5)  # background sets reach memcached
    finally:
        first.stop()
    assert warm_reads > 0

    second = _start(tmp_path, "second", *_flags(mc))
    try:
        for g in range(4):
            assert _query(second.grpc, f"g{g:02d}") == want[g]
        assert _bucket_bytes(second) == 0  # everything came from memcached
        assert _metric(second, 'thanos_cache_memcached_hits_total{name="index-cache"}') > 0
        assert _metric(second, 'thanos_store_bucket_cache_operation_hits_total'
                               '{config="chunks",operation="get_range"}') > 0
    finally:
        second.stop()

    # Garbage under every real key: misses, re-read from the bucket, still the right answers.
    keys = mc.keys()
    assert any(k.startswith("S@:") for k in keys) and any(k.startswith("subrange@:") for k in keys)
    for i, k in enumerate(keys):
        mc.set_raw(k, b"\x00pr1" + bytes([i % 256]) * 40 if i % 2 else b"garbage")
    third = _start(tmp_path, "third", *_flags(mc))
    try:
        for g in range(4):
            assert _query(third.grpc, f"g{g:02d}") == want[g]
        assert _metric(third, "promring_cache_memcached_invalid_values_total") > 0
        assert _bucket_bytes(third) > 0
        assert "taken out of service" not in third.log_text()
    finally:
        third.stop()


def test_memcached_killed_mid_run_fails_no_query(tmp_path: Path, mc: MemcachedProcess) -> None:
    _bucket(tmp_path)
    gw = _start(tmp_path, "gw", *_flags(mc))
    plain = _start(tmp_path, "plain")
    try:
        want = {g: _query(plain.grpc, f"g{g:02d}") for g in range(GROUPS)}
        failures: list[BaseException] = []
        answers: dict[int, list] = {}

        def run() -> None:
            for g in range(GROUPS):  # each group is new to the gateway's in-process LRU
                try:
                    answers[g] = _query(gw.grpc, f"g{g:02d}")
                except BaseException as e:  # noqa: BLE001 -- collected, asserted below
                    failures.append(e)
                if g == 3:
                    mc.kill9()
        t = threading.Thread(target=run)
        t.start()
        t.join(120)
        assert not t.is_alive()
        assert failures == []
        assert answers == want
        assert _metric(gw, "thanos_memcached_operation_failures_total") > 0
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        plain.stop()
