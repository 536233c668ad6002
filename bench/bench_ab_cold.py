"""Two promring builds against each other on bench_scale's cold one-series cell (issue 13), with
Prometheus 2.42 in between as in bench_scale, so a change's effect is measured under the same
conditions as the cell it is meant to move.

A separate bench_scale run per build cannot show a change of a few percent here: the cell is a
median of first runs of a few milliseconds, and one build's cell moved between 0.84x and 1.05x
over four runs on this machine (Prometheus has slow rounds too). This runs Prometheus,
promring A and promring B side by side over the same blocks. Each round first runs the count
query three times on every side (as bench_scale's warm runs of the row before), then asks each
side in turn for ``--series`` single series no query asked for before (a new matcher and
query string each: every cache misses), the sides' order going through all six permutations
(each side follows each other side equally often: a promring run after the other promring's
finds the interpreter's code in the caches, after Prometheus's it does not; rotating one
order gave B/A 0.96 for two equal builds). It prints each round's
medians and ratios, B/A per round (whose spread is the noise floor, about +-5% here), the
median over all rounds, and each promring process's median CPU per query (from the scheduler's
counters). Answers are compared; any difference fails the run.

B is another checkout (``--b-repo``, put first on PYTHONPATH: the editable install would
otherwise map the packages to this one) and/or extra environment (``--b-env KEY=VALUE``).

    python bench/bench_ab_cold.py --blocks /work/scale/s4 --scale 4 --b-repo /tmp/other
    python bench/bench_ab_cold.py --blocks /work/scale/s4 --scale 4 \\
        --b-env GLIBC_TUNABLES=glibc.malloc.hugetlb=1 --hours 1,6 --rounds 6
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

import requests  # noqa: E402

from bench_fixed_cost import cpu_s, prometheus_over  # noqa: E402
from bench_scale import QUERIES, fresh_single_series  # noqa: E402
from sidebyside import HOUR_MS, POINTS, run_query, same_answer, start_promring, stop_all  # noqa: E402

COUNT = QUERIES[3][1]  # the row before the one-series row in bench_scale


def start_side(work: Path, bucket_cfg: Path, log, repo: Path | None,
               env: dict[str, str]) -> tuple[list, str]:
    """``promring store`` + ``promring query`` of ``repo`` (None: this checkout) with ``env``
    added; (processes, API URL)."""
    saved = dict(os.environ)
    os.environ.update(env)
    if repo is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(repo.resolve())] + [p for p in [env.get("PYTHONPATH")] if p])
    try:
        work.mkdir()
        procs, api = start_promring(work, bucket_cfg, log)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return list(procs.values()), api


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--scale", type=float, default=4, help="the scale the blocks were made at")
    ap.add_argument("--hours", default="1,6", help="ranges, comma-separated")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--series", type=int, default=7, help="first runs per side per round")
    ap.add_argument("--b-repo", type=Path, help="B's checkout (default: this one)")
    ap.add_argument("--b-env", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    end_ms = json.loads(sorted(a.blocks.glob("*/meta.json"))[-1].read_text())["maxTime"] - 30_000
    work = Path(tempfile.mkdtemp(prefix="ab-cold-"))
    procs: list = []
    prom = log = None
    try:
        prom = prometheus_over(a.blocks, work / "prom")
        prom.start()
        shutil.copytree(a.blocks, work / "bucket")
        cfg = work / "objstore.yml"
        cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {work / 'bucket'}\n")
        log = open(work / "servers.log", "ab")
        apis = {"P": prom.api}
        pids: dict[str, list[int]] = {}  # side -> its store's and querier's pids
        for side, repo, env in (("A", None, {}),
                                ("B", a.b_repo, dict(kv.split("=", 1) for kv in a.b_env))):
            started, apis[side] = start_side(work / side, cfg, log, repo, env)
            procs += started
            pids[side] = [p.pid for p in started]
        sess = requests.Session()
        fresh = fresh_single_series(a.scale)
        orders = itertools.cycle(itertools.permutations(apis))
        for h in map(int, a.hours.split(",")):
            params = {"start": (end_ms - h * HOUR_MS) / 1000, "end": end_ms / 1000,
                      "step": h * 3600 / POINTS}
            for _, q in QUERIES[:4]:  # as bench_scale: the aggregations ran first
                for api in apis.values():
                    run_query(sess, api, dict(params, query=q))
            firsts: dict[str, list[float]] = {s: [] for s in apis}
            cpu: dict[str, list[list[float]]] = {s: [[], []] for s in pids}  # store, query
            ba = []
            for r in range(a.rounds):
                for _ in range(3):
                    for api in apis.values():
                        run_query(sess, api, dict(params, query=COUNT))
                took: dict[str, list[float]] = {s: [] for s in apis}
                for _ in range(a.series):
                    q = next(fresh)
                    got = {}
                    for side in next(orders):
                        c0 = list(map(cpu_s, pids.get(side, ())))
                        t, got[side] = run_query(sess, apis[side], dict(params, query=q))
                        took[side].append(t)
                        for k, (pid, c) in enumerate(zip(pids.get(side, ()), c0)):
                            cpu[side][k].append(cpu_s(pid) - c)
                    for side in "AB":
                        diff = same_answer(got["P"], got[side])
                        if diff:
                            raise SystemExit(f"{q} {h} h: {side} differs from Prometheus: {diff}")
                m = {s: statistics.median(v) for s, v in took.items()}
                for s in apis:
                    firsts[s] += took[s]
                ba.append(m["B"] / m["A"])
                print(f"{h} h round {r}: " + ", ".join(f"{s} {m[s] * 1e3:.2f} ms" for s in apis)
                      + f"; A/P {m['A'] / m['P']:.2f}x, B/P {m['B'] / m['P']:.2f}x, "
                      f"B/A {ba[-1]:.2f}", flush=True)
            m = {s: statistics.median(v) for s, v in firsts.items()}
            print(f"== {h} h, median of {len(firsts['P'])} first runs per side: "
                  f"A/P {m['A'] / m['P']:.3f}x, B/P {m['B'] / m['P']:.3f}x, B/A {m['B'] / m['A']:.3f}"
                  f"; B/A per round {min(ba):.2f}-{max(ba):.2f}", flush=True)
            print("   CPU per query (median, ms), store / query: " + ", ".join(
                f"{s} {statistics.median(c[0]) * 1e3:.3f} / {statistics.median(c[1]) * 1e3:.3f}"
                for s, c in cpu.items()), flush=True)
    finally:
        stop_all(procs)
        if prom is not None:
            prom.stop()
        if log is not None:
            log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
