"""A cold store gateway with a warm shared memcached vs a cold one with no cache.

One block (``--series`` series, 2h at 30s) in a filesystem bucket; Debian's memcached on
loopback. Each round starts fresh ``promring store`` processes: one without caches, and one
with ``--index-cache.config`` + ``--store.caching-bucket.config`` (MEMCACHED) after another
gateway warmed memcached with the same queries. Measured per gateway, after its block's
background index check is done: the first run of each StoreAPI Series query (latency) and
the bytes it read from the bucket (``thanos_objstore_bucket_operation_fetched_bytes_total``).
Medians over ``--rounds``. ``--s3`` puts the block in a moto S3 server instead (every
ranged read an HTTP request, as with real object storage).

    python bench/bench_store_cache.py --series 5000 --rounds 3 [--s3]
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import store_process  # noqa: E402
from memcached import MemcachedProcess  # noqa: E402
from receiver.tsdb.block import write_block_from_samples  # noqa: E402
from receiver.tsdb.labels import Matcher  # noqa: E402
from storeapi.client import StoreClient  # noqa: E402

H2 = 2 * 3600 * 1000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H2
QUERIES = [("one job", [Matcher("=", "__name__", "bench"), Matcher("=", "job", "j3")]),
           ("all series", [Matcher("=", "__name__", "bench")]),
           ("regex", [Matcher("=~", "instance", "h1.*")])]


def make_bucket(tmp: Path, n: int, s3=None) -> str:
    ts = T0 + np.arange(240, dtype=np.int64) * 30_000
    rng = np.random.default_rng(1)
    series = [((("__name__", "bench"), ("instance", f"h{i:05d}"), ("job", f"j{i % 10}")),
               ts, np.cumsum(rng.integers(0, 9, len(ts))).astype(float)) for i in range(n)]
    meta = write_block_from_samples(tmp / "src", series, T0, T0 + H2)
    if s3 is None:
        (tmp / "bucket").mkdir()
        shutil.copytree(tmp / "src" / meta.ulid, tmp / "bucket" / meta.ulid)
        (tmp / "objstore.yml").write_text(
            f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
        return meta.ulid
    s3.create_bucket("bench")
    yml = (f"type: S3\nconfig:\n  bucket: bench\n  endpoint: {s3.endpoint}\n  insecure: true\n"
           "  region: us-east-1\n  access_key: test\n  secret_key: test\n")
    (tmp / "objstore.yml").write_text(yml)

    async def upload() -> None:
        from objstore import bucket_from_config
        b = bucket_from_config(yml)
        src = tmp / "src" / meta.ulid
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            await b.upload(f"{meta.ulid}/{f.relative_to(src)}", f.read_bytes())
        await b.close()
    asyncio.run(upload())
    return meta.ulid


def bucket_bytes(proc) -> float:
    text = requests.get(proc.url("http", "/metrics"), timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("thanos_objstore_bucket_operation_fetched_bytes_total{"))


async def first_queries(grpc: str) -> list[float]:
    out = []
    for _, ms in QUERIES:
        c = StoreClient(grpc, timeout_s=120)
        t = time.perf_counter()
        await c.series(T0, T0 + H2, ms)
        out.append(time.perf_counter() - t)
        await c.close()
    return out


def run_gateway(tmp: Path, name: str, ulid: str, extra: list[str]) -> tuple[list[float], float]:
    p = store_process(tmp, name, tmp / "objstore.yml", "--sync-block-duration", "1h",
                      *extra).start(timeout=120)
    try:
        marker = tmp / name / ulid / "index-verified"
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        before = bucket_bytes(p)
        lat = asyncio.run(first_queries(p.grpc))
        return lat, bucket_bytes(p) - before
    finally:
        p.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--s3", action="store_true", help="moto S3 server instead of a directory")
    a = ap.parse_args()
    s3 = None
    if a.s3:
        from moto import MotoServer  # tests/moto.py
        s3 = MotoServer()
        s3.start()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ulid = make_bucket(tmp, a.series, s3)
        rows: dict[str, list] = {"none": [], "warm": []}
        for r in range(a.rounds):
            mc = MemcachedProcess()
            try:
                cfg = f"type: MEMCACHED\nconfig:\n  addresses: [{mc.address}]\n"
                flags = ["--index-cache.config", cfg, "--store.caching-bucket.config", cfg]
                rows["none"].append(run_gateway(tmp, f"none{r}", ulid, []))
                run_gateway(tmp, f"warmer{r}", ulid, flags)
                rows["warm"].append(run_gateway(tmp, f"warm{r}", ulid, flags))
            finally:
                mc.stop()
        print(f"series={a.series} rounds={a.rounds} (medians; "
              f"{'moto S3' if a.s3 else 'filesystem'} bucket)")
        print(f"{'query':<12} {'no cache s':>11} {'warm mc s':>10} {'ratio':>7}")
        for i, (q, _) in enumerate(QUERIES):
            n = statistics.median(x[0][i] for x in rows["none"])
            w = statistics.median(x[0][i] for x in rows["warm"])
            print(f"{q:<12} {n:>11.3f} {w:>10.3f} {n / w:>6.1f}x")
        nb = statistics.median(x[1] for x in rows["none"])
        wb = statistics.median(x[1] for x in rows["warm"])
        print(f"bucket bytes read by the first queries: no cache {nb:.0f}, warm memcached "
              f"{wb:.0f} ({(nb / wb if wb else float('inf')):.1f}x less)")
    if s3 is not None:
        s3.stop()


if __name__ == "__main__":
    main()
