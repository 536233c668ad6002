"""Binary operators: arithmetic, comparison and set operators with vector matching."""
from __future__ import annotations

import numpy as np

from querier.promql import ast
from querier.promql import nhist
from querier.promql.nhtrim import TRIM_OPS, TRIM_UPPER, trim
from querier.promql.types import PromQLError
from querier.promql.values import Scalar, Vec, fmt_labels, get_label, is_hist, merge_rows
from receiver.tsdb.labels import METRIC_NAME, Labels

CMP = {"==", "!=", ">", "<", ">=", "<="}
SET = {"and", "or", "unless"}
KEEPS_NAME = CMP | TRIM_OPS  # Prometheus's changesMetricSchema is false for these


def arith(op: str, a, b):
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return np.true_divide(a, b)
        if op == "%":
            return np.fmod(a, b)
        if op == "^":
            return np.power(np.asarray(a, dtype=np.float64), b)
        if op == "atan2":
            return np.arctan2(a, b)
        if op in TRIM_OPS:  # defined on histograms only; the float cells are dropped
            return np.full(np.broadcast(a, b).shape, np.nan)
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op == ">":
            return a > b
        if op == "<":
            return a < b
        if op == ">=":
            return a >= b
        if op == "<=":
            return a <= b
    raise PromQLError("bad_data", f"unknown operator {op}")


def elem(ev, op: str, fl: float, fr: float, hl, hr):
    """One element of a binary operation involving a native histogram (Prometheus's
    vectorElemBinop): returns (float, histogram, keep, failed); failed samples are dropped
    even under bool, after an annotation."""
    lt = "float" if hl is None else "histogram"
    rt = "float" if hr is None else "histogram"

    def incompatible():
        ev.info(f'incompatible sample types encountered for binary operator "{op}": {lt} {op} {rt}')
        return 0.0, None, False, True
    if hl is None and hr is not None:
        if op == "*":
            return 0.0, hr.copy().mul(fl).compact(), True, False
        return incompatible()
    if hl is not None and hr is None:
        if op == "*":
            return 0.0, hl.copy().mul(fr).compact(), True, False
        if op == "/":
            return 0.0, hl.copy().div(fr).compact(), True, False
        if op in TRIM_OPS:
            return 0.0, trim(hl.copy(), fr, op == TRIM_UPPER), True, False
        return incompatible()
    if op in ("+", "-"):
        res = hl.copy()
        what = "addition" if op == "+" else "subtraction"
        try:
            coll, rec = res.add(hr, 1.0 if op == "+" else -1.0)
        except nhist.IncompatibleSchema:
            ev.warn(f"incompatible bucket layout encountered for binary operator {op}")
            return 0.0, None, False, True
        if op == "-":
            res.hint = nhist.GAUGE
        if rec:
            ev.info(f"mismatched custom buckets were reconciled during {what}")
        if coll:
            ev.warn(f"conflicting counter resets during histogram {what}")
            return 0.0, None, False, True
        return 0.0, res.compact(), True, False
    if op in ("==", "!="):
        eq = hl.equals(hr)
        return 0.0, hl, eq if op == "==" else not eq, False
    return incompatible()


def binary(ev, e) -> object:
    op = str(e.op)
    mod = e.modifier
    ret_bool = bool(mod and mod.return_bool)
    if op in TRIM_OPS and ev.stats:  # trimming needs the buckets: no stats-only reading below
        ev.stats = False
        try:
            lhs, rhs = ev.eval(e.lhs), ev.eval(e.rhs)
        finally:
            ev.stats = True
    else:
        lhs, rhs = ev.eval(e.lhs), ev.eval(e.rhs)
    if fill_values(mod) != (None, None):
        # Prometheus's parser refuses these; never evaluate a fill we would have to ignore.
        if op in SET:
            raise PromQLError("bad_data", "filling in missing series not allowed for set operators")
        if not isinstance(lhs, Vec) or not isinstance(rhs, Vec):
            raise PromQLError("bad_data", "filling in missing series only allowed between instant vectors")
    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        if op in TRIM_OPS:
            raise PromQLError("execution", f'operator "{op}" not allowed for Scalar operations')
        r = arith(op, lhs.vals, rhs.vals)
        return Scalar(r.astype(np.float64))
    if op in SET:
        return _set_op(op, lhs, rhs, mod)
    if isinstance(lhs, Scalar) or isinstance(rhs, Scalar):
        return _vec_scalar(ev, op, lhs, rhs, ret_bool)
    return _vec_vec(ev, op, lhs, rhs, mod, ret_bool)


def _vec_scalar(ev, op: str, lhs, rhs, ret_bool: bool) -> Vec:
    vec, swap = (rhs, True) if isinstance(lhs, Scalar) else (lhs, False)
    s = (lhs if swap else rhs).vals[None, :]
    a, b = (s, vec.vals) if swap else (vec.vals, s)
    r = arith(op, a, b)
    hm = is_hist(vec)
    if op in TRIM_OPS:
        _float_trim_info(ev, op, vec.present & ~hm, "float", "float")
    if hm.any():
        return _vec_scalar_hist(ev, op, vec, s[0], swap, ret_bool, r, hm)
    if op in TRIM_OPS:
        return Vec(vec.labels, r, np.zeros_like(vec.present), vec.drop)
    if op in CMP:
        if ret_bool:
            return Vec(vec.labels, r.astype(np.float64), vec.present, np.ones(len(vec.labels), bool))
        return Vec(vec.labels, vec.vals, vec.present & r, vec.drop)
    return Vec(vec.labels, r, vec.present, np.ones(len(vec.labels), bool))


def _vec_scalar_hist(ev, op, vec: Vec, s, swap: bool, ret_bool: bool, r, hm) -> Vec:
    """The vector-scalar case when some samples are native histograms (elementwise for those)."""
    is_cmp = op in CMP
    pres = vec.present.copy()
    vals = (r.astype(np.float64) if ret_bool or not is_cmp else vec.vals.copy())
    if is_cmp and not ret_bool:
        pres &= np.asarray(r, dtype=bool) | hm
    elif op in TRIM_OPS:
        pres &= hm
    else:
        vals = np.array(vals, dtype=np.float64)
    hist = np.full(vec.vals.shape, None, dtype=object)
    for i, t in zip(*np.nonzero(hm)):
        h = vec.hist[i, t]
        f, hh, keep, failed = elem(ev, op, float(s[t]), 0.0, None, h) if swap else elem(ev, op, 0.0, float(s[t]), h, None)
        if failed or (not keep and not ret_bool):
            pres[i, t] = False
            continue
        if ret_bool:
            vals[i, t] = 1.0 if keep else 0.0
        elif is_cmp:
            hist[i, t] = h
        else:
            hist[i, t] = hh
    drop = vec.drop if op in KEEPS_NAME and not ret_bool else np.ones(len(vec.labels), bool)
    return Vec(vec.labels, vals, pres, drop, None, hist)


def _float_trim_info(ev, op: str, cells, lt: str, rt: str) -> None:
    """Trimming is defined on histograms only: float operands are dropped with an info."""
    if cells.any():
        ev.info(f'incompatible sample types encountered for binary operator "{op}": {lt} {op} {rt}')


def _sig_fn(mod):
    """Matching signature: on(...) keeps the listed labels, otherwise all but ignored and __name__.
    The names returned are the listed ones: a one-to-one result keeps (on) or loses (ignoring)
    exactly those, ``__name__`` too when it is listed, as in Prometheus."""
    m = mod.matching if mod is not None else None
    if m is not None and m.type == ast.LabelModifierType.Include:
        names = sorted(set(m.labels))
        return lambda l: tuple(get_label(l, n) for n in names), True, names
    listed = set(m.labels) if m is not None else set()
    ign = listed | {METRIC_NAME}
    return lambda l: tuple(p for p in l if p[0] not in ign), False, sorted(listed)


def _set_op(op: str, lhs, rhs, mod) -> Vec:
    if isinstance(lhs, Scalar) or isinstance(rhs, Scalar):
        raise PromQLError("bad_data", f"set operator \"{op}\" not allowed in binary scalar expression")
    sig, _, _ = _sig_fn(mod)
    T = lhs.vals.shape[1]
    rs: dict = {}
    for i, l in enumerate(rhs.labels):
        k = sig(l)
        rs[k] = rs.get(k, np.zeros(T, bool)) | rhs.present[i]
    if op == "and":
        none = np.zeros(T, bool)
        pres = np.array([lhs.present[i] & rs.get(sig(l), none) for i, l in enumerate(lhs.labels)], dtype=bool).reshape(lhs.present.shape)
        return Vec(lhs.labels, lhs.vals, pres, lhs.drop, None, lhs.hist)
    if op == "unless":
        none = np.zeros(T, bool)
        pres = np.array([lhs.present[i] & ~rs.get(sig(l), none) for i, l in enumerate(lhs.labels)], dtype=bool).reshape(lhs.present.shape)
        return Vec(lhs.labels, lhs.vals, pres, lhs.drop, None, lhs.hist)
    ls: dict = {}
    for i, l in enumerate(lhs.labels):
        k = sig(l)
        ls[k] = ls.get(k, np.zeros(T, bool)) | lhs.present[i]
    none = np.zeros(T, bool)
    rp = np.array([rhs.present[i] & ~ls.get(sig(l), none) for i, l in enumerate(rhs.labels)], dtype=bool).reshape(rhs.present.shape)
    hist = None
    if lhs.hist is not None or rhs.hist is not None:
        hl = lhs.hist if lhs.hist is not None else np.full(lhs.vals.shape, None, dtype=object)
        hr = rhs.hist if rhs.hist is not None else np.full(rhs.vals.shape, None, dtype=object)
        hist = np.concatenate([hl, hr])
    out = Vec(lhs.labels + rhs.labels, np.concatenate([lhs.vals, rhs.vals]), np.concatenate([lhs.present, rp]),
              np.concatenate([lhs.drop, rhs.drop]), None, hist)
    return merge_rows(out, "vector cannot contain metrics with the same labelset")


def fill_values(mod) -> tuple[float | None, float | None]:
    """The fill(v)/fill_left(v)/fill_right(v) values of a matching modifier: (lhs, rhs)."""
    if mod is None:
        return None, None
    return mod.fill_left, mod.fill_right


def _elems(ev, op: str, a, b, ha, hb, m, ret_bool: bool):
    """The operation on the cells ``m`` of two aligned rows (``ha``/``hb``: their histograms
    or None): (values, presence, histograms or None)."""
    cells = None
    if ha is not None or hb is not None:
        none = np.full(len(m), None, dtype=object)
        ha = none if ha is None else ha
        hb = none if hb is None else hb
        cells = m & ((ha != None) | (hb != None))  # noqa: E711
    if op in TRIM_OPS:
        _float_trim_info(ev, op, m if cells is None else m & ~cells, "float", "float")
        m = m if cells is None else m & cells
        if cells is None:
            m = np.zeros_like(m)
    r = arith(op, a, b)
    if op in CMP:
        if ret_bool:
            r = r.astype(np.float64)
        else:
            m = m & r
            r = a
    if cells is None or not cells.any():
        return r, m, None
    return _hist_elems(ev, op, a, b, ha, hb, m, cells, r, ret_bool)


def _hist_elems(ev, op, a, b, ha, hb, m, cells, r, ret_bool):
    """Cells where a native histogram takes part go through elem() one by one."""
    is_cmp = op in CMP
    r = np.array(r, dtype=np.float64)
    m = m.copy()
    rh = np.full(len(m), None, dtype=object)
    for t in np.nonzero(cells)[0]:
        f, hh, keep, failed = elem(ev, op, float(a[t]), float(b[t]), ha[t], hb[t])
        if failed or (not keep and not ret_bool):
            m[t] = False
            continue
        m[t] = True
        if ret_bool:
            r[t] = 1.0 if keep else 0.0
        elif is_cmp:
            rh[t] = ha[t]
            r[t] = 0.0
        else:
            rh[t] = hh
            r[t] = f
    return r, m, rh


def _vec_vec(ev, op: str, lhs: Vec, rhs: Vec, mod, ret_bool: bool) -> Vec:
    card = mod.card if mod is not None else ast.VectorMatchCardinality.OneToOne
    include = list(mod.group_labels or []) if mod is not None else []
    sig, on, mnames = _sig_fn(mod)
    fill_l, fill_r = fill_values(mod)
    swap = card == ast.VectorMatchCardinality.OneToMany
    # As Prometheus: after the swap the "many" side misses are filled with fill_right, the
    # unmatched "one" side with fill_left (group_right swaps which operand is which).
    many, one = (rhs, lhs) if swap else (lhs, rhs)
    T = lhs.vals.shape[1]
    ar = np.arange(T)
    any_many = many.present.any(0)
    filling = fill_l is not None or fill_r is not None
    groups: dict = {}
    for i, l in enumerate(one.labels):
        groups.setdefault(sig(l), []).append(i)
    sel: dict = {}
    for k, idx in groups.items():
        ev.sh.check_deadline()
        p = one.present[idx]
        cnt = p.sum(0)
        bad = (cnt > 1) & (True if filling else any_many)
        if bad.any():
            t = int(np.argmax(bad))
            dup = [fmt_labels(one.labels[idx[j]]) for j in np.nonzero(p[:, t])[0][:2]]
            side = "left" if swap else "right"
            raise PromQLError("execution", f"found duplicate series for the match group {_fmt_sig(k, on, mnames, one.labels[idx[0]])} "
                              f"on the {side} hand-side of the operation: [{', '.join(dup)}];many-to-many matching not allowed: "
                              "matching labels must be unique on one side")
        sel[k] = (np.asarray(idx)[p.argmax(0)], cnt == 1)
    drop_op = op not in KEEPS_NAME or ret_bool
    labels: list[Labels] = []
    vals, pres, drops, hists = [], [], [], []
    matched_cnt: dict = {}
    many_sigs: dict = {}
    none = np.zeros(T, bool)

    def emit(ll: Labels, r, mm, d: bool, rh) -> None:
        labels.append(ll), vals.append(r), pres.append(mm), drops.append(d), hists.append(rh)

    for j, l in enumerate(many.labels):
        ev.sh.check_deadline()
        k = sig(l)
        if fill_l is not None:
            many_sigs[k] = many_sigs.get(k, none) | many.present[j]
        ridx, ok = sel.get(k, (np.zeros(T, dtype=np.intp), none))
        matched = many.present[j] & ok
        filled = many.present[j] & ~ok if fill_r is not None else none
        m = matched | filled
        if not m.any():
            continue
        if card == ast.VectorMatchCardinality.OneToOne:
            c = matched_cnt.get(k)
            matched_cnt[k] = m.astype(np.int32) if c is None else c + m
        ov = one.vals[ridx, ar] if len(one.labels) else np.zeros(T)
        ov = np.where(filled, fill_r, ov) if filled.any() else ov
        mh = many.hist[j] if many.hist is not None else None
        oh = None
        if one.hist is not None and len(one.labels):
            oh = np.where(filled, None, one.hist[ridx, ar])
        a, b = (ov, many.vals[j]) if swap else (many.vals[j], ov)
        ha, hb = (oh, mh) if swap else (mh, oh)
        r, m, rh = _elems(ev, op, a, b, ha, hb, m, ret_bool)
        base = _result_labels(l, card, on, mnames, drop_op)
        d = drop_op or bool(many.drop[j])
        if include:
            for ri in np.unique(ridx[m & matched]):
                emit(_with_include(base, one.labels[ri], include), r, m & matched & (ridx == ri), d, rh)
            if (m & filled).any():
                emit(_with_include(base, _match_labels(l, on, mnames), include), r, m & filled, d, rh)
        else:
            emit(base, r, m, d, rh)
    if fill_l is not None:
        for i, l in enumerate(one.labels):
            ev.sh.check_deadline()
            m = one.present[i] & ~many_sigs.get(sig(l), none)
            if not m.any():
                continue
            fv = np.full(T, fill_l)
            oh = one.hist[i] if one.hist is not None else None
            a, b = (one.vals[i], fv) if swap else (fv, one.vals[i])
            ha, hb = (oh, None) if swap else (None, oh)
            r, m, rh = _elems(ev, op, a, b, ha, hb, m, ret_bool)
            base = _result_labels(_match_labels(l, on, mnames), card, on, mnames, drop_op)
            emit(_with_include(base, l, include) if include else base, r, m, drop_op, rh)
    for k, c in matched_cnt.items():
        if (c > 1).any():
            raise PromQLError("execution", "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")
    if not labels:
        from querier.promql.values import empty_vec
        return empty_vec(T)
    hist = None
    if any(h is not None for h in hists):
        hist = np.full((len(labels), T), None, dtype=object)
        for k, h in enumerate(hists):
            if h is not None:
                hist[k] = h
    out = Vec(labels, np.array(vals, dtype=np.float64), np.array(pres), np.array(drops, dtype=bool), None, hist)
    err = ("multiple matches for labels: grouping labels must ensure unique matches"
           if card != ast.VectorMatchCardinality.OneToOne else "vector cannot contain metrics with the same labelset")
    return merge_rows(out, err)


def _with_include(base: Labels, one_labels: Labels, include: list[str]) -> Labels:
    """group_left/group_right(labels): copied from the "one" side's series (absent = removed)."""
    d = dict(base)
    for n in include:
        v = get_label(one_labels, n)
        if v:
            d[n] = v
        else:
            d.pop(n, None)
    return tuple(sorted(d.items()))


def _match_labels(l: Labels, on: bool, mnames: list[str]) -> Labels:
    """The labels a fill sample stands in with (Prometheus's MatchLabels): on(...) keeps the
    listed ones, otherwise all but the ignored ones and the metric name."""
    if on:
        keep = set(mnames)
        return tuple(p for p in l if p[0] in keep)
    ign = set(mnames)
    ign.add(METRIC_NAME)
    return tuple(p for p in l if p[0] not in ign)


def _result_labels(l: Labels, card, on: bool, mnames: list[str], drop_op: bool) -> Labels:
    if card == ast.VectorMatchCardinality.OneToOne:
        if on:
            keep = set(mnames)
            l = tuple(p for p in l if p[0] in keep)
        else:
            ign = set(mnames)
            l = tuple(p for p in l if p[0] not in ign)
    return l


def _fmt_sig(k, on: bool, mnames: list[str], example: Labels) -> str:
    if on:
        return "{" + ", ".join(f'{n}="{v}"' for n, v in zip(mnames, k) if v) + "}"
    return "{" + ", ".join(f'{n}="{v}"' for n, v in k) + "}"
