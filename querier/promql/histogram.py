"""histogram_quantile over classic (le-labelled) buckets, vectorised over steps."""
from __future__ import annotations

import numpy as np

from querier.promql.aggregate import fmt_float
from querier.promql.types import PromQLError
from querier.promql.values import Scalar, Vec, empty_vec, get_label
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


def bucket_quantile(q: np.ndarray, upper: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, bool]:
    """q [W]; upper [nb] ascending (duplicates coalesced); C [nb, W] cumulative counts."""
    nb, W = C.shape
    C = C.copy()
    forced = False
    prev = C[0].copy()
    for i in range(1, nb):
        cur = C[i]
        eq = cur == prev
        close = ~eq & _almost_equal(prev, cur, _TOLERANCE)
        lower = ~eq & ~close & (cur < prev)
        forced |= bool(lower.any())
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


def histogram_quantile(ev, qv, v) -> Vec:
    if not isinstance(qv, Scalar) or not isinstance(v, Vec):
        raise PromQLError("bad_data", "histogram_quantile expects (scalar, instant vector)")
    q = qv.vals
    T = ev.T
    if True:
        bad = q[(q < 0) | (q > 1) | np.isnan(q)]
        if len(bad):
            ev.warn(f"quantile value should be between 0 and 1, got {fmt_float(bad[0])}")
    groups: dict = {}
    for i, l in enumerate(v.labels):
        le = get_label(l, "le")
        ub = _parse_le(le)
        if ub is None:
            ev.warn(f'bucket label "le" is missing or has a malformed value of "{le}" for metric name '
                    f'"{get_label(l, METRIC_NAME)}"')
            continue
        key = tuple(p for p in l if p[0] not in ("le", METRIC_NAME))
        groups.setdefault(key, ([], []))
        groups[key][0].append(i)
        groups[key][1].append(ub)
    if not groups:
        return empty_vec(T)
    labels, vals, pres = [], [], []
    for key, (idx, ubs) in groups.items():
        ubs_a = np.array(ubs)
        order = np.argsort(ubs_a, kind="stable")
        idx_a = np.asarray(idx)[order]
        ubs_a = ubs_a[order]
        x, p = v.vals[idx_a], v.present[idx_a]
        out = np.zeros(T)
        op = p.any(0)
        pats = {}
        for t in np.nonzero(op)[0]:
            pats.setdefault(p[:, t].tobytes(), []).append(t)
        for pat, cols in pats.items():
            rows = np.frombuffer(pat, dtype=bool)
            ub = ubs_a[rows]
            C = np.where(True, x[rows][:, cols], 0)
            uniq, inv = np.unique(ub, return_inverse=True)
            if len(uniq) != len(ub):  # coalesce duplicate bounds
                C2 = np.zeros((len(uniq), len(cols)))
                np.add.at(C2, inv, C)
                C, ub = C2, uniq
            r, forced = bucket_quantile(q[cols], ub, C)
            if forced:
                ev.info("input to histogram_quantile needed to be fixed for monotonicity (see "
                        "https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) "
                        f'for metric name "{get_label(v.labels[idx_a[0]], METRIC_NAME)}"')
            out[cols] = r
        labels.append(key)
        vals.append(out)
        pres.append(op)
    return Vec(labels, np.array(vals), np.array(pres), np.zeros(len(labels), bool))
