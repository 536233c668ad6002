"""Runner for Prometheus's PromQL test-script format (load / clear / eval ... / expect ...).

Loads series into an in-memory Queryable and checks every eval through our Engine, so the
upstream conformance scripts can measure the engine. Native-histogram cases are recognised
and counted as unsupported rather than failed.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from querier.promql import Engine, EngineOptions, PromQLError, QueryResult, Series
from receiver.tsdb.labels import STALE_NAN_BITS, Labels, Matcher, matches_all

STALE = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
EPSILON = 1e-6
_NUM = r"(?:[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|0x[0-9a-fA-F]+|Inf|inf|NaN))"
_SERIES_RE = re.compile(rf"^(?P<a>{_NUM})(?P<op>[-+])(?P<b>{_NUM})x(?P<n>\d+)$")
_REPEAT_RE = re.compile(rf"^(?P<a>{_NUM}|_|stale)x(?P<n>\d+)$")
_POS_RE = re.compile(r"\s*\(\d+:\d+\)$")
_POS_RX_RE = re.compile(r"\s*\\\((?:\[0-9\]\+|\d+):(?:\[0-9\]\+|\d+)\\\)$")


class MemQueryable:
    """In-memory storage: labels -> sorted samples."""

    def __init__(self) -> None:
        self.data: dict[Labels, dict[int, float]] = {}

    def add(self, lbls: Labels, t: int, v: float) -> None:
        self.data.setdefault(lbls, {})[t] = v

    def select(self, matchers: list[Matcher], mint: int, maxt: int) -> list[Series]:
        out = []
        for lbls, samples in self.data.items():
            if not matches_all(lbls, matchers):
                continue
            ts = np.array(sorted(samples), dtype=np.int64)
            vals = np.array([samples[t] for t in ts.tolist()], dtype=np.float64)
            lo, hi = np.searchsorted(ts, mint, "left"), np.searchsorted(ts, maxt, "right")
            out.append(Series(lbls, ts[lo:hi], vals[lo:hi]))
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


def expand_values(tokens: list[str]) -> list[float | None]:
    """Expand the script's value notation; None is a missing point."""
    out: list[float | None] = []
    for tok in tokens:
        if tok == "_":
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
    native: bool = False


@dataclass
class FileResult:
    passed: int = 0
    failed: int = 0
    unsupported: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.passed + self.failed


_EVAL_RE = re.compile(r"^eval(?:_(fail|warn|info|ordered))?\s+(instant|range)\s+(.*)$")
_NATIVE_FUNCS = re.compile(r"histogram_(count|sum|avg|fraction|stddev|stdvar)\s*\(")


def run_file(path: Path, engine: Engine | None = None) -> FileResult:
    engine = engine or Engine(EngineOptions())
    lines = path.read_text().split("\n")
    res = FileResult()
    store = MemQueryable()
    hist_names: set[str] = set()
    i = 0
    while i < len(lines):
        raw = lines[i]
        line = raw.strip()
        if not line or line.startswith("#"):
            i += 1
            continue
        if line == "clear":
            store = MemQueryable()
            hist_names = set()
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
            for b in block:
                lbls, rest = parse_series(b)
                name = dict(lbls).get("__name__", "")
                if "{{" in rest:
                    hist_names.add(name)
                    continue
                if parts[0] == "load_with_nhcb" and name.endswith("_bucket"):
                    hist_names.add(name[: -len("_bucket")])
                for k, v in enumerate(expand_values(rest.split())):
                    if v is not None:
                        store.add(lbls, k * step, v)
        elif m := _EVAL_RE.match(line):
            case = _parse_eval(i + 1, m, block)
            expr_names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", case.expr))
            if (case.native or _NATIVE_FUNCS.search(case.expr) or expr_names & hist_names):
                res.unsupported += 1
            else:
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
            if "{{" in b:
                case.native = True
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
    return _compare(c, r)


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
            want.append((lbls, _num(rest.split()[0])))
        got = [(l, v) for l, _, v in r.series]
        if len(got) != len(want):
            return f"want {len(want)} series, got {len(got)}: {got[:5]}"
        gd = {l: v for l, v in got}
        for k, (l, v) in enumerate(want):
            if l not in gd:
                return f"missing series {l}; got {[g[0] for g in got][:5]}"
            if not almost_equal(gd[l], v):
                return f"series {l}: want {v}, got {gd[l]}"
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
        vals = expand_values(rest.split())
        want[lbls] = {steps[k]: v for k, v in enumerate(vals) if v is not None and k < len(steps)}
    got = {}
    for l, ts, vals in r.series:
        got[l] = dict(zip(np.asarray(ts).tolist(), np.asarray(vals).tolist()))
    if set(want) != set(got):
        return f"series mismatch: missing {sorted(set(want) - set(got))[:3]}, extra {sorted(set(got) - set(want))[:3]}"
    for l, w in want.items():
        g = got[l]
        if set(w) != set(g):
            return f"{l}: timestamps want {sorted(w)[:8]}, got {sorted(g)[:8]}"
        for t, v in w.items():
            if not almost_equal(g[t], v):
                return f"{l}@{t}: want {v}, got {g[t]}"
    return None


def main(argv: list[str]) -> None:
    for p in argv:
        r = run_file(Path(p))
        print(f"{Path(p).name}: {r.passed}/{r.total} passed, unsupported: native histograms {r.unsupported}")
        for f in r.failures:
            print("  FAIL", f)


if __name__ == "__main__":
    main(sys.argv[1:])
