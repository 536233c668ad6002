"""CPU and page faults of one big batch decode (issue 13: histogram_quantile over 21,600 bucket
series at 6 h decodes ~15M samples per query): decode_series over 21,600 series x eight 1 h
chunks of 120 samples, clipped to 6 h, as a store answer decodes in the querier.

    python bench/bench_big_decode.py            # this checkout
    (cd OTHER && OTHER/.venv/bin/python /path/to/bench/bench_big_decode.py)  # another build
"""
from __future__ import annotations

import resource
import time

import numpy as np

from receiver.tsdb.chunkenc import decode_series, encode

T0 = 1_796_054_400_000


def main() -> None:
    rng = np.random.default_rng(1)
    series = []
    for _ in range(21_600):
        chunks = []
        for b in range(8):
            ts = T0 + b * 3_600_000 + np.arange(120, dtype=np.int64) * 30_000
            chunks.append((int(ts[0]), int(ts[-1]),
                           encode(ts, np.cumsum(rng.integers(0, 5, 120)).astype(float))))
        series.append(chunks)
    mint = T0 + 1_800_000
    for _ in range(5):
        r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        ts, vals, offs = decode_series(series, mint, mint + 6 * 3_600_000)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        print(f"{len(ts):,} samples: wall {time.perf_counter() - t:.3f} s, user "
              f"{r1.ru_utime - r0.ru_utime:.3f} s, sys {r1.ru_stime - r0.ru_stime:.3f} s, "
              f"minor faults {r1.ru_minflt - r0.ru_minflt:,}", flush=True)
        del ts, vals, offs


if __name__ == "__main__":
    main()
