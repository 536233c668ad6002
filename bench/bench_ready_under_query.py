"""``/-/ready`` latency of ``promring up`` while heavy queries run.

Not a test: starts ``promring up`` on free loopback ports, writes ``--series`` series of one
hour of 15 s samples, then runs ``--queries`` range queries (one hour at 0.5 s steps, so
7,200 points per series of JSON) one after another in a thread while the main thread probes
``/-/ready`` back to back; prints p50/p99/max of the probes and the query durations.

    .venv/bin/python bench/bench_ready_under_query.py [--series 200] [--queries 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import PromringProcess  # noqa: E402
from rw import push  # noqa: E402


def _probe(url: str, go_on) -> list[float]:
    lat = []
    while go_on():
        t0 = time.perf_counter()
        requests.get(url, timeout=30).raise_for_status()
        lat.append(time.perf_counter() - t0)
        time.sleep(0.005)
    return sorted(lat)


def _summary(lat: list[float]) -> str:
    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(len(lat) * q))] * 1000
    return f"n={len(lat)} p50={pct(0.5):.1f}ms p99={pct(0.99):.1f}ms max={lat[-1] * 1000:.1f}ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=200)
    ap.add_argument("--queries", type=int, default=3)
    ap.add_argument("--query", default="sum by (s) (rate(heavy[5m]))")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        p = PromringProcess.up(Path(d) / "data")
        try:
            now = int(time.time()) * 1000
            ts = np.arange(now - 3_600_000, now, 15_000)
            rng = np.random.default_rng(1)
            for b in range(0, a.series, 250):
                r = push(p.write_url, [((("__name__", "heavy"), ("s", str(k))), ts,
                                        rng.random(len(ts))) for k in range(b, min(a.series, b + 250))])
                r.raise_for_status()
            durations: list[tuple[float, int]] = []

            def heavy() -> None:
                for _ in range(a.queries):
                    t0 = time.perf_counter()
                    r = requests.get(f"{p.api}/query_range", timeout=600, params={
                        "query": a.query, "start": now / 1000 - 3600, "end": now / 1000,
                        "step": "0.5"})
                    durations.append((time.perf_counter() - t0, r.status_code))

            ready = f"http://127.0.0.1:{p.http_port}/-/ready"
            idle_until = time.monotonic() + 5
            print("/-/ready idle:       " + _summary(_probe(ready, lambda: time.monotonic() < idle_until)))
            t = threading.Thread(target=heavy)
            t.start()
            lat = _probe(ready, t.is_alive)
            t.join()
            print(f"query {a.query!r} over {a.series} series x 7200 steps: "
                  + ", ".join(f"{s:.1f}s ({c})" for s, c in durations))
            print("/-/ready during it: " + _summary(lat))
        finally:
            p.stop()


if __name__ == "__main__":
    main()
