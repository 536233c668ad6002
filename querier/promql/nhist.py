"""Native (sparse) float histograms for the engine.

Buckets are kept as {index: count} dicts without zero entries, which is what Prometheus's
results look like after Compact(0), so layouts (spans) need no separate bookkeeping. Only
histogram samples take this path; float samples never touch it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

UNKNOWN, RESET, NOT_RESET, GAUGE = 0, 1, 2, 3
CUSTOM = -53
MAX_F = 1.7976931348623157e308


class IncompatibleSchema(Exception):
    """Exponential and custom-bucket histograms cannot be combined."""


def mixed_schemas(mname: str) -> str:
    """Prometheus's warning when exponential and custom-bucket histograms meet (one text for
    every function and aggregation that can hit IncompatibleSchema)."""
    return ("vector contains a mix of histograms with exponential and custom buckets schemas "
            f'for metric name "{mname}"')


def mixed_floats(mname: str) -> str:
    """Prometheus's warning when a range function meets floats and histograms in one series."""
    return f'encountered a mix of histograms and floats for metric name "{mname}"'


def bound(idx: int, schema: int, cv: tuple | None = None) -> float:
    """Upper bound of bucket idx (positive side)."""
    if schema == CUSTOM:
        n = len(cv or ())
        if idx == n:
            return math.inf
        if idx == -1:
            return -math.inf
        return cv[idx]
    if schema < 0:
        e = idx << -schema
        if e == 1024:
            return MAX_F
        try:
            return math.ldexp(1.0, e)
        except OverflowError:
            return math.inf
    fi = idx & ((1 << schema) - 1)
    e = (idx >> schema) + 1
    if fi == 0 and e == 1025:
        return MAX_F
    try:
        return math.ldexp(2.0 ** (fi / (1 << schema)) / 2.0, e)
    except OverflowError:
        return math.inf


def _target(idx: int, d: int) -> int:
    return ((idx - 1) >> d) + 1


@dataclass
class H:
    schema: int = 0
    zt: float = 0.0
    zc: float = 0.0
    count: float = 0.0
    sum: float = 0.0
    pos: dict = field(default_factory=dict)
    neg: dict = field(default_factory=dict)
    cv: tuple | None = None
    hint: int = UNKNOWN

    # -- basics ------------------------------------------------------------------------------
    @property
    def custom(self) -> bool:
        return self.schema == CUSTOM

    def copy(self) -> "H":
        return H(self.schema, self.zt, self.zc, self.count, self.sum, dict(self.pos), dict(self.neg),
                 self.cv, self.hint)

    def compact(self) -> "H":
        self.pos = {k: v for k, v in self.pos.items() if v != 0}
        self.neg = {k: v for k, v in self.neg.items() if v != 0}
        return self

    def mul(self, f: float) -> "H":
        self.zc *= f
        self.count *= f
        self.sum *= f
        self.pos = {k: v * f for k, v in self.pos.items()}
        self.neg = {k: v * f for k, v in self.neg.items()}
        if f < 0:
            self.hint = GAUGE
        return self

    def div(self, f: float) -> "H":
        with_zero = f == 0
        self.zc = _div(self.zc, f)
        self.count = _div(self.count, f)
        self.sum = _div(self.sum, f)
        if with_zero:
            self.pos, self.neg = {}, {}
            return self
        self.pos = {k: v / f for k, v in self.pos.items()}
        self.neg = {k: v / f for k, v in self.neg.items()}
        if f < 0:
            self.hint = GAUGE
        return self

    def to_schema(self, target: int) -> "H":
        c = self.copy()
        if target != self.schema:
            d = self.schema - target
            c.pos, c.neg = _reduce(self.pos, d), _reduce(self.neg, d)
            c.schema = target
        return c

    # -- zero bucket -------------------------------------------------------------------------
    def _zero_for(self, larger: float) -> tuple[float, float]:
        if larger == self.zt:
            return self.zc, larger
        while True:
            zc = self.zc
            restart = False
            for i in sorted(self.pos):
                lo, up = bound(i - 1, self.schema), bound(i, self.schema)
                if lo >= larger:
                    break
                zc += self.pos[i]
                if up > larger:
                    if self.pos[i] != 0:
                        larger = up
                    break
            for i in sorted(self.neg):
                up, lo = -bound(i - 1, self.schema), -bound(i, self.schema)
                if up <= -larger:
                    break
                zc += self.neg[i]
                if lo < -larger:
                    if self.neg[i] != 0:
                        larger = -lo
                        restart = True
                    break
            if not restart:
                return zc, larger

    def _trim_zero(self) -> None:
        self.pos = {i: v for i, v in self.pos.items() if bound(i - 1, self.schema) >= self.zt}
        self.neg = {i: v for i, v in self.neg.items() if -bound(i - 1, self.schema) <= -self.zt}

    def _reconcile_zero(self, other: "H") -> float:
        ozc, ozt = other.zc, other.zt
        while ozt != self.zt:
            if self.zt > ozt:
                ozc, ozt = other._zero_for(self.zt)
            if ozt > self.zt:
                self.zc, self.zt = self._zero_for(ozt)
                self._trim_zero()
        return ozc

    # -- arithmetic --------------------------------------------------------------------------
    def _adjust_hint(self, other: "H") -> bool:
        a, b = self.hint, other.hint
        if a == b or a == GAUGE:
            return False
        if b == GAUGE:
            self.hint = GAUGE
            return False
        if a == UNKNOWN:
            return False
        if b == UNKNOWN:
            self.hint = UNKNOWN
            return False
        self.hint = UNKNOWN
        return True

    def add(self, other: "H", sign: float = 1.0) -> tuple[bool, bool]:
        """In place self += sign*other; returns (counter reset collision, nhcb bounds reconciled)."""
        if self.custom != other.custom:
            raise IncompatibleSchema()
        coll = self._adjust_hint(other)
        if not self.custom:
            ozc = self._reconcile_zero(other)
            self.zc += sign * ozc
        self.count += sign * other.count
        self.sum += sign * other.sum
        if self.custom:
            if tuple(self.cv or ()) == tuple(other.cv or ()):
                _merge(self.pos, other.pos, sign)
                return coll, False
            inter = tuple(sorted(set(self.cv or ()) & set(other.cv or ())))
            p = _map_custom(self.pos, self.cv, inter)
            _merge(p, _map_custom(other.pos, other.cv, inter), sign)
            self.pos, self.cv = p, inter
            return coll, True
        opos, oneg = other.pos, other.neg
        if other.schema < self.schema:
            d = self.schema - other.schema
            self.pos, self.neg = _reduce(self.pos, d), _reduce(self.neg, d)
            self.schema = other.schema
        elif other.schema > self.schema:
            d = other.schema - self.schema
            opos, oneg = _reduce(opos, d), _reduce(oneg, d)
        # buckets that fall inside the (possibly widened) zero bucket go there
        if self.zt > 0:
            for src, isneg in ((opos, False), (oneg, True)):
                extra = {}
                for i, v in src.items():
                    if bound(i, self.schema) <= self.zt:
                        continue
                    extra[i] = v
                if isneg:
                    _merge(self.neg, extra, sign)
                else:
                    _merge(self.pos, extra, sign)
        else:
            _merge(self.pos, opos, sign)
            _merge(self.neg, oneg, sign)
        return coll, False

    def equals(self, o: "H") -> bool:
        a, b = self.copy().compact(), o.copy().compact()
        if a.schema != b.schema or a.custom and tuple(a.cv) != tuple(b.cv):
            return False
        return (_feq(a.zt, b.zt) and _feq(a.zc, b.zc) and _feq(a.count, b.count) and _feq(a.sum, b.sum)
                and a.pos.keys() == b.pos.keys() and a.neg.keys() == b.neg.keys()
                and all(_feq(v, b.pos[k]) for k, v in a.pos.items())
                and all(_feq(v, b.neg[k]) for k, v in a.neg.items()))

    # -- counter resets ----------------------------------------------------------------------
    def detect_reset(self, prev: "H") -> bool:
        if self.hint == RESET:
            return True
        if self.hint == NOT_RESET:
            return False
        if self.count < prev.count:
            return True
        if self.custom:
            if not prev.custom:
                return True
            if tuple(self.cv) != tuple(prev.cv):
                return _custom_reset(self, prev)
        if self.schema > prev.schema:
            return True
        if self.zt < prev.zt:
            return True
        pzc, nt = prev._zero_for(self.zt)
        if nt != self.zt:
            return True
        if self.zc < pzc:
            return True
        d = prev.schema - self.schema
        for cur, old in ((self.pos, prev.pos), (self.neg, prev.neg)):
            o = _reduce(old, d) if d else old
            for i, v in o.items():
                if not self.custom and bound(i, self.schema) <= self.zt:
                    continue
                if (i not in cur and v != 0) or (i in cur and cur[i] < v):
                    return True
        return False

    # -- bucket iteration --------------------------------------------------------------------
    def buckets(self) -> list[tuple[float, float, float]]:
        """(lower, upper, count) ascending, like Prometheus's AllBucketIterator."""
        out = []
        s = self.schema
        if self.custom:
            for i in sorted(self.pos):
                out.append((bound(i - 1, s, self.cv), bound(i, s, self.cv), self.pos[i]))
            return out
        zt = self.zt
        for i in sorted(self.neg, reverse=True):
            lo, up = -bound(i, s), -bound(i - 1, s)
            if up < 0 and up > -zt:
                up = -zt
            out.append((lo, up, self.neg[i]))
        if self.zc > 0:
            out.append((-zt, zt, self.zc))
        for i in sorted(self.pos):
            lo, up = bound(i - 1, s), bound(i, s)
            if lo > 0 and lo < zt:
                lo = zt
            out.append((lo, up, self.pos[i]))
        return out

    def test_expression(self) -> str:
        r = []
        if self.schema:
            r.append(f"schema:{self.schema}")
        for k, v in (("count", self.count), ("sum", self.sum), ("z_bucket", self.zc), ("z_bucket_w", self.zt)):
            if v:
                r.append(f"{k}:{v:g}")
        if self.custom:
            r.append("custom_values:[" + " ".join(f"{x:g}" for x in self.cv) + "]")
        if self.hint:
            r.append("counter_reset_hint:" + {RESET: "reset", NOT_RESET: "not_reset", GAUGE: "gauge"}[self.hint])
        for key, off, d in (("buckets", "offset", self.pos), ("n_buckets", "n_offset", self.neg)):
            if d:
                lo, hi = min(d), max(d)
                if lo:
                    r.append(f"{off}:{lo}")
                r.append(f"{key}:[" + " ".join(f"{d.get(i, 0):g}" for i in range(lo, hi + 1)) + "]")
        return "{{" + " ".join(r) + "}}"

    __repr__ = test_expression

    def go_string(self) -> str:
        """Prometheus's FloatHistogram.String() (count_values uses it as a label value)."""
        parts = [f"{{count:{go_g(self.count)}, sum:{go_g(self.sum)}"]  # %g
        s = self.schema
        for i in sorted(self.neg, reverse=True):
            parts.append(f"[{go_g(-bound(i, s))},{go_g(-bound(i - 1, s))}):{go_g(self.neg[i])}")
        if self.zc != 0:
            parts.append(f"[{go_g(-self.zt)},{go_g(self.zt)}]:{go_g(self.zc, 21)}")
        for i in sorted(self.pos):
            parts.append(f"({go_g(bound(i - 1, s, self.cv))},{go_g(bound(i, s, self.cv))}]:{go_g(self.pos[i], 21)}")
        return ", ".join(parts) + "}"


def _div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _feq(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


def _reduce(d: dict, delta: int) -> dict:
    out: dict = {}
    for i, v in d.items():
        t = _target(i, delta)
        out[t] = out.get(t, 0.0) + v
    return out


def _merge(dst: dict, src: dict, sign: float) -> None:
    for i, v in src.items():
        dst[i] = dst.get(i, 0.0) + sign * v


def _map_custom(d: dict, cv, inter: tuple) -> dict:
    """Re-bucket a custom-bucket histogram onto a subset of its bounds."""
    out: dict = {}
    import bisect
    for i, v in d.items():
        up = bound(i, CUSTOM, cv)
        j = bisect.bisect_left(inter, up) if up != math.inf else len(inter)
        out[j] = out.get(j, 0.0) + v
    return out


def _custom_reset(cur: H, prev: H) -> bool:
    inter = tuple(sorted(set(cur.cv) & set(prev.cv)))
    a, b = _map_custom(cur.pos, cur.cv, inter), _map_custom(prev.pos, prev.cv, inter)
    return any(a.get(k, 0.0) < v for k, v in b.items())


# -- statistics --------------------------------------------------------------------------------
def quantile(q: float, h: H) -> tuple[float, str | None]:
    """Prometheus's HistogramQuantile; the second value names an info annotation, if any."""
    if q < 0:
        return -math.inf, None
    if q > 1:
        return math.inf, None
    if h.count == 0 or q != q:
        return math.nan, None
    bs = h.buckets()
    nan_sum = h.sum != h.sum
    fwd = nan_sum or q < 0.5
    it = bs if fwd else bs[::-1]
    rank = q * h.count if fwd else (1 - q) * h.count
    count = 0.0
    lo = up = bc = 0.0
    k = -1
    for k, (lo, up, bc) in enumerate(it):
        if bc == 0:
            continue
        count += bc
        if count >= rank:
            break
    if not h.custom and lo < 0 < up:
        if not h.neg and h.pos:
            lo = 0.0
        elif not h.pos and h.neg:
            up = 0.0
    elif h.custom:
        if lo == -math.inf:
            if up <= 0:
                return up, None
            lo = 0.0
        elif up == math.inf:
            return lo, None
    if count > h.count:
        count = h.count
    if count < rank:
        if nan_sum:
            return math.nan, "nan_result"
        return up, None
    if fwd:
        rank -= count - bc
    else:
        rank = count - rank
    anno = None
    if nan_sum:
        if count + sum(b[2] for b in it[k + 1:]) < h.count:
            anno = "nan_skew"
    frac = rank / bc
    if h.custom or (lo <= 0 and up >= 0):
        return lo + (up - lo) * frac, anno
    ll, lu = math.log2(abs(lo)), math.log2(abs(up))
    if lo > 0:
        return 2.0 ** (ll + (lu - ll) * frac), anno
    return -(2.0 ** (lu + (ll - lu) * (1 - frac))), anno


def _frac_below(v: float, lo: float, up: float, linear: bool) -> float:
    if linear:
        return (v - lo) / (up - lo)
    ll, lu, lv = math.log2(abs(lo)), math.log2(abs(up)), math.log2(abs(v))
    if v > 0:
        return (lv - ll) / (lu - ll)
    return 1 - ((lv - lu) / (ll - lu))


def fraction(lower: float, upper: float, h: H) -> tuple[float, bool]:
    """Prometheus's HistogramFraction; the flag asks for the NaN-observations info."""
    if h.count == 0 or lower != lower or upper != upper:
        return math.nan, False
    if lower >= upper:
        return 0.0, False
    count = rank = lr = ur = 0.0
    ls = us = False
    bs = h.buckets()
    k = 0
    while k < len(bs):
        lo, up, bc = bs[k]
        k += 1
        count += bc
        zero = False
        if lo <= 0 and up >= 0:
            zero = True
            if not h.neg and h.pos:
                lo = 0.0
            elif not h.pos and h.neg:
                up = 0.0
        lin = h.custom or zero

        def interp(v: float) -> float:
            if lin and lo == -math.inf:
                return bc
            return rank + bc * _frac_below(v, lo, up, lin)
        if not ls and lo >= lower:
            lr, ls = rank, True
        if not us and lo >= upper:
            ur, us = rank, True
        if ls and us:
            break
        if not ls and lo < lower < up:
            lr, ls = interp(lower), True
        if not us and lo < upper < up:
            ur, us = interp(upper), True
        if ls and us:
            break
        rank += bc
    nan_info = False
    if h.sum != h.sum:
        count += sum(b[2] for b in bs[k:])
        nan_info = count < h.count
    else:
        count = h.count
    if not ls or lr > count:
        lr = count
    if not us or ur > count:
        ur = count
    return (ur - lr) / h.count, nan_info


def variance(h: H) -> float:
    mean = h.sum / h.count if h.count else math.nan
    var = c = 0.0
    for lo, up, bc in h.buckets():
        if bc == 0:
            continue
        if h.custom:
            v = (up + lo) / 2.0
        elif lo <= 0 <= up:
            v = 0.0
        else:
            v = math.sqrt(up * lo)
            if up < 0:
                v = -v
        d = v - mean
        var, c = _kinc(bc * d * d, var, c)
    return _div(var + c, h.count)


def go_g(v: float, eprec: int = 6) -> str:
    """Go's %g (shortest; exponent form below 1e-4 or from 1e6 on); eprec=21 gives %v."""
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    r = repr(float(v))
    mant = r.partition("e")[0]
    digits = mant.replace("-", "").replace(".", "").lstrip("0")
    d = f"{abs(v):.{max(len(digits.rstrip('0')) - 1, 0)}e}"
    m, _, ee = d.partition("e")
    exp = int(ee)
    if exp < -4 or exp >= eprec:
        return ("-" if v < 0 else "") + m + "e" + ("-" if exp < 0 else "+") + f"{abs(exp):02d}"
    out = r[:-2] if r.endswith(".0") else r
    return out


def _kinc(x: float, s: float, c: float) -> tuple[float, float]:
    """Neumaier-compensated s + x (Prometheus's kahansum.Inc)."""
    t = s + x
    if math.isinf(t):
        return t, 0.0
    if abs(s) >= abs(x):
        c += (s - t) + x
    else:
        c += (x - t) + s
    return t, c


def _overflow(h: H) -> bool:
    return any(math.isinf(v) for v in (h.count, h.sum, h.zc, *h.pos.values(), *h.neg.values()))


def kahan_add(acc: H, comp: H, other: H) -> tuple[bool, bool]:
    """acc += other with compensation terms kept in comp (same layout as acc)."""
    if acc.custom != other.custom:
        raise IncompatibleSchema()
    coll = acc._adjust_hint(other)
    same = (acc.schema == other.schema and acc.zt == other.zt
            and (not acc.custom or tuple(acc.cv or ()) == tuple(other.cv or ())))
    if not same:
        # Layout changes: fold the compensation in and add plainly.
        pending = comp.copy()
        comp.__init__(schema=acc.schema, zt=acc.zt, cv=acc.cv)
        _, rec = acc.add(other)
        acc.count += pending.count
        acc.sum += pending.sum
        if not acc.custom and pending.schema >= acc.schema:
            d = pending.schema - acc.schema
            _merge(acc.pos, _reduce(pending.pos, d), 1.0)
            _merge(acc.neg, _reduce(pending.neg, d), 1.0)
            acc.zc += pending.zc
        elif acc.custom:
            _merge(acc.pos, _map_custom(pending.pos, pending.cv, acc.cv or ()), 1.0)
        comp.schema, comp.zt, comp.cv = acc.schema, acc.zt, acc.cv
        return coll, rec
    acc.count, comp.count = _kinc(other.count, acc.count, comp.count)
    acc.sum, comp.sum = _kinc(other.sum, acc.sum, comp.sum)
    acc.zc, comp.zc = _kinc(other.zc, acc.zc, comp.zc)
    for src, dst, cd in ((other.pos, acc.pos, comp.pos), (other.neg, acc.neg, comp.neg)):
        for i, v in src.items():
            dst[i], cd[i] = _kinc(v, dst.get(i, 0.0), cd.get(i, 0.0))
    return coll, False


def _fold(acc: H, comp: H) -> H:
    acc.count += comp.count
    acc.sum += comp.sum
    acc.zc += comp.zc
    _merge(acc.pos, comp.pos, 1.0)
    _merge(acc.neg, comp.neg, 1.0)
    return acc


def sum_hists(hs: list, avg: bool) -> tuple[H | None, set]:
    """sum/avg of histograms as Prometheus aggregates them (Kahan-compensated; an average
    whose running sum overflows is computed incrementally). Returns (result, annotation keys)."""
    notes: set = set()
    rs = any(h.hint == RESET for h in hs)
    nrs = any(h.hint == NOT_RESET for h in hs)
    try:
        acc = hs[0].copy()
        comp = H(schema=acc.schema, zt=acc.zt, cv=acc.cv)
        for h in hs[1:]:
            _, rec = kahan_add(acc, comp, h)
            if rec:
                notes.add("reconciled")
        if avg and _overflow(acc):
            n = float(len(hs))
            acc = hs[0].copy().div(n)
            comp = H(schema=acc.schema, zt=acc.zt, cv=acc.cv)
            for h in hs[1:]:
                kahan_add(acc, comp, h.copy().div(n))
            acc = _fold(acc, comp)
        else:
            acc = _fold(acc, comp)
            if avg:
                acc.div(float(len(hs)))
    except IncompatibleSchema:
        notes.add("mixed_schema")
        return None, notes
    if rs and nrs:
        notes.add("collision")
    return acc.compact(), notes
