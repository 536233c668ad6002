"""Series entries and chunks of a small selection over all its blocks at once (the cold
one-series query, after store.coldselect found each block's series refs).

Read block by block, a one-series selection over a day's twelve blocks cost ~0.1 ms of Python
per block around items that are mostly cached already (the dashboard's aggregations read
them): a lookup, a decode, a chunk lookup, a check and an answer per block, each with its
calls and small lists. Here each step runs once per request: one lookup of every block's
series entries, the misses read together (one batch of ranged reads), one insert; the same
for the chunks; only the C decode and check and the answer's assembly stay per block. When
every block holds one series of the selection and its entry is cached (the cold dashboard
query after the broad one), even those run once: all entries decoded in one C call, all
chunk records checked in one, each block's answer a slice (under CPU caches emptied between
calls, each block's own decode and check cost ~35 us, the most of a 24 h call after the
postings).

The usual cold call of all (every block's one series entry cached, each block's chunks not
cached in one read, or all cached: a range that covers the oldest block in part finds the broad
query's chunks of it cached in part) runs as two C steps around the read (store/_coldseries.c:
plan_one_each, finish_one_each), the same C steps in the same order as the Python below, without
the Python glue between them (~55 of its ~129 us of CPU after idle); any other case, and any
surprise after the read, takes the Python path from where the C left it. A series never asked
for before whose entries no broad query cached has them read first by the Python path, then
goes on through the same C steps.

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
import struct
from array import array
from collections import deque
from collections.abc import Sequence
from functools import partial
from itertools import accumulate, chain, compress, repeat
from operator import attrgetter, itemgetter, lt, mul, sub
from typing import NamedTuple

import numpy as np

from objstore.bucket import IS_BYTES
from ._coldseries import bind, finish_one_each, plan_one_each
from ._indexheader import label_sets
from ._items import chunk_tuples, item_reads, split_items
from ._lru import lookup, put_many
from .block import (_ITEM_KINDS, SMALL_ITEMS, BucketBlock, Chunk, FetchMetrics, FetchOptions,
                    LengthAt, SmallItems, Spans, _chunk_len, _chunks_in_range, _series_len,
                    chunk_ids, merge_external)
from .cache import ENTRY_OVERHEAD, LRUCache
from .coldselect import picked
from .indexheader import IndexHeader
from .ranges import coalesce, read_batch

from receiver.tsdb._blockio import decode_series_batch, read_chunks
from receiver.tsdb.chunkenc import ENCODING_XOR
from receiver.tsdb.labels import Labels

Answer = list[tuple[Labels, list[Chunk]]]


class _Job(NamedTuple):
    """Items of one object of one block to look up (and read where missing)."""

    block: int  # index into the request's blocks
    obj: str  # object name in the bucket
    ids: list[int]  # sorted item refs (cache keys)
    spans: Spans  # their estimated (starts, ends) in ``obj``, worked out on a miss
    small: SmallItems | None  # for a few items: item_reads's arguments (all in one C call)


_job = partial(tuple.__new__, _Job)  # _job((block, obj, ids, spans, small)): no __new__ call
_IDS, _SMALL = attrgetter("ids"), attrgetter("small")
# (of a read: its items' positions in _read_jobs's ``vals``, their offsets in the read)
_FIRST, _POS, _RELS = itemgetter(0), itemgetter(3), itemgetter(4)
_ULID, _HEADER, _EXT_LABELS = attrgetter("ulid"), attrgetter("header"), attrgetter("ext_labels")
_LABEL_SETS = IndexHeader.label_sets
_ONE_SEGMENT = BucketBlock.one_segment
_SECOND, _THIRD = itemgetter(1), itemgetter(2)
_TOLIST = np.ndarray.tolist


async def series_many(blocks: Sequence[BucketBlock], refs: Sequence[np.ndarray],
                      cache: LRUCache, opts: FetchOptions, limit: asyncio.Semaphore,
                      metrics: FetchMetrics | None) -> list[Answer | None]:
    """Each raw block's whole answer (every series at ``refs[i]`` with all its chunks, as
    ``blocks[i].series`` over the block's whole range gives it), or None where the block
    must read on its own."""
    planned = plan_one_each(blocks, refs, cache, opts)
    if planned is not None:  # the usual cold call: C steps around the read
        return await _planned(blocks, planned, cache, opts, limit, metrics)
    n = len(blocks)
    out: list[Answer | None] = [None] * n
    failed: set[int] = set()
    lens = list(map(len, refs))
    if 0 in lens:
        todo = list(compress(range(n), lens))
        for i in range(n):
            if not lens[i]:
                out[i] = []
    else:  # every block selects something (the usual): no Python step per block
        todo = list(range(n))
    ids = list(map(_TOLIST, picked(refs, todo)))
    keys, vals = _look_up(blocks, todo, ids, "series", cache)
    if len(vals) == len(todo) and None not in vals:  # one cached series per block
        one = _one_each(blocks, todo, vals)
        if one is not None:
            return await _one_each_chunks(blocks, todo, one, out, cache, opts, limit, metrics)
    raws = _split(vals, ids) if None not in vals else await _read_jobs(
        blocks, [_job((i, blocks[i].index_name, ids_i,
                       partial(blocks[i]._series_spans, refs[i]), blocks[i].series_small(refs[i])))
                 for i, ids_i in zip(todo, ids)],
        "series", _series_len, cache, opts, limit, metrics, failed, keys, vals)
    if not failed and len(vals) == len(todo):  # one series per block, its entry just read
        planned = plan_one_each(blocks, refs, cache, opts, True)  # (and kept: C steps on)
        if planned is not None:
            return await _planned(blocks, planned, cache, opts, limit, metrics)
        one = _one_each(blocks, todo, vals)  # (a cold one-series query over several blocks)
        if one is not None:
            return await _one_each_chunks(blocks, todo, one, out, cache, opts, limit, metrics)
    return await _finish(blocks, todo, raws, out, failed, cache, opts, limit, metrics)


async def _planned(blocks: Sequence[BucketBlock], planned: tuple, cache: LRUCache,
                   opts: FetchOptions, limit: asyncio.Semaphore, metrics: FetchMetrics | None
                   ) -> list[Answer | None]:
    """series_many's answers through the C steps, from plan_one_each's plan."""
    reads, state = planned
    bufs: list = []
    if reads:  # (none when every chunk is cached)
        bufs = await read_batch(reads, limit)
        if metrics is not None:
            metrics.fetched("chunks", len(reads), sum(map(len, filter(IS_BYTES, bufs))))
    got = finish_one_each(state, bufs)
    if got.__class__ is list:
        return got
    return await _fast_case_rest(blocks, state, bufs, got, cache, opts, limit, metrics)


async def _finish(blocks: Sequence[BucketBlock], todo: list[int], raws: list[list[bytes] | None],
                  out: list[Answer | None], failed: set[int], cache: LRUCache,
                  opts: FetchOptions, limit: asyncio.Semaphore, metrics: FetchMetrics | None,
                  looked: tuple[list[int], list[list[int]], list, list] | None = None
                  ) -> list[Answer | None]:
    """series_many from the raw series entries of each block of ``todo`` on (None: failed),
    block by block. ``looked``: the chunk lookup already made (blocks, their chunk ids, keys
    and values), used when it is this one's."""
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
    at = [p[0] for p in parts]
    if looked is not None and looked[0] == at and looked[1] == c_ids:
        keys, vals = looked[2], looked[3]
    else:
        keys, vals = _look_up(blocks, at, c_ids, "chunks", cache)
    if None not in vals:  # all cached (the usual): no segment worked out
        by_block = dict(zip(at, _split(vals, c_ids)))
    else:
        jobs = _chunk_jobs(blocks, at, c_ids)
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


class _OneEach(NamedTuple):
    """The series entries of a one-series-per-block selection, decoded for all blocks in one
    call: each block's label set and chunk count, the chunk metas flat over the blocks."""

    labels: list[Labels]
    counts: list[int]
    mints: list[int]
    maxts: list[int]
    refs: list[int]
    raws: list[bytes]  # each block's raw entry (for the block-by-block path, if needed)


def _one_each(blocks: Sequence[BucketBlock], todo: list[int], raws: list[bytes]
              ) -> _OneEach | None:
    """The one series entry of each block of ``todo`` (``raws[k]`` of ``blocks[todo[k]]``)
    decoded in one C call, or None when anything is unusual (a malformed entry, an unknown
    symbol, a block's chunk refs not strictly ascending): the block-by-block path then
    decides, and fails each broken block as it always has."""
    try:
        lc, syms, cc, c_mint, c_maxt, c_ref = decode_series_batch(raws)
        n_labels = memoryview(lc).cast("q").tolist()
        counts = memoryview(cc).cast("q").tolist()
        if len(n_labels) != len(todo):
            return None
        ends = list(accumulate(map(mul, n_labels, repeat(16))))  # each block's symbol bytes
        labels = list(chain.from_iterable(map(
            _LABEL_SETS, map(_HEADER, picked(blocks, todo)),
            map(lc.__getitem__, map(slice, range(0, 8 * len(todo), 8),
                                    range(8, 8 * len(todo) + 8, 8))),
            map(syms.__getitem__, map(slice, [0, *ends[:-1]], ends)))))
    except (ValueError, IndexError, struct.error):  # (CorruptionError is a ValueError)
        return None
    refs = memoryview(c_ref).cast("q").tolist()
    if not each_ascending(refs, counts):  # (its records come back in that order)
        return None
    return _OneEach(labels, counts, memoryview(c_mint).cast("q").tolist(),
                    memoryview(c_maxt).cast("q").tolist(), refs, raws)


def each_ascending(refs: list[int], counts: list[int]) -> bool:
    """Whether each run of ``refs`` as long as ``counts[k]`` is strictly ascending, in C
    steps: every neighbour in order, except across one run's last and the next one's first
    (the padding takes the "boundaries" of empty runs at either end)."""
    ascending = [*map(lt, refs, refs[1:]), True]
    deque(map(ascending.__setitem__, map(sub, accumulate(counts[:-1]), repeat(1)),
              repeat(True)), maxlen=0)
    return all(ascending)


async def _one_each_chunks(blocks: Sequence[BucketBlock], todo: list[int], one: _OneEach,
                           out: list[Answer | None], cache: LRUCache, opts: FetchOptions,
                           limit: asyncio.Semaphore, metrics: FetchMetrics | None
                           ) -> list[Answer | None]:
    """series_many's answers from _one_each's entries: every block's chunks looked up at
    once, those missing read at once, and, when they are plain XOR chunks (the usual),
    checked and turned into (mint, maxt, data) tuples in one C call each, each block's answer
    a slice of them. Otherwise (a read failed, a record is broken, another encoding) each
    block goes on alone, as series_many does, from its decoded entry and what was read."""
    cs = one.counts
    bounds = list(accumulate(cs, initial=0))
    cuts = list(map(slice, bounds, bounds[1:]))  # each block's chunks among all
    if 0 in cs:
        has = list(compress(todo, cs))
        for i, n in zip(todo, cs):
            if not n:
                out[i] = []
        ids = list(map(one.refs.__getitem__, compress(cuts, cs)))
    else:  # every block has chunks (the usual): no Python step per block
        has = todo
        ids = list(map(one.refs.__getitem__, cuts))
    keys, vals = _look_up(blocks, has, ids, "chunks", cache)
    if None in vals:  # read what is missing, for all blocks at once
        failed: set[int] = set()
        await _read_jobs(blocks, _chunk_jobs(blocks, has, ids), "chunks", _chunk_len, cache,
                         opts, limit, metrics, failed, keys, vals)
    return await _one_each_answers(blocks, todo, one, out, has, ids, cuts, keys, vals, cache,
                                   opts, limit, metrics)


async def _one_each_answers(blocks: Sequence[BucketBlock], todo: list[int], one: _OneEach,
                            out: list[Answer | None], has: list[int], ids: list[list[int]],
                            cuts: list[slice], keys: list, vals: list[bytes | None],
                            cache: LRUCache, opts: FetchOptions, limit: asyncio.Semaphore,
                            metrics: FetchMetrics | None) -> list[Answer | None]:
    """_one_each_chunks's answers from the chunk records looked up and read (``vals``, None
    where a read failed), in one C call each when they are plain XOR chunks, else block by
    block."""
    datas: list | None = None
    if None not in vals:
        try:
            encs, datas = read_chunks(vals)
        except ValueError:  # a broken record: found out block by block below
            datas = None
        if datas is not None and encs.count(ENCODING_XOR) != len(encs):
            datas = None  # other encodings: each block's own typing counts skipped ones
    if datas is None:  # block by block, from the lookup made (counted once, as there)
        return await _finish(blocks, todo, [[r] for r in one.raws], out, set(), cache, opts,
                             limit, metrics, (has, ids, keys, vals))
    tuples = chunk_tuples(one.mints, one.maxts, datas)
    labels, exts = one.labels, list(map(_EXT_LABELS, picked(blocks, todo)))
    if labels and has is todo and labels.count(labels[0]) == len(labels) and \
            exts.count(exts[0]) == len(exts):  # one series, one producer (the usual)
        ext = exts[0]
        series = merge_external(labels[0], ext) if ext else labels[0]
        answers = list(map(list, zip(zip(repeat(series), map(tuples.__getitem__, cuts)))))
        if len(todo) == len(out):
            return answers
        deque(map(out.__setitem__, todo, answers), maxlen=0)
        return out
    for i, lbls, ext, cut in zip(todo, labels, exts, cuts):
        if cut.start != cut.stop:
            out[i] = [(merge_external(lbls, ext) if ext else lbls, tuples[cut])]
    return out


async def _fast_case_rest(blocks: Sequence[BucketBlock], state: tuple, bufs: list, code: int,
                          cache: LRUCache, opts: FetchOptions, limit: asyncio.Semaphore,
                          metrics: FetchMetrics | None) -> list[Answer | None]:
    """series_many after finish_one_each left the rest to the Python path (``code`` 1: not
    every read came back whole, nothing done with them yet; 2: the records are cached, one is
    broken or of another encoding), from the same values that path holds there: the plan's
    blocks, series entries, chunk keys and values (worked out again from them: their steps
    are pure) and the reads' results."""
    todo, raws, keys, vals = state[:4]
    out: list[Answer | None] = [[] for _ in blocks]  # (the blocks that select nothing)
    deque(map(out.__setitem__, todo, repeat(None)), maxlen=0)
    one = _one_each(blocks, todo, raws)
    assert one is not None  # (plan_one_each decoded them so)
    bounds = list(accumulate(one.counts, initial=0))
    cuts = list(map(slice, bounds, bounds[1:]))
    ids = list(map(one.refs.__getitem__, cuts))
    if code == 2:  # block by block, from the lookup made (as _one_each_answers goes on)
        return await _finish(blocks, todo, [[r] for r in raws], out, set(), cache, opts, limit,
                             metrics, (todo, ids, keys, vals))
    jobs = _chunk_jobs(blocks, todo, ids)
    one_read_each = _one_read_each(jobs, vals, set(), opts)
    assert one_read_each is not None  # (plan_one_each planned them so)
    reads, misses = one_read_each
    failed: set[int] = set()
    new = await _take_reads(blocks, jobs, "chunks", _chunk_len, reads, bufs, failed)
    _keep_reads(jobs, misses, new, failed, keys, vals, "chunks", cache)
    return await _one_each_answers(blocks, todo, one, out, todo, ids, cuts, keys, vals, cache,
                                   opts, limit, metrics)


def _look_up(blocks: Sequence[BucketBlock], at: list[int], ids: list[list[int]], kind: str,
             cache: LRUCache) -> tuple[list[tuple[str, str, int]], list[bytes | None]]:
    """(cache keys, values or None) of items ``ids[k]`` of block ``blocks[at[k]]`` for every
    k, in that order, in one lookup (the order of the jobs _read_jobs is given for them)."""
    keys: list[tuple[str, str, int]] = list(chain.from_iterable(map(
        zip, map(repeat, map(_ULID, picked(blocks, at))), repeat(repeat(kind)), ids)))
    return keys, (cache.get_many(keys, kind) if keys else [])


def _chunk_jobs(blocks: Sequence[BucketBlock], at: list[int], ids: list[list[int]]
                ) -> list[_Job]:
    """The read jobs of chunks ``ids[k]`` (sorted) of block ``blocks[at[k]]`` for every k, one
    per chunk segment file, in _look_up's order of them."""
    ones = list(map(_ONE_SEGMENT, picked(blocks, at), ids))  # (the usual: each block's
    if None not in ones:                                 # few refs in one segment)
        return list(map(_job, zip(at, map(_FIRST, ones), ids, map(_SECOND, ones),
                                  map(_THIRD, ones))))
    out: list[_Job] = []
    for i, ids_i, one in zip(at, ids, ones):
        if one is not None:
            out.append(_job((i, one[0], ids_i, one[1], one[2])))
        else:
            out += [_job((i, obj, ids_i[a:z], spans, small))
                    for obj, a, z, spans, small in blocks[i].chunk_segments(ids_i)]
    return out


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
    # (job index, start, end, positions in vals of the items it holds, their offsets in the
    # read as int64 bytes)
    reads: list[tuple[int, int, int, list[int] | range, bytes]] = []
    misses: list[list[int] | range] = []  # each job's positions in vals not cached
    one_read_each = _one_read_each(jobs, vals, failed, opts)
    if one_read_each is not None:
        reads, misses = one_read_each
    at = 0
    for t, j in enumerate(jobs if one_read_each is None else ()):
        k = len(j.ids)
        whole = vals[at:at + k].count(None) == k
        if whole and j.small is not None and j.block not in failed:  # a few, none cached
            groups = item_reads(j.ids, *j.small, opts.max_gap, opts.max_range)
            if groups is not None:  # (else the spans below raise the block's error)
                miss = range(at, at + k)
                misses.append(miss)
                reads += [(t, gs, ge, miss[a:z], rel) for gs, ge, a, z, rel in groups]
                at += k
                continue
        miss = list(range(at, at + k)) if whole else \
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
            reads.append((t, gs, ge, miss[a:z], array("q", [s - gs for s in starts_l[a:z]])))
        at += k
    new: dict[int, bytes] = {}  # position in vals -> item read
    if reads:
        bufs = await read_batch([(blocks[jobs[t].block].bucket, (jobs[t].obj, gs, ge - gs))
                                 for t, gs, ge, _, _ in reads], limit)
        if metrics is not None:
            metrics.fetched(kind, len(reads), sum(map(len, filter(IS_BYTES, bufs))))
        if one_read_each is not None and all(map(IS_BYTES, bufs)):
            try:  # every item whole in its read (the usual): the missing ``vals`` in order
                items = list(chain.from_iterable(map(_FIRST, map(
                    split_items, bufs, map(_RELS, reads), repeat(_ITEM_KINDS[kind])))))
            except ValueError:  # an overflowing length prefix: sorted out below
                items = [None]
            missed = list(chain.from_iterable(map(_POS, reads)))
            if None not in items and len(items) == len(missed):
                deque(map(vals.__setitem__, missed, items), maxlen=0)
                cache.put_many(list(map(keys.__getitem__, missed)), items, kind)
                return _split(vals, list(map(_IDS, jobs)))  # type: ignore[return-value]
        new = await _take_reads(blocks, jobs, kind, length_at, reads, bufs, failed)
    return _keep_reads(jobs, misses, new, failed, keys, vals, kind, cache)


async def _take_reads(blocks: Sequence[BucketBlock], jobs: list[_Job], kind: str,
                      length_at: LengthAt, reads: list[tuple[int, int, int, list[int] | range,
                                                             bytes]],
                      bufs: list, failed: set[int]) -> dict[int, bytes]:
    """The items of ``reads`` (_read_jobs's) in their results ``bufs``, by position in
    _read_jobs's ``vals``: an item longer than its estimate read again exactly; a job whose
    read failed or whose item is malformed added to ``failed``."""
    new: dict[int, bytes] = {}  # position in vals -> item read
    again: list[tuple[int, int, int, int | None]] = []  # (job, position, start, length)
    code = _ITEM_KINDS[kind]
    for (t, gs, _, pos, rels), buf in zip(reads, bufs):
        if jobs[t].block in failed:
            continue
        if not isinstance(buf, bytes):
            failed.add(jobs[t].block)
            continue
        try:
            items, lens = split_items(buf, rels, code)
        except ValueError:  # an overflowing length prefix
            failed.add(jobs[t].block)
            continue
        if None not in items:
            new.update(zip(pos, items))
            continue
        for p, r, item, ln in zip(pos, array("q", rels), items, array("q", lens)):
            if item is None:  # longer than estimated (or the object ended): read exactly
                again.append((t, p, gs + r, ln if ln >= 0 else None))
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
    return new


def _keep_reads(jobs: list[_Job], misses: list[list[int] | range], new: dict[int, bytes],
                failed: set[int], keys: list[tuple[str, str, int]], vals: list[bytes | None],
                kind: str, cache: LRUCache) -> list[list[bytes] | None]:
    """_read_jobs's answer from the items read (``new``): put in ``vals`` and the cache (one
    insert), each job's items, None for a job whose block failed."""
    if not failed and len(new) == len(vals):  # every item read (a cold one-series call)
        vals[:] = list(map(new.__getitem__, range(len(vals))))
        cache.put_many(keys, vals, kind)
        return _split(vals, [j.ids for j in jobs])  # type: ignore[return-value]
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


def _one_read_each(jobs: list[_Job], vals: list[bytes | None], failed: set[int],
                   opts: FetchOptions
                   ) -> tuple[list[tuple[int, int, int, range | list[int], bytes]],
                              list[range | list[int]]] | None:
    """_read_jobs's reads and misses when no block has failed and each job's few items not
    cached (item_reads's arguments known) lie in one read, or are none (a cold one-series
    request's entry or chunks in each block; a range covering the oldest block in part finds
    some of its chunks cached by the broad query); else None. In C steps only when nothing is
    cached."""
    if not jobs or failed:
        return None
    bounds = list(accumulate(map(len, map(_IDS, jobs)), initial=0))
    if vals.count(None) != len(vals):  # some cached: each job's missing items, if any
        return _some_read_each(jobs, vals, bounds, opts)
    if None in map(_SMALL, jobs):
        return None
    groups = list(map(item_reads, map(_IDS, jobs), *zip(*map(_SMALL, jobs)),
                      repeat(opts.max_gap), repeat(opts.max_range)))
    if None in groups or set(map(len, groups)) != {1}:
        return None
    misses = list(map(range, bounds, bounds[1:]))
    gss, ges, _, _, rels = zip(*map(_FIRST, groups))
    return list(zip(range(len(jobs)), gss, ges, misses, rels)), misses


def _some_read_each(jobs: list[_Job], vals: list[bytes | None], bounds: list[int],
                    opts: FetchOptions
                    ) -> tuple[list[tuple[int, int, int, range | list[int], bytes]],
                               list[range | list[int]]] | None:
    """_one_read_each where some items are cached: a job's missing items (those of ``vals``
    that are None) in one read, a job with none missing in none."""
    reads: list[tuple[int, int, int, range | list[int], bytes]] = []
    misses: list[range | list[int]] = []
    for t, (j, a, z) in enumerate(zip(jobs, bounds, bounds[1:])):
        miss = [p for p in range(a, z) if vals[p] is None]
        misses.append(miss)
        if not miss:
            continue
        if j.small is None:
            return None
        groups = item_reads(j.ids, *j.small, opts.max_gap, opts.max_range,
                            [p - a for p in miss])  # (each item's end: the next one's start)
        if groups is None or len(groups) != 1:
            return None
        gs, ge, _, _, rels = groups[0]
        reads.append((t, gs, ge, miss, rels))
    return reads, misses


# The C steps call this module's functions through its namespace (a monkeypatch reaches both
# paths) and the LRU's and index header's C steps as store.cache and IndexHeader call them.
bind(globals(), lookup, put_many, label_sets, ENTRY_OVERHEAD, SMALL_ITEMS)
