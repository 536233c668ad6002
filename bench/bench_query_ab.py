"""Two promring checkouts' CPU per one-series query, A/B in one run (issue 13).

``promring store`` + ``promring query`` of each checkout (its own .venv) over a copy of
bench_scale.py's blocks; ``x{instance="i-00007"}`` over ``--hours``, gzip asked, one keep-alive
connection per side; rounds of ``--batch`` queries alternate between the sides and which side
goes first (a side that follows the other runs on caches the other warmed). Per side: the
querier's and the store's CPU per query (per-thread nanosecond counters, the median over the
rounds) and the wall median; the two sides' answers are compared. ``--gap-ms``: idle time before
each query, so every query starts on cold CPU caches, as a dashboard's do.

    python bench/bench_query_ab.py --blocks /work/scale/s1 --other /work/main
    python bench/bench_query_ab.py --blocks /work/scale/s1 --other /work/main --gap-ms 5 --batch 5
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_fixed_cost import QUERY, cpu_s, start_promring  # noqa: E402
from sidebyside import HOUR_MS, POINTS, stop_all  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--other", type=Path, required=True, help="the checkout to compare with")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", type=int, default=50, help="queries per side per round")
    ap.add_argument("--hours", type=int, default=1, help="query range in hours")
    ap.add_argument("--gap-ms", type=float, default=0.0, help="idle time before each query")
    a = ap.parse_args()
    metas = sorted(a.blocks.glob("*/meta.json"))
    end_ms = json.loads(metas[0].read_text())["minTime"] + 2 * len(metas) * HOUR_MS - 30_000
    path = "/api/v1/query_range?" + urlencode({
        "query": QUERY, "start": (end_ms - a.hours * HOUR_MS) / 1000, "end": end_ms / 1000,
        "step": a.hours * 3600 / POINTS})
    tmp = Path(tempfile.mkdtemp(prefix="bench-query-ab-"))
    procs: list = []
    try:
        sides = {}
        for k, repo in enumerate((REPO, a.other.resolve())):
            port, (store, query) = start_promring(repo, a.blocks, tmp / str(k), procs)
            sides[str(repo)] = dict(conn=http.client.HTTPConnection("127.0.0.1", port),
                                    pids=(query, store), query=[], store=[], wall=[], body=b"")
        order = list(sides.items())
        for r in range(a.rounds + 2):  # the first two rounds warm up
            for name, s in (order if r % 2 else order[::-1]):
                q0, s0 = map(cpu_s, s["pids"])
                for _ in range(a.batch):
                    if a.gap_ms:
                        time.sleep(a.gap_ms / 1000)
                    t = time.perf_counter()
                    s["conn"].request("GET", path, headers={"Accept-Encoding": "gzip"})
                    resp = s["conn"].getresponse()
                    s["body"] = resp.read()
                    s["wall"].append(time.perf_counter() - t)
                    if resp.status != 200:
                        raise RuntimeError(f"{name}: HTTP {resp.status}")
                q1, s1 = map(cpu_s, s["pids"])
                if r >= 2:
                    s["query"].append((q1 - q0) / a.batch)
                    s["store"].append((s1 - s0) / a.batch)
        bodies = {gzip.decompress(s["body"]) for s in sides.values()}
        for name, s in sides.items():
            print(f"{a.hours} h{f' gap {a.gap_ms:g} ms' if a.gap_ms else ''} {name}: querier CPU "
                  f"{statistics.median(s['query']) * 1e6:.0f} us, store "
                  f"{statistics.median(s['store']) * 1e6:.0f} us per query, wall median "
                  f"{statistics.median(s['wall']) * 1e3:.2f} ms")
        print(f"   answers identical: {len(bodies) == 1}")
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
