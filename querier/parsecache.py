"""Parsed PromQL of repeated query strings (dashboards send the same few over and over).

A syntax tree is reused only when evaluating it leaves it unchanged: a tree with duration
expressions (``[step() * 2]``, ``offset range()``) gets those resolved in place for each
query's step and range, so it is parsed afresh every time and never kept.

A query not seen before that is a plain selector (``metric{label="value",...}``, also with
regex matchers and blanks between tokens: the query of a one-series panel) is built
directly, without the lexer and parser: the same tree the parser gives, at a fraction of a
cold query's cost; anything else goes to the parser.
"""
from __future__ import annotations

from collections import OrderedDict

from querier.promql import ast
from querier.promql.engine import parse
from querier.promql.lexer import _WORDS
from querier._request import simple_selector_parts
from receiver.tsdb.labels import InvalidRegex, MatchType, Matcher as StoreMatcher, plain_matcher

# A plain selector's text (what needs no lexer) is read in C: querier/_request.c's
# simple_selector_parts, whose grammar test_query_parsecache states as regexes and checks it by.
_OPS = {"=": ast.MatchOp.Equal, "!=": ast.MatchOp.NotEqual, "=~": ast.MatchOp.Re,
        "!~": ast.MatchOp.NotRe}
_STORE_OPS = {"=": MatchType.EQ, "!=": MatchType.NEQ, "=~": MatchType.RE, "!~": MatchType.NRE}
MAX_NAME_MATCHERS = 1024  # metric names whose ``__name__`` matcher is kept (immutable objects)
SIMPLE_MAX_CHARS = 256  # far below any query length limit, so none needs checking here


def simple_selector(query: str, names: dict[str, StoreMatcher] | None = None
                    ) -> ast.VectorSelector | None:
    """The tree of a plain selector the parser would give, or None for anything else (a
    keyword or number as the name, ``__name__`` among the labels, blanks around the whole,
    escapes, a regex the parser refuses: the parser decides those). Its store matchers (what
    engine.selector_matchers would build) come with it: the regex ones are compiled here
    anyway, and ``names`` keeps each metric name's ``__name__`` matcher for the next query."""
    if len(query) > SIMPLE_MAX_CHARS:
        return None
    parts = simple_selector_parts(query)  # (name, [(label, op, value), ...]) or None
    if parts is None:
        return None
    name, found = parts
    if name in _WORDS or name.lower() in ("inf", "nan"):
        return None
    ms = []
    by_name = names.get(name) if names is not None else None
    if by_name is None:
        by_name = plain_matcher(MatchType.EQ, "__name__", name)
        if names is not None:
            if len(names) >= MAX_NAME_MATCHERS:
                names.clear()
            names[name] = by_name
    store = [by_name]
    for label, op, value in found:
        if label == "__name__":
            return None
        try:  # a regex's check is the parser's: its error message is the parser's to give
            store.append(plain_matcher(_STORE_OPS[op], label, value))
        except InvalidRegex:
            return None
        ms.append(ast.Matcher(_OPS[op], label, value))
    return ast.VectorSelector(name, ast.Matchers(ms), pos=(0, len(query)),
                              store_matchers=tuple(store))


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
        self._names: dict[str, StoreMatcher] = {}  # metric name -> its __name__ matcher

    def parse(self, query: str):
        expr = self._trees.get(query)
        if expr is not None:
            self._trees.move_to_end(query)
            return expr
        expr = simple_selector(query, self._names)
        simple = expr is not None  # (no duration expression in a plain selector)
        if not simple:
            expr = parse(query, features=self.features)
        if self.max_entries > 0 and (simple or _immutable(expr)):
            self._trees[query] = expr
            if len(self._trees) > self.max_entries:
                self._trees.popitem(last=False)
        return expr
