"""Differential test: the same demo_* data in Prometheus 2.42 and in ``promring up``, and a broad
set of instant and range queries must give identical answers.

Both servers receive the data by remote write, round by round in time order. Prometheus 2.x
closes range and lookback windows on the left where 3.x (our semantics) leaves them open, so
samples sit at *.3 s while every evaluation time, range, offset and subquery step is a whole
number of seconds (and evaluation times are 17 s past a minute, off every subquery grid): no
window edge ever lands on a sample. Counters exist before every rate window starts (2.42
extrapolates counters born inside a window differently) and holt_winters (renamed in 3.x) and
functions newer than 2.42 are not queried. promring's external label tenant_id is ignored when
comparing; queries match aggregated sides with on(...) rather than ignoring(...), since that
extra label is part of every promring series (as external labels are in Thanos).
"""
from __future__ import annotations

import itertools
import math
import random
import time
from pathlib import Path

import requests
import yaml

from harness import PrometheusProcess, PromringProcess
from rw import push

COMPLIANCE = Path(__file__).resolve().parents[3] / "shared/testdata/compliance/promql-test-queries.yml"
INTERVAL_MS = 15_000
ROUNDS = 200  # 50 minutes of samples
INSTANCES = [f"demo.promlabs.com:{p}" for p in (10000, 10001, 10002)]

VARIANTS = {
    "simpleAggrOp": ["sum", "avg", "max", "min", "count", "stddev", "stdvar", "group"],
    "topBottomOp": ["topk", "bottomk"],
    "quantile": ["-0.5", "0.1", "0.5", "0.75", "0.95", "0.99", "1", "1.5"],
    "binOp": ["+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<="],
    "compBinOp": ["==", "!=", ">", "<", ">=", "<="],
    "arithBinOp": ["+", "-", "*", "/", "%", "^"],
    "simpleTimeAggrOp": ["sum", "avg", "max", "min", "count", "stddev", "stdvar", "last", "present"],
    "range": ["1m", "5m", "15m"],
    "offset": ["1m", "5m", "10m"],
    "simpleMathFunc": ["abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10", "round"],
    "extrapolatedRateFunc": ["delta", "rate", "increase"],
    "clampFunc": ["clamp_min", "clamp_max"],
    "dateFunc": ["day_of_month", "day_of_week", "days_in_month", "hour", "minute", "month", "year"],
    "instantRateFunc": ["idelta", "irate"],
}

BUCKETS = ["0.0002", "0.0004", "0.0008", "0.0016", "0.0032", "0.0064", "0.0128", "0.0256", "0.0512", "0.1024",
           "+Inf"]


def make_data(t0: int, instances: list[str] = INSTANCES) -> list[tuple[tuple, list[int], list[float]]]:
    """demo_* series like the PromLabs demo service, deterministic."""
    rnd = random.Random(42)
    ts = [t0 + i * INTERVAL_MS for i in range(ROUNDS)]
    out: list = []

    def add(name: str, vals: list[float], **lb) -> None:
        lbls = tuple(sorted({"__name__": name, "job": "demo", **lb}.items()))
        keep = [(t, v) for t, v in zip(ts, vals) if v is not None]
        out.append((lbls, [t for t, _ in keep], [v for _, v in keep]))

    def walk(start: float, step: float) -> list[float]:
        v, r = start, []
        for _ in ts:
            v = max(0.0, v + rnd.gauss(0, step))
            r.append(round(v, 3))
        return r

    def counter(rate: float, reset_at: int | None = None) -> list[float]:
        v, r = rnd.uniform(100, 1000), []
        for i, _ in enumerate(ts):
            if i == reset_at:
                v = 0.0
            v += rnd.uniform(0.2, 1.8) * rate
            r.append(round(v, 4))
        return r

    for k, inst in enumerate(instances):
        for typ, base in (("free", 2e9), ("used", 6e9), ("buffers", 3e8), ("cached", 1.5e9)):
            add("demo_memory_usage_bytes", walk(base * (1 + 0.1 * k) + rnd.uniform(0, 1e6), 1e7), instance=inst, type=typ)
        add("demo_num_cpus", [float((4, 8, 2)[k % 3])] * ROUNDS, instance=inst)
        for mode, rate in (("user", 3.0), ("system", 1.0), ("idle", 10.0)):
            add("demo_cpu_usage_seconds_total", counter(rate, reset_at=120 if (k, mode) == (1, "user") else None),
                instance=inst, mode=mode)
        disk = rnd.uniform(1e10, 2e10)
        add("demo_disk_usage_bytes", [round(disk + i * 1e5 + rnd.uniform(-5e4, 5e4), 1) for i in range(ROUNDS)],
            instance=inst)
        last, batch = (t0 - 60_000) / 1000.0, []
        for i, t in enumerate(ts):
            if i % 23 == 7:
                last = t / 1000.0
            batch.append(last)
        add("demo_batch_last_success_timestamp_seconds", batch, instance=inst)
        add("demo_intermittent_metric", [float(i) if (i // 20) % 3 == 0 else None for i in range(ROUNDS)],
            instance=inst)
        add("demo_items_shipped_total", counter(5.0), instance=inst)
        for method, path, status in (("GET", "/api/foo", "200"), ("POST", "/api/bar", "200"), ("GET", "/api/foo", "500")):
            lb = dict(instance=inst, method=method, path=path, status=status)
            cum = [0.0] * len(BUCKETS)
            rows: list[list[float]] = [[] for _ in BUCKETS]
            total_sum, sums = rnd.uniform(0, 10), []
            for _ in ts:
                n = rnd.randint(5, 40)
                obs = [rnd.lognormvariate(-5.0 + (k % 3) * 0.3, 1.0) for _ in range(n)]
                total_sum += sum(obs)
                for b, le in enumerate(BUCKETS):
                    cum[b] += sum(1 for o in obs if le == "+Inf" or o <= float(le))
                    rows[b].append(cum[b])
                sums.append(round(total_sum, 6))
            for le, row in zip(BUCKETS, rows):
                add("demo_api_request_duration_seconds_bucket", row, le=le, **lb)
            add("demo_api_request_duration_seconds_sum", sums, **lb)
            add("demo_api_request_duration_seconds_count", rows[-1], **lb)
    return out


def compliance_queries() -> list[str]:
    """The compliance tester's templates, expanded with our variant values; failing ones skipped."""
    if not COMPLIANCE.is_file():
        return []
    doc = yaml.safe_load(COMPLIANCE.read_text())
    out: list[str] = []
    for case in doc["test_cases"]:
        if case.get("should_fail"):
            continue
        q = case["query"]
        args = case.get("variant_args") or []
        for combo in itertools.product(*(VARIANTS[a] for a in args)):
            s = q
            for a, v in zip(args, combo):
                s = s.replace("{{.%s}}" % a, v)
            out.append(s)
    return out


def own_queries(at_s: int) -> list[str]:
    """Our additions: offsets, @, subqueries, set operators, matching modes, histogram_quantile."""
    m, c, h = "demo_memory_usage_bytes", "demo_cpu_usage_seconds_total", "demo_api_request_duration_seconds"
    q = [
        f"{m} @ {at_s}", f"{m} @ start()", f"{m} @ end()", f"rate({c}[5m] @ {at_s})",
        f"rate({c}[5m] @ end() offset 2m)", f"sum by (instance) ({m} @ start())",
        f"{m} offset 3m - {m}", f"{m} offset -2m", f"avg_over_time({m}[10m] offset 7m)",
        f"{m} @ {at_s} offset 1m", f"max_over_time({m}[5m] @ {at_s - 300})",
        f"max_over_time(rate({c}[1m])[10m:1m])", f"min_over_time(sum by (instance) ({m})[7m:30s])",
        f"avg_over_time(deriv({m}[2m])[5m:20s])", f"sum_over_time({m}[3m:1m] offset 2m)",
        f"rate({c}[5m:30s])", f"last_over_time({m}[5m:1m] @ {at_s})", f"count_over_time({m}[6m:2m])",
        f"max_over_time((sum by (instance) (rate({c}[2m])))[10m:2m])",
        f"{m} and {m}{{type=\"free\"}}", f"{m} or demo_num_cpus", f"{m} unless {m}{{type=~\"free|used\"}}",
        f"{m} and on(instance) demo_num_cpus > 3", f"demo_num_cpus unless on(instance) {m}{{type=\"nope\"}}",
        f"{m} / ignoring(type) group_left demo_num_cpus", f"demo_num_cpus * on(instance) group_right {m}",
        f"{m} > bool on(instance, job) group_left sum by (instance, job) ({m}) / 4",
        f"sum by (instance) ({m}) / on(instance) group_left(job) demo_num_cpus",
        f"{c} / on(instance, mode) group_left sum by (instance, mode) ({c})",
        f"histogram_quantile(0.9, sum by (le) (rate({h}_bucket[5m])))",
        f"histogram_quantile(0.5, sum by (le, instance) (rate({h}_bucket[2m])))",
        f"histogram_quantile(0.99, sum by (le, path) (increase({h}_bucket[10m])))",
        f"histogram_quantile(0.75, rate({h}_bucket{{status=\"500\"}}[5m]))",
        f"histogram_quantile(0.25, {h}_bucket)",
        f"sum by (path) (rate({h}_sum[5m])) / sum by (path) (rate({h}_count[5m]))",
        f"count_values(\"cpus\", demo_num_cpus)", f"count by (instance) ({m} > 1e9)",
        f"topk(2, sum by (instance) ({m}))", f"bottomk by (instance) (1, {m})",
        f"quantile by (type) (0.3, {m})", f"stddev by (type) ({m})", f"absent({m}{{type=\"nope\"}})",
        f"absent_over_time({m}{{type=\"nope\"}}[5m])", "absent_over_time(demo_intermittent_metric[1m])",
        "demo_intermittent_metric", "count_over_time(demo_intermittent_metric[10m])",
        f"label_join({m}, \"it\", \"/\", \"instance\", \"type\")",
        f"label_replace(rate({c}[5m]), \"m\", \"$1\", \"mode\", \"(.).*\")",
        f"sort_desc(sum by (type) ({m}))", f"sort({m})", f"scalar(sum(demo_num_cpus)) * {m}",
        f"vector(scalar(count({m})))", f"time() - timestamp({m})", f"timestamp({m} offset 1m)",
        f"changes(demo_batch_last_success_timestamp_seconds[15m])",
        f"resets({c}[15m])", f"idelta({m}[2m])", f"irate({c}[1m] offset 30s)",
        f"predict_linear(demo_disk_usage_bytes[10m], 3600)", f"deriv(demo_disk_usage_bytes[5m] offset 5m)",
        f"quantile_over_time(0.9, {m}[10m])", f"stddev_over_time({m}[5m])", f"stdvar_over_time({m}[5m])",
        f"present_over_time({m}[1m])", f"delta({m}[7m])", f"increase(demo_items_shipped_total[10m])",
        f"sgn({m} - {m} offset 1m)", f"sin(demo_num_cpus) + cos(demo_num_cpus) * tan(demo_num_cpus)",
        f"atanh(demo_num_cpus / 10)", f"asin(demo_num_cpus / 10) + acos(demo_num_cpus / 10)",
        f"sinh(demo_num_cpus) - cosh(demo_num_cpus) + tanh(demo_num_cpus)", f"asinh(demo_num_cpus) + acosh(demo_num_cpus)",
        f"deg(atan(demo_num_cpus)) + rad(demo_num_cpus) + pi()", f"demo_num_cpus atan2 {m}",
        f"round({m} / 1e6, 0.5)", f"clamp({m}, 1e9, 5e9)", f"-{m} % 7", f"2 ^ demo_num_cpus",
        f"{m} == bool on(instance, type, job) ({m} offset 5m)", f"sum({m}) by (instance) > 1e10",
        f"1 - (sum without (type) ({m}{{type=\"free\"}}) / sum without (type) ({m}))",
        f"group by (instance) ({m})", f"count without (instance, type) ({m})", f"avg without () ({m})",
        f"sum(rate({c}[5m])) by (mode) / ignoring(mode) group_left sum(rate({c}[5m]))",
        f"max by (instance) (max_over_time({m}[5m])) - min by (instance) (min_over_time({m}[5m]))",
        f"minute(demo_batch_last_success_timestamp_seconds)", f"hour() + minute() / 60",
        f"{m} offset 1m > bool {m}", f"rate({c}[5m]) > 0.5", f"(rate({c}[5m]) > 0.5) * 100",
        f"sum by (job) (rate({c}[5m] offset 10m))", f"topk(3, rate({c}[1m]) @ end())",
    ]
    return [x for x in q if x]


def _close(a: str, b: str) -> bool:
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if x == y:
        return True
    return abs(x - y) <= 1e-6 * max(abs(x), abs(y)) or abs(x - y) < 1e-9


def _norm(result, kind: str) -> dict:
    out = {}
    for s in result:
        lbls = tuple(sorted((k, v) for k, v in s["metric"].items() if k != "tenant_id"))
        out[lbls] = [s["value"]] if kind == "vector" else s["values"]
    return out


def diff(prom: dict, ours: dict) -> str | None:
    """None when the two API answers agree, else a short description."""
    if prom["status"] != "success":
        if ours["status"] == "success":
            return f"Prometheus failed ({prom.get('error')}), promring succeeded"
        return None if prom.get("errorType") == ours.get("errorType") else \
            f"errorType {prom.get('errorType')} vs {ours.get('errorType')}"
    if ours["status"] != "success":
        return f"promring failed: {ours.get('error')}"
    pk, ok = prom["data"]["resultType"], ours["data"]["resultType"]
    if pk != ok:
        return f"resultType {pk} vs {ok}"
    pr, orr = prom["data"]["result"], ours["data"]["result"]
    if pk == "scalar":
        same = pr[0] == orr[0] and _close(pr[1], orr[1])
        return None if same else f"scalar {pr} vs {orr}"
    a, b = _norm(pr, pk), _norm(orr, pk)
    if set(a) != set(b):
        return f"series differ: only Prometheus {sorted(set(a) - set(b))[:2]}, only promring {sorted(set(b) - set(a))[:2]}"
    for k, pts in a.items():
        qs = b[k]
        if [p[0] for p in pts] != [p[0] for p in qs]:
            return f"{k}: timestamps {[p[0] for p in pts][:5]} vs {[p[0] for p in qs][:5]}"
        for p, q in zip(pts, qs):
            if not _close(p[1], q[1]):
                return f"{k}@{p[0]}: {p[1]} vs {q[1]}"
    return None


def compare_all(sess: requests.Session, apis: dict[str, str], queries: list[str],
                instants: list[float], start: float, end: float,
                instant_offsets: tuple[int, ...] = (0, 2)) -> tuple[list[str], int, int]:
    """Every query as instant queries (at instants picked round-robin) and, unless it is a
    string literal, as a range query on both APIs (reference first); returns the mismatches
    and the numbers of instant and range evaluations."""
    (ref, ref_api), (other, other_api) = apis.items()
    failures, n_instant, n_range = [], 0, 0
    for i, q in enumerate(queries):
        calls = [("query", {"query": q, "time": instants[(i + k) % len(instants)]})
                 for k in instant_offsets]
        if not q.strip().startswith('"'):
            calls.append(("query_range", {"query": q, "start": start, "end": end, "step": 60}))
        for path, params in calls:
            a = sess.get(f"{ref_api}/{path}", params=params, timeout=60).json()
            b = sess.get(f"{other_api}/{path}", params=params, timeout=60).json()
            if path == "query":
                n_instant += 1
            else:
                n_range += 1
            d = diff(a, b)
            if d is not None:
                failures.append(f"{path} {q!r} @ {params.get('time', params.get('start'))}: {d}")
    return failures, n_instant, n_range


def test_answers_equal_prometheus(tmp_path):
    now_ms = int(time.time() * 1000)
    base = now_ms // 60_000 * 60_000 - ROUNDS * INTERVAL_MS // 60_000 * 60_000
    t0 = base + 3_300
    data = make_data(t0)
    prom = PrometheusProcess(tmp_path / "prom", "global: {}\n", "--web.enable-remote-write-receiver",
                             "--storage.tsdb.retention.time=10y").start()
    pr = PromringProcess.up(tmp_path / "promring" / "data")
    try:
        targets = [f"http://127.0.0.1:{prom.port}/api/v1/write", pr.write_url]
        for lo in range(0, ROUNDS, 25):  # round by round, in time order across all series
            batch = []
            for lbls, ts, vals in data:
                sel = [(t, v) for t, v in zip(ts, vals) if t0 + lo * INTERVAL_MS <= t < t0 + (lo + 25) * INTERVAL_MS]
                if sel:
                    batch.append((lbls, [t for t, _ in sel], [v for _, v in sel]))
            for url in targets:
                r = push(url, batch)
                assert r.status_code in (200, 204), (url, r.status_code, r.text)
        apis = {"prometheus": prom.api, "promring": pr.api}
        sess = requests.Session()
        probe = {"query": "count({job=\"demo\"})", "time": (base + 49 * 60_000 + 17_000) / 1000}
        deadline = time.time() + 30
        while True:
            got = [sess.get(f"{a}/query", params=probe, timeout=30).json()["data"]["result"] for a in apis.values()]
            if got[0] and got[1] and got[0][0]["value"][1] == got[1][0]["value"][1]:
                break
            assert time.time() < deadline, f"data not visible in both: {got}"
            time.sleep(0.2)

        instants = [(base + m * 60_000 + 17_000) / 1000 for m in (30, 36, 41, 45, 49)]
        at_s = int(base / 1000) + 35 * 60 + 17
        queries = list(dict.fromkeys(compliance_queries() + own_queries(at_s)))
        start, end = (base + 30 * 60_000 + 17_000) / 1000, (base + 49 * 60_000 + 17_000) / 1000
        failures, n_instant, n_range = compare_all(sess, apis, queries, instants, start, end)
        print(f"differential: {len(queries)} queries, {n_instant} instant + {n_range} range evaluations, "
              f"{len(failures)} mismatches")
        assert len(queries) >= 300
        assert not failures, f"{len(failures)} of {n_instant + n_range} differ:\n" + "\n".join(failures[:40])
    finally:
        pr.stop()
        prom.stop()
