"""Aggregation operators, vectorised over steps per output group."""
from __future__ import annotations

import numpy as np

from querier.promql import nhist
from querier.promql.grouping import group_index, group_rows
from querier.promql.lexer import go_quote
from querier.promql.types import PromQLError
from querier.promql.values import (Scalar, Str, Vec, bounded_runs, empty_vec, floats_only, get_label,
                                   is_hist, valid_label_name)
from receiver.tsdb.labels import METRIC_NAME, Labels


def fmt_float(v: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64)."""
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    s = np.format_float_positional(v, trim="-", unique=True)
    return s


def quantile_sorted(srt: np.ndarray, n: np.ndarray, q) -> np.ndarray:
    """Prometheus's quantile over the first n entries of each column of an ascending-sorted array."""
    q = np.broadcast_to(np.asarray(q, dtype=np.float64), n.shape)
    with np.errstate(all="ignore"):
        rank = q * (n - 1)
        # clipped as floats: a huge q (1e18) must not overflow the int64 index
        lower = np.clip(np.floor(np.nan_to_num(rank)), 0, np.maximum(n - 1, 0)).astype(np.int64)
        upper = np.minimum(np.maximum(n - 1, 0), lower + 1)
        w = rank - np.floor(rank)
        cols = np.arange(srt.shape[1])
        lv, uv = srt[lower, cols], srt[upper, cols]
        r = lv * (1 - w) + uv * w
        r = np.where(n == 1, srt[0, cols], r)
    r = np.where(q < 0, -np.inf, np.where(q > 1, np.inf, r))
    return np.where(np.isnan(q) | (n == 0), np.nan, r)


def needs_kahan(x: np.ndarray, p: np.ndarray | None = None) -> bool:
    """Plain (pairwise) summation is as exact as Kahan's unless magnitudes differ wildly: some
    nonzero magnitude below the largest finite one / 2^40, more of them than zeros. Of
    ``np.where(p, x, 0.0)`` when ``p`` is given. Looked at KAHAN_BLOCK values at a time (rows of
    a 2-D ``x``), so no temporary is as big as ``x``: a [series, steps] matrix at scale 4 is
    23 MiB, and each fresh one costs page faults."""
    if not x.size:
        return False
    rows = max(1, KAHAN_BLOCK // (x[0].size if x.ndim > 1 else 1))
    blocks = [slice(a, a + rows) for a in range(0, len(x), rows)]

    def magnitudes(b: slice) -> np.ndarray:
        ax = np.abs(x[b])
        if p is not None:
            ax[~p[b]] = 0.0
        return ax

    mx = max(float(np.max(ax, where=np.isfinite(ax), initial=-np.inf))
             for ax in map(magnitudes, blocks))
    if mx == -np.inf:  # NaN or ±Inf only
        return False
    below = zeros = 0
    for b in blocks:  # NaN and ±Inf count as neither
        ax = magnitudes(b)
        below += np.count_nonzero(ax < mx / 2.0 ** 40)
        zeros += np.count_nonzero(ax == 0)
    return below > zeros


KAHAN_BLOCK = 1 << 18


def sum_rows(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Sum over rows (series) of the present values, per step: Kahan-compensated in series order
    as Prometheus's sum when magnitudes differ wildly, else one vectorised sum."""
    xp = np.where(p, x, 0.0)
    return kahan_rows(x, p) if needs_kahan(xp) else xp.sum(0) + 0.0  # + 0.0: -0 sums to 0 as in Go


def kahan_rows(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Kahan-compensated sum over rows (series), vectorised over steps, like Prometheus's sum."""
    s = np.zeros(x.shape[1])
    c = np.zeros(x.shape[1])
    with np.errstate(all="ignore"):
        for i in range(x.shape[0]):
            inc = np.where(p[i], x[i], 0.0)
            t = s + inc
            c = np.where(np.isinf(t), 0.0, np.where(np.abs(s) >= np.abs(inc), c + ((s - t) + inc), c + ((inc - t) + s)))
            s = t
    return s + c


def aggregate(ev, e) -> Vec:
    op = str(e.op)
    v = ev.eval(e.expr)
    if isinstance(v, Scalar):
        raise PromQLError("bad_data", "expected type instant vector in aggregation expression, got scalar")
    param = ev.eval(e.param) if e.param is not None else None
    T = ev.T
    hm = is_hist(v)
    if hm.any() and op in ("min", "max", "stddev", "stdvar", "quantile", "topk", "bottomk"):
        ev.info(f"ignored histogram in {op} aggregation")
        v = floats_only(v)
    if op in ("topk", "bottomk", "limitk", "limit_ratio"):
        return _select_k(ev, op, v, param, e.modifier)
    if op in _SEGMENT_OPS and not (hm.any() and op in ("sum", "avg")):
        fast = _segment_aggregate(ev, op, v, e.modifier)
        if fast is not None:
            return fast
    groups = group_index(v.labels, e.modifier)
    if op == "count_values":
        return _count_values(ev, v, groups, param, T)
    if op == "quantile":
        q = param.vals
        bad = q[(q < 0) | (q > 1) | np.isnan(q)]
        if len(bad) and len(v.labels):
            ev.warn(f"quantile value should be between 0 and 1, got {fmt_float(bad[0])}")
    n_g = len(groups)
    if n_g == 0:
        return empty_vec(T)
    out_v = np.zeros((n_g, T))
    out_p = np.zeros((n_g, T), bool)
    labels, drops = [], []
    out_h = np.full((n_g, T), None, dtype=object) if hm.any() and op in ("sum", "avg") else None
    for gi, (gl, idx) in enumerate(groups.items()):
        ev.sh.check_deadline()
        x, p = v.vals[idx], v.present[idx]
        if out_h is not None:
            hp = hm[idx]
            hcols = hp.any(0)
            if hcols.any():
                mixed = hcols & (p & ~hp).any(0)
                if mixed.any():
                    ev.warn("encountered a mix of histograms and floats for aggregation")
                for t in np.nonzero(hcols & ~mixed)[0]:
                    out_h[gi, t] = _hist_sum(ev, [v.hist[idx[k], t] for k in np.nonzero(hp[:, t])[0]],
                                             op == "avg", v.labels[idx[0]])
                p = p & ~hcols[None, :]
        cnt = p.sum(0)
        with np.errstate(all="ignore"):
            if op == "sum":
                r = sum_rows(x, p)
            elif op == "avg":
                r = sum_rows(x, p) / cnt
                over = ~np.isfinite(r) & np.all(np.isfinite(np.where(p, x, 0.0)), 0)
                if over.any():
                    r = np.where(over, np.where(p, x / np.maximum(cnt, 1), 0.0).sum(0), r)
            elif op == "count":
                r = cnt.astype(np.float64)
            elif op == "group":
                r = np.ones(T)
            elif op == "min":
                r = np.fmin.reduce(np.where(p, x, np.nan), axis=0)
            elif op == "max":
                r = np.fmax.reduce(np.where(p, x, np.nan), axis=0)
            elif op in ("stddev", "stdvar"):
                ref = x[p.argmax(0), np.arange(T)]  # shift: constant inputs give exactly 0
                d = np.where(p, x - ref, 0.0)
                mean = d.sum(0) / cnt
                var = np.where(p, (d - mean) ** 2, 0.0).sum(0) / cnt
                r = np.sqrt(var) if op == "stddev" else var
            elif op == "quantile":
                xa = np.where(p, x, np.inf)
                order = np.argsort(np.where(np.isnan(xa), -np.inf, xa), axis=0, kind="stable")
                srt = np.take_along_axis(xa, order, axis=0)
                r = quantile_sorted(srt, cnt, param.vals)
            else:
                raise PromQLError("bad_data", f"unsupported aggregation {op}")
        out_v[gi] = r
        out_p[gi] = cnt > 0
        if out_h is not None:
            out_p[gi] |= out_h[gi] != None  # noqa: E711
        labels.append(gl)
        drops.append(bool(v.drop[idx].any()) and any(k == METRIC_NAME for k, _ in gl))
    return Vec(labels, out_v, out_p, np.array(drops, dtype=bool), None, out_h)


_SEGMENT_OPS = frozenset(("sum", "avg", "count", "group", "min", "max"))


def segment_reduce(uf: np.ufunc, x: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """uf over each run of consecutive rows (a group's rows, in series order), per step column,
    applied strictly in row order (np.add.reduceat would sum pairwise and differ from Prometheus
    in the last bits). Loops over groups or over positions within groups, whichever is fewer:
    at most sqrt(rows) numpy calls."""
    if len(starts) <= sizes.max():
        return np.stack([uf.reduce(x[s:s + n], axis=0) for s, n in zip(starts.tolist(), sizes.tolist())])
    out = x[starts].copy()
    for k in range(1, int(sizes.max())):
        live = np.nonzero(sizes > k)[0]
        out[live] = uf(out[live], x[starts[live] + k])
    return out


# _segment_aggregate works on groups of at most about this many rows x steps at a time (each
# temporary 4 MiB at most): at scale 4, `sum by (le, job)` over a 1 h rate of 12,000 series
# made six [series, steps] copies of 23 MiB, ~120 MiB of fresh memory in its first run.
AGG_CELLS = 1 << 19


def _segment_aggregate(ev, op: str, v: Vec, mod) -> Vec | None:
    """sum/avg/count/group/min/max of float rows for all groups at once: rows sorted (stably) by
    group id, then segment reductions over the groups' runs of rows, for consecutive groups of
    at most AGG_CELLS values at a time. None when Kahan summation is needed (the per-group path
    then decides per group)."""
    T = ev.T
    gid, glabels = group_rows(v.labels, mod)
    if not glabels:
        return empty_vec(T)
    ev.sh.check_deadline()
    if op in ("sum", "avg") and needs_kahan(v.vals, v.present):
        return None
    order = np.argsort(gid, kind="stable")
    sizes = np.bincount(gid, minlength=len(glabels))
    ends = np.cumsum(sizes)
    starts = ends - sizes
    r = np.empty((len(glabels), T))
    cnt = np.empty((len(glabels), T), np.int64)
    for ga, gb in bounded_runs(sizes * T, AGG_CELLS):  # a bigger group alone
        ev.sh.check_deadline()
        rows = order[starts[ga]:ends[gb - 1]]
        r[ga:gb], cnt[ga:gb] = _reduce_groups(op, v.vals, v.present, rows,
                                               starts[ga:gb] - starts[ga], sizes[ga:gb], T)
    has_name = np.array([any(k == METRIC_NAME for k, _ in gl) for gl in glabels], dtype=bool)
    drops = segment_reduce(np.logical_or, v.drop[order], starts, sizes) & has_name
    return Vec(glabels, r, cnt > 0, drops, None, None)


def _reduce_groups(op: str, vals: np.ndarray, present: np.ndarray, rows: np.ndarray,
                   starts: np.ndarray, sizes: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """_segment_aggregate's (values, counts) of the groups whose rows, in order, are ``rows``."""
    p = present[rows]
    x = vals[rows] if op not in ("count", "group") else None  # count and group need no values
    xp = np.where(p, x, 0.0) if op in ("sum", "avg") else None
    cnt = segment_reduce(np.add, p.astype(np.int64), starts, sizes)
    with np.errstate(all="ignore"):
        if op == "sum":
            r = segment_reduce(np.add, xp, starts, sizes) + 0.0  # + 0.0: -0 sums to 0 as in Go
        elif op == "avg":
            r = segment_reduce(np.add, xp, starts, sizes) / cnt
            over = ~np.isfinite(r) & segment_reduce(np.logical_and, np.isfinite(xp), starts, sizes)
            if over.any():
                per_row = np.repeat(np.maximum(cnt, 1), sizes, axis=0)
                r = np.where(over, segment_reduce(np.add, np.where(p, x / per_row, 0.0), starts, sizes), r)
        elif op == "count":
            r = cnt.astype(np.float64)
        elif op == "group":
            r = np.ones((len(sizes), T))
        else:
            r = segment_reduce(np.fmin if op == "min" else np.fmax, np.where(p, x, np.nan), starts, sizes)
    return r, cnt


def _hist_sum(ev, hs: list, avg: bool, example_labels):
    """sum/avg of native histograms at one step, with Prometheus's hint and layout rules."""
    from querier.promql import nhist
    res, notes = nhist.sum_hists(hs, avg)
    annotate_sum(ev, notes, get_label(example_labels, METRIC_NAME))
    return res


def annotate_sum(ev, notes: set, mname: str) -> None:
    if "mixed_schema" in notes:
        ev.warn(nhist.mixed_schemas(mname))
    if "reconciled" in notes:
        ev.info("mismatched custom buckets were reconciled during aggregation")
    if "collision" in notes:
        ev.warn("conflicting counter resets during histogram aggregation")


def _count_values(ev, v: Vec, groups, param, T: int) -> Vec:
    if not isinstance(param, Str):
        raise PromQLError("bad_data", "count_values needs a string parameter")
    name = param.val
    if not valid_label_name(name):
        raise PromQLError("execution", f"invalid label name {go_quote(name)}")
    counts: dict = {}
    hm = is_hist(v)

    def bump(gl, val: str, c: np.ndarray) -> None:
        d = dict(gl)
        d[name] = val
        key = tuple(sorted(d.items()))
        if key not in counts:
            ev.sh.reserve(T)  # every distinct value is one more output row
        counts[key] = counts.get(key, 0) + c
    for gl, idx in groups.items():
        ev.sh.check_deadline()
        x, p = v.vals[idx], v.present[idx] & ~hm[idx]
        for u in np.unique(x[p]):
            hit = p & ((x == u) if not np.isnan(u) else np.isnan(x))
            bump(gl, fmt_float(float(u)), hit.sum(0))
        ph = hm[idx]
        for r, t in zip(*np.nonzero(ph)):
            c = np.zeros(T, dtype=np.int64)
            c[t] = 1
            bump(gl, v.hist[idx[r], t].go_string(), c)
    if not counts:
        return empty_vec(T)
    labels = list(counts)
    vals = np.array([np.asarray(counts[k], dtype=np.float64) for k in labels])
    return Vec(labels, vals, vals > 0, np.zeros(len(labels), bool))


def _select_k(ev, op: str, v: Vec, param, mod) -> Vec:
    if not isinstance(param, Scalar):
        raise PromQLError("bad_data", f"expected scalar parameter for {op}")
    kv = param.vals
    T = ev.T
    if op != "limit_ratio":
        if np.isnan(kv).any():
            raise PromQLError("execution", "Parameter value is NaN")
        if (kv >= 2.0 ** 63).any():  # Prometheus refuses a k that is no int64, even on no input
            raise PromQLError("execution", f"Scalar value {nhist.go_g(float(kv[kv >= 2.0 ** 63][0]))} "
                                           "overflows int64")
        k = np.trunc(np.clip(kv, -1, 1e18)).astype(np.int64)
    groups = group_index(v.labels, mod)
    if op == "limit_ratio" and np.isnan(kv).any():
        raise PromQLError("execution", "Ratio value is NaN")
    if op == "limit_ratio":
        bad = kv[(kv < -1) | (kv > 1)]
        if len(bad):
            ev.warn(f"ratio value should be between -1 and 1, got {nhist.go_g(float(bad[0]))}, "
                    f"capping to {nhist.go_g(float(np.clip(bad[0], -1, 1)))}")
    pres = v.present.copy()
    n = len(v.labels)
    for idx in groups.values():
        # one group of every row (in row order, as group_index gives it): views, not copies
        rows = slice(None) if len(idx) == n else idx
        x, p = v.vals[rows], v.present[rows]
        if op == "limit_ratio":
            if np.isnan(kv).any():
                raise PromQLError("execution", "Ratio value is NaN")
            r = np.clip(kv, -1, 1)
            for j, i in enumerate(idx):
                s = _ratio_hash(v.labels[i])
                keep = np.where(r >= 0, s < r, s >= 1 + r)
                pres[i] &= keep
            continue
        if op == "limitk":
            rank = np.cumsum(p, axis=0) - 1
        elif len(idx) > 1 and T and (k == k[0]).all():
            pres[rows] = _first_k(x, p, int(k[0]), op == "topk")
            continue
        else:
            nan = np.isnan(x)
            vv = np.where(nan, 0.0, x)
            order = np.lexsort((-vv if op == "topk" else vv, nan, ~p), axis=0)
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(len(idx))[:, None].repeat(T, 1), axis=0)
        pres[rows] = p & (rank < k[None, :])
    return Vec(v.labels, v.vals, pres, v.drop, None, v.hist)


def _first_k(x: np.ndarray, p: np.ndarray, k: int, desc: bool) -> np.ndarray:
    """bool [m, T]: the rows topk/bottomk keep at each step, k the same at every step. The same
    order as a full sort (present before absent, numbers before NaN, by value, ties by row) but
    found with one partition per step: the k-th value is the threshold, rows at it are taken in
    row order until k are kept, NaNs only when fewer than k numbers are present."""
    if k <= 0:
        return np.zeros(p.shape, dtype=bool)
    nan = np.isnan(x)
    cand = p & ~nan
    s = np.where(cand, -x if desc else x, np.inf)
    n_num = cand.sum(0)
    kk = min(k, len(s)) - 1
    thr = np.partition(s, kk, axis=0)[kk]
    below = cand & (s < thr)
    at = cand & (s == thr)
    room = k - below.sum(0)
    if (at.sum(0) > room).any():  # more ties at the threshold than room: the first rows win
        at &= np.cumsum(at, axis=0) <= room
    keep = np.where(n_num > k, below | at, cand)
    nan_p = p & nan
    if nan_p.any():
        keep |= nan_p & (n_num + np.cumsum(nan_p, axis=0) <= k)
    return keep


def _ratio_hash(l: Labels) -> float:
    """Deterministic per-series value in [0, 1) for limit_ratio sampling."""
    import hashlib
    h = hashlib.blake2b(repr(l).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64
