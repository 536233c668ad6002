"""PromQL syntax behind Prometheus's ``--enable-feature`` flags: the parser options a server with
these features parses with. A server without a feature refuses its syntax with Prometheus's parse
error (the parser raises it), never ignores it."""
from __future__ import annotations

from querier.promql.parser import ParserOptions
from querier.promql.types import BINOP_FILL_MODIFIERS, EXPERIMENTAL_FUNCTIONS, EXTENDED_RANGE_SELECTORS


def parser_options(features: frozenset[str]) -> ParserOptions:
    """Prometheus's parser.Options for a server started with ``--enable-feature=<features>``."""
    return ParserOptions(experimental_functions=EXPERIMENTAL_FUNCTIONS in features,
                         extended_range_selectors=EXTENDED_RANGE_SELECTORS in features,
                         binop_fill_modifiers=BINOP_FILL_MODIFIERS in features)
