"""Shared pieces of the differential tests against the reference Prometheus 3 (tests/peers.py):
one data set (the demo_* series plus edge series: resets, gaps, staleness markers, NaN, ±Inf,
native histograms) pushed by remote write into both servers, and a deterministic, generated
query set over the stable PromQL language (no experimental functions, no 3.14 additions).

Samples sit exactly on the 15 s grid and evaluation times fall on sample timestamps too, so
the left-open range windows of Prometheus 3 are exercised at their edges."""
from __future__ import annotations

import contextlib
import itertools
import math
import random
import re
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import requests
import yaml

from harness import PrometheusProcess, PromringProcess
from peers import peer
from receiver.remotewrite import encode_histogram_write_request, snappy_compress
from receiver.tsdb.histogram import Hist, to_proto_bytes
from rw import HEADERS, push
from test_promql_differential import INTERVAL_MS, ROUNDS, make_data

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
INF = math.inf
EDGE_INSTANCES = ("a", "b", "c")


def edge_data(t0: int) -> list[tuple[tuple, list[int], list[float]]]:
    """Gauges and counters with NaN, ±Inf, gaps and staleness markers, deterministic."""
    rnd = random.Random(7)
    out = []
    ts = [t0 + i * INTERVAL_MS for i in range(ROUNDS)]
    for k, inst in enumerate(EDGE_INSTANCES):
        gauge, counter, c = [], [], 0.0
        for i in range(ROUNDS):
            v: float | None = round(rnd.uniform(-50, 50), 2)
            if k == 0 and i % 37 == 5:
                v = math.nan
            elif k == 1 and i % 29 == 3:
                v = INF if i % 2 else -INF
            elif k == 2 and 60 <= i < 80:
                v = None  # a gap longer than the lookback delta
            elif k == 2 and i == 130:
                v = STALE_NAN
            elif k == 2 and 131 <= i < 140:
                v = None  # stale, then gone for a while
            gauge.append(v)
            c = 0.0 if (k == 0 and i in (50, 150)) or (k == 1 and i % 40 == 39) else c
            c += rnd.choice((0.0, 1.0, 2.5, 7.0))
            counter.append(None if (k == 2 and 100 <= i < 104) else
                           (STALE_NAN if k == 1 and i == 170 else c))
        for name, vals in (("edge_gauge", gauge), ("edge_counter_total", counter)):
            keep = [(t, v) for t, v in zip(ts, vals) if v is not None]
            out.append(((("__name__", name), ("instance", inst), ("job", "edge")),
                        [t for t, _ in keep], [v for _, v in keep]))
    return out


def native_histograms(t0: int) -> list[tuple[tuple, list[bytes]]]:
    """Two integer exponential histograms (one reset) and one float histogram."""
    out = []
    for k, inst in enumerate(EDGE_INSTANCES[:2]):
        hs = []
        for i in range(ROUNDS):
            j = i if k == 0 or i < 90 else i - 90  # a counter reset at round 90
            p = [1 + j, 2 * j, 3 + j, j // 2]
            zc = j // 3
            deltas = [x - (p[n - 1] if n else 0) for n, x in enumerate(p)]
            hs.append(to_proto_bytes(t0 + i * INTERVAL_MS, Hist(
                False, 0, 2.0 ** -128, sum(p) + zc + j, zc, 1.25 * j + 0.5,
                ((-1, 2), (1, 2)), deltas, ((0, 1),), [j])))
        out.append(((("__name__", "nh_seconds"), ("instance", inst), ("job", "nh")), hs))
    fh = []
    for i in range(ROUNDS):
        p = [0.5 * i, 1.5 * i + 1, 0.25]
        fh.append(to_proto_bytes(t0 + i * INTERVAL_MS, Hist(
            True, 1, 0.001, sum(p) + 0.5, 0.5, 3.5 * i, ((0, 3),), p, (), [])))
    out.append(((("__name__", "nh_seconds"), ("instance", "c"), ("job", "nh")), fh))
    return out


class Pair:
    """The reference Prometheus 3 and ``promring up`` holding the same data."""

    def __init__(self, prom: PrometheusProcess, pr: PromringProcess, base_ms: int) -> None:
        self.prom, self.pr, self.base_ms = prom, pr, base_ms
        self.apis = {"prometheus": prom.api, "promring": pr.api}

    def t(self, minute: int, second: int = 0) -> float:
        """Seconds since the epoch ``minute:second`` after the first sample."""
        return (self.base_ms + minute * 60_000 + second * 1000) / 1000


@contextlib.contextmanager
def loaded_pair(tmp_path: Path, with_native: bool = True) -> Iterator[Pair]:
    """Both servers started, fed the same samples round by round in time order, and checked
    to show the same series count before the caller queries them; both stopped on exit."""
    now_ms = int(time.time() * 1000)
    base = now_ms // 60_000 * 60_000 - (ROUNDS * INTERVAL_MS // 60_000 + 1) * 60_000
    # In label order: Prometheus returns head series in creation order, and topk/bottomk
    # break ties by input order, so both then see the same order.
    floats = sorted(make_data(base) + edge_data(base), key=lambda s: s[0])
    hists = native_histograms(base) if with_native else []
    prom = PrometheusProcess(tmp_path / "prom3", "global:\n  scrape_interval: 1h\n",
                             "--web.enable-remote-write-receiver",
                             "--storage.tsdb.retention.time=10y")
    prom.args[0] = peer("prometheus")
    prom.start()
    pr = None
    try:
        pr = PromringProcess.up(tmp_path / "promring" / "data")
        targets = [prom.api + "/write", pr.write_url]
        for lo in range(0, ROUNDS, 25):
            hi_ms, lo_ms = base + (lo + 25) * INTERVAL_MS, base + lo * INTERVAL_MS
            batch = []
            for lbls, ts, vals in floats:
                sel = [(t, v) for t, v in zip(ts, vals) if lo_ms <= t < hi_ms]
                if sel:
                    batch.append((lbls, [t for t, _ in sel], [v for _, v in sel]))
            hbody = snappy_compress(encode_histogram_write_request(
                (lbls, hs[lo:lo + 25]) for lbls, hs in hists)) if hists else None
            for url in targets:
                r = push(url, batch)
                assert r.status_code in (200, 204), (url, r.status_code, r.text)
                if hbody is not None:
                    r = requests.post(url, data=hbody, headers=HEADERS, timeout=30)
                    assert r.status_code in (200, 204), (url, r.status_code, r.text)
        pair = Pair(prom, pr, base)
        probe = {"query": "count({__name__=~\".+\"})", "time": pair.t(49)}
        deadline = time.time() + 30
        while True:
            got = [requests.get(f"{a}/query", params=probe, timeout=30).json()["data"]["result"]
                   for a in pair.apis.values()]
            if got[0] and got[1] and got[0][0]["value"][1] == got[1][0]["value"][1]:
                break
            assert time.time() < deadline, f"data not visible in both: {got}"
            time.sleep(0.2)
        yield pair
    finally:
        if pr is not None:
            pr.stop()
        prom.stop()


# --- the generated query set ---------------------------------------------------------------

GAUGES = ["demo_memory_usage_bytes", "edge_gauge", "demo_disk_usage_bytes",
          "demo_intermittent_metric", 'demo_memory_usage_bytes{type=~"free|used"}']
COUNTERS = ["demo_cpu_usage_seconds_total", "edge_counter_total", "demo_items_shipped_total"]
RANGES = ["1m", "2m", "5m", "15m", "1h"]
MODIFIERS = ["", " offset 5m", " offset 1m30s", " @ end()", " @ start()", " @ {at}",
             " @ {at} offset -2m"]
RANGE_FUNCS = ["avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
               "count_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
               "present_over_time", "absent_over_time", "changes", "resets", "deriv", "idelta",
               "delta", "quantile_over_time(0.3, {})", "quantile_over_time(0.95, {})",
               "predict_linear({}, 600)"]
COUNTER_FUNCS = ["rate", "irate", "increase", "resets", "changes"]
INSTANT_FUNCS = ["abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10", "round", "sgn",
                 "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh",
                 "acosh", "atanh", "deg", "rad", "timestamp", "sort", "sort_desc", "-",
                 "clamp({}, -10, 10)", "clamp_min({}, 0)", "clamp_max({}, 5)", "round({}, 0.3)",
                 "label_replace({}, \"x\", \"$1\", \"instance\", \"(.).*\")",
                 "label_join({}, \"x\", \"-\", \"instance\", \"job\")", "absent",
                 "day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute",
                 "month", "year"]
AGGRS = ["sum", "avg", "min", "max", "count", "stddev", "stdvar", "group", "topk(2, {})",
         "bottomk(1, {})", "quantile(0.7, {})", "quantile(-1, {})", "count_values(\"v\", {})"]
GROUPINGS = ["", " by (instance)", " without (instance)", " by (job, mode)", " by ()",
             " without ()"]
ARITH = ["+", "-", "*", "/", "%", "^", "atan2"]
COMPARE = ["==", "!=", ">", "<", ">=", "<="]
SETS = ["and", "or", "unless"]
NATIVE = ["nh_seconds", "histogram_count(nh_seconds)", "histogram_sum(rate(nh_seconds[5m]))",
          "histogram_avg(nh_seconds)", "histogram_quantile(0.9, rate(nh_seconds[5m]))",
          "histogram_quantile(0.5, sum(rate(nh_seconds[2m])))",
          "histogram_fraction(0, 4, rate(nh_seconds[5m]))", "histogram_stddev(nh_seconds)",
          "histogram_stdvar(nh_seconds)", "sum(nh_seconds)", "rate(nh_seconds[5m])",
          "increase(nh_seconds[10m])", "sum by (job) (increase(nh_seconds[15m]))",
          "nh_seconds offset 5m", "avg(nh_seconds)", "histogram_count(nh_seconds) > 100",
          "nh_seconds * 2", "histogram_count(delta(nh_seconds[5m]))",
          "last_over_time(nh_seconds[5m])", "count_over_time(nh_seconds[5m])",
          "histogram_sum(nh_seconds) / histogram_count(nh_seconds)"]

# Queries that fail (or nearly fail) in Prometheus 3: the same errorType is expected.
FAILING = ["edge_gauge + on(job) edge_counter_total", "rate({job=\"edge\"}[5m])",
           "-{__name__=~\"edge_.*\"}", "label_replace(edge_gauge, \"instance\", \"\", \"\", \"\")",
           "topk(scalar(edge_gauge), edge_gauge)", "topk(1e20, edge_gauge)",
           "quantile(scalar(vector(NaN)), edge_gauge)", "count_values(\"\", edge_gauge)",
           "count_values(\"~v\", demo_num_cpus)", "edge_gauge[5m] + 1", "rate(edge_gauge)",
           "1 + \"a\"", "sort_desc(1)", "vector(1) and on() 1", "edge_gauge @ start() @ end()",
           "demo_num_cpus offset 1m offset 2m", "limitk(1, edge_gauge)",
           "mad_over_time(edge_gauge[5m])", "{__name__=~\".*\"}", "edge_gauge{instance=~\"(\"}",
           "sum(edge_gauge) by (instance) + on(instance) group_right edge_gauge",
           "edge_counter_total / on(instance) group_left demo_num_cpus",
           "demo_memory_usage_bytes / on(instance) demo_num_cpus",
           "max_over_time(edge_gauge[5m:0s])", "rate(edge_gauge[0s])", "edge_gauge[1m] offset 1m",
           "histogram_quantile(0.5, sum(rate(nh_seconds[5m])) + sum(rate(nh_seconds[5m])))",
           "sum(nh_seconds) + sum(edge_gauge)", "nh_seconds > 1", "abs(nh_seconds)",
           "max(nh_seconds)", "rate(demo_num_cpus[5m] @ 1e300)", "time() offset 1m",
           "label_join(edge_gauge, \"instance\", \"-\", \"job\")",
           "absent(nonexistent{job=\"x\", job=\"y\"})", "absent_over_time(nope{a=~\"b\"}[5m])"]


def _apply(fn: str, arg: str) -> str:
    if fn == "-":
        return f"-{arg}"
    return fn.format(arg) if "{}" in fn else f"{fn}({arg})"


def generated_queries(n: int, at_s: int, seed: int = 15) -> list[str]:
    """``n`` distinct queries drawn deterministically from the templates (every function,
    range, aggregation, operator and modifier appears), deduplicated, order kept."""
    rnd = random.Random(seed)
    mod = lambda: rnd.choice(MODIFIERS).format(at=at_s)  # noqa: E731
    out: list[str] = list(NATIVE) + list(FAILING)
    # Every template value at least once, then random combinations until n.
    for f in RANGE_FUNCS:
        out.append(_apply(f, f"{rnd.choice(GAUGES)}[{rnd.choice(RANGES)}]{mod()}"))
    for f in COUNTER_FUNCS:
        out.append(_apply(f, f"{rnd.choice(COUNTERS)}[{rnd.choice(RANGES)}]{mod()}"))
    for f in INSTANT_FUNCS:
        out.append(_apply(f, rnd.choice(GAUGES) + mod()))
    for a in AGGRS:
        for g in GROUPINGS:
            out.append(_apply(a, rnd.choice(GAUGES)) + g if "{}" in a
                       else f"{a}{g} ({rnd.choice(GAUGES)}{mod()})")
    makers = [_range_q, _counter_q, _instant_q, _aggr_q, _binop_q, _subquery_q, _classic_q,
              _nested_q, _native_q]
    guard = 0
    while len(dict.fromkeys(out)) < n and guard < 50 * n:
        guard += 1
        out.append(rnd.choice(makers)(rnd, mod))
    return list(dict.fromkeys(out))[:n]


def _range_q(rnd: random.Random, mod) -> str:
    return _apply(rnd.choice(RANGE_FUNCS), f"{rnd.choice(GAUGES)}[{rnd.choice(RANGES)}]{mod()}")


def _counter_q(rnd: random.Random, mod) -> str:
    return _apply(rnd.choice(COUNTER_FUNCS), f"{rnd.choice(COUNTERS)}[{rnd.choice(RANGES)}]{mod()}")


def _instant_q(rnd: random.Random, mod) -> str:
    inner = rnd.choice([rnd.choice(GAUGES) + mod(), _counter_q(rnd, mod)])
    return _apply(rnd.choice(INSTANT_FUNCS), inner)


def _aggr_q(rnd: random.Random, mod) -> str:
    a, g = rnd.choice(AGGRS), rnd.choice(GROUPINGS)
    inner = rnd.choice([rnd.choice(GAUGES) + mod(), _counter_q(rnd, mod), _range_q(rnd, mod)])
    if "{}" in a:
        return a.split("(")[0] + g + " (" + a[a.index("(") + 1:].format(inner)
    return f"{a}{g} ({inner})"


def _binop_q(rnd: random.Random, mod) -> str:
    kind = rnd.choice(["arith", "compare", "bool", "set", "scalar"])
    op = {"arith": ARITH, "compare": COMPARE, "bool": COMPARE, "set": SETS,
          "scalar": ARITH + COMPARE}[kind]
    op = rnd.choice(op)
    left = rnd.choice(["demo_memory_usage_bytes{}", "demo_cpu_usage_seconds_total{}",
                       "edge_gauge{}", "rate(edge_counter_total[5m]{})"]).replace("{}", mod())
    if kind == "scalar":
        s = rnd.choice(["2", "-1.5", "0", "NaN", "Inf", "scalar(sum(demo_num_cpus))"])
        return f"{s} {op} {left}" if rnd.random() < 0.5 else f"{left} {op} {s}"
    if left.startswith("demo_memory"):
        right, match = rnd.choice([
            ("demo_num_cpus", " on(instance) group_left"),
            ("demo_num_cpus", " ignoring(type) group_left"),
            ("sum by (instance, job) (demo_memory_usage_bytes)", " on(instance, job) group_left"),
            ("demo_memory_usage_bytes offset 2m", ""),
            ('demo_memory_usage_bytes{type="free"}', " ignoring(type)"),
            ('demo_memory_usage_bytes{type="free"}', " on(instance)"),
            ("demo_memory_usage_bytes", " on(instance, type, job)")])
    elif left.startswith("demo_cpu"):
        right, match = rnd.choice([
            ("demo_num_cpus", " on(instance) group_left"),
            ("sum by (instance) (demo_cpu_usage_seconds_total)", " on(instance) group_left"),
            ("demo_cpu_usage_seconds_total offset 1m", "")])
    else:
        right, match = rnd.choice([
            ("edge_gauge offset 1m", ""), ("edge_counter_total", " ignoring(__name__)"),
            ("edge_counter_total", " on(instance)"), ("max(edge_gauge)", " on() group_left"),
            ("edge_counter_total", " on(instance) group_right"),
            ("rate(edge_counter_total[2m])", "")])
    if kind == "set":
        match = match.replace(" group_left", "").replace(" group_right", "")
    bool_ = " bool" if kind == "bool" else ""
    if "group_" in match and kind in ("compare", "bool") and rnd.random() < 0.3:
        match += "(job)" if "group_left" in match else ""
    return f"{left} {op}{bool_}{match} {right}"


def _subquery_q(rnd: random.Random, mod) -> str:
    f = rnd.choice(["avg_over_time", "max_over_time", "min_over_time", "sum_over_time",
                    "count_over_time", "last_over_time", "rate", "deriv", "changes",
                    "quantile_over_time(0.5, {})", "stddev_over_time", "present_over_time"])
    inner = rnd.choice(["rate(demo_cpu_usage_seconds_total[1m])", "edge_gauge",
                        "sum by (instance) (demo_memory_usage_bytes)", "edge_counter_total",
                        "max(rate(edge_counter_total[2m]))", "demo_intermittent_metric"])
    window = rnd.choice(["10m:1m", "5m:30s", "7m:", "3m:45s", "15m:2m"])
    return _apply(f, f"({inner})[{window}]{mod()}")


def _classic_q(rnd: random.Random, mod) -> str:
    q = rnd.choice(["0.5", "0.9", "0.99", "0", "1", "-0.5", "1.5", "NaN"])
    by = rnd.choice(["le", "le, instance", "le, path", "le, status, method"])
    f = rnd.choice(["rate", "increase", "irate"])
    r = rnd.choice(["1m", "5m", "10m"])
    return (f"histogram_quantile({q}, sum by ({by}) "
            f"({f}(demo_api_request_duration_seconds_bucket[{r}]{mod()})))")


def _native_q(rnd: random.Random, mod) -> str:
    inner = rnd.choice(["nh_seconds{}", "rate(nh_seconds[{r}]{})", "increase(nh_seconds[{r}]{})",
                        "delta(nh_seconds[{r}]{})", "irate(nh_seconds[{r}]{})",
                        "idelta(nh_seconds[{r}]{})", "sum_over_time(nh_seconds[{r}]{})",
                        "avg_over_time(nh_seconds[{r}]{})", "last_over_time(nh_seconds[{r}]{})",
                        "sum by (job) (rate(nh_seconds[{r}]{}))", "nh_seconds{} * -2",
                        "avg(nh_seconds{})", "nh_seconds{} / 4", "max_over_time(nh_seconds[{r}]{})",
                        "count_over_time(nh_seconds[{r}]{})", "resets(nh_seconds[{r}]{})",
                        "changes(nh_seconds[{r}]{})", "deriv(nh_seconds[{r}]{})"])
    inner = inner.replace("{r}", rnd.choice(RANGES)).replace("{}", mod())
    f = rnd.choice(["histogram_count", "histogram_sum", "histogram_avg", "histogram_stddev",
                    "histogram_stdvar", "histogram_quantile(0.8, {})", "histogram_quantile(0, {})",
                    "histogram_fraction(-1, 2, {})", "histogram_fraction(0.5, Inf, {})", "sum",
                    "count", "timestamp", "sort", "-", "abs", "label_replace({}, \"x\", \"y\", \"\", \"\")"])
    return _apply(f, inner)


def _nested_q(rnd: random.Random, mod) -> str:
    return rnd.choice([
        lambda: f"{_aggr_q(rnd, mod)} {rnd.choice(ARITH + COMPARE)} {rnd.choice(['1', '100', '1e9'])}",
        lambda: _apply(rnd.choice(INSTANT_FUNCS[:27]), _aggr_q(rnd, mod)),
        lambda: f"sort_desc({_binop_q(rnd, mod)})",
        lambda: f"count({_binop_q(rnd, mod)})",
        lambda: f"vector({rnd.choice(['1', 'time()', 'scalar(edge_gauge)'])})",
        lambda: f"scalar({_aggr_q(rnd, mod)})",
    ])()


# --- comparing answers ---------------------------------------------------------------------

def close(a: str, b: str, fraction: float = 1e-6, margin: float = 1e-9) -> bool:
    """Two sample values as the API prints them: NaN == NaN, ±Inf exactly, else within
    ``fraction`` relative or ``margin`` absolute."""
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if x == y:
        return True
    return abs(x - y) <= fraction * max(abs(x), abs(y)) or abs(x - y) <= margin


def _points(s: dict) -> list[tuple]:
    """Every float and histogram point of one result series as (t, kind, value), time order."""
    pts = [(p[0], "f", p[1]) for p in s.get("values", [])]
    pts += [(p[0], "h", p[1]) for p in s.get("histograms", [])]
    if "value" in s:
        pts.append((s["value"][0], "f", s["value"][1]))
    if "histogram" in s:
        pts.append((s["histogram"][0], "h", s["histogram"][1]))
    return sorted(pts, key=lambda p: p[0])


def _same_hist(a: dict, b: dict, cl) -> bool:
    if not (cl(a["count"], b["count"]) and cl(a["sum"], b["sum"])):
        return False
    ba, bb = a.get("buckets", []), b.get("buckets", [])
    return len(ba) == len(bb) and all(
        x[0] == y[0] and cl(x[1], y[1]) and cl(x[2], y[2]) and cl(x[3], y[3])
        for x, y in zip(ba, bb))


def answer_diff(ref: dict, ours: dict, cl=close, drop=("tenant_id",)) -> str | None:
    """None when two API answers agree (labels exactly, ``drop`` labels ignored; values by
    ``cl``; an error only matches an error of the same errorType, an execution error also
    needs the same text), else a short description."""
    if ref["status"] != "success" or ours["status"] != "success":
        if ref["status"] == ours["status"] and ref.get("errorType") == ours.get("errorType"):
            # Execution errors word for word (less promring's external label); parse errors
            # by class only (their wording follows the parser library).
            same = ref["errorType"] != "execution" or ref["error"] == \
                re.sub(r', tenant_id="[^"]*"', "", ours["error"])
            return None if same else f"error {ref['error'][:200]!r} vs {ours['error'][:200]!r}"
        return f"Prometheus {ref.get('errorType') or 'success'}: {ref.get('error', '')[:160]} | " \
               f"promring {ours.get('errorType') or 'success'}: {ours.get('error', '')[:160]}"
    kind, okind = ref["data"]["resultType"], ours["data"]["resultType"]
    if kind != okind:
        return f"resultType {kind} vs {okind}"
    a, b = ref["data"]["result"], ours["data"]["result"]
    if kind in ("scalar", "string"):
        return None if a[0] == b[0] and (a[1] == b[1] or kind == "scalar" and cl(a[1], b[1])) \
            else f"{kind} {a} vs {b}"
    norm = lambda res: {tuple(sorted((k, v) for k, v in s["metric"].items() if k not in drop)):  # noqa: E731
                        _points(s) for s in res}
    na, nb = norm(a), norm(b)
    if len(na) != len(a) or len(nb) != len(b):
        return f"duplicate series: {len(a)}/{len(na)} vs {len(b)}/{len(nb)}"
    if set(na) != set(nb):
        return (f"series differ: only Prometheus {sorted(set(na) - set(nb))[:2]}, "
                f"only promring {sorted(set(nb) - set(na))[:2]}")
    for k, pts in na.items():
        qs = nb[k]
        if [p[:2] for p in pts] != [q[:2] for q in qs]:
            return f"{dict(k)}: points {[p[:2] for p in pts][:4]} vs {[q[:2] for q in qs][:4]}"
        for p, q in zip(pts, qs):
            if not (cl(p[2], q[2]) if p[1] == "f" else _same_hist(p[2], q[2], cl)):
                return f"{dict(k)}@{p[0]}: {p[2]} vs {q[2]}"
    return None


def _get(url: str, params: dict) -> dict:
    return requests.get(url, params=params, timeout=60).json()


def compare_queries(apis: dict[str, str], queries: list[str], instants: list[float],
                    start: float, end: float, steps: tuple[float, ...] = (60, 45, 17),
                    workers: int = 4) -> tuple[list[str], int, int]:
    """Every query as two instant queries (times picked round-robin) and one range query
    (step picked round-robin, some off the sample grid) on both APIs (reference first),
    ``workers`` queries at a time; returns the mismatches (in query order) and the
    evaluation counts."""
    (_, ref), (_, other) = apis.items()
    calls = []
    for i, q in enumerate(queries):
        calls += [("query", q, {"query": q, "time": instants[(i + k) % len(instants)]})
                  for k in (0, 2)]
        calls.append(("query_range", q, {"query": q, "start": start, "end": end,
                                         "step": steps[i % len(steps)]}))

    def one(call: tuple) -> str | None:
        path, q, params = call
        d = answer_diff(_get(f"{ref}/{path}", params), _get(f"{other}/{path}", params))
        return None if d is None else \
            f"{path} {q!r} @ {params.get('time', params.get('start'))}: {d}"

    with ThreadPoolExecutor(workers) as pool:
        failures = [f for f in pool.map(one, calls) if f is not None]
    n_range = len(queries)
    return failures, len(calls) - n_range, n_range


# --- the PromQL compliance tester's templates (prometheus/compliance promql/) ----------------

# The tester's own variant values (promql/testcases/expand.go), in its order.
COMPLIANCE_VARIANTS = {
    "range": ["1s", "15s", "1m", "5m", "15m", "1h"],
    "offset": ["1m", "5m", "10m"],
    "simpleAggrOp": ["sum", "avg", "max", "min", "count", "stddev", "stdvar"],
    "simpleTimeAggrOp": ["sum", "avg", "max", "min", "count", "stddev", "stdvar", "absent", "last"],
    "topBottomOp": ["topk", "bottomk"],
    "quantile": ["-0.5", "0.1", "0.5", "0.75", "0.95", "0.90", "0.99", "1", "1.5"],
    "arithBinOp": ["+", "-", "*", "/", "%", "^"],
    "compBinOp": ["==", "!=", "<", ">", "<=", ">="],
    "binOp": ["+", "-", "*", "/", "%", "^", "==", "!=", "<", ">", "<=", ">="],
    "simpleMathFunc": ["abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10", "round"],
    "extrapolatedRateFunc": ["delta", "rate", "increase"],
    "clampFunc": ["clamp_min", "clamp_max"],
    "instantRateFunc": ["idelta", "irate"],
    "dateFunc": ["day_of_month", "day_of_week", "days_in_month", "hour", "minute", "month", "year"],
    "smoothingFactor": ["0.1", "0.5", "0.8"],
    "trendFactor": ["0.1", "0.5", "0.8"],
}
_PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


@dataclass(frozen=True)
class ComplianceCase:
    query: str
    should_fail: bool = False
    skip_comparison: bool = False


def expand_compliance(path: Path) -> list[ComplianceCase]:
    """Every variant of every template, as the tester expands them: the variant args vary
    left to right (first one slowest) and a placeholder without a variant arg prints as Go's
    text/template prints a missing map key, ``<no value>``."""
    out = []
    for case in yaml.safe_load(path.read_text())["test_cases"]:
        names = list(dict.fromkeys(case.get("variant_args") or []))
        for combo in itertools.product(*(COMPLIANCE_VARIANTS[n] for n in names)):
            args = dict(zip(names, combo))
            q = _PLACEHOLDER.sub(lambda m: args.get(m.group(1), "<no value>"), case["query"])
            out.append(ComplianceCase(q, bool(case.get("should_fail")),
                                      bool(case.get("skip_comparison"))))
    return out


def compliance_close(a: str, b: str) -> bool:
    """cmpopts.EquateApprox(1e-5, 0) with EquateNaNs, the tester's default tolerance:
    within 1e-5 of the smaller magnitude; infinities only equal themselves."""
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= 1e-5 * min(abs(x), abs(y))


@dataclass
class ComplianceScore:
    passed: int = 0
    total: int = 0
    unsupported: int = 0
    reference_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The tester's closing line."""
        return (f"Total: {self.passed} / {self.total} ({100 * self.passed / max(self.total, 1):.2f}%) "
                f"passed, {self.unsupported} unsupported")


def run_compliance(apis: dict[str, str], cases: list[ComplianceCase], start: float, end: float,
                   step: float = 10, workers: int = 4) -> ComplianceScore:
    """The tester's comparison: one range query per case on both; a case passes when the
    test API fails exactly when it should and otherwise answers the same matrix (labels
    exactly, tenant_id dropped as the tester's drop_result_labels tweak does for Thanos'
    external labels). A reference error on a case that should succeed aborts the real tester;
    here it is recorded in ``reference_errors`` and not counted."""
    (_, ref), (_, other) = apis.items()

    def one(c: ComplianceCase) -> tuple[str, str]:
        params = {"query": c.query, "start": start, "end": end, "step": step}
        a, b = _get(f"{ref}/query_range", params), _get(f"{other}/query_range", params)
        a_ok, b_ok = a["status"] == "success", b["status"] == "success"
        if a_ok == c.should_fail:
            d = answer_diff(a, b, compliance_close)
            return "reference", (f"{c.query!r}: reference {a.get('error') or 'succeeded'}, "
                                 + (f"promring differs: {d}" if d else "promring agrees"))
        if b_ok == c.should_fail:
            what = "unexpectedly succeeded" if b_ok else f"failed: {b.get('error')}"
            return ("unsupported" if not b_ok and "501" in str(b.get("error")) else "failed",
                    f"{c.query!r}: promring {what}")
        if c.should_fail or c.skip_comparison:
            return "passed", ""
        d = answer_diff(a, b, compliance_close)
        return ("passed", "") if d is None else ("failed", f"{c.query!r}: {d}")

    score = ComplianceScore()
    with ThreadPoolExecutor(workers) as pool:
        for kind, msg in pool.map(one, cases):
            if kind == "reference":
                score.reference_errors.append(msg)
                continue
            score.total += 1
            score.passed += kind == "passed"
            score.unsupported += kind == "unsupported"
            if kind != "passed":
                score.failures.append(msg)
    return score
