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

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from bench_ingest import make_payloads, run_target  # noqa: E402
from bench_scale import (BLOCK_MS, QUERIES, RANGES_H, STEP_MS, RAW_SERIES,  # noqa: E402
                         write_blocks)
from sidebyside import (HOUR_MS, POINTS, geomean, peak_rss_mib, stop_all,  # noqa: E402
                        timed_queries)
from harness import free_port, promring_cmd, wait_ready  # noqa: E402
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

def start(args: list[str], ready: str, log) -> subprocess.Popen:
    p = subprocess.Popen(args, stdout=log, stderr=log)
    wait_ready(ready, timeout=600, proc=p)
    return p


def wait_series(api: str, end_ms: int, timeout: float = 120) -> None:
    """Until the querier sees the store (Thanos's querier checks endpoints periodically)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(f"{api}/query", params={"query": "count(x)", "time": end_ms / 1000},
                         timeout=60).json()
        if r.get("data", {}).get("result"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"{api} sees no data")


def queries(scale: float, hours: int, warm: int) -> tuple[list, dict, list[str], str]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-thanos-q-"))
    t0 = (int(time.time() * 1000) // BLOCK_MS - hours // 2 - 2) * BLOCK_MS
    bucket = tmp / "bucket"
    bucket.mkdir()
    n_series, n_samples = write_blocks(bucket, scale, hours, t0)
    cfg = tmp / "objstore.yml"
    cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    end_ms = t0 + hours * HOUR_MS - STEP_MS
    ranges = [h for h in RANGES_H if h <= hours]
    qs = [(name.replace("1,000", f"{round(RAW_SERIES * scale):,}"), q) for name, q in QUERIES]
    procs: dict[str, subprocess.Popen] = {}
    log = open(tmp / "servers.log", "ab")
    try:
        ps_g, ps_h, pq_h, ts_g, ts_h, tq_g, tq_h = (free_port() for _ in range(7))
        procs["promring store"] = start(promring_cmd() + [
            "store", "--data-dir", str(tmp / "p-store"), "--objstore.config-file", str(cfg),
            "--grpc-address", f"127.0.0.1:{ps_g}", "--http-address", f"127.0.0.1:{ps_h}",
            "--log.level", "warn"], f"http://127.0.0.1:{ps_h}/-/ready", log)
        procs["promring query"] = start(promring_cmd() + [
            "query", "--endpoint", f"127.0.0.1:{ps_g}", "--grpc-address", "127.0.0.1:0",
            "--http-address", f"127.0.0.1:{pq_h}", "--log.level", "warn"],
            f"http://127.0.0.1:{pq_h}/-/ready", log)
        procs["thanos store"] = start([
            peer("thanos"), "store", f"--data-dir={tmp / 't-store'}", f"--objstore.config-file={cfg}",
            f"--grpc-address=127.0.0.1:{ts_g}", f"--http-address=127.0.0.1:{ts_h}",
            "--log.level=warn"], f"http://127.0.0.1:{ts_h}/-/ready", log)
        procs["thanos query"] = start([
            peer("thanos"), "query", f"--endpoint=127.0.0.1:{ts_g}",
            f"--grpc-address=127.0.0.1:{tq_g}", f"--http-address=127.0.0.1:{tq_h}",
            "--log.level=warn"], f"http://127.0.0.1:{tq_h}/-/ready", log)
        ours, theirs = f"http://127.0.0.1:{pq_h}/api/v1", f"http://127.0.0.1:{tq_h}/api/v1"
        wait_series(ours, end_ms)
        wait_series(theirs, end_ms)
        rows, mismatches = timed_queries(theirs, ours, qs, ranges, end_ms, warm)
        rss = {k: peak_rss_mib(p.pid) for k, p in procs.items()}
    finally:
        stop_all(procs.values())
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    head = (f"{n_series:,} series x {hours} h at a {STEP_MS // 1000} s step ({n_samples:,} "
            f"samples, {hours // 2} 2 h blocks), range queries of {POINTS} steps")
    return rows, rss, mismatches, head


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

    rows, rss, mismatches, head = queries(a.scale, a.hours, a.warm)
    ranges = sorted({r[1] for r in rows})
    print(f"\n(b) queries: {head}; latency promring / thanos, cold = first run, "
          f"warm = median of {a.warm}\n")
    print("| query | " + " | ".join(f"{h} h cold | {h} h warm" for h in ranges) + " |")
    print("|---|" + "---|---|" * len(ranges))
    for name in dict.fromkeys(r[0] for r in rows):
        cells = [f"{r[2] / r[3]:.2f}x | {r[4] / r[5]:.2f}x" for h in ranges
                 for r in rows if r[0] == name and r[1] == h]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nGeometric mean: cold **{geomean([r[2] / r[3] for r in rows]):.2f}x**, warm "
          f"**{geomean([r[4] / r[5] for r in rows]):.2f}x** ({len(rows)} query/range pairs)")
    print("Peak RSS (VmHWM): " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()))
    print("Answers: " + ("all equal" if not mismatches else
                         f"{len(mismatches)} DIFFER: " + "; ".join(mismatches)))
    if mismatches or any(r["errors"] for r in ing):
        sys.exit(1)


if __name__ == "__main__":
    main()
