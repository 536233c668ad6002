"""Coalescing many small byte ranges into few object-storage requests.

A request to S3 costs tens of milliseconds regardless of size, so neighbouring items (series
entries of one metric, chunks of consecutive series) are fetched together when the gap between
them is small; the waste is bounded by ``max_gap`` bytes per merge.
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from itertools import repeat
from operator import is_, itemgetter

import numpy as np

from objstore.bucket import Bucket, RangeRequest, get_ranges, get_ranges_now
from common.varint import uvarint_at  # noqa: F401  (re-exported: store.block reads item lengths)

# (start, end, first item index, last item index + 1) over items sorted by start.
Group = tuple[int, int, int, int]
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def coalesce(starts: np.ndarray | list[int], ends: np.ndarray | list[int], max_gap: int,
             max_size: int = 1 << 62) -> list[Group]:
    """Groups of items sorted by ``starts`` whose ranges are at most ``max_gap`` apart.

    A group is also cut (at an item boundary) about every ``max_size`` bytes, so one huge
    read becomes several that run in parallel.
    """
    n = len(starts)
    if n == 0:
        return []
    if n == 1:  # one item (a cold one-series read): no array work
        return [(int(starts[0]), int(ends[0]), 0, 1)]
    if isinstance(starts, list):
        return _coalesce_small(starts, ends, max_gap, max_size)  # type: ignore[arg-type]
    reach = np.maximum.accumulate(ends)
    brk = starts[1:] - reach[:-1] > max_gap
    if n > 1 and reach[-1] - starts[0] > max_size:
        brk |= (starts[1:] - starts[0]) // max_size != (starts[:-1] - starts[0]) // max_size
    cut = np.flatnonzero(brk) + 1
    bounds = [0, *cut.tolist(), n]
    return [(int(starts[a]), int(reach[z - 1]), a, z) for a, z in zip(bounds[:-1], bounds[1:])]


def _coalesce_small(starts: list[int], ends: list[int], max_gap: int, max_size: int
                    ) -> list[Group]:
    """``coalesce`` of a few items given as lists (a one-series read's chunks): the same
    groups, without the dozen numpy calls that would cost more than the items."""
    reach = list(itertools.accumulate(ends, max))
    s0 = starts[0]
    split = reach[-1] - s0 > max_size
    out: list[Group] = []
    a = 0
    for i in range(1, len(starts)):
        if starts[i] - reach[i - 1] > max_gap or (
                split and (starts[i] - s0) // max_size != (starts[i - 1] - s0) // max_size):
            out.append((starts[a], reach[i - 1], a, i))
            a = i
    out.append((starts[a], reach[-1], a, len(starts)))
    return out


async def fetch_groups(bucket: Bucket, name: str, groups: list[Group],
                       limit: asyncio.Semaphore) -> list[bytes]:
    """Each group's [start, end) of object ``name``, read as one batch (store.ranges.read_batch);
    the first failed read's error is raised."""
    bufs = await get_ranges(bucket, [(name, g[0], g[1] - g[0]) for g in groups], limit)
    for b in bufs:
        if not isinstance(b, bytes):
            raise b
    return bufs  # type: ignore[return-value]


async def read_batch(reads: Sequence[tuple[Bucket, RangeRequest]], limit: asyncio.Semaphore
                     ) -> list[bytes | BaseException]:
    """Ranged reads of possibly several buckets (a store's blocks share one), each bucket's as
    one batch (objstore.bucket.get_ranges: one C call for a filesystem bucket), results or
    errors in order."""
    first = reads[0][0]
    if all(map(is_, map(_FIRST, reads), repeat(first))):  # (in C: no Python step per read)
        reqs = list(map(_SECOND, reads))
        got = get_ranges_now(first, reqs)  # all in the page cache: no await below here
        return await get_ranges(first, reqs, limit) if got is None else got  # type: ignore[return-value]
    out: list[bytes | BaseException | None] = [None] * len(reads)
    by_bucket: dict[int, list[int]] = {}
    for i, (b, _) in enumerate(reads):
        by_bucket.setdefault(id(b), []).append(i)
    for at in by_bucket.values():
        got = await get_ranges(reads[at[0]][0], [reads[i][1] for i in at], limit)
        for i, v in zip(at, got):
            out[i] = v
    return out  # type: ignore[return-value]


class ByteBudget:
    """Bytes of fetched ranges a store holds at once, across all its requests' reads.

    A big Series request reads each block's chunks in ranges of up to ``max_range`` bytes;
    fetched all at once, every overlapping block's ranges were in memory together before
    their items were cut out: for a 24 h query over 12,000 series at scale 4, the coalesced
    ranges of thirteen blocks, ~19 MiB each, on top of the items. That is bounded by the
    selection's size only, so a selection of millions of series could take the store down.
    A read waits here until its range fits; one bigger than the whole budget goes alone. The
    items cut out of a range are what is kept, so the range's bytes are given back as soon
    as it is split."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0  # the most held at once (tests)
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self, n: int) -> int:
        """Take ``n`` bytes (at most the whole budget); the amount to ``release``."""
        n = min(n, self.limit)
        while self.used and self.used + n > self.limit:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        self.used += n
        self.peak = max(self.peak, self.used)
        return n

    def release(self, n: int) -> None:
        self.used -= n
        waiters, self._waiters = self._waiters, []
        for fut in waiters:  # each checks again whether its range fits now
            if not fut.done():
                fut.set_result(None)
