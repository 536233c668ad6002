"""promql_parser's error texts in Prometheus's form: ``<line>:<col>: parse error: <msg>``.

promql_parser reports no positions; the errors it detects at the end of the input (unclosed
parentheses, braces, brackets, a dangling operator) are placed there exactly as Prometheus's
lexer does. Others keep Prometheus's ``parse error:`` wording without a position.
"""
from __future__ import annotations

import re

# Messages Prometheus raises when it reaches the end of the input.
_AT_END = frozenset({"unclosed left parenthesis", "unexpected end of input inside braces",
                     "no expression found in input",
                     "unclosed left bracket", "unexpected end of input"})
# promql_parser's wording where Prometheus's lexer words it differently.
_RENAMED = {"unexpected end of input inside brackets": "unclosed left bracket"}
_DANGLING_OPERATOR = re.compile(
    r"(?:[-+*/%^<>]|==|!=|<=|>=|\b(?:and|or|unless|atan2|bool))\s*$")


def end_position(query: str) -> str:
    """Prometheus's ``line:column`` of the end of the input (columns count bytes, from 1)."""
    line = query.count("\n") + 1
    last = query.rsplit("\n", 1)[-1]
    return f"{line}:{len(last.encode()) + 1}"


def prometheus_parse_error(query: str, msg: str) -> str:
    if msg == "invalid promql query" and _DANGLING_OPERATOR.search(query):
        msg = "unexpected end of input"
    msg = _RENAMED.get(msg, msg)
    if msg in _AT_END:
        return f"{end_position(query)}: parse error: {msg}"
    return f"parse error: {msg}"
