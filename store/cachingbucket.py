"""Thanos's caching bucket: chunk files cached by fixed subranges, plus their attributes and
block meta.json contents, in a shared (memcached) or in-process cache.

A ranged read of ``<block>/chunks/NNNNNN`` is widened to ``chunk_subrange_size`` boundaries;
the subranges found in the cache are used, the missing ones are read from the bucket in at
most ``max_chunks_get_range_requests`` requests and stored. Everything cached here is
immutable (a block's files never change under its ULID), so a hit is always current. A
cached subrange of the wrong length is a miss; a cache that fails or times out is a miss too
(common.memcache), so a dead memcached costs time, never a query.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter

from collections.abc import Sequence

from objstore import Bucket, ObjectNotFound
from objstore.bucket import ObjectAttributes, RangeRequest, get_ranges

from common.memcache import duration_field_s, int_field, size_field

from .cache import BytesCache, CacheBackendConfig, cache_key, load_yaml_doc, parse_backend

_CHUNK_FILE = re.compile(r"^(.*/)?[0-9A-HJKMNP-TV-Z]{26}/chunks/[0-9]+$")
_META_FILE = re.compile(r"^(.*/)?[0-9A-HJKMNP-TV-Z]{26}/meta\.json$")
CFG_CHUNKS, CFG_META = "chunks", "meta.jsons"


@dataclass
class CachingBucketConfig:
    backend: CacheBackendConfig
    chunk_subrange_size: int = 16000
    max_chunks_get_range_requests: int = 3
    chunk_object_attrs_ttl_s: float = 86400.0
    chunk_subrange_ttl_s: float = 86400.0
    metafile_content_ttl_s: float = 86400.0
    metafile_max_size: int = 1 << 20


_DURATIONS = ("chunk_object_attrs_ttl", "chunk_subrange_ttl", "metafile_content_ttl",
              "blocks_iter_ttl", "metafile_exists_ttl", "metafile_doesnt_exist_ttl")


def parse_caching_bucket_config(text: str) -> CachingBucketConfig:
    """Thanos's caching-bucket YAML. ``blocks_iter_ttl`` and the metafile exists TTLs are
    accepted but unused: listings and deletion marks are always read from the bucket."""
    doc = load_yaml_doc(text)
    backend = parse_backend(doc, {"chunk_subrange_size", "max_chunks_get_range_requests",
                                  "metafile_max_size", *_DURATIONS})
    d = CachingBucketConfig(backend)
    ttl = {k: duration_field_s(doc[k], k) for k in _DURATIONS if k in doc}
    sub = int_field(doc.get("chunk_subrange_size", d.chunk_subrange_size), "chunk_subrange_size")
    if sub < 1:
        raise ValueError("chunk_subrange_size: must be positive")
    return CachingBucketConfig(
        backend, sub,
        int_field(doc.get("max_chunks_get_range_requests", 3), "max_chunks_get_range_requests"),
        ttl.get("chunk_object_attrs_ttl") or d.chunk_object_attrs_ttl_s,
        ttl.get("chunk_subrange_ttl") or d.chunk_subrange_ttl_s,
        ttl.get("metafile_content_ttl") or d.metafile_content_ttl_s,
        size_field(doc.get("metafile_max_size", "1MiB"), "metafile_max_size"))


class CachingBucketMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requested = Counter("thanos_store_bucket_cache_getrange_requested_bytes",
                                 "Bytes requested via GetRange.", ["config"], registry=registry)
        self.fetched = Counter("thanos_store_bucket_cache_getrange_fetched_bytes",
                               "Bytes fetched because of GetRange.", ["origin", "config"],
                               registry=registry)
        self.requests = Counter("thanos_store_bucket_cache_operation_requests",
                                "Operations matching a cache config.", ["operation", "config"],
                                registry=registry)
        self.hits = Counter("thanos_store_bucket_cache_operation_hits",
                            "Operations served from the cache.", ["operation", "config"],
                            registry=registry)
        for op, cfg in (("get_range", CFG_CHUNKS), ("attributes", CFG_CHUNKS),
                        ("get", CFG_META)):
            self.requests.labels(op, cfg)
            self.hits.labels(op, cfg)


class CachingBucket:
    """A Bucket whose chunk-file reads and meta.json gets go through ``cache``; every other
    operation goes straight to ``bucket``."""

    def __init__(self, bucket: Bucket, cache: BytesCache, cfg: CachingBucketConfig,
                 registry: CollectorRegistry) -> None:
        self._bkt = bucket
        self.cache = cache
        self.cfg = cfg
        self._m = CachingBucketMetrics(registry)

    def __getattr__(self, name: str):
        return getattr(self._bkt, name)

    async def get(self, name: str) -> bytes:
        if not _META_FILE.match(name):
            return await self._bkt.get(name)
        m = self._m
        m.requests.labels("get", CFG_META).inc()
        key = cache_key("content", name)
        hit = (await self.cache.fetch([key])).get(key)
        if hit is not None:
            m.hits.labels("get", CFG_META).inc()
            return hit
        data = await self._bkt.get(name)
        if len(data) <= self.cfg.metafile_max_size:
            self.cache.store(key, data, self.cfg.metafile_content_ttl_s)
        return data

    async def attributes(self, name: str) -> ObjectAttributes:
        if not _CHUNK_FILE.match(name):
            return await self._bkt.attributes(name)
        m = self._m
        m.requests.labels("attributes", CFG_CHUNKS).inc()
        key = cache_key("attrs", name)
        hit = (await self.cache.fetch([key])).get(key)
        if hit is not None:
            try:
                d = json.loads(hit)
                attrs = ObjectAttributes(int(d["size"]), datetime.fromisoformat(d["mtime"]))
                if attrs.size >= 0:
                    m.hits.labels("attributes", CFG_CHUNKS).inc()
                    return attrs
            except (ValueError, KeyError, TypeError):
                pass  # unusable: read the bucket
        attrs = await self._bkt.attributes(name)
        self.cache.store(key, json.dumps({"size": attrs.size,
                                          "mtime": attrs.last_modified.isoformat()}).encode(),
                         self.cfg.chunk_object_attrs_ttl_s)
        return attrs

    async def get_range(self, name: str, off: int, length: int) -> bytes:
        if not _CHUNK_FILE.match(name) or off < 0 or length == 0:
            return await self._bkt.get_range(name, off, length)
        m, cfg = self._m, self.cfg
        m.requests.labels("get_range", CFG_CHUNKS).inc()
        size = (await self.attributes(name)).size
        end = size if length < 0 else min(off + length, size)
        if off >= end:
            if off > size:
                raise ObjectNotFound(name, f"offset {off} past the end ({size} bytes)")
            return b""
        m.requested.labels(CFG_CHUNKS).inc(end - off)
        sub = cfg.chunk_subrange_size
        starts = list(range(off // sub * sub, end, sub))
        keys = [cache_key("subrange", name, s, min(s + sub, size)) for s in starts]
        found = await self.cache.fetch(keys)
        parts: list[bytes | None] = []
        for s, k in zip(starts, keys):
            v = found.get(k)
            parts.append(v if v is not None and len(v) == min(s + sub, size) - s else None)
        missing = [i for i, p in enumerate(parts) if p is None]
        if not missing:
            m.hits.labels("get_range", CFG_CHUNKS).inc()
        for a, z in _runs(missing, cfg.max_chunks_get_range_requests):
            lo, hi = starts[a], min(starts[z - 1] + sub, size)
            data = await self._bkt.get_range(name, lo, hi - lo)
            if len(data) != hi - lo:
                raise ObjectNotFound(name, f"short read at {lo}: {len(data)} of {hi - lo} bytes")
            m.fetched.labels("bucket", CFG_CHUNKS).inc(len(data))
            for i in range(a, z):
                piece = data[starts[i] - lo:min(starts[i] + sub, size) - lo]
                if parts[i] is None:
                    self.cache.store(keys[i], piece, cfg.chunk_subrange_ttl_s)
                parts[i] = piece
        m.fetched.labels("cache", CFG_CHUNKS).inc(
            sum(len(found[keys[i]]) for i in set(range(len(keys))) - set(missing)))
        whole = b"".join(parts)  # type: ignore[arg-type]
        first = starts[0]
        return whole[off - first:end - first]

    async def get_ranges(self, reqs: Sequence[RangeRequest]) -> list[bytes | BaseException]:
        """Chunk-file ranges each through the cache as ``get_range``; all others passed on to
        the bucket as one batch."""
        out: list[bytes | BaseException | None] = [None] * len(reqs)
        rest = [i for i, r in enumerate(reqs) if not _CHUNK_FILE.match(r[0])]
        for i, v in zip(rest, await get_ranges(self._bkt, [reqs[i] for i in rest])):
            out[i] = v
        if len(rest) < len(reqs):
            for i in sorted(set(range(len(reqs))) - set(rest)):
                try:
                    out[i] = await self.get_range(*reqs[i])
                except Exception as e:  # noqa: BLE001 -- handed back in its place
                    out[i] = e
        return out  # type: ignore[return-value]

    async def close(self) -> None:
        await self.cache.close()
        await self._bkt.close()

    def __repr__(self) -> str:
        return f"CachingBucket({self._bkt!r})"


def _runs(missing: list[int], max_requests: int) -> list[tuple[int, int]]:
    """[a, z) index runs covering ``missing`` (sorted), merged across the smallest gaps until
    at most ``max_requests`` remain (0 = no limit)."""
    if not missing:
        return []
    runs = [[missing[0], missing[0] + 1]]
    for i in missing[1:]:
        if i == runs[-1][1]:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    while max_requests and len(runs) > max_requests:
        j = min(range(len(runs) - 1), key=lambda k: runs[k + 1][0] - runs[k][1])
        runs[j][1] = runs[j + 1][1]
        del runs[j + 1]
    return [(a, z) for a, z in runs]
