"""The parse cache's plain-selector path (=, !=, =~, !~, blanks between tokens, a trailing
comma) builds exactly the parser's tree, and leaves everything else (keywords and numbers as
names, ``__name__``, regexes the parser refuses, escapes, blanks around the query, invalid
text) to the parser."""
from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from querier.parsecache import ParseCache, simple_selector  # noqa: E402
from querier.promql.engine import parse  # noqa: E402
from querier.promql.guard import PromQLError  # noqa: E402

NAMES = ["x", "up", "a:b_c", "_x", "X9", "sum", "by", "offset", "start", "inf", "NaN", "Inf",
         "and", "rate", "9x", "a-b", "é"]
LABELS = ["instance", "job", "by", "offset", "__name__", "le", "_", "a9", "9a", "é"]
OPS = ["=", "!=", "=~", "!~", "=="]
VALUES = ['"i-00007"', '""', '"a b"', '"#~!"', '"a\\"b"', '"\\n"', "'v'", "`v`", '"é"', '"x',
          '"(i-1|i-2)"', '"("', '"[a-"', '".*"', '"x+"']
BLANKS = ["", "", "", " ", "  ", "\t", "\n", "\r\n", "\f", "\u00a0"]


def _tree(query: str) -> str | None:
    try:
        return repr(parse(query))
    except PromQLError:
        return None


@pytest.mark.parametrize("query", [
    'x{instance="i-00007"}', "x", 'up{job="a",instance!=""}', 'a:b_c{le="+Inf",by="x"}',
    'x{a="1",a="2"}', 'x{a=" ~!#$%&()*+,-./:;<=>?@[]^_`{|}"}', 'x{a=~"b"}', 'x{a="1",}',
    'x{ a="1"}', 'x {\ta = "1" ,\n b !~ "c|d" , }', 'x{a=~"i-(1|2)",b!="",}'])
def test_plain_selectors_are_built_as_the_parser_builds_them(query: str) -> None:
    fast = simple_selector(query)
    assert fast is not None
    assert repr(fast) == _tree(query)


@pytest.mark.parametrize("query", [
    "sum", "by", "inf", "NaN", "start", 'x{__name__="y"}', 'x{a=~"("}', 'x{a="\\n"}',
    'x{a="1",,}', "x{}", 'x{\fa="1"}', " x", "x ", 'x{a="é"}', "x[5m]", 'x{a="1"} offset 5m',
    'x{a="1"', "x @ 0", "rate(x[5m])", "a-b", ""])
def test_anything_else_goes_to_the_parser(query: str) -> None:
    assert simple_selector(query) is None


def test_random_selectors_agree_with_the_parser() -> None:
    """Whenever the plain path answers, the parser gives the same tree (never an error)."""
    rnd = random.Random(13)
    answered = 0
    for _ in range(3000):
        b = lambda: rnd.choice(BLANKS)  # noqa: E731
        ms = [rnd.choice(LABELS) + b() + rnd.choice(OPS) + b() + rnd.choice(VALUES)
              for _ in range(rnd.randrange(0, 4))]
        q = rnd.choice(NAMES) + (b() + "{" + b() + (b() + "," + b()).join(ms)
                                 + rnd.choice(["", ","]) + b() + "}" if ms or rnd.random() < 0.2
                                 else "")
        fast = simple_selector(q)
        if fast is not None:
            answered += 1
            assert repr(fast) == _tree(q), q
    assert answered > 100


def test_cache_answers_plain_and_parsed_queries_alike() -> None:
    cache = ParseCache(frozenset())
    for q in itertools.chain(['x{instance="i-00007"}', "sum by (job) (rate(x[5m]))"] * 2):
        assert repr(cache.parse(q)) == repr(parse(q))
    with pytest.raises(PromQLError):
        cache.parse('x{a="1"')
