"""A rule's expression printed as Prometheus's ``Expr.String()`` does (the ``query`` of
/api/v1/rules): the PromQL printer over our parser's tree."""
from __future__ import annotations

from querier.promql.parser import ParseError, ParserOptions, parse
from querier.promql.printer import expr_string

# The ruler loads any syntax a rule file may hold; its server's features gate evaluation.
ALL_SYNTAX = ParserOptions(experimental_functions=True, extended_range_selectors=True,
                            binop_fill_modifiers=True)


def canonical_query(expr: str) -> str:
    """``expr`` as Prometheus prints its parse tree; the text itself if that is not possible."""
    try:
        return expr_string(parse(expr, ALL_SYNTAX))
    except (ParseError, TypeError):
        return expr
