"""Numbers as Go prints them (Prometheus's templates and JSON APIs): shortest round-trip digits
laid out like strconv's 'g' and 'e' formats."""
from __future__ import annotations

import math
from decimal import Decimal


def _special(v: float) -> str | None:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return None


def _digits(v: float) -> tuple[str, str, int]:
    """(sign, shortest digits, decimal exponent of the first digit) of a finite non-zero v."""
    sign, digits, exp = Decimal(repr(v)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    return ("-" if sign else ""), ds, len(ds) + int(exp) - 1


def _e(neg: str, ds: str, x: int) -> str:
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return f"{neg}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"


def format_g(v: float) -> str:
    """Go's ``%v`` of a float64 (strconv 'g', shortest): exponent form below 1e-4 and from 1e6."""
    special = _special(v)
    if special:
        return special
    if v == 0:
        return "-0" if math.copysign(1, v) < 0 else "0"
    neg, ds, x = _digits(v)
    if x < -4 or x >= 6:
        return _e(neg, ds, x)
    if x < 0:
        return f"{neg}0.{'0' * (-x - 1)}{ds}"
    if len(ds) <= x + 1:
        return f"{neg}{ds}{'0' * (x + 1 - len(ds))}"
    return f"{neg}{ds[:x + 1]}.{ds[x + 1:]}"


def format_e(v: float) -> str:
    """strconv.FormatFloat(v, 'e', -1, 64): shortest digits, always with an exponent."""
    special = _special(v)
    if special:
        return special
    if v == 0:
        return "-0e+00" if math.copysign(1, v) < 0 else "0e+00"
    return _e(*_digits(v))
