"""Bounds on PromQL text, checked before the parser sees it.

The parser (querier/promql/parser.py) and the evaluator recurse once per nesting level and the
evaluator once per operator of a chain; the parser refuses too deep a tree itself, and this
refuses hostile text before any parsing work. A query is measured in one linear pass over its
characters: an upper bound on the depth of its syntax tree (open parentheses plus every
operator met inside the still open ones) and its length. Both limits sit far below what
crashes, and far above real queries.
"""
from __future__ import annotations

from dataclasses import dataclass

from querier.promql.types import PromQLError

_OP_CHARS = frozenset("+-*/%^<>=!")
_OP_WORDS = frozenset(("and", "or", "unless", "atan2"))
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:")
_IDENT = _IDENT_START | frozenset("0123456789")


@dataclass(frozen=True)
class QueryLimits:
    """Limits on a PromQL text; defaults leave a wide margin to the measured crash point."""

    max_length: int = 256 * 1024  # characters
    max_depth: int = 200  # estimated syntax-tree depth


DEFAULT_LIMITS = QueryLimits()


def _skip_string(q: str, i: int) -> int:
    """Index just past the string literal opening at q[i] (unterminated: the end)."""
    quote, n = q[i], len(q)
    i += 1
    while i < n:
        c = q[i]
        if c == "\\" and quote != "`":
            i += 2
            continue
        if c == quote:
            return i + 1
        i += 1
    return n


def _cheap_bound(q: str) -> int:
    """A looser upper bound than :func:`estimated_depth`, counted at C speed."""
    low = q.lower()
    return 1 + sum(q.count(c) for c in "([+-*/%^<>=!") + sum(low.count(w) for w in _OP_WORDS)


def estimated_depth(q: str) -> int:
    """An upper bound on the parse-tree depth of q, in one pass over its characters.

    Each open parenthesis is a level; within a level every binary or unary operator (and every
    ``[`` of a range or subquery) may add one more node on the path to the deepest leaf, as in
    a left-leaning ``a + b + c`` chain. Text in strings, comments and ``{}`` matchers is skipped.
    """
    ops: list[int] = [0]  # operators seen in each open level
    open_ops = 0  # sum(ops)
    deepest = 1
    in_braces = False
    i, n = 0, len(q)
    while i < n:
        c = q[i]
        if c in "\"'`":
            i = _skip_string(q, i)
            continue
        if c == "#":
            j = q.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if in_braces:
            in_braces = c != "}"
            i += 1
            continue
        if c == "{":
            in_braces = True
        elif c == "(":
            ops.append(0)
        elif c == ")":
            if len(ops) > 1:
                open_ops -= ops.pop()
        elif c in _OP_CHARS or c == "[":
            ops[-1] += 1
            open_ops += 1
            # a two-character operator (==, !=, <=, >=, =~) is one node
            if c in "=!<>" and i + 1 < n and q[i + 1] in "=~":
                i += 1
        elif c in _IDENT_START:
            j = i + 1
            while j < n and q[j] in _IDENT:
                j += 1
            if q[i:j].lower() in _OP_WORDS:
                ops[-1] += 1
                open_ops += 1
            i = j
            continue
        deepest = max(deepest, len(ops) + open_ops)
        i += 1
    return deepest


def check_query(q: str, limits: QueryLimits = DEFAULT_LIMITS, param: str = "query") -> None:
    """Reject (bad_data) text the parser or evaluator could not handle safely."""
    if len(q) > limits.max_length:
        raise PromQLError("bad_data", f'invalid parameter "{param}": query is {len(q)} characters '
                                      f"long, more than the limit of {limits.max_length}")
    if _cheap_bound(q) > limits.max_depth and estimated_depth(q) > limits.max_depth:
        raise PromQLError("bad_data", f'invalid parameter "{param}": query nests too deeply '
                                      f"(more than {limits.max_depth} levels of parentheses, "
                                      "operators and subqueries)")
