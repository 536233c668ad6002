"""Runner for Prometheus's PromQL test-script format (load / clear / eval ... / expect ...).

Loads series into an in-memory Queryable and checks every eval through our Engine, so the
upstream conformance scripts can measure the engine. Native histograms ('{{...}}' values and
load_with_nhcb) are loaded too. Only cases stopped by an operator the engine does not implement
yet (the trim operators </ and >/) are expected failures.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from querier.promql import Engine, EngineOptions, PromQLError, QueryResult, Series
from querier.promql.types import PROMQL_FEATURES, TYPE_AND_UNIT_LABELS
from querier.promql import nhist as nh
from receiver.tsdb.labels import STALE_NAN_BITS, Labels, Matcher, matches_all

STALE = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
EPSILON = 1e-6
_NUM = r"(?:[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|0x[0-9a-fA-F]+|Inf|inf|NaN))"
_SERIES_RE = re.compile(rf"^(?P<a>{_NUM})(?P<op>[-+])(?P<b>{_NUM})x(?P<n>\d+)$")
_REPEAT_RE = re.compile(rf"^(?P<a>{_NUM}|_|stale)x(?P<n>\d+)$")
_POS_RE = re.compile(r"\s*\(\d+:\d+\)$")
_POS_RX_RE = re.compile(r"\s*\\\((?:\[0-9\]\+|\d+):(?:\[0-9\]\+|\d+)\\\)$")


class MemQueryable:
    """In-memory storage: labels -> samples (floats, or native histograms as nhist.H)."""

    def __init__(self) -> None:
        self.data: dict[Labels, dict[int, object]] = {}
        self.starts: dict[Labels, dict[int, int]] = {}  # start timestamps (ms), where a load gave one
        self.stored: dict[Labels, tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = {}

    def add(self, lbls: Labels, t: int, v, st: int = 0) -> None:
        self.data.setdefault(lbls, {})[t] = v
        if st:
            self.starts.setdefault(lbls, {})[t] = st
        elif lbls in self.starts:
            self.starts[lbls].pop(t, None)
        self.stored.pop(lbls, None)

    def _series(self, lbls: Labels):
        got = self.stored.get(lbls)
        if got is None:
            samples = self.data[lbls]
            ts = np.array(sorted(samples), dtype=np.int64)
            raw = [samples[t] for t in ts.tolist()]
            if any(isinstance(x, nh.H) for x in raw):
                hs = np.array(_stored_hints(raw) + [None], dtype=object)[:-1]
                vals = np.array([np.nan if isinstance(x, nh.H) else x for x in raw], dtype=np.float64)
            else:
                hs, vals = None, np.array(raw, dtype=np.float64)
            starts = self.starts.get(lbls)
            sts = (np.array([starts.get(t, 0) for t in ts.tolist()], dtype=np.int64)
                   if starts else None)
            got = self.stored[lbls] = (ts, vals, hs, sts)
        return got

    def select(self, matchers: list[Matcher], mint: int, maxt: int) -> list[Series]:
        out = []
        for lbls in self.data:
            if not matches_all(lbls, matchers):
                continue
            ts, vals, hs, sts = self._series(lbls)
            lo, hi = np.searchsorted(ts, mint, "left"), np.searchsorted(ts, maxt, "right")
            out.append(Series(lbls, ts[lo:hi], vals[lo:hi], None if hs is None else hs[lo:hi],
                              None if sts is None else sts[lo:hi]))
        return out


def _stored_hints(raw: list) -> list:
    """Counter-reset hints as Prometheus's TSDB hands histograms back: a new chunk's first
    sample carries the chunk header (unknown, reset or gauge), later ones not_reset/gauge."""
    out: list = []
    prev = None
    for x in raw:
        if not isinstance(x, nh.H):
            out.append(None)
            prev = None
            continue
        h = x.copy()
        gauge = x.hint == nh.GAUGE
        if gauge:
            h.hint = nh.GAUGE
        elif prev is None or prev.hint == nh.GAUGE:
            h.hint = nh.UNKNOWN
        elif x.hint == nh.RESET or (x.custom and prev.custom and tuple(x.cv) != tuple(prev.cv)):
            h.hint = nh.UNKNOWN  # a cut chunk reads back as unknown (prometheus/prometheus#15346)
        elif x.custom != prev.custom or x.schema != prev.schema or x.zt != prev.zt:
            h.hint = nh.UNKNOWN
        else:
            y = x.copy()
            y.hint = nh.UNKNOWN
            h.hint = nh.UNKNOWN if y.detect_reset(prev) else nh.NOT_RESET
        out.append(h)
        prev = x
    return out


def parse_duration_ms(s: str) -> int:
    s = s.strip()
    try:
        return int(round(float(s) * 1000))
    except ValueError:
        pass
    units = {"y": 365 * 86400_000, "w": 7 * 86400_000, "d": 86400_000, "h": 3600_000, "m": 60_000,
             "s": 1000, "ms": 1}
    parts = re.findall(r"(\d+)(ms|y|w|d|h|m|s)", s)
    if not parts or "".join(a + b for a, b in parts) != s:
        raise ValueError(f"bad duration {s!r}")
    return sum(int(a) * units[b] for a, b in parts)


_DUR_UNIT = r"(?:ms|y|w|d|h|m|s)"
_ST_ITEM_RE = re.compile(rf"^(?P<a>[-+]?(?:(?:\d+{_DUR_UNIT})+|0))(?:(?P<op>[-+])(?P<b>(?:\d+{_DUR_UNIT})+|0))?"
                         r"(?:x(?P<n>\d+))?$")


def _signed_ms(s: str) -> int:
    sign = -1 if s.startswith("-") else 1
    body = s.lstrip("+-")
    return sign * (0 if body == "0" else parse_duration_ms(body))


def expand_st_offsets(tokens: list[str]) -> list[int | None]:
    """An ``@st`` line's items (Prometheus's promqltest): ``_``/``_xN`` omitted, ``<dur>``,
    ``<dur>xN`` (N+1 times), ``<dur>[+-]<dur>xN`` (N+1 steps); offsets in ms from each
    sample's own timestamp, None where omitted."""
    out: list[int | None] = []
    for tok in tokens:
        if tok == "_":
            out.append(None)
            continue
        if tok.startswith("_x"):
            out.extend([None] * int(tok[2:]))
            continue
        m = _ST_ITEM_RE.match(tok)
        if m is None:
            raise ValueError(f"invalid ST item {tok!r}")
        a = _signed_ms(m["a"])
        if m["op"] is None:
            out.extend([a] * (int(m["n"]) + 1 if m["n"] else 1))
            continue
        if m["n"] is None:
            raise ValueError(f"invalid ST item {tok!r}: a step needs a repeat count")
        b = _signed_ms(m["b"]) * (-1 if m["op"] == "-" else 1)
        out.extend(a + k * b for k in range(int(m["n"]) + 1))
    return out


def _num(s: str) -> float:
    if s.lower() in ("inf", "+inf"):
        return math.inf
    if s.lower() == "-inf":
        return -math.inf
    if s.lower() == "nan":
        return math.nan
    if s.lower().startswith(("0x", "-0x", "+0x")):
        return float(int(s, 16))
    return float(s)


_HIST_KEYS = {"schema", "sum", "count", "z_bucket", "z_bucket_w", "buckets", "offset", "n_buckets", "n_offset",
              "counter_reset_hint", "custom_values"}
_HINTS = {"unknown": nh.UNKNOWN, "reset": nh.RESET, "not_reset": nh.NOT_RESET, "gauge": nh.GAUGE}


def parse_hist(desc: str) -> tuple[nh.H, bool]:
    """'{{schema:1 sum:3 buckets:[1 2]}}' -> (histogram, counter_reset_hint given)."""
    body = desc.strip()[2:-2]
    items = re.findall(r"(\w+):(\[[^\]]*\]|\S+)", body)
    d = {k: v for k, v in items}
    unknown = set(d) - _HIST_KEYS
    if unknown:
        raise ValueError(f"bad histogram keys {unknown}")
    arr = lambda v: [_num(x) for x in v[1:-1].split()]  # noqa: E731
    h = nh.H()
    h.schema = int(d.get("schema", 0))
    h.sum = _num(d.get("sum", "0"))
    h.count = _num(d.get("count", "0"))
    h.zc = _num(d.get("z_bucket", "0"))
    h.zt = _num(d.get("z_bucket_w", "0"))
    if "custom_values" in d:
        h.cv = tuple(arr(d["custom_values"]))
    elif h.schema == nh.CUSTOM:
        h.cv = ()
    off = int(d.get("offset", "0"))
    h.pos = {off + i: v for i, v in enumerate(arr(d.get("buckets", "[]")))}
    off = int(d.get("n_offset", "0"))
    h.neg = {off + i: v for i, v in enumerate(arr(d.get("n_buckets", "[]")))}
    h.compact()
    set_ = "counter_reset_hint" in d
    h.hint = _HINTS[d["counter_reset_hint"]] if set_ else nh.UNKNOWN
    return h, set_


def split_values(rest: str) -> list[str]:
    """Whitespace-split a value list, keeping '{{...}}' descriptions (which contain spaces) whole."""
    out, i, n = [], 0, len(rest)
    while i < n:
        if rest[i].isspace():
            i += 1
            continue
        j = i
        while j < n and not rest[j].isspace():
            if rest.startswith("{{", j):
                j = rest.index("}}", j) + 2
            else:
                j += 1
        out.append(rest[i:j])
        i = j
    return out


_HSERIES_RE = re.compile(r"^(\{\{.*?\}\})(?:([-+])(\{\{.*?\}\}))?(?:x(\d+))?$")


def expand_values(tokens: list[str]) -> list:
    """Expand the script's value notation; None is a missing point, nh.H a histogram."""
    out: list = []
    for tok in tokens:
        if tok.startswith("{{"):
            m = _HSERIES_RE.match(tok)
            base, _ = parse_hist(m[1])
            if m[2]:
                inc, _ = parse_hist(m[3])
                cur = base
                out.append(cur)
                for _ in range(int(m[4])):
                    cur = cur.copy()
                    cur.add(inc, 1.0 if m[2] == "+" else -1.0)
                    out.append(cur)
            elif m[4]:
                out.extend([base] * (int(m[4]) + 1))
            else:
                out.append(base)
        elif tok == "_":
            out.append(None)
        elif tok == "stale":
            out.append(STALE)
        elif m := _SERIES_RE.match(tok):
            a, b, n = _num(m["a"]), _num(m["b"]), int(m["n"])
            if m["op"] == "-":
                b = -b
            cur = a
            out.append(cur)
            for _ in range(n):
                cur += b
                out.append(cur)
        elif m := _REPEAT_RE.match(tok):
            n = int(m["n"])
            if m["a"] == "_":
                out.extend([None] * n)
            else:
                v = STALE if m["a"] == "stale" else _num(m["a"])
                out.extend([v] * (n + 1))
        else:
            out.append(_num(tok))
    return out


def _unquote(s: str) -> str:
    return bytes(s, "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")


def parse_series(line: str) -> tuple[Labels, str]:
    """Split '<metric>{l="v",...} rest' into a label set and the rest of the line."""
    line = line.strip()
    i = 0
    name = ""
    while i < len(line) and line[i] not in "{ \t":
        i += 1
    name = line[:i]
    d: dict[str, str] = {}
    if i < len(line) and line[i] == "{":
        i += 1
        while True:
            while line[i] in " ,\t":
                i += 1
            if line[i] == "}":
                i += 1
                break
            if line[i] == '"':
                j = i + 1
                while line[j] != '"':
                    j += 2 if line[j] == "\\" else 1
                ln = _unquote(line[i + 1:j])
                i = j + 1
            else:
                j = i
                while line[j] not in "=! \t":
                    j += 1
                ln = line[i:j]
                i = j
            while line[i] in " \t":
                i += 1
            if line[i] == "=":
                i += 1
            while line[i] in " \t":
                i += 1
            q = line[i]
            j = i + 1
            while line[j] != q:
                j += 2 if line[j] == "\\" else 1
            lv = _unquote(line[i + 1:j])
            i = j + 1
            if ln == "__name__":
                name = lv
            else:
                d[ln] = lv
    if name:
        d["__name__"] = name
    return tuple(sorted((k, v) for k, v in d.items() if v != "")), line[i:].strip()


@dataclass
class Case:
    line_no: int
    kind: str  # instant | range
    expr: str
    t: int = 0
    start: int = 0
    end: int = 0
    step: int = 0
    expect_fail: bool = False
    fail_msg: str | None = None
    fail_regex: str | None = None
    warn: bool | None = None
    info: bool | None = None
    warn_msgs: list[tuple[str, bool]] = field(default_factory=list)
    info_msgs: list[tuple[str, bool]] = field(default_factory=list)
    ordered: bool = False
    string: str | None = None
    range_vector: tuple[int, int, int] | None = None
    expected: list[str] = field(default_factory=list)


@dataclass
class FileResult:
    passed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.passed + self.failed


_EVAL_RE = re.compile(r"^eval(?:_(fail|warn|info|ordered))?\s+(instant|range)\s+(.*)$")


def _load_nhcb(store: MemQueryable, defs: list[tuple[Labels, list]], step: int) -> None:
    """load_with_nhcb: also store classic histograms as native histograms with custom buckets."""
    temp: dict[Labels, dict[int, dict]] = {}
    for lbls, vals in defs:
        d = dict(lbls)
        name = d.get("__name__", "")
        for suf in ("_bucket", "_sum", "_count"):
            if name.endswith(suf):
                break
        else:
            continue
        base = dict(d)
        base["__name__"] = name[: -len(suf)]
        le = None
        if suf == "_bucket":
            try:
                le = _num(base.pop("le"))
            except (KeyError, ValueError):
                continue
            if math.isnan(le):
                continue
        key = tuple(sorted(base.items()))
        per_t = temp.setdefault(key, {})
        for k, v in enumerate(vals):
            if v is None or isinstance(v, nh.H):
                continue
            th = per_t.setdefault(k * step, {"b": {}, "count": None, "sum": 0.0})
            if suf == "_bucket":
                th["b"].setdefault(le, v)
            elif suf == "_count":
                th["count"] = v
            else:
                th["sum"] = v
    for key, per_t in temp.items():
        for t, th in per_t.items():
            bs = sorted(th["b"].items())
            cnt = th["count"] if th["count"] is not None else (bs[-1][1] if bs else 0.0)
            if not bs or bs[-1][0] != math.inf:
                bs.append((math.inf, cnt))
            h = nh.H(schema=nh.CUSTOM, count=cnt, sum=th["sum"], cv=tuple(b for b, _ in bs[:-1]))
            prev = 0.0
            for i, (_, c) in enumerate(bs):
                h.pos[i] = c - prev
                prev = c
            store.add(key, t, h.compact())


def run_file(path: Path, engine: Engine | None = None) -> FileResult:
    # as Prometheus's own runner: every PromQL feature flag on, except type-and-unit-labels, which
    # its test engine leaves off (type_and_unit.test holds without it: the labels go with __name__)
    engine = engine or Engine(EngineOptions(features=PROMQL_FEATURES - {TYPE_AND_UNIT_LABELS}))
    lines = path.read_text().split("\n")
    res = FileResult()
    store = MemQueryable()
    i = 0
    while i < len(lines):
        raw = lines[i]
        line = raw.strip()
        if not line or line.startswith("#"):
            i += 1
            continue
        if line == "clear":
            store = MemQueryable()
            i += 1
            continue
        block = []
        j = i + 1
        while j < len(lines) and lines[j].strip() and (lines[j][:1] in " \t" or lines[j].strip().startswith("#")):
            if not lines[j].strip().startswith("#"):
                block.append(lines[j].strip())
            j += 1
        if line.startswith("load"):
            parts = line.split()
            step = parse_duration_ms(parts[1])
            defs = []
            pending_st: tuple[Labels, list[int | None]] | None = None
            for b in block:
                head = b.split(None, 1)[0]
                if head.endswith("@st"):  # start timestamps of the next line's samples
                    lbls, rest = parse_series(head[:-3] + " " + b[len(head):])
                    pending_st = (lbls, expand_st_offsets(rest.split()))
                    continue
                lbls, rest = parse_series(b)
                vals = expand_values(split_values(rest))
                offs: list[int | None] = [None] * len(vals)
                if pending_st is not None:
                    if pending_st[0] != lbls or len(pending_st[1]) != len(vals):
                        raise ValueError(f"{path.name}: @st line does not match its sample line {b!r}")
                    offs, pending_st = pending_st[1], None
                defs.append((lbls, vals))
                for k, v in enumerate(vals):
                    if v is not None:
                        store.add(lbls, k * step, v, 0 if offs[k] is None else k * step + offs[k])
            if parts[0] == "load_with_nhcb":
                _load_nhcb(store, defs, step)
        elif m := _EVAL_RE.match(line):
            case = _parse_eval(i + 1, m, block)
            err = check_case(engine, store, case)
            if err is None:
                res.passed += 1
            else:
                res.failed += 1
                res.failures.append(f"{path.name}:{case.line_no}: {case.expr}: {err}")
        i = j
    return res


def _parse_eval(line_no: int, m: re.Match, block: list[str]) -> Case:
    old, kind, rest = m.groups()
    if kind == "instant":
        mm = re.match(r"at\s+(\S+)\s+(.*)$", rest)
        case = Case(line_no, kind, mm[2], t=parse_duration_ms(mm[1]))
    else:
        mm = re.match(r"from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+)\s+(.*)$", rest)
        case = Case(line_no, kind, mm[4], start=parse_duration_ms(mm[1]), end=parse_duration_ms(mm[2]),
                    step=parse_duration_ms(mm[3]))
    if old == "fail":
        case.expect_fail = True
    elif old == "warn":
        case.warn = True
    elif old == "info":
        case.info = True
    elif old == "ordered":
        case.ordered = True
    for b in block:
        if b.startswith("expect "):
            e = b[len("expect "):].strip()
            kw, _, arg = e.partition(" ")
            arg = arg.strip()
            if kw == "fail":
                case.expect_fail = True
                if arg.startswith("msg:"):
                    case.fail_msg = arg[4:].strip()
                elif arg.startswith("regex:"):
                    case.fail_regex = arg[6:].strip()
            elif kw in ("warn", "info"):
                setattr(case, kw, True)
                if arg.startswith("msg:"):
                    getattr(case, kw + "_msgs").append((arg[4:].strip(), False))
                elif arg.startswith("regex:"):
                    getattr(case, kw + "_msgs").append((arg[6:].strip(), True))
            elif kw == "no_warn":
                case.warn = False
            elif kw == "no_info":
                case.info = False
            elif kw == "ordered":
                case.ordered = True
            elif kw == "string":
                case.string = _unquote(arg.strip()[1:-1])
            elif kw == "range":
                mm = re.match(r"vector\s+from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+)", arg)
                case.range_vector = (parse_duration_ms(mm[1]), parse_duration_ms(mm[2]), parse_duration_ms(mm[3]))
        else:
            case.expected.append(b)
    return case


def almost_equal(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        sa = np.array([a]).view(np.uint64)[0] == STALE_NAN_BITS
        sb = np.array([b]).view(np.uint64)[0] == STALE_NAN_BITS
        return math.isnan(a) and math.isnan(b) and sa == sb
    if a == b:
        return True
    absd = abs(a - b)
    s = abs(a) + abs(b)
    if a == 0 or b == 0 or s < 2.2250738585072014e-308:
        return absd < EPSILON * 2.2250738585072014e-308
    return absd / min(s, sys.float_info.max) < EPSILON


def _msg_match(expected: str, is_regex: bool, got: list[str]) -> bool:
    # Our parser has no source positions, so the trailing "(line:col)" is not compared.
    if is_regex:
        rx = _POS_RX_RE.sub("", expected)
        return any(re.search(rx, _POS_RE.sub("", g)) for g in got)
    exp = _POS_RE.sub("", expected)
    return any(_POS_RE.sub("", g) == exp for g in got)


def check_case(engine: Engine, store: MemQueryable, c: Case) -> str | None:
    """None when the eval matches its expectations, else a description of the mismatch."""
    try:
        if c.kind == "instant":
            r = engine.instant(store, c.expr, c.t)
        else:
            r = engine.range(store, c.expr, c.start, c.end, c.step)
    except PromQLError as ex:
        if not c.expect_fail:
            return f"unexpected error: {ex}"
        if c.fail_msg is not None and c.fail_msg not in str(ex):
            return f"error {str(ex)!r} does not match {c.fail_msg!r}"
        if c.fail_regex is not None and not re.search(c.fail_regex, str(ex)):
            return f"error {str(ex)!r} does not match /{c.fail_regex}/"
        return None
    except Exception as ex:  # an engine bug: report it as a failure, not a crash of the run
        return f"crash: {type(ex).__name__}: {ex}"
    if c.expect_fail:
        return "expected an error"
    for what, flag, msgs, got in (("warn", c.warn, c.warn_msgs, r.warnings), ("info", c.info, c.info_msgs, r.infos)):
        if flag is True and not got:
            return f"expected {what} annotation"
        if flag is False and got:
            return f"unexpected {what}: {got}"
        for m, rx in msgs:
            if not _msg_match(m, rx, got):
                return f"missing {what} {m!r}; got {got}"
    err = _compare(c, r)
    if err is None and c.kind == "instant":
        err = _range_mode(engine, store, c, r)
    return err


_QUERY_CONTEXT_FUNCS = re.compile(r"(start|end|range|step)\(\)")


def _range_mode(engine: Engine, store: MemQueryable, c: Case, r: QueryResult) -> str | None:
    """Like Prometheus's runner: an instant case must also hold as the middle step of a range
    query from t-1m to t+1m."""
    if (c.ordered or c.range_vector is not None or c.string is not None or r.kind not in ("vector", "scalar")
            or _QUERY_CONTEXT_FUNCS.search(c.expr)):
        return None
    try:
        rr = engine.range(store, c.expr, c.t - 60_000, c.t + 60_000, 60_000)
    except PromQLError as ex:
        return f"range mode: unexpected error: {ex}"
    rows = []
    for l, ts, vals in rr.series:
        hit = [k for k, t in enumerate(np.asarray(ts).tolist()) if t == c.t]
        if hit:
            rows.append((l, c.t, vals[hit[0]]))
    if r.kind == "scalar":
        rv = QueryResult("scalar", (c.t, rows[0][2] if rows else math.nan))
    else:
        rv = QueryResult("vector", rows)
    err = _compare(c, rv)
    return None if err is None else f"range mode: {err}"


def compare_hist(exp: nh.H, got, hint_set: bool) -> bool:
    """Prometheus's compareNativeHistogram on compacted histograms."""
    if not isinstance(got, nh.H):
        return False
    g = got.copy().compact()
    if exp.schema != g.schema or not almost_equal(exp.count, g.count) or not almost_equal(exp.sum, g.sum):
        return False
    if exp.custom and tuple(exp.cv or ()) != tuple(g.cv or ()):
        return False
    if exp.zt != g.zt or not almost_equal(exp.zc, g.zc):
        return False
    for a, b in ((exp.pos, g.pos), (exp.neg, g.neg)):
        if a.keys() != b.keys() or not all(almost_equal(v, b[k]) for k, v in a.items()):
            return False
    return not hint_set or exp.hint == g.hint


def _expand_expected(rest: str) -> list[tuple[object, bool]]:
    out: list[tuple[object, bool]] = []
    for tok in split_values(rest):
        flag = "counter_reset_hint" in tok[tok.rfind("{{"):] if tok.startswith("{{") else False
        out.extend((v, flag) for v in expand_values([tok]))
    return out


def _val_ok(want, flag: bool, got) -> bool:
    if isinstance(want, nh.H):
        return compare_hist(want, got, flag)
    if isinstance(got, nh.H):
        return False
    return almost_equal(float(got), want)


def _fmt(v) -> str:
    return v.test_expression() if isinstance(v, nh.H) else repr(v)


def _compare(c: Case, r: QueryResult) -> str | None:
    if c.string is not None:
        return None if r.kind == "string" and r.series[1] == c.string else f"want string {c.string!r}, got {r.series}"
    if c.kind == "instant" and c.range_vector is None:
        if len(c.expected) == 1 and not c.expected[0].startswith("{") and re.fullmatch(_NUM, c.expected[0].split()[0]) and len(c.expected[0].split()) == 1:
            want = _num(c.expected[0])
            if r.kind != "scalar":
                return f"want scalar {want}, got {r.kind}"
            return None if almost_equal(r.series[1], want) else f"want {want}, got {r.series[1]}"
        if r.kind == "scalar":
            return f"got scalar {r.series[1]}, want vector"
        if r.kind != "vector":
            return f"want vector, got {r.kind}"
        want = []
        for e in c.expected:
            lbls, rest = parse_series(e)
            want.append((lbls, _expand_expected(rest)[0]))
        got = [(l, v) for l, _, v in r.series]
        if len(got) != len(want):
            return f"want {len(want)} series, got {len(got)}: {[(g[0], _fmt(g[1])) for g in got[:5]]}"
        gd = {l: v for l, v in got}
        for k, (l, (v, flag)) in enumerate(want):
            if l not in gd:
                return f"missing series {l}; got {[g[0] for g in got][:5]}"
            if not _val_ok(v, flag, gd[l]):
                return f"series {l}: want {_fmt(v)}, got {_fmt(gd[l])}"
            if c.ordered and got[k][0] != l:
                return f"order: position {k} want {l}, got {got[k][0]}"
        return None
    # range query, or instant query returning a range vector
    if r.kind == "scalar":
        return "got scalar"
    if c.range_vector is not None:
        s0, s1, st = c.range_vector
    else:
        s0, s1, st = c.start, c.end, c.step
    steps = list(range(s0, s1 + 1, st))
    want = {}
    for e in c.expected:
        lbls, rest = parse_series(e)
        vals = _expand_expected(rest)
        want[lbls] = {steps[k]: v for k, v in enumerate(vals) if v[0] is not None and k < len(steps)}
    got = {}
    for l, ts, vals in r.series:
        got[l] = dict(zip(np.asarray(ts).tolist(), list(vals)))
    if set(want) != set(got):
        return f"series mismatch: missing {sorted(set(want) - set(got))[:3]}, extra {sorted(set(got) - set(want))[:3]}"
    for l, w in want.items():
        g = got[l]
        if set(w) != set(g):
            return f"{l}: timestamps want {sorted(w)[:8]}, got {sorted(g)[:8]}"
        for t, (v, flag) in w.items():
            if not _val_ok(v, flag, g[t]):
                return f"{l}@{t}: want {_fmt(v)}, got {_fmt(g[t])}"
    return None


def main(argv: list[str]) -> None:
    for p in argv:
        r = run_file(Path(p))
        print(f"{Path(p).name}: {r.passed}/{r.total} passed")
        for f in r.failures:
            print("  FAIL", f)


if __name__ == "__main__":
    main(sys.argv[1:])
