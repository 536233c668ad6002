"""Shutdown and restart-to-ready time with many active series: ``promring receive`` vs Prometheus
2.42 (its own remote-write receiver), same payloads, each alone on the machine.

Loads ``--series`` series x ``--rounds`` samples (the first round's time is series creation:
every series is new), then SIGTERM (time until the process exited; also until its last log
line, "stopped cleanly" / "See you next time!", the CPU it used from the signal to its exit,
the kernel's teardown included, and its RSS when signalled), then starts it
again on the same data (time until ``/-/ready`` answers 200, WAL replay included).

    python bench/bench_restart.py --series 200000 --rounds 4
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import blast, make_payloads, rss_bytes, targets  # noqa: E402

LAST_LINES = ("stopped cleanly", "See you next time!")


class _StderrClock:
    """Reads a process's stderr: when (perf_counter) its final shutdown line arrived, and its
    last lines (shown if it exits before ready)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.stopped_at: float | None = None
        self.last_lines: collections.deque[str] = collections.deque(maxlen=20)
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self.last_lines.append(line)
            if any(m in line for m in LAST_LINES):
                self.stopped_at = time.perf_counter()

    def join(self) -> None:
        self._thread.join(10)


def _wait_ready(url: str, proc: subprocess.Popen, clock: _StderrClock, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            clock.join()
            raise RuntimeError(f"exited with {proc.returncode} before ready:\n{''.join(clock.last_lines)}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - t0
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise TimeoutError(url)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace")


def measure(name: str, args: list[str], ready: str, url: str, payloads, inflight: int,
            rounds: int) -> dict:
    args = [("info" if a == "warn" else a) for a in args]  # promring: log "stopped cleanly"
    proc = _start(args)
    clock = _StderrClock(proc)
    try:
        _wait_ready(ready, proc, clock)
        per_round = len(payloads) // rounds
        create_s, errors, _ = asyncio.run(blast(url, payloads[:per_round], inflight))
        _, more_errors, _ = asyncio.run(blast(url, payloads[per_round:], inflight))
        time.sleep(1)
        rss = rss_bytes(proc.pid)
        cpu0 = _cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(proc.pid, 0)  # its rusage includes the kernel's teardown
        shutdown = time.perf_counter() - t0
        code = proc.returncode = os.waitstatus_to_exitcode(status)
        shutdown_cpu = usage.ru_utime + usage.ru_stime - cpu0
        clock.join()
        logged = clock.stopped_at - t0 if clock.stopped_at else float("nan")
        t0 = time.perf_counter()
        proc = _start(args)
        ready_s = _wait_ready(ready, proc, _StderrClock(proc))
    finally:
        proc.terminate()
        proc.wait(600)
    return {"name": name, "errors": errors + more_errors, "exit": code, "create_s": create_s,
            "shutdown_s": shutdown, "logged_s": logged, "shutdown_cpu_s": shutdown_cpu, "rss": rss,
            "ready_s": ready_s}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
            results.append(measure(name, cmd, ready, write, payloads, a.inflight, a.rounds))
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"\n{a.series} active series, {a.series * a.rounds} samples, load average {load}\n")
    print("| target | create series s | shutdown s | to last log line s | CPU in shutdown s "
          "| RSS at SIGTERM MiB | restart to ready s | exit code | write errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['create_s']:.2f} | {r['shutdown_s']:.2f} | {r['logged_s']:.2f} "
              f"| {r['shutdown_cpu_s']:.2f} | {r['rss'] / 2**20:.0f} | {r['ready_s']:.2f} | {r['exit']} "
              f"| {r['errors']} |")
    if len(results) == 2:
        a_, b_ = results
        print(f"\nratio promring/prometheus: create {a_['create_s'] / b_['create_s']:.2f}x, "
              f"shutdown {a_['shutdown_s'] / b_['shutdown_s']:.2f}x, "
              f"ready {a_['ready_s'] / b_['ready_s']:.2f}x")


if __name__ == "__main__":
    main()
