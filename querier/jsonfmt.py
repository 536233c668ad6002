"""Prometheus's JSON number spellings, so responses match it byte for byte.

Values are strings: Go's ``strconv.FormatFloat(v, 'f', -1, 64)``, switching to ``'e'`` below 1e-6
and from 1e21 (Prometheus's jsonutil.MarshalValue); NaN/+Inf/-Inf spelled out. Timestamps are
numbers: whole seconds, then ``.`` and exactly three millisecond digits when not whole.
"""
from __future__ import annotations

import math

import numpy as np
import orjson

from querier._pointsjson import points as _points_c


def format_value(v: float) -> str:
    r = repr(v)
    if "e" not in r and "n" not in r:
        return r[:-2] if r.endswith(".0") else r
    if v != v:
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    a = abs(v)
    if a < 1e-6 or a >= 1e21:
        return _go_exp(r)
    return np.format_float_positional(v, unique=True, trim="-")


def _go_exp(r: str) -> str:
    """Python's repr exponent form into Go's: at least two exponent digits, explicit sign."""
    mant, _, exp = r.partition("e")
    sign = "-" if exp.startswith("-") else "+"
    digits = exp.lstrip("+-").lstrip("0") or "0"
    return f"{mant}e{sign}{digits.zfill(2)}"


def format_values(vals: np.ndarray) -> list[str]:
    return [format_value(v) for v in vals.tolist()]


def ts_fragment(t_ms: int) -> str:
    neg = t_ms < 0
    t = -t_ms if neg else t_ms
    s, ms = divmod(t, 1000)
    body = f"{s}.{ms:03d}" if ms else f"{s}"
    return "-" + body if neg else body


_EXACT_INT = float(2**53)


def format_values_vec(vals: np.ndarray) -> list[str]:
    """``format_value`` over an array, the common cases classified by numpy, not per sample.

    Whole numbers below 2**53 (counters, most gauges) are printed as ints; other finite values
    in [1e-4, 1e16) by Python's repr, which needs no fix-up there. Zeros with the sign bit,
    exponent-range values and NaN/Inf (rare) fall back to ``format_value``.
    """
    v = np.ascontiguousarray(vals, dtype=np.float64).reshape(-1)
    a = np.abs(v)
    frac = v != np.trunc(v)
    whole = ~frac & (a < _EXACT_INT) & ~((v == 0) & np.signbit(v))
    plain = frac & (a >= 1e-4) & (a < 1e16)
    if whole.all():
        return list(map(str, v.astype(np.int64).tolist()))
    if plain.all():
        return list(map(repr, v.tolist()))
    out = np.empty(len(v), dtype=object)
    out[whole] = list(map(str, v[whole].astype(np.int64).tolist()))
    out[plain] = list(map(repr, v[plain].tolist()))
    for i in np.flatnonzero(~(whole | plain)).tolist():
        out[i] = format_value(float(v[i]))
    return out.tolist()


def ts_fragments_vec(ts: np.ndarray) -> list[str]:
    """``ts_fragment`` over an int64 millisecond array (whole seconds, the usual case, in bulk)."""
    t = np.ascontiguousarray(ts, dtype=np.int64).reshape(-1)
    if len(t) and t.min() >= 0 and not (t % 1000).any():
        return list(map(str, (t // 1000).tolist()))
    return list(map(ts_fragment, t.tolist()))


def points_json(ts: np.ndarray, vals: np.ndarray) -> bytes:
    """A matrix series' ``values`` array: ``[[t,"v"],...]``, in C from orjson's shortest float
    digits; in Python only for series holding NaN, Inf or exponent-form values."""
    v = np.ascontiguousarray(vals, dtype=np.float64).reshape(-1)
    t = np.ascontiguousarray(ts, dtype=np.int64).reshape(-1)
    out = _points_c(t, orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY))
    if out is not None:
        return out
    return ("[" + ",".join(map('[{},"{}"]'.format, ts_fragments_vec(t), format_values_vec(v))) + "]").encode()
