"""Prometheus's JSON number spellings, so responses match it byte for byte.

Values are strings: Go's ``strconv.FormatFloat(v, 'f', -1, 64)``, switching to ``'e'`` below 1e-6
and from 1e21 (Prometheus's jsonutil.MarshalValue); NaN/+Inf/-Inf spelled out. Timestamps are
numbers: whole seconds, then ``.`` and exactly three millisecond digits when not whole.
"""
from __future__ import annotations

import math

import numpy as np


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
