"""Remote-write decode throughput (samples/s), with and without the snappy step.

Not a test: run ``python bench/bench_rwdecode.py`` after building the extension. Payloads are
shaped like Prometheus's own batches (max_samples_per_send=2000) with ~8 labels per series.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from receiver import _rwdecode
from receiver.remotewrite import decode_body, encode_write_request, snappy_compress


def make_series(n_series: int, samples_per_series: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    metrics = ["http_requests_total", "node_cpu_seconds_total", "container_memory_working_set_bytes",
               "apiserver_request_duration_seconds_bucket", "up"]
    t0 = 1_700_000_000_000
    out = []
    for i in range(n_series):
        labels = (
            ("__name__", metrics[i % len(metrics)]),
            ("cluster", "prod-eu-west-1"),
            ("container", f"app-{i % 17}"),
            ("instance", f"10.0.{i % 250}.{(i * 7) % 250}:9100"),
            ("job", "kubernetes-pods"),
            ("namespace", f"team-{i % 9}"),
            ("pod", f"app-{i % 17}-7d9f8c6b5-{i:05x}"),
            ("zone", f"eu-west-1{'abc'[i % 3]}"),
        )
        ts = t0 + np.arange(samples_per_series, dtype=np.int64) * 15_000 + int(rng.integers(0, 1000))
        vals = np.round(rng.random(samples_per_series) * 1000, 2)
        out.append((labels, ts, vals))
    return out


def best_rate(fn: Callable[[], object], n_samples: int, seconds: float) -> tuple[float, float]:
    """Best-of-repeats samples/s and mean microseconds per call (best is least noisy on 2 cores)."""
    fn()
    calls = 0
    best = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        for _ in range(10):
            fn()
        best = min(best, (time.perf_counter() - t) / 10)
        calls += 10
    mean = (time.perf_counter() - start) / calls
    return n_samples / best, mean * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args()
    for n_series, per in [(2000, 1), (500, 10), (200, 100)]:
        series = make_series(n_series, per)
        n = n_series * per
        t = time.perf_counter()
        raw = encode_write_request(series)
        enc_ms = (time.perf_counter() - t) * 1e3
        body = snappy_compress(raw)
        r_raw, us_raw = best_rate(lambda: _rwdecode.decode(raw), n, args.seconds)
        r_body, us_body = best_rate(lambda: decode_body(body, "snappy", "application/x-protobuf"), n,
                                    args.seconds)
        print(f"{n_series} series x {per} samples: protobuf {len(raw) / 1024:.0f} KiB, snappy "
              f"{len(body) / 1024:.0f} KiB, encode {enc_ms:.1f} ms")
        print(f"  decode only         : {r_raw / 1e6:6.1f} M samples/s  ({us_raw:7.1f} us/request, "
              f"{len(raw) / (n / r_raw) / 1e9:.2f} GB/s protobuf)")
        print(f"  snappy + decode_body: {r_body / 1e6:6.1f} M samples/s  ({us_body:7.1f} us/request)")


if __name__ == "__main__":
    main()
