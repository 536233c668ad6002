"""Parsed PromQL of repeated query strings (dashboards send the same few over and over).

A syntax tree is reused only when evaluating it leaves it unchanged: a tree with duration
expressions (``[step() * 2]``, ``offset range()``) gets those resolved in place for each
query's step and range, so it is parsed afresh every time and never kept.
"""
from __future__ import annotations

from collections import OrderedDict

from querier.promql import ast
from querier.promql.engine import parse


def _immutable(expr) -> bool:
    """No node of ``expr`` is rewritten by evaluation (see ast.resolve_durations)."""
    for n in ast.walk(expr):
        if getattr(n, "range_expr", None) is not None or getattr(n, "offset_expr", None) is not None \
                or getattr(n, "step_expr", None) is not None:
            return False
    return True


class ParseCache:
    """A bounded LRU of query text -> syntax tree; parse errors are raised, never kept."""

    def __init__(self, features: frozenset[str], max_entries: int = 256) -> None:
        self.features = features
        self.max_entries = max_entries
        self._trees: OrderedDict[str, object] = OrderedDict()

    def parse(self, query: str):
        expr = self._trees.get(query)
        if expr is not None:
            self._trees.move_to_end(query)
            return expr
        expr = parse(query, features=self.features)
        if self.max_entries > 0 and _immutable(expr):
            self._trees[query] = expr
            if len(self._trees) > self.max_entries:
                self._trees.popitem(last=False)
        return expr
