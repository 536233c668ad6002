"""Our PromQL parser against Prometheus 3.14's: structure, precedence, printing, error texts.

Expected strings are what Prometheus 3.14's parser (promql/parser at d15adb9) answers: its
``Expr.String()`` (numbers as Go's %v) and its first parse error."""
from __future__ import annotations

from datetime import timedelta

import pytest

from querier.promql import ast
from querier.promql.parser import ParseError, ParserOptions, parse
from querier.promql.printer import expr_string

ALL = ParserOptions(experimental_functions=True, extended_range_selectors=True, binop_fill_modifiers=True)


def s(q: str, opts: ParserOptions = ALL) -> str:
    return expr_string(parse(q, opts))


def err(q: str, opts: ParserOptions = ParserOptions()) -> str:
    with pytest.raises(ParseError) as e:
        parse(q, opts)
    return str(e.value)


@pytest.mark.parametrize("q,want", [
    ("sum(rate(x[5m]))by(job)", "sum by (job) (rate(x[5m]))"),
    ("sum without(a,b,)(x)", "sum without (a, b) (x)"),
    ("topk(3, x)", "topk(3, x)"),
    ('count_values("v", x)', 'count_values("v", x)'),
    ("a + b * c", "a + b * c"),
    ("a / on(x) group_left(y) b", "a / on (x) group_left (y) b"),
    ("a * ignoring(z) b", "a * ignoring (z) b"),
    ("a + on() group_right b", "a + on () group_right () b"),
    ("a > bool 1", "a > bool 1"),
    ("a and on () b", "a and on () b"),
    ("-x", "-x"),
    ("+x", "+x"),
    ("-1", "-1"),
    ("(a + b) * 2", "(a + b) * 2"),
    ("x offset 5m", "x offset 5m"),
    ("x offset -1h", "x offset -1h"),
    ("x[5m] offset 1d", "x[5m] offset 1d"),
    ("x @ 1000", "x @ 1000.000"),
    ("x @ start()", "x @ start()"),
    ("rate(x[5m] @ end())", "rate(x[5m] @ end())"),
    ("max_over_time(rate(x[5m])[30m:] offset 2m)", "max_over_time(rate(x[5m])[30m:] offset 2m)"),
    ("x[1h:5m]", "x[1h:5m]"),
    ("x[90s]", "x[1m30s]"),
    ("x[1.5]", "x[1s500ms]"),
    ("x[300]", "x[5m]"),
    ("0x1F", "31"),
    ("010", "8"),
    ("1_000", "1000"),
    ("1e3", "1000"),
    ("Inf", "+Inf"),
    ("-inf", "-Inf"),
    ("NaN", "NaN"),
    ("1h", "1h"),
    ("1h30m + 1", "1h30m + 1"),
    ('x{a="with \\"quote\\""}', 'x{a="with \\"quote\\""}'),
    ("x{a='single', b=`raw\\n`}", 'x{a="single",b="raw\\\\n"}'),
    ('x{a="\\u00e9\\x41"}', 'x{a="éA"}'),
    ('{"metric.name", a="b"}', '{__name__="metric.name",a="b"}'),
    ('{"my.label"="v", __name__=~"x.*"}', '{"my.label"="v",__name__=~"x.*"}'),
    ('sum by ("a.b") (x)', 'sum by ("a.b") (x)'),
    ("x # comment\n + 1", "x + 1"),
    ("sum", "sum"),
    ("by", "by"),
    ("and", "and"),
    ("step", "step"),
    ("fill + fill", "fill + fill"),
    ("label_join(x, \"a\", \",\", \"b\", \"c\")", 'label_join(x, "a", ",", "b", "c")'),
    # duration expressions
    ("x[26m+4m]", "x[26m + 4m]"),
    ("x[2m*(10+5)]", "x[2m * (10 + 5)]"),
    ("x[-5m+35m]", "x[-5m + 35m]"),
    ("x[step()]", "x[step()]"),
    ("x[max_of(min_of(step()+1,1h),1ms)]", "x[max_of(min_of(step() + 1, 1h), 1ms)]"),
    ("x[29s+1s:5s+5s]", "x[29s + 1s:5s + 5s]"),
    ("x offset (100 + 2)", "x offset (100 + 2)"),
    ("x offset 100 + 2", "x offset 1m40s + 2"),
    ("x offset -2 ^ 2", "x offset -2s ^ 2"),
    ("x offset step()*0", "x offset step() * 0"),
    ("x offset -(min_of(step(), 1s))+8000", "x offset -(min_of(step(), 1s)) + 8000"),
    ("x offset (-step()*2)", "x offset (-step() * 2)"),
    ("x offset STEP()", "x offset step()"),
    ("x offset -+2 ^ 2", "x offset -2 ^ 2"),  # a second sign: the rest is one duration expression
    ("x offset - -(1m)", "x offset --(1m)"),
    # Prometheus 3.14 syntax
    ("a </ b", "a </ b"),
    ("a >/ 2", "a >/ 2"),
    ("x[1m] anchored", "x[1m] anchored"),
    ("x smoothed", "x smoothed"),
    ("x[1m] smoothed offset 1m", "x[1m] smoothed offset 1m"),
    ("a + fill(1) b", "a + fill (1) b"),
    ("a + on(x) fill_left(-1) fill_right(2) b", "a + on (x) fill_left (-1) fill_right (2) b"),
    ("a + fill_right(2) fill_left(2) b", "a + fill (2) b"),
    ('info(x, {k="v"})', 'info(x, {k="v"})'),
    ("start_timestamp(x)", "start_timestamp(x)"),
    ("limitk(2, x)", "limitk(2, x)"),
])
def test_prints_as_prometheus(q, want):
    assert s(q) == want


def test_precedence_and_associativity():
    e = parse("a + b * c ^ d ^ e - f")
    assert e.op == "-" and e.lhs.op == "+"
    mul = e.lhs.rhs
    assert mul.op == "*" and mul.rhs.op == "^" and mul.rhs.rhs.op == "^"  # ^ is right-associative
    assert parse("a or b and c unless d").op == "or"
    assert parse("a == b + c").op == "=="
    assert parse("a </ b + c").op == "</"
    e = parse("-a ^ b")  # unary minus binds looser than ^ ...
    assert isinstance(e, ast.UnaryExpr) and e.expr.op == "^"
    e = parse("-a * b")  # ... and as tight as *
    assert e.op == "*" and isinstance(e.lhs, ast.UnaryExpr)
    assert parse("-2 ^ 2").val if False else isinstance(parse("-2 ^ 2"), ast.UnaryExpr)
    e = parse("a atan2 b * c")
    assert e.op == "*" and e.lhs.op == "atan2"
    e = parse("-x offset 5m")  # offset binds to the selector
    assert isinstance(e, ast.UnaryExpr) and e.expr.offset == timedelta(minutes=5)
    e = parse("x offset 100 + 2")
    assert e.op == "+" and e.lhs.offset == timedelta(seconds=100)


def test_node_fields():
    e = parse('sum by (a) (rate(x{b!~"c"}[5m] offset -1m @ 10))')
    assert e.op == "sum" and e.modifier.type == ast.AggModifierType.By and e.modifier.labels == ["a"]
    call = e.expr
    assert call.func.name == "rate" and call.func.arg_types == (ast.ValueType.Matrix,)
    ms = call.args[0]
    assert ms.range == timedelta(minutes=5)
    vs = ms.vector_selector
    assert vs.name == "x" and vs.offset == timedelta(minutes=-1)
    assert vs.at.type == ast.AtModifierType.At and vs.at.ms == 10_000
    m = vs.matchers.matchers[0]
    assert (m.op, m.name, m.value) == (ast.MatchOp.NotRe, "b", "c")
    b = parse("a / on(x) group_left(y) b")
    assert b.modifier.card == ast.VectorMatchCardinality.ManyToOne
    assert b.modifier.matching.type == ast.LabelModifierType.Include and b.modifier.matching.labels == ["x"]
    assert b.modifier.group_labels == ["y"]
    assert parse("a and b").modifier.card == ast.VectorMatchCardinality.ManyToMany
    f = parse("a + fill_left(3) b", ALL).modifier
    assert (f.fill_left, f.fill_right) == (3.0, None)
    f = parse("a + fill(-2) b", ALL).modifier
    assert (f.fill_left, f.fill_right) == (-2.0, -2.0)
    sq = parse("x[1h:]")
    assert sq.range == timedelta(hours=1) and sq.step is None
    assert parse("x[1m] anchored", ALL).vector_selector.anchored
    assert parse("x smoothed", ALL).smoothed
    assert parse("info(x)", ALL).func.experimental


def test_duration_expressions_resolve_per_query():
    e = parse("rate(x[step() + 1ms])")
    ms = e.args[0]
    assert ms.range is None and ms.range_expr.op == "+"
    ast.resolve_durations(e, step_ms=10_000, range_ms=0)
    assert ms.range == timedelta(seconds=10, milliseconds=1)
    e = parse("x offset -min_of(step(), 1s)")
    ast.resolve_durations(e, step_ms=5_000, range_ms=0)
    assert e.offset == timedelta(seconds=-1)
    e = parse("x[range()]")
    with pytest.raises(ast.DurationError, match="^2:9: duration must be greater than 0$"):
        ast.resolve_durations(e, step_ms=0, range_ms=0)
    e = parse("x[1m:step()*2]")
    ast.resolve_durations(e, step_ms=30_000, range_ms=0)
    assert e.step == timedelta(minutes=1)
    e = parse("x[1m / (step() - step())]")
    with pytest.raises(ast.DurationError, match="division by zero"):
        ast.resolve_durations(e, step_ms=1000, range_ms=0)


@pytest.mark.parametrize("q,want", [
    ("sum(rate(x[5m])", "1:16: parse error: unclosed left parenthesis"),
    ("foo{", "1:5: parse error: unexpected end of input inside braces"),
    ("1+", "1:3: parse error: unexpected end of input"),
    ("x[5m", "1:5: parse error: unclosed left bracket"),
    ("rate(x[5m]) +", "1:14: parse error: unexpected end of input"),
    ("sum(x) + foo(y)", '1:10: parse error: unknown function with name "foo"'),
    ('abs(x) + abs("a,b", y)', '1:10: parse error: expected 1 argument(s) in call to "abs", got 2'),
    ("sum by (a) (x) + topk by (a) (x)",
     "1:18: parse error: wrong number of arguments for aggregate expression provided, expected 2, got 1"),
    ("rate(x)", '1:6: parse error: expected type range vector in call to function "rate", got instant vector'),
    ("", "unknown position: parse error: no expression found in input"),
    ("  # c", "1:1: parse error: no expression found in input"),
    ("sum(x y)", '1:7: parse error: unexpected identifier "y" in aggregation'),
    ("rate(x y)", '1:8: parse error: unexpected identifier "y"'),
    ("x offset y", '1:10: parse error: unexpected identifier "y" in offset, expected number, duration, step(), or range()'),
    ("x @ y", '1:5: parse error: unexpected identifier "y" in @, expected timestamp'),
    ("x[5m 1]", '1:6: parse error: unexpected number "1" in subquery or range, expected ":" or "]"'),
    ("x[5m:1m 1]", '1:9: parse error: unexpected number "1" in subquery selector, expected "]"'),
    ("x[5m+]", '1:6: parse error: unexpected "]" in subquery or range selector, expected number, duration, step(), or range()'),
    ("x[foo]", "1:3: parse error: unexpected character in duration expression: 'f'"),
    ("x[5m foo]", "1:6: parse error: unexpected character: 'f', expected ':'"),
    ("x[:5m]", "1:4: parse error: unexpected colon before duration in duration expression"),
    ("x[0]", "1:3: parse error: duration must be greater than 0"),
    ("x[-1m]", "1:3: parse error: duration must be greater than 0"),
    ("x[1m/0]", "1:5: parse error: division by zero"),
    ("x[1m%0]", "1:5: parse error: modulo by zero"),
    ("x[5hs]", '1:3: parse error: unknown unit "hs" in duration "5hs"'),
    ("x[5m1h]", '1:3: parse error: not a valid duration string: "5m1h"'),
    ("x offset 1000y", '1:10: parse error: duration out of range'),
    ('foo{a="b" c="d"}', '1:11: parse error: unexpected identifier "c" in label matching, expected "," or "}"'),
    ("foo{a=}", '1:7: parse error: unexpected "}" in label matching, expected string'),
    ("foo{a}", '1:6: parse error: unexpected "}" in label matching, expected label matching operator'),
    ("foo{=}", '1:5: parse error: unexpected "=" in label matching, expected identifier or "}"'),
    ("sum by x (y)", '1:8: parse error: unexpected identifier "x" in grouping opts, expected "("'),
    ("sum by (a b) (y)", '1:11: parse error: unexpected identifier "b" in grouping opts, expected "," or ")"'),
    ("sum by (1) (y)", '1:9: parse error: unexpected number "1" in grouping opts, expected label'),
    ("{}", "1:1: parse error: vector selector must contain at least one non-empty matcher"),
    ('{a=""}', "1:1: parse error: vector selector must contain at least one non-empty matcher"),
    ('foo{__name__="bar"}', '1:1: parse error: metric name must not be set twice: "foo" or "bar"'),
    ("(x)[5m]", "1:4: parse error: ranges only allowed for vector selectors"),
    ("x offset 1m[5m]", "1:12: parse error: no offset modifiers allowed before range"),
    ("(x) offset 1m", "1:1: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery"),
    ("x offset 1m offset 2m", "1:1: parse error: offset may not be set multiple times"),
    ("x @ 1 @ 2", "1:1: parse error: @ <timestamp> may not be set multiple times"),
    ("1 > 2", "1:3: parse error: comparisons between scalars must use BOOL modifier"),
    ("a + bool b", "1:3: parse error: bool modifier can only be used on comparison operators"),
    ("1 and x", '1:1: parse error: set operator "and" not allowed in binary scalar expression'),
    ("a and on(x) group_left b", '1:1: parse error: no grouping allowed for "and" operation'),
    ("1 + on(x) b", "1:1: parse error: vector matching only allowed between instant vectors"),
    ("x[5m] + 1", "1:1: parse error: binary expression must contain only scalar and instant vector types"),
    ("-x[5m]", '1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got "range vector"'),
    ("x[5m][1m:]", "1:1: parse error: subquery is only allowed on instant vector, got matrix instead"),
    ("sum(x[5m])", "1:5: parse error: expected type instant vector in aggregation expression, got range vector"),
    ('topk("a", x)', "1:6: parse error: expected type scalar in aggregation parameter, got string"),
    ("abs(x,)", "1:6: parse error: trailing commas not allowed in function call args"),
    ('"unterminated', "1:1: parse error: unterminated quoted string"),
    ('"\\q"', "1:1: parse error: unknown escape sequence U+0071 'q'"),
    ("x ! y", "1:3: parse error: unexpected character after '!': ' '"),
    ("x )", "1:4: parse error: unexpected right parenthesis ')'"),
    ("x $", "1:3: parse error: unexpected character: '$'"),
    ("round(x, 1, 2)", '1:1: parse error: expected at most 2 argument(s) in call to "round", got 3'),
    ("label_join(x)", '1:1: parse error: expected at least 3 argument(s) in call to "label_join", got 1'),
    ("x @ Inf", "1:1: parse error: timestamp out of bounds for @ modifier: +Inf"),
    # found by diffing against Prometheus 3.14's parser on mutated queries
    ('sum by ("") (x)', '1:9: parse error: invalid label name for grouping: ""'),
    ("x offset -Inf", "1:10: parse error: duration out of range"),
    ("a + on(b) group_left", '1:21: parse error: unexpected end of input in grouping opts, expected "("'),
    ("1_}", '1:1: parse error: error parsing number: strconv.ParseFloat: parsing "1_": invalid syntax'),
    ("1e999", '1:1: parse error: error parsing number: strconv.ParseFloat: parsing "1e999": value out of range'),
    ("de (lta(x[1m])", '1:5: parse error: unknown function with name "lta"'),  # before the lexer's error
    ("x[-1", "1:5: parse error: unclosed left bracket"),  # the lexer's error before the check
    ("round(x, >/0.1)", "1:8: parse error: trailing commas not allowed in function call args"),
    ('x{a=~"(a"}', "1:3: parse error: error parsing regexp: missing closing ): `(a`"),
    ('x{a=~"*"}', "1:3: parse error: error parsing regexp: missing argument to repetition operator: `*`"),
    ("exp(@ln(x))", "1:5: parse error: unexpected <op:@>"),
    ("STEP()", '1:1: parse error: unknown function with name "STEP"'),
    ("x !", "1:3: parse error: unexpected character after '!': '\ufffd'"),
    # features that are off
    ("info(x)", '1:1: parse error: function "info" is not enabled'),
    ("limitk(1, x)", "1:1: parse error: limitk() is experimental and must be enabled with "
                     "--enable-feature=promql-experimental-functions"),
    ("a + fill(0) b", "1:1: parse error: binop fill modifiers are experimental and not enabled"),
    ("x[1m] anchored", "1:1: parse error: anchored modifier is experimental and not enabled"),
    ("x smoothed", "1:1: parse error: smoothed modifier is experimental and not enabled"),
])
def test_error_texts(q, want):
    assert err(q) == want


def test_feature_errors_with_features_on():
    assert err("x[1m:] anchored", ALL) == "1:1: parse error: anchored modifier is not supported for subqueries"
    assert err("x anchored smoothed", ALL) == ("1:1: parse error: anchored and smoothed modifiers "
                                               "cannot be used together")
    assert err('info(x, y)', ALL) == "1:9: parse error: expected label selectors only, got vector selector instead"
    assert err("a and fill(1) b", ALL) == "1:1: parse error: filling in missing series not allowed for set operators"


def test_depth_is_bounded_without_recursion_error():
    for q in ("(" * 5000 + "1" + ")" * 5000, "x" + " + x" * 5000, "-" * 5000 + "1",
              "x" + "[1m:]" * 3000, "sum(" * 3000 + "x" + ")" * 3000, "x[" + "(" * 5000 + "1" + ")" * 5000 + "]"):
        with pytest.raises(ParseError, match="nests too deeply"):
            parse(q)
    with pytest.raises(ParseError, match="^1:1: parse error: query is 300000 characters long, more than the limit of 262144$"):
        parse("x" * 300_000)
    parse("(" * 90 + "1" + ")" * 90)  # deep but real
    parse("sum(" * 90 + "x" + ")" * 90)
