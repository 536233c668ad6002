"""The frontend's memcached client and cache backends against Debian's memcached."""
from __future__ import annotations

import asyncio
import collections

import pytest
from prometheus_client import CollectorRegistry

from frontend.cache import CACHE_NAME, new_results_cache
from frontend.config import InMemoryCacheConfig, MemcachedConfig
from frontend.memcached import HashRing, MemcachedClient, MemcachedError
from harness import free_port
from memcachedproc import Memcached


@pytest.fixture
def two_memcached():
    servers = [Memcached().start(), Memcached().start()]
    yield servers
    for m in servers:
        m.stop()


def test_get_set_across_two_servers_by_consistent_hashing(two_memcached):
    addrs = [m.address for m in two_memcached]

    async def go():
        c = MemcachedClient(addrs, timeout_s=2)
        try:
            keys = [f"k{i}".encode() for i in range(200)]
            for k in keys:
                await c.set(k, b"v-" + k + b"\r\nEND\r\n", 60)
            assert [await c.get(k) for k in keys] == [b"v-" + k + b"\r\nEND\r\n" for k in keys]
            assert await c.get(b"absent") is None
            # each server holds its share: a client of one server alone sees only its keys
            one = MemcachedClient(addrs[:1], timeout_s=2)
            seen = [await one.get(k) is not None for k in keys]
            await one.close()
            owners = collections.Counter(c.ring.server_for(k) for k in keys)
            assert sum(seen) == owners[addrs[0]] and 40 < owners[addrs[0]] < 160
            with pytest.raises(MemcachedError):
                await c.get(b"bad key")
            with pytest.raises(MemcachedError):  # larger than memcached's 1 MiB item limit
                await c.set(b"big", b"x" * (2 << 20), 60)
            assert await c.get(b"k1") == b"v-k1\r\nEND\r\n"  # the client still works after it
            small = MemcachedClient(addrs, timeout_s=2, max_value_bytes=4)
            with pytest.raises(MemcachedError, match="larger than allowed"):
                await small.get(b"k1")
            await small.close()
        finally:
            await c.close()
    asyncio.run(go())


def test_ring_moves_only_the_lost_servers_keys():
    a = HashRing(["a:1", "b:1", "c:1"])
    b = HashRing(["a:1", "b:1"])
    keys = [f"key{i}".encode() for i in range(2000)]
    moved = sum(a.server_for(k) != b.server_for(k) for k in keys if a.server_for(k) != "c:1")
    assert moved == 0


def test_dead_memcached_is_a_counted_miss_never_an_error(two_memcached):
    reg = CollectorRegistry()
    dead = f"127.0.0.1:{free_port()}"
    cache = new_results_cache(MemcachedConfig(addresses=(dead,), timeout_s=0.3), "snappy", reg)

    async def go():
        await cache.set("k", b"v")
        assert await cache.get("k") is None
        await cache.close()
    asyncio.run(go())
    assert reg.get_sample_value("thanos_memcached_operation_failures_total",
                                {"name": CACHE_NAME, "operation": "set"}) == 1
    assert reg.get_sample_value("cortex_cache_fetched_keys_total", {"name": CACHE_NAME}) == 1
    assert reg.get_sample_value("cortex_cache_hits_total", {"name": CACHE_NAME}) == 0


def test_memcached_backend_round_trip_compressed(two_memcached):
    reg = CollectorRegistry()
    cfg = MemcachedConfig(addresses=tuple(m.address for m in two_memcached), timeout_s=2)
    cache = new_results_cache(cfg, "snappy", reg)

    async def go():
        await cache.set("q", b"answer" * 1000)
        assert await cache.get("q") == b"answer" * 1000
        await cache.close()
    asyncio.run(go())
    assert reg.get_sample_value("cortex_cache_hits_total", {"name": CACHE_NAME}) == 1


def test_in_memory_cache_bounds_and_evictions():
    reg = CollectorRegistry()
    cache = new_results_cache(InMemoryCacheConfig(max_size_bytes=0, max_size_items=2), "", reg)

    async def go():
        for k in "abc":
            await cache.set(k, k.encode() * 10)
        return [await cache.get(k) for k in "abc"]
    assert asyncio.run(go()) == [None, b"b" * 10, b"c" * 10]
    assert reg.get_sample_value("querier_cache_evicted_total",
                                {"cache": CACHE_NAME, "reason": "full"}) == 1
    assert reg.get_sample_value("querier_cache_entries", {"cache": CACHE_NAME}) == 2
    assert new_results_cache(InMemoryCacheConfig(), "", CollectorRegistry()) is None  # unbounded


def test_in_memory_cache_byte_bound_and_validity():
    reg = CollectorRegistry()
    cache = new_results_cache(InMemoryCacheConfig(max_size_bytes=25, validity_s=0.2), "", reg)

    async def go():
        await cache.set("a", b"a" * 10)
        await cache.set("b", b"b" * 10)
        await cache.set("c", b"c" * 10)  # 30 bytes > 25: the oldest goes
        await cache.set("huge", b"h" * 26)  # larger than the whole cache: not stored
        first = [await cache.get(k) for k in ("a", "b", "c", "huge")]
        await asyncio.sleep(0.3)
        return first, await cache.get("b")
    first, expired = asyncio.run(go())
    assert first == [None, b"b" * 10, b"c" * 10, None] and expired is None
    assert reg.get_sample_value("querier_cache_evicted_total",
                                {"cache": CACHE_NAME, "reason": "expired"}) == 1


def test_memcached_that_never_answers_costs_one_timeout_not_a_hang():
    reg = CollectorRegistry()

    async def go():
        held: list[asyncio.StreamWriter] = []

        async def silent(_r, w):  # accepts, reads nothing, answers nothing
            held.append(w)
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cache = new_results_cache(MemcachedConfig(addresses=(f"127.0.0.1:{port}",),
                                                  timeout_s=0.2), "", reg)
        try:
            got = await asyncio.wait_for(asyncio.gather(cache.get("a"), cache.set("b", b"v")), 5)
        finally:
            await cache.close()
            for w in held:
                w.close()
            server.close()
        return got
    assert asyncio.run(go())[0] is None
    for op in ("getmulti", "set"):
        assert reg.get_sample_value("thanos_memcached_operation_failures_total",
                                    {"name": CACHE_NAME, "operation": op}) == 1


def test_memcached_answering_garbage_is_a_miss():
    reg = CollectorRegistry()

    async def go():
        async def garbage(r, w):
            await r.readline()
            w.write(b"x" * 100_000)  # one endless line, no CRLF
            await w.drain()
        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cache = new_results_cache(MemcachedConfig(addresses=(f"127.0.0.1:{port}",),
                                                  timeout_s=2), "", reg)
        try:
            return await cache.get("a")
        finally:
            await cache.close()
            server.close()
    assert asyncio.run(go()) is None
    assert reg.get_sample_value("thanos_memcached_operation_failures_total",
                                {"name": CACHE_NAME, "operation": "getmulti"}) == 1
