"""Prometheus 3.14's extended range selectors (--enable-feature=promql-extended-range-selectors).

``x[r] anchored``: a function also sees the last sample at or before the window start (up to
one lookback delta back) and measures from it, without extrapolation. ``x[r] smoothed``: the
window boundaries are linearly interpolated between the samples around them (looking a
lookback delta beyond each side). ``x smoothed`` on an instant selector interpolates each
step's value between the samples around it.

Float series are evaluated vectorised over all windows of a batch of series; the windows'
geometry comes as index arrays (``Windows.first_after_start``, ``Windows.first_at_end``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from querier.promql import nhist
from querier.promql.rangefuncs import bounds, reduceat
from querier.promql.rangehist import count_pairs
from querier.promql.types import PromQLError
from querier.promql.values import get_label
from receiver.tsdb.labels import METRIC_NAME

ANCHORED, SMOOTHED = "anchored", "smoothed"
ANCHORED_SAFE = ("changes", "delta", "increase", "rate", "resets")
SMOOTHED_SAFE = ("delta", "increase", "rate")


@dataclass(frozen=True)
class Extended:
    """How a matrix selector's samples reach beyond its windows."""

    mode: str  # ANCHORED | SMOOTHED
    lookback: int  # ms

    def window(self, end: np.ndarray, rng: int) -> tuple[np.ndarray, int]:
        """(end, range) of the samples a function sees for windows (end - rng, end]."""
        if self.mode == SMOOTHED:
            return end + self.lookback, rng + 2 * self.lookback
        return end, rng + self.lookback


@dataclass
class ExtWindows:
    """The window geometry the extended functions read: the plain windows (end - rng, end] plus,
    per window, the index of the first sample after its start and of the first at/after its end."""

    end: np.ndarray
    rng: int
    eval_ts: np.ndarray
    ext: Extended
    first_after_start: np.ndarray
    first_at_end: np.ndarray


def selector_mode(vs) -> str | None:
    """ANCHORED, SMOOTHED or None for a vector selector of our parser's AST."""
    if vs.anchored:
        return ANCHORED
    return SMOOTHED if vs.smoothed else None


def check_function(name: str, mode: str) -> None:
    """Only functions that make sense of samples outside the window accept the modifiers."""
    safe = ANCHORED_SAFE if mode == ANCHORED else SMOOTHED_SAFE
    if name not in safe:
        raise PromQLError("execution", f"{mode} modifier can only be used with: {', '.join(safe)} - not with {name}")


def inner_bounds(ts: np.ndarray, end: np.ndarray, rng: int) -> tuple[np.ndarray, np.ndarray]:
    """Per window: index of the first sample after the window start, of the first at or after
    its end (``ts`` sorted; int timestamps, so "at or after end" is "after end - 1")."""
    return np.searchsorted(ts, end - rng, side="right"), np.searchsorted(ts, end - 1, side="right")


# -- floats, vectorised ---------------------------------------------------------------------
def _interpolate(ts, x, p1, p2, t, counter: bool) -> np.ndarray:
    y1, y2 = x[p1], x[p2]
    if counter:
        y1 = np.where(y2 < y1, 0.0, y1)
    with np.errstate(all="ignore"):
        return y1 + (y2 - y1) * (t - ts[p1]) / (ts[p2] - ts[p1])


def _ext_rate(ts, x, lo, hi, w, a, *, counter: bool, rate: bool):
    """Prometheus's extendedRate: right boundary minus left boundary (picked, or interpolated
    when smoothed) plus counter-reset corrections in between; no extrapolation."""
    smoothed = w.ext.mode == SMOOTHED
    top = max(len(x) - 1, 0)
    ok = hi > lo
    last = np.maximum(hi - 1, 0)
    first = np.maximum(lo, np.minimum(w.first_after_start, last) - 1)
    if smoothed:
        last = np.maximum(lo, np.minimum(w.first_at_end, last))
    rs, re = w.end - w.rng, w.end
    ok &= ts[last] > rs
    if smoothed:
        ok &= ts[first] <= re
    left, right = x[first], x[last]
    if smoothed:
        nxt = np.minimum(first + 1, top)
        left = np.where(ts[first] < rs, _interpolate(ts, x, first, nxt, rs, counter), left)
        prv = np.maximum(last - 1, 0)
        right = np.where((last > lo) & (ts[last] > re), _interpolate(ts, x, prv, last, re, counter), right)
    with np.errstate(all="ignore"):
        res = right - left
        if counter:
            res = res + _corrections(ts, x, first, last, left, right, rs, re)
        if rate:
            res = res / (w.rng / 1000.0)
    return res, ok


def _corrections(ts, x, first, last, left, right, rs, re) -> np.ndarray:
    """correctForCounterResets over the samples strictly inside the boundaries."""
    f = first + (ts[first] <= rs)
    l = last - (ts[last] >= re)
    inner = l >= f
    fc, lc = np.minimum(f, len(x) - 1), np.clip(l, 0, len(x) - 1)
    corr = np.where(inner & (x[fc] < left), left, 0.0)
    pair = np.where(x[1:] < x[:-1], x[:-1], 0.0)  # pair (j-1, j) stored at j-1
    corr = corr + np.where(inner & (l > f), reduceat(np.add, pair, fc, lc), 0.0)
    prev = np.where(inner, x[lc], left)
    return corr + np.where(right < prev, prev, 0.0)


def anchor_start(lo, hi, first_after_start) -> tuple[np.ndarray, np.ndarray]:
    """(first sample counted, has a sample after the window start): the anchor is the last
    sample at or before the window start, whatever its type."""
    return np.maximum(lo, first_after_start - 1), first_after_start < hi


def _pairs_counted(cond: np.ndarray, lo, hi, w):
    start, ok = anchor_start(lo, hi, w.first_after_start)
    C = np.concatenate([[0.0], np.cumsum(cond)])
    l = np.maximum(hi - 1, 0)
    return np.where(ok, C[l] - C[np.minimum(start, l)], 0.0), ok


def f_changes(ts, x, lo, hi, w, a):
    return _pairs_counted((x[1:] != x[:-1]) & ~(np.isnan(x[1:]) & np.isnan(x[:-1])), lo, hi, w)


def f_resets(ts, x, lo, hi, w, a):
    return _pairs_counted(x[1:] < x[:-1], lo, hi, w)


EXT_FUNCS = {"rate": partial(_ext_rate, counter=True, rate=True),
             "increase": partial(_ext_rate, counter=True, rate=False),
             "delta": partial(_ext_rate, counter=False, rate=False),
             "changes": f_changes, "resets": f_resets}


def extended_points(ts, x, hs, end: int, rng: int, ext: Extended):
    """An instant query's ``x[r] anchored|smoothed`` for one series (Prometheus's
    extendFloats): the window's samples framed by the boundary values at its start and end
    (picked, or interpolated when smoothed). None when nothing lies inside the window."""
    wend, wrng = ext.window(np.array([end], dtype=np.int64), rng)
    lo, hi = (int(b[0]) for b in bounds(ts, wend, wrng))
    if hi <= lo:
        return None
    if hs is not None and (hs[lo:hi] != None).any():  # noqa: E711
        raise PromQLError("execution", f"{ext.mode} modifier is not supported with histograms")
    t, v = ts[lo:hi], x[lo:hi]
    smoothed = ext.mode == SMOOTHED
    start = end - rng
    last = len(t) - 1
    first = max(0, int(np.searchsorted(t[:last], start, side="right")) - 1)
    if smoothed:
        last = int(np.searchsorted(t[:last], end - 1, side="right"))
    if t[last] <= start:
        return None
    left, right = v[first], v[last]
    if smoothed and t[first] < start:
        left = _interpolate(t, v, first, first + 1, start, False)
    if smoothed and last > 0 and t[last] > end:
        right = _interpolate(t, v, last - 1, last, end, False)
    first += int(t[first] <= start)
    last -= int(t[last] >= end)
    mid = slice(first, max(first, last + 1))
    return (np.concatenate([[start], t[mid], [end]]).astype(np.int64),
            np.concatenate([[left], v[mid], [right]]))


# -- series with native histograms: window by window ---------------------------------------
def hist_ext(ev, name: str, lbls, ts, x, hs, m):
    """One series holding histograms: (vals [T], present [T], hists [T] | None)."""
    T = len(m.end)
    wend, wrng = m.ext.window(m.end, m.rng)
    lo, hi = bounds(ts, wend, wrng)
    after_start, at_end = inner_bounds(ts, m.end, m.rng)
    vals = np.zeros(T)
    pres = np.zeros(T, bool)
    mname = get_label(lbls, METRIC_NAME)
    if name in ("changes", "resets"):
        start, ok = anchor_start(lo, hi, after_start)
        for t in np.nonzero(ok)[0]:
            ev.sh.check_deadline()
            vals[t] = count_pairs(name, x, hs, int(start[t]), int(hi[t]))
        return vals, ok, None
    hout = np.full(T, None, dtype=object)
    for t in np.nonzero(hi > lo)[0]:
        ev.sh.check_deadline()
        a, b = int(lo[t]), int(hi[t])
        kinds = hs[a:b] != None  # noqa: E711
        if kinds.all():
            h = _hist_rate(ev, name, ts[a:b], hs[a:b], int(after_start[t]) - a, int(at_end[t]) - a,
                           int(m.end[t]), m.rng, m.ext.mode == SMOOTHED, mname)
            if h is not None:
                hout[t], pres[t] = h, True
        elif kinds.any():
            ev.warn(nhist.mixed_floats(mname))
        else:
            w = ExtWindows(m.end[t:t + 1], m.rng, m.eval_ts[t:t + 1], m.ext, after_start[t:t + 1],
                           at_end[t:t + 1])
            r, ok = EXT_FUNCS[name](ts, x, lo[t:t + 1], hi[t:t + 1], w, None)
            vals[t], pres[t] = r[0], ok[0]
    return vals, pres, hout


def interpolate_hist(h1, t1: int, h2, t2: int, t: int, counter: bool):
    """Histogram at t between (t1, h1) and (t2, h2); a counter reset restarts from zero.
    Raises nhist.IncompatibleSchema for exponential vs custom buckets."""
    if t == t1:
        return h1.copy()
    if t == t2:
        return h2.copy()
    frac = (t - t1) / (t2 - t1)
    if counter and h2.detect_reset(h1):
        return h2.copy().mul(frac)
    r = h2.copy()
    r.add(h1, -1.0)
    r.mul(frac)
    r.add(h1, 1.0)
    return r


def _hist_rate(ev, name, ts, hs, after_start: int, at_end: int, end: int, rng: int, smoothed: bool, mname: str):
    """Prometheus's extendedHistogramRate over one window's histograms (all of them)."""
    counter, rate = name != "delta", name == "rate"
    n = len(hs)
    last = n - 1
    first = max(0, min(after_start, last) - 1)
    if smoothed:
        last = min(at_end, last)
    rs, re = end - rng, end
    if ts[last] <= rs or (smoothed and ts[first] > re):
        return None
    window = hs[first:last + 1]
    if len({h.custom for h in window}) > 1:
        ev.warn(nhist.mixed_schemas(mname))
        return None
    if counter and any(h.hint == nhist.GAUGE for h in window):
        ev.warn(f'this native histogram metric is not a counter: "{mname}"')
    try:
        if smoothed and ts[first] < rs:
            left = interpolate_hist(hs[first], ts[first], hs[first + 1], ts[first + 1], rs, counter)
        else:
            left = hs[first].copy()
        if smoothed and last > 0 and ts[last] > re:
            right = interpolate_hist(hs[last - 1], ts[last - 1], hs[last], ts[last], re, counter)
        else:
            right = hs[last].copy()
        if not counter and (left.hint != nhist.GAUGE or right.hint != nhist.GAUGE):
            ev.warn(f'this native histogram metric is not a gauge: "{mname}"')
        res = right.copy()
        _combine(ev, res, left, -1.0)
        if counter:
            corr = _hist_corrections(ev, ts, hs, first, last, left, right, rs, smoothed)
            if corr is not None:
                _combine(ev, res, corr, 1.0)
    except nhist.IncompatibleSchema:
        ev.warn(nhist.mixed_schemas(mname))
        return None
    if rate:
        res.div(rng / 1000.0)
    res.hint = nhist.GAUGE
    return res.compact()


def _combine(ev, dst, other, sign: float) -> None:
    _, reconciled = dst.add(other, sign)
    if reconciled:
        ev.info(f"mismatched custom buckets were reconciled during {'addition' if sign > 0 else 'subtraction'}")


def _hist_corrections(ev, ts, hs, first: int, last: int, left, right, rs: int, smoothed: bool):
    """correctForCounterResetsHistogram: the boundaries stand for hs[first] and hs[last]."""
    start, prev = first + 1, left
    if smoothed and ts[first] < rs and hs[first + 1].detect_reset(hs[first]):
        prev, start = hs[first + 1], start + 1  # the left interpolation already spanned it
    stop = last - 1
    if start > stop + 1:
        return None
    corr = None
    for h in list(hs[start:stop + 1]) + [right]:
        if h.detect_reset(prev):
            if corr is None:
                corr = prev.copy()
            else:
                _combine(ev, corr, prev, 1.0)
        prev = h
    return corr


# -- the smoothed instant selector ---------------------------------------------------------
def smoothed_row(ev, ts, v, hs, E: np.ndarray, lb: int, mname: str):
    """One series' values at the steps E, interpolated between the samples around each step
    within a lookback on either side: (vals [T], present [T], hists [T] | None)."""
    n = len(ts)
    i = np.searchsorted(ts, E, side="left")  # first sample at or after the step
    ic = np.minimum(i, max(n - 1, 0))
    pc = np.maximum(i - 1, 0)
    has_next = (i < n) & (ts[ic] <= E + lb)
    has_prev = (i > 0) & (ts[pc] > E - lb)
    exact = has_next & (ts[ic] == E)
    pres = exact | has_prev
    with np.errstate(all="ignore"):
        mid = v[pc] + (v[ic] - v[pc]) * (E - ts[pc]) / (ts[ic] - ts[pc])
    vals = np.where(exact, v[ic], np.where(has_next, mid, v[pc]))
    if hs is None:
        return vals, pres, None
    hm = np.concatenate([[0], np.cumsum(hs != None)])  # noqa: E711
    lo, hi = bounds(ts, E + lb, 2 * lb)
    nh = hm[hi] - hm[lo]
    mixed = (nh > 0) & (nh < hi - lo)
    if mixed.any():
        ev.warn(nhist.mixed_floats(mname))
    ok = pres & ~mixed
    hout = np.full(len(E), None, dtype=object)
    for t in np.nonzero(ok & (nh > 0))[0]:
        a, b = int(pc[t]), int(ic[t])
        if exact[t]:
            hout[t] = hs[b].copy()
        elif has_next[t]:
            h1, h2 = hs[a], hs[b]
            if h1.custom != h2.custom:
                ev.warn(nhist.mixed_schemas(mname))
                ok[t] = False
                continue
            counter = h1.hint != nhist.GAUGE or h2.hint != nhist.GAUGE
            hout[t] = interpolate_hist(h1, int(ts[a]), h2, int(ts[b]), int(E[t]), counter)
        else:
            h = hs[a].copy()
            h.hint = nhist.UNKNOWN
            hout[t] = h
    return np.where(nh > 0, 0.0, vals), ok, hout
