"""Query latency, side by side: a dashboard-like set of range queries against Prometheus 2.42
and against ``promring up`` (through its HTTP API, so including the querier's StoreAPI hop to
the ingestor), over the same demo_* data pushed to both by remote write.

    python bench/bench_query.py --instances 20 --repeat 5

Prints a markdown table of median latencies and promring/Prometheus ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO))

from harness import PrometheusProcess, PromringProcess  # noqa: E402
from rw import push  # noqa: E402
from test_promql_differential import INTERVAL_MS, ROUNDS, make_data  # noqa: E402

DASHBOARD = [
    ("cpu by instance", 'sum by (instance) (rate(demo_cpu_usage_seconds_total[5m]))'),
    ("p99 latency by path",
     'histogram_quantile(0.99, sum by (le, path) (rate(demo_api_request_duration_seconds_bucket[5m])))'),
    ("memory by type", 'sum by (type) (demo_memory_usage_bytes)'),
    ("memory utilisation", '1 - sum by (instance) (demo_memory_usage_bytes{type="free"}) '
                           '/ sum by (instance) (demo_memory_usage_bytes)'),
    ("error ratio", 'sum(rate(demo_api_request_duration_seconds_count{status="500"}[5m])) '
                    '/ sum(rate(demo_api_request_duration_seconds_count[5m]))'),
    ("top 5 shippers", 'topk(5, rate(demo_items_shipped_total[5m]))'),
    ("disk max 10m", 'max_over_time(demo_disk_usage_bytes[10m])'),
    ("avg latency", 'sum by (path) (rate(demo_api_request_duration_seconds_sum[5m])) '
                    '/ sum by (path) (rate(demo_api_request_duration_seconds_count[5m]))'),
    ("smoothed cpu (subquery)", 'avg_over_time(sum by (mode) (rate(demo_cpu_usage_seconds_total[1m]))[5m:30s])'),
    ("raw buckets", 'demo_api_request_duration_seconds_bucket{path="/api/foo"}'),
]


def load(urls: list[str], data, t0: int) -> None:
    for lo in range(0, ROUNDS, 25):  # round by round, time order across all series
        batch = []
        for lbls, ts, vals in data:
            sel = [(t, v) for t, v in zip(ts, vals) if t0 + lo * INTERVAL_MS <= t < t0 + (lo + 25) * INTERVAL_MS]
            if sel:
                batch.append((lbls, [t for t, _ in sel], [v for _, v in sel]))
        for url in urls:
            r = push(url, batch)
            r.raise_for_status()


def timed(sess: requests.Session, api: str, q: str, start: float, end: float, step: int, repeat: int) -> float:
    params = {"query": q, "start": start, "end": end, "step": step}
    r = sess.get(f"{api}/query_range", params=params, timeout=120)  # warm-up, and a sanity check
    r.raise_for_status()
    lat = []
    for _ in range(repeat):
        t = time.perf_counter()
        sess.get(f"{api}/query_range", params=params, timeout=120).raise_for_status()
        lat.append(time.perf_counter() - t)
    return statistics.median(lat) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--step", type=int, default=15, help="range query step, seconds")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-query-"))
    now_ms = int(time.time() * 1000)
    base = now_ms // 60_000 * 60_000 - ROUNDS * INTERVAL_MS // 60_000 * 60_000
    t0 = base + 3_300
    instances = [f"demo.promlabs.com:{10000 + i}" for i in range(a.instances)]
    data = make_data(t0, instances)
    samples = sum(len(ts) for _, ts, _ in data)
    prom = PrometheusProcess(tmp / "prom", "global: {}\n", "--web.enable-remote-write-receiver").start()
    pr = PromringProcess.up(tmp / "promring" / "data")
    try:
        load([f"http://127.0.0.1:{prom.port}/api/v1/write", pr.write_url], data, t0)
        time.sleep(1.0)
        start, end = (base + 20 * 60_000 + 17_000) / 1000, (base + 49 * 60_000 + 17_000) / 1000
        sess = requests.Session()
        rows = []
        for name, q in DASHBOARD:
            p_ms = timed(sess, prom.api, q, start, end, a.step, a.repeat)
            o_ms = timed(sess, pr.api, q, start, end, a.step, a.repeat)
            rows.append((name, p_ms, o_ms))
        steps = int((end - start) // a.step) + 1
        print(f"\n{len(data)} series, {samples} samples; range queries over 29 min at {a.step}s step "
              f"({steps} steps), median of {a.repeat}\n")
        print("| query | Prometheus 2.42 ms | promring ms | ratio (promring/Prometheus) |")
        print("|---|---|---|---|")
        for name, p_ms, o_ms in rows:
            print(f"| {name} | {p_ms:.1f} | {o_ms:.1f} | {o_ms / p_ms:.2f}x |")
        tp, to = sum(r[1] for r in rows), sum(r[2] for r in rows)
        print(f"| **total** | {tp:.1f} | {to:.1f} | {to / tp:.2f}x |")
    finally:
        pr.stop()
        prom.stop()


if __name__ == "__main__":
    main()
