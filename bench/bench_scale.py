"""Dashboard queries at scale (issue 13), Prometheus 2.42 and promring side by side in one run.

Generates 7,600 series x 24 h at a 30 s step (``--scale`` multiplies the series) as twelve 2 h
blocks written by promring's own block writer, serves copies of them with Prometheus 2.42
(``--storage.tsdb.path``; compaction off so its layout stays the same) and with
``promring store`` (filesystem bucket) + ``promring query`` (and with ``--thanos`` also the
reference peer's ``thanos store`` + ``thanos query`` over the same bucket), runs the dashboard
queries of the issue at 1 h / 6 h / 24 h ranges ending at the newest sample, checks that all
answer the same (within float tolerance), and prints a markdown table of promring / Prometheus
(and promring / Thanos) ratios of the cold run (first run of that query and range since start;
for the one-series row the median of the first runs of 21 other single series, none asked for
before: one first run of a few milliseconds moves with one hiccup) and of the warm median,
their geometric means, and each process's peak RSS (VmHWM).

Each run appends a row to bench/scale_history.csv and redraws bench/scale_history.png (the
geometric means over the runs, one line per scale) unless ``--no-history``;
``--benchmarks-md`` also replaces this scale's generated block in BENCHMARKS.md.

    python bench/bench_scale.py                      # small default: 1/4 of the series, ~3 min
    python bench/bench_scale.py --scale 1            # the issue's data set
    python bench/bench_scale.py --scale 4 --hours 6  # 4x the series
    python bench/bench_scale.py --scale 1 --thanos --keep /work/scale/s1 --benchmarks-md
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from harness import PrometheusProcess  # noqa: E402
from history import (Line, Panel, append_history, git_sha, plot_history,  # noqa: E402
                     write_generated_block)
from sidebyside import (HOUR_MS, POINTS, SMALL_S, Timing, compare_sides, geomean,  # noqa: E402
                        geomeans, peak_rss_mib, ratio_table, start_promring, start_thanos, stop_all)
from receiver.tsdb.block import write_block_from_samples  # noqa: E402

BENCH = REPO / "bench"
HISTORY_CSV, HISTORY_PNG = BENCH / "scale_history.csv", BENCH / "scale_history.png"

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
# Each query's short name in the history's cells columns, in QUERIES's order.
QUERY_KEYS = ("sum_rate", "hq", "topk", "count", "one", "raw", "avg")
RANGES_H = (1, 6, 24)
HISTORY_FIELDS = [
    "date", "git_sha", "scale", "hours", "series", "warm_runs", "load_avg",
    "geomean_cold", "geomean_warm", "one_series_warm",
    "rss_prometheus_mib", "rss_store_mib", "rss_query_mib",
    "thanos_geomean_cold", "thanos_geomean_warm", "rss_thanos_store_mib", "rss_thanos_query_mib",
    "answers", "cells", "thanos_cells", "note"]
BENCHMARKS_SECTION = "## Query speed and store memory at scale (issue 13)"


def dashboard_queries(scale: float) -> list[tuple[str, str]]:
    """(row name, PromQL) of the dashboard queries, the raw rows named by their series count."""
    raw_n = f"{round(RAW_SERIES * scale):,}"
    return [(name.replace("1,000", raw_n), q) for name, q in QUERIES]


# First runs of distinct series behind the one-series row's cold cells: 99 since session 26
# (21 from session 22, 7 before). In one run of 168 first runs per side at 1 h, the cell of
# each group of 21 ranged from 0.50x to 1.03x (Prometheus's slow stretches: a group median
# of 4.5 ms against its usual 1.9 ms) while the median of all 168 came out at 1.01x, and at
# 1.00x and 1.03x in two more runs: a median of 21 first runs of ~2 ms said more about which
# stretch it fell in than about the two servers.
COLD_SAMPLES = 99  # x 3 ranges: 297 of the 299 fresh series at the default --scale 0.25


def one_series_cold_variants(scale: float) -> Callable[[str, int], list[str]]:
    """compare_sides's cold_variants: for the one-series row at each range, COLD_SAMPLES
    selectors of other single series that no query has asked for by then (shard="1" ones,
    which the 1,000-series rows do not read; a new set per range), so its cold cells are a
    median of first runs, not one first run of a few milliseconds."""
    fresh = fresh_single_series(scale)

    def variants(name: str, hours: int) -> list[str]:
        if name != "one series":
            return []
        return [q for _, q in zip(range(COLD_SAMPLES), fresh)]
    return variants


def fresh_single_series(scale: float) -> Iterator[str]:
    """Selectors of single series no dashboard query reads (shard="1", newest instance
    first), each once."""
    nx, raw = round(X_SERIES * scale), round(RAW_SERIES * scale)
    return (f'x{{instance="i-{i:05d}"}}' for i in range(nx - 1, raw, -1))


def query_keys(scale: float) -> dict[str, str]:
    """Row name at ``scale`` -> the query's short key in the history."""
    return {name: key for (name, _), key in zip(dashboard_queries(scale), QUERY_KEYS)}


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



# -- history

def cells_text(timings: list[Timing], ours: str, ref: str, keys: dict[str, str]) -> str:
    """Per-cell ratios in one CSV field: ``key@<hours>h=<cold>/<warm>`` separated by spaces
    (``-`` where a value was not measured, as in backfilled rows); ``keys`` maps row names to
    QUERY_KEYS."""
    return " ".join(f"{keys[t.name]}@{t.hours}h={t.cold[ours] / t.cold[ref]:.2f}/"
                    f"{t.warm[ours] / t.warm[ref]:.2f}" for t in timings)


def parse_cells(text: str) -> dict[tuple[str, int], tuple[float | None, float | None]]:
    """The ``cells`` field back as {(key, hours): (cold, warm)}."""
    out = {}
    for cell in text.split():
        where, _, ratios = cell.partition("=")
        key, _, hours = where.partition("@")
        cold, _, warm = ratios.partition("/")
        out[(key, int(hours.rstrip("h")))] = tuple(None if v in ("", "-") else float(v)
                                                   for v in (cold, warm))
    return out  # type: ignore[return-value]


def history_row(timings: list[Timing], rss: dict[str, float], mismatches: list[str],
                scale: float, hours: int, series: int, warm: int | str, sha: str) -> dict:
    """One run as a row of HISTORY_FIELDS (ratios are promring / the other side); ``sha`` is
    the revision measured, taken when the run started."""
    keys = query_keys(scale)
    fmt = lambda v: "" if v is None else f"{v:.3g}"  # noqa: E731
    gc, gw = geomeans(timings, "promring", "Prometheus")
    one = [t.warm["promring"] / t.warm["Prometheus"] for t in timings if t.name == "one series"]
    row = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
           "git_sha": sha, "scale": f"{scale:g}", "hours": hours, "series": series,
           "warm_runs": warm, "load_avg": f"{os.getloadavg()[1]:.1f}",
           "geomean_cold": fmt(gc), "geomean_warm": fmt(gw), "one_series_warm": fmt(geomean(one)),
           "rss_prometheus_mib": f"{rss['Prometheus']:.0f}",
           "rss_store_mib": f"{rss['promring store']:.0f}",
           "rss_query_mib": f"{rss['promring query']:.0f}",
           "answers": "equal" if not mismatches else f"{len(mismatches)} differ",
           "cells": cells_text(timings, "promring", "Prometheus", keys), "note": "",
           **{k: "" for k in HISTORY_FIELDS if k.startswith(("thanos_", "rss_thanos_"))}}
    if "Thanos" in timings[0].cold:
        tc, tw = geomeans(timings, "promring", "Thanos")
        row.update(thanos_geomean_cold=fmt(tc), thanos_geomean_warm=fmt(tw),
                   rss_thanos_store_mib=f"{rss['thanos store']:.0f}",
                   rss_thanos_query_mib=f"{rss['thanos query']:.0f}",
                   thanos_cells=cells_text(timings, "promring", "Thanos", keys))
    return row


def history_panels(rows: list[dict]) -> list[Panel]:
    """Geometric means over the runs, one colour per data set (scale, and hours when not 24),
    warm solid and cold dashed; a second panel against Thanos once a run has that column."""
    groups = list(dict.fromkeys((r["scale"], r["hours"]) for r in rows))

    def lines(warm_key: str, cold_key: str | None) -> list[Line]:
        out = []
        for i, (scale, hours) in enumerate(groups):
            name = f"scale {scale}" + ("" if hours in ("24", "") else f", {hours} h")

            def value(key: str, scale=scale, hours=hours):
                return lambda r: (float(r[key]) if r["scale"] == scale and r["hours"] == hours
                                  and r.get(key) else None)
            out.append(Line(f"{name} warm", value(warm_key), {"color": f"C{i}"}))
            if cold_key:
                out.append(Line(f"{name} cold", value(cold_key),
                                {"color": f"C{i}", "ls": "--", "marker": "s"}))
        return out
    panels = [Panel("promring ÷ Prometheus 2.42", lines("geomean_warm", "geomean_cold"),
                    log=True, reference=1.0,
                    title="bench_scale.py: geometric mean over the dashboard queries, per run"),
              Panel("one series, warm", lines("one_series_warm", None), log=True, reference=1.0,
                    title="the one-series row: promring ÷ Prometheus 2.42, warm "
                          "(geometric mean over the ranges)")]
    if any(r.get("thanos_geomean_warm") for r in rows):
        panels.append(Panel("promring ÷ Thanos", lines("thanos_geomean_warm",
                                                      "thanos_geomean_cold"),
                            log=True, reference=1.0, title="against Thanos query + store"))
    return panels


def record(row: dict, text: str, benchmarks_md: bool) -> None:
    rows = append_history(row, HISTORY_CSV, HISTORY_FIELDS)
    plot_history(rows, history_panels(rows), HISTORY_PNG)
    print(f"\nappended to {HISTORY_CSV} ({len(rows)} runs), redrew {HISTORY_PNG}")
    if benchmarks_md:
        s = row["scale"]
        write_generated_block(
            f"### Latest `bench_scale.py --scale {s}` run (generated)\n\n"
            f"{row['date']} at `{row['git_sha']}`, load average {row['load_avg']}.\n\n{text}\n\n"
            "Every run's geometric means are in `bench/scale_history.csv`, plotted in "
            "`bench/scale_history.png`:\n\n![bench_scale history](bench/scale_history.png)",
            f"<!-- bench_scale:begin scale={s} -->", f"<!-- bench_scale:end scale={s} -->",
            REPO / "BENCHMARKS.md", after_heading=BENCHMARKS_SECTION)
        print("replaced its block in BENCHMARKS.md")


# -- run

def _ms(seconds: float) -> str:
    """Milliseconds, with a decimal below 10 ms (where one millisecond is 20-50 %)."""
    return f"{seconds * 1000:.1f}" if seconds < 0.01 else f"{seconds * 1000:.0f}"


def report(timings: list[Timing], rss: dict[str, float], mismatches: list[str], names: list[str],
           head: str, warm: int, warm_small: int) -> str:
    sides = list(timings[0].cold)
    small = (f" ({max(warm, warm_small)} for a query whose cold runs all took under "
             f"{SMALL_S * 1000:.0f} ms)" if warm_small > warm else "")
    lines = [head + f"; ratio = promring / Prometheus 2.42, cold = first run of that query and "
             f"range (one series: the median of the first runs of {COLD_SAMPLES} other single "
             f"series, none asked for before), warm = median of {warm}{small}.", "",
             *ratio_table(timings, "promring", "Prometheus", names), "",
             "Warm medians (ms), " + " / ".join(sides) + ": " + "; ".join(
                 f"{t.name} {t.hours} h " + "/".join(_ms(t.warm[s]) for s in sides)
                 for t in timings),
             "", f"One-series cold medians (ms, of {COLD_SAMPLES} first runs), "
             + " / ".join(sides) + ": " + "; ".join(
                 f"{t.hours} h " + "/".join(_ms(t.cold[s]) for s in sides)
                 for t in timings if t.name == "one series")]
    if "Thanos" in sides:
        lines += ["", "promring / Thanos v0.42.4 (`thanos store` + `thanos query` over the same "
                  "bucket):", "", *ratio_table(timings, "promring", "Thanos", names)]
    lines += ["", "Peak RSS (VmHWM): " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()),
              "", "Answers: " + ("all equal" if not mismatches else
                                 f"{len(mismatches)} DIFFER: " + "; ".join(mismatches))]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.25,
                    help="series multiplier (1 = 7,600 series, 4 = 30,400)")
    ap.add_argument("--hours", type=int, default=24, help="hours of data (2 h blocks)")
    ap.add_argument("--warm", type=int, default=3, help="warm runs per query (median)")
    ap.add_argument("--warm-small", type=int, default=15,
                    help=f"warm runs of a query whose cold runs all took under "
                         f"{SMALL_S * 1000:.0f} ms (median)")
    ap.add_argument("--keep", type=Path, help="keep the generated blocks here (reused if present)")
    ap.add_argument("--out", type=Path, help="also write the markdown table to this file")
    ap.add_argument("--thanos", action="store_true",
                    help="also thanos store + thanos query (the reference peer) as a third side")
    ap.add_argument("--no-history", action="store_true",
                    help=f"do not append to {HISTORY_CSV.name} nor redraw {HISTORY_PNG.name}")
    ap.add_argument("--benchmarks-md", action="store_true",
                    help="replace this scale's generated block in BENCHMARKS.md")
    a = ap.parse_args()
    sha = git_sha((HISTORY_CSV, HISTORY_PNG))
    ranges = [h for h in RANGES_H if h <= a.hours]
    queries = dashboard_queries(a.scale)
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
        ranges = [h for h in RANGES_H if h <= a.hours]
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
    cfg = tmp / "objstore.yml"
    cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
    procs: dict[str, subprocess.Popen] = {}
    logs = open(tmp / "servers.log", "ab")
    try:
        prom.start()
        started, ours = start_promring(tmp, cfg, logs)
        procs.update(started)
        apis = {"Prometheus": prom.api, "promring": ours}
        if a.thanos:
            started, apis["Thanos"] = start_thanos(tmp, cfg, logs, end_ms)
            procs.update(started)
        timings, mismatches = compare_sides(apis, "promring", queries, ranges, end_ms, a.warm,
                                            a.warm_small,
                                            cold_variants=one_series_cold_variants(a.scale))
        rss = {"Prometheus": peak_rss_mib(prom.proc.pid),  # type: ignore[union-attr]
               **{k: peak_rss_mib(p.pid) for k, p in procs.items()}}
    finally:
        stop_all(procs.values())
        prom.stop()
        logs.close()

    head = (f"{n_series:,} series x {a.hours} h at a {STEP_MS // 1000} s step "
            f"({n_samples:,} samples, {a.hours // 2} 2 h blocks, {size / 1e6:.0f} MB), "
            f"range queries of {POINTS} steps ending at the newest sample")
    text = report(timings, rss, mismatches, [name for name, _ in queries], head, a.warm,
                  a.warm_small)
    print("\n" + text)
    if a.out:
        a.out.write_text(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    if not a.no_history:
        record(history_row(timings, rss, mismatches, a.scale, a.hours, n_series,
                           f"{a.warm}/{max(a.warm, a.warm_small)}", sha),
               text, a.benchmarks_md)
    if mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
