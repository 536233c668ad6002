"""Binary operators: arithmetic, comparison and set operators with vector matching."""
from __future__ import annotations

import numpy as np
import promql_parser as pp

from querier.promql.types import PromQLError
from querier.promql.values import Scalar, Vec, drop_name, fmt_labels, get_label, merge_rows
from receiver.tsdb.labels import METRIC_NAME, Labels

CMP = {"==", "!=", ">", "<", ">=", "<="}
SET = {"and", "or", "unless"}


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


def binary(ev, e) -> object:
    op = str(e.op)
    mod = e.modifier
    ret_bool = bool(mod and mod.return_bool)
    lhs = ev.eval(e.lhs)
    rhs = ev.eval(e.rhs)
    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        r = arith(op, lhs.vals, rhs.vals)
        return Scalar(r.astype(np.float64))
    if op in SET:
        return _set_op(op, lhs, rhs, mod)
    if isinstance(lhs, Scalar) or isinstance(rhs, Scalar):
        return _vec_scalar(op, lhs, rhs, ret_bool)
    return _vec_vec(ev, op, lhs, rhs, mod, ret_bool)


def _vec_scalar(op: str, lhs, rhs, ret_bool: bool) -> Vec:
    vec, swap = (rhs, True) if isinstance(lhs, Scalar) else (lhs, False)
    s = (lhs if swap else rhs).vals[None, :]
    a, b = (s, vec.vals) if swap else (vec.vals, s)
    r = arith(op, a, b)
    if op in CMP:
        if ret_bool:
            return Vec(vec.labels, r.astype(np.float64), vec.present, np.ones(len(vec.labels), bool))
        return Vec(vec.labels, vec.vals, vec.present & r, vec.drop)
    return Vec(vec.labels, r, vec.present, np.ones(len(vec.labels), bool))


def _sig_fn(mod):
    """Matching signature: on(...) keeps the listed labels, otherwise all but ignored and __name__."""
    m = mod.matching if mod is not None else None
    if m is not None and m.type == pp.LabelModifierType.Include:
        names = sorted(set(m.labels))
        return lambda l: tuple(get_label(l, n) for n in names), True, names
    ign = set(m.labels) if m is not None else set()
    ign.add(METRIC_NAME)
    return lambda l: tuple(p for p in l if p[0] not in ign), False, sorted(ign - {METRIC_NAME})


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
        return Vec(lhs.labels, lhs.vals, pres, lhs.drop)
    if op == "unless":
        none = np.zeros(T, bool)
        pres = np.array([lhs.present[i] & ~rs.get(sig(l), none) for i, l in enumerate(lhs.labels)], dtype=bool).reshape(lhs.present.shape)
        return Vec(lhs.labels, lhs.vals, pres, lhs.drop)
    ls: dict = {}
    for i, l in enumerate(lhs.labels):
        k = sig(l)
        ls[k] = ls.get(k, np.zeros(T, bool)) | lhs.present[i]
    none = np.zeros(T, bool)
    rp = np.array([rhs.present[i] & ~ls.get(sig(l), none) for i, l in enumerate(rhs.labels)], dtype=bool).reshape(rhs.present.shape)
    out = Vec(lhs.labels + rhs.labels, np.concatenate([lhs.vals, rhs.vals]), np.concatenate([lhs.present, rp]),
              np.concatenate([lhs.drop, rhs.drop]))
    return merge_rows(out, "vector cannot contain metrics with the same labelset")


def _vec_vec(ev, op: str, lhs: Vec, rhs: Vec, mod, ret_bool: bool) -> Vec:
    card = mod.card if mod is not None else pp.VectorMatchCardinality.OneToOne
    include = list(mod.group_labels or []) if mod is not None else []
    sig, on, mnames = _sig_fn(mod)
    swap = card == pp.VectorMatchCardinality.OneToMany
    many, one = (rhs, lhs) if swap else (lhs, rhs)
    T = lhs.vals.shape[1]
    ar = np.arange(T)
    any_many = many.present.any(0)
    groups: dict = {}
    for i, l in enumerate(one.labels):
        groups.setdefault(sig(l), []).append(i)
    sel: dict = {}
    for k, idx in groups.items():
        p = one.present[idx]
        cnt = p.sum(0)
        bad = (cnt > 1) & any_many
        if bad.any():
            t = int(np.argmax(bad))
            dup = [fmt_labels(one.labels[idx[j]]) for j in np.nonzero(p[:, t])[0][:2]]
            side = "left" if swap else "right"
            raise PromQLError("execution", f"found duplicate series for the match group {_fmt_sig(k, on, mnames, one.labels[idx[0]])} "
                              f"on the {side} hand-side of the operation: [{', '.join(dup)}];many-to-many matching not allowed: "
                              "matching labels must be unique on one side")
        sel[k] = (np.asarray(idx)[p.argmax(0)], cnt == 1)
    is_cmp = op in CMP
    drop_op = (not is_cmp) or ret_bool
    labels: list[Labels] = []
    vals, pres, drops = [], [], []
    matched_cnt: dict = {}
    for j, l in enumerate(many.labels):
        k = sig(l)
        if k not in sel:
            continue
        ridx, ok = sel[k]
        m = many.present[j] & ok
        if not m.any():
            continue
        if card == pp.VectorMatchCardinality.OneToOne:
            c = matched_cnt.get(k)
            matched_cnt[k] = m.astype(np.int32) if c is None else c + m
        mv = many.vals[j]
        ov = one.vals[ridx, ar]
        a, b = (ov, mv) if swap else (mv, ov)
        r = arith(op, a, b)
        if is_cmp:
            if ret_bool:
                r = r.astype(np.float64)
            else:
                m = m & r
                r = a
        base = _result_labels(l, card, on, mnames, drop_op)
        if include:
            for ri in np.unique(ridx[m]):
                mm = m & (ridx == ri)
                ll = base
                for n in include:
                    v = get_label(one.labels[ri], n)
                    d = dict(ll)
                    if v:
                        d[n] = v
                    else:
                        d.pop(n, None)
                    ll = tuple(sorted(d.items()))
                labels.append(ll), vals.append(r), pres.append(mm), drops.append(drop_op or many.drop[j])
        else:
            labels.append(base), vals.append(r), pres.append(m), drops.append(drop_op or many.drop[j])
    for k, c in matched_cnt.items():
        if (c > 1).any():
            raise PromQLError("execution", "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")
    if not labels:
        from querier.promql.values import empty_vec
        return empty_vec(T)
    out = Vec(labels, np.array(vals, dtype=np.float64), np.array(pres), np.array(drops, dtype=bool))
    err = ("multiple matches for labels: grouping labels must ensure unique matches"
           if card != pp.VectorMatchCardinality.OneToOne else "vector cannot contain metrics with the same labelset")
    return merge_rows(out, err)


def _result_labels(l: Labels, card, on: bool, mnames: list[str], drop_op: bool) -> Labels:
    if card == pp.VectorMatchCardinality.OneToOne:
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
