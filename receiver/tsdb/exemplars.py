"""A tenant's exemplars: a fixed-size ring shared by all series, as Prometheus's
CircularExemplarStorage (tsdb/exemplar.go).

Why a ring: memory is bounded by ``--tsdb.max-exemplars`` whatever the series count; the
newest exemplars win. Each slot links to the next (newer) slot of the same series, and an
index maps a series' label key to its oldest and newest slot, so a query walks only the
slots of matching series. Per series, an exemplar must be newer than the series' newest
(else out of order, refused and counted); an exact repeat of the newest is silently ignored,
as Prometheus does with the exemplar a scrape repeats until it changes.

Exemplars are few beside samples (at most one per series and scrape), so the append walks
them in Python; the request decoder has already validated and flattened them in C.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .labels import Labels, Matcher, decode_labels_key, matches_all

ADDED = 0
DUPLICATE = 1     # equal to the series' newest exemplar: ignored, not an error
OUT_OF_ORDER = 2  # Prometheus's ErrOutOfOrderExemplar

_EMPTY = -1


@dataclass
class _SeriesEntry:
    oldest: int
    newest: int
    labels: Labels | None = field(default=None)  # decoded on first query


@dataclass
class ExemplarResult:
    """The exemplars of one series, oldest first: (label key, value, timestamp ms)."""

    series_labels: Labels
    exemplars: list[tuple[Labels, float, int]]


class CircularExemplarStorage:
    """At most ``max_exemplars`` exemplars over all series of one tenant (0 = disabled)."""

    def __init__(self, max_exemplars: int) -> None:
        self.max_exemplars = max(0, max_exemplars)
        n = self.max_exemplars
        self._series: list[bytes | None] = [None] * n  # series label key per slot
        self._labels: list[bytes] = [b""] * n          # exemplar label key per slot
        self._vals: list[float] = [0.0] * n
        self._ts: list[int] = [0] * n
        self._next: list[int] = [_EMPTY] * n           # newer slot of the same series
        self._index: dict[bytes, _SeriesEntry] = {}
        self._pos = 0
        self.count = 0  # slots in use

    @property
    def enabled(self) -> bool:
        return self.max_exemplars > 0

    def add(self, series: list[bytes], labels: list[bytes], vals: list[float],
            ts: list[int]) -> np.ndarray:
        """Append exemplars in order; returns ADDED/DUPLICATE/OUT_OF_ORDER per exemplar."""
        out = np.zeros(len(series), dtype=np.uint8)
        if not self.enabled:
            return out
        index = self._index
        for i, (skey, lkey, v, t) in enumerate(zip(series, labels, vals, ts)):
            entry = index.get(skey)
            if entry is not None:
                n = entry.newest
                if self._ts[n] == t and self._vals[n] == v and self._labels[n] == lkey:
                    out[i] = DUPLICATE
                    continue
                if t <= self._ts[n]:
                    out[i] = OUT_OF_ORDER
                    continue
            self._put(skey, lkey, v, t, entry)
        return out

    def _put(self, skey: bytes, lkey: bytes, v: float, t: int, entry: _SeriesEntry | None) -> None:
        pos = self._pos
        old = self._series[pos]
        if old is not None:  # overwrite the oldest slot of the ring
            prev = self._index[old]
            if self._next[pos] == _EMPTY:
                del self._index[old]
                if old == skey:
                    entry = None
            else:
                prev.oldest = self._next[pos]
        else:
            self.count += 1
        self._series[pos] = skey
        self._labels[pos] = lkey
        self._vals[pos] = v
        self._ts[pos] = t
        self._next[pos] = _EMPTY
        if entry is None:
            self._index[skey] = _SeriesEntry(pos, pos)
        else:
            self._next[entry.newest] = pos
            entry.newest = pos
        self._pos = (pos + 1) % self.max_exemplars

    def select(self, start: int, end: int, selectors: list[list[Matcher]]) -> list[ExemplarResult]:
        """Exemplars in [start, end] of series matching any selector, sorted by series labels
        (as Prometheus's Select)."""
        out = []
        for skey, entry in list(self._index.items()):
            if entry.labels is None:
                entry.labels = decode_labels_key(skey)
            if not any(matches_all(entry.labels, ms) for ms in selectors):
                continue
            found = []
            i = entry.oldest
            while i != _EMPTY:
                t = self._ts[i]
                if t > end:
                    break
                if t >= start:
                    found.append((decode_labels_key(self._labels[i]), self._vals[i], t))
                i = self._next[i]
            if found:
                out.append(ExemplarResult(entry.labels, found))
        out.sort(key=lambda r: r.series_labels)
        return out

    def time_range(self) -> tuple[int, int] | None:
        """Oldest and newest exemplar timestamps held (None when empty)."""
        if not self._index:
            return None
        lo = min(self._ts[e.oldest] for e in self._index.values())
        hi = max(self._ts[e.newest] for e in self._index.values())
        return lo, hi

    def all_oldest_first(self) -> tuple[list[bytes], list[bytes], list[float], list[int]]:
        """Every held exemplar in ring order (oldest first): what a checkpoint re-logs."""
        n = self.max_exemplars
        order = [(self._pos + k) % n for k in range(n)] if n else []
        order = [i for i in order if self._series[i] is not None]
        return ([self._series[i] for i in order], [self._labels[i] for i in order],  # type: ignore[misc]
                [self._vals[i] for i in order], [self._ts[i] for i in order])

