"""Throughput of the XOR codec and HeadChunks.append on realistic scrape data.

Not a test: prints samples/s. Data: 15 s scrapes with a little jitter, half counters (monotonic
integer increments) and half gauges (values with a few decimals), 120 samples per chunk.

    /work/venv/bin/python bench/bench_xor.py [--samples 1200000] [--series 2000] [--rounds 500]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from receiver.tsdb.chunkenc import HeadChunks, xor_decode, xor_decode_many, xor_encode

SPC = 120
CHUNKS_PER_SERIES = 60  # 30 h of 15 s scrapes


def make_chunks(total: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Chunks of consecutive series: every CHUNKS_PER_SERIES chunks form one series' timeline."""
    nchunks = max(1, total // SPC)
    start = 1_700_000_000_000 + (np.arange(nchunks) % CHUNKS_PER_SERIES)[:, None] * SPC * 15_000
    ts = start + np.cumsum(15_000 + rng.integers(-20, 21, (nchunks, SPC)), axis=1)
    counters = np.cumsum(rng.integers(0, 50, (nchunks, SPC)), axis=1).astype(np.float64)
    # gauges: half noisy readings with two decimals, half slowly moving integers (bytes, counts)
    noisy = np.round(rng.normal(500, 50, (nchunks, SPC)), 2)
    slow = 1e6 + np.cumsum(rng.integers(-4, 5, (nchunks, SPC)) * 4096, axis=1).astype(np.float64)
    kind = (np.arange(nchunks) // CHUNKS_PER_SERIES % 4)[:, None]
    vals = np.where(kind < 2, counters, np.where(kind == 2, noisy, slow))
    return list(np.ascontiguousarray(ts)), list(np.ascontiguousarray(vals))


def best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(samples: int = 1_200_000, series: int = 2000, rounds: int = 500) -> dict[str, float]:
    """Prints and returns samples/s of encode, decode, decode_many and head append."""
    args = argparse.Namespace(samples=samples, series=series, rounds=rounds)
    out: dict[str, float] = {}
    rng = np.random.default_rng(1)

    tss, vss = make_chunks(args.samples, rng)
    n = len(tss) * SPC
    chunks: list[bytes] = []

    def enc() -> None:
        chunks[:] = [xor_encode(t, v) for t, v in zip(tss, vss)]

    el = best_of(enc)
    out["encode"] = n / el
    nbytes = sum(len(c) for c in chunks)
    print(f"encode          {n / el / 1e6:8.2f} M samples/s   ({n} samples, {len(chunks)} chunks, "
          f"{nbytes / n:.2f} B/sample)")

    el = best_of(lambda: [xor_decode(c) for c in chunks])
    out["decode"] = n / el
    out["bytes_per_sample"] = nbytes / n
    print(f"decode          {n / el / 1e6:8.2f} M samples/s   (one call per chunk)")

    # query path: one series spanning many chunks, decoded in one call
    per = CHUNKS_PER_SERIES
    groups = [chunks[i:i + per] for i in range(0, len(chunks), per)]
    el = best_of(lambda: [xor_decode_many(g, -(2**63), 2**63 - 1) for g in groups])
    out["decode_many"] = n / el
    print(f"decode_many     {n / el / 1e6:8.2f} M samples/s   ({per} chunks per call)")

    # a range inside the series: the chunks overlapping it are passed, the edges get filtered
    lo, hi = per // 4, 3 * per // 4
    t_lo, t_hi = int(tss[lo][SPC // 2]), int(tss[hi][SPC // 2])
    sel = [g[lo:hi + 1] for g in groups]
    kept = sum(len(xor_decode_many(g, t_lo, t_hi)[0]) // 8 for g in sel)
    el = best_of(lambda: [xor_decode_many(g, t_lo, t_hi) for g in sel])
    print(f"decode_many rng {kept / el / 1e6:8.2f} M samples/s   (samples kept, {kept} of "
          f"{sum(len(g) for g in sel) * SPC} decoded-or-skipped)")

    # head append: batches of S series x 1 sample, repeated
    s = args.series
    h = HeadChunks(SPC, 7_200_000)
    h.resize(s)
    refs = np.arange(s, dtype=np.int64)
    base_vals = rng.normal(1000, 100, s).round(1)
    batches_t = [np.full(s, 1_700_000_000_000 + r * 15_000, dtype=np.int64) for r in range(args.rounds)]
    batches_v = [base_vals + r * rng.integers(0, 5, s) for r in range(args.rounds)]
    t0 = time.perf_counter()
    for bt, bv in zip(batches_t, batches_v):
        h.append(refs, bt, bv, 0)
    el = time.perf_counter() - t0
    total = s * args.rounds
    out["head_append"] = total / el
    out["head_bytes_per_series"] = h.memory_bytes() / s
    print(f"head append     {total / el / 1e6:8.2f} M samples/s   ({s} series x 1 sample per call, "
          f"{args.rounds} calls, {el / args.rounds * 1e6:.0f} us/call)")
    print(f"head memory     {h.memory_bytes() / s:8.0f} B/series     ({h.num_samples(0)} samples each, "
          f"{h.num_chunks(0)} chunks)")

    el = best_of(lambda: [h.chunks(r, -(2**63), 2**63 - 1) for r in range(s)])
    print(f"head chunks()   {s / el / 1e6:8.2f} M series/s    (all chunks of every series)")
    el = best_of(lambda: [h.samples(r, -(2**63), 2**63 - 1) for r in range(s)])
    print(f"head samples()  {total / el / 1e6:8.2f} M samples/s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1_200_000)
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=500)
    a = ap.parse_args()
    measure(a.samples, a.series, a.rounds)


if __name__ == "__main__":
    main()
