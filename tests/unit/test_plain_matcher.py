"""``labels.plain_matcher`` builds a Matcher without the dataclass's __init__ (the querier and
the store build a new series' matchers on every cold query): it must be the Matcher that
``Matcher(type, name, value)`` gives in every respect a caller can see."""
from __future__ import annotations

import copy
import pickle
import random
import re

import pytest

from receiver.tsdb.labels import InvalidRegex, Matcher, MatchType, plain_matcher

_VALUES = ["", "a", "i-00042", "x y", "ü", "\x00", "a|b", ".*", "(", "\udcff"]


def test_plain_matcher_is_the_matcher_the_dataclass_builds():
    rnd = random.Random(5)
    for _ in range(2000):
        t = rnd.choice(list(MatchType))
        name = rnd.choice(["__name__", "instance", "", "le", "é"])
        value = rnd.choice(_VALUES) + rnd.choice(_VALUES)
        try:
            want = Matcher(t, name, value)
        except InvalidRegex as e:
            with pytest.raises(InvalidRegex, match=re.escape(str(e))):
                plain_matcher(t, name, value)
            continue
        got = plain_matcher(t, name, value)
        assert type(got) is Matcher
        assert list(vars(got)) == list(vars(want))
        assert {k: v for k, v in vars(got).items() if k != "_test"} == \
            {k: v for k, v in vars(want).items() if k != "_test"}
        assert (got._test is None) == (want._test is None)
        assert got == want and hash(got) == hash(want) and repr(got) == repr(want)
        assert got.matches_empty() == want.matches_empty()
        for v in _VALUES:
            assert got.matches(v) == want.matches(v), (t, value, v)
        again = pickle.loads(pickle.dumps(got))
        assert again == want and hash(again) == hash(want)
        assert copy.copy(got) == want
        with pytest.raises(AttributeError):  # frozen like the dataclass's own
            got.value = "other"  # type: ignore[misc]
    assert {plain_matcher(MatchType.EQ, "a", "b"), Matcher(MatchType.EQ, "a", "b")} == \
        {Matcher(MatchType.EQ, "a", "b")}
