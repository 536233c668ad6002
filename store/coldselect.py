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
"""
from __future__ import annotations

import asyncio
from array import array
import struct
from collections.abc import Sequence
from itertools import accumulate
from operator import itemgetter

import numpy as np

from objstore.bucket import IS_BYTES
from receiver.tsdb.index import EMPTY
from receiver.tsdb.labels import Matcher, MatchType

from ._items import single_selections, split_items
from .block import (MAX_KEY_MATCHER_CHARS, BucketBlock, FetchMetrics, FetchOptions,
                    PostingsPlan, _check_postings, combine_postings, combine_single,
                    matcher_chars, selection_id)
from .cache import LRUCache
from .ranges import coalesce, read_batch

_POSTINGS = 0  # store._items.split_items framing of a postings list
_AT_START = array("q", [0])  # one list read alone: it starts the read
_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_START = _FIRST  # of a (start, end) range
MAX_SINGLE_LISTS = 64  # lists of one selection single_selections takes (its C bound)


async def select_many(blocks: Sequence[BucketBlock], matchers: Sequence[Sequence[Matcher]],
                      cache: LRUCache, opts: FetchOptions, limit: asyncio.Semaphore,
                      metrics: FetchMetrics | None) -> list[np.ndarray | None]:
    """Each block's ``select(matchers[i])``, or None where the block must do its own."""
    n = len(blocks)
    out: list[np.ndarray | None] = [None] * n
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
    todo: list[tuple[int, PostingsPlan]] = []
    worked_out: list[int] = []  # selections not found in the cache
    for i, hit in enumerate(cache.get_each(keys, "expanded_postings")):
        if hit is not None:
            out[i] = np.frombuffer(hit, np.uint32)
            continue
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
    kept: dict[int, bytes] = {}  # uint32 refs of the selections combined in one C call
    if todo:
        await _read_lists(blocks, todo, out, kept, cache, opts, limit, metrics)
        worked_out += [i for i, _ in todo if out[i] is not None]
    cap = cache.max_bytes // 64  # (selection_kept's bound, for those ``kept`` holds)
    new = [(keys[i], kept[i] if shorts[i] and len(kept[i]) <= cap else None) if i in kept else
           (keys[i], blocks[i].selection_kept(matchers[i], out[i], shorts[i]))  # type: ignore[arg-type]
           for i in sorted(worked_out)]
    new = [kv for kv in new if kv[1] is not None]
    if new:
        cache.put_many(list(map(_FIRST, new)), list(map(_SECOND, new)), "expanded_postings")
    return out


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
    keys = [(blocks[i].ulid, "postings", r[0]) for i, p in todo for r in p.ranges]
    raws = cache.get_many(keys, "postings")
    # (todo index, (start, end) of one read, positions in raws of the lists in it)
    reads: list[tuple[int, tuple[int, int], list[int]]] = []
    at = 0
    for t, (i, plan) in enumerate(todo):
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
    failed: set[int] = set()
    if reads:
        bufs = await read_batch([(blocks[todo[t][0]].bucket,
                                  (blocks[todo[t][0]].index_name, g[0], g[1] - g[0]))
                                 for t, g, _ in reads], limit)
        if metrics is not None:
            metrics.fetched("postings", len(reads),
                            sum(map(len, filter(IS_BYTES, bufs))))
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
