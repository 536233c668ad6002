"""PromQL syntax tree: the nodes :mod:`querier.promql.parser` builds and the engine walks.

Attribute names follow what the engine used on promql_parser's nodes (``e.func.name``,
``e.modifier.card``, ``vs.matchers.matchers`` ...), plus Prometheus 3.14's additions:
duration expressions (``*_expr`` fields, resolved per query by :func:`resolve_durations`),
``anchored``/``smoothed`` selectors, binary ``fill`` values and the trim operators ``</``, ``>/``.
Every node carries ``pos``: its (start, end) character offsets in the query, for error texts.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import timedelta

from receiver.tsdb.labels import MatchType


class ValueType(enum.Enum):
    Vector = "vector"
    Scalar = "scalar"
    Matrix = "matrix"
    String = "string"
    None_ = "none"

    def documented(self) -> str:
        """Prometheus's DocumentedType: the name users read in errors."""
        return {"vector": "instant vector", "matrix": "range vector"}.get(self.value, self.value)


class MatchOp(enum.Enum):
    Equal = "="
    NotEqual = "!="
    Re = "=~"
    NotRe = "!~"


# How storage names each matcher kind.
STORE_MATCH_TYPES = {MatchOp.Equal: MatchType.EQ, MatchOp.NotEqual: MatchType.NEQ,
                     MatchOp.Re: MatchType.RE, MatchOp.NotRe: MatchType.NRE}


class AtModifierType(enum.Enum):
    At = "at"
    Start = "start"
    End = "end"


class LabelModifierType(enum.Enum):
    Include = "on"
    Exclude = "ignoring"


class AggModifierType(enum.Enum):
    By = "by"
    Without = "without"


class VectorMatchCardinality(enum.Enum):
    OneToOne = "one-to-one"
    ManyToOne = "many-to-one"
    OneToMany = "one-to-many"
    ManyToMany = "many-to-many"


Pos = tuple[int, int]


@dataclass(eq=False, slots=True)
class Function:
    """One entry of Prometheus's function table (promql/parser/functions.go)."""

    name: str
    arg_types: tuple[ValueType, ...]
    variadic: int = 0  # 0: exactly arg_types; n > 0: up to n more of the last type; -1: any more
    return_type: ValueType = ValueType.Vector
    experimental: bool = False


@dataclass(eq=False, slots=True)
class Matcher:
    op: MatchOp
    name: str
    value: str


@dataclass(eq=False, slots=True)
class Matchers:
    matchers: list[Matcher]


@dataclass(eq=False, slots=True)
class AtModifier:
    type: AtModifierType
    ms: int | None = None  # the timestamp of ``@ <t>``, in milliseconds

    @property
    def at(self) -> int | None:
        return self.ms


@dataclass(eq=False, slots=True)
class NumberLiteral:
    val: float
    duration: bool = False  # written as a duration (``5m``): printed back as one
    pos: Pos = (0, 0)


@dataclass(eq=False, slots=True)
class StringLiteral:
    val: str
    pos: Pos = (0, 0)


@dataclass(eq=False, slots=True)
class DurationExpr:
    """Arithmetic in a duration position, resolved per query (it may use ``step()``/``range()``).

    op: ``+ - * / % ^`` (lhs None: unary), ``step``, ``range``, ``min_of``, ``max_of``.
    Operands are NumberLiterals (in seconds) or DurationExprs."""

    op: str
    lhs: NumberLiteral | DurationExpr | None = None
    rhs: NumberLiteral | DurationExpr | None = None
    wrapped: bool = False  # written in parentheses
    pos: Pos = (0, 0)


@dataclass(eq=False, slots=True)
class VectorSelector:
    name: str | None
    matchers: Matchers
    offset: timedelta | None = None
    at: AtModifier | None = None
    anchored: bool = False
    smoothed: bool = False
    offset_expr: DurationExpr | None = None
    pos: Pos = (0, 0)
    # The engine's store matchers of this selector, built once per (cached) tree: a dashboard
    # query's tree is reused, its matchers' validation need not be (engine.matchers_of).
    store_matchers: tuple | None = field(default=None, repr=False)


@dataclass(eq=False, slots=True)
class MatrixSelector:
    vector_selector: VectorSelector
    range: timedelta | None
    range_expr: DurationExpr | None = None
    pos: Pos = (0, 0)

    # @ and offset of a range selector sit on its vector selector, as in Prometheus
    @property
    def offset(self) -> timedelta | None:
        return self.vector_selector.offset

    @property
    def at(self) -> AtModifier | None:
        return self.vector_selector.at


@dataclass(eq=False, slots=True)
class SubqueryExpr:
    expr: object
    range: timedelta | None
    step: timedelta | None = None  # None: the default resolution
    offset: timedelta | None = None
    at: AtModifier | None = None
    range_expr: DurationExpr | None = None
    step_expr: DurationExpr | None = None
    offset_expr: DurationExpr | None = None
    pos: Pos = (0, 0)


@dataclass(eq=False, slots=True)
class ParenExpr:
    expr: object
    pos: Pos = (0, 0)


@dataclass(eq=False, slots=True)
class UnaryExpr:
    op: str  # "-" or "+"
    expr: object
    pos: Pos = (0, 0)


@dataclass(eq=False, slots=True)
class LabelModifier:
    """``on (...)`` (Include) or ``ignoring (...)`` (Exclude)."""

    type: LabelModifierType
    labels: list[str]


@dataclass(eq=False, slots=True)
class BinModifier:
    card: VectorMatchCardinality = VectorMatchCardinality.OneToOne
    matching: LabelModifier | None = None
    return_bool: bool = False
    group_labels: list[str] = field(default_factory=list)  # group_left/right (...) labels
    fill_left: float | None = None  # fill(v) sets both sides
    fill_right: float | None = None


@dataclass(eq=False, slots=True)
class BinaryExpr:
    op: str  # + - * / % ^ atan2 == != < <= > >= and or unless, and </ (trim upper), >/ (trim lower)
    lhs: object
    rhs: object
    modifier: BinModifier | None = None
    pos: Pos = (0, 0)


@dataclass(eq=False, slots=True)
class AggModifier:
    type: AggModifierType
    labels: list[str]


@dataclass(eq=False, slots=True)
class AggregateExpr:
    op: str
    expr: object
    param: object | None = None
    modifier: AggModifier | None = None
    pos: Pos = (0, 0)


@dataclass(eq=False, slots=True)
class Call:
    func: Function
    args: list
    pos: Pos = (0, 0)


Expr = (NumberLiteral | StringLiteral | VectorSelector | MatrixSelector | SubqueryExpr | ParenExpr
        | UnaryExpr | BinaryExpr | AggregateExpr | Call)

COMPARISON_OPS = frozenset(("==", "!=", "<", "<=", ">", ">="))
SET_OPS = frozenset(("and", "or", "unless"))
TRIM_OPS = frozenset(("</", ">/"))


def value_type(e) -> ValueType:
    """The type of an expression (Prometheus's Expr.Type())."""
    while isinstance(e, (ParenExpr, UnaryExpr)):
        e = e.expr
    if isinstance(e, (NumberLiteral, DurationExpr)):
        return ValueType.Scalar
    if isinstance(e, StringLiteral):
        return ValueType.String
    if isinstance(e, (MatrixSelector, SubqueryExpr)):
        return ValueType.Matrix
    if isinstance(e, Call):
        return e.func.return_type
    if isinstance(e, BinaryExpr):
        if value_type(e.lhs) == ValueType.Scalar and value_type(e.rhs) == ValueType.Scalar:
            return ValueType.Scalar
        return ValueType.Vector
    return ValueType.Vector


def children(e) -> list:
    """The sub-expressions of a node, in query order."""
    if isinstance(e, BinaryExpr):
        return [e.lhs, e.rhs]
    if isinstance(e, AggregateExpr):
        return ([e.param] if e.param is not None else []) + [e.expr]
    if isinstance(e, Call):
        return list(e.args)
    if isinstance(e, (ParenExpr, UnaryExpr, SubqueryExpr)):
        return [e.expr]
    if isinstance(e, MatrixSelector):
        return [e.vector_selector]
    return []


def walk(e):
    """Every node of the tree, pre-order, without recursion (the parser bounds depth anyway)."""
    stack = [e]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(children(n)))


def seconds_to_timedelta(s: float) -> timedelta:
    """A duration in seconds as Prometheus keeps it: whole nanoseconds, rounded."""
    ns = round(s * 1e9)
    return timedelta(microseconds=ns / 1000)


def timedelta_ms(d: timedelta | None) -> int:
    if d is None:
        return 0
    return (d.days * 86400 + d.seconds) * 1000 + d.microseconds // 1000


class DurationError(ValueError):
    """A duration expression that does not resolve to a usable duration for this query."""


def _eval_duration(e, step_s: float, range_s: float, text_pos) -> float:
    if isinstance(e, NumberLiteral):
        return e.val
    lhs = _eval_duration(e.lhs, step_s, range_s, text_pos) if e.lhs is not None else 0.0
    rhs = _eval_duration(e.rhs, step_s, range_s, text_pos) if e.rhs is not None else 0.0
    op = e.op
    if op == "step":
        return step_s
    if op == "range":
        return range_s
    if op == "min_of":
        return min(lhs, rhs) if not (math.isnan(lhs) or math.isnan(rhs)) else math.nan
    if op == "max_of":
        return max(lhs, rhs) if not (math.isnan(lhs) or math.isnan(rhs)) else math.nan
    if op == "+":
        return rhs if e.lhs is None else lhs + rhs
    if op == "-":
        return -rhs if e.lhs is None else lhs - rhs
    if op == "*":
        return lhs * rhs
    if op in ("/", "%"):
        if rhs == 0:
            raise DurationError(f"{text_pos(e)}: {'division' if op == '/' else 'modulo'} by zero")
        return lhs / rhs if op == "/" else math.fmod(lhs, rhs)
    if op == "^":
        try:
            return math.pow(lhs, rhs)
        except (OverflowError, ValueError):
            return math.inf if lhs > 0 or rhs == int(rhs) else math.nan
    raise DurationError(f"unexpected duration expression operator {op!r}")


def duration_pos(e) -> Pos:
    """Prometheus's position range of a duration expression."""
    if isinstance(e, NumberLiteral):
        return e.pos
    if e.lhs is None and e.rhs is None or e.op in ("min_of", "max_of"):
        return e.pos
    if e.lhs is None:
        return (e.pos[0], duration_pos(e.rhs)[1])
    return (duration_pos(e.lhs)[0], duration_pos(e.rhs)[1])


def resolve_duration(e: DurationExpr, step_ms: int, range_ms: int, allow_negative: bool,
                     byte_pos=lambda p: p) -> timedelta:
    """The value of a duration expression for a query with this step and range (Prometheus's
    durationVisitor). Errors carry Prometheus's ``start:end`` byte offsets of the expression."""
    def text_pos(node) -> str:
        s, t = duration_pos(node)
        return f"{byte_pos(s)}:{byte_pos(t)}"
    v = _eval_duration(e, step_ms / 1000.0, range_ms / 1000.0, text_pos)
    if math.isnan(v) or math.isinf(v):
        raise DurationError(f"{text_pos(e)}: duration is NaN or infinite")
    if v <= 0 and not allow_negative:
        raise DurationError(f"{text_pos(e)}: duration must be greater than 0")
    if v > (1 << 63) / 1e9 or v < -(1 << 63) / 1e9:
        raise DurationError(f"{text_pos(e)}: duration is out of range")
    return timedelta(milliseconds=int(v * 1000))


def resolve_durations(expr, step_ms: int, range_ms: int, byte_pos=lambda p: p) -> None:
    """Set every ``offset``/``range``/``step`` written as a duration expression to its value for
    this query (in place; the tree is the query's own). Raises DurationError."""
    for n in walk(expr):
        if isinstance(n, MatrixSelector):
            n = n  # noqa: PLW0127 - the range; its selector's offset is visited on its own
            if n.range_expr is not None:
                n.range = resolve_duration(n.range_expr, step_ms, range_ms, False, byte_pos)
        elif isinstance(n, SubqueryExpr):
            if n.offset_expr is not None:
                n.offset = resolve_duration(n.offset_expr, step_ms, range_ms, True, byte_pos)
            if n.step_expr is not None:
                n.step = resolve_duration(n.step_expr, step_ms, range_ms, False, byte_pos)
            if n.range_expr is not None:
                n.range = resolve_duration(n.range_expr, step_ms, range_ms, False, byte_pos)
        elif isinstance(n, VectorSelector) and n.offset_expr is not None:
            n.offset = resolve_duration(n.offset_expr, step_ms, range_ms, True, byte_pos)
