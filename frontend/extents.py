"""Cortex-style result extents: which parts of a request a cache entry already answers.

An extent is a time range [start, end] (both on the request's step grid) with the series
answering it. A request is answered from the extents that overlap it and from downstream
requests for the gaps between them; afterwards the cached extents and the new answer are
folded into a few contiguous extents again."""
from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from .matrix import Series, join_series, slice_series


@dataclass
class Extent:
    start_ms: int
    end_ms: int
    series: list[Series]
    infos: list[str] = field(default_factory=list)  # PromQL info annotations of the answer


def plan(extents: list[Extent], start_ms: int, end_ms: int, step_ms: int
         ) -> tuple[list[tuple[int, int, Extent | None]], list[tuple[int, int]]]:
    """The request's pieces in time order, each (start, end, extent or None for a downstream
    fetch), and the list of those downstream ranges."""
    pieces: list[tuple[int, int, Extent | None]] = []
    cur = start_ms
    for ext in sorted(extents, key=lambda x: x.start_ms):
        if cur > end_ms:
            break
        if ext.end_ms < cur or ext.start_ms > end_ms:
            continue
        if ext.start_ms > cur:
            pieces.append((cur, ext.start_ms - step_ms, None))
            cur = ext.start_ms
        hi = min(end_ms, ext.end_ms)
        pieces.append((cur, hi, ext))
        cur = hi + step_ms
    if cur <= end_ms:
        pieces.append((cur, end_ms, None))
    return pieces, [(a, b) for a, b, e in pieces if e is None and a <= b]


def fold(extents: list[Extent], new: Extent, step_ms: int) -> list[Extent]:
    """``extents`` (disjoint) with ``new`` added: extents overlapping or touching it (one step
    apart) become one, ``new``'s samples winning where they overlap."""
    out: list[Extent] = []
    merged = new
    for ext in sorted(extents, key=lambda x: x.start_ms):
        if ext.end_ms + step_ms < merged.start_ms or ext.start_ms > merged.end_ms + step_ms:
            out.append(ext)
            continue
        before = (slice_series(ext.series, ext.start_ms, merged.start_ms - 1)
                  if ext.start_ms < merged.start_ms else [])
        after = (slice_series(ext.series, merged.end_ms + 1, ext.end_ms)
                 if ext.end_ms > merged.end_ms else [])
        merged = Extent(min(ext.start_ms, merged.start_ms), max(ext.end_ms, merged.end_ms),
                        join_series([before, merged.series, after]),
                        list(dict.fromkeys(merged.infos + ext.infos)))
    out.append(merged)
    return sorted(out, key=lambda x: x.start_ms)


def encode(extents: list[Extent]) -> bytes:
    return orjson.dumps([{"s": e.start_ms, "e": e.end_ms, "r": e.series, "i": e.infos}
                         for e in extents])


def decode(data: bytes) -> list[Extent]:
    """Extents from a cache entry; a malformed entry reads as none."""
    try:
        return [Extent(int(d["s"]), int(d["e"]), d["r"], [str(i) for i in d.get("i") or []])
                for d in orjson.loads(data) if isinstance(d.get("r"), list)]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return []
