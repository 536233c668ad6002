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

Back to back, every call finds the code and data of the call before still in the CPU caches;
behind a querier (and on a shared machine) each Series call starts with them evicted, which
costs the cold call 2-3x more than here. ``--thrash-mib N`` writes an N MiB buffer between
calls (outside the timed part; each call's own CPU time is summed) to show that case.
``--hours H`` asks the last H hours (default: all blocks whole, as the docstring says).

    python bench/bench_store_cold_series.py --bucket /work/scale/s1 --thrash-mib 16 --hours 1
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
    ap.add_argument("--thrash-mib", type=int, default=0,
                    help="write this many MiB between calls (CPU caches evicted, see above)")
    ap.add_argument("--hours", type=float, default=0,
                    help="ask the last HOURS (a query's range: end 30 s before the blocks' "
                         "end, 5 min lookback); 0: every block whole")
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
            maxt -= 1
            if a.hours:
                maxt -= 30_000
                mint = maxt - int(a.hours * 3_600_000) - 300_000
            name = Matcher("=", "__name__", "x")
            thrash = bytearray(a.thrash_mib << 20)
            spent = [0.0]

            async def one(i: int) -> list:
                if thrash:
                    thrash[::64] = bytes(len(thrash[::64]))  # every cache line written
                t = time.thread_time()
                got = list(await st.series(mint, maxt,
                                           [name, Matcher("=", "instance", f"i-{i:05d}")], False))
                spent[0] += time.thread_time() - t
                return got
            if not a.no_broad:
                await st.series(mint, maxt, [name], False)
            cold = [await one(i) for i in range(a.calls)]
            cold_s = spent[0] / a.calls
            await one(a.calls)  # then warm
            spent[0] = 0.0
            for _ in range(a.calls):
                await one(a.calls)
            warm_s = spent[0] / a.calls
            n_blocks = len(st.blocks)
            await st.close()
        digest = hashlib.sha1(repr(cold).encode()).hexdigest()[:12]
        print(f"{n_blocks} blocks: cold {cold_s * 1e3:.3f} ms CPU per call, warm "
              f"{warm_s * 1e3:.3f} ms; answers {digest}")
    asyncio.run(run())


if __name__ == "__main__":
    main()
