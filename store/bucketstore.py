"""The set of blocks a store gateway serves, kept in step with the bucket, as a SeriesSource.

Sync follows Thanos's meta fetcher: every top-level ``<ULID>/`` directory with a ``meta.json``
is a block; one without is a partial upload (skipped until complete); one with a
``deletion-mark.json`` older than the ignore delay is on its way out (dropped); the selector
relabel rules and the consistency delay (store.metafilter) hold back others. Metas are
immutable, so only new blocks cost a ``meta.json`` read and an index-header build (held-back
ones keep their parsed meta); known blocks cost one deletion-mark probe per sync.

A corrupt block never fails queries over the others: one whose files disagree with its
meta.json or whose index-header sections fail their checksums is not loaded
(``thanos_bucket_store_block_load_failures_total``), and one that fails a read later (a
checksum, a length or a chunk ref out of bounds) is taken out of service at once with a
warning (``thanos_bucket_store_block_drops_total``) -- that query and all later ones answer
from the remaining blocks -- and stays out until it disappears from the bucket. Every newly
loaded block's whole index is also checked once in the background (store.indexverify), so
damage no query has touched yet takes the block out the same way.

Downsampled blocks (5m/1h, written by the compactor) are served too: a Series request's
``max_resolution_window`` picks, per external label set and time range, the coarsest
resolution allowed that has a block there, finer blocks filling the gaps (Thanos's getFor);
their chunks go out as AggrChunks holding the requested aggregates.
"""
from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import logging
import shutil
import struct
import time
from collections import deque
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from itertools import compress, count, repeat
from operator import attrgetter, gt, is_, itemgetter, lt, or_
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from objstore import Bucket, ObjectNotFound
from receiver.tsdb.block import META_FILENAME, BlockMeta, parse_ulid
from receiver.tsdb.labels import Labels, Matcher

from .block import (MAX_KEY_MATCHER_CHARS, BucketBlock, Chunk, FetchMetrics, FetchOptions,
                    matcher_chars)
from .cache import LRUCache, RemoteIndexCache
from .coldselect import picked as _picked, select_many
from .coldseries import series_many
from .indexverify import is_verified, mark_verified
from .limits import DEFAULT_TENANT, StoreLimits
from .ranges import ByteBudget
from .metafilter import DUPLICATE, LABEL_EXCLUDED, TOO_FRESH, BlockFilters, duplicates
from .warmmemo import MAX_SERIES, Selection, SelectionMemo, selection_of, selections_of
from common.aio import gather_eager
from common.plainhist import PlainHistogram
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DELETION_MARK_FILENAME = "deletion-mark.json"
MAX_INT64 = (1 << 63) - 1
MIN_INT64 = -(1 << 63)
_ANY_RES = 1 << 62  # label queries: any resolution will do
# Bytes of fetched ranges the store holds at once (store.ranges.ByteBudget): eight of a big
# read's 8 MiB ranges, enough to keep an object store's reads in parallel.
FETCH_BYTES_IN_FLIGHT = 64 << 20
# What a read of a broken block raises (CorruptionError is a ValueError); bucket outages
# (other BucketErrors) are not among them: they fail the query and leave the block in place.
BROKEN_BLOCK_ERRORS = (ValueError, struct.error, IndexError, ObjectNotFound)


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.syncs = Counter("thanos_blocks_meta_syncs", "Bucket syncs.", registry=registry)
        self.failures = Counter("thanos_blocks_meta_sync_failures", "Failed bucket syncs.",
                                registry=registry)
        self.duration = Histogram("thanos_blocks_meta_sync_duration_seconds",
                                  "Duration of bucket syncs.", registry=registry)
        self.synced = Gauge("thanos_blocks_meta_synced", "Blocks seen at the last sync by state.",
                            ["state"], registry=registry)
        self.loaded = Gauge("thanos_bucket_store_blocks_loaded", "Blocks being served.",
                            registry=registry)
        self.loads = Counter("thanos_bucket_store_block_loads", "Blocks loaded.",
                             registry=registry)
        self.load_failures = Counter("thanos_bucket_store_block_load_failures",
                                     "Blocks that failed to load.", registry=registry)
        self.drops = Counter("thanos_bucket_store_block_drops", "Blocks no longer served.",
                             registry=registry)
        # Per Series request, as Thanos's store dashboard reads them (observed per call: plain
        # numbers, exported at scrape time).
        self.blocks_queried = PlainHistogram("thanos_bucket_store_series_blocks_queried",
                                             "Blocks a Series request touched.",
                                             (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                                             registry)
        self.get_all = PlainHistogram("thanos_bucket_store_series_get_all_duration_seconds",
                                      "Time to read every block's part of a Series request.",
                                      (0.001, 0.01, 0.1, 0.3, 0.6, 1, 3, 6, 9, 20, 30, 60, 90,
                                       120), registry)


def _is_ulid(s: str) -> bool:
    try:
        parse_ulid(s)
        return True
    except ValueError:
        return False


class BucketStore:
    """Blocks of one bucket; ``series``/``label_*`` are async, as storeapi.server allows."""

    def __init__(self, bucket: Bucket, data_dir: Path, cache: LRUCache,
                 registry: CollectorRegistry, *, opts: FetchOptions | None = None,
                 sync_concurrency: int = 20, fetch_concurrency: int = 32,
                 filters: BlockFilters = BlockFilters(), verify_index: bool = True,
                 verify_concurrency: int = 2,
                 remote_cache: RemoteIndexCache | None = None,
                 limits: StoreLimits | None = None) -> None:
        self.bucket = bucket
        self.remote_cache = remote_cache
        self.data_dir = Path(data_dir)
        self.cache = cache
        self.blocks: dict[str, BucketBlock] = {}
        self._one_resolution: int | None = None  # see _blocks_changed
        # The blocks in time order with their min and max times (the per-call filter reads no
        # property), and whether each block ends before the next starts: then starts and ends
        # both ascend, and the blocks of a range are a slice found by two bisections.
        self._in_order: list[BucketBlock] = []
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._all_follow = True
        self._time_range = (MAX_INT64, MIN_INT64)  # of the blocks served (Info's)
        self.broken: dict[str, str] = {}  # taken out of service after a read error: ulid -> why
        self._opts = opts or FetchOptions()
        self._sync_limit = asyncio.Semaphore(sync_concurrency)
        self._fetch_limit = asyncio.Semaphore(fetch_concurrency)
        self._fetch_bytes = ByteBudget(FETCH_BYTES_IN_FLIGHT)
        self._filters = filters
        self._held_back: dict[str, BlockMeta] = {}  # listed, complete, not served (filters)
        self._lock = asyncio.Lock()
        self._verify = verify_index
        self._verify_limit = asyncio.Semaphore(verify_concurrency)
        self._verifying: dict[str, asyncio.Task[None]] = {}
        self.sync_metrics = SyncMetrics(registry)
        self._limits = limits  # Series request limits (store.limits)
        self._window = limits.window if limits is not None else None  # --min/max-time
        self.fetch_metrics = FetchMetrics(registry)
        # Whole per-block answers of small selections (warm calls skip the block reads), on
        # top of the LRU's budget by a sixteenth of it; none without a cache.
        self.memo = SelectionMemo(cache.max_bytes // 16) if cache.max_bytes > 0 else None

    # -- sync

    async def _deletion_marked(self, ulid: str) -> bool:
        try:
            raw = await self.bucket.get(f"{ulid}/{DELETION_MARK_FILENAME}")
        except ObjectNotFound:
            return False
        return self._filters.mark_expired(ulid, raw)

    async def _inspect(self, ulid: str) -> tuple[str, BucketBlock | BlockMeta | None]:
        """State of one bucket directory: ``("loaded", block)`` for a block served,
        ``("candidate", meta)`` for a new one that passed the filters, else (state, None)."""
        async with self._sync_limit:
            if ulid in self.blocks:
                known = self.blocks[ulid]
                if not self._in_window(known.min_time, known.max_time):
                    return "time-excluded", None
                if await self._deletion_marked(ulid):
                    return "marked-for-deletion", None
                return "loaded", known
            if ulid in self.broken:
                return "failed", None
            meta = self._held_back.pop(ulid, None)
            if meta is None:
                try:
                    raw = await self.bucket.get(f"{ulid}/{META_FILENAME}")
                except ObjectNotFound:
                    return "no-meta-json", None
                try:
                    meta = BlockMeta.from_dict(json.loads(raw))
                    if meta.ulid != ulid:
                        raise ValueError(f"meta.json names block {meta.ulid}")
                except (ValueError, KeyError, TypeError) as e:
                    log.warning("skipping block with a bad meta.json",
                                extra={"block": ulid, "err": str(e)})
                    return "corrupted-meta-json", None
            # Thanos's filter order: time window, selector, consistency delay, deletion mark
            held = "time-excluded" if not self._in_window(meta.min_time, meta.max_time) \
                else self._filters.excluded(meta)
            if held is None and await self._deletion_marked(ulid):
                held = "marked-for-deletion"
            if held is not None:
                self._held_back[ulid] = meta
                return held, None
            return "candidate", meta

    async def _load(self, meta: BlockMeta) -> tuple[str, BucketBlock | None]:
        """Open a new block (its index-header built or read from local disk)."""
        ulid = meta.ulid
        async with self._sync_limit:
            try:
                block = await BucketBlock.open(self.bucket, meta, self.data_dir / ulid,
                                               self.cache, self._fetch_limit, self._opts,
                                               self.fetch_metrics, self.remote_cache,
                                               self._fetch_bytes)
            except Exception as e:  # noqa: BLE001 -- a bad block must not stop the others
                log.warning("block load failed", extra={"block": ulid, "err": repr(e)})
                self.sync_metrics.load_failures.inc()
                return "failed", None
            self.sync_metrics.loads.inc()
            log.info("loaded block", extra={"block": ulid, "mint": meta.min_time,
                                            "maxt": meta.max_time,
                                            "index_header_bytes": block.header.nbytes})
            return "loaded", block

    async def sync_once(self) -> None:
        """List the bucket, load new blocks, drop vanished or deletion-marked ones."""
        async with self._lock:
            m = self.sync_metrics
            t0 = time.perf_counter()
            m.syncs.inc()
            try:
                entries = await self.bucket.iter("")
            except Exception:
                m.failures.inc()
                raise
            ulids = [e[:-1] for e in entries if e.endswith("/") and _is_ulid(e[:-1])]
            states = await asyncio.gather(*(self._inspect(u) for u in ulids))
            metas = {u: x.meta if isinstance(x, BucketBlock) else x
                     for u, (state, x) in zip(ulids, states) if state in ("loaded", "candidate")}
            dups = duplicates(metas.values())
            for u in dups:  # not served; the meta is kept for the next sync
                self._held_back[u] = metas[u]
            loads = {u: self._load(x) for u, (state, x) in zip(ulids, states)
                     if state == "candidate" and u not in dups}
            loaded = dict(zip(loads, await asyncio.gather(*loads.values())))
            states = [(DUPLICATE, None) if u in dups else loaded.get(u, st)
                      for u, st in zip(ulids, states)]
            fresh: dict[str, BucketBlock] = {}
            counts: dict[str, int] = {}
            for u, (state, block) in zip(ulids, states):
                if u in self.broken:  # taken out while this sync ran
                    state, block = "failed", None
                counts[state] = counts.get(state, 0) + 1
                if block is not None:
                    fresh[u] = block
            listed = set(ulids)
            self.broken = {u: why for u, why in self.broken.items() if u in listed}
            self._held_back = {u: m for u, m in self._held_back.items() if u in listed}
            dropped = set(self.blocks) - set(fresh)
            self.blocks = dict(sorted(fresh.items(), key=lambda kv: kv[1].min_time))
            self._blocks_changed()
            for u in dropped:
                log.info("dropped block", extra={"block": u})
            m.drops.inc(len(dropped))
            release = getattr(self.bucket, "release_kept_files", None) if dropped else None
            if release is not None:  # a dropped block's files: no descriptor holds them
                release()
            m.loaded.set(len(self.blocks))
            for state in ("loaded", "no-meta-json", "marked-for-deletion", "corrupted-meta-json",
                          "failed", "time-excluded", LABEL_EXCLUDED, TOO_FRESH, DUPLICATE):
                m.synced.labels(state).set(counts.get(state, 0))
            await asyncio.to_thread(self._remove_stale_dirs)
            if self._verify:
                for u, b in self.blocks.items():
                    if u not in self._verifying and not is_verified(self.data_dir / u):
                        self._verifying[u] = asyncio.create_task(self._verify_block(b),
                                                                 name=f"verify-{u}")
            m.duration.observe(time.perf_counter() - t0)

    def _in_window(self, mint: int, maxt: int) -> bool:
        return self._window is None or self._window.keeps(mint, maxt)

    async def _verify_block(self, block: BucketBlock) -> None:
        """Check the whole index of a block being served; out of service if it fails."""
        try:
            async with self._verify_limit:
                if self.blocks.get(block.ulid) is not block:
                    return
                t0 = time.perf_counter()
                await block.verify_index()
                await asyncio.to_thread(mark_verified, self.data_dir / block.ulid)
                log.info("verified block index", extra={
                    "block": block.ulid, "seconds": round(time.perf_counter() - t0, 3)})
        except BROKEN_BLOCK_ERRORS as e:
            self._take_out(block, e)
        except Exception as e:  # noqa: BLE001 -- a bucket outage: the next sync tries again
            log.warning("block index verification failed; will retry",
                        extra={"block": block.ulid, "err": repr(e)})
        finally:
            self._verifying.pop(block.ulid, None)

    async def wait_verified(self) -> None:
        """Until the index checks started so far are done (tests, and a clean stop)."""
        while self._verifying:
            await asyncio.gather(*self._verifying.values(), return_exceptions=True)

    async def close(self) -> None:
        await cancel_and_wait(more=list(self._verifying.values()))
        self._verifying.clear()

    def _remove_stale_dirs(self) -> None:
        """Local index-headers of blocks not served any more."""
        if not self.data_dir.is_dir():
            return
        for p in self.data_dir.iterdir():
            if p.is_dir() and _is_ulid(p.name) and p.name not in self.blocks:
                shutil.rmtree(p, ignore_errors=True)

    def _take_out(self, block: BucketBlock, err: Exception) -> None:
        """Stop serving a block that failed a read (once, however many queries hit it)."""
        if self.blocks.get(block.ulid) is not block:
            return
        del self.blocks[block.ulid]
        self._blocks_changed()
        self.broken[block.ulid] = repr(err)
        log.warning("corrupt block taken out of service; queries answer from the other blocks",
                    extra={"block": block.ulid, "err": repr(err)})
        self.sync_metrics.drops.inc()
        self.sync_metrics.loaded.set(len(self.blocks))

    async def _guarded(self, block: BucketBlock, read: Awaitable, empty):
        """``read`` of ``block``; if the block turns out broken, ``empty`` and out it goes."""
        try:
            return await read
        except BROKEN_BLOCK_ERRORS as e:
            self._take_out(block, e)
            return empty

    # -- SeriesSource

    def label_sets(self) -> list[Labels]:
        return sorted({b.ext_labels for b in self.blocks.values()})

    def time_range(self) -> tuple[int, int]:
        """What Info reports; kept by ``_blocks_changed`` (every Info call asks: not a walk
        over every block per call)."""
        return self._time_range

    def _blocks_time_range(self) -> tuple[int, int]:
        if not self.blocks:
            return MAX_INT64, MIN_INT64
        mint, maxt = (min(b.min_time for b in self.blocks.values()),
                      max(b.max_time for b in self.blocks.values()))
        return (mint, maxt) if self._window is None else self._window.clamp(mint, maxt)

    def _blocks_changed(self) -> None:
        """Note whether every block has one resolution and one external label set (the usual
        bucket): then the blocks for a range are simply those overlapping it."""
        blocks = self.blocks.values()
        if self.memo is not None:
            self.memo.keep_blocks(self.blocks)
        self._in_order = list(blocks)
        self._all_follow = _follow_in_time(self._in_order)
        self._starts = [b.min_time for b in blocks]
        self._ends = [b.max_time for b in blocks]
        self._time_range = self._blocks_time_range()
        self._one_resolution = None
        if len({b.resolution for b in blocks}) == 1 and len({b.ext_labels for b in blocks}) == 1:
            self._one_resolution = next(iter(blocks)).resolution

    def _blocks_for(self, mint: int, maxt: int, max_resolution_ms: int = 0) -> list[BucketBlock]:
        """Blocks to read for [mint, maxt] at the coarsest resolution <= max_resolution_ms,
        per external label set, gaps filled by finer resolutions (Thanos's getFor). Blocks
        are kept in time order, so with one resolution and label set that is a filter."""
        res = self._one_resolution
        if res is not None:
            if res > max_resolution_ms:
                return []
            if self._all_follow:  # those ending after mint and starting by maxt
                return self._in_order[bisect.bisect_right(self._ends, mint):
                                      bisect.bisect_right(self._starts, maxt)]
            return [b for lo, hi, b in zip(self._starts, self._ends, self._in_order)
                    if lo <= maxt and hi > mint]  # overlaps
        by_lset: dict[Labels, list[BucketBlock]] = {}
        for b in self.blocks.values():
            if b.overlaps(mint, maxt):
                by_lset.setdefault(b.ext_labels, []).append(b)
        out: list[BucketBlock] = []
        for blocks in by_lset.values():
            out.extend(_pick_resolution(blocks, mint, maxt, max_resolution_ms))
        return out

    def queried_blocks(self, mint: int, maxt: int, max_resolution_ms: int,
                       matchers: Sequence[Matcher]) -> list[str]:
        """IDs of the blocks a Series request reads: in range at the chosen resolution, with
        external labels the request's matchers on those labels accept (SeriesResponseHints)."""
        out = []
        if self._window is not None:
            mint, maxt = self._window.clamp(mint, maxt)
        for b in self._blocks_for(mint, maxt, max_resolution_ms):
            ext = dict(b.ext_labels)
            if all(m.matches(ext[m.name]) for m in matchers if m.name in ext):
                out.append(str(b.ulid))
        return sorted(out)

    async def series(self, mint: int, maxt: int, matchers: list[Matcher], skip_chunks: bool,
                     max_resolution_ms: int = 0, aggregates: Sequence[int] = (),
                     limit: int = 0, tenant: str = DEFAULT_TENANT
                     ) -> Iterable[tuple[Labels, list[Chunk]]]:
        """Series of all overlapping blocks sorted by labels; one series found in several
        blocks comes back once, its chunks in time order (exact duplicates dropped).
        Chunks of downsampled blocks (chosen by ``max_resolution_ms``) carry AggrData with
        the requested ``aggregates`` (storeapi Aggr numbers). The merge is lazy, so the
        StoreAPI server encodes and sends frames while it runs. Over a configured limit
        (store.limits) it raises ResourceExhausted before any series is returned; ``limit``
        (the request's own series limit) caps what each block counts, as in Thanos."""
        if self._window is not None:
            mint, maxt = self._window.clamp(mint, maxt)
        lim = self._limits.request(limit, tenant) if self._limits is not None else None
        blocks = self._blocks_for(mint, maxt, max_resolution_ms)
        t0 = time.perf_counter()
        if self.memo is not None and not skip_chunks and blocks and lim is None:
            # (a request under limits reads its blocks, which count series and chunks)
            results = await self._kept_series(blocks, mint, maxt, matchers, aggregates)
        else:
            reads = [b.series(mint, maxt, matchers, skip_chunks, aggregates, limits=lim)
                     for b in blocks]
            try:
                results = await gather_eager([self._guarded(b, r, [])
                                              for b, r in zip(blocks, reads)])
            except BaseException:
                for r in reads:  # those never started when one failed (a limit crossed):
                    r.close()    # no "coroutine was never awaited" warning
                raise
        self.sync_metrics.get_all.observe(time.perf_counter() - t0)
        self.sync_metrics.blocks_queried.observe(len(blocks))
        return merge_block_series(results, in_time_order=(
            self._one_resolution is not None and self._all_follow) or _follow_in_time(blocks))

    async def _kept_series(self, blocks: list[BucketBlock], mint: int, maxt: int,
                           matchers: list[Matcher], aggregates: Sequence[int]
                           ) -> list[list[tuple[Labels, list[Chunk]]]]:
        """Each block's series for a (raw-chunk) Series request, from the memo where a block's
        answer to these matchers is kept, else read (and kept if small). The cache lookups a
        kept answer stands for are counted as hits, as the LRU would have."""
        assert self.memo is not None
        # (type, name, value) of each matcher: hashed and compared in C (a Matcher's hash
        # is a Python call, and the memo hashes its key twice per call)
        key = tuple(map(_MATCHER_FIELDS, matchers))
        kept = self.memo.get(key)
        selects = refs = chunks = 0
        if kept is None:  # nothing of these matchers kept (a new selection): every block
            results: list = [None] * len(blocks)  # misses, the cold call's few steps only
            misses = list(range(len(blocks)))
        else:
            found: list[Selection | None] = list(map(kept.get, map(_ULID, blocks)))
            results = []
            missed = False  # (not ``None in found``: that calls each Selection's __eq__)
            for sel in found:
                if sel is None:
                    results.append(None)
                    missed = True
                    continue
                if mint <= sel.min_time and maxt >= sel.max_time - 1:  # the whole block
                    results.append(sel.series)
                    n = sel.chunks
                else:
                    got, n = sel.in_range(mint, maxt)
                    results.append(got)
                selects += sel.selected
                refs += sel.refs
                chunks += n
            misses = [i for i, sel in enumerate(found) if sel is None] if missed else []
        if misses:
            missed_blocks = _picked(blocks, misses)
            # Long matchers (the memo's key, not counted in its budget) are never kept.
            keep = matcher_chars(matchers) <= MAX_KEY_MATCHER_CHARS
            # (one missed block too -- the 1 h query -- is read through the batched path)
            selected = await self._select_misses(missed_blocks, matchers) \
                if keep else [None] * len(misses)
            whole = await self._read_many(missed_blocks, selected)
            self._keep_wholes(key, missed_blocks, misses, selected, whole, results, mint, maxt)
            if None in whole:  # blocks not read at once: each on its own
                rest = [(i, refs) for i, refs, w in zip(misses, selected, whole) if w is None]
                read = await gather_eager([self._guarded(blocks[i], self._read_and_keep(
                    blocks[i], key, mint, maxt, matchers, aggregates, refs) if keep else
                    blocks[i].series(mint, maxt, matchers, False, aggregates), [])
                    for i, refs in rest])
                for (i, _), r in zip(rest, read):
                    results[i] = r
        if selects:
            self.cache.count_memo_hits(selects, refs, chunks)
        return results

    async def _select_misses(self, blocks: list[BucketBlock], matchers: list[Matcher]
                             ) -> list[np.ndarray | None]:
        """The series refs of a request's selection in each of ``blocks`` (raw blocks whose
        external labels do not rule them out), worked out for all of them at once
        (store.coldselect); None where a block selects on its own."""
        out: list[np.ndarray | None] = [None] * len(blocks)
        if self.remote_cache is not None and "postings" in self.remote_cache.kinds:
            return out
        if self._one_resolution == 0:  # every block raw with one external label set (the
            ms = blocks[0].index_matchers(matchers)  # usual): decided once, no step per block
            if ms is None:
                return out
            return await select_many(blocks, [ms] * len(blocks), self.cache, self._opts,
                                     self._fetch_limit, self.fetch_metrics)
        at: list[int] = []
        mss: list[list[Matcher]] = []
        ext: object = None  # the previous block's external labels, and its matchers left
        ms = None
        for i, b in enumerate(blocks):
            if b.resolution:
                continue
            if b.ext_labels != ext:  # (blocks of one producer share them: decided once)
                ext, ms = b.ext_labels, b.index_matchers(matchers)
            if ms is not None:
                at.append(i)
                mss.append(ms)
        if at:
            got = await select_many(_picked(blocks, at), mss, self.cache, self._opts,
                                    self._fetch_limit, self.fetch_metrics)
            for i, refs in zip(at, got):
                out[i] = refs
        return out

    async def _read_many(self, blocks: list[BucketBlock], selected: list[np.ndarray | None]
                         ) -> list[tuple[list[tuple[Labels, list[Chunk]]], int] | None]:
        """The whole answers of the small selections of ``selected`` (refs worked out for all
        blocks at once), read for all those blocks at once (store.coldseries), each with the
        block's count of skipped chunks before; None where a block reads on its own."""
        out: list[tuple[list[tuple[Labels, list[Chunk]]], int] | None] = [None] * len(blocks)
        at = [i for i, refs in enumerate(selected) if refs is not None and len(refs) <= MAX_SERIES]
        if not at or (self.remote_cache is not None and
                           {"series", "chunks"} & set(self.remote_cache.kinds)):
            return out
        blocks, selected = _picked(blocks, at), _picked(selected, at)
        skipped = list(map(_SKIPPED, blocks))
        got = await series_many(blocks, selected,  # type: ignore[arg-type]
                                self.cache, self._opts, self._fetch_limit, self.fetch_metrics)
        for i, n, whole in zip(at, skipped, got):
            if whole is not None:
                out[i] = (whole, n)
        return out

    async def _read_and_keep(self, block: BucketBlock, key: tuple, mint: int, maxt: int,
                             matchers: list[Matcher], aggregates: Sequence[int],
                             refs: np.ndarray | None = None
                             ) -> list[tuple[Labels, list[Chunk]]]:
        """A block's series for the request; a small selection's whole answer (all of the
        block's chunks) is read instead and kept, the request's range cut from it (raw
        blocks only: a downsampled block's answer depends on the aggregates asked).
        ``refs``: the selection, when already worked out for all blocks at once."""
        assert self.memo is not None
        if block.resolution:
            return await block.series(mint, maxt, matchers, False, aggregates)
        ms = block.index_matchers(matchers)
        if ms is None:
            self.memo.put(key, block.ulid, selection_of([], block.min_time, block.max_time,
                                                        False, 0))
            return []
        if refs is None:
            refs = await block.select(ms)
        if len(refs) > MAX_SERIES:
            return await block.series(mint, maxt, matchers, False, refs=refs)
        skipped = block.skipped_chunks
        whole = await block.series(block.min_time, block.max_time - 1, matchers, False,
                                   refs=refs)
        sel, kept = self._whole_selection(block, refs, (whole, skipped))
        if kept:
            self.memo.put(key, block.ulid, sel)
        return sel.in_range(mint, maxt)[0]

    def _keep_wholes(self, key: tuple, blocks: list[BucketBlock], at: list[int],
                     selected: list[np.ndarray | None],
                     reads: list[tuple[list[tuple[Labels, list[Chunk]]], int] | None],
                     results: list, mint: int, maxt: int) -> None:
        """The whole answers ``reads`` of ``blocks`` (None: not read so) as Selections, kept
        in the memo where _whole_selection allows, each cut to [mint, maxt] into
        ``results[at[k]]``. When every block was read so and may be kept (the cold query),
        in C steps only, no Python step per block."""
        if reads and None not in reads and list(map(_SKIPPED, blocks)) == \
                list(map(_SECOND, reads)) and all(map(is_, map(self.blocks.get,
                                                                map(_ULID, blocks)), blocks)):
            mins, maxs = list(map(_MIN_TIME, blocks)), list(map(_MAX_TIME, blocks))
            sels = selections_of(list(map(_FIRST, reads)), mins, maxs,
                                 list(map(len, selected)))  # type: ignore[arg-type]
            self.memo.put_many(key, list(map(_ULID, blocks)), sels)
            cut = list(map(_SERIES, sels))
            # blocks the range covers only in part: starting before mint or ending after maxt
            for k in compress(count(), map(or_, map(lt, mins, repeat(mint)),
                                           map(gt, maxs, repeat(maxt + 1)))):
                cut[k] = sels[k].in_range(mint, maxt)[0]
            if len(at) == len(results):
                results[:] = cut
            else:
                deque(map(results.__setitem__, at, cut), maxlen=0)
            return
        ulids, new = [], []
        for i, block, got, w in zip(at, blocks, selected, reads):
            if w is not None:
                sel, kept = self._whole_selection(block, got, w)  # type: ignore[arg-type]
                if kept:
                    ulids.append(block.ulid)
                    new.append(sel)
                results[i] = sel.series if mint <= sel.min_time and \
                    maxt >= sel.max_time - 1 else sel.in_range(mint, maxt)[0]
        self.memo.put_many(key, ulids, new)

    def _whole_selection(self, block: BucketBlock, refs: np.ndarray,
                         read: tuple[list[tuple[Labels, list[Chunk]]], int]
                         ) -> tuple[Selection, bool]:
        """A small selection's whole answer read from ``block`` (with the block's count of
        skipped chunks before the read) as a Selection, and whether the memo may keep it:
        not an answer that left chunks out (each query counts those), nor one of a block
        taken out of service meanwhile."""
        whole, skipped = read
        sel = selection_of(whole, block.min_time, block.max_time, True, len(refs))
        return sel, block.skipped_chunks == skipped and self.blocks.get(block.ulid) is block

    async def label_names(self, mint: int, maxt: int, matchers: Sequence[Matcher],
                          tenant: str = DEFAULT_TENANT) -> list[str]:
        if self._window is not None:
            mint, maxt = self._window.clamp(mint, maxt)
        lim = self._limits.label_request(tenant) if self._limits is not None else None
        sets = await asyncio.gather(*(
            self._guarded(b, b.label_names(mint, maxt, matchers, lim), set())
            for b in self._blocks_for(mint, maxt, _ANY_RES)))
        return sorted(set().union(*sets))

    async def label_values(self, name: str, mint: int, maxt: int,
                           matchers: Sequence[Matcher], tenant: str = DEFAULT_TENANT) -> list[str]:
        if self._window is not None:
            mint, maxt = self._window.clamp(mint, maxt)
        lim = self._limits.label_request(tenant) if self._limits is not None else None
        sets = await asyncio.gather(*(
            self._guarded(b, b.label_values(name, mint, maxt, matchers, lim), set())
            for b in self._blocks_for(mint, maxt, _ANY_RES)))
        return sorted(set().union(*sets))


def _follow_in_time(blocks: Sequence[BucketBlock]) -> bool:
    """Each block ends before the next one starts (a bucket's usual 2 h blocks)."""
    return all(a.max_time <= b.min_time for a, b in zip(blocks, blocks[1:]))


def _concat(lists: Iterable[list[Chunk]]) -> list[Chunk]:
    return list(itertools.chain.from_iterable(lists))


_ULID = attrgetter("ulid")
_SKIPPED = attrgetter("skipped_chunks")
_MIN_TIME, _MAX_TIME = attrgetter("min_time"), attrgetter("max_time")
_SERIES = attrgetter("series")  # of a Selection
_MATCHER_FIELDS = attrgetter("type", "name", "value")  # what Matchers compare equal by
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def merge_block_series(results: list[list[tuple[Labels, list[Chunk]]]],
                       in_time_order: bool = False) -> Iterable[tuple[Labels, list[Chunk]]]:
    """One label-sorted stream from per-block lists (each sorted by labels, blocks in time
    order), a list where it is built at once (the StoreAPI server then needs no iterator). When the blocks follow each other in time (``in_time_order``) and hold the same
    series -- the usual case, checked by one list comparison in C -- each series' chunk
    lists are simply concatenated. Otherwise a stable sort of the concatenation (timsort
    merges the sorted runs in C), then equal label sets joined: chunks of a series spread
    over blocks that follow each other in time are concatenated as they are; otherwise
    sorted by time, exact duplicates dropped."""
    runs = list(filter(None, results))
    if not runs:
        return []
    if len(runs) == 1:
        return sorted(runs[0], key=_FIRST)
    if in_time_order:
        # One series in every block, a dashboard panel's usual selection: checked and joined
        # in C calls, no Python step per block.
        if len(runs[0]) == 1 and max(map(len, runs)) == 1:
            only = list(map(_FIRST, runs))  # each block's (labels, chunks)
            labels = list(map(_FIRST, only))
            if labels.count(labels[0]) == len(labels):
                return [(labels[0], _concat(map(_SECOND, only)))]
        labels = [list(map(_FIRST, r)) for r in runs]
        if all(ls == labels[0] for ls in labels[1:]):
            chunks = map(_concat, zip(*(map(_SECOND, r) for r in runs)))
            # External labels merged in can reorder a block's series: sort again (linear
            # when, as usual, they are already in order).
            return sorted(zip(labels[0], chunks), key=_FIRST)
    every = [s for r in runs for s in r]
    every.sort(key=itemgetter(0))
    return _join_equal(every)


def _join_equal(every: list[tuple[Labels, list[Chunk]]]) -> Iterator[tuple[Labels, list[Chunk]]]:
    cur_l, cur_c = every[0]
    for lbls, cs in itertools.islice(every, 1, None):
        if lbls != cur_l:
            yield cur_l, cur_c
            cur_l, cur_c = lbls, cs
        elif cur_c and cs and cur_c[-1][0] < cs[0][0]:
            cur_c = cur_c + cs
        else:
            joined = sorted(cur_c + cs, key=lambda c: (c[0], c[1]))
            cur_c = [c for i, c in enumerate(joined) if i == 0 or c != joined[i - 1]]
    yield cur_l, cur_c


def _pick_resolution(blocks: list[BucketBlock], mint: int, maxt: int, max_res: int
                     ) -> list[BucketBlock]:
    """Coarsest blocks first, each gap between them filled recursively at the next finer
    resolution; blocks of one label set only."""
    ress = sorted({b.resolution for b in blocks}, reverse=True)
    by_res = {r: sorted((b for b in blocks if b.resolution == r), key=lambda b: b.min_time)
              for r in ress}

    def get_for(lo: int, hi: int, i: int) -> list[BucketBlock]:
        if lo > hi:
            return []
        out: list[BucketBlock] = []
        start = lo
        for b in by_res[ress[i]]:
            if b.max_time <= lo:
                continue
            if b.min_time > hi:
                break
            if i + 1 < len(ress):
                out.extend(get_for(start, b.min_time - 1, i + 1))
            out.append(b)
            start = b.max_time
        if i + 1 < len(ress):
            out.extend(get_for(start, hi, i + 1))
        return out

    first = next((i for i, r in enumerate(ress) if r <= max_res), None)
    return [] if first is None else get_for(mint, maxt, first)
