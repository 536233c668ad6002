"""Range-vector functions over series that hold native histograms.

Only series with histogram samples come here; they are evaluated window by window in Python
(histograms are Python objects), while float-only series stay on the vectorised path in
rangefuncs. Float samples of a mixed series are handed back to the vectorised functions.
"""
from __future__ import annotations

import numpy as np

from querier.promql import nhist
from querier.promql.rangefuncs import RANGE_FUNCS, bounds
from querier.promql.values import get_label
from receiver.tsdb.labels import METRIC_NAME

ALL_SAMPLES = {"count_over_time", "present_over_time", "ts_of_last_over_time", "ts_of_first_over_time"}
PICK = {"last_over_time", "first_over_time"}
FLOAT_ONLY = {"min_over_time", "max_over_time", "stddev_over_time", "stdvar_over_time", "quantile_over_time",
              "mad_over_time", "deriv", "predict_linear", "holt_winters", "double_exponential_smoothing",
              "ts_of_min_over_time", "ts_of_max_over_time"}


def hist_range(ev, name: str, lbls, ts, x, hs, m, extra, sts=None):
    """Evaluate one series with histograms: returns (vals [T], present [T], hists [T] | None).
    ``sts``: the samples' start timestamps (rate/increase/irate/resets with use-start-timestamps)."""
    T = len(m.end)
    lo, hi = bounds(ts, m.end, m.rng)
    hmask = hs != None  # noqa: E711
    hc = np.concatenate([[0], np.cumsum(hmask)])
    nh = hc[hi] - hc[lo]
    nf = (hi - lo) - nh
    mname = get_label(lbls, METRIC_NAME)
    vals = np.zeros(T)
    pres = np.zeros(T, bool)
    hout = np.full(T, None, dtype=object)
    if name in ALL_SAMPLES:
        r, ok = RANGE_FUNCS[name](ts, x, lo, hi, m, extra)
        return r, ok, None
    if name in PICK:
        r, ok = RANGE_FUNCS[name](ts, x, lo, hi, m, extra)
        k = np.maximum(hi - 1, 0) if name == "last_over_time" else np.minimum(lo, len(ts) - 1)
        for t in np.nonzero(ok)[0]:
            hout[t] = hs[k[t]]
        return r, ok, hout
    fm = ~hmask
    tf, xf = ts[fm], x[fm]
    if name in FLOAT_ONLY:
        if ((nf > 0) & (nh > 0)).any():
            ev.info(f'ignored histograms in a range containing both floats and histograms for metric name "{mname}"')
        if len(tf):
            lf, hf = bounds(tf, m.end, m.rng)
            r, ok = RANGE_FUNCS[name](tf, xf, lf, hf, m, extra)
            return r, ok & (nf > 0), None
        return vals, pres, None
    if name in ("changes", "resets"):
        for t in np.nonzero(hi > lo)[0]:
            vals[t] = count_pairs(name, x, hs, int(lo[t]), int(hi[t]), sts, ts)
            pres[t] = True
        return vals, pres, None
    mixed = (nf > 0) & (nh > 0)
    if mixed.any() and name not in ("irate", "idelta"):
        ev.warn(nhist.mixed_floats(mname))
    if len(tf) and name not in ("irate", "idelta"):
        lf, hf = bounds(tf, m.end, m.rng)
        r, ok = RANGE_FUNCS[name](tf, xf, lf, hf, m, extra)
        sel = ok & (nh == 0)
        vals[sel], pres[sel] = r[sel], True
    for t in range(T):
        if name in ("irate", "idelta"):
            if hi[t] - lo[t] < 2:
                continue
            k1, k0 = hi[t] - 1, hi[t] - 2
            if hs[k1] is None and hs[k0] is None:
                r, ok = RANGE_FUNCS[name](ts, x, lo[t:t + 1], hi[t:t + 1], m, extra)
                vals[t], pres[t] = r[0], bool(ok[0])
                continue
            if (hs[k1] is None) != (hs[k0] is None):
                ev.warn(nhist.mixed_floats(mname))
                continue
            res = _instant_hist(ev, name == "irate", hs[k0], hs[k1], ts[k0], ts[k1], mname,
                                sts is not None and _st_reset_at(sts, ts, k1))
            if res is not None:
                hout[t], pres[t] = res, True
            continue
        if nh[t] == 0 or mixed[t]:
            continue
        pts = [(ts[k], hs[k]) for k in range(lo[t], hi[t])]
        if name == "sum_over_time" or name == "avg_over_time":
            res = _sum_hists(ev, [h for _, h in pts], name == "avg_over_time", mname)
        else:
            res = _rate_hist(ev, name, pts, m, t, mname, None if sts is None else sts[lo[t]:hi[t]])
        if res is not None:
            hout[t], pres[t] = res, True
    return vals, pres, hout


def count_pairs(name: str, x, hs, a: int, b: int, sts=None, ts=None) -> int:
    """changes/resets over samples a..b-1 of a series mixing floats and histograms (a switch
    between the two counts as one; with start timestamps ``sts``, so does a reset they show)."""
    c = 0
    for k in range(a + 1, b):
        p, q = hs[k - 1], hs[k]
        if (p is None) != (q is None):
            c += 1
        elif sts is not None and name == "resets" and _st_reset_at(sts, ts, k):
            c += 1
        elif p is None:
            if name == "changes":
                c += x[k] != x[k - 1] and not (x[k] != x[k] and x[k - 1] != x[k - 1])
            else:
                c += x[k] < x[k - 1]
        elif name == "changes":
            c += not q.equals(p)
        else:
            c += q.detect_reset(p)
    return c


def _sum_hists(ev, hs: list, avg: bool, mname: str):
    from querier.promql.aggregate import annotate_sum
    res, notes = nhist.sum_hists(hs, avg)
    annotate_sum(ev, notes, mname)
    return res


def _st_reset_at(sts, ts, k: int) -> bool:
    """Sample k restarted its counter after sample k-1, by their start timestamps."""
    from querier.promql.startts import st_reset
    return bool(st_reset(sts[k - 1], ts[k - 1], sts[k], ts[k]))


def _instant_hist(ev, is_rate: bool, h0, h1, t0: int, t1: int, mname: str, st_reset: bool = False):
    if t1 == t0:
        return None
    res = h1.copy()
    if is_rate and (h1.hint == nhist.GAUGE or h0.hint == nhist.GAUGE):
        ev.warn(f'this native histogram metric is not a counter: "{mname}"')
    if not is_rate and (h1.hint != nhist.GAUGE or h0.hint != nhist.GAUGE):
        ev.warn(f'this native histogram metric is not a gauge: "{mname}"')
    if not is_rate or not (st_reset or h1.detect_reset(h0)):
        try:
            _, rec = res.add(h0, -1.0)
        except nhist.IncompatibleSchema:
            ev.warn(nhist.mixed_schemas(mname))
            return None
        if rec:
            ev.info("mismatched custom buckets were reconciled during subtraction")
    res.hint = nhist.GAUGE
    res.compact()
    if is_rate:
        res.div((t1 - t0) / 1000.0)
    return res


def _hist_rate_core(ev, pts: list, is_counter: bool, mname: str, sts=None):
    """Prometheus's histogramRate: last minus first, plus counter-reset corrections (a start
    timestamp after the previous sample is a reset too)."""
    ts = [t for t, _ in pts]
    st_reset = (lambda k: _st_reset_at(sts, ts, k)) if sts is not None else (lambda k: False)
    prev = pts[0][1]
    last = pts[-1][1]
    custom = prev.custom
    if is_counter and (prev.hint == nhist.GAUGE or last.hint == nhist.GAUGE):
        ev.warn(f'this native histogram metric is not a counter: "{mname}"')
    if is_counter:
        second = pts[1][1]
        if st_reset(1) or second.detect_reset(prev):
            prev = nhist.H(schema=second.schema, cv=second.cv)
            custom = second.custom
    if last.custom != custom:
        ev.warn(nhist.mixed_schemas(mname))
        return None
    min_schema = min(last.schema, prev.schema)
    for _, cur in pts[1:-1]:
        if not is_counter:
            continue
        if cur.hint == nhist.GAUGE:
            ev.warn(f'this native histogram metric is not a counter: "{mname}"')
        min_schema = min(min_schema, cur.schema)
        if cur.custom != custom:
            ev.warn(nhist.mixed_schemas(mname))
            return None
    h = last.to_schema(min_schema) if not last.custom else last.copy()
    try:
        _, rec = h.add(prev, -1.0)
    except nhist.IncompatibleSchema:
        ev.warn(nhist.mixed_schemas(mname))
        return None
    if rec:
        ev.info("mismatched custom buckets were reconciled during subtraction")
    if is_counter:
        overlap = False
        for k, (_, cur) in enumerate(pts[1:], 1):
            if sts is not None and not overlap and _st_overlap_at(sts, ts, k):
                from querier.promql.startts import overlap_message
                ev.warn(overlap_message(mname, 1))
                overlap = True
            if st_reset(k) or cur.detect_reset(prev):
                try:
                    _, rec = h.add(prev)
                except nhist.IncompatibleSchema:
                    ev.warn(nhist.mixed_schemas(mname))
                    return None
                if rec:
                    ev.info("mismatched custom buckets were reconciled during addition")
            prev = cur
    elif pts[0][1].hint != nhist.GAUGE or pts[-1][1].hint != nhist.GAUGE:
        ev.warn(f'this native histogram metric is not a gauge: "{mname}"')
    h.hint = nhist.GAUGE
    return h.compact()


def _st_overlap_at(sts, ts, k: int) -> bool:
    from querier.promql.startts import st_overlap
    return bool(st_overlap(sts[k - 1], ts[k - 1], sts[k]))


def _rate_hist(ev, name: str, pts: list, m, t: int, mname: str, sts=None):
    is_counter = name != "delta"
    end = int(m.end[t])
    start = end - m.rng
    first_t, last_t = int(pts[0][0]), int(pts[-1][0])
    # the first sample's start timestamp inside the window: a zero there, no left extrapolation
    from_st = is_counter and sts is not None and sts[0] != 0 and start < int(sts[0]) < first_t
    if len(pts) < 2 and not from_st:
        return None
    h = None
    if len(pts) >= 2:
        h = _hist_rate_core(ev, pts, is_counter, mname, sts)
        if h is None:
            return None
    d_start = (first_t - start) / 1000.0
    d_end = (end - last_t) / 1000.0
    sampled = (last_t - first_t) / 1000.0
    avg = sampled / (len(pts) - 1) if len(pts) > 1 else 0.0
    thr = avg * 1.1
    if from_st:
        d_start = 0.0
        sampled = (last_t - int(sts[0])) / 1000.0
        first = pts[0][1]
        if h is None:
            h = first.copy()
            h.hint = nhist.GAUGE
        else:
            try:
                h.add(first)
            except nhist.IncompatibleSchema:
                ev.warn(nhist.mixed_schemas(mname))
                return None
    else:
        if d_start >= thr:
            d_start = avg / 2
        if is_counter and h.count > 0 and pts[0][1].count >= 0:
            dz = sampled * (pts[0][1].count / h.count)
            if dz < d_start:
                d_start = dz
    if d_end >= thr:
        d_end = avg / 2
    factor = (sampled + d_start + d_end) / sampled if sampled else 1.0
    if name == "rate":
        factor /= m.rng / 1000.0
    return h.mul(factor)
