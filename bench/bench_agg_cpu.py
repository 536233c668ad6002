"""CPU, system time and page faults per query of one aggregation query (issue 13, scale rows):
``promring store`` + ``promring query`` of a checkout over bench_scale.py's blocks, the first
(cold) run and then ``--queries`` warm ones over one keep-alive connection.

Per process it prints the warm queries' CPU per query, split into user and system time, and
minor page faults per query (from /proc: steadier than wall times on a loaded machine), and
the answer's SHA-256 so runs of two checkouts can be compared byte for byte. Scale 4 against
scale 1 shows whether a cost per series grows with the data (cache misses, fresh pages).

    python bench/bench_agg_cpu.py --blocks /work/scale/s4 --hours 1
    python bench/bench_agg_cpu.py --blocks /work/scale/s4 --hours 1 --repo /work/main
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_fixed_cost import start_promring  # noqa: E402
from sidebyside import HOUR_MS, POINTS  # noqa: E402


def proc_times(pid: int) -> tuple[int, float, float]:
    """(minor faults, user s, system s) of process ``pid``."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(f[7]), int(f[11]) / tick, int(f[12]) / tick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout to run (its .venv)")
    ap.add_argument("--query", default="sum by (job) (rate(x[5m]))")
    ap.add_argument("--hours", type=int, default=1, help="query range in hours")
    ap.add_argument("--queries", type=int, default=12, help="warm queries measured")
    a = ap.parse_args()
    metas = sorted(a.blocks.glob("*/meta.json"))
    if not metas:
        sys.exit(f"no blocks under {a.blocks}: run bench_scale.py --keep {a.blocks} first")
    end_ms = json.loads(metas[0].read_text())["minTime"] + 2 * len(metas) * HOUR_MS - 30_000
    params = urlencode({"query": a.query, "start": (end_ms - a.hours * HOUR_MS) / 1000,
                        "end": end_ms / 1000, "step": a.hours * 3600 / POINTS})
    tmp = Path(tempfile.mkdtemp(prefix="bench-agg-"))
    procs: list[subprocess.Popen] = []
    try:
        port, pids = start_promring(a.repo.resolve(), a.blocks, tmp, procs)
        conn = http.client.HTTPConnection("127.0.0.1", port)

        def run() -> bytes:
            conn.request("GET", "/api/v1/query_range?" + params,
                         headers={"Accept-Encoding": "gzip"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
            return gzip.decompress(body)

        t = time.perf_counter()
        before = [proc_times(p) for p in pids]
        body = run()
        cold = [sum(x[1:]) - sum(y[1:]) for x, y in zip(map(proc_times, pids), before)]
        print(f"cold: wall {(time.perf_counter() - t) * 1e3:.0f} ms, CPU store "
              f"{cold[0] * 1e3:.0f} + query {cold[1] * 1e3:.0f} ms; answer sha256 "
              f"{hashlib.sha256(body).hexdigest()[:16]} ({len(body)} bytes)")
        for _ in range(3):
            run()
        walls = []
        before = [proc_times(p) for p in pids]
        for _ in range(a.queries):
            t = time.perf_counter()
            if run() != body:
                raise RuntimeError("a warm answer differs from the cold one")
            walls.append(time.perf_counter() - t)
        n = a.queries
        for name, x, y in zip(("store", "query"), before, map(proc_times, pids)):
            print(f"warm {name}: CPU {(y[1] + y[2] - x[1] - x[2]) / n * 1e3:.1f} ms/query = user "
                  f"{(y[1] - x[1]) / n * 1e3:.1f} + system {(y[2] - x[2]) / n * 1e3:.1f}; "
                  f"minor faults {(y[0] - x[0]) / n:.0f}/query")
        print(f"warm wall median {statistics.median(walls) * 1e3:.0f} ms; "
              f"load average {os.getloadavg()[0]:.1f}")
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
