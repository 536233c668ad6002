"""A PromQL syntax tree printed back as Prometheus's ``Expr.String()`` does: one line, canonical
spacing, durations in Prometheus's units, matchers sorted (the ``query`` of /api/v1/rules,
/api/v1/format_query). Numbers print as Go's ``%v`` (what Prometheus 2.x's rules API shows)."""
from __future__ import annotations

import re
from datetime import timedelta

from common.gofmt import format_g
from querier.promql.ast import (AggregateExpr, AtModifierType, BinaryExpr, Call, DurationExpr, MatrixSelector,
                                NumberLiteral, ParenExpr, StringLiteral, SubqueryExpr, UnaryExpr,
                                VectorMatchCardinality, VectorSelector, LabelModifierType, timedelta_ms)
from querier.promql.lexer import go_quote

_DURATION_UNITS = (("y", 31_536_000_000), ("w", 604_800_000), ("d", 86_400_000),
                   ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))
_LEGACY_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def model_duration_ms(ms: int) -> str:
    """prometheus/common model.Duration.String(): ``1h30m``, ``1w``, ``0s``."""
    if ms == 0:
        return "0s"
    out = []
    for unit, size in _DURATION_UNITS:
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def model_duration(d: timedelta | None) -> str:
    return model_duration_ms(round(d.total_seconds() * 1000) if d is not None else 0)


def _label(name: str) -> str:
    return name if _LEGACY_LABEL.match(name) else go_quote(name)


def _labels(names) -> str:
    return ", ".join(_label(n) for n in names)


def _offset(d: timedelta | None, expr: DurationExpr | None) -> str:
    if expr is not None:
        return f" offset {duration_string(expr)}"
    if d is None or d == timedelta(0):
        return ""
    if d > timedelta(0):
        return f" offset {model_duration(d)}"
    return f" offset -{model_duration(-d)}"


def _at(at) -> str:
    if at is None:
        return ""
    if at.type == AtModifierType.Start:
        return " @ start()"
    if at.type == AtModifierType.End:
        return " @ end()"
    return f" @ {at.ms / 1000.0:.3f}"


def _matchers(vs: VectorSelector) -> str:
    out = [f"{_label(m.name)}{m.op.value}{go_quote(m.value)}" for m in vs.matchers.matchers]
    return f"{{{','.join(sorted(out))}}}" if out else ""


def _selector(vs: VectorSelector, with_modifiers: bool = True) -> str:
    s = (vs.name or "") + _matchers(vs)
    if not with_modifiers:
        return s
    return (s + _at(vs.at) + (" anchored" if vs.anchored else " smoothed" if vs.smoothed else "")
            + _offset(vs.offset, vs.offset_expr))


def number_string(n: NumberLiteral) -> str:
    if n.duration:
        ms = round(n.val * 1000)
        return f"-{model_duration_ms(-ms)}" if ms < 0 else model_duration_ms(ms)
    return format_g(n.val)


def duration_string(e) -> str:
    if isinstance(e, NumberLiteral):
        return number_string(e)
    op = e.op
    if op in ("step", "range"):
        s = f"{op}()"
    elif op in ("min_of", "max_of"):
        s = f"{op}({duration_string(e.lhs)}, {duration_string(e.rhs)})"
    elif e.lhs is None:
        s = ("-" if op == "-" else "") + duration_string(e.rhs)
    else:
        s = f"{duration_string(e.lhs)} {op} {duration_string(e.rhs)}"
    return f"({s})" if e.wrapped else s


def _range(d: timedelta | None, expr: DurationExpr | None) -> str:
    return duration_string(expr) if expr is not None else model_duration(d)


def expr_string(e) -> str:
    if isinstance(e, VectorSelector):
        return _selector(e)
    if isinstance(e, MatrixSelector):
        vs = e.vector_selector
        ext = " anchored" if vs.anchored else " smoothed" if vs.smoothed else ""
        return (f"{_selector(vs, False)}[{_range(e.range, e.range_expr)}]{ext}{_at(vs.at)}"
                f"{_offset(vs.offset, vs.offset_expr)}")
    if isinstance(e, NumberLiteral):
        return number_string(e)
    if isinstance(e, StringLiteral):
        return go_quote(e.val)
    if isinstance(e, ParenExpr):
        return f"({expr_string(e.expr)})"
    if isinstance(e, UnaryExpr):
        return f"{e.op}{expr_string(e.expr)}"
    if isinstance(e, Call):
        return f"{e.func.name}({', '.join(expr_string(a) for a in e.args)})"
    if isinstance(e, SubqueryExpr):
        step = ""
        if e.step_expr is not None:
            step = duration_string(e.step_expr)
        elif e.step is not None and timedelta_ms(e.step):
            step = model_duration(e.step)
        return (f"{expr_string(e.expr)}[{_range(e.range, e.range_expr)}:{step}]{_at(e.at)}"
                f"{_offset(e.offset, e.offset_expr)}")
    if isinstance(e, AggregateExpr):
        op = e.op
        m = e.modifier
        if m is not None and m.type.value == "without":
            op += f" without ({_labels(m.labels)}) "
        elif m is not None and m.labels:
            op += f" by ({_labels(m.labels)}) "
        param = f"{expr_string(e.param)}, " if e.param is not None else ""
        return f"{op}({param}{expr_string(e.expr)})"
    if isinstance(e, BinaryExpr):
        ret_bool = " bool" if e.modifier is not None and e.modifier.return_bool else ""
        return f"{expr_string(e.lhs)} {e.op}{ret_bool}{_matching(e)} {expr_string(e.rhs)}"
    raise TypeError(f"cannot print {type(e).__name__}")


def _matching(e: BinaryExpr) -> str:
    m = e.modifier
    if m is None:
        return ""
    grouped = m.card in (VectorMatchCardinality.ManyToOne, VectorMatchCardinality.OneToMany)
    on = m.matching is not None and m.matching.type == LabelModifierType.Include
    labels = m.matching.labels if m.matching is not None else []
    out = ""
    if labels or on or grouped:
        out = f" {'on' if on else 'ignoring'} ({_labels(labels)})"
    if grouped:
        side = "left" if m.card == VectorMatchCardinality.ManyToOne else "right"
        out += f" group_{side} ({_labels(m.group_labels)})"
    fl, fr = m.fill_left, m.fill_right
    if fl is not None and fr is not None and fl == fr:
        out += f" fill ({format_g(fl)})"
    else:
        if fl is not None:
            out += f" fill_left ({format_g(fl)})"
        if fr is not None:
            out += f" fill_right ({format_g(fr)})"
    return out


MAX_LINE = 100  # Prometheus's prettier splits a node whose one-line form is longer


def _indent(level: int) -> str:
    return "  " * level


def _agg_head(e: AggregateExpr) -> str:
    """``sum by (a) `` of an aggregation: its String() up to the parenthesis."""
    full = expr_string(e)
    body = f"({expr_string(e.param)}, " if e.param is not None else "("
    return full[:len(full) - len(body) - len(expr_string(e.expr)) - 1]


def pretty(e, level: int = 0) -> str:
    """Prometheus's Prettify (promql/parser/prettier.go): nodes longer than 100 characters are
    split over indented lines; the /api/v1/format_query answer."""
    one = expr_string(e)
    short = len(one.encode()) <= MAX_LINE
    ind = _indent(level)
    if isinstance(e, AggregateExpr):
        if short:
            return ind + one
        s = ind + _agg_head(e) + "(\n"
        if e.param is not None:
            s += pretty(e.param, level + 1) + ",\n"
        return s + pretty(e.expr, level + 1) + "\n" + ind + ")"
    if isinstance(e, BinaryExpr):
        if short:
            return ind + one
        ret_bool = " bool" if e.modifier is not None and e.modifier.return_bool else ""
        return (f"{pretty(e.lhs, level + 1)}\n{ind}{e.op}{ret_bool}{_matching(e)}\n"
                f"{pretty(e.rhs, level + 1)}")
    if isinstance(e, Call):
        if short:
            return ind + one
        args = ",\n".join(pretty(a, level + 1) for a in e.args)
        return f"{ind}{e.func.name}(\n{args}\n{ind})"
    if isinstance(e, ParenExpr):
        if short:
            return ind + one
        return f"{ind}(\n{pretty(e.expr, level + 1)}\n{ind})"
    if isinstance(e, SubqueryExpr):
        if short:
            return one
        return pretty(e.expr, level) + one[len(expr_string(e.expr)):]
    if isinstance(e, UnaryExpr):
        return f"{ind}{e.op}{pretty(e.expr, level).strip()}"
    return ind + one
