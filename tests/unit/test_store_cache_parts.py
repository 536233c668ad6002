"""Store-gateway caches against a real memcached: the client, sealed values, the caching
bucket's subranges, and a gateway whose shared cache is warm, garbled or dead."""
from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from common.memcache import MemcachedClient, MemcachedClientConfig, MemcachedMetrics, jump_hash
from memcached import MemcachedProcess
from objstore.filesystem import FilesystemBucket
from store.cache import (
    InMemoryBytesCache,
    MemcachedBytesCache,
    parse_index_cache_config,
    seal,
    unseal,
)
from store.cachingbucket import CachingBucket, parse_caching_bucket_config


@pytest.fixture
def mc():
    m = MemcachedProcess()
    yield m
    m.stop()


def _client(addrs: list[str], reg: CollectorRegistry | None = None, **kw) -> MemcachedClient:
    return MemcachedClient(MemcachedClientConfig(addresses=addrs, **kw),
                           MemcachedMetrics(reg or CollectorRegistry(), "t"))


def _val(reg: CollectorRegistry, metric: str, **labels) -> float:
    return reg.get_sample_value(metric, labels) or 0.0


def test_client_set_get_multi_over_two_servers(mc: MemcachedProcess) -> None:
    other = MemcachedProcess()
    try:
        async def body() -> None:
            c = _client([mc.address, other.address], max_get_multi_batch_size=7)
            items = {f"k{i}": bytes([i % 251]) * (i * 37) for i in range(100)}
            for k, v in items.items():
                assert await c.set(k, v, 60)
            got = await c.get_multi(list(items) + ["absent", "bad key", "x" * 300])
            assert got == items
            await c.close()
        asyncio.run(body())
        # both servers hold a share of the keys (jump hash spreads them)
        assert mc.keys() and other.keys()
        assert len(mc.keys()) + len(other.keys()) == 100
    finally:
        other.stop()


def test_jump_hash_moves_few_keys_when_a_server_is_added() -> None:
    keys = [random.Random(i).getrandbits(64) for i in range(2000)]
    moved = sum(jump_hash(k, 4) != jump_hash(k, 5) for k in keys)
    assert 0 < moved < 2000 * 0.3
    assert all(jump_hash(k, 1) == 0 for k in keys)


def test_dead_or_blackholed_server_is_a_counted_miss_never_an_error() -> None:
    import socket
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)  # accepts connections but never answers: every op times out
    dead_port = socket.socket()
    dead_port.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{dead_port.getsockname()[1]}"
    dead_port.close()
    reg = CollectorRegistry()

    async def body() -> None:
        slow = _client([f"127.0.0.1:{lst.getsockname()[1]}"], reg, timeout_s=0.2)
        assert await slow.get_multi(["a", "b"]) == {}
        assert not await slow.set("a", b"1", 10)
        await slow.close()
        gone = MemcachedClient(MemcachedClientConfig(addresses=[dead]),
                               MemcachedMetrics(reg, "u"))
        assert await gone.get_multi(["a"]) == {}
        assert await gone.get_multi(["a"]) == {}  # inside the back-off: skipped, no connect
        await gone.close()
    asyncio.run(body())
    lst.close()
    assert _val(reg, "thanos_memcached_operation_failures_total", name="t",
                operation="getmulti", reason="timeout") == 1
    assert _val(reg, "thanos_memcached_operation_failures_total", name="u",
                operation="getmulti", reason="network-error") == 1
    assert _val(reg, "thanos_memcached_operation_skipped_total", name="u",
                operation="getmulti", reason="server-down") == 1


def test_sealed_values_reject_garbage_truncation_and_foreign_keys() -> None:
    v = seal("S@:b:1", b"payload")
    assert unseal("S@:b:1", v) == b"payload"
    assert unseal("S@:b:2", v) is None  # stored under another key
    assert unseal("S@:b:1", v[:-1]) is None
    assert unseal("S@:b:1", b"garbage") is None
    assert unseal("S@:b:1", v[:5] + b"X" + v[6:]) is None


def test_memcached_bytes_cache_counts_invalid_values_as_misses(mc: MemcachedProcess) -> None:
    reg = CollectorRegistry()

    async def body() -> None:
        c = MemcachedBytesCache(_client([mc.address], reg), reg, "index-cache")
        c.store("good", b"v1", 60)
        await c.client.flush()
        mc.set_raw("bad", b"\x00pr1\x00\x00\x00\x00junk")
        assert await c.fetch(["good", "bad", "none"]) == {"good": b"v1"}
        await c.close()
    asyncio.run(body())
    assert _val(reg, "thanos_cache_memcached_requests_total", name="index-cache") == 3
    assert _val(reg, "thanos_cache_memcached_hits_total", name="index-cache") == 1
    assert _val(reg, "promring_cache_memcached_invalid_values_total", name="index-cache") == 1


def test_cache_configs_parse_thanos_yaml_and_reject_bad_ones() -> None:
    c = parse_index_cache_config("type: MEMCACHED\nconfig:\n  addresses: [127.0.0.1:11211]\n"
                                 "  timeout: 100ms\n  max_item_size: 2MiB\nttl: 1h\n")
    assert c.backend.memcached.timeout_s == 0.1 and c.backend.max_item_size == 2 << 20
    assert c.ttl_s == 3600
    c = parse_index_cache_config("type: in-memory\nconfig:\n  max_size: 10MB\n")
    assert c.backend.type == "IN-MEMORY" and c.backend.max_size == 10_000_000
    b = parse_caching_bucket_config("type: IN-MEMORY\nchunk_subrange_size: 100\n"
                                    "chunk_subrange_ttl: 1h\nblocks_iter_ttl: 5m\n")
    assert b.chunk_subrange_size == 100 and b.chunk_subrange_ttl_s == 3600
    for bad in ("type: REDIS\n", "type: MEMCACHED\nconfig: {}\n", "- a\n", "type: [\n",
                "type: IN-MEMORY\nconfig:\n  max_size: lots\n",
                "type: IN-MEMORY\nnope: 1\n", "type: MEMCACHED\nconfig:\n  addresses: [x]\n",
                "type: MEMCACHED\nconfig:\n  addresses: [a:1]\n  adress: b\n"):
        with pytest.raises(ValueError):
            parse_index_cache_config(bad)
    with pytest.raises(ValueError):
        parse_caching_bucket_config("type: IN-MEMORY\nchunk_subrange_size: 0\n")


def _chunk_object(tmp: Path) -> tuple[FilesystemBucket, str, bytes]:
    data = random.Random(7).randbytes(5000)
    name = "01HZZZZZZZZZZZZZZZZZZZZZZZ/chunks/000001"
    (tmp / "01HZZZZZZZZZZZZZZZZZZZZZZZ" / "chunks").mkdir(parents=True)
    (tmp / name).write_bytes(data)
    return FilesystemBucket(str(tmp)), name, data


@pytest.mark.parametrize("backend", ["IN-MEMORY", "MEMCACHED"])
def test_caching_bucket_subranges_equal_the_object(tmp_path: Path, mc: MemcachedProcess,
                                                   backend: str) -> None:
    bkt, name, data = _chunk_object(tmp_path)
    extra = f"config:\n  addresses: [{mc.address}]\n" if backend == "MEMCACHED" else ""
    cfg = parse_caching_bucket_config(f"type: {backend}\n{extra}chunk_subrange_size: 300\n"
                                      "max_chunks_get_range_requests: 2\n")
    reg = CollectorRegistry()

    async def body() -> None:
        from store.cache import new_bytes_cache
        cb = CachingBucket(bkt, new_bytes_cache(cfg.backend, reg, "caching-bucket"), cfg, reg)
        rnd = random.Random(3)
        for _ in range(200):
            off = rnd.randrange(0, 5000)
            ln = rnd.choice([-1, 1, rnd.randrange(1, 2000), 6000])
            want = data[off:] if ln < 0 else data[off:off + ln]
            assert await cb.get_range(name, off, ln) == want
            if backend == "MEMCACHED":
                await cb.cache.client.flush()
        await cb.cache.close()
    asyncio.run(body())
    req = _val(reg, "thanos_store_bucket_cache_operation_requests_total",
               operation="get_range", config="chunks")
    hits = _val(reg, "thanos_store_bucket_cache_operation_hits_total",
                operation="get_range", config="chunks")
    assert req == 200 and hits > 100  # 17 subranges in all: most reads are whole hits
    assert _val(reg, "thanos_store_bucket_cache_getrange_fetched_bytes_total",
                origin="bucket", config="chunks") < 3 * len(data)


def test_caching_bucket_garbled_subrange_is_reread(tmp_path: Path, mc: MemcachedProcess) -> None:
    bkt, name, data = _chunk_object(tmp_path)
    cfg = parse_caching_bucket_config(f"type: MEMCACHED\nconfig:\n  addresses: [{mc.address}]\n"
                                      "chunk_subrange_size: 1000\n")
    reg = CollectorRegistry()

    async def body() -> None:
        from store.cache import new_bytes_cache
        cb = CachingBucket(bkt, new_bytes_cache(cfg.backend, reg, "caching-bucket"), cfg, reg)
        assert await cb.get_range(name, 0, 5000) == data
        await cb.cache.client.flush()
        keys = [k for k in mc.keys() if k.startswith("subrange@")]
        assert len(keys) == 5
        for k in keys:
            mc.set_raw(k, b"\xff" * 1008)  # right size, wrong bytes
        assert await cb.get_range(name, 100, 4000) == data[100:4100]
        await cb.cache.close()
    asyncio.run(body())
    assert _val(reg, "promring_cache_memcached_invalid_values_total", name="caching-bucket") == 5


def test_in_memory_bytes_cache_bounds_items() -> None:
    c = InMemoryBytesCache(10_000, max_item_size=100)

    async def body() -> None:
        c.store("small", b"x" * 100, 0)
        c.store("big", b"x" * 101, 0)
        assert await c.fetch(["small", "big"]) == {"small": b"x" * 100}
    asyncio.run(body())


def test_store_refuses_bad_cache_flags_with_exit_2(tmp_path: Path) -> None:
    import subprocess
    from harness import promring_cmd
    base = promring_cmd() + ["store", "--objstore.config",
                             f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path}\n",
                             "--data-dir", str(tmp_path / "d"), "--http-address", "127.0.0.1:0",
                             "--grpc-address", "127.0.0.1:0"]
    for extra, msg in ((["--index-cache.config", "type: REDIS\n"], "unsupported cache type"),
                       (["--store.caching-bucket.config", "type: MEMCACHED\nconfig: {}\n"],
                        "config.addresses"),
                       (["--index-cache.config", "type: IN-MEMORY\n",
                         "--index-cache.config-file", "/nonexistent"], "both --index-cache")):
        r = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and msg in r.stderr, (extra, r.returncode, r.stderr[-500:])


def test_in_memory_index_cache_config_sizes_the_lru(tmp_path: Path) -> None:
    from store.server import StoreConfig, StoreGateway
    gw = StoreGateway(StoreConfig(data_dir=tmp_path, objstore_config="", cache_bytes=1 << 30,
                                  index_cache_config="type: IN-MEMORY\nconfig:\n"
                                                     "  max_size: 3MiB\n"))
    assert gw.cache.max_bytes == 3 << 20 and gw.remote_cache is None
    with pytest.raises(ValueError):
        StoreGateway(StoreConfig(data_dir=tmp_path, objstore_config="",
                                 caching_bucket_config="type: MEMCACHED\n"))


def test_cached_index_items_must_be_whole_and_checksummed() -> None:
    import struct
    from receiver.tsdb._blockio import crc32c
    from store.block import _chunk_len, _item_intact, _postings_len, _series_len
    body = struct.pack(">I3I", 3, 1, 5, 9)
    post = struct.pack(">I", len(body)) + body + struct.pack(">I", crc32c(body))
    assert _item_intact(post, _postings_len, 4)
    assert not _item_intact(post[:-1], _postings_len, 4)
    assert not _item_intact(post[:6] + b"\xff" + post[7:], _postings_len, 4)
    data = b"\x01\x02series-bytes"
    series = bytes([len(data)]) + data + struct.pack(">I", crc32c(data))
    assert _item_intact(series, _series_len, None)
    assert not _item_intact(series + b"x", _series_len, None)
    assert not _item_intact(b"\xff" * 12, _series_len, None)  # uvarint overflow, no crash
    chunk = bytes([len(data)]) + b"\x01" + data + struct.pack(">I", crc32c(b"\x01" + data))
    assert _item_intact(chunk, _chunk_len, None)
    assert not _item_intact(b"", _chunk_len, None)


def test_background_sets_are_bounded_and_dropped_not_queued_forever() -> None:
    import socket
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)  # never answers
    reg = CollectorRegistry()

    async def body() -> None:
        c = _client([f"127.0.0.1:{lst.getsockname()[1]}"], reg, timeout_s=0.2,
                    max_async_buffer_size=2)
        for i in range(5):
            c.set_async(f"k{i}", b"v", 60)
        c.set_async("big", b"x" * ((1 << 20) + 1), 60)  # over max_item_size
        await c.close()
    asyncio.run(body())
    lst.close()
    assert _val(reg, "thanos_memcached_operation_skipped_total", name="t", operation="set",
                reason="async-buffer-full") == 3
    assert _val(reg, "thanos_memcached_operation_skipped_total", name="t", operation="set",
                reason="max-item-size") == 1


@pytest.mark.parametrize("reply", [
    b"VALUE a 0 99999999999\r\n",            # absurd size
    b"VALUE other 0 1\r\nx\r\nEND\r\n",      # a key not asked for
    b"VALUE a 0 3\r\nxyzEND\r\n",            # value not CRLF-terminated
    b"SERVER_ERROR out of memory\r\n",
    b"x" * 5000,                             # no line end at all
    b"VALUE a 0 5\r\nab",                    # cut off, connection closed
])
def test_hostile_memcached_replies_are_misses(reply: bytes) -> None:
    reg = CollectorRegistry()

    async def body() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readline()
            w.write(reply)
            await w.drain()
            w.close()
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        c = _client([f"127.0.0.1:{port}"], reg, timeout_s=1.0)
        assert await c.get_multi(["a"]) == {}
        await c.close()
        srv.close()
        await srv.wait_closed()
    asyncio.run(body())
    assert sum(_val(reg, "thanos_memcached_operation_failures_total", name="t",
                    operation="getmulti", reason=r)
               for r in ("server-error", "network-error", "timeout")) == 1
