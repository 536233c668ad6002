"""bench_scale's cold one-series cell alone, from many first runs (issue 13): Prometheus 2.42
and ``promring store`` + ``promring query`` over bench_scale.py's blocks, in bench_scale's
order -- at each range its four aggregations first (a cold run and three warm, sides in turn),
then ``--groups`` x 21 single series no query asked for before, each asked of every side in
turn. Prints, per range, the cell each group of 21 would have given (what bench_scale showed
before session 26), the cell of all of them pooled, and each side's median in ms.

A median of 21 first runs of ~2 ms moves with whichever stretch of the machine it falls in: in
one run the groups' cells at 1 h went from 0.50x to 1.03x (two groups met Prometheus's slow
stretches, 3.5 and 4.5 ms against its usual 1.9) while all 168 pooled gave 1.01x, and 1.00x
and 1.03x in two more runs. bench_scale's cell is now the median of 99 first runs.

    python bench/bench_one_series_cold.py --blocks /work/scale/s4 --scale 4 --groups 8
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_fixed_cost import prometheus_over  # noqa: E402
from bench_scale import STEP_MS, dashboard_queries, fresh_single_series  # noqa: E402
from sidebyside import HOUR_MS, POINTS, run_query, start_promring, stop_all  # noqa: E402

GROUP = 21  # bench_scale's first runs per cell before session 26


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--scale", type=float, required=True, help="the blocks' bench_scale --scale")
    ap.add_argument("--groups", type=int, default=8, help="groups of 21 first runs per range")
    ap.add_argument("--hours", default="1,6", help="ranges in hours, comma-separated")
    a = ap.parse_args()
    metas = sorted(a.blocks.glob("*/meta.json"))
    end_ms = json.loads(metas[0].read_text())["minTime"] + 2 * len(metas) * HOUR_MS - STEP_MS
    tmp = Path(tempfile.mkdtemp(prefix="bench-one-series-cold-"))
    prom = prometheus_over(a.blocks, tmp / "prom")
    shutil.copytree(a.blocks, tmp / "bucket")
    cfg = tmp / "objstore.yml"
    cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
    logs = open(tmp / "servers.log", "ab")
    procs: dict = {}
    try:
        prom.start()
        started, ours = start_promring(tmp, cfg, logs)
        procs.update(started)
        apis = {"Prometheus": prom.api, "promring": ours}
        sess = requests.Session()
        fresh = fresh_single_series(a.scale)
        for h in map(int, a.hours.split(",")):
            params = {"start": (end_ms - h * HOUR_MS) / 1000, "end": end_ms / 1000,
                      "step": h * 3600 / POINTS}
            for _, q in dashboard_queries(a.scale)[:4]:  # a cold run and three warm each
                for _ in range(4):
                    for api in apis.values():
                        run_query(sess, api, dict(params, query=q))
            took: dict[str, list[float]] = {side: [] for side in apis}
            for _ in range(a.groups * GROUP):
                v = dict(params, query=next(fresh))
                for side, api in apis.items():
                    took[side].append(run_query(sess, api, v)[0])
            ours_t, ref = took["promring"], took["Prometheus"]
            cells = [statistics.median(ours_t[g:g + GROUP]) / statistics.median(ref[g:g + GROUP])
                     for g in range(0, len(ref), GROUP)]
            print(f"{h} h: cell per group of {GROUP}: " + " ".join(f"{c:.2f}x" for c in cells)
                  + f"; all {len(ref)} pooled: {statistics.median(ours_t) / statistics.median(ref):.3f}x"
                  f" (medians: Prometheus {statistics.median(ref) * 1e3:.2f} ms, promring "
                  f"{statistics.median(ours_t) * 1e3:.2f} ms)", flush=True)
    finally:
        stop_all(procs.values())
        prom.stop()
        logs.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
