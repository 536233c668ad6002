"""Which blocks of one group to compact next (Thanos's TSDB-based planner).

Order of preference: first any set of time-overlapping blocks (vertical compaction), then
the first run of adjacent blocks that fills one aligned range of the next level (2h blocks
-> 8h, 8h -> 2d, 2d -> 14d). The newest block is left out of range planning, as Thanos
does, so blocks still being produced next to it are not compacted half-way; an
incomplete range is compacted only once newer data exists beyond it.
"""
from __future__ import annotations

from collections.abc import Sequence

from .state import BlockInfo

HOUR_MS = 3600 * 1000
DEFAULT_RANGES = (2 * HOUR_MS, 8 * HOUR_MS, 48 * HOUR_MS, 14 * 24 * HOUR_MS)


def overlapping(blocks: Sequence[BlockInfo]) -> list[BlockInfo]:
    """The first run of blocks (sorted by min time) whose time ranges overlap."""
    out: list[BlockInfo] = []
    if len(blocks) < 2:
        return out
    reach = blocks[0].max_time
    for prev, b in zip(blocks, blocks[1:]):
        if b.min_time < reach:
            if not out:
                out.append(prev)
            out.append(b)
        elif out:
            break
        reach = max(reach, b.max_time)
    return out


def split_by_range(blocks: Sequence[BlockInfo], tr: int) -> list[list[BlockInfo]]:
    """Blocks grouped by the ``tr``-aligned range they fall in; blocks wider than their
    range are skipped."""
    parts: list[list[BlockInfo]] = []
    i = 0
    while i < len(blocks):
        b = blocks[i]
        t0 = tr * (b.min_time // tr)  # floor division: right for negative times too
        if b.max_time > t0 + tr:
            i += 1
            continue
        group = []
        while i < len(blocks) and blocks[i].max_time <= t0 + tr:
            group.append(blocks[i])
            i += 1
        if group:
            parts.append(group)
    return parts


def select_range(blocks: Sequence[BlockInfo], ranges: Sequence[int]) -> list[BlockInfo]:
    """The first range-level compaction; ``blocks`` must exclude the newest block."""
    if len(ranges) < 2 or not blocks:
        return []
    high = blocks[-1].min_time
    for tr in ranges[1:]:
        for part in split_by_range(blocks, tr):
            if len(part) < 2:
                continue
            mint, maxt = part[0].min_time, part[-1].max_time
            if maxt - mint != tr and maxt > high:
                continue
            run: list[BlockInfo] = []
            for b in part:  # no-compact-marked blocks split a part into runs
                if b.no_compact:
                    if len(run) > 1:
                        return run
                    run = []
                else:
                    run.append(b)
            if len(run) > 1:
                return run
    return []


def plan(blocks: Sequence[BlockInfo], ranges: Sequence[int] = DEFAULT_RANGES
         ) -> tuple[str, list[BlockInfo]]:
    """``("vertical", blocks)``, ``("range", blocks)`` or ``("", [])`` for one group's live
    blocks sorted by (min time, ulid)."""
    candidates = [b for b in blocks if not b.no_compact]
    ov = overlapping(candidates)
    if ov:
        return "vertical", ov
    if not blocks:
        return "", []
    pick = select_range(list(blocks[:-1]), ranges)
    return ("range", pick) if pick else ("", [])
