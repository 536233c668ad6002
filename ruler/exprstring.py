"""A parsed PromQL expression printed as Prometheus's ``Expr.String()`` does (the ``query`` of
/api/v1/rules): one line, canonical spacing, numbers as Go prints them, durations in
Prometheus's units, matchers sorted."""
from __future__ import annotations

import json
from datetime import timedelta

import promql_parser as pp

from common.gofmt import format_g

_DURATION_UNITS = (("y", 31_536_000_000), ("w", 604_800_000), ("d", 86_400_000),
                   ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))
_MATCH_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def model_duration(d: timedelta | None) -> str:
    """prometheus/common model.Duration.String(): ``1h30m``, ``1w``, ``0s``."""
    ms = round(d.total_seconds() * 1000) if d is not None else 0
    if ms == 0:
        return "0s"
    out = []
    for unit, size in _DURATION_UNITS:
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def _quote(s: str) -> str:
    """Go's %q for the strings PromQL holds (JSON escaping agrees for printable text)."""
    return json.dumps(s, ensure_ascii=False)


def _offset_at(node) -> str:
    at = ""
    if node.at is not None:
        kind = str(node.at.type).rsplit(".", 1)[-1]
        if kind == "Start":
            at = " @ start()"
        elif kind == "End":
            at = " @ end()"
        else:
            at = f" @ {node.at.at.timestamp():.3f}"
    off = ""
    if node.offset is not None and node.offset != timedelta(0):
        off = (f" offset {model_duration(node.offset)}" if node.offset > timedelta(0)
               else f" offset -{model_duration(-node.offset)}")
    return at + off


def _selector(vs, with_modifiers: bool = True) -> str:
    name = vs.name or ""
    ms = [f"{m.name}{_MATCH_OPS.get(str(m.op).rsplit('.', 1)[-1], '=')}{_quote(m.value)}"
          for m in vs.matchers.matchers
          if not (m.name == "__name__" and str(m.op).endswith("Equal")
                  and not str(m.op).endswith("NotEqual") and m.value == name)]
    suffix = _offset_at(vs) if with_modifiers else ""
    return f"{name}{{{','.join(sorted(ms))}}}{suffix}" if ms else f"{name}{suffix}"


def expr_string(e) -> str:
    if isinstance(e, pp.VectorSelector):
        return _selector(e)
    if isinstance(e, pp.MatrixSelector):
        vs = e.vector_selector
        return f"{_selector(vs, False)}[{model_duration(e.range)}]{_offset_at(vs)}"
    if isinstance(e, pp.NumberLiteral):
        return format_g(e.val)
    if isinstance(e, pp.StringLiteral):
        return _quote(e.val)
    if isinstance(e, pp.ParenExpr):
        return f"({expr_string(e.expr)})"
    if isinstance(e, pp.UnaryExpr):
        return f"-{expr_string(e.expr)}"
    if isinstance(e, pp.Call):
        return f"{e.func.name}({', '.join(expr_string(a) for a in e.args)})"
    if isinstance(e, pp.SubqueryExpr):
        step = model_duration(e.step) if e.step else ""
        return f"{expr_string(e.expr)}[{model_duration(e.range)}:{step}]{_offset_at(e)}"
    if isinstance(e, pp.AggregateExpr):
        op = str(e.op)
        m = e.modifier
        if m is not None and str(m.type).endswith("Without"):
            op += f" without ({', '.join(m.labels)}) "
        elif m is not None and m.labels:
            op += f" by ({', '.join(m.labels)}) "
        param = f"{expr_string(e.param)}, " if e.param is not None else ""
        return f"{op}({param}{expr_string(e.expr)})"
    if isinstance(e, pp.BinaryExpr):
        return (f"{expr_string(e.lhs)} {e.op}{' bool' if _returns_bool(e) else ''}"
                f"{_matching(e)} {expr_string(e.rhs)}")
    raise TypeError(f"cannot print {type(e).__name__}")


def _returns_bool(e) -> bool:
    return bool(e.modifier is not None and e.modifier.return_bool)


def _matching(e) -> str:
    m = e.modifier
    if m is None or m.matching is None:
        return ""
    on = str(m.matching.type).endswith("Include")  # on (...); Exclude: ignoring (...)
    labels = list(m.matching.labels)
    if not labels and not on:
        return ""
    out = f" {'on' if on else 'ignoring'} ({', '.join(labels)})"
    card = str(m.card).rsplit(".", 1)[-1]
    if card in ("ManyToOne", "OneToMany"):
        side = "left" if card == "ManyToOne" else "right"
        out += f" group_{side} ({', '.join(m.group_labels or [])})"
    return out


def canonical_query(expr: str) -> str:
    """``expr`` as Prometheus prints its parse tree; the text itself if that is not possible."""
    try:
        return expr_string(pp.parse(expr))
    except (ValueError, TypeError, AttributeError):
        return expr
