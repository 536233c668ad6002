"""Remote-write ingest, side by side: ``promring receive`` vs Prometheus 2.42's own receiver.

Both get the same pre-encoded snappy payloads from the same asyncio client with the same number
of requests in flight; each server runs alone on the machine while measured. Also reports resident
memory per active series after the load (RSS growth over the idle process).

    python bench/bench_ingest.py --series 20000 --rounds 60 --inflight 4

CPU time of each server during the load (user + system, all its threads, per million samples)
is reported next to throughput: on a shared machine it varies far less than samples/s.
``--promring EXE`` (repeatable) measures other builds in the same run, e.g. an older commit's
checkout with its own virtualenv (``git worktree add /tmp/old <commit>``):

    python bench/bench_ingest.py --promring /tmp/old/.venv/bin/promring --promring .venv/bin/promring
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from harness import free_port, promring_cmd, wait_ready  # noqa: E402
from receiver.remotewrite import encode_write_request, snappy_compress  # noqa: E402

HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


def make_payloads(n_series: int, rounds: int, per_request: int, t0: int) -> list[tuple[int, bytes]]:
    """Every series gets one sample per 15 s round; requests carry ``per_request`` samples.

    Each request is tagged with its block of series: like Prometheus's shards, one sender owns
    a block and sends its requests in order, so no series ever goes backwards in time."""
    rng = np.random.default_rng(1)
    labels = [(("__name__", f"bench_metric_{i % 200}_total"), ("cluster", "eu-1"),
               ("instance", f"10.0.{i // 250 % 256}.{i % 250}:9100"), ("job", "node"),
               ("pod", f"pod-{i // 7}"), ("series", str(i))) for i in range(n_series)]
    values = rng.integers(0, 1000, size=n_series).astype(np.float64)
    out = []
    for r in range(rounds):
        values += rng.integers(0, 100, size=n_series)
        t = t0 + r * 15_000
        for lo in range(0, n_series, per_request):
            hi = min(lo + per_request, n_series)
            out.append((lo // per_request, snappy_compress(encode_write_request(
                (labels[i], np.array([t], dtype=np.int64), values[i:i + 1]) for i in range(lo, hi)))))
    return out


async def blast(url: str, payloads: list[tuple[int, bytes]], inflight: int
                ) -> tuple[float, int, list[float]]:
    errors = 0
    first_error: list[str] = []
    lat: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as s:
        async def worker(shard: int) -> None:
            nonlocal errors
            for block, p in payloads:
                if block % inflight != shard:
                    continue
                t = time.perf_counter()
                async with s.post(url, data=p, headers=HEADERS) as r:
                    await r.read()
                    if r.status // 100 != 2:
                        errors += 1
                        if not first_error:
                            first_error.append(f"{r.status} {(await r.text())[:300]}")
                            print(f"  {url}: first error: {first_error[0]}", file=sys.stderr)
                lat.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(inflight)))
        return time.perf_counter() - t0, errors, lat


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run_target(name: str, args: list[str], ready: str, url: str, payloads, warm, inflight, n_series,
               after_load: Callable[[], dict] | None = None):
    """Load one target; ``after_load`` (e.g. a look at its disk) runs while it still runs."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(ready, timeout=60, proc=proc)
        time.sleep(1)
        rss0 = rss_bytes(proc.pid)
        asyncio.run(blast(url, warm, inflight))       # creates every series
        cpu0 = cpu_seconds(proc.pid)
        secs, errors, lat = asyncio.run(blast(url, payloads, inflight))
        cpu = cpu_seconds(proc.pid) - cpu0
        time.sleep(1)
        rss1 = rss_bytes(proc.pid)
        extra = after_load() if after_load else {}
    finally:
        proc.terminate()
        proc.wait(30)
    n = sum(1 for _ in payloads)
    return {"name": name, "seconds": secs, "errors": errors, "requests": n,
            "p50_ms": 1000 * float(np.percentile(lat, 50)), "p99_ms": 1000 * float(np.percentile(lat, 99)),
            "rss_per_series": (rss1 - rss0) / n_series, "cpu_seconds": cpu, **extra}


def targets(tmp: str, wal_fsync: str = "none", prometheus: bool = True,
            promring: list[str] | None = None) -> list[tuple]:
    """(name, command, ready URL, write URL) of promring receive (this checkout's, or each
    executable in ``promring``) and, when installed and asked for, Debian's Prometheus 2.42
    with its remote-write receiver -- all storing under ``tmp``."""
    out = []
    for k, exe in enumerate(promring or [None]):
        rw, grpc, http = free_port(), free_port(), free_port()
        out.append((f"promring receive ({exe})" if exe else "promring receive",
                    ([exe] if exe else promring_cmd()) + [
                        "receive", "--tsdb.path", f"{tmp}/promring{k or ''}",
                        "--remote-write.address", f"127.0.0.1:{rw}",
                        "--grpc-address", f"127.0.0.1:{grpc}", "--http-address", f"127.0.0.1:{http}",
                        "--receive.capnproto-address", f"127.0.0.1:{free_port()}",
                        "--tsdb.wal-fsync", wal_fsync, "--log.level", "warn"],
                    f"http://127.0.0.1:{rw}/-/ready", f"http://127.0.0.1:{rw}/api/v1/receive"))
    if prometheus and shutil.which("prometheus"):
        port = free_port()
        Path(f"{tmp}/prom.yml").write_text("global: {}\n")
        out.append(("prometheus 2.42",
                    ["prometheus", f"--config.file={tmp}/prom.yml", f"--storage.tsdb.path={tmp}/prom",
                     f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"],
                    f"http://127.0.0.1:{port}/-/ready", f"http://127.0.0.1:{port}/api/v1/write"))
    return out


def run(series: int = 20000, rounds: int = 60, per_request: int = 2000, inflight: int = 4,
        wal_fsync: str = "none", prometheus: bool = True, promring: list[str] | None = None) -> dict:
    """Every target under the same payloads; returns per-target figures and the ratios of the
    first promring to Prometheus (``others``: further promring builds, when given)."""
    t0 = int(time.time() * 1000) - (rounds + 2) * 15_000
    t_enc = time.perf_counter()
    warm = make_payloads(series, 1, per_request, t0 - 15_000)
    payloads = make_payloads(series, rounds, per_request, t0)
    samples = series * rounds
    print(f"encoded {len(payloads)} requests ({samples} samples) in {time.perf_counter() - t_enc:.1f}s",
          file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd, ready, write in targets(tmp, wal_fsync, prometheus, promring):
            results.append(run_target(name, cmd, ready, write, payloads, warm, inflight, series))
    for r in results:
        r["samples_per_s"] = samples / r["seconds"]
        r["cpu_s_per_m_samples"] = r["cpu_seconds"] / samples * 1e6
    prom = results[-1] if results[-1]["name"].startswith("prometheus") else None
    ours = results[:-1] if prom else results
    out = {"series": series, "rounds": rounds, "per_request": per_request, "inflight": inflight,
           "wal_fsync": wal_fsync, "samples": samples, "promring": ours[0], "others": ours[1:],
           "prometheus": prom}
    if prom:
        for r in ours:
            r["throughput_ratio"] = prom["seconds"] / r["seconds"]
            r["cpu_ratio"] = r["cpu_seconds"] / max(prom["cpu_seconds"], 1e-9)
        a_ = ours[0]
        out["throughput_ratio"] = a_["throughput_ratio"]
        out["memory_ratio"] = a_["rss_per_series"] / max(prom["rss_per_series"], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--per-request", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--wal-fsync", default="none")
    ap.add_argument("--promring", action="append", metavar="EXE",
                    help="a promring executable to measure (repeatable; default this checkout's)")
    a = ap.parse_args()
    res = run(a.series, a.rounds, a.per_request, a.inflight, a.wal_fsync, promring=a.promring)
    results = [r for r in (res["promring"], *res["others"], res["prometheus"]) if r]
    print(f"\n{a.series} active series, {a.per_request} samples/request, {a.inflight} in flight, "
          f"{res['samples']} samples, WAL fsync={a.wal_fsync}\n")
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n")
    print("| target | samples/s | vs Prometheus | CPU s per 1M samples | CPU vs Prometheus "
          "| p50 ms | p99 ms | errors | RSS bytes/series |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratios = ((f"{r['throughput_ratio']:.2f}x", f"{r['cpu_ratio']:.2f}x")
                  if "throughput_ratio" in r else ("", ""))
        print(f"| {r['name']} | {r['samples_per_s']:,.0f} | {ratios[0]} | {r['cpu_s_per_m_samples']:.3f} "
              f"| {ratios[1]} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} "
              f"| {r['rss_per_series']:,.0f} |")
    if res["prometheus"]:
        print(f"\nratio promring/prometheus: throughput {res['throughput_ratio']:.2f}x, "
              f"memory per series {res['memory_ratio']:.2f}x")


if __name__ == "__main__":
    main()
