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


def _range_outcome(p: dict) -> tuple | str:
    from querier.api import read_range_args
    try:
        return read_range_args(p)
    except BadParam as e:
        return f"BadParam: {e}"


_TIMES = ["1700000000", "1700000000.5", "1700000000.0005", "1700000000.0015", "-1.0005",
          "1700000000.123456789", "0", "-0", "-0.0", "1e9", "1.", ".5", "+1", " 1", "1_0", "",
          "NaN", "inf", "10000000000000", "10000000000001", "99999999999999999999",
          "2023-11-14T22:13:20Z", "1700000000.1235", "00001700000000.25", "1..2", "-", "٣"]
_STEPS = ["15", "0.015", "1e-10", "0.0000000001", "0", "-15", "60.5", "1m", "", "1000000000",
          "1000000001", "0.000001", "3.3333333333333335", "1e3", "NaN"]


def test_range_args_in_c_are_those_of_the_python_reading():
    """api.range_query reads the usual start, end, step, query and limit in C
    (querier/_request.c); whenever it does, the values are exactly the Python reading's, and
    any parameter the Python reading refuses (or reads another way) is left to it."""
    from querier._request import range_args
    rnd = random.Random(13)
    handled = 0
    cases = [{"query": ["x"], "start": ["1700000000"], "end": ["1700003600"], "step": ["15"]}]
    for _ in range(20000):
        p: dict[str, list[str]] = {}
        for name, pool in (("start", _TIMES), ("end", _TIMES), ("step", _STEPS),
                           ("query", ["x", "", "sum(x)"]), ("limit", ["", "0", "5", "-1", "a"])):
            roll = rnd.random()
            if roll < 0.08:
                continue  # absent
            if roll < 0.12:
                p[name] = []
                continue
            if name == "start" and roll < 0.6:
                value = f"{rnd.uniform(-1e10, 2e9):.{rnd.randrange(0, 10)}f}"
            elif name == "end" and roll < 0.6 and p.get("start"):
                try:  # mostly a range that fits 11,000 steps
                    value = f"{float(p['start'][0]) + rnd.uniform(0, 86400):.{rnd.randrange(0, 10)}f}"
                except ValueError:
                    value = rnd.choice(pool)
            elif name == "step" and roll < 0.6:
                value = f"{rnd.uniform(0, 400):.{rnd.randrange(0, 12)}f}"
            elif name == "limit" and roll < 0.7:
                continue
            else:
                value = rnd.choice(pool)
            p[name] = [value] + ([rnd.choice(pool)] if rnd.random() < 0.1 else [])
        cases.append(p)
    for p in cases:
        got = range_args(p)
        if got is NotImplemented:
            continue
        handled += 1
        assert got == _range_outcome(p), p
        assert [type(v) for v in got] == [int, int, int, str, int]
    assert handled > 1000


def test_range_args_leave_a_refused_or_unusual_parameter_to_python():
    from querier._request import range_args
    usual = {"query": ["x"], "start": ["1700000000"], "end": ["1700003600"], "step": ["15"]}
    assert range_args(usual) == (1_700_000_000_000, 1_700_003_600_000, 15 * 10**9, "x", 0)
    for change in ({"limit": ["3"]}, {"start": ["1.5e9"]}, {"step": ["1m"]}, {"query": [""]},
                   {"end": ["1600000000"]}, {"step": ["0.0001"]}, {"query": [3]}):
        assert range_args({**usual, **change}) is NotImplemented, change
    assert _range_outcome({**usual, "step": ["0.0001"]}).startswith(
        "BadParam: exceeded maximum resolution")
    assert _range_outcome({**usual, "step": ["1m"]}) == (
        1_700_000_000_000, 1_700_003_600_000, 60 * 10**9, "x", 0)
