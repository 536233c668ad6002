"""Store gateway query latency, side by side with Prometheus 2.42 serving the same blocks.

Blocks are made by promtool from generated OpenMetrics; Prometheus gets them in its data dir,
promring gets them in a filesystem bucket behind `promring store` + `promring query`. Cold = the
first run of each query after start (empty caches); warm = median of the next five.

    python bench/bench_store.py --series 2000
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import PrometheusProcess, free_port, promring_cmd, wait_ready  # noqa: E402

HOUR = 3_600_000
QUERIES = [
    ("one series", 'bench_requests_total{series="7"}'),
    ("rate, all series", "rate(bench_requests_total[5m])"),
    ("sum(rate)", "sum(rate(bench_requests_total[5m]))"),
    ("max by job", "max by (job) (bench_gauge)"),
    ("avg_over_time", 'avg_over_time(bench_gauge{job="j3"}[10m])'),
]


def openmetrics(path: Path, n_series: int, t0: int, hours: int, step_ms: int) -> int:
    rng = np.random.default_rng(9)
    ts = np.arange(t0, t0 + hours * HOUR, step_ms)
    with open(path, "w") as f:
        f.write("# TYPE bench_requests counter\n# TYPE bench_gauge gauge\n")
        counters = np.cumsum(rng.integers(0, 20, (n_series, len(ts))), axis=1)
        gauges = np.round(rng.normal(100, 15, (n_series, len(ts))), 2)
        for j, t in enumerate(ts):
            tsec = f"{t / 1000:.3f}"
            for i in range(n_series):
                f.write(f'bench_requests_total{{job="j{i % 10}",series="{i}"}} {counters[i, j]} {tsec}\n')
                f.write(f'bench_gauge{{job="j{i % 10}",series="{i}"}} {gauges[i, j]} {tsec}\n')
        f.write("# EOF\n")
    return 2 * n_series * len(ts)


def timed(url: str, params: dict) -> float:
    t = time.perf_counter()
    r = requests.get(url, params=params, timeout=300)
    dt = time.perf_counter() - t
    r.raise_for_status()
    assert r.json()["status"] == "success"
    return dt


def measure(api: str, params_for) -> dict:
    out = {}
    for name, q in QUERIES:
        p = params_for(q)
        cold = timed(f"{api}/query_range", p)
        warm = statistics.median(timed(f"{api}/query_range", p) for _ in range(5))
        out[name] = (cold, warm)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--hours", type=int, default=2)
    ap.add_argument("--step-ms", type=int, default=15_000)
    a = ap.parse_args()
    t0 = (int(time.time() * 1000) // (2 * HOUR) - 3) * 2 * HOUR
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = openmetrics(tmp / "data.om", a.series, t0, a.hours, a.step_ms)
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(tmp / "data.om"),
                        str(tmp / "blocks")], check=True, capture_output=True)
        size = sum(f.stat().st_size for f in (tmp / "blocks").rglob("*") if f.is_file())
        params_for = lambda q: {"query": q, "start": (t0 + 10 * 60_000) / 1000 + 0.5,
                                "end": (t0 + a.hours * HOUR) / 1000 - 0.5, "step": 60}

        prom = PrometheusProcess(tmp / "prom", "global: {}\n", "--storage.tsdb.retention.time=10y")
        shutil.copytree(tmp / "blocks", tmp / "prom" / "tsdb")
        prom.start()
        try:
            theirs = measure(prom.api, params_for)
        finally:
            prom.stop()

        shutil.copytree(tmp / "blocks", tmp / "bucket")
        (tmp / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
        sg, sh, qh = free_port(), free_port(), free_port()
        procs = []
        try:
            procs.append(subprocess.Popen(promring_cmd() + [
                "store", "--data-dir", str(tmp / "store"), "--objstore.config-file", str(tmp / "objstore.yml"),
                "--grpc-address", f"127.0.0.1:{sg}", "--http-address", f"127.0.0.1:{sh}", "--log.level", "warn"]))
            wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=120, proc=procs[-1])
            procs.append(subprocess.Popen(promring_cmd() + [
                "query", "--endpoint", f"127.0.0.1:{sg}", "--grpc-address", "127.0.0.1:0",
                "--http-address", f"127.0.0.1:{qh}", "--log.level", "warn"]))
            wait_ready(f"http://127.0.0.1:{qh}/-/ready", timeout=60, proc=procs[-1])
            ours = measure(f"http://127.0.0.1:{qh}/api/v1", params_for)
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
    print(f"\n{a.series * 2} series, {n:,} samples in {a.hours}h of promtool-made blocks ({size / 1e6:.1f} MB); "
          f"range queries over the whole span at 60 s steps\n")
    print("| query | promring cold | Prometheus cold | promring warm | Prometheus warm | warm ratio |")
    print("|---|---|---|---|---|---|")
    for name, _ in QUERIES:
        oc, ow = ours[name]
        tc, tw = theirs[name]
        print(f"| {name} | {oc * 1000:.0f} ms | {tc * 1000:.0f} ms | {ow * 1000:.0f} ms | {tw * 1000:.0f} ms "
              f"| {ow / tw:.2f}x |")


if __name__ == "__main__":
    main()
