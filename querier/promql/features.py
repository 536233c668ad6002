"""PromQL syntax behind Prometheus's ``--enable-feature`` flags: a server without the feature
refuses it with a parse error, never ignores it."""
from __future__ import annotations

import re

import promql_parser as pp

from querier.promql.parse_errors import position

# Prometheus 3.14's experimental functions (parser/functions.go ``Experimental: true``) and
# aggregations, all behind --enable-feature=promql-experimental-functions.
EXPERIMENTAL_FUNCS = frozenset((
    "double_exponential_smoothing", "first_over_time", "histogram_quantiles", "info", "integral",
    "mad_over_time", "sort_by_label", "sort_by_label_desc", "start_timestamp", "ts_of_first_over_time",
    "ts_of_last_over_time", "ts_of_max_over_time", "ts_of_min_over_time",
    "start", "end", "step", "range"))
EXPERIMENTAL_AGGRS = frozenset(("limitk", "limit_ratio"))


def _children(e) -> list:
    if isinstance(e, pp.BinaryExpr):
        return [e.lhs, e.rhs]
    if isinstance(e, pp.AggregateExpr):
        return [e.expr] + ([e.param] if e.param is not None else [])
    if isinstance(e, pp.Call):
        return list(e.args)
    if isinstance(e, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        return [e.expr]
    return []


def experimental_use(expr, query: str) -> str | None:
    """Prometheus's parse error for the first experimental function or aggregation in ``expr``
    (with its line:column in ``query``), or None."""
    stack = [expr]
    while stack:  # the guard bounded the depth; iterate anyway
        e = stack.pop()
        if isinstance(e, pp.Call) and e.func.name in EXPERIMENTAL_FUNCS:
            return f"{_where(query, e.func.name)}: parse error: function \"{e.func.name}\" is not enabled"
        if isinstance(e, pp.AggregateExpr) and str(e.op) in EXPERIMENTAL_AGGRS:
            return (f"{_where(query, str(e.op))}: parse error: {e.op}() is experimental and "
                    "must be enabled with --enable-feature=promql-experimental-functions")
        stack.extend(reversed(_children(e)))
    return None


def _where(query: str, name: str) -> str:
    m = re.search(rf"(?<![\w:]){re.escape(name)}\s*\(", query)
    return position(query, m.start() if m else 0)
