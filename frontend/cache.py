"""The results cache's storage: an in-process LRU or memcached, with Cortex/Thanos's metrics.

Keys are hashed (memcached keys are short and plain); values are optionally snappy-compressed.
A cache failure is never a query failure: it is counted and reads as a miss."""
from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict

import cramjam
from prometheus_client import CollectorRegistry, Counter, Gauge

from common.memcache import MemcachedClient, MemcachedMetrics

from .config import InMemoryCacheConfig, MemcachedConfig

log = logging.getLogger("promring.frontend")

CACHE_NAME = "frontend.query-range-results-cache"


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry, backend: str) -> None:
        self.fetched = Counter("cortex_cache_fetched_keys", "Total count of keys requested from cache.",
                               ["name"], registry=registry).labels(CACHE_NAME)
        self.hits = Counter("cortex_cache_hits", "Total count of keys found in cache.",
                            ["name"], registry=registry).labels(CACHE_NAME)
        self.added = Counter("querier_cache_added", "The total number of Put calls on the cache",
                             ["cache"], registry=registry).labels(CACHE_NAME)
        self.evicted = Counter("querier_cache_evicted", "The total number of evicted entries",
                               ["cache", "reason"], registry=registry)
        self.entries = Gauge("querier_cache_entries", "The total number of entries",
                             ["cache"], registry=registry).labels(CACHE_NAME)
        self.memory = Gauge("querier_cache_memory_bytes", "The current cache size in bytes",
                            ["cache"], registry=registry).labels(CACHE_NAME)
        self.backend = backend


class InMemoryCache:
    """LRU bounded by bytes and entries; entries older than ``validity`` read as misses."""

    def __init__(self, cfg: InMemoryCacheConfig, metrics: CacheMetrics) -> None:
        self.cfg, self.m = cfg, metrics
        self._items: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    async def get(self, key: bytes) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if self.cfg.validity_s and time.monotonic() - item[0] > self.cfg.validity_s:
            self._drop(key, "expired")
            return None
        self._items.move_to_end(key)
        return item[1]

    async def set(self, key: bytes, value: bytes) -> None:
        if self.cfg.max_size_bytes and len(value) > self.cfg.max_size_bytes:
            return
        if key in self._items:
            self._bytes -= len(self._items.pop(key)[1])
        self._items[key] = (time.monotonic(), value)
        self._bytes += len(value)
        self.m.added.inc()
        while ((self.cfg.max_size_bytes and self._bytes > self.cfg.max_size_bytes)
               or (self.cfg.max_size_items and len(self._items) > self.cfg.max_size_items)):
            self._drop(next(iter(self._items)), "full")
        self._gauges()

    def _drop(self, key: bytes, reason: str) -> None:
        self._bytes -= len(self._items.pop(key)[1])
        self.m.evicted.labels(CACHE_NAME, reason).inc()
        self._gauges()

    def _gauges(self) -> None:
        self.m.entries.set(len(self._items))
        self.m.memory.set(self._bytes)

    async def close(self) -> None:
        self._items.clear()


class MemcachedCache:
    """memcached through common.memcache's client (which counts errors as
    ``thanos_memcached_operation_failures_total{name=CACHE_NAME}`` and reads them as misses)."""

    def __init__(self, cfg: MemcachedConfig, metrics: CacheMetrics,
                 registry: CollectorRegistry) -> None:
        self.cfg, self.m = cfg, metrics
        self.client = MemcachedClient(cfg, MemcachedMetrics(registry, CACHE_NAME))

    async def get(self, key: bytes) -> bytes | None:
        k = key.decode("ascii")
        return (await self.client.get_multi([k])).get(k)

    async def set(self, key: bytes, value: bytes) -> None:
        if await self.client.set(key.decode("ascii"), value, self.cfg.expiration_s):
            self.m.added.inc()

    async def close(self) -> None:
        await self.client.close()


class ResultsCache:
    """Byte values under hashed keys, with hit/miss counting and optional snappy."""

    def __init__(self, backend: InMemoryCache | MemcachedCache, metrics: CacheMetrics,
                 compression: str = "") -> None:
        self.backend, self.m, self.snappy = backend, metrics, compression == "snappy"

    @staticmethod
    def hashed(key: str) -> bytes:
        return hashlib.sha256(key.encode()).hexdigest().encode()

    async def get(self, key: str) -> bytes | None:
        self.m.fetched.inc()
        value = await self.backend.get(self.hashed(key))
        if value is None:
            return None
        if self.snappy:
            try:
                value = bytes(cramjam.snappy.decompress_raw(value))
            except Exception:  # noqa: BLE001 -- a corrupt or foreign entry is a miss
                return None
        self.m.hits.inc()
        return value

    async def set(self, key: str, value: bytes) -> None:
        if self.snappy:
            value = bytes(cramjam.snappy.compress_raw(value))
        await self.backend.set(self.hashed(key), value)

    async def close(self) -> None:
        await self.backend.close()


def new_results_cache(cfg: InMemoryCacheConfig | MemcachedConfig | None, compression: str,
                      registry: CollectorRegistry) -> ResultsCache | None:
    if cfg is None:
        return None
    if isinstance(cfg, InMemoryCacheConfig) and not (cfg.max_size_bytes or cfg.max_size_items):
        # As Thanos (Cortex's FIFO cache): an unbounded in-memory cache is no cache.
        log.warning("neither max_size nor max_size_items is set: results cache disabled")
        return None
    if isinstance(cfg, MemcachedConfig):
        m = CacheMetrics(registry, "memcached")
        return ResultsCache(MemcachedCache(cfg, m, registry), m, compression)
    m = CacheMetrics(registry, "fifo")
    return ResultsCache(InMemoryCache(cfg, m), m, compression)
