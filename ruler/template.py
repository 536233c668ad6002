"""The subset of Go's text/template that Prometheus alert labels and annotations use.

Supported: text, ``{{ pipeline }}`` with ``|`` and trim markers, comments, variables
(``$labels``, ``$value``, ``$externalLabels``, ``$externalURL``, ``$x := ...``), field chains
(``$labels.instance``, ``.Labels.job``), ``if``/``else if``/``else``, ``range`` (maps in key
order), ``with``, and the functions Prometheus registers that need no query (``humanize`` family,
``printf``, ``title``, ``toUpper``, ``reReplaceAll``, ``match``, ``index``, comparisons, ...).
A missing map key is the empty string (Prometheus's ``missingkey=zero``). Every expansion is
bounded in steps, output size and nesting, so no rule file can hang or bloat the ruler.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import quote_plus, urlparse

from common.gofmt import format_g as go_float

MAX_OUTPUT_BYTES = 64 << 10
MAX_STEPS = 100_000
MAX_DEPTH = 64
MAX_TEMPLATE_BYTES = 64 << 10


class TemplateError(ValueError):
    """A template that does not parse, or fails while executing."""


# -- values as Go prints them ------------------------------------------------------------------

def go_g4(v: float) -> str:
    """Go's ``%.4g``."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return "%.4g" % v


def go_str(v: Any) -> str:
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, dict):
        return "map[" + " ".join(f"{go_str(k)}:{go_str(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    return str(v)


def _truth(v: Any) -> bool:
    if v is None or v is False:
        return False
    if isinstance(v, (int, float, str, dict, list, tuple)):
        return bool(v)
    return True


def _float(v: Any) -> float:
    if isinstance(v, bool):
        raise TemplateError(f"can't convert {go_str(v)} to float")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise TemplateError(f'strconv.ParseFloat: parsing "{v}": invalid syntax') from None
    raise TemplateError(f"can't convert {go_str(v)} to float")


# -- Prometheus's template functions ------------------------------------------------------------

def _scaled(v: float, up: list[str], down: list[str], base: float, upper_only: bool) -> str:
    if v == 0 or math.isnan(v) or math.isinf(v) or (upper_only and abs(v) <= 1):
        return go_g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in up:
            if abs(v) < base:
                break
            prefix, v = p, v / base
        return go_g4(v) + prefix
    for p in down:
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return go_g4(v) + prefix


def humanize(x: Any) -> str:
    return _scaled(_float(x), list("kMGTPEZY"), list("munpfazy"), 1000.0, False)


def humanize1024(x: Any) -> str:
    return _scaled(_float(x), [p + "i" for p in "kMGTPEZY"], [], 1024.0, True)


def humanize_duration(x: Any) -> str:
    v = _float(x)
    if math.isnan(v) or math.isinf(v):
        return go_g4(v)
    if v == 0:
        return go_g4(v) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        d = int(v)
        s, m, h, days = d % 60, (d // 60) % 60, (d // 3600) % 24, d // 86400
        if days:
            return f"{sign}{days}d {h}h {m}m {s}s"
        if h:
            return f"{sign}{h}h {m}m {s}s"
        if m:
            return f"{sign}{m}m {s}s"
        return f"{sign}{go_g4(v)}s"
    prefix = ""
    for p in "munpfazy":
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{go_g4(v)}{prefix}s"


def humanize_percentage(x: Any) -> str:
    return go_g4(_float(x) * 100) + "%"


def humanize_timestamp(x: Any) -> str:
    v = _float(x)
    if math.isnan(v) or math.isinf(v):
        return go_g4(v)
    try:
        t = datetime.fromtimestamp(v, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise TemplateError(f"timestamp {go_float(v)} out of range") from None
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([vsdfegxXqtTcob%])")


def go_printf(fmt: str, *args: Any) -> str:
    """Go's fmt.Sprintf for the verbs templates use."""
    out: list[str] = []
    pos, i = 0, 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if i >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        a = args[i]
        i += 1
        spec = flags + (width or "") + (f".{prec}" if prec is not None else "")
        try:
            if verb in "vsT":
                text = type(a).__name__ if verb == "T" else go_str(a)
                out.append(f"{text:{'<' if '-' in flags else '>'}{width or ''}}")
            elif verb == "q":
                out.append('"' + go_str(a).replace("\\", "\\\\").replace('"', '\\"') + '"')
            elif verb == "t":
                out.append(go_str(a))
            elif verb in "dxXocb":
                if isinstance(a, float) or isinstance(a, str):
                    out.append(f"%!{verb}({type(a).__name__}={go_str(a)})")
                else:
                    out.append(("%" + spec + ("c" if verb == "c" else verb)) % a
                               if verb != "b" else format(a, "b"))
            else:  # e f g
                v = _float(a)
                if math.isnan(v) or math.isinf(v):
                    out.append(go_g4(v) if verb == "g" else ("NaN" if math.isnan(v) else
                                                             ("+Inf" if v > 0 else "-Inf")))
                elif verb == "g" and prec is None:
                    out.append(go_float(v))
                else:
                    out.append(("%" + spec + verb) % v)
        except (TypeError, ValueError, OverflowError):
            out.append(f"%!{verb}({go_str(a)})")
    out.append(fmt[pos:])
    if i < len(args):
        out.append("%!(EXTRA " + ", ".join(go_str(a) for a in args[i:]) + ")")
    return "".join(out)


def _re_replace_all(pattern: str, repl: str, text: str) -> str:
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise TemplateError(f"error parsing regexp: {e}") from None
    py_repl = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: "\\g<" + (m.group(1) or m.group(2)) + ">",
                     repl.replace("\\", "\\\\"))
    try:
        return rx.sub(py_repl, text)
    except (re.error, IndexError):
        return rx.sub(repl, text)


def _match(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error as e:
        raise TemplateError(f"error parsing regexp: {e}") from None


def _index(coll: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(coll, dict):
            if not isinstance(k, str):
                raise TemplateError(f"value has type {type(k).__name__}; should be string")
            coll = coll.get(k, "")
        elif isinstance(coll, (list, tuple, str)) and isinstance(k, int):
            if not 0 <= k < len(coll):
                raise TemplateError(f"error calling index: index out of range: {k}")
            coll = coll[k]
        else:
            raise TemplateError(f"error calling index: cannot index {go_str(coll)}")
    return coll


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def f(a: Any, *bs: Any) -> bool:
        for b in bs:
            if isinstance(a, (int, float)) != isinstance(b, (int, float)) or (
                    isinstance(a, str) != isinstance(b, str)):
                raise TemplateError("incompatible types for comparison")
            if not op(a, b):
                return False
        return True
    return f


def _strip_port(hostport: str) -> str:
    if hostport.startswith("["):
        end = hostport.find("]")
        return hostport[1:end] if end > 0 else hostport
    host, sep, port = hostport.rpartition(":")
    return host if sep and ":" not in host else hostport


def _unsupported(name: str) -> Callable[..., Any]:
    def f(*_: Any) -> Any:
        raise TemplateError(f"error calling {name}: not supported by promring's ruler")
    return f


FUNCS: dict[str, Callable[..., Any]] = {
    "humanize": humanize, "humanize1024": humanize1024, "humanizeDuration": humanize_duration,
    "humanizePercentage": humanize_percentage, "humanizeTimestamp": humanize_timestamp,
    "printf": go_printf, "print": lambda *a: "".join(go_str(x) for x in a),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "title": lambda s: re.sub(r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), str(s)),
    "toUpper": lambda s: str(s).upper(), "toLower": lambda s: str(s).lower(),
    "toTime": lambda x: humanize_timestamp(x), "stripPort": _strip_port,
    "stripDomain": lambda h: (lambda hp: hp[0].split(".")[0] + (":" + hp[2] if hp[1] else ""))(
        str(h).rpartition(":") if ":" in str(h) else (str(h), "", "")),
    "reReplaceAll": _re_replace_all, "match": _match, "index": _index,
    "len": lambda x: len(x), "not": lambda x: not _truth(x),
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1] if a else None),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1] if a else None),
    "eq": lambda a, *bs: any(a == b for b in bs), "ne": _cmp(lambda a, b: a != b),
    "lt": _cmp(lambda a, b: a < b), "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b), "ge": _cmp(lambda a, b: a >= b),
    "urlquery": lambda *a: quote_plus("".join(go_str(x) for x in a)),
    "html": lambda *a: "".join(go_str(x) for x in a).replace("&", "&amp;").replace(
        "<", "&lt;").replace(">", "&gt;").replace('"', "&#34;").replace("'", "&#39;"),
    "js": lambda *a: "".join(go_str(x) for x in a).replace("\\", "\\\\").replace("'", "\\'")
        .replace('"', '\\"'),
    "safeHtml": lambda s: str(s), "parseDuration": lambda s: _parse_duration_s(str(s)),
    "pathPrefix": lambda: "", "externalURL": lambda: "",  # per expansion, see _Exec
    "query": _unsupported("query"), "first": _unsupported("first"), "label": _unsupported("label"),
    "value": _unsupported("value"), "sortByLabel": _unsupported("sortByLabel"),
    "strvalue": _unsupported("strvalue"), "args": lambda *a: {f"arg{i}": x for i, x in enumerate(a)},
    "tmpl": _unsupported("tmpl"), "call": _unsupported("call"),
}


def _parse_duration_s(s: str) -> float:
    from .rulefile import parse_model_duration
    try:
        return parse_model_duration(s) / 1000
    except ValueError as e:
        raise TemplateError(str(e)) from None


# -- lexer --------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))
  | (?P<decl>:=)
  | (?P<assign>=)
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<pipe>\|)
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<comma>,)
""", re.VERBOSE)


@dataclass
class Tok:
    kind: str
    text: str
    fields: tuple[str, ...] = ()  # a field chain right after this token (``$x.a.b``, ``(p).a``)


def _lex_action(src: str, where: str) -> list[Tok]:
    toks: list[Tok] = []
    pos = 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if m is None:
            raise TemplateError(f"{where}: unexpected {src[pos]!r} in command")
        pos = m.end()
        kind = m.lastgroup
        text = m.group()
        if kind == "ws":
            continue
        if kind == "field" and toks and not src[m.start() - 1].isspace() and toks[-1].kind in (
                "var", "rp", "field", "dot"):
            toks[-1].fields += tuple(text[1:].split("."))
            continue
        toks.append(Tok(kind, text, tuple(text[1:].split(".")) if kind == "field" else ()))
    return toks


# -- parse tree ---------------------------------------------------------------------------------

@dataclass
class Cmd:
    args: list[Any]  # Tok or Pipeline


@dataclass
class Pipeline:
    cmds: list[Cmd]
    decl: list[str] = field(default_factory=list)
    assign: bool = False  # "=" instead of ":="


@dataclass
class Node:
    kind: str  # text | action | if | range | with
    text: str = ""
    pipe: Pipeline | None = None
    body: list["Node"] = field(default_factory=list)
    else_body: list["Node"] = field(default_factory=list)


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


class _Parser:
    def __init__(self, text: str, name: str) -> None:
        self.text, self.name = text, name

    def where(self, offset: int) -> str:
        return f"template: {self.name}:{self.text.count(chr(10), 0, offset) + 1}"

    def parse(self) -> list[Node]:
        if len(self.text) > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"template: {self.name}: longer than {MAX_TEMPLATE_BYTES} bytes")
        items: list[tuple[str, Any, int]] = []  # (kind, payload, offset)
        pos = 0
        trim_next = False
        for m in _ACTION.finditer(self.text):
            chunk = self.text[pos:m.start()]
            if trim_next:
                chunk = chunk.lstrip()
            if m.group(1):
                chunk = chunk.rstrip()
            if chunk:
                items.append(("text", chunk, pos))
            inner = m.group(2).strip()
            trim_next = bool(m.group(3))
            pos = m.end()
            if inner.startswith("/*"):
                if not inner.endswith("*/"):
                    raise TemplateError(f"{self.where(m.start())}: unclosed comment")
                continue
            items.append(("action", inner, m.start()))
        rest = self.text[pos:]
        if "{{" in rest:
            raise TemplateError(f"{self.where(pos + rest.index('{{'))}: unclosed action")
        if trim_next:
            rest = rest.lstrip()
        if rest:
            items.append(("text", rest, pos))
        self.items, self.i = items, 0
        nodes, end = self.list(0)
        if end is not None:
            raise TemplateError(f"{self.where(end[1])}: unexpected {{{{{end[0]}}}}}")
        return nodes

    def list(self, depth: int) -> tuple[list[Node], tuple[str, int] | None]:
        """Nodes up to an ``end``/``else`` (returned with its offset) or the end of input."""
        if depth > MAX_DEPTH:
            raise TemplateError(f"template: {self.name}: nested too deeply")
        nodes: list[Node] = []
        while self.i < len(self.items):
            kind, payload, off = self.items[self.i]
            self.i += 1
            if kind == "text":
                nodes.append(Node("text", text=payload))
                continue
            word = payload.split(None, 1)[0] if payload else ""
            rest = payload[len(word):].strip()
            if word in ("end", "else"):
                return nodes, (payload, off)
            if word in ("if", "range", "with"):
                nodes.append(self.control(word, rest, off, depth))
            elif word in ("define", "block", "template", "break", "continue"):
                raise TemplateError(f"{self.where(off)}: {{{{{word}}}}} is not supported")
            else:
                if not payload:
                    raise TemplateError(f"{self.where(off)}: missing value for command")
                nodes.append(Node("action", pipe=self.pipeline(payload, off)))
        return nodes, None

    def control(self, word: str, rest: str, off: int, depth: int) -> Node:
        if not rest:
            raise TemplateError(f"{self.where(off)}: missing value for {word}")
        node = Node(word, pipe=self.pipeline(rest, off, allow_two=word == "range"))
        node.body, end = self.list(depth + 1)
        if end is None:
            raise TemplateError(f"{self.where(off)}: unexpected EOF")
        if end[0].startswith("else"):
            tail = end[0][4:].strip()
            if tail:  # "else if" / "else with": a nested control sharing the outer end
                if tail.split(None, 1)[0] not in ("if", "with"):
                    raise TemplateError(f"{self.where(end[1])}: unexpected {tail!r} in else")
                self.i -= 1
                self.items[self.i] = ("action", tail, end[1])
                node.else_body = [self.nested_control(depth + 1)]
                return node
            node.else_body, end2 = self.list(depth + 1)
            if end2 is None or end2[0] != "end":
                raise TemplateError(f"{self.where(off)}: expected end; found "
                                    f"{'EOF' if end2 is None else end2[0]}")
        elif end[0] != "end":
            raise TemplateError(f"{self.where(end[1])}: unexpected {end[0]}")
        return node

    def nested_control(self, depth: int) -> Node:
        _, payload, off = self.items[self.i]
        self.i += 1
        word = payload.split(None, 1)[0]
        return self.control(word, payload[len(word):].strip(), off, depth)

    def pipeline(self, src: str, off: int, allow_two: bool = False) -> Pipeline:
        toks = _lex_action(src, self.where(off))
        pos = 0
        decl: list[str] = []
        assign = False
        # "$x :=", "$k, $v :=", "$x ="
        if toks and toks[0].kind == "var":
            if len(toks) > 1 and toks[1].kind in ("decl", "assign"):
                decl, assign, pos = [toks[0].text], toks[1].kind == "assign", 2
            elif (allow_two and len(toks) > 3 and toks[1].kind == "comma"
                  and toks[2].kind == "var" and toks[3].kind == "decl"):
                decl, pos = [toks[0].text, toks[2].text], 4
        pipe, pos = self._pipe(toks, pos, off, 0)
        if pos != len(toks):
            raise TemplateError(f"{self.where(off)}: unexpected {toks[pos].text!r} in operand")
        pipe.decl, pipe.assign = decl, assign
        return pipe

    def _pipe(self, toks: list[Tok], pos: int, off: int, depth: int) -> tuple[Pipeline, int]:
        if depth > MAX_DEPTH:
            raise TemplateError(f"{self.where(off)}: nested too deeply")
        cmds: list[Cmd] = []
        args: list[Any] = []
        while pos < len(toks):
            t = toks[pos]
            if t.kind == "rp":
                break
            pos += 1
            if t.kind == "pipe":
                if not args:
                    raise TemplateError(f"{self.where(off)}: missing value for command")
                cmds.append(Cmd(args))
                args = []
            elif t.kind == "lp":
                sub, pos = self._pipe(toks, pos, off, depth + 1)
                if pos >= len(toks) or toks[pos].kind != "rp":
                    raise TemplateError(f"{self.where(off)}: unclosed left paren")
                sub_fields = toks[pos].fields
                pos += 1
                args.append(("paren", sub, sub_fields))
            elif t.kind in ("str", "raw", "char", "num", "var", "field", "dot", "ident"):
                if t.kind == "ident" and t.text not in FUNCS and t.text not in ("true", "false",
                                                                                  "nil"):
                    raise TemplateError(f'{self.where(off)}: function "{t.text}" not defined')
                args.append(t)
            else:
                raise TemplateError(f"{self.where(off)}: unexpected {t.text!r} in operand")
        if not args:
            raise TemplateError(f"{self.where(off)}: missing value for command")
        cmds.append(Cmd(args))
        return Pipeline(cmds), pos


def parse_template(text: str, name: str = "") -> list[Node]:
    """The parse tree, or TemplateError (``template: <name>:<line>: <what>``)."""
    return _Parser(text, name).parse()


# -- execution ----------------------------------------------------------------------------------

_GO_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
               "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _unquote(s: str) -> str:
    return re.sub(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)", lambda m: (
        chr(int(m.group(1)[1:], 16)) if m.group(1)[0] in "xu" and len(m.group(1)) > 1
        else _GO_ESCAPES.get(m.group(1), m.group(1))), s[1:-1])


class _Exec:
    def __init__(self, data: dict[str, Any], name: str, external_url: str) -> None:
        self.data, self.name = data, name
        self.steps = 0
        self.out: list[str] = []
        self.size = 0
        self.scopes: list[dict[str, Any]] = [{"$": data}]
        self.funcs = dict(FUNCS)
        self.funcs["externalURL"] = lambda: external_url
        self.funcs["pathPrefix"] = lambda: urlparse(external_url).path

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateError(f"template: {self.name}: more than {MAX_STEPS} steps")

    def emit(self, s: str) -> None:
        self.size += len(s)
        if self.size > MAX_OUTPUT_BYTES:
            raise TemplateError(f"template: {self.name}: output larger than {MAX_OUTPUT_BYTES} bytes")
        self.out.append(s)

    def var(self, name: str) -> Any:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        raise TemplateError(f'template: {self.name}: undefined variable "{name}"')

    def set_var(self, name: str, value: Any, declare: bool) -> None:
        if declare:
            self.scopes[-1][name] = value
            return
        for scope in reversed(self.scopes):
            if name in scope:
                scope[name] = value
                return
        raise TemplateError(f'template: {self.name}: undefined variable "{name}"')

    def fields(self, v: Any, names: tuple[str, ...]) -> Any:
        for n in names:
            if isinstance(v, dict):
                v = v.get(n, "")
            else:
                raise TemplateError(f"template: {self.name}: can't evaluate field {n} in "
                                    f"type {type(v).__name__}")
        return v

    def run(self, nodes: list[Node], dot: Any) -> None:
        for n in nodes:
            self.step()
            if n.kind == "text":
                self.emit(n.text)
            elif n.kind == "action":
                v = self.pipe(n.pipe, dot)
                if not n.pipe.decl:
                    self.emit(go_str(v))
            elif n.kind == "if":
                self.scoped(n.body if _truth(self.pipe(n.pipe, dot)) else n.else_body, dot)
            elif n.kind == "with":
                v = self.pipe(n.pipe, dot)
                self.scoped(n.body if _truth(v) else n.else_body, v if _truth(v) else dot)
            elif n.kind == "range":
                self.range(n, dot)

    def scoped(self, nodes: list[Node], dot: Any, vars: dict[str, Any] | None = None) -> None:
        self.scopes.append(vars or {})
        try:
            self.run(nodes, dot)
        finally:
            self.scopes.pop()

    def range(self, n: Node, dot: Any) -> None:
        decl = n.pipe.decl  # the loop's variables, set per element below
        coll = self.pipe(n.pipe, dot, set_vars=False)
        if isinstance(coll, dict):
            items = [(k, coll[k]) for k in sorted(coll)]
        elif isinstance(coll, (list, tuple)):
            items = list(enumerate(coll))
        elif isinstance(coll, int) and not isinstance(coll, bool):
            items = [(i, i) for i in range(max(0, min(coll, MAX_STEPS)))]
        elif coll is None:
            items = []
        else:
            raise TemplateError(f"template: {self.name}: range can't iterate over {go_str(coll)}")
        if not items:
            self.scoped(n.else_body, dot)
            return
        for k, v in items:
            vars = {}
            if len(decl) == 1:
                vars[decl[0]] = v
            elif len(decl) == 2:
                vars[decl[0]], vars[decl[1]] = k, v
            self.scoped(n.body, v, vars)

    def pipe(self, p: Pipeline, dot: Any, set_vars: bool = True) -> Any:
        v: Any = None
        first = True
        for c in p.cmds:
            v = self.cmd(c, dot, None if first else (v,))
            first = False
        for name in p.decl[:1] if set_vars else ():
            self.set_var(name, v, not p.assign)
        return v

    def arg(self, a: Any, dot: Any) -> Any:
        self.step()
        if isinstance(a, tuple):  # ("paren", pipeline, fields)
            return self.fields(self.pipe(a[1], dot), a[2])
        t: Tok = a
        if t.kind == "str":
            return _unquote(t.text)
        if t.kind == "raw":
            return t.text[1:-1]
        if t.kind == "char":
            return ord(_unquote(t.text)[:1] or "\0")
        if t.kind == "num":
            txt = t.text.replace("_", "")
            try:
                return int(txt, 0)
            except ValueError:
                return float(txt)
        if t.kind == "var":
            return self.fields(self.var(t.text), t.fields)
        if t.kind == "field":
            return self.fields(dot, t.fields)
        if t.kind == "dot":
            return self.fields(dot, t.fields)
        if t.text in ("true", "false"):
            return t.text == "true"
        if t.text == "nil":
            return None
        return self.call(t.text, [], dot)

    def cmd(self, c: Cmd, dot: Any, piped: tuple[Any, ...] | None) -> Any:
        head = c.args[0]
        if isinstance(head, Tok) and head.kind == "ident" and head.text in self.funcs:
            args = [self.arg(a, dot) for a in c.args[1:]] + list(piped or ())
            return self.call(head.text, args, dot)
        if len(c.args) > 1 or piped:
            raise TemplateError(f"template: {self.name}: can't give argument to non-function "
                                f"{head.text if isinstance(head, Tok) else '(...)'}")
        return self.arg(head, dot)

    def call(self, name: str, args: list[Any], dot: Any) -> Any:
        try:
            return self.funcs[name](*args)
        except TemplateError as e:
            raise TemplateError(f"template: {self.name}: error calling {name}: "
                                f"{str(e).split(': ', 2)[-1]}") from None
        except (TypeError, ValueError, OverflowError, ZeroDivisionError) as e:
            raise TemplateError(f"template: {self.name}: error calling {name}: {e}") from None


def expand(text: str, name: str, data: dict[str, Any], external_url: str = "") -> str:
    """``text`` executed with Prometheus's alert variables defined: ``data`` holds Labels,
    ExternalLabels, ExternalURL and Value. Raises TemplateError."""
    if "{{" not in text:
        return text
    nodes = parse_template(text, name)
    ex = _Exec(data, name, external_url)
    ex.scopes[0].update({"$labels": data.get("Labels", {}),
                         "$externalLabels": data.get("ExternalLabels", {}),
                         "$externalURL": data.get("ExternalURL", ""),
                         "$value": data.get("Value", 0.0)})
    try:
        ex.run(nodes, data)
    except RecursionError:
        raise TemplateError(f"template: {name}: nested too deeply") from None
    return "".join(ex.out)


def alert_template_data(labels: dict[str, str], external_labels: dict[str, str],
                        external_url: str, value: float) -> dict[str, Any]:
    return {"Labels": labels, "ExternalLabels": external_labels, "ExternalURL": external_url,
            "Value": value}
