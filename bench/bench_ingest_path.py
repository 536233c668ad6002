"""The ingest path in process, per 2,000-sample request of bench_ingest.py's payloads: CPU of
decompress + decode + TenantTSDB.write, decoded without and with the head's series-ref cache
(requests alternate between two heads, so both see the same machine load).

    python bench/bench_ingest_path.py --rounds 40
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_ingest import make_payloads  # noqa: E402
from receiver.multitsdb import TenantTSDB, TSDBOptions  # noqa: E402
from receiver.remotewrite import decode, decompress_body  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warm-requests", type=int, default=20)
    args = ap.parse_args()
    payloads = make_payloads(args.series, args.rounds, 2000,
                             int(time.time() * 1000) - args.rounds * 15_000)
    clock = time.thread_time
    with tempfile.TemporaryDirectory() as d:
        dbs = {m: TenantTSDB(m, TSDBOptions(path=Path(d), too_far_in_future_ms=0))
               for m in ("without cache", "with cache")}
        got: dict[str, dict[str, list[float]]] = {m: {"decode": [], "write": [], "total": []} for m in dbs}
        for i, (_, body) in enumerate(payloads):
            for m in (list(dbs) if i % 2 else list(reversed(dbs))):
                db = dbs[m]
                a = clock()
                raw = decompress_body(body, "snappy", None)
                b = clock()
                req = decode(raw, db.head.refcache if m == "with cache" else None)
                c = clock()
                out = db.write(req)
                e = clock()
                assert out.appended == len(req.ts), out
                if i >= args.warm_requests:
                    for k, v in (("decode", c - b), ("write", e - c), ("total", e - a)):
                        got[m][k].append(v)
        for db in dbs.values():
            db.close()
    print("| decode | µs per request: decode | write | decompress+decode+write |\n|---|---|---|---|")
    for m, st in got.items():
        print(f"| {m} | " + " | ".join(f"{1e6 * np.median(v):.0f}" for v in st.values()) + " |")


if __name__ == "__main__":
    main()
