"""A range query that is one plain selector (``x{instance="i-7"}``), answered without the engine.

The one-series dashboard panel is the most frequent query there is, and the engine's walk over
it (evaluator, node dispatch, selector, lookup, budget and deadline checks, finalization)
costs several times the C work it wraps: decoding the fetched chunks and finding each step's
latest sample. Here the same C calls run directly on the data fetched for the query's select
(querier.inline), for exactly the case where the engine's answer is just that: float series
with distinct labels, no modifiers, within the sample limit. Anything else returns None and
the engine evaluates as always, so every error and edge case keeps its one implementation.
"""
from __future__ import annotations

import numpy as np

from querier.promql import ast
from querier.promql.engine import INT64_MAX, INT64_MIN, _last_samples
from querier.promql.selected import from_batch
from querier.promql.types import QueryResult

from .fanout import FanoutQueryable, float_batch


def plain_selector(expr) -> ast.VectorSelector | None:
    """``expr`` if it is a bare vector selector without @, offset or smoothing (the engine's
    lookup of it is the whole evaluation), else None."""
    if (type(expr) is ast.VectorSelector and expr.at is None and expr.offset is None
            and expr.offset_expr is None and not expr.anchored and not expr.smoothed):
        return expr
    return None


def plain_range(fanout: FanoutQueryable, raw: list, start_ms: int, end_ms: int, step_ms: int,
                lookback_ms: int, max_samples: int) -> QueryResult | None:
    """The engine's matrix for a plain selector over the raw series ``raw`` fetched for
    [start - lookback + 1, last step], or None where the engine must decide (replicas or
    several stores to merge, native histograms, overlapping chunks, the sample limit, a
    passed deadline, times at the edge of int64)."""
    if not INT64_MIN < start_ms - lookback_ms - 1 or not end_ms < INT64_MAX:
        return None
    if fanout.opts.max_resolution_ms:
        return None  # downsampled data: the engine's selects
    steps = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
    steps_n = len(steps)
    mint, maxt = start_ms - lookback_ms + 1, int(steps[-1])
    batch = float_batch(raw, mint, maxt)
    if batch is None:
        return None
    sel = from_batch(batch, mint, maxt)
    n = len(sel)
    if steps_n + n * steps_n > max_samples:  # the engine's budget: its steps, then the lookup
        return None
    if fanout.deadline is not None and fanout.loop.time() >= fanout.deadline:
        return None
    vals, present, _ = _last_samples(sel, steps, lookback_ms)
    out = []
    for i, lbls in enumerate(sel.labels):
        p = present[i]
        if p.any():
            out.append((lbls, steps[p], vals[i][p]))
    return QueryResult("matrix", out)
