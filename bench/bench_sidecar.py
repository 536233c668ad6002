"""Sidecar alone: time of a StoreAPI Series call through ``promring sidecar`` and through Thanos
v0.42.4's ``thanos sidecar``, both over the same Debian Prometheus 2.42 (remote read, streamed
XOR chunks), frames not decoded by the client. The data is a promtool-built block of
``--series`` counters with one sample every 15 s over ``--hours``.

    python bench/bench_sidecar.py --series 5000 --hours 2

Prints the median seconds of ``--runs`` calls for each sidecar and the ratio.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from bench_store_series import series_calls  # noqa: E402
from harness import PrometheusProcess, free_port, promring_cmd, wait_ready  # noqa: E402
from peers import peer  # noqa: E402


def build_block(tsdb: Path, series: int, hours: float) -> tuple[int, int]:
    """An OpenMetrics file turned into blocks by promtool; returns its (mint, maxt) in ms."""
    end = (int(time.time()) // 3600 - 3) * 3600  # whole hours, safely in the past
    start = end - int(hours * 3600)
    steps = range(start, end, 15)
    text = tsdb.parent / "data.om"
    with open(text, "w") as f:
        f.write("# TYPE bench_x counter\n")
        for i in range(series):
            name = f'bench_x_total{{instance="i-{i:05d}"}}'
            f.writelines(f"{name} {n * (i % 7 + 1)} {t}\n" for n, t in enumerate(steps))
        f.write("# EOF\n")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(text),
                    str(tsdb)], check=True, capture_output=True)
    text.unlink()
    return start * 1000, end * 1000


def sidecar(cmd: list[str], prom: PrometheusProcess, log: Path) -> tuple[subprocess.Popen, str]:
    g, h = free_port(), free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd + ["sidecar", f"--prometheus.url=http://127.0.0.1:{prom.port}",
                                       f"--tsdb.path={prom.dir / 'tsdb'}",
                                       f"--grpc-address=127.0.0.1:{g}",
                                       f"--http-address=127.0.0.1:{h}"],
                                stdout=out, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{h}/-/ready", proc=proc, timeout=60)
    return proc, f"127.0.0.1:{g}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=5000)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "prom").mkdir()
        mint, maxt = build_block(work / "prom" / "tsdb", a.series, a.hours)
        prom = PrometheusProcess(work / "prom", 'global:\n  external_labels:\n    cluster: "b"\n',
                                 "--storage.tsdb.min-block-duration=2h",
                                 "--storage.tsdb.max-block-duration=2h").start()
        procs = []
        try:
            results = {}
            for name, cmd in (("promring", promring_cmd()), ("thanos", [peer("thanos")])):
                proc, addr = sidecar(cmd, prom, work / f"{name}.log")
                procs.append(proc)
                calls, _, _ = asyncio.run(series_calls(
                    addr, proc.pid, mint, maxt, [("__name__", "bench_x_total")], a.runs + 1))
                runs = calls[1:]
                results[name] = statistics.median(r[0] for r in runs)
                print(f"{name}: {results[name]:.3f} s median, {runs[0][1]} frames, "
                      f"{runs[0][2] / 1e6:.1f} MB")
            print(f"promring / thanos time: {results['promring'] / results['thanos']:.2f}")
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
            prom.stop()


if __name__ == "__main__":
    main()
