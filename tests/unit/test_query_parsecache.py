"""The parse cache's plain-selector path (=, !=, =~, !~, blanks between tokens, a trailing
comma) builds exactly the parser's tree, and leaves everything else (keywords and numbers as
names, ``__name__``, regexes the parser refuses, escapes, blanks around the query, invalid
text) to the parser."""
from __future__ import annotations

import itertools
import random
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from querier._request import simple_selector_parts  # noqa: E402
from querier.parsecache import MAX_NAME_MATCHERS, ParseCache, simple_selector  # noqa: E402
from querier.promql.engine import parse, selector_matchers  # noqa: E402
from querier.promql.guard import PromQLError  # noqa: E402

NAMES = ["x", "up", "a:b_c", "_x", "X9", "sum", "by", "offset", "start", "inf", "NaN", "Inf",
         "and", "rate", "9x", "a-b", "é"]
LABELS = ["instance", "job", "by", "offset", "__name__", "le", "_", "a9", "9a", "é"]
OPS = ["=", "!=", "=~", "!~", "=="]
VALUES = ['"i-00007"', '""', '"a b"', '"#~!"', '"a\\"b"', '"\\n"', "'v'", "`v`", '"é"', '"x',
          '"(i-1|i-2)"', '"("', '"[a-"', '".*"', '"x+"']
BLANKS = ["", "", "", " ", "  ", "\t", "\n", "\r\n", "\f", "\u00a0"]


# The plain selector's grammar, the reference the C reading (simple_selector_parts) is checked
# by: a metric name, then optional {name op "value",...} with = != =~ !~, a trailing comma
# allowed, blanks between the tokens (as the lexer skips them: space, tab, CR, LF), and values
# of printable ASCII without quotes or backslashes (no escapes to undo).
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_BLANK = r"[ \t\n\r]*"
_MATCHER = rf'([a-zA-Z_][a-zA-Z0-9_]*){_BLANK}(!=|=~|!~|=){_BLANK}"([ !#-\[\]-~]*)"'
_SIMPLE = re.compile(rf"({_NAME})(?:{_BLANK}\{{{_BLANK}({_MATCHER}(?:{_BLANK},{_BLANK}{_MATCHER})*)"
                     rf"{_BLANK},?{_BLANK}\}})?")
_ONE_MATCHER = re.compile(_MATCHER)


def selector_parts(query: str) -> tuple[str, list[tuple[str, str, str]]] | None:
    """(name, [(label, op, value), ...]) of a plain selector's text as the grammar reads it, or
    None where it does not match."""
    m = _SIMPLE.fullmatch(query)
    if m is None:
        return None
    name, body = m.group(1, 2)
    return name, [] if body is None else _ONE_MATCHER.findall(body)


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
    _same_store_matchers(fast, query)


def _same_store_matchers(fast, query: str) -> None:
    """The store matchers built with the tree are the engine's for the parser's tree: same
    kinds, names, values, order, and regexes that match alike."""
    ours, engines = fast.store_matchers, selector_matchers(parse(query))
    assert type(ours) is tuple and ours == engines
    assert [(m.type, m.name, m.value) for m in ours] == [(m.type, m.name, m.value) for m in engines]
    for m, e in zip(ours, engines):
        assert hash(m) == hash(e)
        for probe in ("", "i-1", "i-2", "c", "d", "x", "a b", "i-00007", "1"):
            assert m.matches(probe) == e.matches(probe)
        assert m.matches_empty() == e.matches_empty()


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
            _same_store_matchers(fast, q)
    assert answered > 100


def _random_selector(rnd: random.Random) -> str:
    b = lambda: rnd.choice(BLANKS)  # noqa: E731
    ms = [rnd.choice(LABELS) + b() + rnd.choice(OPS) + b() + rnd.choice(VALUES)
          for _ in range(rnd.randrange(0, 4))]
    return rnd.choice(NAMES) + (b() + "{" + b() + (b() + "," + b()).join(ms)
                                + rnd.choice(["", ",", ",,"]) + b() + "}"
                                if ms or rnd.random() < 0.2 else rnd.choice(["", "", " ", "{"]))


def test_c_reading_of_plain_selectors_is_the_regexes_reading() -> None:
    """simple_selector reads the text in C (querier/_request.c); on generated selectors, and on
    each with a character dropped, doubled or replaced, it gives exactly what the regexes give
    (the same groups, or no match)."""
    rnd = random.Random(17)
    matched = 0
    alphabet = '{}=!~", \t\n,_:aZ9\\\x7f\x00é'
    for _ in range(20000):
        q = _random_selector(rnd)
        variants = [q]
        if q:
            i = rnd.randrange(len(q))
            variants += [q[:i] + q[i + 1:], q[:i] + q[i] + q[i:],
                         q[:i] + rnd.choice(alphabet) + q[i + 1:]]
        for v in variants:
            want = selector_parts(v)
            assert simple_selector_parts(v) == want, repr(v)
            matched += want is not None
    assert matched > 5000
    for v in ["", "{", "}", 'x{a="b"}}', 'x{a="b"', "x" * 300, 'x{a="\u00e9"}']:
        assert simple_selector_parts(v) == selector_parts(v), repr(v)
    with pytest.raises(TypeError):
        simple_selector_parts(b"x")  # type: ignore[arg-type]


def test_cache_answers_plain_and_parsed_queries_alike() -> None:
    cache = ParseCache(frozenset())
    for q in itertools.chain(['x{instance="i-00007"}', "sum by (job) (rate(x[5m]))"] * 2):
        assert repr(cache.parse(q)) == repr(parse(q))
    with pytest.raises(PromQLError):
        cache.parse('x{a="1"')


def test_name_matchers_are_kept_per_metric_name_and_bounded() -> None:
    """A metric name's ``__name__`` matcher is built once and shared by the next selectors of
    that name (matchers are immutable); the kept names stay bounded."""
    names: dict = {}
    a = simple_selector('x{instance="i-1"}', names)
    b = simple_selector('x{instance!~"i-(2|3)"}', names)
    assert a.store_matchers[0] is b.store_matchers[0] is names["x"]
    assert simple_selector('y{a="1"}', names).store_matchers[0].value == "y"
    for i in range(MAX_NAME_MATCHERS + 5):
        assert simple_selector(f"m{i}", names).store_matchers[0].value == f"m{i}"
    assert len(names) <= MAX_NAME_MATCHERS
    assert simple_selector('x{a=~"("}', names) is None  # a refused regex: the parser's error


def test_cache_gives_the_engine_its_matchers_for_new_strings() -> None:
    cache = ParseCache(frozenset())
    for i in range(50):
        q = f'x{{instance="i-{i:05d}"}}'
        _same_store_matchers(cache.parse(q), q)
