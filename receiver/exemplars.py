"""Thanos's Exemplars gRPC API over an ingestor's exemplar rings.

The request names series by a PromQL query: as Prometheus's ``parser.ExtractSelectors``, every
vector selector in it is one selector (a series matching any of them is answered).
"""
from __future__ import annotations

import inspect
from typing import Awaitable, Protocol

from querier.promql import ast
from querier.promql.parser import ParseError, ParserOptions, parse

from .tsdb.exemplars import ExemplarResult
from .tsdb.labels import METRIC_NAME, Matcher, MatchType

EXEMPLARS_SERVICE = "thanos.Exemplars"
MAX_QUERY_BYTES = 64 << 10  # a bound for the parser, far past any real selector list
# Selecting exemplars evaluates nothing: any syntax a query may hold is read.
_ALL_SYNTAX = ParserOptions(experimental_functions=True, extended_range_selectors=True,
                            binop_fill_modifiers=True)


class ExemplarSource(Protocol):
    """An ingestor's tenants (plain call), or a querier's fan-out (a coroutine)."""

    def exemplars(self, start: int, end: int, selectors: list[list[Matcher]]
                  ) -> list[ExemplarResult] | Awaitable[list[ExemplarResult]]: ...


def _vector_selector_matchers(vs: ast.VectorSelector) -> list[Matcher]:
    ms = [Matcher(ast.STORE_MATCH_TYPES[m.op], m.name, m.value) for m in vs.matchers.matchers]
    if vs.name is not None and not any(m.name == METRIC_NAME for m in ms):
        ms.append(Matcher(MatchType.EQ, METRIC_NAME, vs.name))
    return ms


def extract_selectors(query: str) -> list[list[Matcher]]:
    """Each vector selector's matchers; ValueError if the query does not parse."""
    if len(query) > MAX_QUERY_BYTES:
        raise ValueError(f"query longer than {MAX_QUERY_BYTES} bytes")
    try:
        expr = parse(query, _ALL_SYNTAX)
    except ParseError as e:
        raise ValueError(str(e)) from None
    return selectors_of(expr)


def selectors_of(expr) -> list[list[Matcher]]:
    """Each vector selector's matchers in a parsed query, in query order."""
    return [_vector_selector_matchers(e) for e in ast.walk(expr) if isinstance(e, ast.VectorSelector)]


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
