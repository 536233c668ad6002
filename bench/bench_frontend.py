"""The same Grafana-like dashboard (a few 7-day range queries) refreshed 10 times through
``promring query-frontend`` with an in-memory results cache, over a store gateway + querier on
a week of daily blocks: the first (cold) refresh's latency against the later (warm) ones, and
the querier's own latency for reference.

    python bench/bench_frontend.py --series 200 --refreshes 10
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
sys.path.insert(0, str(REPO))

from harness import (free_port, promring_cmd, start_process, stop_process,  # noqa: E402
                     store_and_query)
from weekdata import DAY_MS, write_week  # noqa: E402

DASHBOARD = [("sum by (job) (rate(m[5m]))", 300), ("max by (job) (m)", 300),
             ("sum(rate(m[1h]))", 3600), ("topk(3, rate(m[10m]))", 600)]


def refresh(base: str, now_s: float) -> float:
    """One dashboard refresh at ``now_s`` (its panels one after another, as a page load); seconds."""
    t0 = time.perf_counter()
    for q, step in DASHBOARD:
        r = requests.get(base + "/api/v1/query_range", timeout=300, params={
            "query": q, "start": now_s - 7 * 86400, "end": now_s, "step": step})
        r.raise_for_status()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=200)
    ap.add_argument("--refreshes", type=int, default=10)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        now_ms = int(time.time() * 1000)
        write_week(tmp / "bucket", now_ms, a.series)
        procs, api = store_and_query(tmp, f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
        qbase = api.removesuffix("/api/v1")
        port = free_port()
        fe = start_process(promring_cmd() + [
            "query-frontend", "--http-address", f"127.0.0.1:{port}",
            "--query-frontend.downstream-url", qbase, "--query-range.response-cache-config",
            "type: IN-MEMORY\nconfig:\n  max_size: 512MB\n"],
            f"http://127.0.0.1:{port}/-/ready", tmp / "frontend.log")
        try:
            base = f"http://127.0.0.1:{port}"
            direct = [refresh(qbase, time.time()) for _ in range(3)]
            times = []
            for _ in range(a.refreshes):
                times.append(refresh(base, time.time()))
                time.sleep(1)  # refreshes a second apart: each asks a slightly later window
        finally:
            for p in [fe, *procs]:
                stop_process(p)
    first, later = times[0], statistics.median(times[1:])
    print(f"series={a.series} days=7 panels={len(DASHBOARD)} refreshes={a.refreshes}")
    print(f"querier directly (median of 3): {statistics.median(direct):.3f}s")
    print(f"frontend first refresh: {first:.3f}s  later refreshes (median): {later:.3f}s")
    print(f"first / later: {first / later:.1f}x   querier / later: "
          f"{statistics.median(direct) / later:.1f}x")


if __name__ == "__main__":
    main()
