"""The frontend's results cache backends, and the one memcached client (common.memcache) as the
frontend uses it, against Debian's memcached and against dead, silent and garbage servers."""
from __future__ import annotations

import asyncio
import hashlib

import pytest
from prometheus_client import CollectorRegistry

from common.memcache import MemcachedClient, MemcachedClientConfig, MemcachedMetrics, jump_hash
from frontend.cache import CACHE_NAME, new_results_cache
from frontend.config import InMemoryCacheConfig, MemcachedConfig
from harness import free_port
from memcached import MemcachedProcess


@pytest.fixture
def two_memcached():
    servers = [MemcachedProcess(), MemcachedProcess()]
    yield servers
    for m in servers:
        m.stop()


def _client(addrs: list[str], reg: CollectorRegistry, **kw) -> MemcachedClient:
    return MemcachedClient(MemcachedClientConfig(addresses=addrs, timeout_s=2, **kw),
                           MemcachedMetrics(reg, "t"))


def _failures(reg: CollectorRegistry, name: str, op: str) -> float:
    """thanos_memcached_operation_failures_total of one operation, summed over its reasons."""
    return sum(reg.get_sample_value("thanos_memcached_operation_failures_total",
                                    {"name": name, "operation": op, "reason": r}) or 0.0
               for r in ("timeout", "server-error", "network-error", "malformed-key", "other"))


def _server_index(key: str, n: int) -> int:
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return jump_hash(h, n)


def test_get_set_across_two_servers_by_consistent_hashing(two_memcached):
    addrs = [m.address for m in two_memcached]
    reg = CollectorRegistry()

    async def go():
        c = _client(addrs, reg, max_item_size=0)  # 0: memcached's own 1 MiB limit applies
        try:
            keys = [f"k{i}" for i in range(200)]
            for k in keys:
                assert await c.set(k, b"v-" + k.encode() + b"\r\nEND\r\n", 60)
            got = await c.get_multi(keys + ["absent"])
            assert got == {k: b"v-" + k.encode() + b"\r\nEND\r\n" for k in keys}
            # each server holds its share: a client of one server alone sees only its keys
            one = _client(addrs[:1], CollectorRegistry())
            seen = await one.get_multi(keys)
            await one.close()
            owned = [k for k in keys if _server_index(k, 2) == 0]
            assert sorted(seen) == sorted(owned) and 40 < len(owned) < 160
            assert await c.get_multi(["bad key"]) == {}  # never sent
            assert not await c.set("big", b"x" * (2 << 20), 60)  # memcached refuses it
            assert await c.get_multi(["k1"]) == {"k1": b"v-k1\r\nEND\r\n"}  # still works
            small = _client(addrs, reg, max_item_size=4)  # never buffers a larger value
            assert await c.set("k1", b"y" * 2000, 60)
            assert await small.get_multi(["k1"]) == {}
            await small.close()
        finally:
            await c.close()
    asyncio.run(go())
    assert reg.get_sample_value("thanos_memcached_operation_skipped_total",
                                {"name": "t", "operation": "getmulti",
                                 "reason": "malformed-key"}) == 1
    assert _failures(reg, "t", "set") == 1 and _failures(reg, "t", "getmulti") == 1


def test_jump_hash_moves_only_the_lost_last_servers_keys():
    keys = [f"key{i}" for i in range(2000)]
    moved = sum(_server_index(k, 3) != _server_index(k, 2) for k in keys
                if _server_index(k, 3) != 2)
    assert moved == 0


def test_connection_closed_by_the_server_while_idle_is_not_reused():
    reg = CollectorRegistry()

    async def go():
        async def once(r, w):  # answers one get, then closes (as a restarted memcached)
            await r.readline()
            w.write(b"VALUE a 0 1\r\nx\r\nEND\r\n")
            await w.drain()
            w.close()
        server = await asyncio.start_server(once, "127.0.0.1", 0)
        c = _client([f"127.0.0.1:{server.sockets[0].getsockname()[1]}"], reg)
        try:
            first = await c.get_multi(["a"])
            await asyncio.sleep(0.1)  # the close reaches the pooled connection
            return first, await c.get_multi(["a"])
        finally:
            await c.close()
            server.close()
    assert asyncio.run(go()) == ({"a": b"x"}, {"a": b"x"})
    assert _failures(reg, "t", "getmulti") == 0


def test_dead_memcached_is_a_counted_miss_never_an_error(two_memcached):
    reg = CollectorRegistry()
    dead = f"127.0.0.1:{free_port()}"
    cache = new_results_cache(MemcachedConfig(addresses=(dead,), timeout_s=0.3), "snappy", reg)

    async def go():
        await cache.set("k", b"v")
        assert await cache.get("k") is None
        await cache.close()
    asyncio.run(go())
    assert _failures(reg, CACHE_NAME, "set") == 1
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
        assert _failures(reg, CACHE_NAME, op) == 1


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
    assert _failures(reg, CACHE_NAME, "getmulti") == 1
