"""Thanos's Exemplars gRPC API over an ingestor's exemplar rings.

The request names series by a PromQL query: as Prometheus's ``parser.ExtractSelectors``, every
vector selector in it is one selector (a series matching any of them is answered).
"""
from __future__ import annotations

import inspect
from typing import Awaitable, Protocol

import promql_parser as pp

from .tsdb.exemplars import ExemplarResult
from .tsdb.labels import METRIC_NAME, Matcher, MatchType

EXEMPLARS_SERVICE = "thanos.Exemplars"
MAX_QUERY_BYTES = 64 << 10  # a bound for the parser, far past any real selector list
MAX_DEPTH = 200

_OPS = {"MatchOp.Equal": MatchType.EQ, "MatchOp.NotEqual": MatchType.NEQ,
        "MatchOp.Re": MatchType.RE, "MatchOp.NotRe": MatchType.NRE}


class ExemplarSource(Protocol):
    """An ingestor's tenants (plain call), or a querier's fan-out (a coroutine)."""

    def exemplars(self, start: int, end: int, selectors: list[list[Matcher]]
                  ) -> list[ExemplarResult] | Awaitable[list[ExemplarResult]]: ...


def _vector_selector_matchers(vs) -> list[list[Matcher]]:
    groups = [vs.matchers.matchers] if vs.matchers.matchers or not vs.matchers.or_matchers \
        else []
    groups += list(vs.matchers.or_matchers or [])
    out = []
    for g in groups:
        ms = [Matcher(_OPS[str(m.op)], m.name, m.value) for m in g]
        if vs.name is not None and not any(m.name == METRIC_NAME for m in ms):
            ms.append(Matcher(MatchType.EQ, METRIC_NAME, vs.name))
        out.append(ms)
    return out


def extract_selectors(query: str) -> list[list[Matcher]]:
    """Each vector selector's matchers; ValueError if the query does not parse."""
    if len(query) > MAX_QUERY_BYTES:
        raise ValueError(f"query longer than {MAX_QUERY_BYTES} bytes")
    try:
        expr = pp.parse(query)
    except BaseException as e:  # the parser raises ValueError, or panics on odd input
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise ValueError(str(e)) from None
    return selectors_of(expr)


def selectors_of(expr) -> list[list[Matcher]]:
    """Each vector selector's matchers in a parsed query, in query order."""
    out: list[list[Matcher]] = []
    stack = [(expr, 0)]
    while stack:
        e, depth = stack.pop()
        if depth > MAX_DEPTH:
            continue  # the parser bounds nesting far below this; never recurse without end
        if isinstance(e, pp.VectorSelector):
            out.extend(_vector_selector_matchers(e))
        elif isinstance(e, pp.MatrixSelector):
            stack.append((e.vector_selector, depth + 1))
        elif isinstance(e, pp.BinaryExpr):
            stack += [(e.rhs, depth + 1), (e.lhs, depth + 1)]
        elif isinstance(e, pp.Call):
            stack += [(a, depth + 1) for a in reversed(e.args)]
        elif isinstance(e, pp.AggregateExpr):
            stack.append((e.expr, depth + 1))
            if e.param is not None:
                stack.append((e.param, depth + 1))
        elif isinstance(e, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
            stack.append((e.expr, depth + 1))
    return out


def exemplars_handler(source: ExemplarSource):
    """``thanos.Exemplars/Exemplars``: one ExemplarData frame per series."""
    import grpc

    from storeapi import exemplars_pb2, labels_pb2

    def lset(lbls) -> labels_pb2.LabelSet:
        return labels_pb2.LabelSet(labels=[labels_pb2.Label(name=n, value=v) for n, v in lbls])

    async def exemplars(req: exemplars_pb2.ExemplarsRequest, ctx):
        try:
            selectors = extract_selectors(req.query)
        except ValueError as e:
            await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"parse query: {e}")
            return
        if not selectors:
            return
        found = source.exemplars(req.start, req.end, selectors)
        if inspect.isawaitable(found):
            found = await found
        for r in found:
            yield exemplars_pb2.ExemplarsResponse(data=exemplars_pb2.ExemplarData(
                seriesLabels=lset(r.series_labels),
                exemplars=[exemplars_pb2.Exemplar(labels=lset(lb), value=v, ts=t)
                           for lb, v, t in r.exemplars]))

    return grpc.method_handlers_generic_handler(EXEMPLARS_SERVICE, {
        "Exemplars": grpc.unary_stream_rpc_method_handler(
            exemplars, exemplars_pb2.ExemplarsRequest.FromString,
            exemplars_pb2.ExemplarsResponse.SerializeToString)})
