"""Out-of-order writes (--tsdb.out-of-order.time-window) against in-order ones, per tenant.

One request of N series x 1 sample each is written in order, then late (into an empty
out-of-order head), then late again (into one holding N samples); medians over the runs, and
each late write as a ratio of the in-order one.

    .venv/bin/python bench/bench_ooo.py [--series 100000] [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from receiver.multitsdb import TenantTSDB, TSDBOptions  # noqa: E402
from receiver.remotewrite import decode, encode_write_request  # noqa: E402
from receiver.tsdb.head import HeadOptions  # noqa: E402

RANGE = 7_200_000


def request(n: int, t: int):
    return decode(encode_write_request(
        ((("__name__", "m"), ("i", str(i))), np.array([t]), np.array([1.0])) for i in range(n)))


def one_run(n: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as d:
        db = TenantTSDB("t", TSDBOptions(path=Path(d), too_far_in_future_ms=0,
                                         head=HeadOptions(chunk_range_ms=RANGE, ooo_window_ms=RANGE)))
        db.write(request(n, 10 * RANGE))
        reqs = [request(n, 10 * RANGE + 15_000), request(n, 10 * RANGE - 15_000),
                request(n, 10 * RANGE - 30_000)]
        took = []
        for r in reqs:
            t0 = time.perf_counter()
            out = db.write(r)
            took.append(time.perf_counter() - t0)
            assert out.appended == n, out
        db.close()
        return took[0], took[1], took[2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    runs = [one_run(a.series) for _ in range(a.runs)]
    ino, late, late2 = (statistics.median(r[i] for r in runs) for i in range(3))
    print(f"{a.series} series x 1 sample, median of {a.runs}: in order {ino * 1000:.0f} ms; "
          f"late into an empty OOO head {late * 1000:.0f} ms ({late / ino:.2f}x); "
          f"late into an OOO head of {a.series} samples {late2 * 1000:.0f} ms ({late2 / ino:.2f}x)")


if __name__ == "__main__":
    main()
