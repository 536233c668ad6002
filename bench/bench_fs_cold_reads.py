"""Filesystem bucket alone: many concurrent small ranged reads (a store gateway's pattern) from a
file dropped from the page cache (cold) and then again (warm), with how long the event loop
stalled meanwhile -- the longest gap a 1 ms ticker saw -- and the CPU per warm read. Compare
checkouts with ``--cwd``:

    python bench/bench_fs_cold_reads.py --dir /tmp/fsbench
    python bench/bench_fs_cold_reads.py --dir /tmp/fsbench --cwd /tmp/old-checkout
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


async def reads(bucket, name: str, offsets: np.ndarray, size: int, concurrency: int
                ) -> tuple[float, float, float]:
    """(wall s, longest event-loop stall s, CPU s) of reading ``size`` bytes at each offset,
    ``concurrency`` reads in flight."""
    stall = 0.0
    done = False

    async def ticker() -> None:
        nonlocal stall
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            stall = max(stall, time.perf_counter() - t - 0.001)

    limit = asyncio.Semaphore(concurrency)

    async def one(off: int) -> None:
        async with limit:
            await bucket.get_range(name, off, size)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    c, t = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(int(o)) for o in offsets))
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    done = True
    await tick
    return wall, stall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, required=True, help="scratch directory (a file is written)")
    ap.add_argument("--cwd", type=Path, default=REPO, help="checkout whose objstore to use")
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--read-kb", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()
    sys.path.insert(0, str(a.cwd))
    from objstore.filesystem import FilesystemBucket  # the checkout's

    bucket = FilesystemBucket(a.dir)
    name = "bench/chunks/000001"
    path = a.dir / name
    if not path.exists() or path.stat().st_size != a.size_mb << 20:
        asyncio.run(bucket.upload(name, os.urandom(a.size_mb << 20)))
    size = a.read_kb << 10
    offsets = np.random.default_rng(7).integers(0, (a.size_mb << 20) - size, a.reads)
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    print("| run | reads | wall ms | longest loop stall ms | CPU us/read | inline/threaded |\n"
          "|---|---|---|---|---|---|")
    for run in ("cold", "warm"):
        paths = getattr(bucket, "read_paths", None)  # absent in checkouts before it
        before = (paths.inline, paths.threaded) if paths else None
        wall, stall, cpu = asyncio.run(reads(bucket, name, offsets, size, a.concurrency))
        split = f"{paths.inline - before[0]}/{paths.threaded - before[1]}" if paths else "-"
        print(f"| {run} | {a.reads} x {a.read_kb} KiB | {wall * 1000:.0f} | {stall * 1000:.1f} "
              f"| {cpu / a.reads * 1e6:.0f} | {split} |", flush=True)


if __name__ == "__main__":
    main()
