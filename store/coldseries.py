"""Series entries and chunks of a small selection over all its blocks at once (the cold
one-series query, after store.coldselect found each block's series refs).

Read block by block, a one-series selection over a day's twelve blocks cost ~0.1 ms of Python
per block around items that are mostly cached already (the dashboard's aggregations read
them): a lookup, a decode, a chunk lookup, a check and an answer per block, each with its
calls and small lists. Here each step runs once per request: one lookup of every block's
series entries, the misses read together (one batch of ranged reads), one insert; the same
for the chunks; only the C decode and check and the answer's assembly stay per block.

What is cached and counted is what each block's own read (``BucketBlock.series`` over the
whole block) would have: the same keys and values, a request per key and a hit per cached
one, the same reads and bytes fetched (an item longer than its estimate re-read exactly, as
there). Only the LRU order within a request differs (one insert per item type for all blocks
instead of one per block). A block whose read fails in any way (a bucket error, a ref outside
its file, a malformed entry or chunk) gets None: its own read runs again and fails there as
it always has (a broken block is taken out, a bucket outage fails the query); only then are
that block's lookups and its failed reads counted twice.
"""
from __future__ import annotations

import asyncio
from array import array
from collections import deque
from collections.abc import Sequence
from functools import partial
from itertools import accumulate, repeat
from typing import NamedTuple

import numpy as np

from ._items import split_items
from .block import (_ITEM_KINDS, BucketBlock, Chunk, FetchMetrics, FetchOptions, LengthAt,
                    Spans, _chunk_len, _chunks_in_range, _series_len, chunk_ids)
from .cache import LRUCache
from .ranges import coalesce, read_batch

from receiver.tsdb.labels import Labels

Answer = list[tuple[Labels, list[Chunk]]]


class _Job(NamedTuple):
    """Items of one object of one block to look up (and read where missing)."""

    block: int  # index into the request's blocks
    obj: str  # object name in the bucket
    ids: list[int]  # sorted item refs (cache keys)
    spans: Spans  # their estimated (starts, ends) in ``obj``, worked out on a miss


_job = partial(tuple.__new__, _Job)  # _job((block, obj, ids, spans)): no Python __new__ call


async def series_many(blocks: Sequence[BucketBlock], refs: Sequence[np.ndarray],
                      cache: LRUCache, opts: FetchOptions, limit: asyncio.Semaphore,
                      metrics: FetchMetrics | None) -> list[Answer | None]:
    """Each raw block's whole answer (every series at ``refs[i]`` with all its chunks, as
    ``blocks[i].series`` over the block's whole range gives it), or None where the block
    must read on its own."""
    n = len(blocks)
    out: list[Answer | None] = [None] * n
    failed: set[int] = set()
    todo = [i for i in range(n) if len(refs[i])]
    for i in range(n):
        if not len(refs[i]):
            out[i] = []
    ids = [refs[i].tolist() for i in todo]
    keys, vals = _look_up(blocks, todo, ids, "series", cache)
    raws = _split(vals, ids) if None not in vals else await _read_jobs(
        blocks, [_job((i, blocks[i].index_name, ids_i,
                       partial(blocks[i]._series_spans, refs[i])))
                 for i, ids_i in zip(todo, ids)],
        "series", _series_len, cache, opts, limit, metrics, failed, keys, vals)
    parts = []  # (block index, entries, picked, bounds, mints, maxts, c_refs, chunk ids, ordered)
    for i, got in zip(todo, raws):
        if got is None:
            continue
        try:
            e = blocks[i].decoded_entries(got)
        except Exception:  # noqa: BLE001 -- its own read fails the same way and takes it out
            failed.add(i)
            continue
        picked, bounds, mints, maxts, c_refs = _chunks_in_range(e, None)
        if not len(c_refs):
            out[i] = []
            continue
        ids, ordered = chunk_ids(c_refs)  # type: ignore[arg-type]
        parts.append((i, e, picked, bounds, mints, maxts, c_refs, ids, ordered))
    by_block: dict[int, list[bytes]] = {}
    c_ids = [p[7] for p in parts]
    keys, vals = _look_up(blocks, [p[0] for p in parts], c_ids, "chunks", cache)
    if None not in vals:  # all cached (the usual): no segment worked out
        by_block = dict(zip([p[0] for p in parts], _split(vals, c_ids)))
    else:
        jobs = [_job((p[0], obj, p[7][a:z], spans)) for p in parts
                for obj, a, z, spans in blocks[p[0]].chunk_segments(p[7])]
        records = await _read_jobs(blocks, jobs, "chunks", _chunk_len, cache, opts, limit,
                                   metrics, failed, keys, vals)
        for job, got in zip(jobs, records):
            if got is not None:
                by_block.setdefault(job.block, []).extend(got)
    for i, e, picked, bounds, mints, maxts, c_refs, ids, ordered in parts:
        if i in failed:
            continue
        b = blocks[i]
        try:
            encs, datas = b.checked_chunks(by_block[i], c_refs, ids, ordered)
        except Exception:  # noqa: BLE001 -- as above
            failed.add(i)
            continue
        out[i] = b.answer(e.labels, picked, bounds, mints, maxts, b._typed(encs, datas))
    return out





def _look_up(blocks: Sequence[BucketBlock], at: list[int], ids: list[list[int]], kind: str,
             cache: LRUCache) -> tuple[list[tuple[str, str, int]], list[bytes | None]]:
    """(cache keys, values or None) of items ``ids[k]`` of block ``blocks[at[k]]`` for every
    k, in that order, in one lookup (the order of the jobs _read_jobs is given for them)."""
    keys: list[tuple[str, str, int]] = []
    for i, ids_i in zip(at, ids):
        keys += zip(repeat(blocks[i].ulid), repeat(kind), ids_i)
    return keys, (cache.get_many(keys, kind) if keys else [])


def _split(vals: list, ids: list[list[int]]) -> list[list]:
    """``vals`` cut into consecutive runs as long as each of ``ids``."""
    ends = list(accumulate(map(len, ids)))
    return list(map(vals.__getitem__, map(slice, [0, *ends[:-1]], ends)))


async def _read_jobs(blocks: Sequence[BucketBlock], jobs: list[_Job], kind: str,
                     length_at: LengthAt, cache: LRUCache, opts: FetchOptions,
                     limit: asyncio.Semaphore, metrics: FetchMetrics | None, failed: set[int],
                     keys: list[tuple[str, str, int]], vals: list[bytes | None]
                     ) -> list[list[bytes] | None]:
    """Raw items of every job, given _look_up's ``keys`` and ``vals`` of their items in
    order (some missed): the misses read as one batch, one insert. None for a job whose
    block failed (added to ``failed``)."""
    # (job index, object, start, end, positions in vals of the items it holds, their starts)
    reads: list[tuple[int, int, int, list[int], list[int]]] = []
    misses: list[list[int]] = []  # each job's positions in vals not cached
    at = 0
    for t, j in enumerate(jobs):
        k = len(j.ids)
        miss = list(range(at, at + k)) if vals[at:at + k].count(None) == k else \
            [p for p in range(at, at + k) if vals[p] is None]
        misses.append(miss)
        if not miss or j.block in failed:
            at += k
            continue
        try:
            starts, ends = j.spans()
        except Exception:  # noqa: BLE001 -- a ref outside its file: its own read fails too
            failed.add(j.block)
            at += k
            continue
        if len(miss) == k:
            ms, me = starts, ends
        elif isinstance(starts, list):
            ms = [starts[p - at] for p in miss]
            me = [ends[p - at] for p in miss]  # type: ignore[index]
        else:
            sel = np.array(miss, dtype=np.int64) - at
            ms, me = starts[sel], ends[sel]  # type: ignore[index]
        starts_l = ms if isinstance(ms, list) else ms.tolist()
        for gs, ge, a, z in coalesce(ms, me, opts.max_gap, opts.max_range):
            reads.append((t, gs, ge, miss[a:z], starts_l[a:z]))
        at += k
    new: dict[int, bytes] = {}  # position in vals -> item read
    if reads:
        bufs = await read_batch([(blocks[jobs[t].block].bucket, (jobs[t].obj, gs, ge - gs))
                                 for t, gs, ge, _, _ in reads], limit)
        if metrics is not None:
            metrics.fetched(kind, len(reads), sum(len(b) for b in bufs if isinstance(b, bytes)))
        again: list[tuple[int, int, int, int | None]] = []  # (job, position, start, length)
        code = _ITEM_KINDS[kind]
        for (t, gs, _, pos, starts), buf in zip(reads, bufs):
            if jobs[t].block in failed:
                continue
            if not isinstance(buf, bytes):
                failed.add(jobs[t].block)
                continue
            try:
                items, lens = split_items(buf, array("q", [s - gs for s in starts]), code)
            except ValueError:  # an overflowing length prefix
                failed.add(jobs[t].block)
                continue
            if None not in items:
                new.update(zip(pos, items))
                continue
            for p, s, item, ln in zip(pos, starts, items, array("q", lens)):
                if item is None:  # longer than estimated (or the object ended): read exactly
                    again.append((t, p, s, ln if ln >= 0 else None))
                else:
                    new[p] = item
        if again:
            got = await asyncio.gather(*(
                blocks[jobs[t].block]._read_exact(jobs[t].obj, kind, s, ln, length_at)
                for t, _, s, ln in again), return_exceptions=True)
            for (t, p, _, _), raw in zip(again, got):
                if isinstance(raw, bytes):
                    new[p] = raw
                else:
                    failed.add(jobs[t].block)
    out = []
    put_keys: list = []
    put_vals: list[bytes] = []
    at = 0
    for j, miss in zip(jobs, misses):
        k = len(j.ids)
        if j.block in failed:
            out.append(None)
        else:
            if miss:
                got = list(map(new.__getitem__, miss))
                deque(map(vals.__setitem__, miss, got), maxlen=0)
                put_keys += map(keys.__getitem__, miss)
                put_vals += got
            out.append(vals[at:at + k])  # type: ignore[arg-type]
        at += k
    cache.put_many(put_keys, put_vals, kind)
    return out
