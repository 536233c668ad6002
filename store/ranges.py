"""Coalescing many small byte ranges into few object-storage requests.

A request to S3 costs tens of milliseconds regardless of size, so neighbouring items (series
entries of one metric, chunks of consecutive series) are fetched together when the gap between
them is small; the waste is bounded by ``max_gap`` bytes per merge.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from common.aio import gather_eager
from common.varint import uvarint_at  # noqa: F401  (re-exported: store.block reads item lengths)

# (start, end, first item index, last item index + 1) over items sorted by start.
Group = tuple[int, int, int, int]


def coalesce(starts: np.ndarray, ends: np.ndarray, max_gap: int,
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
    reach = np.maximum.accumulate(ends)
    brk = starts[1:] - reach[:-1] > max_gap
    if n > 1 and reach[-1] - starts[0] > max_size:
        brk |= (starts[1:] - starts[0]) // max_size != (starts[:-1] - starts[0]) // max_size
    cut = np.flatnonzero(brk) + 1
    bounds = [0, *cut.tolist(), n]
    return [(int(starts[a]), int(reach[z - 1]), a, z) for a, z in zip(bounds[:-1], bounds[1:])]


async def fetch_groups(get_range: Callable[[int, int], Awaitable[bytes]], groups: list[Group],
                       limit: asyncio.Semaphore) -> list[bytes]:
    """Fetch each group's [start, end) concurrently, at most ``limit`` requests in flight.
    A read that completes without waiting (a filesystem bucket reading from the page cache)
    costs no Task and no event-loop round trip."""
    async def one(g: Group) -> bytes:
        async with limit:
            return await get_range(g[0], g[1] - g[0])
    if len(groups) == 1:
        return [await one(groups[0])]
    return await gather_eager([one(g) for g in groups])
