"""Parsing of Prometheus HTTP API parameters, with Prometheus's error wording."""
from __future__ import annotations

import math
import re
from datetime import datetime

import promql_parser

from querier.promql.engine import PromQLError, parse as parse_promql
from receiver.tsdb.labels import InvalidRegex, Matcher, MatchType

MIN_TIME_MS = -9223372036854775808 // 1_000_000 * 1000  # as Prometheus's minTime, ms
MAX_TIME_MS = 9223372036854775807 // 1_000_000 * 1000

# promql_parser's MatchOp is not hashable; key by its printed name.
_OPS = {"MatchOp.Equal": MatchType.EQ, "MatchOp.NotEqual": MatchType.NEQ,
        "MatchOp.Re": MatchType.RE, "MatchOp.NotRe": MatchType.NRE}

_DURATION_RE = re.compile(r"^(?:\d+(?:ms|[smhdwy]))+$")


class BadParam(ValueError):
    """Becomes a 400 ``bad_data`` response."""


def parse_time(value: str | None, name: str, default_ms: int | None = None) -> int:
    if value is None or value == "":
        if default_ms is None:
            raise BadParam(f'invalid parameter "{name}": cannot parse "" to a valid timestamp')
        return default_ms
    try:
        f = float(value)
        if math.isnan(f) or math.isinf(f):
            raise ValueError
        return int(round(f * 1000))
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return int(round(dt.timestamp() * 1000))
    except ValueError:
        raise BadParam(f'invalid parameter "{name}": cannot parse "{value}" to a valid timestamp') from None


def parse_duration_ms(value: str | None, name: str) -> int:
    if not value:
        raise BadParam(f'invalid parameter "{name}": cannot parse "" to a valid duration')
    try:
        f = float(value)
        if math.isnan(f) or math.isinf(f):
            raise ValueError
        return int(round(f * 1000))
    except ValueError:
        pass
    if _DURATION_RE.match(value):
        try:
            return int(promql_parser.parse_duration(value).total_seconds() * 1000)
        except Exception:
            pass
    raise BadParam(f'invalid parameter "{name}": cannot parse "{value}" to a valid duration')


def parse_matchers(selector: str) -> list[Matcher]:
    """A ``match[]`` series selector into matchers (metric name included)."""
    try:
        expr = parse_promql(selector, "match[]")
    except PromQLError as e:
        raise BadParam(e.msg) from None
    if not isinstance(expr, promql_parser.VectorSelector):
        raise BadParam(f'invalid parameter "match[]": expected a series selector, got {selector!r}')
    try:
        out = [Matcher(_OPS[str(m.op)], m.name, m.value) for m in expr.matchers.matchers]
    except InvalidRegex as e:
        raise BadParam(f'invalid parameter "match[]": {e}') from None
    if expr.name is not None and not any(m.name == "__name__" for m in out):
        out.append(Matcher(MatchType.EQ, "__name__", expr.name))
    if all(m.matches_empty() for m in out):
        raise BadParam('invalid parameter "match[]": match[] must contain at least one non-empty matcher')
    return out
