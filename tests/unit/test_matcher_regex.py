"""Regex matchers mean what Prometheus's mean: Go (RE2) syntax, fully anchored, dot matching
newlines, linear time in the input."""
from __future__ import annotations

import subprocess
import sys

import pytest

from querier.promql import Engine, PromQLError, Series
from receiver.tsdb.labels import InvalidRegex, Matcher, MatchType

import numpy as np


def rx(pattern: str, value: str) -> bool:
    return Matcher(MatchType.RE, "v", pattern).matches(value)


_CHILD = """
from receiver.tsdb.labels import Matcher, MatchType
for pattern in ("(a+)+b", "(a|a)+b", "(a*)*b", "(.*a){20}"):
    for t in (MatchType.RE, MatchType.NRE):
        m = Matcher(t, "v", pattern)
        assert m.matches("a" * 5000 + "!") is (t is MatchType.NRE), pattern
print("done")
"""


def test_catastrophic_patterns_take_linear_time():
    # Backtracking engines take 2**5000 steps here; the bounded wait is for liveness only.
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr[-500:]


@pytest.mark.parametrize("pattern,value,hit", [
    ("a.c", "a\nc", True),            # (?s): dot matches newline
    ("foo", "xfoox", False),          # fully anchored
    ("foo|bar", "bar", True),
    ("foo|bar", "foobar", False),
    ("ab(?i)c", "abC", True),         # mid-pattern flags apply to the rest
    ("(?i)ab(?-i)c", "ABC", False),
    ("a\\z", "a", True),              # Go's end of text
    ("\\Qa.b\\E", "a.b", True),       # Go's literal quoting
    ("\\Qa.b\\E", "axb", False),
    ("[[:alpha:]]+", "abc", True),
    ("\\pL+", "ünï", True),
    ("\\d+", "٣", False),             # Go's \d is ASCII only
    ("x*", "", True),
    (".*", "anything\n at all", True),
    (".+", "", False),
    ("foo.*", "foobar", True),
    ("foo.*", "xfoo", False),
    ("a|b|", "", True),
])
def test_go_semantics(pattern, value, hit):
    assert rx(pattern, value) is hit
    assert Matcher(MatchType.NRE, "v", pattern).matches(value) is (not hit)


@pytest.mark.parametrize("pattern", ["(a", "a)|(b", "(a)\\1", "(?<=a)b", "\\Z", "a{2,1001}", "\\C",
                                     "*"])
def test_invalid_patterns_are_refused_like_go(pattern):
    with pytest.raises(InvalidRegex) as e:
        Matcher(MatchType.RE, "v", pattern)
    assert str(e.value).startswith("error parsing regexp: ")
    assert isinstance(e.value, ValueError)  # StoreAPI servers answer InvalidArgument for these


class _One:
    def select(self, matchers, mint, maxt):
        s = Series((("__name__", "m"), ("v", "a" * 28 + "!")), np.array([0], dtype=np.int64),
                   np.array([1.0]))
        return [s] if all(m.matches(dict(s.labels).get(m.name, "")) for m in matchers) else []


def test_engine_turns_an_invalid_regex_into_bad_data():
    with pytest.raises(PromQLError) as e:
        Engine().instant(_One(), 'm{v=~"a)|(b"}', 0)
    assert e.value.kind == "bad_data" and "error parsing regexp" in e.value.msg


def test_engine_matches_the_trap_value_quickly():
    assert Engine().instant(_One(), 'm{v=~"(a+)+b"}', 0).series == []
    assert len(Engine().instant(_One(), 'm{v!~"(a|a)+b"}', 0).series) == 1


@pytest.mark.parametrize("pattern", ["/api/v[0-9]+/.*", "api_.*_total", "(?i)abc.*", "ab|cd",
                                     "[a-c]x+", ".*foo", "x*", "é+.*", "(?i)é", "a{2,3}|zz?",
                                     "\\pL\\d", "[^a]*", "(a|b)*c"])
def test_range_prefilter_never_changes_an_answer(pattern):
    """Values outside RE2's possible-match range are refused without calling RE2: compare with
    plain RE2 full matches over many values around the range's edges."""
    import random

    import re2
    rng = random.Random(pattern)
    alphabet = "abcxz_/09AéÉ\n\x00\U0010ffff"
    values = ["", "api__total", "/api/v9/", "ABC", "cd", "cxx", "foo", "zz", "é", "É"]
    values += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 8))) for _ in range(3000)]
    opts = re2.Options()
    opts.log_errors = False
    want = re2.compile("(?s:" + pattern + ")", opts)
    m = Matcher(MatchType.RE, "v", pattern)
    for v in values:
        assert m.matches(v) is (want.fullmatch(v) is not None), (pattern, v)
