"""Store gateway alone: time of a StoreAPI Series call, request to last frame, frames not decoded
(so the figure is the store's, not a client's). For comparing store versions on one bucket,
e.g. blocks from ``bench_scale.py --keep DIR``:

    python bench/bench_store_series.py --bucket /tmp/blocks
    PYTHONPATH=/tmp/old-checkout python bench/bench_store_series.py --bucket /tmp/blocks \
        --cwd /tmp/old-checkout      # the same with another checkout's store

Prints cold (first call after start) and warm (median of ``--warm``) seconds per selector, and
the store process's CPU time per warm call (steadier than wall time on a loaded machine).
``--drop-page-cache`` evicts the bucket's files from the page cache before each selector's
cold call, so it reads the disk (use it on a copy of the blocks only).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import grpc.aio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from harness import free_port, wait_ready  # noqa: E402
from pagecache import drop_page_cache  # noqa: E402
from storeapi import rpc_pb2, types_pb2  # noqa: E402
from storeapi.h2client import H2Channel  # noqa: E402

SELECTORS = [("x (2,200 series)", [("__name__", "x")]),
             ("b (5,400 series)", [("__name__", "b")]),
             ('x{shard="0"} (1,000 series)', [("__name__", "x"), ("shard", "0")]),
             ('one series', [("__name__", "x"), ("instance", "i-00007")])]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Call = Callable[[], AsyncIterator[bytes]]  # one Series call: its response frames


async def _timed(call: Call, pid: int, calls: int
                 ) -> tuple[list[tuple[float, int, int]], float, float]:
    """(seconds, frames, bytes) of each of ``calls`` calls, the store's CPU seconds per call
    after the first (the steadier figure on a loaded machine: waiting for a core does not
    count; summed over the calls since the kernel counts in 10 ms ticks), and the first's."""
    out = []
    c = c0 = cpu_seconds(pid)
    cold_cpu = 0.0
    for i in range(calls):
        if i == 1:
            c = cpu_seconds(pid)
            cold_cpu = c - c0
        t = time.perf_counter()
        frames = size = 0
        async for frame in call():
            frames += 1
            size += len(frame)
        out.append((time.perf_counter() - t, frames, size))
    cpu = (cpu_seconds(pid) - c) / (calls - 1) if calls > 1 else float("nan")
    return out, cpu, cold_cpu


def _request(mint: int, maxt: int, pairs: list[tuple[str, str]]) -> rpc_pb2.SeriesRequest:
    return rpc_pb2.SeriesRequest(min_time=mint, max_time=maxt, matchers=[
        types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name=n, value=v)
        for n, v in pairs], response_batch_size=64)


async def series_calls(addr: str, pid: int, mint: int, maxt: int,
                       pairs: list[tuple[str, str]], calls: int
                       ) -> tuple[list[tuple[float, int, int]], float, float]:
    """_timed Series calls on one grpc.aio channel."""
    req = _request(mint, maxt, pairs)
    async with grpc.aio.insecure_channel(addr, options=[
            ("grpc.max_receive_message_length", 256 << 20)]) as ch:
        call = ch.unary_stream("/thanos.Store/Series",
                               request_serializer=rpc_pb2.SeriesRequest.SerializeToString,
                               response_deserializer=lambda b: b)
        return await _timed(lambda: call(req), pid, calls)


async def h2_series_calls(addr: str, pid: int, mint: int, maxt: int,
                          pairs: list[tuple[str, str]], calls: int
                          ) -> tuple[list[tuple[float, int, int]], float, float]:
    """_timed Series calls through the querier's own client (storeapi.h2client): what a
    promring querier costs the store, without grpcio's extra frames (pings) per call."""
    req = _request(mint, maxt, pairs).SerializeToString()
    ch = H2Channel(addr)
    try:
        return await _timed(lambda: ch.unary_stream("/thanos.Store/Series", req, 600), pid,
                            calls)
    finally:
        await ch.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bucket", type=Path, required=True, help="directory of blocks")
    ap.add_argument("--warm", type=int, default=20)
    ap.add_argument("--drop-page-cache", action="store_true",
                    help="evict the bucket's files from the page cache before each cold call "
                         "(a copy of the blocks only: it makes everyone's reads of them cold)")
    ap.add_argument("--hours", type=int, nargs="+", default=[0],
                    help="query ranges ending at the newest block's end (0 = all blocks)")
    ap.add_argument("--cwd", type=Path, default=REPO, help="checkout whose store to run")
    ap.add_argument("--client", choices=("grpc", "h2"), default="grpc",
                    help="grpc.aio, or the querier's own HTTP/2 client")
    ap.add_argument("--only", default="", help="only selectors whose name contains this "
                    "(e.g. 'one series')")
    a = ap.parse_args()
    metas = [json.loads(m.read_text()) for m in a.bucket.glob("*/meta.json")]
    mint, maxt = min(m["minTime"] for m in metas), max(m["maxTime"] for m in metas)
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-series-"))
    (tmp / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {a.bucket}\n")
    sg, sh = free_port(), free_port()
    env = dict(os.environ)
    with open(tmp / "store.log", "ab") as log:
        p = subprocess.Popen([sys.executable, "-m", "promring", "store", "--data-dir",
                              str(tmp / "data"), "--objstore.config-file",
                              str(tmp / "objstore.yml"), "--grpc-address", f"127.0.0.1:{sg}",
                              "--http-address", f"127.0.0.1:{sh}", "--log.level", "warn"],
                             stdout=log, stderr=log, cwd=a.cwd, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=600, proc=p)
        if a.drop_page_cache:
            drop_page_cache(a.bucket)
        print("| selector | hours | frames | MB | cold s | warm s | cold store CPU ms "
              "| warm store CPU ms |\n|---|---|---|---|---|---|---|---|")
        for hours in a.hours:
            lo = mint if hours == 0 else max(mint, maxt - hours * 3_600_000)
            for name, pairs in (s for s in SELECTORS if a.only in s[0]):
                calls = h2_series_calls if a.client == "h2" else series_calls
                runs, cpu, cold_cpu = asyncio.run(calls(f"127.0.0.1:{sg}", p.pid, lo, maxt,
                                                     pairs, 1 + a.warm))
                cold, frames, size = runs[0]
                warm = statistics.median(r[0] for r in runs[1:])
                print(f"| {name} | {hours or 'all'} | {frames} | {size / 1e6:.1f} | {cold:.3f} "
                      f"| {warm:.3f} | {cold_cpu * 1000:.0f} | {cpu * 1000:.1f} |", flush=True)
                if a.drop_page_cache:  # the next selector's first call reads the disk
                    drop_page_cache(a.bucket)
    finally:
        p.terminate()
        p.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
