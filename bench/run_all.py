"""Every side-by-side benchmark in one run: regenerates BENCHMARKS.md's summary, appends the key
ratios to bench/history.csv and redraws bench/history.png.

    python bench/run_all.py            # full run (a few minutes), writes the three files
    python bench/run_all.py --quick    # smoke run on small data, prints only (add --write to record)

Key figures (ratio = promring ÷ Prometheus 2.42, same machine, same client, same payloads):
ingest samples/s of one ``promring receive`` (WAL on) vs Prometheus's remote-write receiver;
resident memory per active series; bytes per sample of a 2 h block vs promtool's; median
dashboard query latency (bench_query.py); and the XOR codec's samples/s.
"""
from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import bench_block  # noqa: E402
import bench_ingest  # noqa: E402
import bench_xor  # noqa: E402
from history import (Line, Panel, append_history, column, git_sha, plot_history,  # noqa: E402
                     write_generated_block)

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
HISTORY_FIELDS = ["date", "git_sha", "quick", "ingest_ratio", "ingest_samples_per_s",
                  "prometheus_samples_per_s", "ingest_errors", "memory_ratio", "bytes_per_series",
                  "prometheus_bytes_per_series", "disk_ratio", "bytes_per_sample", "query_ratio",
                  "xor_encode_per_s", "xor_decode_per_s"]
RATIOS = [("ingest_ratio", "ingest samples/s (higher is better)"),
          ("memory_ratio", "head memory per series"),
          ("disk_ratio", "bytes per sample on disk"),
          ("query_ratio", "dashboard query latency")]


def query_bench(instances: int, repeat: int) -> dict | None:
    """Runs bench_query.py (owned separately) and reads its total row: promring/Prometheus ms."""
    script = BENCH / "bench_query.py"
    if not script.exists():
        return None
    p = subprocess.run([sys.executable, str(script), "--instances", str(instances), "--repeat", str(repeat)],
                       cwd=REPO, capture_output=True, text=True, timeout=1800)
    print(p.stdout[-3000:], p.stderr[-2000:] if p.returncode else "", sep="\n")
    m = re.search(r"\|\s*\*\*total\*\*\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", p.stdout)
    if p.returncode != 0 or not m:
        return None
    prom_ms, ours_ms = float(m.group(1)), float(m.group(2))
    return {"prometheus_ms": prom_ms, "promring_ms": ours_ms, "ratio": ours_ms / prom_ms,
            "table": p.stdout[p.stdout.find("| query"):].strip()}


def run_all(quick: bool) -> dict:
    t0 = time.perf_counter()
    res: dict = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"), "git_sha": git_sha(),
                 "quick": quick}
    print("== ingest (fsync none)", flush=True)
    res["ingest"] = bench_ingest.run(series=5000 if quick else 20000, rounds=5 if quick else 60,
                                     per_request=2000, inflight=4, wal_fsync="none")
    if not quick:
        print("== ingest (fsync batch)", flush=True)
        res["ingest_batch"] = bench_ingest.run(series=20000, rounds=60, per_request=2000, inflight=4,
                                               wal_fsync="batch")
    print("== block size", flush=True)
    res["block"] = bench_block.measure(500 if quick else 10000, 1 if quick else 2)
    print("== XOR codec", flush=True)
    res["xor"] = bench_xor.measure(120_000 if quick else 1_200_000, 200 if quick else 2000, 20 if quick else 500)
    print("== query latency", flush=True)
    res["query"] = query_bench(5 if quick else 20, 2 if quick else 5)
    res["seconds"] = time.perf_counter() - t0
    return res


def history_row(res: dict) -> dict:
    ing, blk, q, x = res["ingest"], res["block"], res["query"], res["xor"]
    prom = ing["prometheus"] or {}
    fmt = lambda v, spec=".4g": "" if v is None else format(v, spec)  # noqa: E731
    return {"date": res["date"], "git_sha": res["git_sha"], "quick": int(res["quick"]),
            "ingest_ratio": fmt(ing.get("throughput_ratio")),
            "ingest_samples_per_s": fmt(ing["promring"]["samples_per_s"], ".0f"),
            "prometheus_samples_per_s": fmt(prom.get("samples_per_s"), ".0f"),
            "ingest_errors": ing["promring"]["errors"],
            "memory_ratio": fmt(ing.get("memory_ratio")),
            "bytes_per_series": fmt(ing["promring"]["rss_per_series"], ".0f"),
            "prometheus_bytes_per_series": fmt(prom.get("rss_per_series"), ".0f"),
            "disk_ratio": fmt(blk.get("size_ratio")), "bytes_per_sample": fmt(blk.get("bytes_per_sample")),
            "query_ratio": fmt(q["ratio"] if q else None),
            "xor_encode_per_s": fmt(x["encode"], ".0f"), "xor_decode_per_s": fmt(x["decode"], ".0f")}


def markdown(res: dict) -> str:
    ing, blk, q, x = res["ingest"], res["block"], res["query"], res["xor"]
    p, pr = ing["promring"], ing["prometheus"]
    na = "n/a"
    lines = [
        f"## Summary (generated by `python bench/run_all.py{' --quick' if res['quick'] else ''}`)",
        "",
        f"Last run {res['date']} at `{res['git_sha']}`, {res['seconds'] / 60:.1f} min. Ratio = promring ÷ "
        "Prometheus 2.42; history of the ratios in `bench/history.csv` and `bench/history.png`.",
        "",
        "| figure | promring | Prometheus 2.42 | ratio |",
        "|---|---|---|---|",
        f"| ingest samples/s, {ing['series']:,} series, {ing['per_request']} samples/request, {ing['inflight']} in "
        f"flight, WAL fsync none | {p['samples_per_s']:,.0f} ({p['errors']} errors, p99 {p['p99_ms']:.1f} ms) | "
        + (f"{pr['samples_per_s']:,.0f} ({pr['errors']} errors, p99 {pr['p99_ms']:.1f} ms) | "
           f"**{ing['throughput_ratio']:.2f}×** |" if pr else f"{na} | {na} |"),
    ]
    if "ingest_batch" in res and res["ingest_batch"]["prometheus"]:
        b = res["ingest_batch"]
        lines.append(f"| same, WAL fsync batch (group commit) | {b['promring']['samples_per_s']:,.0f} "
                     f"({b['promring']['errors']} errors) | {b['prometheus']['samples_per_s']:,.0f} | "
                     f"**{b['throughput_ratio']:.2f}×** |")
    lines += [
        f"| resident bytes per active series after ingest | {p['rss_per_series']:,.0f} | "
        + (f"{pr['rss_per_series']:,.0f} | **{ing['memory_ratio']:.2f}×** |" if pr else f"{na} | {na} |"),
        f"| bytes per sample, one 2 h block ({blk.get('samples', 0):,} samples; Prometheus = promtool) | "
        f"{blk.get('bytes_per_sample', float('nan')):.3f} | "
        + (f"{blk['promtool_bytes_per_sample']:.3f} | **{blk['size_ratio']:.4f}×** |" if "size_ratio" in blk
           else f"{na} | {na} |"),
        (f"| dashboard range queries, sum of medians (`bench/bench_query.py`) | {q['promring_ms']:.0f} ms | "
         f"{q['prometheus_ms']:.0f} ms | **{q['ratio']:.2f}×** |" if q else "| dashboard queries | n/a | n/a | n/a |"),
        f"| XOR encode / decode samples/s | {x['encode'] / 1e6:.1f} M / {x['decode'] / 1e6:.1f} M | – | – |",
    ]
    if q:
        lines += ["", "Dashboard queries (median ms):", "", q["table"]]
    return "\n".join(lines)


def record(res: dict, section: str) -> list[dict]:
    """BENCHMARKS.md's summary block, one row of bench/history.csv, bench/history.png redrawn."""
    write_generated_block(section, BEGIN, END, REPO / "BENCHMARKS.md")
    rows = append_history(history_row(res), BENCH / "history.csv", HISTORY_FIELDS)
    full = [r for r in rows if r.get("quick") in ("0", "", None)] or rows
    plot_history(full, [
        Panel("promring ÷ Prometheus 2.42", [Line(label, column(key)) for key, label in RATIOS],
              title="promring vs Prometheus 2.42, per benchmark run", log=True, reference=1.0),
        Panel("M samples/s", [Line("XOR encode", column("xor_encode_per_s", 1e6)),
                              Line("XOR decode", column("xor_decode_per_s", 1e6))])],
        BENCH / "history.png")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data, a smoke run (~1 min)")
    ap.add_argument("--write", action="store_true", help="record a --quick run too")
    ap.add_argument("--no-write", action="store_true", help="print only")
    a = ap.parse_args()
    res = run_all(a.quick)
    section = markdown(res)
    print("\n" + section)
    if a.no_write or (a.quick and not a.write):
        return
    rows = record(res, section)
    print(f"\nwrote BENCHMARKS.md, {BENCH / 'history.csv'} ({len(rows)} runs), {BENCH / 'history.png'}")


if __name__ == "__main__":
    main()
