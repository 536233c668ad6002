"""The head's native-histogram samples, per series, beside the C float store.

Histogram samples are kept parsed (:class:`~receiver.tsdb.histogram.Hist`) in per-series lists
and cut into Prometheus histogram chunks on demand. Chunks that can no longer change (all but
the last one cut) are cached, so a query re-encodes at most the open chunk of each series.
Append checks mirror the float store's: too old, out of order, duplicate timestamp -- against
the newest sample of the series of either kind (a series may switch between float and
histogram samples over time, never hold both at one timestamp).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .histogram import EncodedChunk, Hist, cut_chunks

# Per-sample status codes, the same as the float store's (receiver.tsdb.head).
OK, OUT_OF_ORDER, DUPLICATE, TOO_OLD, SAME_DUPLICATE = 0, 1, 2, 3, 4

_NONE = np.iinfo(np.int64).min


@dataclass
class _Series:
    ts: list[int] = field(default_factory=list)
    hs: list[Hist] = field(default_factory=list)
    closed: list[tuple[int, int, EncodedChunk]] = field(default_factory=list)
    closed_upto: int = 0  # samples [0, closed_upto) are in ``closed``
    breaks: list[int] = field(default_factory=list)  # sample indexes that follow a float


class HistogramHead:
    def __init__(self, chunk_range_ms: int, samples_per_chunk: int = 120) -> None:
        self.chunk_range_ms = chunk_range_ms
        self.samples_per_chunk = samples_per_chunk
        self._series: dict[int, _Series] = {}
        self._last = np.full(0, _NONE, dtype=np.int64)  # newest histogram t per ref

    @property
    def num_series(self) -> int:
        return len(self._series)

    def refs(self) -> list[int]:
        return sorted(self._series)

    def num_samples(self, ref: int) -> int:
        s = self._series.get(ref)
        return len(s.ts) if s else 0

    def last_ts(self, refs: np.ndarray) -> np.ndarray:
        """Newest histogram timestamp of each ref (int64 min where there is none): lets the
        float path refuse floats that would go behind a histogram, vectorised."""
        refs = np.asarray(refs, dtype=np.int64)
        out = np.full(len(refs), _NONE, dtype=np.int64)
        if len(self._last):
            inside = refs < len(self._last)
            out[inside] = self._last[refs[inside]]
        return out

    def append(self, refs: list[int], ts: list[int], hists: list[Hist], min_valid_time: int,
               float_last: Callable[[int], int | None]) -> np.ndarray:
        """Append histogram samples in order; one status per sample like the float store."""
        status = np.zeros(len(refs), dtype=np.uint8)
        if refs and max(refs) >= len(self._last):
            grown = np.full(max(max(refs) + 1, 2 * len(self._last)), _NONE, dtype=np.int64)
            grown[:len(self._last)] = self._last
            self._last = grown
        for i, (ref, t, h) in enumerate(zip(refs, ts, hists)):
            if t < min_valid_time:
                status[i] = TOO_OLD
                continue
            s = self._series.get(ref)
            hl = s.ts[-1] if s and s.ts else None
            fl = float_last(ref)
            if fl is not None and (hl is None or fl > hl):
                if t < fl:
                    status[i] = OUT_OF_ORDER
                elif t == fl:
                    status[i] = DUPLICATE  # a float already holds this timestamp
                if t <= fl:
                    continue
            if hl is not None:
                if t < hl:
                    status[i] = OUT_OF_ORDER
                    continue
                if t == hl:
                    status[i] = SAME_DUPLICATE if _same(s.hs[-1], h) else DUPLICATE
                    continue
            if s is None:
                s = self._series[ref] = _Series()
            if fl is not None and (hl is None or fl > hl) and s.ts:
                s.breaks.append(len(s.ts))  # floats came between: a new chunk starts here
            s.ts.append(t)
            s.hs.append(h)
            self._last[ref] = t
        return status

    def _chunks(self, s: _Series) -> list[tuple[int, int, EncodedChunk]]:
        start = s.closed_upto
        if start < len(s.ts):
            prev = s.hs[start - 1] if start else None
            cut = cut_chunks(list(zip(s.ts[start:], s.hs[start:])), prev, self.chunk_range_ms,
                             self.samples_per_chunk, {b - start for b in s.breaks if b >= start})
            for c in cut[:-1]:
                s.closed.append(c)
                s.closed_upto += chunk_len(c[2])
            return s.closed + cut[-1:]
        return list(s.closed)

    def chunks(self, ref: int, mint: int, maxt: int) -> list[tuple[int, int, EncodedChunk]]:
        """Histogram chunks of a series overlapping [mint, maxt]."""
        s = self._series.get(ref)
        if not s:
            return []
        return [c for c in self._chunks(s) if c[1] >= mint and c[0] <= maxt]

    def samples(self, ref: int, mint: int, maxt: int) -> tuple[list[int], list[Hist]]:
        s = self._series.get(ref)
        if not s:
            return [], []
        a = bisect.bisect_left(s.ts, mint)
        z = bisect.bisect_right(s.ts, maxt)
        return s.ts[a:z], s.hs[a:z]

    def min_time_from(self, t: int) -> int:
        """The earliest histogram sample at or after ``t`` (int64 max if none)."""
        best = np.iinfo(np.int64).max
        for s in self._series.values():
            k = bisect.bisect_left(s.ts, t)
            if k < len(s.ts) and s.ts[k] < best:
                best = s.ts[k]
        return int(best)

    def truncate(self, t: int) -> None:
        """Drop samples older than ``t``; chunks are re-cut from what is left."""
        for ref in list(self._series):
            s = self._series[ref]
            k = bisect.bisect_left(s.ts, t)
            if k == 0:
                continue
            if k == len(s.ts):
                del self._series[ref]
                continue
            s.ts, s.hs = s.ts[k:], s.hs[k:]
            s.closed, s.closed_upto = [], 0
            s.breaks = [b - k for b in s.breaks if b > k]

    def memory_samples(self) -> int:
        return sum(len(s.ts) for s in self._series.values())


def chunk_len(data: bytes) -> int:
    return data[0] << 8 | data[1]


def _same(a: Hist, b: Hist) -> bool:
    """Exact equality (bit patterns for floats), as for float duplicates."""
    return (a.layout() == b.layout() and a.count == b.count and a.zc == b.zc
            and repr(a.sum) == repr(b.sum) and a.pbuckets == b.pbuckets
            and a.nbuckets == b.nbuckets)
