"""The bucket-trimming operators ``h </ x`` (keep observations below x) and ``h >/ x`` (keep
those above x) on native histograms, with Prometheus 3.14's semantics.

A bucket the cut falls into keeps the interpolated part of its count (linearly for custom
buckets and the zero bucket, exponentially otherwise); buckets reaching to an infinite bound
are kept or dropped whole because their distribution is unknown. When anything was trimmed,
count and sum are recomputed from what is left (sum from each kept part's midpoint).
"""
from __future__ import annotations

import math

from querier.promql.nhist import H, _div, _frac_below, bound

TRIM_UPPER, TRIM_LOWER = "</", ">/"
TRIM_OPS = frozenset((TRIM_UPPER, TRIM_LOWER))


def trim(h: H, cut: float, upper: bool) -> H:
    """Trim ``h`` in place at ``cut`` (``upper``: drop what lies above it) and return it."""
    linear = h.custom
    count = total = 0.0
    changed = False
    seen = {True: False, False: False}
    for side, positive in ((h.pos, True), (h.neg, False)):
        for i in sorted(side):
            c = side[i]
            if c == 0:
                continue
            seen[positive] = True
            if positive:
                lo, up = bound(i - 1, h.schema, h.cv), bound(i, h.schema, h.cv)
            else:
                lo, up = -bound(i, h.schema, h.cv), -bound(i - 1, h.schema, h.cv)
            whole, cut_inside = (up <= cut, lo < cut) if upper else (lo >= cut, up > cut)
            if whole:
                count += c
                total += _midpoint(lo, up, positive, linear) * c
            elif cut_inside:
                keep, mid = _bucket_trim(lo, up, c, cut, upper, positive, linear)
                count += keep
                total += mid * keep
                if keep != c:
                    side[i] = keep
                    changed = True
            else:
                side[i] = 0.0
                changed = True
    if h.zc > 0:
        keep, mid = _zero_trim(h.zt, h.zc, cut, seen[False], seen[True], upper)
        if keep != h.zc:
            h.zc = keep
            changed = True
        total += mid * keep
        count += keep
    if changed:
        h.count, h.sum = count, total
        h.compact()
    return h


def _midpoint(lo: float, up: float, positive: bool, linear: bool) -> float:
    """Where the observations of a (part of a) bucket are assumed to sit, for the new sum."""
    if math.isinf(lo):
        if math.isinf(up):
            return 0.0
        return up / 2 if up > 0 else up
    if math.isinf(up):
        return lo
    if linear:
        return (lo + up) / 2
    geo = math.sqrt(abs(lo * up))
    return geo if positive else -geo


def _bucket_trim(lo: float, up: float, c: float, cut: float, upper: bool, positive: bool,
                 linear: bool) -> tuple[float, float]:
    """(count kept, its midpoint) of a bucket the cut falls into."""
    if lo == -math.inf or up == math.inf:
        return _infinite_bucket_trim(lo, up, c, cut, upper)
    if cut <= lo:
        below = 0.0
    elif cut >= up:
        below = c
    else:
        below = c * _frac_below(cut, lo, up, linear)
    if upper:
        return below, _midpoint(lo, cut, positive, linear)
    return c - below, _midpoint(cut, up, positive, linear)


def _finite_or_zero(x: float) -> float:
    return 0.0 if math.isinf(x) else x


def _infinite_bucket_trim(lo: float, up: float, c: float, cut: float, upper: bool) -> tuple[float, float]:
    """A bucket reaching to -Inf or +Inf (custom buckets only): a finite positive upper bound
    lets the part above zero be interpolated; otherwise keep or drop the bucket whole."""
    if lo == -math.inf:
        if upper:
            if cut >= up:
                return c, 0.0
            if cut > 0 and up > 0 and up != math.inf:
                return c * cut / up, cut / 2
            if up <= 0:
                return c, cut
            return 0.0, _finite_or_zero(up)
        if cut <= lo:
            return c, 0.0
        if cut >= 0 and up > cut and up != math.inf:
            return c * (1 - cut / up), (cut + up) / 2
        return 0.0, _finite_or_zero(up)
    if upper:
        return 0.0, _finite_or_zero(lo)
    if cut >= lo:
        return c, cut
    return 0.0, _finite_or_zero(lo)


def _zero_trim(zt: float, zc: float, cut: float, has_neg: bool, has_pos: bool,
               upper: bool) -> tuple[float, float]:
    """(count kept, midpoint) of the zero bucket; it only spans the side(s) that have buckets."""
    lo, up = -zt, zt
    if has_neg and not has_pos:
        up = 0.0
    if has_pos and not has_neg:
        lo = 0.0
    if upper:
        if cut <= lo:
            return 0.0, 0.0
        if cut >= up:
            return zc, (lo + up) / 2
        return zc * _div(cut - lo, up - lo), (lo + cut) / 2  # a NaN cut: Go's 0/0
    if cut <= lo:
        return zc, (lo + up) / 2
    if cut >= up:
        return 0.0, 0.0
    return zc * _div(up - cut, up - lo), (cut + up) / 2
