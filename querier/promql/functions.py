"""Function calls: range-vector functions (via rangefuncs) and instant-vector/scalar functions."""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from querier.promql import ast
from querier.promql import histogram, info
from querier.promql.rangefuncs import (KEEP_NAME, RANGE_FUNCS, WINDOW_MATERIALIZING, Windows,
                                      batch_bounds, bounds)
from querier.promql.types import TYPE_AND_UNIT_LABELS, PromQLError
from querier.promql import nhist, rangeext, rangehist, startts
from querier.promql._groupc import group_ids
from querier.promql.values import (METADATA_LABELS, Matrix, Scalar, Vec, bounded_runs, concat_vecs, floats_only, get_label,
                                   is_hist, printable, select_rows, set_label, valid_label_name, with_hist)
from receiver.tsdb.labels import METRIC_NAME, InvalidRegex, compile_go_regex



def _round(x, to=1.0):
    with np.errstate(all="ignore"):
        inv = 1.0 / to
        return np.floor(x * inv + 0.5) / inv


MATH = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp, "sqrt": np.sqrt,
    "ln": np.log, "log2": np.log2, "log10": np.log10, "sgn": np.sign,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "asinh": np.arcsinh,
    "acosh": np.arccosh, "atanh": np.arctanh, "deg": np.degrees, "rad": np.radians,
}
DATE = {"day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year"}
COUNTER_SUFFIXES = ("_total", "_sum", "_count", "_bucket")
NAME_AND_TYPE = frozenset((METRIC_NAME, "__type__"))  # what the non-counter note depends on


def _is_number(a) -> bool:
    """A literal number, maybe negated or parenthesised: a scalar even where the parser lets it
    through as a vector argument (it does for ``log10(-0)``)."""
    while isinstance(a, (ast.ParenExpr, ast.UnaryExpr)):
        a = a.expr
    return isinstance(a, ast.NumberLiteral)


def call(ev, e):
    name = e.func.name
    args = e.args
    types = e.func.arg_types
    for i, a in enumerate(args):
        if types and types[min(i, len(types) - 1)] == ast.ValueType.Vector and _is_number(a):
            raise PromQLError("bad_data", f"expected type vector in call to function '{name}', "
                                          "got scalar")
    for a in args:  # x[r] anchored/smoothed only where the function makes sense of it
        vs = getattr(a, "vector_selector", None)  # a matrix selector
        mode = rangeext.selector_mode(vs) if vs is not None else None
        if mode:
            rangeext.check_function(name, mode)
    if ev.stats and name in ("histogram_quantile", "histogram_quantiles", "histogram_fraction"):
        ev.stats = False
        try:
            return call(ev, e)
        finally:
            ev.stats = True
    if name in RANGE_FUNCS:
        return _range_call(ev, name, args)
    if name == "info":
        return info.info(ev, args)
    if name in ("absent_over_time",):
        m = ev.range_arg(args[0])
        anyp = np.zeros(ev.T, bool)
        for ts in m.ts:
            lo, hi = bounds(ts, m.end, m.rng)
            anyp |= hi > lo
        return _absent_result(ev, args[0], ~anyp)
    if name == "time":
        return Scalar(ev.steps / 1000.0)
    if name in ("step", "range", "start", "end"):
        sh = ev.sh
        v = {"step": sh.step, "range": sh.end - sh.start, "start": sh.start, "end": sh.end}[name]
        return Scalar(np.full(ev.T, v / 1000.0))
    if name in ("min_of", "max_of"):
        a, b = (ev.eval(x).vals for x in args[:2])
        with np.errstate(all="ignore"):
            return Scalar((np.minimum if name == "min_of" else np.maximum)(a, b))
    if name == "pi":
        return Scalar(np.full(ev.T, np.pi))
    if name == "vector":
        s = ev.eval(args[0])
        return Vec([()], s.vals[None, :].copy(), np.ones((1, ev.T), bool), np.zeros(1, bool))
    if name == "scalar":
        v = floats_only(ev.eval(args[0]))
        cnt = v.present.sum(0)
        idx = v.present.argmax(0) if len(v.labels) else np.zeros(ev.T, int)
        vals = v.vals[idx, np.arange(ev.T)] if len(v.labels) else np.full(ev.T, np.nan)
        return Scalar(np.where(cnt == 1, vals, np.nan))
    if name == "absent":
        v = ev.eval(args[0])
        return _absent_result(ev, args[0], ~v.present.any(0) if len(v.labels) else np.ones(ev.T, bool))
    if name in MATH:
        v = floats_only(ev.eval(args[0]))
        with np.errstate(all="ignore"):
            r = MATH[name](v.vals)
        return Vec(v.labels, r, v.present, np.ones(len(v.labels), bool))
    if name == "round":
        v = floats_only(ev.eval(args[0]))
        to = ev.eval(args[1]).vals[None, :] if len(args) > 1 else 1.0
        return Vec(v.labels, _round(v.vals, to), v.present, np.ones(len(v.labels), bool))
    if name in ("clamp", "clamp_min", "clamp_max"):
        v = floats_only(ev.eval(args[0]))
        a = [ev.eval(x).vals[None, :] for x in args[1:]]
        with np.errstate(all="ignore"):
            if name == "clamp":
                r = np.maximum(a[0], np.minimum(a[1], v.vals))
                pres = v.present & ~(a[1] < a[0])
            elif name == "clamp_min":
                r, pres = np.maximum(a[0], v.vals), v.present
            else:
                r, pres = np.minimum(a[0], v.vals), v.present
        return Vec(v.labels, r, pres, np.ones(len(v.labels), bool))
    if name in ("timestamp", "start_timestamp"):
        inner = args[0]
        while isinstance(inner, ast.ParenExpr):
            inner = inner.expr
        if name == "start_timestamp":
            return startts.start_timestamp(ev, ev.eval(args[0]), isinstance(inner, ast.VectorSelector))
        if isinstance(inner, ast.VectorSelector) and inner.smoothed:
            # as Prometheus: the raw samples' times, the selector read without smoothing
            inner = dataclasses.replace(inner, smoothed=False)
        v = ev.eval(inner)
        # only a selector itself gives its samples' times; any function or operator in between
        # (label_replace, sort, ...) yields values at the evaluation time, as in Prometheus
        if v.sample_ts is not None and isinstance(inner, ast.VectorSelector):
            r = v.sample_ts / 1000.0
        else:
            r = np.broadcast_to(ev.steps / 1000.0, v.vals.shape).copy()
        return Vec(v.labels, r, v.present, np.ones(len(v.labels), bool))
    if name in DATE:
        if args:
            v = floats_only(ev.eval(args[0]))
        else:
            v = Vec([()], (ev.steps / 1000.0)[None, :], np.ones((1, ev.T), bool), np.zeros(1, bool))
        return Vec(v.labels, _date(name, v.vals), v.present, np.ones(len(v.labels), bool))
    if name in ("sort", "sort_desc"):
        if ev.sh.start != ev.sh.end:
            ev.warn("sort is ineffective for range queries since results are always ordered by labels")
        return floats_only(ev.eval(args[0]))
    if name in ("sort_by_label", "sort_by_label_desc"):
        if ev.sh.start != ev.sh.end:
            ev.warn("sort is ineffective for range queries since results are always ordered by labels")
        v = ev.eval(args[0])
        names = [ev.eval(a).val for a in args[1:]]
        key = [(tuple(_natural(get_label(l, n)) for n in names), l) for l in v.labels]
        order = sorted(range(len(key)), key=lambda i: key[i], reverse=name.endswith("desc"))
        return select_rows(v, order)
    if name == "label_replace":
        return _label_replace(ev, args)
    if name == "label_join":
        return _label_join(ev, args)
    if name == "histogram_quantile":
        return histogram.histogram_quantile(ev, ev.eval(args[0]), ev.eval(args[1]))
    if name == "histogram_quantiles":
        v = ev.eval(args[0])
        lbl = ev.eval(args[1]).val
        qs = [ev.eval(a).vals for a in args[2:]]
        return histogram.histogram_family(ev, name, v, qs, lbl)
    if name == "histogram_fraction":
        lo, hi = ev.eval(args[0]).vals, ev.eval(args[1]).vals
        return histogram.histogram_family(ev, name, ev.eval(args[2]), [lo, hi])
    if name in HIST_STATS:
        saved, ev.stats = ev.stats, True
        try:
            v = ev.eval(args[0])
        finally:
            ev.stats = saved
        return _hist_stat(ev, name, v)
    raise PromQLError("bad_data", f"function {name!r} is not supported")


def _range_call(ev, name: str, args) -> Vec:
    if name == "quantile_over_time":
        args = [args[1], args[0]]
    # a big selection comes in slices, each decoded and applied before the next
    parts = ev.matrix_parts(args[0]) or [ev.range_arg(args[0])]
    extra_vals = [ev.eval(a).vals for a in args[1:]]
    return concat_vecs([_range_matrix(ev, name, m, extra_vals) for m in parts])


def _range_matrix(ev, name: str, m, extra_vals: list) -> Vec:
    """Range function ``name`` over every series of ``m``."""
    if name in ("holt_winters", "double_exponential_smoothing") and len(m.labels):
        for x, what in zip(extra_vals, ("smoothing", "trend")):
            if ((x <= 0) | (x >= 1)).any():
                raise PromQLError("execution", f"invalid {what} factor. Expected: 0 < sf < 1, got: {x[0]:f}")
    if name == "quantile_over_time" and len(m.labels):
        q = extra_vals[0]
        bad = q[(q < 0) | (q > 1) | np.isnan(q)]
        if len(bad):
            from querier.promql.aggregate import fmt_float
            ev.warn(f"quantile value should be between 0 and 1, got {fmt_float(bad[0])}")
    ext = m.ext if isinstance(m, Matrix) else None
    fn = rangeext.EXT_FUNCS[name] if ext else RANGE_FUNCS[name]
    n = len(m.labels)
    ev.sh.reserve(n * ev.T)
    vals = np.zeros((n, ev.T))
    pres = np.zeros((n, ev.T), bool)
    hist = None
    float_rows, st_rows = [], []
    sts = m.sts if name in startts.ST_FUNCS else None  # only these use start timestamps
    plain = m.hists is None and sts is None  # every series a float one: no look at each
    for i in range(0 if plain else n):
        hs = m.hists[i] if m.hists is not None else None
        if hs is None or not (hs != None).any():  # noqa: E711
            (st_rows if sts is not None and sts[i] is not None else float_rows).append(i)
            continue
        ev.sh.check_deadline()
        if ext:
            r, ok, hrow = rangeext.hist_ext(ev, name, m.labels[i], m.ts[i], m.vals[i], hs, m)
        else:
            r, ok, hrow = rangehist.hist_range(ev, name, m.labels[i], m.ts[i], m.vals[i], hs, m,
                                               extra_vals, None if sts is None else sts[i])
        vals[i], pres[i] = r, ok
        if hrow is not None:
            if hist is None:
                hist = np.full((n, ev.T), None, dtype=object)
            hist[i] = hrow
    float_rows = np.arange(n, dtype=np.intp) if plain else np.array(float_rows, dtype=np.intp)
    _float_range_rows(ev, name, fn, m, extra_vals, float_rows, vals, pres)
    startts.float_rows(ev, name, m, st_rows, vals, pres)
    if name in ("rate", "increase"):
        _non_counter_info(ev, m.labels, pres if hist is None else pres & (hist == None))  # noqa: E711
    drop = m.drop.copy() if name in KEEP_NAME else np.ones(n, bool)
    return Vec(list(m.labels), vals, pres, drop, None, hist)


def _non_counter_info(ev, labels, float_out: np.ndarray) -> None:
    """As Prometheus: a series whose rate/increase gave a float result at some step and that does
    not look like a counter gets an info, once per distinct text."""
    rows = np.flatnonzero(float_out.any(1))
    # The note depends on the name and type only: judged once per distinct pair, the rows'
    # pairs hashed and interned in C
    got = labels if len(rows) == len(labels) else list(map(labels.__getitem__, rows.tolist()))
    kinds = group_ids(got, NAME_AND_TYPE, True) if isinstance(got, list) else None
    kinds = set(kinds[1]) if kinds is not None else {
        tuple(p for p in l if p[0] in NAME_AND_TYPE) for l in got}
    notes = {_non_counter_note(ev, l) for l in kinds}
    for note in sorted(n for n in notes if n):
        ev.info(note)


def _non_counter_note(ev, lbls) -> str | None:
    """Prometheus's hint that rate/increase got a non-counter: judged by the ``__type__`` label
    with type-and-unit-labels, else by the name's suffix."""
    mn = get_label(lbls, METRIC_NAME)
    if not mn:
        return None
    if TYPE_AND_UNIT_LABELS in ev.sh.opts.features:
        typ = get_label(lbls, "__type__")
        if typ in ("counter", "histogram"):
            return None
        return ('metric might not be a counter, __type__ label is not set to "counter" or "histogram", '
                f'got "{typ}": "{mn}"')
    if mn.endswith(COUNTER_SUFFIXES):
        return None
    return f'metric might not be a counter, name does not end in _total/_sum/_count/_bucket: "{mn}"'


# Series evaluated together by one range-function call: enough to amortise numpy's per-call
# cost over many series, few enough that the batch's temporary arrays stay small.
BATCH_POINTS = 1 << 20


def _float_range_rows(ev, name: str, fn, m: Matrix, extra_vals: list, rows: np.ndarray,
                      vals: np.ndarray, pres: np.ndarray) -> None:
    """Range function ``fn`` over the float series ``rows`` of ``m``, written into vals/pres:
    series are laid end to end in batches and each batch is one call over all its windows."""
    if not len(rows):
        return
    T = ev.T
    ts_all, x_all, offs_all = _laid_out(m, rows)
    wgeo = (m.end, m.rng) if m.ext is None else m.ext.window(m.end, m.rng)  # the samples fn sees
    for a, b in bounded_runs(np.diff(offs_all) + T, BATCH_POINTS):
        ev.sh.check_deadline()
        part = rows[a:b]
        base = int(offs_all[a])
        offs = offs_all[a:b + 1] - base
        ts, x = ts_all[base:int(offs_all[b])], x_all[base:int(offs_all[b])]
        lo, hi = batch_bounds(ts, offs, *wgeo)
        if m.ext is not None:
            after_start = batch_bounds(ts, offs, m.end, m.rng)[0]
            at_end = batch_bounds(ts, offs, m.end - 1, 0)[1]
        k = len(part)
        if name not in WINDOW_MATERIALIZING:
            subs = [(0, k)]
        else:  # such a function copies every window out at once: bound windows x widest window
            widest = (hi - lo).reshape(k, T).max(axis=1)
            subs = bounded_runs(widest * T, BATCH_POINTS)
        for c, d in subs:
            ev.sh.check_deadline()
            o, e = int(offs[c]), int(offs[d])
            w = slice(c * T, d * T)
            extra = [np.tile(v, d - c) if isinstance(v, np.ndarray) and v.shape == (T,) else v
                     for v in extra_vals]
            win = Windows(np.tile(m.end, d - c), m.rng, np.tile(m.eval_ts, d - c))
            if m.ext is not None:
                win = rangeext.ExtWindows(win.end, win.rng, win.eval_ts, m.ext, after_start[w] - o, at_end[w] - o)
            # the batch's own bounds when this is all of it (no shifted copies of n x T arrays)
            lw, hw = (lo, hi) if (c, d) == (0, k) else (lo[w] - o, hi[w] - o)
            _apply(ev, name, fn, ts[o:e], x[o:e], lw, hw, win, extra, vals, pres, part[c:d])


def _laid_out(m: Matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts, vals, offsets) of the series ``rows`` (ascending) of ``m`` laid end to end: the
    selector's own arrays when that is all of them."""
    if m.cat is not None and len(rows) == len(m.labels):
        return m.cat
    offs = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(m.ts[i]) for i in rows), dtype=np.int64, count=len(rows)), out=offs[1:])
    return (np.concatenate([m.ts[i] for i in rows]), np.concatenate([m.vals[i] for i in rows]), offs)


def _apply(ev, name, fn, ts, x, lo, hi, w, extra, vals, pres, rows: np.ndarray) -> None:
    if not (hi > lo).any():
        return
    # the windows a call holds at once: all of them when copied out, else the widest one
    ev.sh.fits(int((hi - lo).max()) * (len(lo) if name in WINDOW_MATERIALIZING else 1))
    r, ok = fn(ts, x, lo, hi, w, extra)
    if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):  # ascending run: a slice
        rows = slice(int(rows[0]), int(rows[-1]) + 1)
        n = rows.stop - rows.start
    else:
        n = len(rows)
    vals[rows] = np.reshape(r, (n, -1))
    pres[rows] = np.reshape(ok, (n, -1))


def _natural(s: str) -> tuple:
    """Natural sort key: digit runs compare numerically."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.findall(r"\d+|\D+", s))


def _absent_result(ev, arg, mask: np.ndarray) -> Vec:
    a = arg
    while isinstance(a, ast.ParenExpr):
        a = a.expr
    if isinstance(a, ast.MatrixSelector):
        a = a.vector_selector
    lbls: dict[str, str] = {}
    if isinstance(a, ast.VectorSelector):
        seen: set[str] = set()
        for m in a.matchers.matchers:
            if m.name in METADATA_LABELS:  # name, type and unit: not the absent series' labels
                continue
            if m.op == ast.MatchOp.Equal and m.name not in seen:
                lbls[m.name] = m.value
            elif m.name in lbls:
                del lbls[m.name]
            seen.add(m.name)
    l = tuple(sorted((k, v) for k, v in lbls.items() if v))
    return Vec([l], np.ones((1, ev.T)), mask[None, :].copy(), np.zeros(1, bool))


# What Go's time.Unix(int64(v), 0) gives Prometheus for NaN, ±Inf and values beyond int64:
# int64(v) is math.MinInt64 there (amd64), a wrapped-around time on 292277026596-12-04 15:30 UTC.
_GO_MIN_INT64_DATE = {"day_of_month": 4.0, "day_of_week": 0.0, "day_of_year": 339.0,
                      "days_in_month": 31.0, "hour": 15.0, "minute": 30.0, "month": 12.0,
                      "year": 292277026596.0}


def _date(name: str, x: np.ndarray) -> np.ndarray:
    """Calendar fields of x seconds as Prometheus computes them: x truncated toward zero to an
    int64 as Go converts floats (so -0.5 is 1970-01-01), then UTC date arithmetic."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(x) & (np.abs(x) < 2.0 ** 63)
    secs = np.where(ok, np.trunc(np.where(ok, x, 0)), 0).astype(np.int64).astype("datetime64[s]")
    D = secs.astype("datetime64[D]")
    M = secs.astype("datetime64[M]")
    Y = secs.astype("datetime64[Y]")
    if name == "year":
        r = Y.astype(np.int64) + 1970
    elif name == "month":
        r = (M - Y.astype("datetime64[M]")).astype(np.int64) + 1
    elif name == "day_of_month":
        r = (D - M.astype("datetime64[D]")).astype(np.int64) + 1
    elif name == "day_of_year":
        r = (D - Y.astype("datetime64[D]")).astype(np.int64) + 1
    elif name == "day_of_week":
        r = (D.astype(np.int64) + 4) % 7
    elif name == "hour":
        r = (secs - D.astype("datetime64[s]")).astype(np.int64) // 3600
    elif name == "minute":
        r = ((secs - D.astype("datetime64[s]")).astype(np.int64) // 60) % 60
    else:
        r = ((M + 1).astype("datetime64[D]") - M.astype("datetime64[D]")).astype(np.int64)
    return np.where(ok, r.astype(np.float64), _GO_MIN_INT64_DATE[name])


def _go_expand(template: str, m) -> str:
    """Expand $1, ${1}, $name, ${name} like Go's Regexp.Expand (unknown groups expand to "")."""
    out = []
    i = 0
    gd = m.groupdict()
    while i < len(template):
        c = template[i]
        if c != "$" or i + 1 >= len(template):
            out.append(c)
            i += 1
            continue
        nxt = template[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            j = template.find("}", i + 2)
            if j < 0:
                out.append(c)
                i += 1
                continue
            name = template[i + 2:j]
            i = j + 1
        else:
            j = i + 1
            while j < len(template) and (template[j].isalnum() or template[j] == "_"):
                j += 1
            if j == i + 1:
                out.append(c)
                i += 1
                continue
            name = template[i + 1:j]
            i = j
        if name.isdigit():
            k = int(name)
            out.append((m.group(k) or "") if k <= (m.re.groups or 0) else "")
        else:
            out.append(gd.get(name) or "")
    return "".join(out)


def _label_replace(ev, args) -> Vec:
    v = ev.eval(args[0])
    dst, repl, src, regex = (ev.eval(a).val for a in args[1:5])
    try:
        rx = compile_go_regex(regex)
    except InvalidRegex as ex:
        raise PromQLError("execution", f"invalid regular expression in label_replace(): {regex}") from ex
    if not valid_label_name(dst):
        raise PromQLError("execution", f"invalid destination label name in label_replace(): {printable(dst)}")
    labels, drop = [], v.drop.copy()
    for i, l in enumerate(v.labels):
        ev.sh.check_deadline()
        mt = rx.fullmatch(get_label(l, src))
        if mt is not None:
            l = set_label(l, dst, _go_expand(repl, mt))
            if dst == METRIC_NAME:
                drop[i] = False
        labels.append(l)
    from querier.promql.values import merge_rows
    return merge_rows(with_hist(v, labels, None, drop), "vector cannot contain metrics with the same labelset")


def _label_join(ev, args) -> Vec:
    v = ev.eval(args[0])
    dst, sep = ev.eval(args[1]).val, ev.eval(args[2]).val
    srcs = [ev.eval(a).val for a in args[3:]]
    if not valid_label_name(dst):
        raise PromQLError("execution", f"invalid destination label name in label_join(): {printable(dst)}")
    labels, drop = [], v.drop.copy()
    for i, l in enumerate(v.labels):
        labels.append(set_label(l, dst, sep.join(get_label(l, s) for s in srcs)))
        if dst == METRIC_NAME:
            drop[i] = False
    from querier.promql.values import merge_rows
    return merge_rows(with_hist(v, labels, None, drop), "vector cannot contain metrics with the same labelset")


HIST_STATS = {
    "histogram_count": lambda h: h.count,
    "histogram_sum": lambda h: h.sum,
    "histogram_avg": lambda h: nhist._div(h.sum, h.count),
    "histogram_stdvar": nhist.variance,
    "histogram_stddev": lambda h: np.sqrt(nhist.variance(h)),
}


def _hist_stat(ev, name: str, v: Vec) -> Vec:
    """Per-sample statistics of native histograms; float samples are dropped."""
    hm = is_hist(v)
    vals = np.zeros(v.vals.shape)
    f = HIST_STATS[name]
    with np.errstate(all="ignore"):
        for i, t in zip(*np.nonzero(hm)):
            vals[i, t] = f(v.hist[i, t])
    return Vec(v.labels, vals, hm, np.ones(len(v.labels), bool))
