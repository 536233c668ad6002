"""What the first small query after big ones costs (issue 13): bench_scale's one-series cold cell
in its real setting, taken apart per process.

In bench_scale the one-series cold cell is the first run of ``x{instance="i-00007"}`` at a range,
right after the four aggregation queries at that range ran (each once cold and three times
warm, on every server in turn). This starts Prometheus 2.42 and ``promring store`` +
``promring query`` over copies of bench_scale's blocks and, per round and range, measures three
one-series queries on each server, each asking for a series never asked before:

* ``after-big``: right after the aggregation queries (run as bench_scale runs them);
* ``after-pause``: another fresh series after a quiet pause (``--pause-ms``), no big query
  between: the cold-series cost on its own;
* ``repeat``: the after-big query string again after a pause (series and string now known).

For each it records wall time, CPU time per process (``/proc/PID/task/*/schedstat``: ns, all
threads) and minor page faults (``/proc/PID/stat``), and with ``--gc-trace`` the Python cyclic
GC collections (generation, time) that ran in each promring process during the query (a
throwaway ``sitecustomize`` on the children's PYTHONPATH adds a ``gc.callbacks`` hook that logs
every collection to a file; nothing of it is in promring's code). Medians over ``--rounds``.

    python bench/bench_after_big.py --blocks /work/scale/s1 --rounds 6 --gc-trace
    python bench/bench_after_big.py --blocks /work/scale/s4 --hours 1,24 --other /work/main
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode
from urllib.request import urlopen

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from harness import PrometheusProcess  # noqa: E402
from sidebyside import HOUR_MS, POINTS, stop_all  # noqa: E402
from bench_fixed_cost import AGGREGATIONS, COLD_QUERY, cpu_s, start_promring  # noqa: E402
from bench_scale import X_SERIES  # noqa: E402

SCENARIOS = ("after-big", "after-pause", "repeat")
WARM_RUNS = 3  # bench_scale's warm runs of each aggregation after its cold one
AGG_NAMES = ("sum-rate", "hist-q", "topk", "count")  # AGGREGATIONS's short names

# The throwaway GC hook: one line per collection (pid, generation, ns, collected) to a file.
GC_HOOK = """\
import gc, os, time
_path = os.environ.get("AFTERBIG_GC_LOG")
if _path:
    _f = open(f"{_path}.{os.getpid()}", "a", buffering=1)
    _t = [0]
    def _cb(phase, info):
        if phase == "start":
            _t[0] = time.perf_counter_ns()
        else:
            _f.write(f"{info['generation']} {time.perf_counter_ns() - _t[0]} {info['collected']}\\n")
    gc.callbacks.append(_cb)
"""


def store_cache_counts(pid: int) -> dict[str, float]:
    """The store's index-cache counters (requests, hits, evictions by item type) from its
    /metrics, found through the --http-address of its command line."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    addr = args[args.index("--http-address") + 1]
    text = urlopen(f"http://{addr}/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        for what in ("requests", "hits", "items_evicted"):
            prefix = f"thanos_store_index_cache_{what}_total{{item_type=\""
            if line.startswith(prefix):
                name, value = line.rsplit(" ", 1)
                out[f"{what}:{name[len(prefix):].split(chr(34))[0]}"] = float(value)
    return out


def count_diff(after: dict[str, float], before: dict[str, float]) -> str:
    return " ".join(f"{k}={v - before.get(k, 0):.0f}" for k, v in sorted(after.items())
                    if v != before.get(k, 0))


def minflt(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


class GcLog:
    """Collections logged by GC_HOOK in one process since the last ``take``."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def take(self) -> list[tuple[int, int]]:
        if not self.path.exists():
            return []
        with open(self.path) as f:
            f.seek(self.offset)
            text = f.read()
            self.offset = f.tell()
        return [(int(g), int(ns)) for g, ns, _ in (line.split() for line in text.splitlines())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--other", type=Path, help="a second promring checkout to compare")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hours", type=lambda s: [int(x) for x in s.split(",")], default=[1, 6, 24])
    ap.add_argument("--pause-ms", type=float, default=300.0)
    ap.add_argument("--gc-trace", action="store_true", help="log the promring processes' GC")
    a = ap.parse_args()
    if 3 * a.rounds * len(a.hours) > X_SERIES:
        sys.exit("too many rounds for the fresh series")
    metas = sorted(a.blocks.glob("*/meta.json"))
    if not metas:
        sys.exit(f"no blocks under {a.blocks}")
    end_ms = json.loads(metas[0].read_text())["minTime"] + 2 * len(metas) * HOUR_MS - 30_000
    tmp = Path(tempfile.mkdtemp(prefix="bench-afterbig-"))
    if a.gc_trace:
        (tmp / "hook").mkdir()
        (tmp / "hook" / "sitecustomize.py").write_text(GC_HOOK)
        os.environ["PYTHONPATH"] = str(tmp / "hook")
        os.environ["AFTERBIG_GC_LOG"] = str(tmp / "gc")
    shutil.copytree(a.blocks, tmp / "prom" / "tsdb")
    prom = PrometheusProcess(tmp / "prom", "global: {}\n", "--storage.tsdb.retention.time=10y",
                             "--storage.tsdb.min-block-duration=2h",
                             "--storage.tsdb.max-block-duration=2h")
    procs: list[subprocess.Popen] = []
    try:
        prom.start()
        servers = {"Prometheus": (prom.port, [prom.proc.pid])}  # type: ignore[union-attr]
        servers["promring"] = start_promring(REPO, a.blocks, tmp / "this", procs)
        if a.other:
            servers["other"] = start_promring(a.other.resolve(), a.blocks, tmp / "other", procs)
        gclogs = {pid: GcLog(Path(f"{tmp / 'gc'}.{pid}"))
                  for _, pids in servers.values() for pid in pids}
        conns = {k: http.client.HTTPConnection("127.0.0.1", port)
                 for k, (port, _) in servers.items()}

        def run(name: str, query: str, hours: int) -> None:
            q = urlencode({"query": query, "start": (end_ms - hours * HOUR_MS) / 1000,
                           "end": end_ms / 1000, "step": hours * 3600 / POINTS})
            for attempt in (0, 1):
                c = conns[name]
                try:
                    c.request("GET", "/api/v1/query_range?" + q,
                              headers={"Accept-Encoding": "gzip"})
                    r = c.getresponse()
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError):
                    c.close()
                    if attempt:
                        raise
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"{name}: HTTP {r.status}: {body[:200]!r}")

        # results[hours][scenario][server] -> list of (wall ms, [cpu ms per pid], [flt], gcs)
        results: dict = {h: {s: {k: [] for k in servers} for s in (*SCENARIOS, *AGG_NAMES)}
                         for h in a.hours}

        def measure(h: int, scenario: str, query: str) -> None:
            """One run of ``query`` on every server in turn, recorded under ``scenario``."""
            for name, (_, pids) in servers.items():
                for pid in pids:
                    gclogs[pid].take()
                c0, f0 = [cpu_s(p) for p in pids], [minflt(p) for p in pids]
                t = time.perf_counter()
                run(name, query, h)
                wall = time.perf_counter() - t
                cpu = [(cpu_s(p) - c) * 1e3 for p, c in zip(pids, c0)]
                flt = [minflt(p) - f for p, f in zip(pids, f0)]
                gcs = [gclogs[p].take() for p in pids]
                results[h][scenario][name].append((wall * 1e3, cpu, flt, gcs))

        fresh = iter(range(X_SERIES))
        for rnd in range(a.rounds):
            for h in a.hours:
                store = servers["promring"][1][0]
                counts = store_cache_counts(store)
                for agg, agg_name in zip(AGGREGATIONS, AGG_NAMES):  # as bench_scale: cold,
                    for _ in range(1 + WARM_RUNS):  # then warm runs, servers in turn
                        measure(h, agg_name, agg)
                after_big = COLD_QUERY % next(fresh)
                counts_big = store_cache_counts(store)
                measure(h, "after-big", after_big)
                counts_small = store_cache_counts(store)
                print(f"  {h} h store cache, aggregations: {count_diff(counts_big, counts)}\n"
                      f"  {h} h store cache, after-big query: {count_diff(counts_small, counts_big)}")
                time.sleep(a.pause_ms / 1e3)
                measure(h, "after-pause", COLD_QUERY % next(fresh))
                time.sleep(a.pause_ms / 1e3)
                measure(h, "repeat", after_big)
            print(f"round {rnd + 1}/{a.rounds} done", flush=True)
        load = os.getloadavg()[0]
        print(f"\nmedians over {a.rounds} rounds (load average {load:.1f}); CPU and faults per "
              "process (promring: store + query); gc: collections over all rounds by generation 0/1/2, "
              "and their mean ms per query")
        for h in a.hours:
            for s in (*AGG_NAMES, *SCENARIOS):
                for name, (_, pids) in servers.items():
                    rows = results[h][s][name]
                    wall = statistics.median(r[0] for r in rows)
                    cpu = [statistics.median(r[1][i] for r in rows) for i in range(len(pids))]
                    flt = [statistics.median(r[2][i] for r in rows) for i in range(len(pids))]
                    line = (f"{h:>2} h {s:<11} {name:<10} wall {wall:7.2f} ms  CPU "
                            + " + ".join(f"{c:.2f}" for c in cpu) + " ms  minflt "
                            + " + ".join(f"{f:.0f}" for f in flt))
                    if a.gc_trace and name != "Prometheus":
                        for i, pid in enumerate(pids):
                            gens = [g for r in rows for g, _ in r[3][i]]
                            ms = sum(ns for r in rows for _, ns in r[3][i]) / 1e6
                            line += (f"  gc[{i}] " + "/".join(str(gens.count(g)) for g in range(3))
                                     + f" {ms / len(rows):.2f} ms")
                    print(line)
        if a.gc_trace:
            for name, (_, pids) in servers.items():
                for pid in pids if name != "Prometheus" else []:
                    gcs = [(int(g), int(ns)) for g, ns, _ in
                           (line.split() for line in gclogs[pid].path.read_text().splitlines())]
                    print(f"{name} pid {pid}: all collections since start by generation "
                          + ", ".join(f"{g}: {sum(1 for x, _ in gcs if x == g)} "
                                      f"({sum(ns for x, ns in gcs if x == g) / 1e6:.1f} ms)"
                                      for g in range(3)))
    finally:
        stop_all(procs)
        prom.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
