"""The querier's decoding of StoreAPI Series frames (issue 13): protobuf + a Python loop per
label and chunk (the client before) vs storeapi._wire.series_response (C), on frames encoded
as a promring store sends them (SeriesBatch frames of 256 series, XOR chunks of 120 samples).

    python bench/bench_series_decode.py                     # 2,000 series x 24 chunks
    python bench/bench_series_decode.py --series 20000 --chunks 12

Prints the best-of-``--rounds`` CPU seconds (process time: the machine may be shared) of
each and their ratio.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "unit"))
sys.path.insert(0, str(REPO))

from storeapi._wire import series_response  # noqa: E402
from storeapi.client import RawSeries  # noqa: E402
from storeapi.wire import SeriesEncoder  # noqa: E402
from test_storeapi_wire import reference  # noqa: E402  (the protobuf + Python decoder)

BATCH = 256


def frames(n_series: int, n_chunks: int) -> list[bytes]:
    enc = SeriesEncoder()
    bodies = []
    for i in range(n_series):
        labels = (("__name__", "x"), ("instance", f"i-{i:05d}"), ("job", f"j{i % 10}"),
                  ("shard", str(i % 2)))
        chunks = [(t * 3_600_000, t * 3_600_000 + 3_570_000, bytes(180)) for t in range(n_chunks)]
        bodies.append(enc.series(labels, chunks))
    return [enc.batch_response(bodies[i:i + BATCH]) for i in range(0, len(bodies), BATCH)]


def decode_pb(fs: list[bytes]) -> list[RawSeries]:
    return [RawSeries(lbls, chunks) for f in fs for lbls, chunks in reference(f, True)[1]]


def decode_c(fs: list[bytes]) -> list[RawSeries]:
    out: list[RawSeries] = []
    prev = None
    for f in fs:
        _, payload, _ = series_response(f, prev, None)
        out += [RawSeries(lbls, chunks) for lbls, chunks in payload]
        prev = payload[-1][0]
    return out


def best(fn, fs, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.process_time()
        fn(fs)
        times.append(time.process_time() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--chunks", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    fs = frames(a.series, a.chunks)
    assert [(s.labels, s.chunks) for s in decode_c(fs)] == [(s.labels, s.chunks) for s in decode_pb(fs)]
    pb, c = best(decode_pb, fs, a.rounds), best(decode_c, fs, a.rounds)
    mb = sum(map(len, fs)) / 1e6
    print(f"{a.series:,} series x {a.chunks} chunks, {len(fs)} frames, {mb:.1f} MB")
    print(f"protobuf + Python loop: {pb * 1e3:.1f} ms   C: {c * 1e3:.1f} ms   ({pb / c:.1f}x faster)")


if __name__ == "__main__":
    main()
