"""A week of minute-scraped counters as daily blocks (query frontend tests and benchmark)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from receiver.tsdb.block import write_block_from_samples

DAY_MS = 86_400_000
SCRAPE_MS = 60_000


def write_week(bucket: Path, now_ms: int, n_series: int = 6) -> None:
    """Eight daily blocks of counters scraped every minute, the last one reaching ``now``."""
    labels = sorted((("__name__", "m"), ("instance", f"i{i}"), ("job", "ab"[i % 2]))
                    for i in range(n_series))
    rng = np.random.default_rng(7)
    first = (now_ms - 7 * DAY_MS) // DAY_MS * DAY_MS
    value = np.zeros(len(labels))
    for lo in range(first, now_ms + 1, DAY_MS):
        ts = lo + 1234 + SCRAPE_MS * np.arange(DAY_MS // SCRAPE_MS, dtype=np.int64)
        ts = ts[ts <= now_ms]
        if not len(ts):
            continue
        vals = value[:, None] + np.cumsum(rng.exponential(5.0, (len(labels), len(ts))), axis=1)
        value = vals[:, -1].copy()
        write_block_from_samples(bucket, ((ls, ts, vals[i]) for i, ls in enumerate(labels)),
                                 lo, lo + DAY_MS, thanos_meta={"labels": {}})
