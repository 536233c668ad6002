"""The store's cold one-series Series call, in process: ``BucketStore.series`` over a bucket of
blocks (e.g. ``bench_scale.py --keep DIR``), first for all of ``x`` (the dashboard's broad
query, which fills the cache with ``x``'s postings, series and chunks), then
``x{instance="i-NNNNN"}`` with a new instance every call (its postings list a cache miss in
every block: the cold one-series row) and one instance repeated (warm). Prints the CPU time per
call (this process only: no HTTP, no gRPC) and a digest of the cold answers, equal across
checkouts when the answers are.

    python bench/bench_store_cold_series.py --bucket /work/scale/s1
    python bench/bench_store_cold_series.py --bucket /work/scale/s1 --repo /tmp/old-checkout
    python bench/bench_store_cold_series.py --bucket /work/scale/s1 --no-broad  # all cold

The bucket is only read (index-headers go to a temporary directory).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bucket", type=Path, required=True, help="directory of blocks")
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                    help="checkout whose store code runs (default: this one)")
    ap.add_argument("--calls", type=int, default=300, help="cold calls (each a new instance)")
    ap.add_argument("--no-broad", action="store_true",
                    help="skip the broad query first: each cold call then also reads its "
                         "series entries and chunks from the bucket (nothing of x cached)")
    ap.add_argument("--cache-bytes", type=int, default=256 << 20,
                    help="LRU budget (the store's default: 256 MiB)")
    a = ap.parse_args()
    sys.path.insert(0, str(a.repo))
    from common.ops import new_registry
    from objstore.filesystem import FilesystemBucket
    from objstore.metrics import instrumented
    from receiver.tsdb.labels import Matcher
    from store.bucketstore import BucketStore
    from store.cache import CacheMetrics, LRUCache

    async def run() -> None:
        reg = new_registry()
        with tempfile.TemporaryDirectory(prefix="bench-cold-series-") as tmp:
            st = BucketStore(instrumented(FilesystemBucket(a.bucket), reg), Path(tmp),
                             LRUCache(a.cache_bytes, CacheMetrics(reg)), reg,
                             verify_index=False)
            await st.sync_once()
            mint, maxt = st.time_range()
            name = Matcher("=", "__name__", "x")

            async def one(i: int) -> list:
                return list(await st.series(mint, maxt - 1,
                                            [name, Matcher("=", "instance", f"i-{i:05d}")], False))
            if not a.no_broad:
                await st.series(mint, maxt - 1, [name], False)
            t = time.process_time()
            cold = [await one(i) for i in range(a.calls)]
            cold_s = (time.process_time() - t) / a.calls
            await one(a.calls)  # then warm
            t = time.process_time()
            for _ in range(a.calls):
                await one(a.calls)
            warm_s = (time.process_time() - t) / a.calls
            n_blocks = len(st.blocks)
            await st.close()
        digest = hashlib.sha1(repr(cold).encode()).hexdigest()[:12]
        print(f"{n_blocks} blocks: cold {cold_s * 1e3:.3f} ms CPU per call, warm "
              f"{warm_s * 1e3:.3f} ms; answers {digest}")
    asyncio.run(run())


if __name__ == "__main__":
    main()
