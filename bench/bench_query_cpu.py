"""Server CPU per query, side by side: bench_query.py's dashboard (``promring up``) or
bench_scale.py's blocks (``promring store`` + ``promring query``) against Prometheus 2.42.

On a shared, loaded machine wall-clock medians swing by 2x between runs; the CPU time each
server process spends on a query (utime + stime from /proc, summed over the promring processes)
moves far less, so before/after comparisons read it as well as wall time.

    python bench/bench_query_cpu.py dashboard --rounds 7
    python bench/bench_scale.py --keep /tmp/blocks         # once, writes the blocks
    python bench/bench_query_cpu.py scale --blocks /tmp/blocks --rounds 3
    python bench/bench_query_cpu.py scale --blocks /tmp/blocks --profile q.txt   # py-spy raw

Prints per query the wall medians, mean CPU ms per query and the promring / Prometheus ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for p in (BENCH, REPO / "tests", REPO / "tests" / "e2e", REPO):
    sys.path.insert(0, str(p))

from harness import PrometheusProcess, PromringProcess, free_port, promring_cmd, wait_ready  # noqa: E402


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dashboard(a, stack: list) -> tuple[int, list[int], list[tuple[str, str, dict]]]:
    """bench_query.py's data pushed to Prometheus and ``promring up``."""
    from bench_query import DASHBOARD, load
    from test_promql_differential import INTERVAL_MS, ROUNDS, make_data
    tmp = Path(tempfile.mkdtemp(prefix="bench-qcpu-"))
    stack.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    base = int(time.time() * 1000) // 60_000 * 60_000 - ROUNDS * INTERVAL_MS // 60_000 * 60_000
    t0 = base + 3_300
    data = make_data(t0, [f"demo.promlabs.com:{10000 + i}" for i in range(a.instances)])
    prom = PrometheusProcess(tmp / "prom", "global: {}\n", "--web.enable-remote-write-receiver").start()
    stack.append(prom.stop)
    pr = PromringProcess.up(tmp / "promring" / "data")
    stack.append(pr.stop)
    load([f"http://127.0.0.1:{prom.port}/api/v1/write", pr.write_url], data, t0)
    time.sleep(1.0)
    params = {"start": (base + 20 * 60_000 + 17_000) / 1000, "end": (base + 49 * 60_000 + 17_000) / 1000,
              "step": 15}
    work = [(name, q, dict(params, query=q)) for name, q in DASHBOARD]
    return prom.proc.pid, [pr.proc.pid], [(n, f"{prom.api}|{pr.api}", p) for n, _, p in work]


def scale(a, stack: list) -> tuple[int, list[int], list[tuple[str, str, dict]]]:
    """bench_scale.py's blocks (from its --keep directory) in Prometheus and store + query."""
    from bench_scale import HOUR_MS, POINTS, QUERIES, STEP_MS
    metas = sorted(a.blocks.glob("*/meta.json"))
    if not metas:
        sys.exit(f"no blocks under {a.blocks}: run bench_scale.py --keep {a.blocks} first")
    t0 = json.loads(metas[0].read_text())["minTime"]
    end_ms = t0 + 2 * len(metas) * HOUR_MS - STEP_MS
    tmp = Path(tempfile.mkdtemp(prefix="bench-qcpu-"))
    stack.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    shutil.copytree(a.blocks, tmp / "prom" / "tsdb")
    prom = PrometheusProcess(tmp / "prom", "global: {}\n", "--storage.tsdb.retention.time=10y",
                             "--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h")
    shutil.copytree(a.blocks, tmp / "bucket")
    (tmp / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
    sg, sh, qh = free_port(), free_port(), free_port()
    logs = open(tmp / "promring.log", "ab")
    stack.append(logs.close)
    prom.start()
    stack.append(prom.stop)
    procs = []

    def stop() -> None:
        for p in procs:
            p.terminate()
            p.wait(30)
    stack.append(stop)
    procs.append(subprocess.Popen(promring_cmd() + [
        "store", "--data-dir", str(tmp / "store"), "--objstore.config-file", str(tmp / "objstore.yml"),
        "--grpc-address", f"127.0.0.1:{sg}", "--http-address", f"127.0.0.1:{sh}", "--log.level", "warn"],
        stdout=logs, stderr=logs))
    wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=600, proc=procs[0])
    procs.append(subprocess.Popen(promring_cmd() + [
        "query", "--endpoint", f"127.0.0.1:{sg}", "--grpc-address", "127.0.0.1:0",
        "--http-address", f"127.0.0.1:{qh}", "--log.level", "warn"], stdout=logs, stderr=logs))
    wait_ready(f"http://127.0.0.1:{qh}/-/ready", timeout=60, proc=procs[1])
    work = []
    for h in a.ranges:
        params = {"start": (end_ms - h * HOUR_MS) / 1000, "end": end_ms / 1000, "step": h * 3600 / POINTS}
        apis = f"{prom.api}|http://127.0.0.1:{qh}/api/v1"
        work += [(f"{name.replace('1,000', 'shard=0')} {h} h", apis, dict(params, query=q))
                 for name, q in QUERIES]
    return prom.proc.pid, [p.pid for p in procs], work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("setup", choices=("dashboard", "scale"))
    ap.add_argument("--rounds", type=int, default=5, help="timed runs of every query (after a warm-up)")
    ap.add_argument("--instances", type=int, default=20, help="dashboard: demo instances")
    ap.add_argument("--blocks", type=Path, default=Path("/tmp/bench-scale-blocks"), help="scale: block dir")
    ap.add_argument("--ranges", type=lambda s: [int(x) for x in s.split(",")], default=[1, 6],
                    help="scale: query ranges in hours")
    ap.add_argument("--profile", help="py-spy raw profile of the promring query process to this file")
    a = ap.parse_args()
    stack: list = []
    try:
        prom_pid, our_pids, work = (dashboard if a.setup == "dashboard" else scale)(a, stack)
        sess = requests.Session()

        def run(api: str, params: dict) -> None:
            sess.get(f"{api}/query_range", params=params, timeout=600).raise_for_status()
        for _, apis, p in work:
            for api in apis.split("|"):
                run(api, p)
        spy = None
        if a.profile:
            spy = subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                                    "record", "-f", "raw", "-r", "200", "-o", a.profile, "--pid", str(our_pids[-1])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        res: dict[str, list[list[float]]] = {n: [[], [], [], []] for n, _, _ in work}
        for _ in range(a.rounds):
            for n, apis, p in work:  # alternately, so load from elsewhere hits both alike
                for k, (api, pids) in enumerate(zip(apis.split("|"), ([prom_pid], our_pids))):
                    c0, t = sum(map(cpu_s, pids)), time.perf_counter()
                    run(api, p)
                    res[n][k].append(time.perf_counter() - t)
                    res[n][k + 2].append(sum(map(cpu_s, pids)) - c0)
        if spy is not None:
            spy.send_signal(2)
            spy.wait()
        print(f"\nload average {os.getloadavg()[0]:.1f}; {a.rounds} rounds; ratio = promring / Prometheus 2.42\n")
        print("| query | wall ms Prometheus / promring | wall ratio | CPU ms Prometheus / promring | CPU ratio |")
        print("|---|---|---|---|---|")
        tot = [0.0] * 4
        for n, (pw, ow, pc, oc) in res.items():
            v = [statistics.median(pw) * 1e3, statistics.median(ow) * 1e3,
                 statistics.fmean(pc) * 1e3, statistics.fmean(oc) * 1e3]
            tot = [x + y for x, y in zip(tot, v)]
            print(f"| {n} | {v[0]:.1f} / {v[1]:.1f} | {v[1] / v[0]:.2f}x | {v[2]:.1f} / {v[3]:.1f} | "
                  f"{v[3] / v[2] if v[2] else float('nan'):.2f}x |")
        print(f"| **total** | {tot[0]:.1f} / {tot[1]:.1f} | {tot[1] / tot[0]:.2f}x | {tot[2]:.1f} / {tot[3]:.1f} | "
              f"{tot[3] / tot[2]:.2f}x |")
    finally:
        for f in reversed(stack):
            f()


if __name__ == "__main__":
    main()
