"""Start timestamps (``--enable-feature=use-start-timestamps``) in rate, increase, irate and resets.

A sample's start timestamp (ST, 0 = unknown) says since when its counter has counted: an ST
after the previous sample's time is a reset even where the value did not drop (deltas, resets
between scrapes), and an ST inside the window replaces the left extrapolation with a zero
at the ST. Series without STs never come here, so they keep the plain vectorised path.
Everything below works on one series, vectorised across its windows.
"""
from __future__ import annotations

import numpy as np

from querier.promql.rangefuncs import bounds, reduceat
from querier.promql.types import USE_START_TIMESTAMPS
from querier.promql.values import Vec, get_label
from receiver.tsdb.labels import METRIC_NAME

ST_FUNCS = frozenset(("rate", "increase", "irate", "resets"))
OVERLAP_WARNING = "sample has start time that overlaps with previous sample timestamp"


def st_reset(pst: np.ndarray, pt: np.ndarray, cst: np.ndarray, ct: np.ndarray) -> np.ndarray:
    """Prometheus's isStartTimestampReset, elementwise: the current sample (ST cst, time ct)
    restarted its counter after the previous one (ST pst, time pt)."""
    known = (cst != 0) & (cst < ct)  # ST == T is OTel's "unknown start", ST > T is invalid
    at_prev = (cst == pt) & (pst <= pt) & (pst != 0) & (pst != pt)  # a delta, not an unknown start
    return known & ((cst > pt) | at_prev)


def st_overlap(pst: np.ndarray, pt: np.ndarray, cst: np.ndarray) -> np.ndarray:
    """Prometheus's checkStartTimeOverlap: the current ST reaches back before the previous
    sample without being the same cumulative start."""
    return (cst != 0) & (cst < pt) & (cst != pst)


def pair_resets(ts: np.ndarray, x: np.ndarray, st: np.ndarray) -> np.ndarray:
    """bool [len-1]: pair (j-1, j) is a counter reset, by value or by start timestamp."""
    return (x[1:] < x[:-1]) | st_reset(st[:-1], ts[:-1], st[1:], ts[1:])


def overlapping_windows(ts: np.ndarray, st: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> int:
    """How many windows hold a pair of samples whose start times overlap (one warning each)."""
    if len(ts) < 2:
        return 0
    c = np.concatenate([[0], np.cumsum(st_overlap(st[:-1], ts[:-1], st[1:]))])
    f, l = np.minimum(lo, len(ts) - 1), np.maximum(hi - 1, 0)
    return int(((hi - lo >= 2) & (c[l] - c[np.minimum(f, l)] > 0)).sum())


def extrapolated(ts, x, st, lo, hi, w, rate: bool):
    """rate/increase with start timestamps (Prometheus's extrapolatedRate for counters)."""
    n = hi - lo
    f = np.minimum(lo, len(x) - 1)
    l = np.maximum(hi - 1, 0)
    fv, lv, ft, lt, st0 = x[f], x[l], ts[f], ts[l], st[f]
    range_start = w.end - w.rng
    with np.errstate(all="ignore"):
        res = lv - fv
        if len(x) > 1:
            corr = np.where(pair_resets(ts, x, st), x[:-1], 0.0)
            res = res + np.where(n >= 2, reduceat(np.add, corr, f, l), 0.0)
        sampled = (lt - ft) / 1000.0
        avg = np.where(n >= 2, sampled / np.maximum(n - 1, 1), 0.0)
        thr = avg * 1.1
        dstart = (ft - range_start) / 1000.0
        dend = (w.end - lt) / 1000.0
        # the first sample's ST inside the window: a zero there instead of extrapolating left
        from_st = (n >= 1) & (st0 != 0) & (st0 > range_start) & (st0 < ft)
        dstart = np.where(dstart >= thr, avg / 2, dstart)
        dz = sampled * (fv / res)
        dstart = np.where((res > 0) & (fv >= 0) & (dz < dstart), dz, dstart)
        dstart = np.where(from_st, 0.0, dstart)
        sampled = np.where(from_st, (lt - st0) / 1000.0, sampled)
        res = np.where(from_st, res + fv, res)
        dend = np.where(dend >= thr, avg / 2, dend)
        factor = np.where(sampled != 0, (sampled + dstart + dend) / sampled, 1.0)
        if rate:
            factor = factor / (w.rng / 1000.0)
        return res * factor, (n >= 2) | from_st


def irate(ts, x, st, lo, hi):
    """irate: the last two samples of each window; a reset (by value or ST) keeps the last value."""
    ok = (hi - lo) >= 2
    if len(x) < 2:
        return np.zeros(len(lo)), ok & False
    l = np.maximum(hi - 1, 1)
    p = l - 1
    with np.errstate(all="ignore"):
        reset = (x[l] < x[p]) | st_reset(st[p], ts[p], st[l], ts[l])
        r = np.where(reset, x[l], x[l] - x[p])
        dt = (ts[l] - ts[p]).astype(np.float64)
        return r / (dt / 1000.0), ok & (dt != 0)


def resets(ts, x, st, lo, hi):
    ok = hi > lo
    if len(x) < 2:
        return np.zeros(len(lo)), ok
    c = np.concatenate([[0.0], np.cumsum(pair_resets(ts, x, st))])
    l = np.maximum(hi - 1, 0)
    return np.where(ok, c[l] - c[np.minimum(lo, l)], 0.0), ok


def float_row(name: str, ts, x, st, lo, hi, w):
    """(values, present, overlapping windows) of ST-aware ``name`` over one float series."""
    if name == "irate":
        r, ok = irate(ts, x, st, lo, hi)
        return r, ok, 0
    if name == "resets":
        r, ok = resets(ts, x, st, lo, hi)
        return r, ok, 0
    r, ok = extrapolated(ts, x, st, lo, hi, w, name == "rate")
    return r, ok, overlapping_windows(ts, st, lo, hi)


def overlap_message(metric: str, count: int) -> str:
    """Prometheus merges one warning per series and step into one with a count."""
    more = f" ({count} occurrences)" if count > 1 else ""
    return f'{OVERLAP_WARNING} for metric "{metric}"{more}'


def float_rows(ev, name: str, m, rows: list[int], vals: np.ndarray, pres: np.ndarray) -> None:
    """ST-aware ``name`` over the float series ``rows`` of matrix ``m`` (each with STs), written
    into vals/pres; overlap warnings are counted per metric name as Prometheus merges them."""
    overlaps: dict[str, int] = {}
    for i in rows:
        ev.sh.check_deadline()
        lo, hi = bounds(m.ts[i], m.end, m.rng)
        r, ok, bad = float_row(name, m.ts[i], m.vals[i], m.sts[i], lo, hi, m)
        vals[i], pres[i] = r, ok
        if bad:
            mn = get_label(m.labels[i], METRIC_NAME)
            overlaps[mn] = overlaps.get(mn, 0) + bad
    for mn, count in overlaps.items():
        ev.warn(overlap_message(mn, count))


def start_timestamp(ev, v: Vec, of_selector: bool) -> Vec:
    """start_timestamp(v): each sample's start time in seconds (0 when unknown). Only a plain
    selector carries start timestamps, and only with use-start-timestamps: else empty."""
    if not of_selector or USE_START_TIMESTAMPS not in ev.sh.opts.features:
        keep = np.zeros(len(v.labels), dtype=bool)
        return Vec([], v.vals[keep], v.present[keep], keep[keep])
    st = v.sample_st if v.sample_st is not None else np.zeros(v.vals.shape, dtype=np.int64)
    return Vec(v.labels, st / 1000.0, v.present, np.ones(len(v.labels), dtype=bool))
