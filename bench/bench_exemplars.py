"""What exemplars add to a remote-write request's ingest (decode + head + ring + WAL record).

Not a test: run ``python bench/bench_exemplars.py``. A Prometheus-shaped request of 2,000
series x 1 sample (~8 labels each), once without exemplars and once with one exemplar per
series (a 32-hex-digit trace_id), written into one tenant with ``--tsdb.max-exemplars=100000``;
best of 30 requests of each.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench_rwdecode import make_series
from bench_xor import best_of
from receiver.multitsdb import TenantTSDB, TSDBOptions
from receiver.remotewrite import decode, encode_write_request
from common.varint import uvarint


def with_exemplars(body: bytes, n_series: int, t: int) -> bytes:
    """Append one Exemplar (trace_id label, value, timestamp) to each TimeSeries of ``body``."""
    out, p = [], 0
    for i in range(n_series):
        assert body[p] == 0x0A
        n, q = 0, p + 1
        shift = 0
        while True:
            b = body[q]
            n |= (b & 0x7F) << shift
            q += 1
            shift += 7
            if b < 0x80:
                break
        ts_msg = body[q:q + n]
        lbl = b"\x0a\x08trace_id\x12\x20" + f"{i:032x}".encode()
        ex = b"\x0a" + uvarint(len(lbl)) + lbl + b"\x11" + np.float64(1.5).tobytes() + b"\x18" + uvarint(t)
        ts_msg += b"\x1a" + uvarint(len(ex)) + ex
        out.append(b"\x0a" + uvarint(len(ts_msg)) + ts_msg)
        p = q + n
    return b"".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    base = make_series(a.series, 1)
    figures = {}
    for ex in (False, True):
        bodies = []
        for k in range(a.runs + 1):
            t = 1_700_000_000_000 + 15_000 * k
            body = encode_write_request((lb, np.array([t]), v[:1]) for lb, _, v in base)
            bodies.append(with_exemplars(body, a.series, t) if ex else body)
        with tempfile.TemporaryDirectory() as d:
            db = TenantTSDB("t", TSDBOptions(path=Path(d), max_exemplars=100_000))
            db.write(decode(bodies[0]))
            best = float("inf")
            for body in bodies[1:]:
                best = min(best, best_of(lambda: db.write(decode(body)), 1))
            figures[ex] = best
            db.close()
    print(f"{a.series} series x 1 sample per request, decode + write: "
          f"{figures[False] * 1e3:.2f} ms without exemplars, {figures[True] * 1e3:.2f} ms with "
          f"one exemplar per series: {figures[True] / figures[False]:.2f}x")

if __name__ == "__main__":
    main()
