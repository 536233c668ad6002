"""The fixed cost of a query (issue 13): one small query, many times, on Prometheus 2.42 and on
``promring store`` + ``promring query`` over bench_scale.py's blocks, side by side.

Every dashboard query pays what a one-series range query costs, so this loops exactly that
(``x{instance="i-00007"}``, 240 steps, at 1 h and 24 h) over one keep-alive HTTP connection per
server (no client-side connection setup in the figures; ``--gzip`` asks for gzipped answers, as
Grafana's and requests's clients do), in alternating batches so load from
elsewhere hits every server alike. It prints each server's wall median and its CPU time per
query (utime + stime from /proc, summed over the promring processes: steadier than wall times
on a loaded machine). ``--other DIR`` adds a second promring checkout (with its own .venv,
e.g. the main branch) for a before/after comparison in the same run.

``--cold`` measures the cold one-series query instead: after bench_scale's four aggregation
queries ran once at the range, every query asks for a series no query asked for before
(``x{instance="i-NNNNN"}`` with a new instance each time: a new query string and a new matcher,
so every parse, postings, series and chunk cache misses), as bench_scale's cold row does.

    python bench/bench_scale.py --keep /tmp/blocks        # once, writes the blocks
    python bench/bench_fixed_cost.py --blocks /tmp/blocks --other /work/main
    python bench/bench_fixed_cost.py --blocks /tmp/blocks --gzip --cold --rounds 4 --batch 25

``--pause-ms`` spaces the queries out (the idle time is not in the figures): back to back, a
small query finds the CPU caches warm with its own last run; a few ms of idle between queries,
as between a dashboard's refreshes, roughly doubles the cost of the same query for every server.
"""
from __future__ import annotations

import argparse
import gzip
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from harness import PrometheusProcess, free_port, wait_ready  # noqa: E402
from sidebyside import HOUR_MS, POINTS  # noqa: E402
from bench_scale import QUERIES, X_SERIES  # noqa: E402

QUERY = 'x{instance="i-00007"}'
COLD_QUERY = 'x{instance="i-%05d"}'
# bench_scale's aggregation queries, run once at each range before a cold measurement
AGGREGATIONS = [q for _, q in QUERIES[:4]]


def cpu_s(pid: int) -> float:
    """CPU seconds of process ``pid``, all its live threads: to the nanosecond from the
    scheduler's counters (/proc/PID/task/*/schedstat) where the kernel keeps them, else in
    clock ticks (utime + stime, 10 ms steps: a batch's share is then only good over many
    queries). A thread that ends between two readings drops out of the later one."""
    if not Path(f"/proc/{pid}/schedstat").exists():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total = 0
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total / 1e9


def prometheus_over(blocks: Path, work: Path) -> PrometheusProcess:
    """Prometheus 2.42 (not started) over a copy of ``blocks`` in ``work``, keeping them as
    they are (no retention, no compaction into longer blocks)."""
    shutil.copytree(blocks, work / "tsdb")
    return PrometheusProcess(work, "global: {}\n", "--storage.tsdb.retention.time=10y",
                             "--storage.tsdb.min-block-duration=2h",
                             "--storage.tsdb.max-block-duration=2h")


def start_promring(repo: Path, blocks: Path, work: Path, procs: list) -> tuple[int, list[int]]:
    """store + query of checkout ``repo`` over a copy of ``blocks``; (query HTTP port, pids)."""
    shutil.copytree(blocks, work / "bucket")
    (work / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {work / 'bucket'}\n")
    exe = str(repo / ".venv" / "bin" / "promring")
    sg, sh, qh = free_port(), free_port(), free_port()
    log = open(work / "promring.log", "ab")
    store = subprocess.Popen([exe, "store", "--data-dir", str(work / "store"),
                              "--objstore.config-file", str(work / "objstore.yml"),
                              "--grpc-address", f"127.0.0.1:{sg}", "--http-address",
                              f"127.0.0.1:{sh}", "--log.level", "warn"],
                             stdout=log, stderr=log, cwd=repo)
    procs.append(store)
    wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=600, proc=store)
    query = subprocess.Popen([exe, "query", "--endpoint", f"127.0.0.1:{sg}", "--grpc-address",
                              "127.0.0.1:0", "--http-address", f"127.0.0.1:{qh}",
                              "--log.level", "warn"], stdout=log, stderr=log, cwd=repo)
    procs.append(query)
    wait_ready(f"http://127.0.0.1:{qh}/-/ready", timeout=60, proc=query)
    return qh, [store.pid, query.pid]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--other", type=Path, help="a second promring checkout to compare")
    ap.add_argument("--rounds", type=int, default=10, help="alternating batches per server")
    ap.add_argument("--batch", type=int, default=40, help="queries per batch")
    ap.add_argument("--ranges", type=lambda s: [int(x) for x in s.split(",")], default=[1, 24],
                    help="query ranges in hours")
    ap.add_argument("--query", default=QUERY, help=f"the PromQL expression (default {QUERY})")
    ap.add_argument("--gzip", action="store_true",
                    help="send Accept-Encoding: gzip, as Grafana's and requests's clients do")
    ap.add_argument("--cold", action="store_true",
                    help="a series never asked for before in every query (see above)")
    ap.add_argument("--pause-ms", type=float, default=0.0,
                    help="idle this long before each measured query (not timed): queries spaced "
                         "as a dashboard's are, each meeting idle CPUs and cold CPU caches, "
                         "instead of back to back")
    a = ap.parse_args()
    cold_n = a.rounds * a.batch
    if a.cold and cold_n * len(a.ranges) > X_SERIES:
        sys.exit(f"--cold: at most {X_SERIES} fresh series, asked for {cold_n * len(a.ranges)}")
    metas = sorted(a.blocks.glob("*/meta.json"))
    if not metas:
        sys.exit(f"no blocks under {a.blocks}: run bench_scale.py --keep {a.blocks} first")
    end_ms = json.loads(metas[0].read_text())["minTime"] + 2 * len(metas) * HOUR_MS - 30_000
    tmp = Path(tempfile.mkdtemp(prefix="bench-fixed-"))
    prom = prometheus_over(a.blocks, tmp / "prom")
    procs: list[subprocess.Popen] = []
    try:
        prom.start()
        servers = {"Prometheus": (prom.port, [prom.proc.pid])}  # type: ignore[union-attr]
        servers["promring"] = start_promring(REPO, a.blocks, tmp / "this", procs)
        if a.other:
            servers[f"promring {a.other}"] = start_promring(a.other.resolve(), a.blocks,
                                                            tmp / "other", procs)
        for r, hours in enumerate(a.ranges):
            def params(query: str) -> str:
                return urlencode({"query": query, "start": (end_ms - hours * HOUR_MS) / 1000,
                                  "end": end_ms / 1000, "step": hours * 3600 / POINTS})
            conns = {k: http.client.HTTPConnection("127.0.0.1", port)
                     for k, (port, _) in servers.items()}

            def run(name: str, query: str = a.query) -> bytes:
                c = conns[name]
                try:
                    c.request("GET", "/api/v1/query_range?" + params(query), headers=headers)
                    r = c.getresponse()
                except http.client.RemoteDisconnected:  # idle past the server's keep-alive
                    c.close()  # (Prometheus: 5 min, while slow queries warm the others up)
                    c.request("GET", "/api/v1/query_range?" + params(query), headers=headers)
                    r = c.getresponse()
                body = r.read()
                if r.status != 200:
                    raise RuntimeError(f"{name}: HTTP {r.status}: {body[:200]!r}")
                return body
            headers = {"Accept-Encoding": "gzip"} if a.gzip else {}
            answers = {}
            for name in servers:
                for q in AGGREGATIONS if a.cold else [a.query] * 20:  # warm up
                    body = run(name, q)
                    answers[name] = json.loads(gzip.decompress(body) if a.gzip else body
                                               )["data"]["result"]
            wall: dict[str, list[float]] = {k: [] for k in servers}
            cpu = dict.fromkeys(servers, 0.0)
            # per process: for promring, the store's and the querier's shares
            cpu_each = {k: [0.0] * len(pids) for k, (_, pids) in servers.items()}
            for i in range(a.rounds):
                for name, (_, pids) in servers.items():
                    c0 = list(map(cpu_s, pids))
                    for j in range(a.batch):
                        # every server gets the same fresh series, each exactly once
                        q = (COLD_QUERY % (r * cold_n + i * a.batch + j) if a.cold
                             else a.query)
                        if a.pause_ms:
                            time.sleep(a.pause_ms / 1000)
                        t = time.perf_counter()
                        body = run(name, q)
                        wall[name].append(time.perf_counter() - t)
                        if a.cold:
                            answers[name] = json.loads(gzip.decompress(body) if a.gzip
                                                       else body)["data"]["result"]
                    for k, (before, after) in enumerate(zip(c0, map(cpu_s, pids))):
                        cpu_each[name][k] += after - before
                        cpu[name] += after - before
            n = a.rounds * a.batch
            ref = statistics.median(wall["Prometheus"])
            ref_cpu = cpu["Prometheus"] / n
            for name in servers:
                m = statistics.median(wall[name])
                print(f"{hours} h{' cold' if a.cold else ''} {name}: wall median {m * 1e3:.2f} ms ({m / ref:.2f}x), "
                      f"CPU per query {cpu[name] / n * 1e3:.2f} ms "
                      f"({cpu[name] / n / ref_cpu:.2f}x)"
                      + (f" = store {cpu_each[name][0] / n * 1e3:.2f} + query "
                         f"{cpu_each[name][1] / n * 1e3:.2f}" if len(cpu_each[name]) == 2 else ""),
                      flush=True)
            points = {k: [len(s["values"]) for s in v] for k, v in answers.items()}
            print(f"   points per answer: {points}")
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        prom.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
