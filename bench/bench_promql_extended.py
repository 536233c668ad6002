"""What Prometheus 3.14's extended PromQL syntax costs in the engine, in process: each query
with anchored/smoothed selectors or a fill modifier against its plain counterpart, over the
same in-memory counters (no storage or HTTP in the timing).

    python bench/bench_promql_extended.py --series 2000 --repeat 3

Prints a markdown table of best-of-``repeat`` times and the ratio to the plain query.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from querier.promql import Engine, EngineOptions, Series  # noqa: E402
from querier.promql.types import PROMQL_FEATURES  # noqa: E402
from receiver.tsdb.labels import matches_all  # noqa: E402

PAIRS = [
    ("rate(c_total[5m])", "rate(c_total[5m] anchored)"),
    ("rate(c_total[5m])", "rate(c_total[5m] smoothed)"),
    ("increase(c_total[5m])", "increase(c_total[5m] smoothed)"),
    ("changes(c_total[5m])", "changes(c_total[5m] anchored)"),
    ("c_total", "c_total smoothed"),
    ("c_total + c_total", "c_total + fill(0) c_total"),
]
SCRAPE_MS, HOURS, STEP_MS = 15_000, 6, 30_000


class Store:
    def __init__(self, n: int) -> None:
        ts = np.arange(0, HOURS * 3_600_000, SCRAPE_MS, dtype=np.int64)
        rng = np.random.default_rng(1)
        self.series = [Series((("__name__", "c_total"), ("i", str(i))), ts,
                              np.cumsum(rng.integers(0, 5, len(ts))).astype(np.float64)) for i in range(n)]

    def select(self, matchers, mint, maxt):
        return [s for s in self.series if matches_all(s.labels, matchers)]


def best(engine: Engine, store: Store, query: str, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        engine.range(store, query, 3_600_000, HOURS * 3_600_000, STEP_MS)
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    store = Store(a.series)
    engine = Engine(EngineOptions(features=PROMQL_FEATURES, max_samples=10**9))
    print("| query | plain | extended | ratio |\n|---|---|---|---|")
    for plain, ext in PAIRS:
        p, e = best(engine, store, plain, a.repeat), best(engine, store, ext, a.repeat)
        print(f"| `{ext}` | {p:.2f} s | {e:.2f} s | {e / p:.2f}× |")


if __name__ == "__main__":
    main()
