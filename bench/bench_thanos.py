"""promring vs Thanos v0.42.4 (the reference peer), side by side in one run (issue 12).

(a) Ingest: ``promring receive`` vs ``thanos receive``, each a single ingestor, fed the same
    pre-encoded snappy remote-write payloads over HTTP by the same asyncio client
    (bench_ingest.py's generator and sender), each alone while measured.
(b) Queries: ``promring store`` + ``promring query`` vs ``thanos store`` + ``thanos query`` over
    the same blocks in one filesystem bucket (bench_scale.py's data and dashboard queries), run
    side by side and queried alternately; answers checked equal.

Ratio = promring / Thanos (ingest: samples/s, higher is better; queries: latency, lower is
better).

    python bench/bench_thanos.py                              # defaults below, a few minutes
    python bench/bench_thanos.py --series 20000 --rounds 60 --scale 0.25 --hours 12
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from bench_ingest import make_payloads, run_target  # noqa: E402
from bench_scale import BLOCK_MS, RANGES_H, STEP_MS, dashboard_queries, write_blocks  # noqa: E402
from sidebyside import (HOUR_MS, POINTS, compare_sides, peak_rss_mib, ratio_table,  # noqa: E402
                        start_promring, start_thanos, stop_all)
from harness import free_port, promring_cmd  # noqa: E402
from peers import peer  # noqa: E402


# -- (a) ingest

def ingest(series: int, rounds: int, per_request: int, inflight: int) -> list[dict]:
    t0 = int(time.time() * 1000) - (rounds + 2) * 15_000
    warm = make_payloads(series, 1, per_request, t0 - 15_000)
    payloads = make_payloads(series, rounds, per_request, t0)
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-thanos-") as tmp:
        rw, grpc, http = free_port(), free_port(), free_port()
        out.append(run_target(
            "promring receive",
            promring_cmd() + ["receive", "--tsdb.path", f"{tmp}/promring",
                              "--remote-write.address", f"127.0.0.1:{rw}",
                              "--grpc-address", f"127.0.0.1:{grpc}",
                              "--http-address", f"127.0.0.1:{http}",
                              "--label", 'replica="0"', "--log.level", "warn"],
            f"http://127.0.0.1:{rw}/-/ready", f"http://127.0.0.1:{rw}/api/v1/receive",
            payloads, warm, inflight, series))
        rw, grpc, http, capnp = free_port(), free_port(), free_port(), free_port()
        out.append(run_target(
            "thanos receive",
            [peer("thanos"), "receive", f"--tsdb.path={tmp}/thanos",
             f"--remote-write.address=127.0.0.1:{rw}", f"--grpc-address=127.0.0.1:{grpc}",
             f"--http-address=127.0.0.1:{http}", f"--receive.capnproto-address=127.0.0.1:{capnp}",
             '--label=replica="0"', "--log.level=warn"],
            f"http://127.0.0.1:{http}/-/ready", f"http://127.0.0.1:{rw}/api/v1/receive",
            payloads, warm, inflight, series))
    for r in out:
        r["samples_per_s"] = series * rounds / r["seconds"]
    return out


# -- (b) store + query

def queries(scale: float, hours: int, warm: int) -> tuple[list[str], dict, list[str], str]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-thanos-q-"))
    t0 = (int(time.time() * 1000) // BLOCK_MS - hours // 2 - 2) * BLOCK_MS
    bucket = tmp / "bucket"
    bucket.mkdir()
    n_series, n_samples = write_blocks(bucket, scale, hours, t0)
    cfg = tmp / "objstore.yml"
    cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    end_ms = t0 + hours * HOUR_MS - STEP_MS
    ranges = [h for h in RANGES_H if h <= hours]
    qs = dashboard_queries(scale)
    procs: dict[str, subprocess.Popen] = {}
    log = open(tmp / "servers.log", "ab")
    try:
        started, ours = start_promring(tmp, cfg, log)
        procs.update(started)
        started, theirs = start_thanos(tmp, cfg, log, end_ms)
        procs.update(started)
        timings, mismatches = compare_sides({"Thanos": theirs, "promring": ours}, "promring", qs,
                                            ranges, end_ms, warm)
        rss = {k: peak_rss_mib(p.pid) for k, p in procs.items()}
    finally:
        stop_all(procs.values())
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    head = (f"{n_series:,} series x {hours} h at a {STEP_MS // 1000} s step ({n_samples:,} "
            f"samples, {hours // 2} 2 h blocks), range queries of {POINTS} steps")
    table = ratio_table(timings, "promring", "Thanos", [name for name, _ in qs])
    return table, rss, mismatches, head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-request", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--scale", type=float, default=0.25, help="bench_scale.py's series multiplier")
    ap.add_argument("--hours", type=int, default=12, help="hours of blocks for the queries")
    ap.add_argument("--warm", type=int, default=3, help="warm runs per query (median)")
    a = ap.parse_args()

    ing = ingest(a.series, a.rounds, a.per_request, a.inflight)
    print(f"\n(a) ingest: {a.series:,} active series, {a.per_request} samples/request, "
          f"{a.inflight} in flight, {a.series * a.rounds:,} samples\n")
    print("| target | samples/s | p50 ms | p99 ms | errors | RSS bytes/series |")
    print("|---|---|---|---|---|---|")
    for r in ing:
        print(f"| {r['name']} | {r['samples_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
              f"| {r['errors']} | {r['rss_per_series']:,.0f} |")
    print(f"\ningest throughput promring / thanos: "
          f"**{ing[0]['samples_per_s'] / ing[1]['samples_per_s']:.2f}x**, memory per series "
          f"{ing[0]['rss_per_series'] / max(ing[1]['rss_per_series'], 1):.2f}x", flush=True)

    table, rss, mismatches, head = queries(a.scale, a.hours, a.warm)
    print(f"\n(b) queries: {head}; latency promring / thanos, cold = first run, "
          f"warm = median of {a.warm}\n")
    print("\n".join(table))
    print("Peak RSS (VmHWM): " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()))
    print("Answers: " + ("all equal" if not mismatches else
                         f"{len(mismatches)} DIFFER: " + "; ".join(mismatches)))
    if mismatches or any(r["errors"] for r in ing):
        sys.exit(1)


if __name__ == "__main__":
    main()
