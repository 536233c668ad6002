"""Shutdown and restart-to-ready time with many active series: ``promring receive`` vs Prometheus
2.42 (its own remote-write receiver), same payloads, each alone on the machine.

Loads ``--series`` series x ``--rounds`` samples, then SIGTERM (time until the process exited),
then starts it again on the same data (time until ``/-/ready`` answers 200, WAL replay included).

    python bench/bench_restart.py --series 200000 --rounds 4
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import blast, make_payloads, targets  # noqa: E402


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before ready")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - t0
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise TimeoutError(url)


def measure(name: str, args: list[str], ready: str, url: str, payloads, inflight: int) -> dict:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(ready, proc)
        _, errors, _ = asyncio.run(blast(url, payloads, inflight))
        time.sleep(1)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(600)
        shutdown = time.perf_counter() - t0
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready_s = _wait_ready(ready, proc)
    finally:
        proc.terminate()
        proc.wait(600)
    return {"name": name, "errors": errors, "exit": code, "shutdown_s": shutdown, "ready_s": ready_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--per-request", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--no-prometheus", action="store_true")
    a = ap.parse_args()
    t0 = int(time.time() * 1000) - (a.rounds + 2) * 15_000
    payloads = make_payloads(a.series, a.rounds, a.per_request, t0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd, ready, write in targets(tmp, prometheus=not a.no_prometheus):
            results.append(measure(name, cmd, ready, write, payloads, a.inflight))
    print(f"\n{a.series} active series, {a.series * a.rounds} samples\n")
    print("| target | shutdown s | restart to ready s | exit code | write errors |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['shutdown_s']:.2f} | {r['ready_s']:.2f} | {r['exit']} | {r['errors']} |")


if __name__ == "__main__":
    main()
