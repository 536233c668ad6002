"""Parsing of Prometheus HTTP API parameters, with Prometheus's error wording."""
from __future__ import annotations

import math
import re
from datetime import datetime

from querier.promql import ast
from querier.promql.engine import PromQLError, parse as parse_promql
from receiver.tsdb.labels import InvalidRegex, Matcher, MatchType

MIN_TIME_MS = -9223372036854775808 // 1_000_000 * 1000  # as Prometheus's minTime, ms
MAX_TIME_MS = 9223372036854775807 // 1_000_000 * 1000
# What clients (client_golang, Grafana) send for "no bound": Prometheus's MinTime/MaxTime printed.
_BOUND_STRINGS = {"-292273086-05-16T16:47:06Z": MIN_TIME_MS,
                  "292277025-08-18T07:12:54.999999999Z": MAX_TIME_MS}
# Timestamps are int64 milliseconds; Prometheus's representable range, so that no later
# arithmetic (steps, offsets, lookback) can leave int64.
_TIME_LIMIT_MS = 9223309901257974999
_INT64_MAX = (1 << 63) - 1
_NS = {"y": 365 * 86400 * 10**9, "w": 7 * 86400 * 10**9, "d": 86400 * 10**9, "h": 3600 * 10**9,
       "m": 60 * 10**9, "s": 10**9, "ms": 10**6}
# Prometheus's model.ParseDuration: units in this order, each at most once.
_MODEL_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?"
                             r"(?:(\d+)ms)?$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$")
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class BadParam(ValueError):
    """Becomes a 400 ``bad_data`` response."""


def _go_float(value: str) -> float | None:
    """strconv.ParseFloat's accepted spellings (no surrounding blanks), else None."""
    if value != value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_time(value: str | None, name: str, default_ms: int | None = None,
               labelled: bool = False) -> int:
    """A timestamp parameter (float seconds or RFC 3339) as int64 ms. ``labelled``: Prometheus
    words errors of the ``time`` parameter and the metadata ranges as "Invalid time value for".
    The usual float seconds are read here, in one Python call (every query has one or two)."""
    if value is None or value == "":
        if default_ms is not None:
            return default_ms
        value = ""
    elif value in _BOUND_STRINGS:
        return _BOUND_STRINGS[value]
    else:
        try:  # strconv.ParseFloat's spellings (_go_float), inline
            f = float(value) if value == value.strip() else None
        except ValueError:
            f = None
        if f is None:
            ms = _rfc3339_ms(value)
        elif math.isnan(f) or math.isinf(f) or abs(f) > 1e17:
            ms = None
        else:
            sec = math.trunc(f)
            ms = sec * 1000 + round((f - sec) * 1000)
        if ms is not None and -_TIME_LIMIT_MS <= ms <= _TIME_LIMIT_MS:
            return ms
    prefix = f"Invalid time value for '{name}': " if labelled else ""
    raise BadParam(f'invalid parameter "{name}": {prefix}cannot parse "{value}" to a valid timestamp')


def _rfc3339_ms(value: str) -> int | None:
    if not _RFC3339.match(value):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp()) * 1000 + dt.microsecond // 1000


def parse_duration_ns(value: str | None, name: str) -> int:
    """Prometheus's duration parameter (``step``, ``timeout``): float seconds or ``1h30m``, as
    Go's int64 nanoseconds. NaN, as in Go, comes out negative."""
    value = value or ""
    f = _go_float(value)
    if f is not None:
        if math.isnan(f):
            return -_INT64_MAX - 1
        ns = f * 1e9
        if ns > _INT64_MAX or ns < -_INT64_MAX - 1:
            raise BadParam(f'invalid parameter "{name}": cannot parse "{value}" to a valid '
                           "duration. It overflows int64")
        return int(ns)
    m = _MODEL_DURATION.match(value)
    if value and m:
        ns = sum(int(n) * _NS[u] for n, u in zip(m.groups(), ("y", "w", "d", "h", "m", "s", "ms"))
                 if n is not None)
        if ns <= _INT64_MAX:
            return ns
    raise BadParam(f'invalid parameter "{name}": cannot parse "{value}" to a valid duration')


def parse_duration_ms(value: str | None, name: str) -> int:
    """A duration parameter in whole ms (rounded down; at least 1 ms when positive)."""
    ns = parse_duration_ns(value, name)
    return max(ns // 1_000_000, 1) if ns > 0 else ns // 1_000_000


def parse_limit(value: str | None) -> int:
    """Prometheus's ``limit`` (series, labels, queries): 0 or absent means no limit."""
    if not value:
        return 0
    if not re.fullmatch(r"[+-]?\d+", value):
        raise BadParam(f'invalid parameter "limit": strconv.Atoi: parsing "{value}": invalid syntax')
    n = int(value)
    if not -_INT64_MAX - 1 <= n <= _INT64_MAX:
        raise BadParam(f'invalid parameter "limit": strconv.Atoi: parsing "{value}": value out of range')
    if n < 0:
        raise BadParam('invalid parameter "limit": limit must be non-negative')
    return n


def parse_bool(value: str | None, name: str, default: bool) -> bool:
    """Thanos's boolean parameters (``dedup``, ``partial_response``): Go's strconv.ParseBool."""
    if value is None or value == "":
        return default
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise BadParam(f"'{name}' parameter: strconv.ParseBool: parsing \"{value}\": invalid syntax")


def parse_matchers(selector: str) -> list[Matcher]:
    """A ``match[]`` series selector into matchers (metric name included)."""
    try:
        expr = parse_promql(selector, "match[]")
    except PromQLError as e:
        raise BadParam(e.msg) from None
    if not isinstance(expr, ast.VectorSelector):
        raise BadParam(f'invalid parameter "match[]": expected a series selector, got {selector!r}')
    try:
        out = [Matcher(ast.STORE_MATCH_TYPES[m.op], m.name, m.value) for m in expr.matchers.matchers]
    except InvalidRegex as e:
        raise BadParam(f'invalid parameter "match[]": {e}') from None
    if expr.name is not None and not any(m.name == "__name__" for m in out):
        out.append(Matcher(MatchType.EQ, "__name__", expr.name))
    if all(m.matches_empty() for m in out):
        raise BadParam('invalid parameter "match[]": match[] must contain at least one non-empty matcher')
    return out
