"""histogram_quantile over classic (le-labelled) buckets, vectorised over steps."""
from __future__ import annotations

import numpy as np

from querier.promql.aggregate import fmt_float
from querier.promql.types import PromQLError
from querier.promql.values import Scalar, Vec, drop_name, empty_vec, get_label
from receiver.tsdb.labels import METRIC_NAME

_MIN_NORMAL = 2.2250738585072014e-308
_TOLERANCE = 1e-12


def _parse_le(s: str) -> float | None:
    try:
        return float(s.replace("Inf", "inf")) if s.strip() == s and s else None
    except ValueError:
        return None


def _almost_equal(a: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    with np.errstate(all="ignore"):
        s = np.abs(a) + np.abs(b)
        d = np.abs(a - b)
        small = (a == 0) | (b == 0) | (s < _MIN_NORMAL)
        r = np.where(small, d < eps * _MIN_NORMAL, d / np.minimum(s, np.finfo(float).max) < eps)
    return (a == b) | r


def bucket_quantile(q: np.ndarray, upper: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q [W]; upper [nb] ascending (duplicates coalesced); C [nb, W] cumulative counts. Returns
    the quantiles [W] and where the counts had to be made monotonic [W]. Columns are
    independent, so any histograms with the same bounds are computed in one call."""
    nb, W = C.shape
    C = C.copy()
    forced = np.zeros(W, dtype=bool)
    prev = C[0].copy()
    for i in range(1, nb):
        cur = C[i]
        eq = cur == prev
        close = ~eq & _almost_equal(prev, cur, _TOLERANCE)
        lower = ~eq & ~close & (cur < prev)
        forced |= lower
        C[i] = np.where(close | lower, prev, cur)
        prev = np.where(eq | close | lower, prev, cur)
    res = np.full(W, np.nan)
    if nb >= 2 and np.isposinf(upper[-1]):
        obs = C[-1]
        with np.errstate(all="ignore"):
            rank = q * obs
            ge = C[:-1] >= rank[None, :]
            b = np.where(ge.any(0), ge.argmax(0), nb - 1)
            cols = np.arange(W)
            bm1 = np.maximum(b - 1, 0)
            start = np.where(b > 0, upper[bm1], 0.0)
            end = upper[np.minimum(b, nb - 1)]
            cnt = C[np.minimum(b, nb - 1), cols] - np.where(b > 0, C[bm1, cols], 0.0)
            rk = rank - np.where(b > 0, C[bm1, cols], 0.0)
            r = start + (end - start) * (rk / cnt)
            r = np.where((b == 0) & (upper[0] <= 0), upper[0], r)
            r = np.where(b == nb - 1, upper[nb - 2], r)
            r = np.where(obs == 0, np.nan, r)
        res = r
    res = np.where(q > 1, np.inf, np.where(q < 0, -np.inf, res))
    return np.where(np.isnan(q), np.nan, res), forced


def fmt_om_float(q: float) -> str:
    """Prometheus's labels.FormatOpenMetricsFloat (quantile label values)."""
    if np.isnan(q):
        return "NaN"
    if np.isinf(q):
        return "+Inf" if q > 0 else "-Inf"
    r = repr(float(q))
    return r if ("." in r or "e" in r or "inf" in r) else r + ".0"


def bucket_fraction(lower: float, upper: float, ub: np.ndarray, c: np.ndarray) -> float:
    """Prometheus's BucketFraction for one classic histogram (ub ascending, coalesced)."""
    if not np.isposinf(ub[-1]):
        return np.nan
    count = c[-1]
    if count == 0 or np.isnan(lower) or np.isnan(upper):
        return np.nan
    if lower >= upper:
        return 0.0
    rank = lr = ur = 0.0
    ls = us = False
    lb = -np.inf if ub[0] <= 0 else 0.0
    for i in range(len(ub)):
        if i > 0:
            lb = ub[i - 1]
        up, bc = ub[i], c[i]

        def interp(x: float) -> float:
            if lb == -np.inf:
                return bc
            return rank + (bc - rank) * (x - lb) / (up - lb)
        if not ls and lb >= lower:
            lr, ls = rank, True
        if not us and lb >= upper:
            ur, us = rank, True
        if ls and us:
            break
        if not ls and lb < lower < up:
            lr, ls = interp(lower), True
        if not us and lb < upper < up:
            ur, us = interp(upper), True
        if ls and us:
            break
        rank = bc
    if not ls or lr > count:
        lr = count
    if not us or ur > count:
        ur = count
    return (ur - lr) / count


def _classic_groups(ev, v: Vec, hm: np.ndarray):
    """Group float (classic bucket) rows by their labels without le; warn about bad le labels."""
    groups: dict = {}
    for i, l in enumerate(v.labels):
        pf = v.present[i] & ~hm[i]
        if not pf.any():
            continue
        le = get_label(l, "le")
        ub = _parse_le(le)
        if ub is None:
            ev.warn(f'bucket label "le" is missing or has a malformed value of "{le}" for metric name '
                    f'"{get_label(l, METRIC_NAME)}"')
            continue
        key = tuple(p for p in l if p[0] != "le")
        groups.setdefault(key, ([], []))
        groups[key][0].append(i)
        groups[key][1].append(ub)
    return groups


def _classic_pieces(ev, v: Vec, pres: np.ndarray, groups: dict) -> list:
    """Each classic histogram's buckets as (group number, steps, upper bounds, counts [nb,
    steps]): one piece per group and set of buckets present (usually all of them at every
    step: one piece per group), bounds ascending, duplicate bounds coalesced."""
    pieces = []
    for g, (idx, ubs) in enumerate(groups.values()):
        ev.sh.check_deadline()
        ubs_a = np.array(ubs)
        order = np.argsort(ubs_a, kind="stable")
        idx_a = np.asarray(idx)[order]
        ubs_a = ubs_a[order]
        x, p = v.vals[idx_a], pres[idx_a]
        for rows, cols in _bucket_patterns(p):
            ub = ubs_a[rows]
            C = x[rows][:, cols]
            uniq, inv = np.unique(ub, return_inverse=True)
            if len(uniq) != len(ub):  # coalesce duplicate bounds
                C2 = np.zeros((len(uniq), len(cols)))
                np.add.at(C2, inv, C)
                C, ub = C2, uniq
            pieces.append((g, cols, ub, C))
    return pieces


def _bucket_patterns(p: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows present, steps) for each distinct set of present buckets among the steps where any
    is present, steps ascending within each; found without a Python loop over steps."""
    cols = np.flatnonzero(p.any(0))
    if not len(cols):
        return []
    pc = p[:, cols]
    if pc.all():
        return [(np.ones(len(p), dtype=bool), cols)]
    keys, inv = np.unique(np.packbits(pc, axis=0).T, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    first = np.full(len(keys), len(cols))
    np.minimum.at(first, inv, np.arange(len(cols)))
    return [(pc[:, first[k]].copy(), cols[inv == k]) for k in np.argsort(first, kind="stable")]


def _classic_quantiles(ev, v: Vec, groups: dict, pieces: list, q: np.ndarray, outs: list) -> None:
    """bucket_quantile of every piece into outs[group][steps]; pieces with the same bounds
    (a dashboard's histograms mostly share them) are computed in one call."""
    same: dict[bytes, list[int]] = {}
    for k, (_, _, ub, _) in enumerate(pieces):
        same.setdefault(ub.tobytes(), []).append(k)
    forced_groups: set[int] = set()
    for ks in same.values():
        ub = pieces[ks[0]][2]
        r, forced = bucket_quantile(np.concatenate([q[pieces[k][1]] for k in ks]), ub,
                                    np.concatenate([pieces[k][3] for k in ks], axis=1))
        at = 0
        for k in ks:
            g, cols = pieces[k][0], pieces[k][1]
            outs[g][cols] = r[at:at + len(cols)]
            if forced[at:at + len(cols)].any():
                forced_groups.add(g)
            at += len(cols)
    keys = list(groups)
    for g in sorted(forced_groups):
        first_row = min(groups[keys[g]][0])
        ev.info("input to histogram_quantile needed to be fixed for monotonicity (see "
                "https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) "
                f'for metric name "{get_label(v.labels[first_row], METRIC_NAME)}"')


def histogram_family(ev, name: str, v, params: list, qlabel: str | None = None) -> Vec:
    """histogram_quantile / histogram_quantiles / histogram_fraction over classic and native histograms.

    params: one or more quantile arrays [T], or (lower [T], upper [T]) for histogram_fraction.
    """
    from querier.promql import nhist
    from querier.promql.values import is_hist, merge_rows
    if not isinstance(v, Vec):
        raise PromQLError("bad_data", f"{name} expects an instant vector")
    T = ev.T
    frac = name == "histogram_fraction"
    if not frac:
        for q in params:
            bad = q[(q < 0) | (q > 1) | np.isnan(q)]
            if len(bad):
                ev.warn(f"quantile value should be between 0 and 1, got {fmt_float(bad[0])}")
    hm = is_hist(v)
    pres = v.present & ~hm
    groups = _classic_groups(ev, v, hm)
    hm = hm.copy()
    for i, l in enumerate(v.labels):  # a native and a classic histogram of the same series: neither
        if hm[i].any() and l in groups:
            idx = groups[l][0]
            clash = hm[i] & pres[idx].any(0)
            if clash.any():
                ev.warn(f'vector contains a mix of classic and native histograms for metric name "{get_label(l, METRIC_NAME)}"')
                hm[i] &= ~clash
                pres[idx] &= ~clash
    qsets = [None] if frac else params
    labels, vals, prs, drops = [], [], [], []
    pieces = _classic_pieces(ev, v, pres, groups)
    for qi, q in enumerate(qsets):
        def lab(l):
            if qlabel is None:
                return l
            d = dict(l)
            d[qlabel] = fmt_om_float(float(q[0]))
            return tuple(sorted(d.items()))
        outs = [np.zeros(T) for _ in groups]
        if frac:
            lo_, hi_ = params
            for g, cols, ub, C in pieces:
                outs[g][cols] = [bucket_fraction(lo_[t], hi_[t], ub, C[:, k]) for k, t in enumerate(cols)]
        else:
            _classic_quantiles(ev, v, groups, pieces, q, outs)
        for g, key in enumerate(groups):
            op = pres[groups[key][0]].any(0)
            if op.any():
                labels.append(lab(drop_name(key)))
                vals.append(outs[g])
                prs.append(op)
                drops.append(False)
        for i in np.nonzero(hm.any(1))[0]:
            out = np.zeros(T)
            mname = get_label(v.labels[i], METRIC_NAME)
            for t in np.nonzero(hm[i])[0]:
                h = v.hist[i, t]
                if frac:
                    r, nan_info = nhist.fraction(float(params[0][t]), float(params[1][t]), h)
                    if nan_info:
                        ev.info("input to histogram_fraction has NaN observations, which are excluded from all "
                                f'fractions for metric name "{mname}"')
                else:
                    r, anno = nhist.quantile(float(q[t]), h)
                    if anno == "nan_result":
                        ev.info(f'input to histogram_quantile has NaN observations, result is NaN for metric name "{mname}"')
                    elif anno == "nan_skew":
                        ev.info("input to histogram_quantile has NaN observations, result is skewed higher for "
                                f'metric name "{mname}"')
                out[t] = r
            labels.append(lab(v.labels[i]))
            vals.append(out)
            prs.append(hm[i].copy())
            drops.append(True)
    if not labels:
        return empty_vec(T)
    return merge_rows(Vec(labels, np.array(vals), np.array(prs), np.array(drops, dtype=bool)),
                      "vector cannot contain metrics with the same labelset")


def histogram_quantile(ev, qv, v) -> Vec:
    if not isinstance(qv, Scalar) or not isinstance(v, Vec):
        raise PromQLError("bad_data", "histogram_quantile expects (scalar, instant vector)")
    return histogram_family(ev, "histogram_quantile", v, [qv.vals])
