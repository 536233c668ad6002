"""Event-loop work per query in ``promring query`` (issue 13): loop iterations, tasks, timers,
futures and callbacks per one-series query, counted inside the querier process.

Every iteration of the loop, task, timer and future of a query costs CPU on top of the query's
own work (and wakes the process with cold CPU caches), so the querier's fixed cost is counted
here, not timed: ``promring store`` + ``promring query`` of a checkout over a copy of
bench_scale.py's blocks, the querier run under counters of asyncio's BaseEventLoop methods;
``--queries`` one-series range queries over one keep-alive connection (``--cold``: a new series
every query), then the counts per query. ``--other DIR`` counts a second checkout (its own
.venv) too, for a before/after in one run.

    python bench/bench_loop_wakeups.py --blocks /work/scale/s1 --other /work/main
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
COUNTED = ("_run_once", "create_task", "create_future", "call_soon", "call_at")


def counted_query(argv: list[str]) -> None:
    """``promring query argv`` with counters on the loop; SIGUSR1 writes them (and resets)."""
    import asyncio.base_events as be
    counts: collections.Counter = collections.Counter()

    def wrap(name: str):
        orig = getattr(be.BaseEventLoop, name)

        def counted(self, *a, **kw):
            counts[name] += 1
            return orig(self, *a, **kw)
        setattr(be.BaseEventLoop, name, counted)
    for name in COUNTED:
        wrap(name)

    def dump(*_) -> None:
        sys.stderr.write("COUNTS " + json.dumps(counts) + "\n")
        sys.stderr.flush()
        counts.clear()
    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["promring", "query"] + argv
    from promring.cli import main
    main()


def measure(repo: Path, blocks: Path, work: Path, queries: int, hours: int, cold: bool) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "bench"))
    from harness import free_port, wait_ready
    from sidebyside import HOUR_MS, POINTS
    metas = sorted(blocks.glob("*/meta.json"))
    end_ms = json.loads(metas[0].read_text())["minTime"] + 2 * len(metas) * HOUR_MS - 30_000
    shutil.copytree(blocks, work / "bucket")
    (work / "objstore.yml").write_text(
        f"type: FILESYSTEM\nconfig:\n  directory: {work / 'bucket'}\n")
    sg, sh, qh = free_port(), free_port(), free_port()
    log = open(work / "promring.log", "ab")
    store = subprocess.Popen([str(repo / ".venv/bin/promring"), "store", "--data-dir",
                              str(work / "store"), "--objstore.config-file",
                              str(work / "objstore.yml"), "--grpc-address", f"127.0.0.1:{sg}",
                              "--http-address", f"127.0.0.1:{sh}", "--log.level", "warn"],
                             cwd=repo, stdout=log, stderr=log)
    errs = open(work / "query.err", "w+")
    query = None
    try:
        wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=600, proc=store)
        query = subprocess.Popen([str(repo / ".venv/bin/python"), __file__, "--counted-query",
                                  "--endpoint", f"127.0.0.1:{sg}", "--grpc-address", "127.0.0.1:0",
                                  "--http-address", f"127.0.0.1:{qh}", "--log.level", "warn"],
                                 cwd=repo, stderr=errs)
        wait_ready(f"http://127.0.0.1:{qh}/-/ready", timeout=60, proc=query)
        conn = http.client.HTTPConnection("127.0.0.1", qh)

        def ask(i: int) -> None:
            series = 'x{instance="i-%05d"}' % (100 + i) if cold else 'x{instance="i-00007"}'
            conn.request("GET", "/api/v1/query_range?" + urlencode(
                {"query": series, "start": (end_ms - hours * HOUR_MS) / 1000,
                 "end": end_ms / 1000, "step": hours * 3600 / POINTS}),
                headers={"Accept-Encoding": "gzip"})
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status
        for i in range(50):  # warm up (cold: other series than the measured ones)
            ask(queries + i)
        for _ in range(2):  # counts written before and after the measured queries
            time.sleep(0.3)
            query.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            if _ == 0:
                for i in range(queries):
                    ask(i)
        errs.seek(0)
        lines = [ln for ln in errs.read().splitlines() if ln.startswith("COUNTS ")]
        got = json.loads(lines[-1].split(" ", 1)[1])
        return {k: got.get(k, 0) / queries for k in COUNTED}
    finally:
        for p in (query, store):
            if p is not None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--counted-query":
        counted_query(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--other", type=Path, help="a second promring checkout to count")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--hours", type=int, default=1, help="query range in hours")
    ap.add_argument("--cold", action="store_true", help="a series never asked before each time")
    a = ap.parse_args()
    for repo in [REPO] + ([a.other.resolve()] if a.other else []):
        work = Path(tempfile.mkdtemp(prefix="bench-wakeups-"))
        try:
            per = measure(repo, a.blocks, work, a.queries, a.hours, a.cold)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"{repo}: per query " + ", ".join(f"{k.lstrip('_')} {v:.2f}" for k, v in per.items()))


if __name__ == "__main__":
    main()
