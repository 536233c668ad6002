"""A bounded in-memory LRU for bytes read from object storage (postings, series, chunks).

Object storage round trips dominate store-gateway latency, and dashboards repeat the same
queries, so the raw item bytes are kept keyed by ``(block, item type, ref)``. The budget is in
bytes (not items) because item sizes differ by orders of magnitude. Single event loop only: no
locking.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from prometheus_client import CollectorRegistry, Counter, Gauge

# Rough per-entry bookkeeping cost (key tuple, dict slot, bytes header), counted against the
# budget so that many tiny items cannot blow far past it.
ENTRY_OVERHEAD = 120

ITEM_TYPES = ("postings", "series", "chunks")


class CacheMetrics:
    """Thanos's index-cache metric names, with item_type covering chunks too."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("thanos_store_index_cache_requests", "Cache lookups.",
                                ["item_type"], registry=registry)
        self.hits = Counter("thanos_store_index_cache_hits", "Cache lookups that hit.",
                            ["item_type"], registry=registry)
        self.added = Counter("thanos_store_index_cache_items_added", "Items added.",
                             ["item_type"], registry=registry)
        self.evicted = Counter("thanos_store_index_cache_items_evicted", "Items evicted.",
                               ["item_type"], registry=registry)
        self.items = Gauge("thanos_store_index_cache_items", "Items in the cache.",
                           registry=registry)
        self.bytes = Gauge("thanos_store_index_cache_total_size_bytes",
                           "Bytes accounted to cached items.", registry=registry)
        self.max_bytes = Gauge("thanos_store_index_cache_max_size_bytes", "Cache budget.",
                               registry=registry)
        for t in ITEM_TYPES:  # export zeros from the start so rates work
            for c in (self.requests, self.hits, self.added, self.evicted):
                c.labels(t)


class LRUCache:
    """LRU of ``bytes`` values bounded by ``max_bytes`` (0 disables caching)."""

    def __init__(self, max_bytes: int, metrics: CacheMetrics | None = None) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._d: OrderedDict[Hashable, tuple[bytes, str]] = OrderedDict()
        self._m = metrics
        if metrics is not None:
            metrics.max_bytes.set(max_bytes)

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: Hashable, item_type: str) -> bytes | None:
        hit = self._d.get(key)
        m = self._m
        if m is not None:
            m.requests.labels(item_type).inc()
        if hit is None:
            return None
        self._d.move_to_end(key)
        if m is not None:
            m.hits.labels(item_type).inc()
        return hit[0]

    def get_many(self, keys: list[Hashable], item_type: str) -> list[bytes | None]:
        """Batch lookup: one metrics update per call instead of per key."""
        d = self._d
        out: list[bytes | None] = []
        hits = 0
        for k in keys:
            v = d.get(k)
            if v is None:
                out.append(None)
            else:
                d.move_to_end(k)
                out.append(v[0])
                hits += 1
        if self._m is not None and keys:
            self._m.requests.labels(item_type).inc(len(keys))
            self._m.hits.labels(item_type).inc(hits)
        return out

    def put(self, key: Hashable, value: bytes, item_type: str) -> None:
        cost = len(value) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        old = self._d.pop(key, None)
        if old is not None:
            self.size -= len(old[0]) + ENTRY_OVERHEAD
        self._d[key] = (value, item_type)
        self.size += cost
        if self._m is not None:
            self._m.added.labels(item_type).inc()
        while self.size > self.max_bytes:
            _, (v, t) = self._d.popitem(last=False)
            self.size -= len(v) + ENTRY_OVERHEAD
            if self._m is not None:
                self._m.evicted.labels(t).inc()
        if self._m is not None:
            self._m.items.set(len(self._d))
            self._m.bytes.set(self.size)
