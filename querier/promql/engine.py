"""PromQL evaluation: walk the syntax tree (querier.promql.ast) once, each node computed for every step."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from querier.promql import aggregate, ast, binops, functions, rangeext, selected
from querier.promql.features import parser_options
from querier.promql.guard import check_query
from querier.promql.parser import ParseError, parse as parse_syntax
from querier.promql.selected import Selected
from querier.promql.types import (TOO_MANY_SAMPLES, USE_START_TIMESTAMPS, EngineOptions, PromQLError, Queryable,
                                  QueryResult, SeriesBatch, SeriesParts)
from querier.promql._rangec import last_samples
from querier.promql.values import (Matrix, Scalar, Str, Vec, concat_vecs, empty_vec, finalize, held_points, is_stale,
                                   row_values)
from receiver.tsdb.labels import InvalidRegex, Matcher, MatchType

DEFAULT_SUBQUERY_STEP_MS = 60_000
# Timestamps are int64 milliseconds; every time the engine computes must stay strictly inside.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1



def dur_ms(d: timedelta | None) -> int:
    return ast.timedelta_ms(d)


def unparen(e):
    while isinstance(e, ast.ParenExpr):
        e = e.expr
    return e


@dataclass
class _Shared:
    """Per-query state shared by nested (subquery) evaluators."""

    q: Queryable
    opts: EngineOptions
    start: int
    end: int
    deadline: float
    step: int = 0
    held: int = 0  # points (samples, per-step values) the evaluation holds right now
    peak: int = 0  # the most points held at once (Prometheus's peakSamples)
    loaded: int = 0  # samples the selectors read (Prometheus's totalQueryableSamples)
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)

    def reserve(self, points: int) -> None:
        """Account ``points`` more held points, refusing past ``--query.max-samples``.

        Called with the size of an array before it is allocated, so a query fails before the
        memory is spent, as Prometheus's sample limit does."""
        self.held += points
        self.peak = max(self.peak, self.held)
        if self.held > self.opts.max_samples:
            raise PromQLError("execution", TOO_MANY_SAMPLES)

    def check_deadline(self) -> None:
        """Called between nodes and between series in long loops, so a query past its timeout
        stops promptly instead of running on in its worker thread."""
        if time.monotonic() > self.deadline:
            raise PromQLError("timeout", "query timed out in expression evaluation")

    def fits(self, points: int) -> None:
        """Refuse if ``points`` more, held only for a moment, would pass the limit."""
        if self.held + points > self.opts.max_samples:
            raise PromQLError("execution", TOO_MANY_SAMPLES)


class Evaluator:
    def __init__(self, shared: _Shared, steps: np.ndarray) -> None:
        self.sh = shared
        self.steps = steps
        self.T = len(steps)
        # Inside histogram_count/sum/avg (and no subquery or bucket-needing function in between)
        # selectors re-derive counter-reset hints like Prometheus's HistogramStatsIterator.
        self.stats = False
        self.func_hint: str | None = None  # the function a selector is an argument of

    # -- annotations -------------------------------------------------------------------------
    def warn(self, msg: str) -> None:
        m = "PromQL warning: " + msg
        if m not in self.sh.warnings:
            self.sh.warnings.append(m)

    def info(self, msg: str) -> None:
        m = "PromQL info: " + msg
        if m not in self.sh.infos:
            self.sh.infos.append(m)

    # -- dispatch ----------------------------------------------------------------------------
    def eval(self, e):
        """The value of node ``e``. While it is computed its children's values are held; once it
        is done only its own value is, so that is what stays on the sample budget."""
        self.sh.check_deadline()
        before = self.sh.held
        v = self._node(e)
        if isinstance(v, Vec) and not self.sh.opts.delayed_name_removal and np.count_nonzero(v.drop):
            v = finalize(v)  # Prometheus without delayed name removal: drop it here, collide here
        self.sh.held = before
        self.sh.reserve(held_points(v))
        return v

    def _node(self, e):
        if isinstance(e, ast.ParenExpr):
            return self.eval(e.expr)
        if isinstance(e, ast.NumberLiteral):
            return Scalar(np.full(self.T, e.val))
        if isinstance(e, ast.StringLiteral):
            return Str(e.val)
        if isinstance(e, ast.VectorSelector):
            return self.vector_selector(e)
        if isinstance(e, ast.MatrixSelector):
            return self.matrix_selector(e)
        if isinstance(e, ast.SubqueryExpr):
            return self.subquery(e)
        if isinstance(e, ast.UnaryExpr):
            v = self.eval(e.expr)
            if e.op == "+":
                return v
            if isinstance(v, Scalar):
                return Scalar(-v.vals)
            hist = None
            if v.hist is not None:
                hist = np.full(v.hist.shape, None, dtype=object)
                for i, t in zip(*np.nonzero(v.hist != None)):  # noqa: E711
                    hist[i, t] = v.hist[i, t].copy().mul(-1.0)
            return Vec(v.labels, -v.vals, v.present, np.ones(len(v.labels), dtype=bool), None, hist)
        if isinstance(e, ast.BinaryExpr):
            return binops.binary(self, e)
        if isinstance(e, ast.AggregateExpr):
            return aggregate.aggregate(self, e)
        if isinstance(e, ast.Call):
            # Like Prometheus's select hints: a store (or the querier's penalty deduplication,
            # which adjusts counter resets where replicas switch) may want the function name.
            prev = self.func_hint
            self.func_hint = e.func.name
            try:
                return functions.call(self, e)
            finally:
                self.func_hint = prev
        raise PromQLError("bad_data", f"unsupported expression {type(e).__name__}")

    # -- time helpers ------------------------------------------------------------------------
    def at_ms(self, node) -> int | None:
        at = node.at
        if at is None:
            return None
        if at.type == ast.AtModifierType.Start:
            return self.sh.start
        if at.type == ast.AtModifierType.End:
            return self.sh.end
        return at.ms

    def _times(self, node, span: int, ahead: int = 0) -> np.ndarray:
        """The time each step is evaluated at, after @ and offset; ``span`` (the range or
        lookback reaching back from it) and ``ahead`` (a smoothed selector's look forward) must
        stay within int64 too."""
        at = self.at_ms(node)
        off = dur_ms(node.offset)
        if at is not None:
            lo = hi = at
        elif self.T:
            lo, hi = int(self.steps[0]), int(self.steps[-1])
        else:
            lo = hi = 0
        if lo - off - span - 1 <= INT64_MIN or hi - off + ahead >= INT64_MAX:
            raise PromQLError("bad_data", "evaluation time out of range after @ and offset modifiers")
        base = self.steps if at is None else np.full(self.T, at, dtype=np.int64)
        return base - off if off else base  # read only, as the steps are everywhere

    def _eval_ts(self, node) -> np.ndarray:
        return self.steps

    # -- selectors ---------------------------------------------------------------------------
    def matchers_of(self, vs) -> list[Matcher]:
        return list(selector_matchers(vs))

    def _select(self, vs, mint: int, maxt: int, range_ms: int = 0):
        return self.select_series(self._checked_matchers(vs), mint, maxt, range_ms)

    def _checked_matchers(self, vs) -> list[Matcher]:
        ms = self.matchers_of(vs)
        if all(m.matches_empty() for m in ms):
            raise PromQLError("bad_data", "vector selector must contain at least one non-empty matcher")
        return ms

    def select_series(self, ms: list[Matcher], mint: int, maxt: int, range_ms: int = 0) -> Selected:
        """The series ``ms`` selects, samples in [mint, maxt], sorted by labels, counted on the
        sample budget."""
        with_hints = getattr(self.sh.q, "select_with_hints", None)
        got = (with_hints(ms, mint, maxt, func=self.func_hint, range_ms=range_ms)
               if with_hints is not None else self.sh.q.select(ms, mint, maxt))
        return self._selected(got, mint, maxt)

    def _selected(self, got, mint: int, maxt: int) -> Selected:
        if isinstance(got, SeriesBatch):  # a store answer decoded as columns: no per-series work
            sel = selected.from_batch(got, mint, maxt)
        else:
            sel = selected.from_rows(self._rows(got, mint, maxt))
        self.sh.loaded += len(sel.ts)
        return sel

    def _rows(self, got, mint: int, maxt: int) -> list:
        """Series by series: (labels, ts, vals, hists, start timestamps), non-empty, sorted."""
        out = []
        want_st = self._wants_start_timestamps()
        for s in got:
            self.sh.check_deadline()
            ts, vals, hs = np.asarray(s.ts, dtype=np.int64), np.asarray(s.vals, dtype=np.float64), s.hists
            sliced = bool(len(ts)) and (ts[0] < mint or ts[-1] > maxt)  # stores mostly answer within range
            if sliced:
                lo, hi = np.searchsorted(ts, mint, side="left"), np.searchsorted(ts, maxt, side="right")
                ts, vals = ts[lo:hi], vals[lo:hi]
                hs = None if hs is None else hs[lo:hi]
            if hs is not None and self.stats:
                hs = _stats_hints(hs)
            sts = getattr(s, "sts", None) if want_st else None
            if sts is not None:
                sts = np.asarray(sts, dtype=np.int64)[lo:hi] if sliced else np.asarray(sts, dtype=np.int64)
            if len(ts):
                out.append((s.labels, ts, vals, hs, sts))
        out.sort(key=lambda x: x[0])
        return out

    def _wants_start_timestamps(self) -> bool:
        """Prometheus reads start timestamps only with use-start-timestamps, and only for the
        functions that use them (the selector is their direct argument)."""
        return (USE_START_TIMESTAMPS in self.sh.opts.features
                and self.func_hint in ("rate", "irate", "increase", "resets", "start_timestamp"))

    def vector_selector(self, vs) -> Vec:
        lb = self.sh.opts.lookback_delta_ms
        smoothed = rangeext.selector_mode(vs) == rangeext.SMOOTHED
        E = self._times(vs, lb, lb if smoothed else 0)
        if self.T == 0:
            return empty_vec(0)
        if smoothed:
            return self._smoothed_selector(vs, E, lb)
        # E ascends (steps minus an offset, or all the @ time): its ends are its min and max
        mint, maxt = int(E[0]) - lb + 1, int(E[-1])
        parts = self._selected_parts(vs, mint, maxt) or [self._select(vs, mint, maxt)]
        return concat_vecs([self.lookup(s, E) for s in parts])

    def lookup(self, series: Selected, E: np.ndarray) -> Vec:
        """The instant vector of ``series`` at the times ``E``: each step's latest sample within
        the lookback delta, unless it is a staleness marker."""
        lb = self.sh.opts.lookback_delta_ms
        n = len(series)
        self.sh.reserve(n * self.T)
        if series.floats_only:
            vals, pres, sts = _last_samples(series, E, lb)
            keep = pres.any(1) if n != 1 else np.array([np.count_nonzero(pres) > 0])
            labels = series.labels
            if np.count_nonzero(keep) < n:
                labels = [l for l, k in zip(labels, keep.tolist()) if k]
                vals, pres, sts = vals[keep], pres[keep], sts[keep]
            return Vec(list(labels), vals, pres, np.zeros(len(labels), dtype=bool), sts)
        vals = np.zeros((n, self.T))
        pres = np.zeros((n, self.T), dtype=bool)
        sts = np.zeros((n, self.T), dtype=np.int64)
        starts = None
        hist = None
        labels = []
        for i, (l, ts, v, hs, st) in enumerate(series.rows()):
            self.sh.check_deadline()
            idx = np.searchsorted(ts, E, side="right") - 1
            ok = idx >= 0
            ic = np.where(ok, idx, 0)
            ok &= ts[ic] > E - lb
            ok &= ~is_stale(v[ic])
            vals[i] = v[ic]
            pres[i] = ok
            sts[i] = ts[ic]
            if st is not None:
                if starts is None:
                    starts = np.zeros((n, self.T), dtype=np.int64)
                starts[i] = st[ic]
            if hs is not None:
                if hist is None:
                    hist = np.full((n, self.T), None, dtype=object)
                hist[i] = np.where(ok, hs[ic], None)
            labels.append(l)
        keep = pres.any(1)
        if not keep.all():
            labels = [l for l, k in zip(labels, keep) if k]
            vals, pres, sts = vals[keep], pres[keep], sts[keep]
            hist = None if hist is None else hist[keep]
            starts = None if starts is None else starts[keep]
        return Vec(labels, vals, pres, np.zeros(len(labels), dtype=bool), sts, hist, starts)

    def _smoothed_selector(self, vs, E: np.ndarray, lb: int) -> Vec:
        """``x smoothed``: each step's value interpolated between the samples around it."""
        series = self._select(vs, int(E.min()) - lb + 1, int(E.max()) + lb)
        n = len(series)
        self.sh.reserve(n * self.T)
        vals = np.zeros((n, self.T))
        pres = np.zeros((n, self.T), dtype=bool)
        hist = None
        for i, (l, ts, v, hs, _) in enumerate(series.rows()):
            self.sh.check_deadline()
            live = ~is_stale(v)
            ts, v, hs = ts[live], v[live], None if hs is None else hs[live]
            if not len(ts):
                continue
            vals[i], pres[i], hrow = rangeext.smoothed_row(self, ts, v, hs, E, lb, _metric_name(l))
            if hrow is not None:
                if hist is None:
                    hist = np.full((n, self.T), None, dtype=object)
                hist[i] = hrow
        keep = pres.any(1)
        labels = [l for l, k in zip(series.labels, keep.tolist()) if k]
        return Vec(labels, vals[keep], pres[keep], np.zeros(len(labels), dtype=bool), None,
                   None if hist is None else hist[keep])

    def matrix_selector(self, ms) -> Matrix:
        vs = ms.vector_selector
        rng = dur_ms(ms.range)
        mode = rangeext.selector_mode(vs)
        ext = rangeext.Extended(mode, self.sh.opts.lookback_delta_ms) if mode else None
        E = self._times(vs, rng + (ext.lookback if ext else 0),
                        ext.lookback if ext is not None and ext.mode == rangeext.SMOOTHED else 0)
        if self.T == 0:
            return Matrix([], [], [], np.zeros(0, bool), E, rng, self._eval_ts(vs), ext=ext)
        wend, wrng = ext.window(E, rng) if ext else (E, rng)
        return self._matrix(vs, self._select(vs, int(wend.min()) - wrng + 1, int(wend.max()),
                                             range_ms=rng), E, rng, ext)

    def _matrix(self, vs, sel: Selected, E: np.ndarray, rng: int, ext) -> Matrix:
        s = selected.without_stale(sel)
        return Matrix(list(s.labels), s.split(s.ts), s.split(s.vals), np.zeros(len(s), bool), E, rng,
                      self._eval_ts(vs), s.hists, ext=ext, sts=s.sts, cat=(s.ts, s.vals, s.offs))

    def matrix_parts(self, e) -> Iterator[Matrix] | None:
        """A range function's plain matrix selector argument as Matrix slices of its series
        (labels ascending across them), decoded one after the other where the queryable can
        (see _selected_parts); None where it cannot (then range_arg)."""
        ms = unparen(e)
        if (not isinstance(ms, ast.MatrixSelector) or self.T == 0
                or rangeext.selector_mode(ms.vector_selector)):
            return None
        self.sh.check_deadline()
        vs = ms.vector_selector
        rng = dur_ms(ms.range)
        E = self._times(vs, rng)
        parts = self._selected_parts(vs, int(E.min()) - rng + 1, int(E.max()), rng)
        return None if parts is None else (self._matrix(vs, s, E, rng, None) for s in parts)

    def _selected_parts(self, vs, mint: int, maxt: int, range_ms: int = 0
                        ) -> Iterator[Selected] | None:
        """The selection of ``vs`` as slices of its series, each decoded only when the one
        before is done with (types.SeriesParts: a big selection feeding a function that goes
        series by series reuses the same memory); None where the queryable cannot slice."""
        select_parts = getattr(self.sh.q, "select_parts", None)
        if select_parts is None:
            return None
        got = select_parts(self._checked_matchers(vs), mint, maxt, func=self.func_hint,
                           range_ms=range_ms, steps=self.T)
        if not isinstance(got, SeriesParts):
            return iter([self._selected(got, mint, maxt)])
        return (self._selected(part, mint, maxt) for part in got.parts())

    def range_arg(self, e):
        """A range function's matrix argument. A matrix selector's samples are not held on the
        budget as a whole: Prometheus buffers one series' window at a time, so only the function's
        output and the widest window count (functions._apply). A subquery's steps are held."""
        inner = unparen(e)
        if isinstance(inner, ast.MatrixSelector):
            self.sh.check_deadline()
            return self.matrix_selector(inner)
        return self.eval(e)

    def subquery(self, sq) -> Matrix:
        rng = dur_ms(sq.range)
        step = dur_ms(sq.step) or DEFAULT_SUBQUERY_STEP_MS
        E = self._times(sq, rng + step)
        if self.T == 0:
            return Matrix([], [], [], np.zeros(0, bool), E, rng, self._eval_ts(sq))
        lo = int(E.min()) - rng
        first = (lo // step + 1) * step  # windows are left-open: first aligned time > lo
        last = (int(E.max()) // step) * step
        self.sh.reserve(max(0, (last - first) // step + 1))  # every inner node holds >= a row
        grid = np.arange(first, last + 1, step, dtype=np.int64)
        inner = Evaluator(self.sh, grid).eval(sq.expr)
        if isinstance(inner, Scalar):
            inner = Vec([()], inner.vals[None, :], np.ones((1, len(grid)), bool), np.zeros(1, bool))
        if not isinstance(inner, Vec):
            raise PromQLError("bad_data", "subquery is only allowed on instant vector")
        labels, tss, valss, drop, hss = [], [], [], [], []
        for i, l in enumerate(inner.labels):
            self.sh.check_deadline()
            p = inner.present[i]
            if p.any():
                labels.append(l)
                tss.append(grid[p])
                valss.append(inner.vals[i][p])
                drop.append(inner.drop[i])
                hss.append(None if inner.hist is None else _unknown_hints(inner.hist[i][p]))
        any_h = any(h is not None for h in hss)
        return Matrix(labels, tss, valss, np.array(drop, dtype=bool), E, rng, self._eval_ts(sq),
                      hss if any_h else None)


def _last_samples(series: Selected, E: np.ndarray, lb: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every float series' newest sample at or before each step, in one C pass over all series
    laid end to end: (vals, present, sample_ts), each [n, T]. Present where that sample is newer
    than the lookback and not a staleness marker."""
    n, T = len(series), len(E)
    x, ok, st = last_samples(series.ts, series.vals, series.offs, np.ascontiguousarray(E, dtype=np.int64),
                             int(lb))
    return (np.frombuffer(x, dtype=np.float64).reshape(n, T), np.frombuffer(ok, dtype=np.bool_).reshape(n, T),
            np.frombuffer(st, dtype=np.int64).reshape(n, T))


def selector_matchers(vs) -> tuple[Matcher, ...]:
    """A selector's matchers, its metric name as a ``__name__`` matcher first; built (and
    their regexes compiled) once per syntax tree, kept on the selector node."""
    ms = vs.store_matchers
    if ms is None:
        try:
            got = [Matcher(_op_of(m), m.name, m.value) for m in vs.matchers.matchers]
        except InvalidRegex as e:
            raise PromQLError("bad_data", str(e)) from None
        if vs.name is not None and not any(m.name == "__name__" for m in got):
            got.insert(0, Matcher(MatchType.EQ, "__name__", vs.name))
        ms = vs.store_matchers = tuple(got)
    return ms


def _stats_hints(hs: np.ndarray) -> np.ndarray:
    """Unknown hints become reset/not_reset by comparing with the previous histogram."""
    from querier.promql import nhist
    out = hs.copy()
    last = None
    for k, h in enumerate(hs):
        if h is None:
            continue
        if h.hint == nhist.UNKNOWN and last is not None:
            h = h.copy()
            h.hint = nhist.RESET if h.detect_reset(last) else nhist.NOT_RESET
            out[k] = h
        last = h
    return out


def _unknown_hints(hs: np.ndarray) -> np.ndarray:
    """Subquery output forgets reset/not_reset hints: samples may be skipped or repeated."""
    from querier.promql import nhist
    out = hs.copy()
    for k, h in enumerate(hs):
        if h is not None and h.hint in (nhist.RESET, nhist.NOT_RESET):
            h = h.copy()
            h.hint = nhist.UNKNOWN
            out[k] = h
    return out


def _metric_name(l) -> str:
    return dict(l).get("__name__", "")


def _op_of(m) -> MatchType:
    return ast.STORE_MATCH_TYPES[m.op]


def parse(query: str, param: str = "query", features: frozenset[str] = frozenset()):
    """The syntax tree of a query, after the text passed the bounds the parser needs; syntax
    whose feature is off is refused as Prometheus's parser refuses it."""
    check_query(query, param=param)
    try:
        return parse_syntax(query, parser_options(features))
    except ParseError as ex:
        raise PromQLError("bad_data", f"invalid parameter \"{param}\": {ex}") from None


def resolve_durations(expr, query: str, step_ms: int, range_ms: int) -> None:
    """Duration expressions (``[step() * 2]``, ``offset range()``) take this query's step and
    range; an unusable result is refused as Prometheus refuses it."""
    try:
        ast.resolve_durations(expr, step_ms, range_ms, byte_pos=lambda p: len(query[:p].encode()))
    except ast.DurationError as ex:
        raise PromQLError("bad_data", f"invalid parameter \"query\": {ex}") from None


def _kind(e) -> str:
    e = unparen(e)
    if isinstance(e, (ast.MatrixSelector, ast.SubqueryExpr)):
        return "matrix"
    if isinstance(e, ast.StringLiteral):
        return "string"
    return "other"


class Engine:
    def __init__(self, opts: EngineOptions = EngineOptions(), timeout_s: float | None = None
                 ) -> None:
        """``timeout_s``: this engine's own, instead of ``opts.timeout_s`` (a query's time left,
        without a copy of the options per query)."""
        self.opts = opts
        self.timeout_s = opts.timeout_s if timeout_s is None else timeout_s
        self.last: _Shared | None = None  # the state of the last query, for its statistics

    def _shared(self, q: Queryable, start: int, end: int) -> _Shared:
        self.last = _Shared(q, self.opts, start, end, time.monotonic() + self.timeout_s)
        return self.last

    def sample_stats(self) -> tuple[int, int]:
        """(samples read, peak samples held) of the last query."""
        return (self.last.loaded, self.last.peak) if self.last is not None else (0, 0)

    def instant(self, q: Queryable, query: str, t_ms: int, expr=None) -> QueryResult:
        """``expr``: ``query`` already parsed (by the caller, e.g. to plan where to run it)."""
        expr = parse(query, features=self.opts.features) if expr is None else expr
        _check_time(t_ms, "time")
        resolve_durations(expr, query, 0, 0)
        sh = self._shared(q, t_ms, t_ms)
        v = _evaluate(Evaluator(sh, np.array([t_ms], dtype=np.int64)), expr)
        if isinstance(v, Scalar):
            return QueryResult("scalar", (t_ms, float(v.vals[0])), sh.warnings, sh.infos)
        if isinstance(v, Str):
            return QueryResult("string", (t_ms, v.val), sh.warnings, sh.infos)
        if isinstance(v, Matrix):
            out = []
            keep = [not d for d in v.drop]
            from querier.promql.values import drop_name
            seen = set()
            for i, l in enumerate(v.labels):
                ts, vals = v.ts[i], v.vals[i]
                hrow = v.hists[i] if v.hists is not None else None
                end = int(v.end[0])
                lo, hi = np.searchsorted(ts, [end - v.rng, end], side="right")
                if v.ext is not None:  # the boundary points sit on the window's edges
                    got = rangeext.extended_points(ts, vals, hrow, end, v.rng, v.ext)
                    if got is None:
                        continue
                    (ts, vals), hrow, lo, hi = got, None, 0, len(got[0])
                if hi > lo:
                    ll = l if keep[i] else drop_name(l)
                    if ll in seen:
                        raise PromQLError("execution", "vector cannot contain metrics with the same labelset")
                    seen.add(ll)
                    vv = vals[lo:hi].copy()
                    if hrow is not None:
                        hh = hrow[lo:hi]
                        if any(h is not None for h in hh):
                            vv = vv.astype(object)
                            m = hh != None  # noqa: E711
                            vv[m] = hh[m]
                    out.append((ll, ts[lo:hi].copy(), vv))
            out.sort(key=lambda x: x[0])
            return QueryResult("matrix", out, sh.warnings, sh.infos)
        v = finalize(v)
        rows = [(l, t_ms, float(v.vals[i, 0]) if v.hist is None or v.hist[i, 0] is None else v.hist[i, 0])
                for i, l in enumerate(v.labels) if v.present[i, 0]]
        rows = _order(expr, rows)
        return QueryResult("vector", rows, sh.warnings, sh.infos)

    def range(self, q: Queryable, query: str, start_ms: int, end_ms: int, step_ms: int,
              expr=None) -> QueryResult:
        expr = parse(query, features=self.opts.features) if expr is None else expr
        if step_ms <= 0:
            raise PromQLError("bad_data", "zero or negative query resolution step widths are not accepted")
        if end_ms < start_ms:
            raise PromQLError("bad_data", "end timestamp must not be before start time")
        k = _kind(expr)
        if k != "other":
            t = "range vector" if k == "matrix" else "string"
            raise PromQLError("bad_data", f"invalid parameter \"query\": invalid expression type \"{t}\" "
                                          "for range query, must be Scalar or instant Vector")
        _check_time(start_ms, "start")
        _check_time(end_ms, "end")
        resolve_durations(expr, query, step_ms, end_ms - start_ms)
        sh = self._shared(q, start_ms, end_ms)
        sh.reserve((end_ms - start_ms) // step_ms + 1)
        steps = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        sh.step = step_ms
        v = _evaluate(Evaluator(sh, steps), expr)
        if isinstance(v, Scalar):
            return QueryResult("matrix", [((), steps.copy(), v.vals.copy())], sh.warnings, sh.infos)
        v = finalize(v)
        out = []
        rows = (np.flatnonzero(v.present.any(1)).tolist() if len(v.labels) != 1 else
                [0] if np.count_nonzero(v.present) else [])  # one series: no reductions
        for i in rows:  # e.g. topk: few rows of many
            p = v.present[i]
            out.append((v.labels[i], steps[p], row_values(v, i, p)))
        out.sort(key=lambda x: x[0])
        return QueryResult("matrix", out, sh.warnings, sh.infos)


def _check_time(t_ms: int, name: str) -> None:
    if not INT64_MIN < t_ms < INT64_MAX:
        raise PromQLError("bad_data", f'invalid parameter "{name}": timestamp out of range')


def _evaluate(ev: Evaluator, expr):
    """Evaluate the whole tree; the guard keeps it shallow, this keeps any miss a clean 400."""
    try:
        return ev.eval(expr)
    except RecursionError:
        raise PromQLError("bad_data", "query nests too deeply to evaluate") from None


def _order(expr, rows):
    """Instant results of sort()/topk() etc. come back in their value order."""
    e = unparen(expr)
    if isinstance(e, ast.Call) and e.func.name in ("sort", "sort_desc"):
        desc = e.func.name == "sort_desc"
        return sorted(rows, key=lambda r: (np.isnan(r[2]), -r[2] if desc else r[2]))
    if isinstance(e, ast.Call) and e.func.name in ("sort_by_label", "sort_by_label_desc"):
        return rows  # functions.py already ordered them
    if isinstance(e, ast.AggregateExpr) and str(e.op) in ("topk", "bottomk"):
        desc = str(e.op) == "topk"
        return sorted(rows, key=lambda r: (np.isnan(r[2]), -r[2] if desc else r[2]))
    return sorted(rows, key=lambda r: r[0])
