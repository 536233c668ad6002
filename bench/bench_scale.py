"""Dashboard queries at scale (issue 13), Prometheus 2.42 and promring side by side in one run.

Generates 7,600 series x 24 h at a 30 s step (``--scale`` multiplies the series) as twelve 2 h
blocks written by promring's own block writer, serves copies of them with Prometheus 2.42
(``--storage.tsdb.path``; compaction off so its layout stays the same) and with
``promring store`` (filesystem bucket) + ``promring query``, runs the dashboard queries of the
issue at 1 h / 6 h / 24 h ranges ending at the newest sample, checks that both answer the same
(within float tolerance), and prints a markdown table of promring / Prometheus ratios of the
cold run (first run of that query and range since start) and of the warm median, their
geometric means, and each process's peak RSS (VmHWM).

    python bench/bench_scale.py                      # small default: 1/4 of the series, ~3 min
    python bench/bench_scale.py --scale 1            # the issue's data set
    python bench/bench_scale.py --scale 4 --hours 6  # 4x the series
    python bench/bench_scale.py --scale 1 --out bench/scale.md
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from harness import PrometheusProcess, free_port, promring_cmd, wait_ready  # noqa: E402
from sidebyside import (HOUR_MS, POINTS, geomean, peak_rss_mib, stop_all,  # noqa: E402
                        timed_queries)
from receiver.tsdb.block import write_block_from_samples  # noqa: E402

BLOCK_MS = 2 * HOUR_MS
STEP_MS = 30_000
# Samples sit off the whole second, so no range window of a query starts exactly on one (at such
# a sample Prometheus 2.42's left-closed windows and the querier's left-open ones differ).
JITTER_MS = 1234
LES = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf")
# At scale 1: 2,200 counter series `x` (1,000 of them shard="0") + 450 histograms `b` x 12 le.
X_SERIES, B_INSTANCES, RAW_SERIES = 2200, 450, 1000
JOBS = 10

QUERIES = [
    ("`sum by (job) (rate(x[5m]))`", "sum by (job) (rate(x[5m]))"),
    ("`histogram_quantile(0.99, sum by (le, job) (rate(b[5m])))`",
     "histogram_quantile(0.99, sum by (le, job) (rate(b[5m])))"),
    ("`topk(10, rate(x[5m]))`", "topk(10, rate(x[5m]))"),
    ("`count by (job) (x)`", "count by (job) (x)"),
    ("one series", 'x{instance="i-00007"}'),
    ("1,000 series raw", 'x{shard="0"}'),
    ("1,000 series `avg_over_time`", 'avg_over_time(x{shard="0"}[5m])'),
]
RANGES_H = (1, 6, 24)


# -- data

def series_labels(scale: float) -> list[tuple[tuple[str, str], ...]]:
    """Label sets in the block writer's order (sorted)."""
    nx, nb = round(X_SERIES * scale), round(B_INSTANCES * scale)
    raw = round(RAW_SERIES * scale)
    out = [(("__name__", "x"), ("instance", f"i-{i:05d}"), ("job", f"j{i % JOBS}"),
            ("shard", "0" if i < raw else "1")) for i in range(nx)]
    out += [(("__name__", "b"), ("instance", f"i-{i:05d}"), ("job", f"j{i % JOBS}"), ("le", le))
            for i in range(nb) for le in LES]
    return sorted(out)


def write_blocks(dest: Path, scale: float, hours: int, t0: int) -> tuple[int, int]:
    """``hours / 2`` blocks of counters under ``dest``; returns (series, samples)."""
    lbls = series_labels(scale)
    n = len(lbls)
    rng = np.random.default_rng(13)
    # Histogram buckets are cumulative in le: bucket k gets a growing share of its instance's rate.
    rate = rng.uniform(0.5, 20.0, n)
    for i, ls in enumerate(lbls):
        if ls[0][1] == "b":
            rate[i] = rate[i] * (LES.index(ls[3][1]) + 1) / len(LES)
    value = np.zeros(n)
    per_block = BLOCK_MS // STEP_MS
    samples = 0
    for b in range(hours // 2):
        lo = t0 + b * BLOCK_MS
        ts = lo + JITTER_MS + STEP_MS * np.arange(per_block, dtype=np.int64)
        # Real-valued increments: integer ones make topk ties, which either side may break.
        inc = rng.exponential(rate[:, None] * np.ones(per_block))
        vals = value[:, None] + np.cumsum(inc, axis=1)
        value = vals[:, -1].copy()

        def gen() -> Iterator[tuple[tuple[tuple[str, str], ...], np.ndarray, np.ndarray]]:
            for i, ls in enumerate(lbls):
                yield ls, ts, vals[i]
        write_block_from_samples(dest, gen(), lo, lo + BLOCK_MS, thanos_meta={"labels": {}})
        samples += vals.size
    return n, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.25,
                    help="series multiplier (1 = 7,600 series, 4 = 30,400)")
    ap.add_argument("--hours", type=int, default=24, help="hours of data (2 h blocks)")
    ap.add_argument("--warm", type=int, default=3, help="warm runs per query (median)")
    ap.add_argument("--keep", type=Path, help="keep the generated blocks here (reused if present)")
    ap.add_argument("--out", type=Path, help="also write the markdown table to this file")
    a = ap.parse_args()
    ranges = [h for h in RANGES_H if h <= a.hours]
    raw_n = f"{round(RAW_SERIES * a.scale):,}"
    queries = [(name.replace("1,000", raw_n), q) for name, q in QUERIES]
    t0 = (int(time.time() * 1000) // BLOCK_MS - a.hours // 2 - 2) * BLOCK_MS
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    blocks = a.keep or tmp / "blocks"
    t_gen = time.perf_counter()
    if a.keep and a.keep.is_dir() and any(a.keep.iterdir()):
        metas = sorted(a.keep.glob("*/meta.json"))
        first = json.loads(metas[0].read_text())
        t0 = first["minTime"]
        n_series = first["stats"]["numSeries"]
        n_samples = sum(json.loads(m.read_text())["stats"]["numSamples"] for m in metas)
        a.hours = 2 * len(metas)
    else:
        blocks.mkdir(parents=True, exist_ok=True)
        n_series, n_samples = write_blocks(blocks, a.scale, a.hours, t0)
    t_gen = time.perf_counter() - t_gen
    end_ms = t0 + a.hours * HOUR_MS - STEP_MS
    size = sum(f.stat().st_size for f in blocks.rglob("*") if f.is_file())
    print(f"{n_series:,} series, {n_samples:,} samples in {a.hours // 2} blocks "
          f"({size / 1e6:.0f} MB), generated in {t_gen:.0f} s", flush=True)

    shutil.copytree(blocks, tmp / "prom" / "tsdb")
    prom = PrometheusProcess(tmp / "prom", "global: {}\n", "--storage.tsdb.retention.time=10y",
                             "--storage.tsdb.min-block-duration=2h",
                             "--storage.tsdb.max-block-duration=2h")
    shutil.copytree(blocks, tmp / "bucket")
    (tmp / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
    sg, sh, qh = free_port(), free_port(), free_port()
    procs: dict[str, subprocess.Popen] = {}
    logs = open(tmp / "promring.log", "ab")
    try:
        prom.start()
        procs["store"] = subprocess.Popen(promring_cmd() + [
            "store", "--data-dir", str(tmp / "store"), "--objstore.config-file",
            str(tmp / "objstore.yml"), "--grpc-address", f"127.0.0.1:{sg}",
            "--http-address", f"127.0.0.1:{sh}", "--log.level", "warn"], stdout=logs, stderr=logs)
        wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=600, proc=procs["store"])
        procs["query"] = subprocess.Popen(promring_cmd() + [
            "query", "--endpoint", f"127.0.0.1:{sg}", "--grpc-address", "127.0.0.1:0",
            "--http-address", f"127.0.0.1:{qh}", "--log.level", "warn"], stdout=logs, stderr=logs)
        wait_ready(f"http://127.0.0.1:{qh}/-/ready", timeout=60, proc=procs["query"])
        rows, mismatches = timed_queries(prom.api, f"http://127.0.0.1:{qh}/api/v1", queries,
                                         ranges, end_ms, a.warm)
        rss = {"Prometheus": peak_rss_mib(prom.proc.pid),  # type: ignore[union-attr]
               "promring store": peak_rss_mib(procs["store"].pid),
               "promring query": peak_rss_mib(procs["query"].pid)}
    finally:
        stop_all(procs.values())
        prom.stop()
        logs.close()

    lines = [f"{n_series:,} series x {a.hours} h at a {STEP_MS // 1000} s step "
             f"({n_samples:,} samples, {a.hours // 2} 2 h blocks, {size / 1e6:.0f} MB), "
             f"range queries of {POINTS} steps ending at the newest sample; ratio = "
             f"promring / Prometheus 2.42, cold = first run of that query and range, "
             f"warm = median of {a.warm}.", "",
             "| query | " + " | ".join(f"{h} h cold | {h} h warm" for h in ranges) + " |",
             "|---|" + "---|---|" * len(ranges)]
    for name, _ in queries:
        cells = []
        for h in ranges:
            r = next(r for r in rows if r[0] == name and r[1] == h)
            cells.append(f"{r[2] / r[3]:.2f}x | {r[4] / r[5]:.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    gc = geomean([r[2] / r[3] for r in rows])
    gw = geomean([r[4] / r[5] for r in rows])
    lines += ["", f"Geometric mean: cold **{gc:.2f}x**, warm **{gw:.2f}x** "
              f"({len(rows)} query/range pairs).", "",
              "Warm medians (ms), promring / Prometheus: " + "; ".join(
                  f"{r[0]} {r[1]} h {r[4] * 1000:.0f}/{r[5] * 1000:.0f}" for r in rows), "",
              "Peak RSS (VmHWM): " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()), "",
              "Answers: " + ("all equal" if not mismatches else
                             f"{len(mismatches)} DIFFER: " + "; ".join(mismatches))]
    text = "\n".join(lines)
    print("\n" + text)
    if a.out:
        a.out.write_text(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    if mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
