"""WAL bytes per sample, side by side: ``promring receive`` vs Prometheus 2.42's own receiver.

Both get the same remote-write payloads as bench_ingest.py (same series, one sample per series
per 15 s round, all within the first head block, so no head is cut and no checkpoint is taken);
once loaded, the files under each WAL directory are summed (apparent size: Prometheus does not
preallocate segments, neither do we). Ingest samples/s is measured on the same load.

    python bench/bench_wal_size.py --series 20000 --rounds 30 --inflight 4
    python bench/bench_wal_size.py --promring-arg=--no-tsdb.wal-compression   # uncompressed

The ``promring`` run is the one installed next to the Python running this script: run it with
another checkout's virtualenv Python to measure that checkout (e.g. before a change).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench_ingest import make_payloads, run_target, targets


def dir_bytes(root: Path, name: str = "wal") -> int:
    """Bytes in every file under every directory called ``name`` below ``root``."""
    return sum(f.stat().st_size for d in root.rglob(name) if d.is_dir()
               for f in d.rglob("*") if f.is_file())


def run(series: int = 20000, rounds: int = 30, per_request: int = 2000, inflight: int = 4,
        promring_args: tuple[str, ...] = (), prometheus: bool = True) -> dict:
    t0 = int(time.time() * 1000) - (rounds + 2) * 15_000
    warm = make_payloads(series, 1, per_request, t0 - 15_000)
    payloads = make_payloads(series, rounds, per_request, t0)
    logged = series * (rounds + 1)  # the warm-up round is in the WAL too
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd, ready, write in targets(tmp, "none", prometheus):
            store = Path(tmp) / ("promring" if name.startswith("promring") else "prom")
            if name.startswith("promring"):
                cmd = cmd + list(promring_args)
            r = run_target(name, cmd, ready, write, payloads, warm, inflight, series,
                           after_load=lambda: {"wal_bytes": dir_bytes(store)})
            r["wal_bytes_per_sample"] = r["wal_bytes"] / logged
            r["samples_per_s"] = series * rounds / r["seconds"]
            results.append(r)
    out = {"series": series, "rounds": rounds, "per_request": per_request, "samples": logged,
           "promring": results[0], "prometheus": results[1] if len(results) == 2 else None}
    if out["prometheus"]:
        out["wal_size_ratio"] = results[0]["wal_bytes"] / results[1]["wal_bytes"]
        out["throughput_ratio"] = results[0]["samples_per_s"] / results[1]["samples_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-request", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--promring-arg", action="append", default=[],
                    help="Extra flag for promring receive (repeatable).")
    ap.add_argument("--no-prometheus", action="store_true")
    a = ap.parse_args()
    res = run(a.series, a.rounds, a.per_request, a.inflight, tuple(a.promring_arg),
              not a.no_prometheus)
    print(f"\n{a.series} series, {a.per_request} samples/request, {a.inflight} in flight, "
          f"{res['samples']} samples in the WAL {' '.join(a.promring_arg)}\n")
    print("| target | WAL bytes | WAL bytes/sample | ingest samples/s | errors |")
    print("|---|---|---|---|---|")
    for r in (res["promring"], res["prometheus"]):
        if r:
            print(f"| {r['name']} | {r['wal_bytes']:,} | {r['wal_bytes_per_sample']:.2f} "
                  f"| {r['samples_per_s']:,.0f} | {r['errors']} |")
    if res["prometheus"]:
        print(f"\npromring/prometheus: WAL size {res['wal_size_ratio']:.2f}x, "
              f"ingest throughput {res['throughput_ratio']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
