"""What the first query pays: fresh ``promring store`` + ``promring query`` over a bucket of
blocks (e.g. ``bench_scale.py --keep DIR``), each dashboard query of bench_scale run twice in
bench_scale's order (the first run is "cold": first of that query and range since start),
with what the store did for each run (bucket range requests and bytes, LRU misses, the
store's time reading blocks) from diffs of its /metrics; optionally both processes recorded
by py-spy while the cold runs go (``--pyspy DIR``: collapsed stacks, ``--native``).

    python bench/bench_cold.py --bucket /tmp/blocks
    python bench/bench_cold.py --bucket /tmp/blocks --pyspy /tmp/cold-prof --rate 1000
    python bench/bench_cold.py --bucket /tmp/copy-of-blocks --drop-page-cache --cwd /tmp/old

``--drop-page-cache`` evicts the bucket's files from the page cache before each query's cold
run, so it reads the disk (use it on a copy of the blocks only); ``--cwd`` runs another
checkout's store and querier.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from harness import free_port, promring_cmd, wait_ready  # noqa: E402
from bench_scale import QUERIES, RANGES_H, STEP_MS  # noqa: E402
from pagecache import drop_page_cache  # noqa: E402
from sidebyside import HOUR_MS, POINTS, run_query  # noqa: E402

_METRICS = {
    "reqs": re.compile(r'^promring_store_bucket_range_requests_total\{[^}]*\} (\S+)', re.M),
    "bytes": re.compile(r'^promring_store_bucket_fetched_bytes_total\{[^}]*\} (\S+)', re.M),
    "lookups": re.compile(r'^thanos_store_index_cache_requests_total\{[^}]*\} (\S+)', re.M),
    "hits": re.compile(r'^thanos_store_index_cache_hits_total\{[^}]*\} (\S+)', re.M),
    "get_all_s": re.compile(r'^thanos_bucket_store_series_get_all_duration_seconds_sum (\S+)',
                            re.M),
    "series_s": re.compile(r'^grpc_server_handling_seconds_sum\{[^}]*grpc_method="Series"[^}]*\} '
                           r'(\S+)', re.M),
}
_CLIENT_S = re.compile(r'^grpc_client_handling_seconds_sum\{[^}]*grpc_method="Series"[^}]*\} '
                       r'(\S+)', re.M)


def client_series_s(url: str) -> float:
    return sum(map(float, _CLIENT_S.findall(requests.get(url, timeout=10).text)))


def store_counters(url: str) -> dict[str, float]:
    text = requests.get(url, timeout=10).text
    return {k: sum(map(float, rx.findall(text))) for k, rx in _METRICS.items()}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bucket", type=Path, required=True, help="directory of blocks")
    ap.add_argument("--pyspy", type=Path, help="record both processes into this directory")
    ap.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    ap.add_argument("--ranges", type=int, nargs="+", default=list(RANGES_H))
    ap.add_argument("--limit", type=int, default=0,
                    help="run only the first N query/range pairs (e.g. to profile just those)")
    ap.add_argument("--runs", type=int, default=2, help="runs of each query (the first is cold)")
    ap.add_argument("--prime", default="",
                    help="an instant query run once before the timed ones (e.g. 'up' or "
                         "'x{instance=\"none\"}'), to see which first-use costs it takes")
    ap.add_argument("--drop-page-cache", action="store_true",
                    help="evict the bucket's files from the page cache before each cold run "
                         "(a copy of the blocks only: it makes everyone's reads of them cold)")
    ap.add_argument("--cwd", type=Path, help="checkout whose store and querier to run")
    a = ap.parse_args()
    cmd = [sys.executable, "-m", "promring"] if a.cwd else promring_cmd()
    metas = [json.loads(m.read_text()) for m in a.bucket.glob("*/meta.json")]
    end_ms = max(m["maxTime"] for m in metas) - STEP_MS
    tmp = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    (tmp / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {a.bucket}\n")
    sg, sh, qh = free_port(), free_port(), free_port()
    procs: dict[str, subprocess.Popen] = {}
    spies: list[subprocess.Popen] = []
    logs = open(tmp / "promring.log", "ab")
    try:
        t = time.perf_counter()
        procs["store"] = subprocess.Popen(cmd + [
            "store", "--data-dir", str(tmp / "store"), "--objstore.config-file",
            str(tmp / "objstore.yml"), "--grpc-address", f"127.0.0.1:{sg}",
            "--http-address", f"127.0.0.1:{sh}", "--log.level", "warn"], stdout=logs, stderr=logs,
            cwd=a.cwd)
        wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=600, proc=procs["store"])
        t_store = time.perf_counter() - t
        t = time.perf_counter()
        procs["query"] = subprocess.Popen(cmd + [
            "query", "--endpoint", f"127.0.0.1:{sg}", "--grpc-address", "127.0.0.1:0",
            "--http-address", f"127.0.0.1:{qh}", "--log.level", "warn"], stdout=logs, stderr=logs,
            cwd=a.cwd)
        wait_ready(f"http://127.0.0.1:{qh}/-/ready", timeout=60, proc=procs["query"])
        t_query = time.perf_counter() - t
        print(f"ready: store {t_store:.2f} s, query {t_query:.2f} s", flush=True)
        time.sleep(1.0)  # let a store's startup work (index checks) settle
        if a.pyspy:
            a.pyspy.mkdir(parents=True, exist_ok=True)
            for name, p in procs.items():
                spies.append(subprocess.Popen(
                    ["py-spy", "record", "--native", "--idle", "-r", str(a.rate), "-f", "raw",
                     "-o", str(a.pyspy / f"{name}.txt"), "--pid", str(p.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.5)
        metrics = f"http://127.0.0.1:{sh}/metrics"
        api = f"http://127.0.0.1:{qh}/api/v1"
        sess = requests.Session()
        qmetrics = f"http://127.0.0.1:{qh}/metrics"
        print("| query | h | cold ms | warm ms | eval ms | querier Series call ms | store Series ms "
              "| store blocks ms | reqs | KB | LRU misses | store CPU ms | query CPU ms |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        if a.prime:
            sess.get(f"{api}/query", params={"query": a.prime, "time": end_ms / 1000},
                     timeout=60).raise_for_status()
        pairs = [(h, nq) for h in a.ranges for nq in QUERIES]
        for h, (name, q) in pairs[:a.limit or None]:
            params = {"start": (end_ms - h * HOUR_MS) / 1000, "end": end_ms / 1000,
                      "step": h * 3600 / POINTS}
            p = dict(params, query=q, stats="all")
            runs = []
            if a.drop_page_cache:
                drop_page_cache(a.bucket)
            for _ in range(max(1, a.runs)):
                c0 = store_counters(metrics)
                q0 = client_series_s(qmetrics)
                cs, cq = cpu_seconds(procs["store"].pid), cpu_seconds(procs["query"].pid)
                dt, data = run_query(sess, api, p)
                c1 = store_counters(metrics)
                d = {k: c1[k] - c0[k] for k in c0}
                d["client_s"] = client_series_s(qmetrics) - q0
                d["eval_s"] = data.get("stats", {}).get("timings", {}).get("evalTotalTime", 0)
                runs.append((dt, d, cpu_seconds(procs["store"].pid) - cs,
                             cpu_seconds(procs["query"].pid) - cq))

            def pair(key: str) -> str:
                return "/".join(f"{r[1][key] * 1000:.1f}" for r in (runs[0], runs[-1]))

            (cold, d, scpu, qcpu), (warm, _, wscpu, wqcpu) = runs[0], runs[-1]
            print(f"| {name} | {h} | {cold * 1000:.1f} | {warm * 1000:.1f} | {pair('eval_s')} "
                  f"| {pair('client_s')} | {pair('series_s')} | {pair('get_all_s')} "
                  f"| {d['reqs']:.0f} | {d['bytes'] / 1024:.0f} "
                  f"| {d['lookups'] - d['hits']:.0f} | {scpu * 1000:.0f}/{wscpu * 1000:.0f} "
                  f"| {qcpu * 1000:.0f}/{wqcpu * 1000:.0f} |", flush=True)
    finally:
        for s in spies:
            s.send_signal(signal.SIGINT)
        for s in spies:
            try:
                s.wait(60)
            except subprocess.TimeoutExpired:
                s.kill()
        for p in procs.values():
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
