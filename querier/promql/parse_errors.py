"""promql_parser's error texts in Prometheus's form: ``<line>:<col>: parse error: <msg>``.

promql_parser reports no positions. Errors it detects at the end of the input (unclosed
parentheses, braces, brackets, a dangling operator) are placed there, as Prometheus's lexer
does; errors about a named function (unknown, wrong number of arguments) are placed at that
call, found in the text. Others keep Prometheus's ``parse error:`` wording without a position.
"""
from __future__ import annotations

import re

# Messages Prometheus raises when it reaches the end of the input.
_AT_END = frozenset({"unclosed left parenthesis", "unexpected end of input inside braces",
                     "no expression found in input", "unclosed left bracket",
                     "unexpected end of input", "unexpected end of input in offset, expected duration"})
# promql_parser's wording where Prometheus's lexer words it differently.
_RENAMED = {"unexpected end of input inside brackets": "unclosed left bracket"}
_DANGLING_OPERATOR = re.compile(
    r"(?:[-+*/%^<>]|==|!=|<=|>=|\b(?:and|or|unless|atan2|bool))\s*$")
_UNKNOWN_FUNCTION = re.compile(r"unknown function with name '([^']*)'")
_ARG_COUNT = re.compile(r"expected (\d+) argument\(s\) in call to '([^']*)', got (\d+)")
_AGGR_ARGS = re.compile(r"wrong number of arguments for aggregate expression provided, "
                        r"expected (\d+), got (\d+)")
_AGGREGATIONS = {1: "sum|avg|count|min|max|group|stddev|stdvar",  # by how many arguments they take
                 2: "topk|bottomk|count_values|quantile|limitk|limit_ratio"}
SCAN_BUDGET = 1 << 18  # characters the argument counting may read in all (bounds hostile queries)
_TYPES = {"matrix": "range vector", "vector": "instant vector", "scalar": "scalar",
          "string": "string"}
_ARG_TYPE = re.compile(r"expected type (\w+) in call to function '([^']*)', got (\w+)")


def position(query: str, offset: int) -> str:
    """Prometheus's ``line:column`` of a character offset (columns count bytes, from 1)."""
    before = query[:offset]
    line = before.count("\n") + 1
    return f"{line}:{len(before.rsplit(chr(10), 1)[-1].encode()) + 1}"


def end_position(query: str) -> str:
    return position(query, len(query))


def _top_level_args(query: str, open_paren: int, stop: int) -> tuple[int, int]:
    """(how many arguments the call whose ``(`` is at ``open_paren`` has, the offset where
    reading stopped); quotes are skipped; -1 arguments if its end is not before ``stop``."""
    depth, args, seen, i = 0, 0, False, open_paren
    stop = min(len(query), stop)
    while i < stop:
        ch = query[i]
        if ch in "\"'`":
            end = query.find(ch, i + 1)
            while end > 0 and ch != "`" and query[end - 1] == "\\":
                end = query.find(ch, end + 1)
            i = len(query) if end < 0 else end
            seen = True
        elif ch in "([{":
            depth += 1
            if depth > 1:
                seen = True
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return args + (1 if seen else 0), i
        elif ch == "," and depth == 1:
            args += 1
        elif not ch.isspace():
            seen = True
        i += 1
    return -1, i


def _call_with_args(query: str, names: str, got: int) -> int | None:
    """Offset of the first call of one of ``names`` (regex alternatives) with ``got``
    arguments (an aggregation may have ``by (...)`` before its parenthesis). Reads at most
    SCAN_BUDGET characters over all calls tried."""
    budget = SCAN_BUDGET
    for m in re.finditer(rf"(?<![\w:])(?:{names})\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(", query):
        start = m.end() - 1
        n, stopped = _top_level_args(query, start, start + budget)
        if n == got:
            return m.start()
        budget -= stopped - start + 1
        if n < 0 or budget <= 0:
            return None
    return None


def _locate(query: str, msg: str) -> tuple[int | None, str]:
    """(offset of the error or None, Prometheus's text) for the function errors."""
    if m := _UNKNOWN_FUNCTION.fullmatch(msg):
        found = re.search(rf"(?<![\w:]){re.escape(m[1])}\s*\(", query)
        return (found.start() if found else None), f'unknown function with name "{m[1]}"'
    if m := _ARG_COUNT.fullmatch(msg):
        text = f'expected {m[1]} argument(s) in call to "{m[2]}", got {m[3]}'
        return _call_with_args(query, re.escape(m[2]), int(m[3])), text
    if m := _AGGR_ARGS.fullmatch(msg):
        names = _AGGREGATIONS.get(int(m[1]))
        return (_call_with_args(query, names, int(m[2])) if names else None), msg
    if m := _ARG_TYPE.fullmatch(msg):
        want, got = _TYPES.get(m[1], m[1]), _TYPES.get(m[3], m[3])
        return None, f'expected type {want} in call to function "{m[2]}", got {got}'
    return None, msg


def prometheus_parse_error(query: str, msg: str) -> str:
    if msg == "invalid promql query" and _DANGLING_OPERATOR.search(query):
        msg = "unexpected end of input"
    msg = _RENAMED.get(msg, msg)
    if msg in _AT_END:
        return f"{end_position(query)}: parse error: {msg}"
    offset, msg = _locate(query, msg)
    if offset is not None:
        return f"{position(query, offset)}: parse error: {msg}"
    return f"parse error: {msg}"
