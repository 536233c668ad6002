"""PromQL parser: recursive descent with Prometheus 3.14's grammar, precedence and error texts.

Prometheus parses with a yacc grammar (promql/parser/generated_parser.y); this reads the same
language with one token of lookahead, so errors surface at the same token. Its syntax errors
name the innermost construct that has an error rule in the grammar (aggregation, offset, ``@``,
``[...]``), as yacc's error recovery does, and semantic errors are raised where the grammar
reduces the construct. Type checks (Prometheus's checkAST) run on the finished tree. The
first error wins, as Prometheus reports only its first.

Bounded: the nesting depth is counted and refused past ``max_depth`` with a parse error, so no
input reaches Python's recursion limit; the length is bounded by the caller (guard.py).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from querier.promql import ast
from querier.promql.ast import (AggModifier, AggModifierType, AggregateExpr, AtModifier, AtModifierType,
                                BinaryExpr, BinModifier, Call, DurationExpr, Function, LabelModifier,
                                LabelModifierType, Matcher, Matchers, MatchOp, MatrixSelector,
                                NumberLiteral, ParenExpr, StringLiteral, SubqueryExpr, UnaryExpr,
                                ValueType, VectorMatchCardinality, VectorSelector, value_type)
from querier.promql.lexer import (AGGREGATORS, AT, COLON, COMMA, COMMENT, DURATION, EOF, EQL, EQL_REGEX,
                                  ERROR, IDENTIFIER, LEFT_BRACE, LEFT_BRACKET, LEFT_PAREN,
                                  METRIC_IDENTIFIER, NEQ_REGEX, NUMBER, RIGHT_BRACE, RIGHT_BRACKET,
                                  RIGHT_PAREN, STRING, Lexer, Token, go_quote, unquote)
from receiver.tsdb.labels import InvalidRegex
from receiver.tsdb.labels import Matcher as StoreMatcher

V, S, M, STR = ValueType.Vector, ValueType.Scalar, ValueType.Matrix, ValueType.String


def _fn(name: str, args: tuple, ret: ValueType = V, variadic: int = 0, experimental: bool = False):
    return name, Function(name, args, variadic, ret, experimental)


# Prometheus 3.14's function table (promql/parser/functions.go): argument types, variadic
# count, return type, and whether --enable-feature=promql-experimental-functions is needed.
FUNCTIONS: dict[str, Function] = dict((
    *(_fn(n, (V,)) for n in (
        "abs", "absent", "acos", "acosh", "asin", "asinh", "atan", "atanh", "ceil", "cos", "cosh",
        "deg", "exp", "floor", "histogram_avg", "histogram_count", "histogram_sum",
        "histogram_stddev", "histogram_stdvar", "ln", "log10", "log2", "rad", "sgn", "sin", "sinh",
        "sort", "sort_desc", "sqrt", "tan", "tanh", "timestamp")),
    *(_fn(n, (M,)) for n in (
        "absent_over_time", "avg_over_time", "changes", "count_over_time", "delta", "deriv",
        "idelta", "increase", "irate", "last_over_time", "max_over_time", "min_over_time",
        "present_over_time", "rate", "resets", "stddev_over_time", "stdvar_over_time",
        "sum_over_time", "first_over_time")),
    *(_fn(n, (M,), experimental=True) for n in (
        "mad_over_time", "ts_of_first_over_time", "ts_of_max_over_time",
        "ts_of_min_over_time", "ts_of_last_over_time")),
    *(_fn(n, (V,), variadic=1) for n in (
        "days_in_month", "day_of_month", "day_of_week", "day_of_year", "hour", "minute", "month",
        "year")),
    *(_fn(n, (), S, experimental=True) for n in ("start", "end", "step", "range")),
    _fn("clamp", (V, S, S)), _fn("clamp_max", (V, S)), _fn("clamp_min", (V, S)),
    _fn("histogram_fraction", (S, S, V)), _fn("histogram_quantile", (S, V)),
    _fn("histogram_quantiles", (V, STR, S, S), variadic=9, experimental=True),
    _fn("double_exponential_smoothing", (M, S, S), experimental=True),
    _fn("info", (V, V), variadic=1, experimental=True),
    _fn("label_replace", (V, STR, STR, STR, STR)),
    _fn("label_join", (V, STR, STR, STR), variadic=-1),
    _fn("max_of", (S, S), S, experimental=True), _fn("min_of", (S, S), S, experimental=True),
    _fn("pi", (), S), _fn("predict_linear", (M, S)), _fn("quantile_over_time", (S, M)),
    _fn("round", (V, S), variadic=1), _fn("scalar", (V,), S),
    _fn("sort_by_label", (V, STR), variadic=-1, experimental=True),
    _fn("sort_by_label_desc", (V, STR), variadic=-1, experimental=True),
    _fn("start_timestamp", (V,), experimental=True),
    _fn("time", (), S), _fn("vector", (S,)),
))

PARAM_AGGREGATORS = frozenset(("topk", "bottomk", "count_values", "quantile", "limitk", "limit_ratio"))
EXPERIMENTAL_AGGREGATORS = frozenset(("limitk", "limit_ratio"))
# Precedence of binary operators (higher binds tighter); ^ is right-associative.
PRECEDENCE = {"or": 1, "and": 2, "unless": 2, "==": 3, "!=": 3, "<=": 3, "<": 3, ">=": 3, ">": 3,
              "</": 3, ">/": 3, "+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6}
_UNARY_OPERAND = 6  # unary minus has the precedence of *: its operand takes only ^
# Words the grammar accepts as a metric name (metric_identifier) and as a grouping label.
_METRIC_WORDS = frozenset(("avg", "bottomk", "by", "count", "count_values", "fill", "fill_left",
                           "fill_right", "group", "and", "or", "unless", "max", "min", "offset",
                           "quantile", "stddev", "stdvar", "sum", "topk", "without", "start", "end",
                           "limitk", "limit_ratio", "step", "range", "anchored", "smoothed", "max_of",
                           "min_of"))
_LABEL_WORDS = (_METRIC_WORDS - {"without"}) | {"bool", "group_left", "group_right", "ignoring", "on",
                                                 "atan2", "without", "by"}
_EXPR_START = frozenset((NUMBER, DURATION, STRING, LEFT_PAREN, LEFT_BRACE, IDENTIFIER, METRIC_IDENTIFIER,
                         "+", "-", "start", "end", "step", "range", "max_of", "min_of"))
_MATCH_OPS = {EQL: MatchOp.Equal, "!=": MatchOp.NotEqual, EQL_REGEX: MatchOp.Re, NEQ_REGEX: MatchOp.NotRe}
_MAX_DURATION_S = (1 << 63) / 1e9
_GO_INT = re.compile(r"^(?:0[xX](_?[0-9a-fA-F])+|0[bB](_?[01])+|0[oO](_?[0-7])+|0(_?[0-7])*|[1-9](_?[0-9])*)$")


@dataclass(frozen=True)
class ParserOptions:
    """Prometheus's parser.Options: syntax behind --enable-feature flags."""

    experimental_functions: bool = False
    extended_range_selectors: bool = False
    binop_fill_modifiers: bool = False
    max_depth: int = 200  # nesting of expressions; deeper input is refused
    max_length: int = 256 * 1024  # characters; longer input is refused before any work


class ParseError(ValueError):
    """A parse error as Prometheus prints it: ``<line>:<col>: parse error: <msg>``."""

    def __init__(self, query: str, pos: int, msg: str) -> None:
        self.query, self.pos, self.msg = query, pos, msg
        super().__init__(f"{position(query, pos)}: parse error: {msg}")


def position(query: str, offset: int) -> str:
    """Prometheus's ``line:column`` of a character offset (columns count bytes, from 1)."""
    if query == "":
        return "unknown position"
    before = query[:offset]
    line = before.count("\n") + 1
    return f"{line}:{len(before.rsplit(chr(10), 1)[-1].encode()) + 1}"


def parse(query: str, options: ParserOptions = ParserOptions()):
    """The syntax tree of ``query``; ParseError with Prometheus's text if it is not valid."""
    return _Parser(query, options).parse()


def parse_number(text: str) -> float | None:
    """Prometheus's number(): strconv.ParseInt(s, 0, 64), else strconv.ParseFloat; None if
    neither accepts it."""
    if _GO_INT.match(text):
        t = text.replace("_", "")
        if len(t) > 1 and t[0] == "0" and t[1] not in "xXbBoO":
            t = "0o" + t[1:]
        return float(int(t, 0))
    if "_" in text and not _underscores_ok(text.lower()):
        return None
    low = text.lower().replace("_", "")
    if low in ("inf", "+inf", "infinity"):
        return math.inf
    if low == "nan":
        return math.nan
    try:
        if low.startswith("0x"):
            return float.fromhex(low) if "p" in low else None
        if not re.fullmatch(r"(\d+\.?\d*|\.\d+)(e[+-]?\d+)?", low):
            return None
        return float(low)
    except (ValueError, OverflowError):
        return None


_UNITS_NS = {"y": (1, 365 * 86400 * 10**9), "w": (2, 7 * 86400 * 10**9), "d": (3, 86400 * 10**9),
             "h": (4, 3600 * 10**9), "m": (5, 60 * 10**9), "s": (6, 10**9), "ms": (7, 10**6)}
_DURATION_PART = re.compile(r"(\d*)(\D*)")


def _underscores_ok(s: str) -> bool:
    """Go's strconv underscoreOK: ``_`` only between digits (or a base prefix and a digit)."""
    saw, i = "^", 0
    hexa = len(s) >= 2 and s[0] == "0" and s[1] in "box"
    if hexa:
        saw, i, hexa = "0", 2, s[1] == "x"
    for c in s[i:]:
        if "0" <= c <= "9" or (hexa and "a" <= c <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def parse_duration_s(text: str) -> float:
    """prometheus/common model.ParseDuration, in seconds; ValueError with its message."""
    if text == "0":
        return 0.0
    if text == "":
        raise ValueError("empty duration string")
    ns, last, i = 0, 0, 0
    while i < len(text):
        m = _DURATION_PART.match(text, i)
        digits, unit = m.group(1), m.group(2)
        if not digits or not unit:
            raise ValueError(f"not a valid duration string: {go_quote(text)}")
        i = m.end()
        if unit not in _UNITS_NS:
            raise ValueError(f"unknown unit {go_quote(unit)} in duration {go_quote(text)}")
        order, mult = _UNITS_NS[unit]
        if order <= last:
            raise ValueError(f"not a valid duration string: {go_quote(text)}")
        last = order
        v = int(digits)
        if v > (1 << 63) // mult:
            raise ValueError("duration out of range")
        ns += v * mult
        if ns > (1 << 63) - 1:
            raise ValueError("duration out of range")
    return ns / 1e9


class _Parser:
    def __init__(self, query: str, options: ParserOptions) -> None:
        self.q = query
        self.opts = options
        self.lex = Lexer(query)
        self.tok: Token = self._lex()
        self.prev_end = 0  # end of the last consumed token (Prometheus's lastClosing, roughly)
        self.ctx: list[tuple[str, str]] = []  # enclosing grammar rules with an error alternative
        self.depth = 0

    # -- tokens --------------------------------------------------------------------------------
    def _lex(self) -> Token:
        """The next token. A lexer error becomes an ERROR token, reported once the parser looks
        at it: an error the grammar finds before needing that token is reported first."""
        while True:
            t = self.lex.next()
            if t.typ != COMMENT:
                return t

    def _lexer_error_first(self) -> None:
        """Where Prometheus's parser reads the next token before reducing (and so before the
        semantic checks of that reduction), a lexer error there comes first."""
        if self.tok.typ == ERROR:
            raise ParseError(self.q, self.tok.pos, self.tok.val)

    def _advance(self) -> Token:
        t = self.tok
        self.prev_end = t.end
        self.tok = self._lex()
        return t

    def _error(self, pos: int, msg: str) -> ParseError:
        return ParseError(self.q, pos, msg)

    def _unexpected(self, context: str = "", expected: str = "") -> ParseError:
        """A syntax error at the current token, worded by the innermost rule that has an error
        alternative (or given here), as Prometheus's unexpected()."""
        self._lexer_error_first()
        if not context and self.ctx:
            context, expected = self.ctx[-1]
        msg = "unexpected " + self.tok.desc()
        if context:
            msg += " in " + context
        if expected:
            msg += ", expected " + expected
        return ParseError(self.q, self.tok.pos, msg)

    def _expect(self, typ: str, context: str = "", expected: str = "") -> Token:
        if self.tok.typ != typ:
            raise self._unexpected(context, expected)
        return self._advance()

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > self.opts.max_depth:
            raise self._error(self.tok.pos, f"query nests too deeply (more than {self.opts.max_depth} "
                                            "levels of parentheses, operators and subqueries)")

    # -- entry ---------------------------------------------------------------------------------
    def parse(self):
        if len(self.q) > self.opts.max_length:
            raise self._error(0, f"query is {len(self.q)} characters long, more than the limit of "
                                 f"{self.opts.max_length}")
        if self.tok.typ == EOF:
            raise self._error(0, "no expression found in input")
        e = self._expr(0)
        if self.tok.typ != EOF:
            raise self._unexpected()
        _Checker(self.q).check(e)
        return e

    # -- expressions ---------------------------------------------------------------------------
    def _expr(self, min_prec: int):
        """Binary operators at ``min_prec`` or tighter, by precedence climbing."""
        self._enter()
        levels = 1
        lhs = self._postfix(self._primary())
        while True:
            op = self.tok.typ
            prec = PRECEDENCE.get(op)
            if prec is None or prec < min_prec:
                break
            self._advance()
            mod = self._bin_modifier()
            rhs = self._expr(prec if op == "^" else prec + 1)
            lhs = self._binary(op, lhs, rhs, mod)
            self._enter()  # a chain nests one level per operator in the tree
            levels += 1
        self.depth -= levels
        return lhs

    def _binary(self, op: str, lhs, rhs, mod: BinModifier):
        self._lexer_error_first()
        e = BinaryExpr(op, lhs, rhs, mod, (lhs.pos[0], rhs.pos[1]))
        if not self.opts.binop_fill_modifiers and (mod.fill_left is not None or mod.fill_right is not None):
            raise self._error(e.pos[0], "binop fill modifiers are experimental and not enabled")
        return e

    def _bin_modifier(self) -> BinModifier:
        mod = BinModifier()
        if self.tok.typ == "bool":
            self._advance()
            mod.return_bool = True
        if self.tok.typ in ("on", "ignoring"):
            kind = LabelModifierType.Include if self._advance().typ == "on" else LabelModifierType.Exclude
            mod.matching = LabelModifier(kind, self._grouping_labels())
            if self.tok.typ in ("group_left", "group_right"):
                side = self._advance().typ
                mod.card = (VectorMatchCardinality.ManyToOne if side == "group_left"
                            else VectorMatchCardinality.OneToMany)
                if self.tok.typ == LEFT_PAREN:
                    mod.group_labels = self._grouping_labels()
                elif not (self._starts_expr() or self.tok.typ in ("fill", "fill_left", "fill_right")):
                    raise self._unexpected("grouping opts", '"("')
        t = self.tok.typ
        if t == "fill":
            self._advance()
            mod.fill_left = mod.fill_right = self._fill_value()
        elif t in ("fill_left", "fill_right"):
            self._advance()
            v = self._fill_value()
            if t == "fill_left":
                mod.fill_left = v
            else:
                mod.fill_right = v
            other = "fill_right" if t == "fill_left" else "fill_left"
            if self.tok.typ == other:
                self._advance()
                v = self._fill_value()
                if other == "fill_left":
                    mod.fill_left = v
                else:
                    mod.fill_right = v
        return mod

    def _fill_value(self) -> float:
        self._expect(LEFT_PAREN)
        sign = 1.0
        if self.tok.typ in ("+", "-"):
            sign = -1.0 if self._advance().typ == "-" else 1.0
        if self.tok.typ not in (NUMBER, DURATION):
            raise self._unexpected()
        v = self._number_literal().val * sign
        self._expect(RIGHT_PAREN)
        return v

    def _postfix(self, e):
        """Range/subquery brackets, offset, @, anchored and smoothed bind tighter than any
        operator, to the expression just before them."""
        levels = 0
        while True:
            t = self.tok.typ
            if t == LEFT_BRACKET:
                self._enter()
                levels += 1
                e = self._bracket(e)
            elif t == "offset":
                e = self._offset(e)
            elif t == AT:
                e = self._at(e)
            elif t in ("anchored", "smoothed"):
                tok = self._advance()
                self._extended(e, tok.typ)
            else:
                self.depth -= levels
                return e

    def _primary(self):
        """A unary expression, literal, parenthesis, selector, call or aggregation. Nested
        expressions recurse through here and _expr only (two stack frames per level)."""
        t = self.tok
        typ = t.typ
        if typ in ("+", "-"):
            self._advance()
            e = self._expr(_UNARY_OPERAND)
            if isinstance(e, NumberLiteral):
                if typ == "-":
                    e.val = -e.val
                e.pos = (t.pos, e.pos[1])
                return e
            return UnaryExpr(typ, e, (t.pos, e.pos[1]))
        if typ in (NUMBER, DURATION):
            return self._number_literal()
        if typ == STRING:
            self._advance()
            return StringLiteral(unquote(t.val), (t.pos, t.end))
        if typ == LEFT_PAREN:
            self._advance()
            inner = self._expr(0)
            end = self._expect(RIGHT_PAREN)
            return ParenExpr(inner, (t.pos, end.end))
        if typ == LEFT_BRACE:
            return self._selector(None, t.pos)
        agg = typ in AGGREGATORS
        if agg or typ in (IDENTIFIER, "start", "end", "step", "range", "max_of", "min_of"):
            self._advance()
            modifier = None
            if agg:
                if self.tok.typ not in (LEFT_PAREN, "by", "without"):
                    return self._selector(t.val, t.pos)
                self.ctx.append(("aggregation", ""))
                if self.tok.typ in ("by", "without"):
                    modifier = self._agg_modifier()
                    if self.tok.typ != LEFT_PAREN:
                        raise self._unexpected()
            elif self.tok.typ != LEFT_PAREN:
                if typ == IDENTIFIER or typ in _METRIC_WORDS:
                    return self._selector(t.val, t.pos)
                raise self._unexpected()
            # the argument list, parsed here so that nesting costs two stack frames a level
            self._advance()
            args: list = []
            if self.tok.typ == RIGHT_PAREN:
                self._advance()
            else:
                while True:
                    args.append(self._expr(0))
                    if self.tok.typ == RIGHT_PAREN:
                        self._advance()
                        break
                    if self.tok.typ != COMMA:
                        raise self._unexpected()
                    comma = self._advance()
                    self._lexer_error_first()
                    if not self._starts_expr():
                        raise self._error(comma.pos, "trailing commas not allowed in function call args")
            if not agg:
                return self._call(t, args)
            if modifier is None and self.tok.typ in ("by", "without"):
                modifier = self._agg_modifier()
            self.ctx.pop()
            self._lexer_error_first()
            return self._aggregate(t, args, modifier)
        if typ == METRIC_IDENTIFIER or typ in _METRIC_WORDS:
            self._advance()
            return self._selector(t.val, t.pos)
        raise self._unexpected()

    def _starts_expr(self) -> bool:
        t = self.tok.typ
        return (t in _EXPR_START or t in AGGREGATORS or t in _METRIC_WORDS)

    def _number_literal(self) -> NumberLiteral:
        t = self._advance()
        if t.typ == DURATION:
            try:
                v = parse_duration_s(t.val)
            except ValueError as ex:
                raise self._error(t.pos, str(ex)) from None
            return NumberLiteral(v, True, (t.pos, t.end))
        v = parse_number(t.val)
        if v is None or (math.isinf(v) and t.val.lower().lstrip("+-") not in ("inf", "infinity")):
            why = "invalid syntax" if v is None else "value out of range"
            raise self._error(t.pos, f"error parsing number: strconv.ParseFloat: parsing {go_quote(t.val)}: {why}")
        return NumberLiteral(v, False, (t.pos, t.end))

    # -- selectors -----------------------------------------------------------------------------
    def _selector(self, name: str | None, start: int) -> VectorSelector:
        ms: list[Matcher] = []
        end = self.prev_end
        if self.tok.typ == LEFT_BRACE:
            self._advance()
            ms = self._matchers()
            end = self.prev_end
        return VectorSelector(name, Matchers(ms), pos=(start, end))

    def _matchers(self) -> list[Matcher]:
        ms: list[Matcher] = []
        if self.tok.typ == RIGHT_BRACE:
            self._advance()
            return ms
        while True:
            ms.append(self._matcher())
            if self.tok.typ == RIGHT_BRACE:
                self._advance()
                return ms
            if self.tok.typ != COMMA:
                raise self._unexpected("label matching", '"," or "}"')
            self._advance()
            if self.tok.typ == RIGHT_BRACE:
                self._advance()
                return ms

    def _matcher(self) -> Matcher:
        t = self.tok
        if t.typ == IDENTIFIER:
            self._advance()
            name = t.val
            if self.tok.typ not in _MATCH_OPS:
                raise self._unexpected("label matching", "label matching operator")
        elif t.typ == STRING:
            self._advance()
            name = _valid_utf8(unquote(t.val))
            if self.tok.typ not in _MATCH_OPS:
                return Matcher(MatchOp.Equal, "__name__", name)  # {"metric.name"}
        else:
            raise self._unexpected("label matching", 'identifier or "}"')
        op = _MATCH_OPS[self._advance().typ]
        if self.tok.typ != STRING:
            raise self._unexpected("label matching", "string")
        value = _valid_utf8(unquote(self._advance().val))
        if op in (MatchOp.Re, MatchOp.NotRe):
            try:
                StoreMatcher(ast.STORE_MATCH_TYPES[op], name, value)
            except InvalidRegex as ex:
                raise self._error(t.pos, str(ex)) from None
        return Matcher(op, name, value)

    def _grouping_labels(self) -> list[str]:
        if self.tok.typ != LEFT_PAREN:
            raise self._unexpected("grouping opts", '"("')
        self._advance()
        labels: list[str] = []
        if self.tok.typ == RIGHT_PAREN:
            self._advance()
            return labels
        while True:
            t = self.tok
            if t.typ == STRING:
                name = unquote(t.val)
            elif t.typ in (IDENTIFIER, METRIC_IDENTIFIER) or t.typ in _LABEL_WORDS:
                name = t.val
            else:
                raise self._unexpected("grouping opts", "label")
            if name == "":
                raise self._error(t.pos, f"invalid label name for grouping: {go_quote(name)}")
            self._advance()
            labels.append(name)
            if self.tok.typ == RIGHT_PAREN:
                self._advance()
                return labels
            if self.tok.typ != COMMA:
                raise self._unexpected("grouping opts", '"," or ")"')
            self._advance()
            if self.tok.typ == RIGHT_PAREN:
                self._advance()
                return labels

    # -- calls and aggregations ----------------------------------------------------------------
    def _call(self, name_tok: Token, args: list) -> Call:
        name = name_tok.val  # as written: STEP() is no function, as in Prometheus
        fn = FUNCTIONS.get(name)
        if fn is None:
            raise self._error(name_tok.pos, f"unknown function with name {go_quote(name)}")
        if fn.experimental and not self.opts.experimental_functions:
            raise self._error(name_tok.pos, f"function {go_quote(name)} is not enabled")
        return Call(fn, args, (name_tok.pos, self.prev_end))

    def _aggregate(self, op_tok: Token, args: list, modifier: AggModifier | None) -> AggregateExpr:
        op = op_tok.typ
        pos = (op_tok.pos, self.prev_end)
        if not args:
            raise self._error(pos[0], "no arguments for aggregate expression provided")
        want = 1
        param = None
        if op in PARAM_AGGREGATORS:
            if op in EXPERIMENTAL_AGGREGATORS and not self.opts.experimental_functions:
                raise self._error(pos[0], f"{op}() is experimental and must be enabled with "
                                          "--enable-feature=promql-experimental-functions")
            want = 2
            param = args[0]
        if len(args) != want:
            raise self._error(pos[0], "wrong number of arguments for aggregate expression provided, "
                                      f"expected {want}, got {len(args)}")
        return AggregateExpr(op, args[want - 1], param, modifier, pos)

    def _agg_modifier(self) -> AggModifier:
        kind = AggModifierType.By if self._advance().typ == "by" else AggModifierType.Without
        return AggModifier(kind, self._grouping_labels())

    # -- modifiers after an expression ---------------------------------------------------------
    def _bracket(self, e):
        """``[range]`` or ``[range:step]`` after an expression."""
        lb = self._advance()
        self.ctx.append(("subquery or range selector", "number, duration, step(), or range()"))
        rng = self._positive_duration()
        self.ctx.pop()
        if self.tok.typ == RIGHT_BRACKET:
            rb = self._advance()
            if not isinstance(e, VectorSelector):
                raise self._error(lb.pos, "ranges only allowed for vector selectors")
            if e.offset is not None or e.offset_expr is not None:
                raise self._error(lb.pos, "no offset modifiers allowed before range")
            if e.at is not None:
                raise self._error(lb.pos, "no @ modifiers allowed before range")
            r, rexpr = _split(rng)
            return MatrixSelector(e, r, rexpr, (e.pos[0], rb.end))
        if self.tok.typ != COLON:
            raise self._unexpected("subquery or range", '":" or "]"')
        self._advance()
        step = None
        if self.tok.typ != RIGHT_BRACKET:
            self.ctx.append(("subquery selector", 'number, duration, step(), range(), or "]"'))
            step = self._positive_duration()
            self.ctx.pop()
        rb = self._expect(RIGHT_BRACKET, "subquery selector", '"]"')
        r, rexpr = _split(rng)
        s, sexpr = _split(step) if step is not None else (None, None)
        if s is not None and s.total_seconds() == 0:
            s = None
        return SubqueryExpr(e, r, s, range_expr=rexpr, step_expr=sexpr, pos=(e.pos[0], rb.end))

    def _positive_duration(self):
        d = self._duration(0)
        self._lexer_error_first()
        if isinstance(d, NumberLiteral) and d.val <= 0:
            raise self._error(d.pos[0], "duration must be greater than 0")
        return d

    def _duration(self, min_prec: int, lhs=None):
        """A duration expression (inside ``[...]`` or after ``offset (``): + - * / % ^,
        unary signs, step(), range(), min_of(a, b), max_of(a, b) and parentheses; ``lhs``: its
        first operand, when the caller has read it."""
        self._enter()
        if lhs is None:
            lhs = self._duration_unary()
        while True:
            op = self.tok.typ
            if op not in ("+", "-", "*", "/", "%", "^"):
                break
            prec = PRECEDENCE[op]
            if prec < min_prec:
                break
            op_tok = self._advance()
            rhs = self._duration(prec if op == "^" else prec + 1)
            self._lexer_error_first()
            if op in ("/", "%") and isinstance(rhs, NumberLiteral) and rhs.val == 0:
                raise self._error(op_tok.pos, "division by zero" if op == "/" else "modulo by zero")
            lhs = DurationExpr(op, lhs, rhs, pos=(_dpos(lhs)[0], _dpos(rhs)[1]))
        self.depth -= 1
        return lhs

    def _duration_unary(self):
        if self.tok.typ in ("+", "-"):
            op = self._advance()
            e = self._duration(_UNARY_OPERAND)
            return self._signed_duration(op, e)
        return self._duration_primary()

    def _signed_duration(self, op: Token, e):
        if isinstance(e, NumberLiteral):
            if op.typ == "-":
                e.val = -e.val
            if e.val > _MAX_DURATION_S or e.val < -_MAX_DURATION_S:
                raise self._error(op.pos, "duration out of range")
            e.pos = (op.pos, e.pos[1])
            return e
        if op.typ == "-":
            return DurationExpr("-", None, e, pos=(op.pos, _dpos(e)[1]))
        return e

    def _duration_primary(self, check_range: bool = True):
        t = self.tok
        if t.typ in (NUMBER, DURATION):
            nl = self._number_literal()
            if check_range and (nl.val > _MAX_DURATION_S or nl.val < -_MAX_DURATION_S):
                raise self._error(nl.pos[0], "duration out of range")
            return nl
        if t.typ in ("step", "range"):
            self._advance()
            self._expect(LEFT_PAREN)
            end = self._expect(RIGHT_PAREN)
            return DurationExpr(t.typ, pos=(t.pos, end.end))
        if t.typ in ("min_of", "max_of"):
            self._advance()
            self._expect(LEFT_PAREN)
            a = self._duration(0)
            self._expect(COMMA)
            b = self._duration(0)
            end = self._expect(RIGHT_PAREN)
            return DurationExpr(t.typ, a, b, pos=(t.pos, end.end))
        if t.typ == LEFT_PAREN:
            self._advance()
            inner = self._duration(0)
            end = self._expect(RIGHT_PAREN)
            return _wrap(inner, t.pos, end.end)
        raise self._unexpected()

    def _offset(self, e):
        off_tok = self._advance()
        self.ctx.append(("offset", "number, duration, step(), or range()"))
        d = self._offset_duration()
        self.ctx.pop()
        if isinstance(e, MatrixSelector):
            target = e.vector_selector
        elif isinstance(e, (VectorSelector, SubqueryExpr)):
            target = e
        else:
            raise self._error(e.pos[0], "offset modifier must be preceded by an instant vector selector "
                                        "or range vector selector or a subquery")
        if (target.offset is not None and target.offset.total_seconds() != 0) or target.offset_expr is not None:
            raise self._error(e.pos[0], "offset may not be set multiple times")
        del off_tok
        if isinstance(d, NumberLiteral):
            target.offset = ast.seconds_to_timedelta(d.val)
        else:
            target.offset_expr = d
        e.pos = (e.pos[0], self.prev_end)
        if isinstance(e, MatrixSelector):
            target.pos = (target.pos[0], self.prev_end)
        return e

    def _offset_duration(self):
        """What may follow ``offset``: a literal, step(), range(), min_of/max_of(...) (each maybe
        signed) stand alone, so ``x offset 5m + 1`` adds 1 to the offset selector; only a
        parenthesised duration continues with operators, as in Prometheus's grammar."""
        t = self.tok
        sign = None
        if t.typ in ("+", "-"):
            sign = self._advance()
            t = self.tok
        if t.typ in (NUMBER, DURATION, "step", "range", "min_of", "max_of"):
            e = self._duration_primary(check_range=sign is None)  # a signed literal: checked signed
            return self._signed_duration(sign, e) if sign is not None else e
        if sign is not None and t.typ in ("+", "-"):  # -+2: a full duration expression
            return self._duration(0, self._signed_duration(sign, self._duration(_UNARY_OPERAND)))
        if t.typ == LEFT_PAREN:
            if sign is not None:
                self._advance()
                inner = self._duration(0)
                end = self._expect(RIGHT_PAREN)
                return self._signed_duration(sign, _wrap(inner, t.pos, end.end))
            return self._duration(0)
        raise self._unexpected()

    def _at(self, e):
        self._advance()
        self.ctx.append(("@", "timestamp"))
        t = self.tok
        if t.typ in ("start", "end"):
            self._advance()
            self._expect(LEFT_PAREN)
            self._expect(RIGHT_PAREN)
            at = AtModifier(AtModifierType.Start if t.typ == "start" else AtModifierType.End)
        else:
            sign = 1.0
            if t.typ in ("+", "-"):
                sign = -1.0 if self._advance().typ == "-" else 1.0
            if self.tok.typ not in (NUMBER, DURATION):
                raise self._unexpected()
            ts = self._number_literal().val * sign
            if math.isinf(ts) or math.isnan(ts) or ts >= 2.0 ** 63 or ts <= -(2.0 ** 63):
                raise self._error(e.pos[0], f"timestamp out of bounds for @ modifier: {_go_f(ts)}")
            at = AtModifier(AtModifierType.At, _round_half_away(ts * 1000))
        self.ctx.pop()
        target = e.vector_selector if isinstance(e, MatrixSelector) else e
        if not isinstance(target, (VectorSelector, SubqueryExpr)):
            raise self._error(e.pos[0], "@ modifier must be preceded by an instant vector selector or "
                                        "range vector selector or a subquery")
        if target.at is not None:
            raise self._error(e.pos[0], "@ <timestamp> may not be set multiple times")
        target.at = at
        e.pos = (e.pos[0], self.prev_end)
        return e

    def _extended(self, e, which: str) -> None:
        if not self.opts.extended_range_selectors:
            raise self._error(e.pos[0], f"{which} modifier is experimental and not enabled")
        if isinstance(e, SubqueryExpr):
            raise self._error(e.pos[0], f"{which} modifier is not supported for subqueries")
        vs = e.vector_selector if isinstance(e, MatrixSelector) else e
        if not isinstance(vs, VectorSelector):
            raise self._error(e.pos[0], f"{which} modifier not implemented")
        setattr(vs, which, True)
        if vs.anchored and vs.smoothed:
            raise self._error(e.pos[0], "anchored and smoothed modifiers cannot be used together")


def _valid_utf8(s: str) -> str:
    """Bytes that are not UTF-8 (kept by unquote as surrogate escapes) as U+FFFD: stored labels
    are UTF-8, so such a matcher still matches nothing, and nothing downstream fails to encode."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if _has_surrogate(s) else s


def _has_surrogate(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s) if not s.isascii() else False


def _go_f(v: float) -> str:
    """Go's %f."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"{v:.6f}"


def _round_half_away(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def _dpos(e) -> tuple[int, int]:
    return ast.duration_pos(e)


def _wrap(inner, start: int, end: int) -> DurationExpr:
    """A parenthesised duration: printed back with its parentheses."""
    if isinstance(inner, DurationExpr):
        inner.wrapped = True
        return inner
    return DurationExpr("+", None, inner, wrapped=True, pos=(start, end))


def _split(d):
    """(a literal's value as timedelta, or None; the duration expression, or None)."""
    if isinstance(d, NumberLiteral):
        return ast.seconds_to_timedelta(d.val), None
    return None, d


class _Checker:
    """Prometheus's checkAST: types and the rules the grammar cannot express, in its order
    (children first). Recursive: the parser bounded the tree's depth."""

    def __init__(self, query: str) -> None:
        self.q = query

    def _err(self, pos: int, msg: str) -> ParseError:
        return ParseError(self.q, pos, msg)

    def _op_pos(self, e: BinaryExpr) -> int:
        i = e.lhs.pos[1]
        while i < len(self.q) and self.q[i] in " \t\n\r":
            i += 1
        return i

    def _expect(self, e, want: ValueType, context: str) -> None:
        t = self.check(e)
        if t != want:
            raise self._err(e.pos[0], f"expected type {want.documented()} in {context}, got {t.documented()}")

    def check(self, e) -> ValueType:
        """The type of ``e`` (computed from its children's), after checking them and it."""
        if isinstance(e, BinaryExpr):
            return self._check_binary(e)
        if isinstance(e, ParenExpr):
            return self.check(e.expr)
        typ = value_type(e)
        if isinstance(e, AggregateExpr):
            self._expect(e.expr, V, "aggregation expression")
            if e.op in ("topk", "bottomk", "quantile", "limitk", "limit_ratio"):
                self._expect(e.param, S, "aggregation parameter")
            if e.op == "count_values":
                self._expect(e.param, STR, "aggregation parameter")
        elif isinstance(e, Call):
            self._check_call(e)
        elif isinstance(e, UnaryExpr):
            t = self.check(e.expr)
            if t not in (S, V):
                raise self._err(e.pos[0], "unary expression only allowed on expressions of type scalar "
                                          f"or instant vector, got {go_quote(t.documented())}")
            return t
        elif isinstance(e, SubqueryExpr):
            t = self.check(e.expr)
            if t != V:
                raise self._err(e.pos[0], f"subquery is only allowed on instant vector, got {t.value} instead")
        elif isinstance(e, MatrixSelector):
            self.check(e.vector_selector)
        elif isinstance(e, VectorSelector):
            self._check_selector(e)
        return typ

    def _check_selector(self, e: VectorSelector, bypass_empty: bool = False) -> None:
        if e.name is not None:
            for m in e.matchers.matchers:
                if m.name == "__name__":
                    raise self._err(e.pos[0], f"metric name must not be set twice: {go_quote(e.name)} "
                                              f"or {go_quote(m.value)}")
            return
        if bypass_empty:
            return
        for m in e.matchers.matchers:
            try:
                if not StoreMatcher(ast.STORE_MATCH_TYPES[m.op], m.name, m.value).matches_empty():
                    return
            except InvalidRegex:
                return  # the engine reports the regex
        raise self._err(e.pos[0], "vector selector must contain at least one non-empty matcher")

    def _check_call(self, e: Call) -> None:
        f = e.func
        nargs, got = len(f.arg_types), len(e.args)
        if f.variadic == 0:
            if nargs != got:
                raise self._err(e.pos[0], f"expected {nargs} argument(s) in call to {go_quote(f.name)}, got {got}")
        else:
            need = nargs - 1
            if need > got:
                raise self._err(e.pos[0], f"expected at least {need} argument(s) in call to "
                                          f"{go_quote(f.name)}, got {got}")
            if f.variadic > 0 and need + f.variadic < got:
                raise self._err(e.pos[0], f"expected at most {need + f.variadic} argument(s) in call to "
                                          f"{go_quote(f.name)}, got {got}")
        bypass = None
        if f.name == "info" and got > 1:
            a = e.args[1]
            t = value_type(a)
            if t != V:
                raise self._err(e.pos[0], f"expected type instant vector in call to function \"info\", "
                                          f"got {t.documented()}")
            if isinstance(a, VectorSelector) and a.name is not None:
                raise self._err(a.pos[0], "expected label selectors only, got vector selector instead")
            if not isinstance(a, VectorSelector):
                raise self._err(a.pos[0], "expected label selectors only")
            bypass = a
        for i, a in enumerate(e.args):
            if i >= nargs:
                if f.variadic == 0:
                    break
                i = nargs - 1
            if a is bypass:
                self._check_selector(a, bypass_empty=True)
                t = V
            else:
                t = self.check(a)
            if t != f.arg_types[i]:
                raise self._err(a.pos[0], f"expected type {f.arg_types[i].documented()} in call to function "
                                          f"{go_quote(f.name)}, got {t.documented()}")

    def _check_binary(self, e: BinaryExpr) -> ValueType:
        lt, rt = self.check(e.lhs), self.check(e.rhs)
        mod = e.modifier
        op = e.op
        if mod.return_bool and op not in ast.COMPARISON_OPS:
            raise self._err(self._op_pos(e), "bool modifier can only be used on comparison operators")
        if op in ast.COMPARISON_OPS and not mod.return_bool and lt == S and rt == S:
            raise self._err(self._op_pos(e), "comparisons between scalars must use BOOL modifier")
        if op in ast.SET_OPS and mod.card == VectorMatchCardinality.OneToOne:
            mod.card = VectorMatchCardinality.ManyToMany
        if mod.matching is not None and mod.matching.type == LabelModifierType.Include:
            for l1 in mod.matching.labels:
                if l1 in mod.group_labels:
                    raise self._err(self._op_pos(e), f"label {go_quote(l1)} must not occur in ON and GROUP "
                                                     "clause at once")
        if lt not in (S, V):
            raise self._err(e.lhs.pos[0], "binary expression must contain only scalar and instant vector types")
        if rt not in (S, V):
            raise self._err(e.rhs.pos[0], "binary expression must contain only scalar and instant vector types")
        filled = mod.fill_left is not None or mod.fill_right is not None
        if lt != V or rt != V:
            if mod.matching is not None and mod.matching.labels:
                raise self._err(e.pos[0], "vector matching only allowed between instant vectors")
            if filled:
                raise self._err(e.pos[0], "filling in missing series only allowed between instant vectors")
        elif op in ast.SET_OPS:
            if mod.card in (VectorMatchCardinality.OneToMany, VectorMatchCardinality.ManyToOne):
                raise self._err(e.pos[0], f"no grouping allowed for {go_quote(op)} operation")
            if filled:
                raise self._err(e.pos[0], "filling in missing series not allowed for set operators")
        if (lt == S or rt == S) and op in ast.SET_OPS:
            raise self._err(e.pos[0], f"set operator {go_quote(op)} not allowed in binary scalar expression")
        return S if lt == S and rt == S else V
