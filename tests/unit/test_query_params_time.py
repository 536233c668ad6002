"""querier.params.parse_time reads float seconds inline (one Python call per timestamp); its
answers and errors stay those of the float-or-RFC-3339 reading it replaced, on usual, edge and
hostile values."""
from __future__ import annotations

import math
import random

import pytest

from querier.api import _one
from querier.params import (_BOUND_STRINGS, _TIME_LIMIT_MS, BadParam, _go_float, _rfc3339_ms,
                            parse_time)


def _reference_ms(value: str) -> int | None:
    """What the replaced _time_ms made of a value: _go_float, then RFC 3339, each a call."""
    f = _go_float(value)
    if f is None:
        return _rfc3339_ms(value)
    if math.isnan(f) or math.isinf(f) or abs(f) > 1e17:
        return None
    sec = math.trunc(f)
    return sec * 1000 + round((f - sec) * 1000)


def _expected(value: str | None, default_ms: int | None, labelled: bool):
    if not value:
        return default_ms if default_ms is not None else _outcome(parse_time, value, "start",
                                                                  None, labelled)
    if value in _BOUND_STRINGS:
        return _BOUND_STRINGS[value]
    ms = _reference_ms(value)
    if ms is not None and -_TIME_LIMIT_MS <= ms <= _TIME_LIMIT_MS:
        return ms
    prefix = "Invalid time value for 'start': " if labelled else ""
    return ("BadParam", f'invalid parameter "start": {prefix}cannot parse "{value}" to a '
            "valid timestamp")


def _outcome(fn, *args):
    try:
        return fn(*args)
    except BadParam as e:
        return ("BadParam", str(e))


_EDGE = [None, "", " ", "0", "-0", "1.5", "1.0005", "-1.9995", "1e17", "1e18", "-1e17", "1e999",
         "nan", "NaN", "inf", "-Infinity", " 1", "1 ", "\t1", "1\n", "1_000", "0x10", "1e", ".",
         "+5", "٣", "1,5", "1700000000.123", "9223309901257974.999", "2023-01-02T03:04:05Z",
         "2023-01-02T03:04:05.123456789+02:00", "2023-01-02t03:04:05z", "2023-01-02T03:04:05",
         "2023-13-02T03:04:05Z", "-292273086-05-16T16:47:06Z",
         "292277025-08-18T07:12:54.999999999Z", "\x00", "1\x00"]


def test_parse_time_matches_the_reference_reading_on_edge_and_random_values():
    rng = random.Random(13)
    values = list(_EDGE)
    alphabet = "0123456789.+-eE _xXnaifTtZz:\t"
    for _ in range(5000):
        values.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12))))
        values.append(repr(rng.uniform(-2e17, 2e17)))
        values.append(str(rng.randrange(-10**18, 10**18)))
    for v in values:
        for default_ms, labelled in [(None, False), (42, True)]:
            assert _outcome(parse_time, v, "start", default_ms, labelled) == \
                _expected(v, default_ms, labelled), v


def test_a_parameters_first_value_is_read_as_before():
    assert _one({"query": ["up", "x"]}, "query") == "up"
    for p in [{}, {"query": []}, {"query": [""]}]:
        with pytest.raises(BadParam, match="query must not be empty"):
            _one(p, "query")
    with pytest.raises(BadParam, match='^invalid parameter "step"$'):
        _one({"step": []}, "step")
