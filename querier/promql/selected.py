"""The series a selector read, laid end to end: what selectors and range functions work on.

Keeping every series' samples in one pair of arrays with offsets lets the vector selector's
lookup, stale-marker removal and range functions run over all series in a few numpy/C calls;
per-series arrays (views) are only made where a function goes series by series.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from querier.promql.types import SeriesBatch
from querier.promql.values import is_stale
from receiver.tsdb.labels import Labels

Row = tuple  # (labels, ts, vals, hists | None, start timestamps | None)


class Selected:
    """Series i is ``labels[i]`` with samples ``ts/vals[offs[i]:offs[i + 1]]`` (non-empty,
    sorted by labels); ``hists``/``sts`` are per-series arrays (or None per series), None as a
    whole when no series has any."""

    __slots__ = ("labels", "ts", "vals", "offs", "hists", "sts")

    def __init__(self, labels: list[Labels], ts: np.ndarray, vals: np.ndarray, offs: np.ndarray,
                 hists: list | None = None, sts: list | None = None) -> None:
        self.labels, self.ts, self.vals, self.offs = labels, ts, vals, offs
        self.hists, self.sts = hists, sts

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def floats_only(self) -> bool:
        return self.hists is None and self.sts is None

    def lens(self) -> np.ndarray:
        o = self.offs
        return o[1:] - o[:-1]  # np.diff's checks cost more than this on a few series

    def split(self, a: np.ndarray) -> list[np.ndarray]:
        """Per-series views of ``a`` (an array laid out like ``ts``); plain slices, several
        times cheaper per series than np.split."""
        o = self.offs.tolist()
        return [a[i:j] for i, j in zip(o, o[1:])]

    def rows(self) -> Iterator[Row]:
        """(labels, ts, vals, hists, sts) per series, for code that goes series by series."""
        n = len(self.labels)
        hs = self.hists or [None] * n
        st = self.sts or [None] * n
        return zip(self.labels, self.split(self.ts), self.split(self.vals), hs, st)


def from_rows(rows: list[Row]) -> Selected:
    """From per-series rows (non-empty, sorted by labels)."""
    if not rows:
        return Selected([], np.zeros(0, np.int64), np.zeros(0), np.zeros(1, np.int64))
    lens = np.fromiter((len(r[1]) for r in rows), dtype=np.int64, count=len(rows))
    offs = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    hists = [r[3] for r in rows]
    sts = [r[4] for r in rows]
    return Selected([r[0] for r in rows], np.concatenate([r[1] for r in rows]),
                    np.concatenate([r[2] for r in rows]), offs,
                    hists if any(h is not None for h in hists) else None,
                    sts if any(s is not None for s in sts) else None)


def from_batch(b: SeriesBatch, mint: int, maxt: int) -> Selected:
    """A store's decoded columns, samples outside [mint, maxt] and then empty series dropped."""
    ts, vals = np.asarray(b.ts, dtype=np.int64), np.asarray(b.vals, dtype=np.float64)
    offs = np.asarray(b.offs, dtype=np.int64)
    if len(offs) == 2:  # one series: its samples ascend, its ends are its bounds
        outside = len(ts) and (ts[0] < mint or ts[-1] > maxt)
    else:
        outside = len(ts) and (ts.min() < mint or ts.max() > maxt)
    if outside:
        keep = (ts >= mint) & (ts <= maxt)
        offs = _kept_offsets(keep, offs)
        ts, vals = ts[keep], vals[keep]
    return _drop_empty(Selected(list(b.labels), ts, vals, offs))


def without_stale(s: Selected) -> Selected:
    """Staleness markers removed (a range function never sees them), then empty series."""
    stale = is_stale(s.vals)
    if not stale.any():
        return _drop_empty(s)
    keep = ~stale
    hists, sts = s.hists, s.sts
    if hists is not None or sts is not None:
        per = s.split(keep)
        if hists is not None:
            hists = [None if h is None else h[k] for h, k in zip(hists, per)]
        if sts is not None:
            sts = [None if x is None else x[k] for x, k in zip(sts, per)]
    out = Selected(s.labels, s.ts[keep], s.vals[keep], _kept_offsets(keep, s.offs), hists, sts)
    return _drop_empty(out)


def _kept_offsets(keep: np.ndarray, offs: np.ndarray) -> np.ndarray:
    ck = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep, out=ck[1:])
    return ck[offs]


def _drop_empty(s: Selected) -> Selected:
    lens = s.lens()
    if np.count_nonzero(lens) == len(lens):  # offsets ascend: a non-zero length is > 0
        return s
    nz = lens > 0
    idx = np.flatnonzero(nz).tolist()
    offs = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lens[nz], out=offs[1:])
    def pick(xs: list | None) -> list | None:
        got = None if xs is None else [xs[i] for i in idx]
        return got if got is not None and any(x is not None for x in got) else None
    return Selected([s.labels[i] for i in idx], s.ts, s.vals, offs, pick(s.hists), pick(s.sts))
