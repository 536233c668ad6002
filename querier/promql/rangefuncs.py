"""Functions over range vectors, vectorised across steps per series.

Each window is (end - range, end]; ``lo``/``hi`` are its sample index bounds found with
searchsorted, so sums/min/max use ufunc.reduceat over (lo, hi) pairs, counter corrections
use prefix sums, and order statistics use one gathered, segment-sorted array.
"""
from __future__ import annotations

import numpy as np

from querier.promql._rangec import extrapolated, window_bounds
from querier.promql.aggregate import needs_kahan, quantile_sorted


def bounds(ts: np.ndarray, end: np.ndarray, rng: int) -> tuple[np.ndarray, np.ndarray]:
    return np.searchsorted(ts, end - rng, side="right"), np.searchsorted(ts, end, side="right")


class Windows:
    """The window geometry range functions read (``end``, ``rng``, ``eval_ts``), for a batch of
    series laid end to end: per-step arrays repeated once per series."""

    __slots__ = ("end", "rng", "eval_ts")

    def __init__(self, end: np.ndarray, rng: int, eval_ts: np.ndarray) -> None:
        self.end, self.rng, self.eval_ts = end, rng, eval_ts


def batch_bounds(ts: np.ndarray, offs: np.ndarray, end: np.ndarray, rng: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``bounds`` of every step's window in every series at once, for series whose (sorted)
    timestamps are laid end to end in ``ts``, series i at [offs[i], offs[i+1]) (offs from 0 to
    len(ts)): windows are series-major (series i, step j at i*T + j) and index ``ts``. One C
    pass per series (its samples walked once as the steps ascend)."""
    lo, hi = window_bounds(_i64(ts), _i64(offs), _i64(end), int(rng))
    return np.frombuffer(lo, dtype=np.int64), np.frombuffer(hi, dtype=np.int64)


def _i64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def reduceat(uf, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """uf-reduction of x[lo:hi] per window; garbage where lo == hi (callers mask it)."""
    a = np.append(x, 0.0)
    idx = np.empty(2 * len(lo), dtype=np.intp)
    idx[0::2] = lo
    idx[1::2] = hi
    with np.errstate(all="ignore"):
        return uf.reduceat(a, idx)[0::2]


def gather(lo: np.ndarray, hi: np.ndarray):
    """Flat indices of every window's samples, their window ids, and window sizes."""
    n = hi - lo
    starts = np.cumsum(n) - n
    seg = np.repeat(np.arange(len(lo)), n)
    flat = np.arange(int(n.sum())) - starts[seg] + lo[seg]
    return flat, seg, n


def _sorted_windows(v: np.ndarray, seg: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Each window's values (``v`` grouped by window id ``seg``, ``n`` per window) sorted as Go
    sorts float64s -- NaN first -- and padded with +Inf into a [widest, W] array. Sorting rows of
    a padded array is one C sort per window; a global lexsort was ~20x slower."""
    W = len(n)
    mx = max(int(n.max()) if W else 0, 1)
    out = np.full((W, mx), np.inf)
    if len(v):
        pos = np.arange(len(v)) - (np.cumsum(n) - n)[seg]
        nan = np.isnan(v)
        out[seg, pos] = np.where(nan, -np.inf, v)
        out.sort(axis=1)
        if nan.any():
            first = np.bincount(seg[nan], minlength=W)
            out[np.arange(mx)[None, :] < first[:, None]] = np.nan
    return out.T


def _seg_sorted(x: np.ndarray, lo, hi):
    """Per-window sorted values padded into a [max_n, W] array, and the window sizes."""
    flat, seg, n = gather(lo, hi)
    return _sorted_windows(x[flat], seg, n), n


def _nonempty(lo, hi, k: int = 1):
    return (hi - lo) >= k


def kahan_inc(inc: np.ndarray, s: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prometheus's kahanSumInc (Neumaier's variant), elementwise."""
    t = s + inc
    c = np.where(np.isinf(t), 0.0,
                 np.where(np.abs(s) >= np.abs(inc), c + ((s - t) + inc), c + ((inc - t) + s)))
    return t, c


def window_positions(lo: np.ndarray, hi: np.ndarray, last: int):
    """(index into the samples, live mask) of the k-th sample of every window, k = 0, 1, ...:
    for recurrences that must run in sample order, vectorised across windows instead of steps."""
    for k in range(int((hi - lo).max()) if len(lo) else 0):
        idx = lo + k
        yield np.minimum(idx, last), idx < hi


def kahan_windows(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Kahan-compensated window sums, iterating over window positions (not steps)."""
    s = np.zeros(len(lo))
    c = np.zeros(len(lo))
    with np.errstate(all="ignore"):
        for idx, live in window_positions(lo, hi, len(x) - 1):
            s, c = kahan_inc(np.where(live, x[idx], 0.0), s, c)
    return s + c


def window_sum(x, lo, hi):
    return kahan_windows(x, lo, hi) if needs_kahan(x) else reduceat(np.add, x, lo, hi)


def f_sum(ts, x, lo, hi, m, a):
    return window_sum(x, lo, hi), _nonempty(lo, hi)


def f_count(ts, x, lo, hi, m, a):
    return (hi - lo).astype(np.float64), _nonempty(lo, hi)


def f_avg(ts, x, lo, hi, m, a):
    n = hi - lo
    with np.errstate(all="ignore"):
        r = window_sum(x, lo, hi) / n
        bad = ~np.isfinite(r) & _nonempty(lo, hi)
        if bad.any() and np.isfinite(x).all():
            flat, seg, _ = gather(lo, hi)
            alt = np.bincount(seg, weights=x[flat] / n[seg], minlength=len(lo))
            r = np.where(bad, alt, r)
    return r, n > 0


def f_min(ts, x, lo, hi, m, a):
    return reduceat(np.fmin, x, lo, hi), _nonempty(lo, hi)


def f_max(ts, x, lo, hi, m, a):
    return reduceat(np.fmax, x, lo, hi), _nonempty(lo, hi)


def f_last(ts, x, lo, hi, m, a):
    return x[np.maximum(hi - 1, 0)] if len(x) else np.zeros(len(lo)), _nonempty(lo, hi)


def f_first(ts, x, lo, hi, m, a):
    return x[np.minimum(lo, len(x) - 1)], _nonempty(lo, hi)


def f_ts_first(ts, x, lo, hi, m, a):
    return ts[np.minimum(lo, len(x) - 1)] / 1000.0, _nonempty(lo, hi)


def f_ts_last(ts, x, lo, hi, m, a):
    return ts[np.maximum(hi - 1, 0)] / 1000.0, _nonempty(lo, hi)


def f_present(ts, x, lo, hi, m, a):
    return np.ones(len(lo)), _nonempty(lo, hi)


def _var(x, lo, hi):
    """Population variance per window by Prometheus's own recurrence (Welford's update with
    Kahan-compensated mean and sum of squares, in sample order), so answers agree to the digit."""
    W = len(lo)
    count, mean, cmean, aux, caux = (np.zeros(W) for _ in range(5))
    with np.errstate(all="ignore"):
        for idx, live in window_positions(lo, hi, len(x) - 1):
            v = x[idx]
            count = count + live
            delta = v - (mean + cmean)
            m2, c2 = kahan_inc(delta / count, mean, cmean)
            mean, cmean = np.where(live, m2, mean), np.where(live, c2, cmean)
            a2, ca2 = kahan_inc(delta * (v - (mean + cmean)), aux, caux)
            aux, caux = np.where(live, a2, aux), np.where(live, ca2, caux)
        return (aux + caux) / count


def f_stdvar(ts, x, lo, hi, m, a):
    return _var(x, lo, hi), _nonempty(lo, hi)


def f_stddev(ts, x, lo, hi, m, a):
    return np.sqrt(_var(x, lo, hi)), _nonempty(lo, hi)


def f_quantile(ts, x, lo, hi, m, a):
    srt, n = _seg_sorted(x, lo, hi)
    return quantile_sorted(srt, n, a[0]), _nonempty(lo, hi)


def f_mad(ts, x, lo, hi, m, a):
    srt, n = _seg_sorted(x, lo, hi)
    med = quantile_sorted(srt, n, 0.5)
    flat, seg, _ = gather(lo, hi)
    out = _sorted_windows(np.abs(x[flat] - med[seg]), seg, n)
    has_nan = reduceat(np.add, np.isnan(x).astype(np.float64), lo, hi) > 0
    return np.where(has_nan, np.nan, quantile_sorted(out, n, 0.5)), _nonempty(lo, hi)


def _pair_prefix(cond: np.ndarray) -> np.ndarray:
    """C[i] = number (or sum) of marks on pairs (j-1, j) with j <= i."""
    return np.concatenate([[0.0], np.cumsum(cond)])


def f_changes(ts, x, lo, hi, m, a):
    ch = (x[1:] != x[:-1]) & ~(np.isnan(x[1:]) & np.isnan(x[:-1]))
    C = _pair_prefix(ch)
    ok = _nonempty(lo, hi)
    l = np.maximum(hi - 1, 0)
    return np.where(ok, C[l] - C[np.minimum(lo, l)], 0.0), ok


def f_resets(ts, x, lo, hi, m, a):
    C = _pair_prefix(x[1:] < x[:-1])
    ok = _nonempty(lo, hi)
    l = np.maximum(hi - 1, 0)
    return np.where(ok, C[l] - C[np.minimum(lo, l)], 0.0), ok


def _extrapolated(ts, x, lo, hi, m, counter: bool, rate: bool):
    """Prometheus's extrapolatedRate for every window at once, in C (one pass over the windows,
    reset corrections added in sample order as Prometheus adds them)."""
    end = np.broadcast_to(np.asarray(m.end, dtype=np.int64), lo.shape)
    r, ok = extrapolated(_i64(ts), np.ascontiguousarray(x, dtype=np.float64), _i64(lo), _i64(hi),
                         _i64(end), int(m.rng), counter, rate)
    return np.frombuffer(r, dtype=np.float64), np.frombuffer(ok, dtype=np.bool_)


def f_rate(ts, x, lo, hi, m, a):
    return _extrapolated(ts, x, lo, hi, m, True, True)


def f_increase(ts, x, lo, hi, m, a):
    return _extrapolated(ts, x, lo, hi, m, True, False)


def f_delta(ts, x, lo, hi, m, a):
    return _extrapolated(ts, x, lo, hi, m, False, False)


def _instant(ts, x, lo, hi, rate: bool):
    ok = (hi - lo) >= 2
    l = np.maximum(hi - 1, 1) if len(x) > 1 else np.zeros_like(hi)
    p = np.maximum(l - 1, 0)
    lv, pv = x[l], x[p]
    with np.errstate(all="ignore"):
        r = lv - pv
        if rate:
            r = np.where(lv < pv, lv, r)
        dt = (ts[l] - ts[p]).astype(np.float64)
        ok &= dt != 0
        if rate:
            r = r / (dt / 1000.0)
    return r, ok


def f_irate(ts, x, lo, hi, m, a):
    return _instant(ts, x, lo, hi, True)


def f_idelta(ts, x, lo, hi, m, a):
    return _instant(ts, x, lo, hi, False)


def _linreg(ts, x, lo, hi, t0):
    """Least-squares slope/intercept per window, x in seconds from t0 (per window), computed as
    Prometheus's linearRegression does -- Kahan-compensated sums in sample order -- so answers
    agree to the last digit. A window of one constant value has slope 0 and that value as
    intercept; both are NaN when the constant is infinite."""
    W = len(lo)
    z = np.zeros(W)
    sx, cx, sy, cy, sxy, cxy, sx2, cx2 = (z.copy() for _ in range(8))
    first = x[np.minimum(lo, len(x) - 1)]
    const = np.ones(W, bool)
    with np.errstate(all="ignore"):
        for idx, live in window_positions(lo, hi, len(x) - 1):
            v = x[idx]
            const &= ~live | (v == first)
            xs = np.where(live, (ts[idx] - t0) / 1e3, 0.0)
            v = np.where(live, v, 0.0)
            sx, cx = kahan_inc(xs, sx, cx)
            sy, cy = kahan_inc(v, sy, cy)
            sxy, cxy = kahan_inc(xs * v, sxy, cxy)
            sx2, cx2 = kahan_inc(xs * xs, sx2, cx2)
        n = (hi - lo).astype(np.float64)
        sx, sy, sxy, sx2 = sx + cx, sy + cy, sxy + cxy, sx2 + cx2
        slope = (sxy - sx * sy / n) / (sx2 - sx * sx / n)
        icpt = sy / n - slope * sx / n
    inf = const & np.isinf(first)
    slope = np.where(inf, np.nan, np.where(const, 0.0, slope))
    icpt = np.where(inf, np.nan, np.where(const, first, icpt))
    return slope, icpt


def f_deriv(ts, x, lo, hi, m, a):
    slope, _ = _linreg(ts, x, lo, hi, ts[np.minimum(lo, len(ts) - 1)])
    return slope, _nonempty(lo, hi, 2)


def f_predict_linear(ts, x, lo, hi, m, a):
    slope, icpt = _linreg(ts, x, lo, hi, m.eval_ts)
    return slope * a[0] + icpt, _nonempty(lo, hi, 2)


def f_holt(ts, x, lo, hi, m, a):
    """Double exponential smoothing. The recurrence is sequential along a window, so iterate over
    window positions with every step's window advanced at once (as kahan_windows does)."""
    sf, tf = np.broadcast_to(a[0], lo.shape), np.broadcast_to(a[1], lo.shape)
    ok = _nonempty(lo, hi, 2)
    if not ok.any():
        return np.zeros(len(lo)), ok
    n, last = hi - lo, len(x) - 1
    s1 = x[np.minimum(lo, last)]
    s0 = s1
    b = x[np.minimum(lo + 1, last)] - s1
    with np.errstate(all="ignore"):
        for i in range(1, int(n.max())):
            live = i < n
            if i > 1:
                b = np.where(live, tf * (s1 - s0) + (1 - tf) * b, b)
            nxt = sf * x[np.minimum(lo + i, last)] + (1 - sf) * (s1 + b)
            s0, s1 = np.where(live, s1, s0), np.where(live, nxt, s1)
    return np.where(ok, s1, 0.0), ok


def f_ts_min(ts, x, lo, hi, m, a):
    return _ts_of(ts, x, lo, hi, np.fmin)


def f_ts_max(ts, x, lo, hi, m, a):
    return _ts_of(ts, x, lo, hi, np.fmax)


def _ts_of(ts, x, lo, hi, uf):
    ext = reduceat(uf, x, lo, hi)
    flat, seg, n = gather(lo, hi)
    hit = x[flat] == ext[seg]
    t = np.full(len(lo), -1, dtype=np.int64)
    np.maximum.at(t, seg[hit], ts[flat][hit])
    return t / 1000.0, _nonempty(lo, hi)


RANGE_FUNCS = {
    "sum_over_time": f_sum, "count_over_time": f_count, "avg_over_time": f_avg,
    "min_over_time": f_min, "max_over_time": f_max, "last_over_time": f_last,
    "first_over_time": f_first, "present_over_time": f_present, "stddev_over_time": f_stddev,
    "stdvar_over_time": f_stdvar, "quantile_over_time": f_quantile, "mad_over_time": f_mad,
    "changes": f_changes, "resets": f_resets, "rate": f_rate, "increase": f_increase,
    "delta": f_delta, "irate": f_irate, "idelta": f_idelta, "deriv": f_deriv,
    "predict_linear": f_predict_linear, "holt_winters": f_holt,
    "double_exponential_smoothing": f_holt, "ts_of_last_over_time": f_ts_last, "ts_of_first_over_time": f_ts_first,
    "ts_of_min_over_time": f_ts_min, "ts_of_max_over_time": f_ts_max,
}
KEEP_NAME = {"last_over_time", "first_over_time"}
# Functions that gather() every step's window into one array (size up to widest window x steps).
WINDOW_MATERIALIZING = frozenset((
    "avg_over_time", "stddev_over_time", "stdvar_over_time", "quantile_over_time", "mad_over_time",
    "deriv", "predict_linear", "ts_of_min_over_time", "ts_of_max_over_time"))
