"""Memory per loaded block: peak RSS of ``promring store`` and of Prometheus 2.42 serving the same
large block(s), written by promring's block writer (issue 13: ~446 MiB vs ~81 MiB for 1M series).

Each series has four labels, one of them unique (``instance``), and one 120-sample chunk.
``promring store`` loads the block(s) from a filesystem bucket (index-header built, the
background index check run to the end); Prometheus opens them from its data dir with
compaction off. Both are then asked one query touching a few series. Reported: VmHWM (peak)
and VmRSS after loading, and the same for an idle process with no blocks (the baseline).

    python bench/bench_store_rss.py --series 1000000 --blocks 1 --keep /tmp/rss-blocks
    python bench/bench_store_rss.py --series 1000000 --blocks 10 --keep /tmp/rss10  # ~10 GB

Blocks follow each other in time (2 h each, as a bucket's would); Prometheus gets hard links
to them, so the disk cost is paid once.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from harness import PrometheusProcess, free_port, promring_cmd, wait_ready  # noqa: E402
from receiver.tsdb.block import write_block  # noqa: E402
from receiver.tsdb.chunkenc import encode  # noqa: E402

BLOCK_MS = 2 * 3_600_000
STEP_MS = 60_000


def write_blocks(dest: Path, n_series: int, n_blocks: int, t0: int) -> None:
    ts = np.arange(120, dtype=np.int64) * STEP_MS
    vals = np.cumsum(np.random.default_rng(1).exponential(5.0, 120))
    for b in range(n_blocks):
        lo = t0 + b * BLOCK_MS
        data = encode(ts + lo, vals)
        chunk = [(lo, lo + int(ts[-1]), data)]
        names = sorted(f"i-{i:07d}" for i in range(n_series))

        def gen() -> Iterator[tuple[tuple[tuple[str, str], ...], list]]:
            for i, inst in enumerate(names):
                yield ((("__name__", "rss_metric"), ("instance", inst), ("job", f"j{i % 50}"),
                        ("zone", f"z{i % 7}")), chunk)
        write_block(dest, gen(), lo, lo + BLOCK_MS, thanos_meta={"labels": {}})


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) in MiB."""
    got = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS"):
            got[k] = int(v.split()[0]) / 1024
    return got["VmHWM"], got["VmRSS"]


def store_rss(bucket: Path, tmp: Path, name: str) -> tuple[float, float]:
    (tmp / f"{name}.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    sg, sh = free_port(), free_port()
    with open(tmp / f"{name}.log", "ab") as log:
        p = subprocess.Popen(promring_cmd() + [
            "store", "--data-dir", str(tmp / f"{name}-data"), "--objstore.config-file",
            str(tmp / f"{name}.yml"), "--grpc-address", f"127.0.0.1:{sg}",
            "--http-address", f"127.0.0.1:{sh}", "--log.level", "info"], stdout=log, stderr=log)
    try:
        wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=1800, proc=p)
        # Until every block's background index check is done (or a bounded wait).
        n_blocks = len(list(bucket.glob("*/meta.json")))
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            if len(list((tmp / f"{name}-data").glob("*/index-verified"))) >= n_blocks:
                break
            time.sleep(0.5)
        return rss_mib(p.pid)
    finally:
        p.terminate()
        p.wait(60)


def prom_rss(blocks: Path | None, tmp: Path, name: str) -> tuple[float, float]:
    prom = PrometheusProcess(tmp / name, "global: {}\n", "--storage.tsdb.retention.time=10y",
                             "--storage.tsdb.min-block-duration=2h",
                             "--storage.tsdb.max-block-duration=2h")
    if blocks is not None:  # hard links: Prometheus only reads blocks (compaction is off)
        shutil.copytree(blocks, tmp / name / "tsdb", copy_function=os.link)
    try:
        prom.start()
        r = requests.get(f"{prom.api}/query", params={"query": 'count(rss_metric{zone="z1"})',
                                                       "time": time.time()}, timeout=600)
        r.raise_for_status()
        time.sleep(2)
        return rss_mib(prom.proc.pid)  # type: ignore[union-attr]
    finally:
        prom.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=200_000)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="keep the generated blocks here (reused if present)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    blocks = a.keep or tmp / "blocks"
    try:
        if not (blocks.is_dir() and any(blocks.glob("*/meta.json"))):
            blocks.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            t0 = (int(time.time() * 1000) // BLOCK_MS - a.blocks - 2) * BLOCK_MS
            write_blocks(blocks, a.series, a.blocks, t0)
            print(f"wrote {a.blocks} block(s) of {a.series:,} series in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
        size = sum(f.stat().st_size for f in blocks.rglob("index"))
        (tmp / "empty").mkdir()
        rows = [("promring store", store_rss(tmp / "empty", tmp, "store-idle"),
                 store_rss(blocks, tmp, "store")),
                ("Prometheus 2.42", prom_rss(None, tmp, "prom-idle"), prom_rss(blocks, tmp, "prom"))]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(list(blocks.glob("*/meta.json"))) if a.keep else a.blocks
    print(f"\n{n} block(s), index files {size / 2**20:.0f} MiB in all\n")
    print("| process | idle peak / RSS MiB | loaded peak / RSS MiB | per block: peak / RSS MiB |")
    print("|---|---|---|---|")
    for name, idle, loaded in rows:
        print(f"| {name} | {idle[0]:.0f} / {idle[1]:.0f} | {loaded[0]:.0f} / {loaded[1]:.0f} | "
              f"{(loaded[0] - idle[0]) / n:.1f} / {(loaded[1] - idle[1]) / n:.1f} |")


if __name__ == "__main__":
    main()
