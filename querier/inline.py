"""Small queries evaluated on the event loop, without the worker thread.

A query in a worker thread pays two hops between threads per store select (the worker asks the
loop for the data and waits for it) plus one for the whole evaluation: a few hundred
microseconds of CPU and wake-ups, more than evaluating a one-series dashboard query costs. So a
query whose plan is cheap runs on the loop instead: the engine evaluates with a queryable that
answers only selects already fetched; a select not fetched yet stops the evaluation
(:class:`_NeedSelect`), the loop fetches it asynchronously and evaluates again.

The loop must never be held by a big query: before each evaluation the work is bounded by
:func:`inline_cost` (syntax-tree nodes x (steps x series + samples x windows per step)), with
the series and samples counted from the fetched chunks' headers before anything is decoded.
A query over the bound (or with a subquery, downsampled data, native histograms, more selects)
goes to the worker as before, keeping what was fetched so far (:meth:`FanoutQueryable.keep`).
"""
from __future__ import annotations

import itertools
import operator
import struct
from dataclasses import dataclass

from querier.promql import PromQLError, ast
from querier.promql.engine import INT64_MAX, INT64_MIN, selector_matchers, unparen
from storeapi.client import RawSeries, chunk_count, float_only

from .fanout import FanoutQueryable, merge_raw_series


@dataclass(frozen=True)
class InlineLimits:
    """What a query evaluated on the event loop may cost; anything more goes to the worker."""

    max_query_chars: int = 1024   # longer text is parsed in the worker, not on the loop
    max_nodes: int = 24           # syntax-tree nodes
    max_selects: int = 2          # store selects (each one evaluation restart)
    max_series: int = 64          # series fetched, over all selects
    max_chunks: int = 512         # chunks fetched, over all selects
    max_samples: int = 32_768     # samples in those chunks (from their headers)
    max_cost: int = 100_000       # inline_cost(): about the element-operations allowed


DEFAULT_INLINE_LIMITS = InlineLimits()


class _NeedSelect(BaseException):
    """A select whose data is not fetched yet. A BaseException: no ``except Exception`` in the
    engine may take it for a query error."""

    def __init__(self, key: tuple, range_ms: int) -> None:
        super().__init__()
        self.key = key
        self.range_ms = range_ms


class _Decline(BaseException):
    """This select cannot be answered on the loop (downsampled data): use the worker."""


def plan_nodes(expr, limits: InlineLimits = DEFAULT_INLINE_LIMITS) -> int | None:
    """The number of syntax-tree nodes of ``expr`` if its plan may run on the loop (no subquery:
    its inner steps are not bounded by the query's), else None."""
    if type(expr) is ast.VectorSelector:  # the one-series panel: no walk over one node
        return 1 if limits.max_nodes >= 1 else None
    n = 0
    for node in ast.walk(expr):
        n += 1
        if n > limits.max_nodes or isinstance(node, ast.SubqueryExpr):
            return None
    return n


def plan_selects(expr, first_ms: int, last_ms: int, lookback_ms: int
                 ) -> list[tuple[tuple, int]]:
    """(select key, range) of every select the plan alone tells, for a query whose steps run
    from ``first_ms`` to ``last_ms``: each plain selector (a vector selector, or a range
    selector under a function; offset allowed) with no @ and no duration expression. Fetched
    before the engine runs, the engine needs no stop and restart for them; others are left to
    the engine to ask for (a wrong guess would only cost a wasted store call)."""
    if type(expr) is ast.VectorSelector:  # the one-series panel: no walk over one node
        key = _select_of(expr, 0, first_ms, last_ms, lookback_ms)
        return [key] if key is not None else []
    if isinstance(unparen(expr), ast.MatrixSelector):
        return []  # a range query refuses it; an instant one is rare
    ranges: dict[int, int] = {}  # id of a range selector's vector selector -> its range
    vectors = []
    for node in ast.walk(expr):
        if isinstance(node, ast.VectorSelector):
            vectors.append(node)
        elif isinstance(node, ast.MatrixSelector):
            if node.range_expr is not None or node.range is None:
                ranges[id(node.vector_selector)] = -1
            else:
                ranges[id(node.vector_selector)] = ast.timedelta_ms(node.range)
        elif isinstance(node, ast.SubqueryExpr):
            return []
    out: list[tuple[tuple, int]] = []
    for vs in vectors:
        range_ms = ranges.get(id(vs), 0)
        if range_ms >= 0 and (key := _select_of(vs, range_ms, first_ms, last_ms,
                                                lookback_ms)) is not None and key not in out:
            out.append(key)
    return out


_MATCHES_EMPTY = operator.methodcaller("matches_empty")


def _select_of(vs: ast.VectorSelector, range_ms: int, first_ms: int, last_ms: int,
               lookback_ms: int) -> tuple[tuple, int] | None:
    """(select key, range) of the plain selector ``vs`` (range 0: not under a range) for
    :func:`plan_selects`, or None when the engine is to ask for it, or to refuse it."""
    if vs.at is not None or vs.offset_expr is not None or vs.anchored or vs.smoothed:
        return None
    off = ast.timedelta_ms(vs.offset) if vs.offset is not None else 0
    mint, maxt = first_ms - off - (range_ms or lookback_ms) + 1, last_ms - off
    if mint - 2 <= INT64_MIN or maxt >= INT64_MAX:
        return None  # the engine refuses it
    try:  # (a plain selector's tree has them already: no call)
        ms = vs.store_matchers or selector_matchers(vs)
    except PromQLError:
        return None  # the engine answers the error
    if all(map(_MATCHES_EMPTY, ms)):
        return None
    return (ms, mint, maxt), range_ms


def inline_cost(nodes: int, steps: int, series: int, samples: int, windows: int) -> int:
    """An upper estimate of the evaluation's elementary operations: every node may touch every
    (series, step) cell, and a range function every sample once per window covering it."""
    return nodes * (steps * max(series, 1) + samples * max(windows, 1))


def fits_inline(lim: InlineLimits, nodes: int, steps: int, series: int = 0, chunks: int = 0,
                samples: int = 0, windows: int = 0) -> bool:
    """Whether an evaluation of these totals stays on the loop (``lim``)."""
    return (series <= lim.max_series and chunks <= lim.max_chunks and samples <= lim.max_samples
            and inline_cost(nodes, steps, series, samples, windows) <= lim.max_cost)


async def fetch_plain(fanout: FanoutQueryable, key: tuple, nodes: int, steps: int,
                      limits: InlineLimits) -> list[RawSeries] | None:
    """The series of a query's one select without a range (a plain selector: no windows), as
    :class:`InlineQuery` would fetch and count them, when they fit on the loop; else None with
    the fetched data kept for the worker, as InlineQuery leaves it. One function, not an
    InlineQuery, for the one-series panel, the most frequent query (querier.plainrange)."""
    if not limits.max_selects or not fits_inline(limits, nodes, steps):
        return None
    matchers, mint, maxt = key
    raw = await fanout.fetch(list(matchers), mint, maxt)
    fits, series, chunks, samples = _added(limits, raw, 0, 0)
    if fits and fits_inline(limits, nodes, steps, series, chunks, samples):
        return raw
    fanout.keep(key, raw)
    return None


def _added(lim: InlineLimits, raw: list[RawSeries], series: int, chunks: int
           ) -> tuple[bool, int, int, int]:
    """(fits, series, chunks, samples of ``raw``): the fetched selection ``raw`` added to the
    totals ``series`` and ``chunks`` in the order that bounds the work -- its series (and
    whether any holds native histograms, decoded sample by sample: not for the loop), then
    its chunks, then their samples, each counted only when the totals before it are within
    ``lim``; not fits as soon as one is over (the rest then uncounted)."""
    series += len(raw)
    if series > lim.max_series or not float_only(raw):
        return False, series, chunks, 0
    chunks += chunk_count(raw)
    if chunks > lim.max_chunks:
        return False, series, chunks, 0
    return True, series, chunks, _samples(raw)


def _samples(raw: list[RawSeries]) -> int:
    """Samples in the fetched chunks: every Prometheus chunk starts with its big-endian 16-bit
    sample count (read in C steps; a chunk shorter than that is counted as it begins)."""
    try:
        return sum(map(_FIRST, map(_U16, map(_DATA, itertools.chain.from_iterable(
            map(_CHUNKS, raw))))))
    except struct.error:
        return sum(int.from_bytes(c[2][:2], "big") for s in raw for c in s.chunks)


_CHUNKS, _DATA, _FIRST = (operator.attrgetter("chunks"), operator.itemgetter(2),
                          operator.itemgetter(0))
_U16 = struct.Struct(">H").unpack_from


class LoopQueryable:
    """The engine's queryable on the loop: selects answered from ``raw`` (fetched by
    :class:`InlineQuery`); any other select raises :class:`_NeedSelect`."""

    def __init__(self, fanout: FanoutQueryable, raw: dict[tuple, list[RawSeries]] | None = None
                 ) -> None:
        self.fanout = fanout
        self.raw: dict[tuple, list[RawSeries]] = {} if raw is None else raw

    def select(self, matchers, mint: int, maxt: int):
        return self.select_with_hints(matchers, mint, maxt)

    def select_with_hints(self, matchers, mint: int, maxt: int, func: str | None = None,
                          range_ms: int = 0):
        dedup, counter, res = self.fanout.select_plan(func, range_ms)
        if res > 0:
            raise _Decline()
        key = FanoutQueryable.select_key(matchers, mint, maxt)
        raw = self.raw.get(key)
        if raw is None:
            raise _NeedSelect(key, range_ms)
        return merge_raw_series(raw, mint, maxt, dedup, counter)


class InlineQuery:
    """Evaluate ``run(engine, queryable)`` on the loop while :func:`inline_cost` stays within
    ``limits``; ``evaluate()`` returns None when the query must go to the worker instead."""

    def __init__(self, fanout: FanoutQueryable, nodes: int, steps: int, step_ms: int,
                 limits: InlineLimits = DEFAULT_INLINE_LIMITS) -> None:
        self.fanout = fanout
        self.raw: dict[tuple, list[RawSeries]] = {}  # fetched selects (the engine's LoopQueryable)
        self.nodes = nodes
        self.steps = steps
        self.step_ms = step_ms
        self.limits = limits
        self.series = self.chunks = self.samples = self.windows = 0

    def _fits(self) -> bool:
        return fits_inline(self.limits, self.nodes, self.steps, self.series, self.chunks,
                           self.samples, self.windows)

    def seed(self, key: tuple, raw: list[RawSeries]) -> "InlineQuery":
        """This query with a select already fetched (by :func:`fetch_plain`) and counted."""
        self.raw[key] = raw
        self._count(raw, 0)
        return self

    def _count(self, raw: list[RawSeries], range_ms: int) -> bool:
        """Add a fetched selection to the totals; False when it is too big (or holds native
        histograms, decoded sample by sample) for the loop."""
        fits, self.series, self.chunks, samples = _added(self.limits, raw, self.series,
                                                         self.chunks)
        if not fits:
            return False
        self.samples += samples
        if range_ms:  # a sample is in every window covering it: at most one per step
            per_step = -(-range_ms // self.step_ms) if self.step_ms > 0 else 1
            self.windows = max(self.windows, min(per_step, self.steps))
        return self._fits()

    async def _fetch(self, key: tuple, range_ms: int) -> bool:
        """Fetch a select's data; False when it may not (more selects than allowed) or the
        query no longer fits the loop."""
        if len(self.raw) >= self.limits.max_selects:
            return False
        matchers, mint, maxt = key
        raw = await self.fanout.fetch(list(matchers), mint, maxt)
        self.raw[key] = raw
        return self._count(raw, range_ms)

    async def evaluate(self, run, planned: list[tuple[tuple, int]] = ()):
        """The query's result, ``run(queryable)`` (the engine's evaluation), or None: hand it
        to the worker (data fetched so far is kept in the fanout queryable, so the worker does
        not fetch it again). ``planned``: (key, range) of selects to fetch before evaluating
        (:func:`plan_selects`)."""
        if not self._fits():
            return None
        fits = True
        for key, range_ms in planned[:self.limits.max_selects]:
            if not (fits := await self._fetch(key, range_ms)):
                break
        queryable = LoopQueryable(self.fanout, self.raw)
        for _ in range(self.limits.max_selects + 1):
            if not fits:
                break
            try:
                return run(queryable)
            except _Decline:
                break
            except _NeedSelect as e:
                fits = await self._fetch(e.key, e.range_ms)
        for key, raw in self.raw.items():
            self.fanout.keep(key, raw)
        return None
