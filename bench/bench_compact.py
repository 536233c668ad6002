"""Compactor throughput and what downsampling buys a long range query.

Not a test: prints markdown tables.

1. Compaction: 24 two-hour blocks (``--series`` series, 15 s scrapes) merged into one 2d
   block (chunks copied), three overlapping replicas merged sample by sample (vertical
   compaction / offline dedup), and the 2d block downsampled to 5m -- samples read per second.
2. A 30-day query (``--query-series`` series at 60 s) through the store gateway's StoreAPI
   (BucketStore over a filesystem bucket, gRPC on loopback), cold cache: raw vs 1h
   resolution -- bytes read from the bucket, chunks sent, latency. The 30-day bucket is made
   by the real compactor (2d blocks -> 14d, downsampled to 5m and 1h).

    /work/venv/bin/python bench/bench_compact.py [--series 1000] [--query-series 100]
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from compactor import CompactConfig, Compactor
from receiver.tsdb.aggr import RES_1H
from compactor.downsample import downsample_block
from querier.downsampled import COUNT, SUM, series_samples
from compactor.merge import merge_blocks
from objstore import FilesystemBucket
from receiver.tsdb.block import read_meta, write_block_from_samples
from receiver.tsdb.chunkenc import decode_many
from receiver.tsdb.labels import Matcher, MatchType
from store.bucketstore import BucketStore
from store.cache import CacheMetrics, LRUCache
from storeapi.client import StoreClient
from storeapi.server import serve

H = 3_600_000
DAY = 24 * H


def gen(n: int, t0: int, t1: int, step: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ts = np.arange(t0, t1, step, dtype=np.int64)
    for i in range(n):
        if i % 2:
            v = np.round(rng.normal(100, 10, len(ts)), 2)
        else:
            v = np.cumsum(rng.integers(0, 20, len(ts))).astype(np.float64)
        yield (("__name__", "bench_metric"), ("i", f"{i:05d}")), ts, v


def write_blocks(d: Path, n: int, t0: int, n_blocks: int, span: int, step: int,
                 ext: dict[str, str], seed: int = 0) -> list[Path]:
    data = list(gen(n, t0, t0 + n_blocks * span, step, seed))
    out = []
    for k in range(n_blocks):
        lo, hi = t0 + k * span, t0 + (k + 1) * span
        m = write_block_from_samples(d, data, lo, hi, thanos_meta={"labels": ext})
        out.append(d / m.ulid)
    return out


def bench_compaction(n: int) -> list[tuple[str, int, float]]:
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-compact-"))
    try:
        t0 = 1_700_006_400_000 - 1_700_006_400_000 % (2 * DAY)
        src = write_blocks(tmp / "in", n, t0, 24, 2 * H, 15_000, {"c": "1"})
        metas = [read_meta(p) for p in src]
        samples = sum(m.num_samples for m in metas)
        t = time.perf_counter()
        meta, _ = merge_blocks(src, tmp / "out", vertical=False, resolution=0,
                               thanos_labels={"c": "1"}, metas=metas)
        rows.append(("compact 24 x 2h -> 2d (chunks copied)", samples, time.perf_counter() - t))
        big = tmp / "out" / meta.ulid
        t = time.perf_counter()
        _, n_in = downsample_block(big, tmp / "ds", 300_000)
        rows.append(("downsample 2d raw -> 5m", n_in, time.perf_counter() - t))
        reps = []
        for r, seed in (("a", 1), ("b", 2), ("c", 3)):
            reps += write_blocks(tmp / f"rep-{r}", n, t0, 1, 2 * H, 15_000, {"replica": r}, seed)
        rmetas = [read_meta(p) for p in reps]
        t = time.perf_counter()
        merge_blocks(reps, tmp / "vout", vertical=True, resolution=0, thanos_labels={},
                     metas=rmetas)
        rows.append(("vertical: 3 replicas x 2h dedup", sum(m.num_samples for m in rmetas),
                     time.perf_counter() - t))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


async def _query(bucket: Path, tmp: Path, lo: int, hi: int, res: int):
    reg = CollectorRegistry()
    bs = BucketStore(FilesystemBucket(str(bucket)), tmp / f"store-{res}",
                     LRUCache(256 << 20, CacheMetrics(reg)), reg)
    await bs.sync_once()
    server, port = await serve(bs, "127.0.0.1:0", component_type="store")
    cl = StoreClient(f"127.0.0.1:{port}")
    ms = [Matcher(MatchType.EQ, "__name__", "bench_metric")]
    def fetched_bytes() -> float:
        return sum(c._value.get() for c in bs.fetch_metrics.bytes._metrics.values())

    before = fetched_bytes()
    try:
        t = time.perf_counter()
        series, _ = await cl.series_aggr(lo, hi, ms, res, [COUNT, SUM])
        n_points = 0
        for s in series:  # what the engine would iterate
            if res:
                n_points += len(series_samples(s.chunks, [COUNT, SUM], lo, hi)[0])
            else:
                n_points += len(decode_many([c[2] for c in s.chunks], lo, hi)[0])
        dt = time.perf_counter() - t
    finally:
        await cl.close()
        await server.stop(None)
    fetched = fetched_bytes() - before
    n_chunks = sum(len(s.chunks) for s in series)
    return fetched, n_chunks, n_points, dt


def bench_query(n: int) -> tuple[list[tuple], dict]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-query-"))
    try:
        bucket = tmp / "bucket"
        bucket.mkdir()
        now = int(time.time() * 1000)
        t1 = now - now % (14 * DAY)
        t0 = t1 - 30 * DAY
        t0 -= t0 % (2 * DAY)
        days = (t1 - t0) // DAY
        t = time.perf_counter()
        # one more 2d block after the queried range, so the last 14d range is compacted too
        # (the planner never touches the newest block)
        write_blocks(bucket, n, t0, days // 2 + 1, 2 * DAY, 60_000, {"c": "1"})
        gen_s = time.perf_counter() - t

        async def compact() -> tuple[float, int]:
            c = Compactor(CompactConfig(data_dir=tmp / "work", objstore_config="",
                                        consistency_delay_s=0, delete_delay_s=0),
                          bucket=FilesystemBucket(str(bucket)))
            t = time.perf_counter()
            for _ in range(3):
                await c.run_once()
            return time.perf_counter() - t, int(sum(
                s.value for m in c.registry.collect() if m.name == "promring_compact_samples"
                for s in m.samples if s.name.endswith("_total")))

        compact_s, compacted_samples = asyncio.run(compact())
        res_seen = sorted({int((read_meta(p).thanos or {}).get("downsample", {})
                               .get("resolution", 0)) for p in bucket.iterdir()})
        rows = []
        for res in (0, RES_1H):
            rows.append((res,) + asyncio.run(_query(bucket, tmp, t0, t1 - 1, res)))
        info = {"days": days, "gen_s": gen_s, "compact_s": compact_s,
                "compacted_samples": compacted_samples, "resolutions": res_seen,
                "blocks": len(list(bucket.iterdir()))}
        return rows, info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--query-series", type=int, default=100)
    a = ap.parse_args()

    print(f"### Compaction throughput ({a.series} series, 15 s scrapes)\n")
    print("| step | samples in | seconds | samples/s |")
    print("|---|---:|---:|---:|")
    for name, n, s in bench_compaction(a.series):
        print(f"| {name} | {n:,} | {s:.2f} | {n / s:,.0f} |")

    rows, info = bench_query(a.query_series)
    print(f"\n### 30-day range query through the store gateway ({a.query_series} series, "
          f"60 s scrapes, {info['days']} days)\n")
    print(f"Bucket made by the compactor in {info['compact_s']:.1f} s "
          f"({info['compacted_samples']:,} samples read, "
          f"{info['compacted_samples'] / info['compact_s']:,.0f}/s; resolutions "
          f"{info['resolutions']}, {info['blocks']} blocks).\n")
    print("| resolution | bucket bytes read | chunks sent | points to the engine | latency |")
    print("|---|---:|---:|---:|---:|")
    for res, fetched, chunks, points, dt in rows:
        name = "raw" if res == 0 else f"{res // 60000}m"
        print(f"| {name} | {fetched:,.0f} | {chunks:,} | {points:,} | {dt * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
