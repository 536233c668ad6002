"""Selections of one Series request over all its blocks at once (the cold one-series query).

A selection never asked before (a dashboard's new instance) misses the expanded-postings
cache in every block and reads one small postings list per block. Done block by block that
cost ~0.2 ms of Python per block around a read of a few bytes: a cache lookup, a plan, a
coalesce, a ranged read, a check, a cache insert and the metrics, each once per block. Here
each step runs once per request over every block: one lookup of all the selections, one of
all the postings lists, the reads issued together, one insert per item type and the fetch
counted once; only the plan (index-header lookups) and the final intersect stay per block.

What is cached and counted is what ``BucketBlock.select`` of each block would have: the same
keys and values, a hit or a request per key. A block whose read fails in any way (a bucket
error, a corrupt or truncated postings list) gets None: its own ``select`` runs again and
fails there as it always has (so a broken block is taken out, a bucket outage fails the
query); only then are that block's postings lookups and its failed read counted twice.

The usual case of all -- one new selection of equality matchers, one uncached list of each
block to read -- runs in C before and after its read (store._coldselect: plan, finish),
calling the same C steps in the same order: after idle, the Python glue between those steps
cost more than the steps. Every other case, and a failed or broken read, takes the Python.
"""
from __future__ import annotations

import asyncio
from array import array
import struct
from collections.abc import Sequence
from bisect import bisect_right
from collections import deque
from itertools import accumulate, chain, compress, count, repeat
from operator import attrgetter, is_, is_not, itemgetter

import numpy as np

from objstore.bucket import IS_BYTES
from receiver.tsdb._blockio import checked_postings
from receiver.tsdb.index import EMPTY
from receiver.tsdb.labels import Matcher, MatchType

from . import _coldselect as _cold
from ._indexheader import eq_plans
from ._lru import lookup, put_many
from ._items import single_selections, split_items
from .block import (MAX_KEY_MATCHER_CHARS, BucketBlock, FetchMetrics, FetchOptions,
                    PostingsPlan, _check_postings, combine_postings, combine_single,
                    matcher_chars, selection_id)
from .cache import ENTRY_OVERHEAD, LRUCache
from .ranges import coalesce, read_batch

_POSTINGS = 0  # store._items.split_items framing of a postings list
_AT_START = array("q", [0])  # one list read alone: it starts the read
_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_START = _FIRST  # of a (start, end) range
_ULID = attrgetter("ulid")
_RANGES, _IN_ORDER = attrgetter("ranges"), attrgetter("in_order")
_EQ_STATE = attrgetter("header.eq_state")
MAX_SINGLE_LISTS = 64  # lists of one selection single_selections takes (its C bound)


def bind_c(max_key_chars: int = MAX_KEY_MATCHER_CHARS) -> None:
    """Hand store._coldselect the C steps, types and bounds the Python path uses, so the two
    call the same things (``max_key_chars``: the bound of a selection kept in the cache)."""
    _cold.bind(lookup, put_many, eq_plans, checked_postings, single_selections, PostingsPlan,
               LRUCache, MatchType.EQ, np.frombuffer, np.int64, EMPTY, ENTRY_OVERHEAD,
               max_key_chars)


bind_c()


async def select_many(blocks: Sequence[BucketBlock], matchers: Sequence[Sequence[Matcher]],
                      cache: LRUCache, opts: FetchOptions, limit: asyncio.Semaphore,
                      metrics: FetchMetrics | None) -> list[np.ndarray | None]:
    """Each block's ``select(matchers[i])``, or None where the block must do its own."""
    fast = _cold.plan(blocks, matchers, cache)
    if fast is not None:  # a new selection of one series in every block (the usual)
        return await _select_cold(blocks, matchers, cache, limit, metrics, *fast)
    n = len(blocks)
    out: list[np.ndarray | None] = [None] * n
    first = matchers[0] if n else None
    if n and all(map(is_, matchers, repeat(first))):  # one selection for all (the usual)
        shorts = [matcher_chars(first) <= MAX_KEY_MATCHER_CHARS] * n  # type: ignore[arg-type]
        keys = list(zip(map(_ULID, blocks), repeat("expanded_postings"),
                        repeat(selection_id(first))))  # type: ignore[arg-type]
        todo, worked_out = _plans_of_one(blocks, first, keys, out, cache)  # type: ignore[arg-type]
    else:
        keys, shorts, todo, worked_out = _plans(blocks, matchers, out, cache)
    kept: dict[int, bytes] = {}  # uint32 refs of the selections combined in one C call
    if todo:
        await _read_lists(blocks, todo, out, kept, cache, opts, limit, metrics)
        at = list(map(_FIRST, todo))
        worked_out += compress(at, map(is_not, map(out.__getitem__, at), repeat(None)))
    _keep_selections(blocks, matchers, keys, shorts, worked_out, out, kept, cache)
    return out


def _keep_selections(blocks: Sequence[BucketBlock], matchers: Sequence[Sequence[Matcher]],
                     keys: list, shorts: list[bool], worked_out: list[int],
                     out: list[np.ndarray | None], kept: dict[int, bytes], cache: LRUCache
                     ) -> None:
    """Cache the selections worked out (blocks ``worked_out``) in one insert."""
    cap = cache.max_bytes // 64  # (selection_kept's bound, for those ``kept`` holds)
    order = sorted(worked_out)
    new = [(keys[i], kept[i] if shorts[i] and len(kept[i]) <= cap else None) if i in kept else
           (keys[i], blocks[i].selection_kept(matchers[i], out[i], shorts[i]))  # type: ignore[arg-type]
           for i in order]
    new = [kv for kv in new if kv[1] is not None]
    if new:
        cache.put_many(list(map(_FIRST, new)), list(map(_SECOND, new)), "expanded_postings")


async def _select_cold(blocks: Sequence[BucketBlock], matchers: Sequence[Sequence[Matcher]],
                       cache: LRUCache, limit: asyncio.Semaphore, metrics: FetchMetrics | None,
                       reqs: list, state: tuple) -> list[np.ndarray | None]:
    """select_many of a new selection of equality matchers in every block, one list of each
    block to read (store._coldselect.plan found that and made the postings lookup): the
    Python glue between its C steps, cold in the CPU caches after idle, was most of its
    cost. A failed or broken read goes on as _read_lists would from the same values."""
    bufs = await read_batch(reqs, limit)
    if metrics is not None:
        metrics.fetched("postings", len(reqs), sum(map(len, filter(IS_BYTES, bufs))))
    done = _cold.finish(state, bufs, cache)
    if done is not None:
        return done
    plans, keys, raws, one_each, sel_keys, short = state
    todo = list(enumerate(plans))
    out: list[np.ndarray | None] = [None] * len(blocks)
    kept: dict[int, bytes] = {}
    reads = _one_each_reads(plans, one_each)
    _finish_reads(blocks, todo, reads, bufs, keys, raws, out, kept, cache)
    worked_out = [i for i, refs in enumerate(out) if refs is not None]
    _keep_selections(blocks, matchers, sel_keys, [short] * len(blocks), worked_out, out, kept,
                     cache)
    return out


def _plans_of_one(blocks: Sequence[BucketBlock], matchers: Sequence[Matcher], keys: list,
                  out: list[np.ndarray | None], cache: LRUCache
                  ) -> tuple[list[tuple[int, PostingsPlan]], list[int]]:
    """_plans for one selection of every block (``keys`` its cache keys): one lookup of all,
    and when the matchers are all equalities, the plans of every block that missed in one C
    call (store._indexheader.eq_plans), no Python step per block."""
    misses = _take_hits(cache.get_each(keys, "expanded_postings"), out)
    eq = _equalities(matchers)
    if eq is None or not misses:
        return _missed_plans(blocks, [matchers] * len(blocks), misses, out, [eq] * len(blocks))
    plans = eq_plans(list(map(_EQ_STATE, picked(blocks, misses))), eq[0], eq[1],
                     list(matchers), PostingsPlan)
    todo = list(filter(_SECOND, zip(misses, plans)))  # (False: a broken header, None: empty)
    worked_out: list[int] = []
    if len(todo) != len(misses):
        for i, plan in zip(misses, plans):
            if plan is None:  # nothing has one of the values: no read at all
                out[i] = EMPTY
                worked_out.append(i)
    return todo, worked_out


def _plans(blocks: Sequence[BucketBlock], matchers: Sequence[Sequence[Matcher]],
           out: list[np.ndarray | None], cache: LRUCache
           ) -> tuple[list, list[bool], list[tuple[int, PostingsPlan]], list[int]]:
    """(cache keys, whether each selection is short enough to keep, the postings plans of
    the blocks whose selection is not cached, the blocks whose empty selection is known)
    from one lookup of every block's selection; ``out`` gets the cached ones."""
    keys = []
    shorts = []  # whether the matchers are short enough to be kept (selection_kept)
    eqs: list[tuple[list[str], list[bytes]] | None] = []  # equality matchers' names, values
    last: object = None
    for b, ms in zip(blocks, matchers):
        if ms is not last:  # (blocks sharing external labels share one list: worked out once)
            last, key_ms = ms, selection_id(ms)
            short = matcher_chars(ms) <= MAX_KEY_MATCHER_CHARS
            eq = _equalities(ms)
        keys.append(b.selection_key(key_ms))
        shorts.append(short)
        eqs.append(eq)
    misses = _take_hits(cache.get_each(keys, "expanded_postings"), out)
    return (keys, shorts, *_missed_plans(blocks, matchers, misses, out, eqs))


def picked(items: Sequence, at: list[int]) -> Sequence:
    """``items[i]`` for each of the ascending indexes ``at``: ``items`` itself when that is
    all of them (a request whose every block takes the same path)."""
    return items if len(at) == len(items) else [items[i] for i in at]


def _take_hits(hits: list[bytes | None], out: list[np.ndarray | None]) -> list[int]:
    """The blocks whose selection the cache lacks; ``out`` gets the refs of the others."""
    if hits.count(None) == len(hits):  # a new selection (the cold query): every block
        return list(range(len(hits)))
    misses = []
    for i, hit in enumerate(hits):
        if hit is None:
            misses.append(i)
        else:
            out[i] = np.frombuffer(hit, np.uint32)
    return misses


def _missed_plans(blocks: Sequence[BucketBlock], matchers: Sequence[Sequence[Matcher]],
                  misses: list[int], out: list[np.ndarray | None],
                  eqs: list[tuple[list[str], list[bytes]] | None]
                  ) -> tuple[list[tuple[int, PostingsPlan]], list[int]]:
    """The postings plans of blocks ``misses``, block by block: (those to read, those known
    empty, whose ``out`` is set). A block whose index-header fails is left out (its own
    select fails the same way and takes it out)."""
    todo: list[tuple[int, PostingsPlan]] = []
    worked_out: list[int] = []  # selections not found in the cache
    for i in misses:
        eq = eqs[i]
        try:
            plan = blocks[i].postings_plan(matchers[i]) if eq is None else \
                blocks[i].eq_plan(matchers[i], *eq)
        except Exception:  # noqa: BLE001 -- a broken index-header: the block's own select
            continue       # fails the same way and takes it out
        if plan is None:
            out[i] = EMPTY
            worked_out.append(i)
        else:
            todo.append((i, plan))
    return todo, worked_out


def _equalities(matchers: Sequence[Matcher]) -> tuple[list[str], list[bytes]] | None:
    """The names and values (UTF-8) of matchers that are all ``name="non-empty"`` (a
    dashboard's selection, planned with one index-header call per block), else None."""
    if matchers and all(m.type is MatchType.EQ and m.value for m in matchers):
        return ([m.name for m in matchers],
                [m.value.encode("utf-8", "surrogatepass") for m in matchers])
    return None


async def _read_lists(blocks: Sequence[BucketBlock], todo: list[tuple[int, PostingsPlan]],
                      out: list[np.ndarray | None], kept: dict[int, bytes], cache: LRUCache,
                      opts: FetchOptions, limit: asyncio.Semaphore,
                      metrics: FetchMetrics | None) -> None:
    """Read the postings lists of every planned block (one cache lookup, reads issued
    together, one insert) and fill ``out`` with each block's combined refs; the selections
    of one list per matcher (a dashboard's ``name{label="value"}``) are combined for all
    blocks in one C call, their refs as uint32 bytes put in ``kept``."""
    plans = list(map(_SECOND, todo))
    counts = list(map(len, map(_RANGES, plans)))
    ranges = list(chain.from_iterable(map(_RANGES, plans)))
    keys = list(zip(chain.from_iterable(map(repeat, map(_ULID, map(blocks.__getitem__,
                                                                       map(_FIRST, todo))),
                                            counts)),
                    repeat("postings"), map(_START, ranges)))
    raws = cache.get_many(keys, "postings")
    # (todo index, (start, end) of one read, positions in raws of the lists in it)
    reads: list[tuple[int, tuple[int, int], list[int]]] = []
    bounds = list(accumulate(counts, initial=0))
    one_each = _one_missing_each(plans, counts, bounds, raws)
    if one_each is not None:  # the cold one-series request: one list of each block to read
        reads = _one_each_reads(plans, one_each, ranges)
    at = 0
    for t, (i, plan) in enumerate(todo if one_each is None else ()):
        k = len(plan.ranges)
        n_miss = raws[at:at + k].count(None)
        if n_miss == 1:  # the usual cold case: no array work
            j = raws.index(None, at, at + k)
            reads.append((t, plan.ranges[j - at], [j]))
        elif n_miss:
            miss = [j for j in range(at, at + k) if raws[j] is None]
            starts = np.array([keys[j][2] for j in miss], dtype=np.int64)
            ends = np.array([plan.ranges[j - at][1] for j in miss], dtype=np.int64)
            reads += [(t, (gs, ge), miss[a:z])
                      for gs, ge, a, z in coalesce(starts, ends, opts.max_gap, opts.max_range)]
        at += k
    bufs: list = []
    if reads:
        reqs = [(blocks[todo[t][0]].bucket, (blocks[todo[t][0]].index_name, g[0], g[1] - g[0]))
                for t, g, _ in reads]
        bufs = await read_batch(reqs, limit)
        if metrics is not None:
            metrics.fetched("postings", len(reads),
                            sum(map(len, filter(IS_BYTES, bufs))))
        if one_each is not None and _finish_one_each(todo, one_each, bufs, keys, raws, bounds,
                                                     out, kept, cache):
            return
    _finish_reads(blocks, todo, reads, bufs, keys, raws, out, kept, cache)


def _one_each_reads(plans: list[PostingsPlan], one_each: list[int],
                    ranges: list[tuple[int, int]] | None = None
                    ) -> list[tuple[int, tuple[int, int], list[int]]]:
    """_read_lists's reads of _one_missing_each's lists (``ranges``: every plan's, in order)."""
    if ranges is None:
        ranges = list(chain.from_iterable(map(_RANGES, plans)))
    return list(zip(range(len(plans)), map(ranges.__getitem__, one_each),
                    map(list, zip(one_each))))


def _finish_reads(blocks: Sequence[BucketBlock], todo: list[tuple[int, PostingsPlan]],
                  reads: list[tuple[int, tuple[int, int], list[int]]], bufs: list,
                  keys: list, raws: list[bytes | None], out: list[np.ndarray | None],
                  kept: dict[int, bytes], cache: LRUCache) -> None:
    """_read_lists's general end: each read's lists checked and cached (a block with a failed
    or broken read left out, nothing of it kept), each block's selection combined."""
    failed: set[int] = set()
    if reads:
        fresh: list[tuple[int, bytes]] = []  # (position in raws, list read)
        for (t, (gs, _), pos), buf in zip(reads, bufs):
            if t in failed:
                continue
            if not isinstance(buf, bytes):
                failed.add(t)
                continue
            try:
                rel = _AT_START if len(pos) == 1 else array("q", [keys[j][2] - gs for j in pos])
                items, _ = split_items(buf, rel, _POSTINGS)
                if None in items:
                    raise ValueError("postings list longer than its range")
                for raw in items:
                    _check_postings(raw)
            except (ValueError, struct.error):
                failed.add(t)
                continue
            fresh += zip(pos, items)
        if failed:  # nothing of a failed block is kept (its own select reads it again)
            first = list(accumulate((len(p.ranges) for _, p in todo), initial=0))
            dead = {j for t in failed for j in range(first[t], first[t + 1])}
            fresh = [(j, raw) for j, raw in fresh if j not in dead]
        if fresh:
            for j, raw in fresh:
                raws[j] = raw
            cache.put_many(list(map(keys.__getitem__, map(_FIRST, fresh))),
                           list(map(_SECOND, fresh)), "postings")
    at = 0
    singles: list[int] = []  # blocks whose lists go to single_selections
    groups: list[list[bytes]] = []
    for t, (i, plan) in enumerate(todo):
        k = len(plan.ranges)
        if t in failed:
            pass
        elif plan.single and plan.all_range is None:  # each matcher one list: no dict
            rs = plan.ranges
            lists = raws[at:at + k] if plan.in_order else \
                [raws[at + rs.index(n[0])] for n in plan.narrowing]
            if len(lists) <= MAX_SINGLE_LISTS:
                singles.append(i)
                groups.append(lists)  # type: ignore[arg-type]
            else:
                out[i] = combine_single(lists)  # type: ignore[arg-type]
        else:
            out[i] = combine_postings(plan, dict(zip(map(_START, plan.ranges),
                                                     raws[at:at + k])))  # type: ignore[arg-type]
        at += k
    if singles:
        for i, (refs, u32) in zip(singles, single_selections(groups)):
            out[i] = np.frombuffer(refs, np.int64) if refs else EMPTY
            kept[i] = u32


def _one_missing_each(plans: list[PostingsPlan], counts: list[int], bounds: list[int],
                      raws: list[bytes | None]) -> list[int] | None:
    """The position in ``raws`` of each plan's one missing list when every plan is of
    equality matchers whose lists are ``ranges`` in matcher order, at most MAX_SINGLE_LISTS,
    and exactly one of each plan's lists is not cached (a new series' selection: its
    metric name's list is cached, its own label's is not); else None. In C steps only."""
    if not all(map(_IN_ORDER, plans)) or max(counts) > MAX_SINGLE_LISTS:
        return None
    miss = list(compress(count(), map(is_, raws, repeat(None))))
    if len(miss) != len(plans) or \
            list(map(bisect_right, repeat(bounds), miss)) != list(range(1, len(plans) + 1)):
        return None  # (each block's one miss lies within its own lists)
    return miss


def _finish_one_each(todo: list[tuple[int, PostingsPlan]], miss: list[int], bufs: list,
                     keys: list, raws: list[bytes | None], bounds: list[int],
                     out: list[np.ndarray | None], kept: dict[int, bytes], cache: LRUCache
                     ) -> bool:
    """_read_lists's end for _one_missing_each's reads when every read is a good list: each
    list cached, every block's lists combined in one single_selections call. False (nothing
    done) when any read failed or is broken: the general path then sorts out which blocks."""
    if not all(map(IS_BYTES, bufs)):
        return False
    try:
        lists = checked_postings(bufs)
    except ValueError:
        return False
    deque(map(raws.__setitem__, miss, lists), maxlen=0)
    cache.put_many(list(map(keys.__getitem__, miss)), lists, "postings")
    groups = list(map(raws.__getitem__, map(slice, bounds, bounds[1:])))
    for (i, _), (refs, u32) in zip(todo, single_selections(groups)):
        out[i] = np.frombuffer(refs, np.int64) if refs else EMPTY
        kept[i] = u32
    return True
