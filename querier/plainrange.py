"""A range query that is one plain selector (``x{instance="i-7"}``), answered without the engine.

The one-series dashboard panel is the most frequent query there is, and the engine's walk over
it (evaluator, node dispatch, selector, lookup, budget and deadline checks, finalization)
costs several times the C work it wraps: decoding the fetched chunks and finding each step's
latest sample. Here the chunk decoder and one C pass that keeps only the present points
(present_samples) run directly on the data fetched for the query's select (querier.inline), for
exactly the case where the engine's answer is just that: float series with distinct labels, no
modifiers, within the sample limit, no ``stats`` asked; a range query's answer is then written
as JSON in C straight from present_samples' output (_pointsjson.matrix_body). Anything else
returns None and the engine evaluates as always, so every error and edge case keeps its one
implementation.
"""
from __future__ import annotations

import itertools
import operator

import numpy as np

from querier._pointsjson import matrix_body
from querier.promql import ast
from querier.promql._rangec import present_samples
from querier.promql.engine import INT64_MAX, INT64_MIN
from querier.promql.types import QueryResult
from receiver.tsdb._chunkenc import xor_decode_series
from storeapi.client import float_only

from .fanout import FanoutQueryable

_LABELS, _CHUNKS = operator.attrgetter("labels"), operator.attrgetter("chunks")


def plain_selector(expr) -> ast.VectorSelector | None:
    """``expr`` if it is a bare vector selector without @, offset or smoothing (the engine's
    lookup of it is the whole evaluation), else None."""
    if (type(expr) is ast.VectorSelector and expr.at is None and expr.offset is None
            and expr.offset_expr is None and not expr.anchored and not expr.smoothed):
        return expr
    return None


def _present(fanout: FanoutQueryable, raw: list, start_ms: int, step_ms: int, steps_n: int,
             lookback_ms: int) -> tuple[list, tuple] | None:
    """(labels, present_samples' answer) of ``raw`` at the steps, or None where the engine must
    decide (downsampled data, native histograms, replicas or several stores to merge,
    overlapping chunks, times at the edge of int64)."""
    last_ms = start_ms + (steps_n - 1) * step_ms
    if not INT64_MIN < start_ms - lookback_ms - 1 or not last_ms < INT64_MAX:
        return None
    if fanout.opts.max_resolution_ms:
        return None  # downsampled data: the engine's selects
    if not float_only(raw):
        return None
    labels = list(map(_LABELS, raw))
    if len(labels) > 1 and not all(map(operator.lt, labels, itertools.islice(labels, 1, None))):
        return None  # not one store's sorted, distinct series: the engine merges
    ts, vals, offs = xor_decode_series(list(map(_CHUNKS, raw)), start_ms - lookback_ms + 1,
                                       last_ms)
    got = present_samples(ts, vals, offs, start_ms, step_ms, steps_n, lookback_ms)
    if got is None:
        return None  # overlapping chunks: the engine dedups the samples
    return labels, got


def _passed(fanout: FanoutQueryable) -> bool:
    return fanout.deadline is not None and fanout.loop.time() >= fanout.deadline


def _matrix(labels: list, pts: bytes, pvals: bytes, counts: list[int]) -> QueryResult:
    """The engine's matrix of present_samples' answer: the series with points, as arrays."""
    if len(counts) == 1:  # the one-series panel
        return QueryResult("matrix", [(labels[0], np.frombuffer(pts, dtype=np.int64),
                                       np.frombuffer(pvals, dtype=np.float64))] if counts[0] else [])
    pts, pvals = np.frombuffer(pts, dtype=np.int64), np.frombuffer(pvals, dtype=np.float64)
    out = []
    at = 0
    for lbls, count in zip(labels, counts):
        if count:
            out.append((lbls, pts[at:at + count], pvals[at:at + count]))
            at += count
    return QueryResult("matrix", out)


def plain_range(fanout: FanoutQueryable, raw: list, start_ms: int, end_ms: int, step_ms: int,
                lookback_ms: int, max_samples: int, limit: int, max_bytes: int
                ) -> list[bytes] | QueryResult | None:
    """The engine's matrix for a plain selector over the raw series ``raw`` fetched for
    [start - lookback + 1, last step], or None where the engine must decide (see _present;
    also the sample limit and a passed deadline). When the answer is the matrix alone (no
    store warnings, no ``limit`` cutting it, labels matrix_body writes, under ``max_bytes``:
    a bigger answer goes out in pieces), the HTTP body itself ([bytes], one piece), written
    in C from present_samples' answer: no arrays, result objects or orjson in between. Else
    the QueryResult, of the points already found."""
    if not end_ms < INT64_MAX:
        return None
    steps_n = (end_ms - start_ms) // step_ms + 1
    got = _present(fanout, raw, start_ms, step_ms, steps_n, lookback_ms)
    if got is None:
        return None
    labels, (pts, pvals, counts, nonempty) = got
    # the engine's sample budget: its steps, then the lookup's n x steps
    if steps_n + nonempty * steps_n > max_samples or _passed(fanout):
        return None
    if not fanout.warnings and (not limit or len(counts) - counts.count(0) <= limit):
        body = matrix_body(labels, pts, pvals, counts)
        if body is not None and len(body) < max_bytes:
            return [body]
    return _matrix(labels, pts, pvals, counts)


def plain_instant(fanout: FanoutQueryable, raw: list, t_ms: int, lookback_ms: int,
                  max_samples: int) -> QueryResult | None:
    """The engine's instant vector for a plain selector over ``raw`` fetched for
    [t - lookback + 1, t] (a stat panel's query), or None as :func:`plain_range`."""
    got = _present(fanout, raw, t_ms, 1, 1, lookback_ms)
    if got is None:
        return None
    labels, (_, pvals, counts, nonempty) = got
    if nonempty > max_samples or _passed(fanout):  # the engine's budget: the lookup's n
        return None
    values = iter(memoryview(pvals).cast("d").tolist())
    return QueryResult("vector", [(lbls, t_ms, next(values)) for lbls, count in zip(labels, counts)
                                  if count])
