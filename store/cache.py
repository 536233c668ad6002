"""A bounded in-memory LRU for bytes read from object storage (postings, series, chunks).

Object storage round trips dominate store-gateway latency, and dashboards repeat the same
queries, so the raw item bytes are kept keyed by ``(block, item type, ref)``. The budget is in
bytes (not items) because item sizes differ by orders of magnitude. Single event loop only: no
locking.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily

from common.memcache import (
    MemcachedClient,
    MemcachedClientConfig,
    MemcachedMetrics,
    duration_field_s,
    parse_memcached_config,
    shared_metric,
    size_field,
)
from receiver.tsdb._blockio import crc32c
from store._lru import lookup, put_many

# Rough per-entry bookkeeping cost (key tuple, dict slot, bytes header), counted against the
# budget so that many tiny items cannot blow far past it.
ENTRY_OVERHEAD = 120

ITEM_TYPES = ("postings", "expanded_postings", "series", "chunks")


class CacheMetrics:
    """Thanos's index-cache metric names, with item_type covering chunks too."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lookups = LookupCounts(registry)
        self.added = PlainCounter(registry, "thanos_store_index_cache_items_added",
                                  "Items added.", "item_type", ITEM_TYPES)
        self.evicted = PlainCounter(registry, "thanos_store_index_cache_items_evicted",
                                    "Items evicted.", "item_type", ITEM_TYPES)
        self.items = Gauge("thanos_store_index_cache_items", "Items in the cache.",
                           registry=registry)
        self.bytes = Gauge("thanos_store_index_cache_total_size_bytes",
                           "Bytes accounted to cached items.", registry=registry)
        self.max_bytes = Gauge("thanos_store_index_cache_max_size_bytes", "Cache budget.",
                               registry=registry)


class PlainCounter:
    """A counter with one label, kept as plain integers by label value and read at scrape
    time (zeros for ``values`` exported from the start, so rates work): a cold request
    counts a few kinds of items, and each prometheus_client ``inc`` took four Python calls
    and a lock, a visible part of a small query's cost."""

    def __init__(self, registry: CollectorRegistry, name: str, doc: str, label: str,
                 values: Iterable[str] = ()) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.counts: dict[str, float] = dict.fromkeys(values, 0)
        registry.register(self)

    def inc(self, value: str, n: float = 1) -> None:
        c = self.counts
        c[value] = c.get(value, 0) + n

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for v, n in list(self.counts.items()):
            family.add_metric([v], n)
        yield family


class LookupCounts:
    """``thanos_store_index_cache_{requests,hits}_total{item_type}`` as plain integers (see
    PlainCounter; a query looks up items of every block it reads, several lookups per
    block), added to in place by the cache."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = PlainCounter(registry, "thanos_store_index_cache_requests",
                                      "Cache lookups.", "item_type", ITEM_TYPES)
        self._hits = PlainCounter(registry, "thanos_store_index_cache_hits",
                                  "Cache lookups that hit.", "item_type", ITEM_TYPES)
        self.requests = self._requests.counts
        self.hits = self._hits.counts


# lookup()'s modes (store/_lru.c): count every key, only the hits, or all or nothing
_EVERY, _HITS, _ALL = 0, 1, 2


class LRUCache:
    """LRU of ``bytes`` values bounded by ``max_bytes`` (0 disables caching).

    The store's keys are ``(block, item type, ref)`` tuples: an entry's item type (counted
    when it is evicted) is its key's second field, so the values are kept as they are (no
    (value, type) pair per entry: a lookup hands them back without a Python step per item,
    and an entry costs one tuple less). Any other key's item type is kept aside."""

    def __init__(self, max_bytes: int, metrics: CacheMetrics | None = None) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._d: OrderedDict[Hashable, bytes] = OrderedDict()
        self._types: dict[Hashable, str] = {}  # item types of keys that are not tuples
        self._m = metrics
        # Lookup counts by item type, added to in place (exported by LookupCounts at scrape
        # time; a private pair without metrics): a method call per lookup batch was a visible
        # part of a warm block read.
        self._requests: dict[str, int] = {} if metrics is None else metrics.lookups.requests
        self._hits: dict[str, int] = {} if metrics is None else metrics.lookups.hits
        if metrics is not None:
            metrics.max_bytes.set(max_bytes)
            # read at scrape time: two gauge updates per insert batch were a visible part of
            # a cold query's (one small insert per block and item type)
            metrics.items.set_function(self.__len__)
            metrics.bytes.set_function(lambda: self.size)

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: Hashable, item_type: str) -> bytes | None:
        return lookup(self._d, (key,), item_type, self._requests, self._hits, _EVERY)[0]

    def get_many(self, keys: Sequence[Hashable], item_type: str) -> list[bytes | None]:
        """The value of each key or None, the hits moved to the newest end, every key counted
        as a lookup (one metrics update per call)."""
        return lookup(self._d, keys, item_type, self._requests, self._hits, _EVERY)

    def get_all(self, keys: Sequence[Hashable], item_type: str) -> list[bytes] | None:
        """The values of ``keys`` if every one is cached (counted as hits), else None with
        nothing counted or reordered: the warm path of a reader that otherwise works out and
        reads its misses (and counts the lookups then)."""
        return lookup(self._d, keys, item_type, self._requests, self._hits, _ALL)

    def get_each(self, keys: Sequence[Hashable], item_type: str) -> list[bytes | None]:
        """The value of each key or None, counting (and reordering) the hits only: as
        ``get_all`` of each key alone would, in one call (a cold request's lookups of
        selections over all its blocks)."""
        return lookup(self._d, keys, item_type, self._requests, self._hits, _HITS)

    def count_memo_hits(self, postings: int, series: int, chunks: int) -> None:
        """Count the lookups one memo answer (store.warmmemo) stands for -- expanded postings,
        series and chunks -- as hits made here, so the hit ratio reads as if they came from
        this cache; in one call, as every warm Series call makes it."""
        r, h = self._requests, self._hits
        for item_type, n in (("expanded_postings", postings), ("series", series),
                             ("chunks", chunks)):
            if n:
                r[item_type] = r.get(item_type, 0) + n
                h[item_type] = h.get(item_type, 0) + n

    def put(self, key: Hashable, value: bytes, item_type: str) -> None:
        self.put_many([key], [value], item_type)

    def put_many(self, keys: Sequence[Hashable], values: Sequence[bytes], item_type: str) -> None:
        """Insert a batch (an item bigger than the whole budget is not cached; a key repeated
        in it keeps its last value), then evict the oldest items while over budget, counting
        what was added and evicted by item type: one call, whatever the batch."""
        m = self._m
        self.size = put_many(self._d, self._types, keys, values, item_type, self.size,
                             self.max_bytes, ENTRY_OVERHEAD,
                             None if m is None else m.added.counts,
                             None if m is None else m.evicted.counts)


# -- shared caches (Thanos's --index-cache.config / --store.caching-bucket.config backends)

class BytesCache(Protocol):
    """String-keyed bytes cache: ``fetch`` returns only valid hits; ``store`` never blocks."""

    async def fetch(self, keys: list[str]) -> dict[str, bytes]: ...

    def store(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def close(self) -> None: ...


class InMemoryBytesCache:
    """IN-MEMORY backend: an LRU bounded by ``max_size`` bytes and ``max_item_size``.
    Everything cached through it is immutable (block files), so TTLs are not needed."""

    def __init__(self, max_size: int, max_item_size: int = 0) -> None:
        self._lru = LRUCache(max_size)
        self._max_item = max_item_size

    async def fetch(self, keys: list[str]) -> dict[str, bytes]:
        return {k: v for k, v in zip(keys, self._lru.get_many(keys, "")) if v is not None}

    def store(self, key: str, value: bytes, ttl_s: float) -> None:
        if not self._max_item or len(value) <= self._max_item:
            self._lru.put(key, bytes(value), "")

    async def close(self) -> None:
        return None


# A cached value is MAGIC + crc32c(key + payload) + payload: garbage, a truncated value, or a
# value another program stored under the same key is a miss, never a wrong answer.
_MAGIC = b"\x00pr1"
_HDR = len(_MAGIC) + 4


def seal(key: str, payload: bytes) -> bytes:
    return _MAGIC + crc32c(payload, crc32c(key.encode())).to_bytes(4, "big") + payload


def unseal(key: str, value: bytes) -> bytes | None:
    if len(value) < _HDR or value[:len(_MAGIC)] != _MAGIC:
        return None
    payload = value[_HDR:]
    if crc32c(payload, crc32c(key.encode())) != int.from_bytes(value[len(_MAGIC):_HDR], "big"):
        return None
    return payload


def cache_key(verb: str, *parts: object) -> str:
    """Thanos's ``verb:part:part`` key shape with ``@`` after the verb (our values are
    sealed, Thanos's are not: the two never read each other's entries in one memcached).
    Too long or unprintable keys are replaced by a hash, as memcached allows 250 bytes."""
    k = ":".join([verb + "@", *map(str, parts)])
    if len(k) > 250 or not k.isascii() or not k.isprintable() or " " in k:
        k = f"{verb}@h:{hashlib.sha256(k.encode()).hexdigest()}"
    return k


class MemcachedBytesCache:
    """MEMCACHED backend: sealed values through common.memcache (Thanos's
    ``thanos_cache_memcached_*{name}`` metrics, plus the invalid values found)."""

    def __init__(self, client: MemcachedClient, registry: CollectorRegistry, name: str) -> None:
        self.client = client
        self._name = name
        self._requests = shared_metric(registry, Counter, "thanos_cache_memcached_requests",
                                       "Items requested.", ["name"]).labels(name)
        self._hits = shared_metric(registry, Counter, "thanos_cache_memcached_hits",
                                   "Items requested that hit.", ["name"]).labels(name)
        self._invalid = shared_metric(
            registry, Counter, "promring_cache_memcached_invalid_values",
            "Cached values that failed validation (treated as misses).", ["name"]).labels(name)

    async def fetch(self, keys: list[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        self._requests.inc(len(keys))
        out = {}
        for k, v in (await self.client.get_multi(keys)).items():
            p = unseal(k, v)
            if p is None:
                self._invalid.inc()
            else:
                out[k] = p
        self._hits.inc(len(out))
        return out

    def store(self, key: str, value: bytes, ttl_s: float) -> None:
        self.client.set_async(key, seal(key, value), ttl_s)

    async def close(self) -> None:
        await self.client.close()


@dataclass
class CacheBackendConfig:
    """``type`` + ``config`` of a Thanos cache YAML."""

    type: str = "IN-MEMORY"
    max_size: int = 250 << 20
    max_item_size: int = 0
    memcached: MemcachedClientConfig | None = None


def parse_backend(doc: dict, known_top: set[str]) -> CacheBackendConfig:
    """The backend part of a Thanos cache YAML document (already loaded)."""
    unknown = set(doc) - known_top - {"type", "config"}
    if unknown:
        raise ValueError(f"unknown fields: {sorted(unknown)}")
    typ = str(doc.get("type", "")).upper()
    conf = doc.get("config") or {}
    if not isinstance(conf, dict):
        raise ValueError("config: must be a mapping")
    if typ == "IN-MEMORY":
        bad = set(conf) - {"max_size", "max_item_size"}
        if bad:
            raise ValueError(f"config: unknown fields {sorted(bad)}")
        return CacheBackendConfig(
            "IN-MEMORY", size_field(conf.get("max_size", "250MB"), "max_size") or 250 << 20,
            size_field(conf.get("max_item_size", "125MB"), "max_item_size"))
    if typ == "MEMCACHED":
        mc = parse_memcached_config(conf)
        return CacheBackendConfig("MEMCACHED", memcached=mc, max_item_size=mc.max_item_size)
    raise ValueError(f"type: unsupported cache type {doc.get('type')!r} "
                     "(IN-MEMORY or MEMCACHED)")


def new_bytes_cache(cfg: CacheBackendConfig, registry: CollectorRegistry,
                    name: str) -> BytesCache:
    if cfg.type == "MEMCACHED":
        assert cfg.memcached is not None
        client = MemcachedClient(cfg.memcached, MemcachedMetrics(registry, name))
        return MemcachedBytesCache(client, registry, name)
    return InMemoryBytesCache(cfg.max_size, cfg.max_item_size)


def load_yaml_doc(text: str) -> dict:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("must be a YAML mapping")
    return doc


# -- index cache

INDEX_ITEM_NAMES = {"postings": "Postings", "series": "Series"}


@dataclass
class IndexCacheConfig:
    """``--index-cache.config``: IN-MEMORY resizes the in-process LRU; MEMCACHED adds a
    shared cache behind it for postings and series."""

    backend: CacheBackendConfig
    ttl_s: float = 86400.0
    enabled_items: tuple[str, ...] = ("Postings", "Series")


def parse_index_cache_config(text: str) -> IndexCacheConfig:
    doc = load_yaml_doc(text)
    backend = parse_backend(doc, {"enabled_items", "ttl"})
    items = doc.get("enabled_items") or []
    if not isinstance(items, list) or set(items) - {"Postings", "Series", "ExpandedPostings"}:
        raise ValueError("enabled_items: only Postings, Series, ExpandedPostings")
    ttl = duration_field_s(doc.get("ttl", "24h"), "ttl") or 86400.0
    return IndexCacheConfig(backend, ttl, tuple(items) or ("Postings", "Series"))


class RemoteIndexCache:
    """Postings lists and series entries of blocks in a shared cache, keyed as Thanos's
    (``P@:<block>:<offset>``, ``S@:<block>:<series ref>``: blocks are immutable, so an
    item's offset names it as well as its labels would)."""

    def __init__(self, cache: BytesCache, cfg: IndexCacheConfig) -> None:
        self.cache = cache
        self._ttl = cfg.ttl_s
        self.kinds = {k for k, n in INDEX_ITEM_NAMES.items() if n in cfg.enabled_items}

    @staticmethod
    def key(block: str, kind: str, ident: int) -> str:
        return cache_key(INDEX_ITEM_NAMES[kind][0], block, ident)

    async def fetch(self, block: str, kind: str, ids: list[int]) -> list[bytes | None]:
        keys = [self.key(block, kind, i) for i in ids]
        found = await self.cache.fetch(keys)
        return [found.get(k) for k in keys]

    def store(self, block: str, kind: str, ident: int, value: bytes) -> None:
        self.cache.store(self.key(block, kind, ident), value, self._ttl)
