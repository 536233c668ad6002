"""Shutdown and restart-to-ready time with many active series: ``promring receive`` vs Prometheus
2.42 (its own remote-write receiver), same payloads, each alone on the machine.

Loads ``--series`` series x ``--rounds`` samples, then SIGTERM (time until the process exited),
then starts it again on the same data (time until ``/-/ready`` answers 200, WAL replay included).

    python bench/bench_restart.py --series 200000 --rounds 4
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import blast, make_payloads  # noqa: E402
from harness import free_port, promring_cmd  # noqa: E402


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
        rw, grpc, http = free_port(), free_port(), free_port()
        results.append(measure(
            "promring receive",
            promring_cmd() + ["receive", "--tsdb.path", f"{tmp}/promring",
                              "--remote-write.address", f"127.0.0.1:{rw}",
                              "--grpc-address", f"127.0.0.1:{grpc}", "--http-address", f"127.0.0.1:{http}",
                              "--log.level", "warn"],
            f"http://127.0.0.1:{rw}/-/ready", f"http://127.0.0.1:{rw}/api/v1/receive",
            payloads, a.inflight))
        if not a.no_prometheus and shutil.which("prometheus"):
            port = free_port()
            Path(f"{tmp}/prom.yml").write_text("global: {}\n")
            results.append(measure(
                "prometheus 2.42",
                ["prometheus", f"--config.file={tmp}/prom.yml", f"--storage.tsdb.path={tmp}/prom",
                 f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"],
                f"http://127.0.0.1:{port}/-/ready", f"http://127.0.0.1:{port}/api/v1/write",
                payloads, a.inflight))
    print(f"\n{a.series} active series, {a.series * a.rounds} samples\n")
    print("| target | shutdown s | restart to ready s | exit code | write errors |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['shutdown_s']:.2f} | {r['ready_s']:.2f} | {r['exit']} | {r['errors']} |")


if __name__ == "__main__":
    main()
