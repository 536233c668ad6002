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
``--promring EXE`` (repeatable) serves the same data with other builds too, queried in turn in
the same run, e.g. main's and this checkout's virtualenv; the last column is then the last
build's CPU over the first's:

    python bench/bench_query_cpu.py scale --promring /old/.venv/bin/promring --promring .venv/bin/promring
    python bench/bench_query_cpu.py scale --only "one series" --rounds 200   # one query's fixed cost
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


Target = tuple[str, list[int], str]  # (name, server pids to sum CPU over, query API base URL)


def promring_builds(a) -> list[tuple[str, list[str]]]:
    """(name, command) of each promring build to measure: ``--promring`` or this checkout's."""
    def name(exe: str) -> str:  # the checkout of .../<checkout>/.venv/bin/promring
        parts = Path(exe).absolute().parts
        return parts[-4] if len(parts) >= 4 and parts[-3] == ".venv" else exe
    return [(name(exe), [exe]) for exe in a.promring] or [("promring", promring_cmd())]


def dashboard(a, stack: list) -> tuple[list[Target], list[tuple[str, dict]]]:
    """bench_query.py's data pushed to Prometheus and to a ``promring up`` of each build."""
    from bench_query import DASHBOARD, load
    from test_promql_differential import INTERVAL_MS, ROUNDS, make_data
    tmp = Path(tempfile.mkdtemp(prefix="bench-qcpu-"))
    stack.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    base = int(time.time() * 1000) // 60_000 * 60_000 - ROUNDS * INTERVAL_MS // 60_000 * 60_000
    t0 = base + 3_300
    data = make_data(t0, [f"demo.promlabs.com:{10000 + i}" for i in range(a.instances)])
    prom = PrometheusProcess(tmp / "prom", "global: {}\n", "--web.enable-remote-write-receiver").start()
    stack.append(prom.stop)
    targets: list[Target] = [("Prometheus", [prom.proc.pid], prom.api)]
    write_urls = [f"http://127.0.0.1:{prom.port}/api/v1/write"]
    for k, (name, cmd) in enumerate(promring_builds(a)):
        rw, http = free_port(), free_port()
        data_dir = tmp / f"promring{k}" / "data"
        pr = PromringProcess(cmd + ["up", "--data-dir", str(data_dir), "--remote-write.address",
                                    f"127.0.0.1:{rw}", "--http-address", f"127.0.0.1:{http}"],
                             data_dir, rw, http)
        pr.start()
        stack.append(pr.stop)
        targets.append((name, [pr.proc.pid], pr.api))
        write_urls.append(pr.write_url)
    load(write_urls, data, t0)
    time.sleep(1.0)
    params = {"start": (base + 20 * 60_000 + 17_000) / 1000, "end": (base + 49 * 60_000 + 17_000) / 1000,
              "step": 15}
    return targets, [(name, dict(params, query=q)) for name, q in DASHBOARD]


def scale(a, stack: list) -> tuple[list[Target], list[tuple[str, dict]]]:
    """bench_scale.py's blocks (from its --keep directory) in Prometheus and in store + query of
    each build."""
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
    logs = open(tmp / "promring.log", "ab")
    stack.append(logs.close)
    prom.start()
    stack.append(prom.stop)
    targets: list[Target] = [("Prometheus", [prom.proc.pid], prom.api)]
    procs: list[subprocess.Popen] = []

    def stop() -> None:
        for p in procs:
            p.terminate()
            p.wait(30)
    stack.append(stop)
    for k, (name, cmd) in enumerate(promring_builds(a)):
        sg, sh, qh = free_port(), free_port(), free_port()
        store = subprocess.Popen(cmd + [
            "store", "--data-dir", str(tmp / f"store{k}"), "--objstore.config-file",
            str(tmp / "objstore.yml"), "--grpc-address", f"127.0.0.1:{sg}",
            "--http-address", f"127.0.0.1:{sh}", "--log.level", "warn"], stdout=logs, stderr=logs)
        procs.append(store)
        wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=600, proc=store)
        query = subprocess.Popen(cmd + [
            "query", "--endpoint", f"127.0.0.1:{sg}", "--grpc-address", "127.0.0.1:0",
            "--http-address", f"127.0.0.1:{qh}", "--log.level", "warn"], stdout=logs, stderr=logs)
        procs.append(query)
        wait_ready(f"http://127.0.0.1:{qh}/-/ready", timeout=60, proc=query)
        targets.append((name, [store.pid, query.pid], f"http://127.0.0.1:{qh}/api/v1"))
    work = []
    for h in a.ranges:
        params = {"start": (end_ms - h * HOUR_MS) / 1000, "end": end_ms / 1000, "step": h * 3600 / POINTS}
        work += [(f"{name.replace('1,000', 'shard=0')} {h} h", dict(params, query=q))
                 for name, q in QUERIES]
    return targets, work


def print_table(targets: list[Target], res: dict[str, list[tuple[list[float], list[float]]]]) -> None:
    """Per query: wall medians and mean CPU ms of each target, each build's CPU ratio to
    Prometheus's, and with several builds the last one's CPU over the first one's."""
    builds = [t[0] for t in targets[1:]]
    several = len(builds) > 1
    head = ["query", "wall ms " + " / ".join(t[0] for t in targets),
            "CPU ms " + " / ".join(t[0] for t in targets)]
    head += [f"CPU ratio {b} / Prometheus" for b in builds]
    head += [f"CPU {builds[-1]} / {builds[0]}"] if several else []
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    tot = [[0.0, 0.0] for _ in targets]
    rows = list(res.items())
    for n, per_target in rows + [("**total**", None)]:
        if per_target is None:
            wall, cpu = [w for w, _ in tot], [c for _, c in tot]
        else:
            wall = [statistics.median(w) * 1e3 for w, _ in per_target]
            cpu = [statistics.fmean(c) * 1e3 for _, c in per_target]
            for i in range(len(targets)):
                tot[i][0] += wall[i]
                tot[i][1] += cpu[i]
        cells = [n, " / ".join(f"{x:.1f}" for x in wall), " / ".join(f"{x:.1f}" for x in cpu)]
        cells += [f"{c / cpu[0]:.2f}x" if cpu[0] else "nan" for c in cpu[1:]]
        cells += [f"{cpu[-1] / cpu[1]:.2f}x" if cpu[1] else "nan"] if several else []
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("setup", choices=("dashboard", "scale"))
    ap.add_argument("--rounds", type=int, default=5, help="timed runs of every query (after a warm-up)")
    ap.add_argument("--instances", type=int, default=20, help="dashboard: demo instances")
    ap.add_argument("--blocks", type=Path, default=Path("/tmp/bench-scale-blocks"), help="scale: block dir")
    ap.add_argument("--ranges", type=lambda s: [int(x) for x in s.split(",")], default=[1, 6],
                    help="scale: query ranges in hours")
    ap.add_argument("--promring", action="append", default=[], metavar="EXE",
                    help="a promring executable to measure (repeatable); default this checkout's")
    ap.add_argument("--only", default="", metavar="TEXT",
                    help="only the queries whose name contains TEXT (e.g. 'one series')")
    ap.add_argument("--profile", help="py-spy raw profile of the last build's query process to this file")
    a = ap.parse_args()
    stack: list = []
    try:
        targets, work = (dashboard if a.setup == "dashboard" else scale)(a, stack)
        work = [(n, p) for n, p in work if a.only in n]
        sess = requests.Session()

        def run(api: str, params: dict) -> None:
            sess.get(f"{api}/query_range", params=params, timeout=600).raise_for_status()
        for _, p in work:
            for _, _, api in targets:
                run(api, p)
        spy = None
        if a.profile:
            spy = subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                                    "record", "-f", "raw", "-r", "200", "-o", a.profile, "--pid",
                                    str(targets[-1][1][-1])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        res = {n: [([], []) for _ in targets] for n, _ in work}
        for r in range(a.rounds):
            for n, p in work:  # in turn, each round in another order, so load from elsewhere hits all alike
                order = list(enumerate(targets))
                for k, (_, pids, api) in order[r % len(order):] + order[:r % len(order)]:
                    c0, t = sum(map(cpu_s, pids)), time.perf_counter()
                    run(api, p)
                    res[n][k][0].append(time.perf_counter() - t)
                    res[n][k][1].append(sum(map(cpu_s, pids)) - c0)
        if spy is not None:
            spy.send_signal(2)
            spy.wait()
        print(f"\nload average {os.getloadavg()[0]:.1f}; {a.rounds} rounds; ratio = promring / Prometheus 2.42\n")
        print_table(targets, res)
    finally:
        for f in reversed(stack):
            f()


if __name__ == "__main__":
    main()
