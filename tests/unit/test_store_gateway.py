"""Store gateway: blocks in a bucket (directory or moto S3) queried through the real StoreAPI."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from objstore import Bucket, FilesystemBucket  # noqa: E402
from receiver.tsdb.block import new_ulid, write_block_from_samples  # noqa: E402
from receiver.tsdb.chunkenc import decode_many  # noqa: E402
from receiver.tsdb.chunks import CorruptionError  # noqa: E402
from receiver.tsdb.index import IndexReader  # noqa: E402
from receiver.tsdb.labels import Labels, Matcher, matches_all  # noqa: E402
from store.block import intersect_sorted, merge_external  # noqa: E402
from store.indexheader import HEADER_FILENAME, IndexHeader  # noqa: E402
from store.indexverify import VERIFIED_MARKER  # noqa: E402
from store.ranges import coalesce  # noqa: E402
from store.server import StoreConfig, StoreGateway  # noqa: E402
from storeapi.client import StoreClient  # noqa: E402

PROMTOOL = shutil.which("promtool")
H2 = 2 * 3600 * 1000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H2  # block-aligned
ALL = (-(1 << 62), 1 << 62)

Series = list[tuple[Labels, np.ndarray, np.ndarray]]


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def make_series(n: int, t0: int, span: int, step: int = 15_000, seed: int = 1,
                names: int = 5) -> Series:
    """Sorted series with jittered timestamps over [t0, t0 + span)."""
    rng = np.random.default_rng(seed)
    out = []
    k = span // step
    for i in range(n):
        d = {"__name__": f"metric_{i % names}", "job": f"job{i % 3}", "instance": f"host-{i:05d}"}
        if i % 4 == 0:
            d["env"] = "prod" if i % 8 == 0 else "dev"
        ts = t0 + np.arange(k, dtype=np.int64) * step + rng.integers(0, 1000, k)
        vals = np.round(rng.normal(100, 20, k), 2)
        out.append((tuple(sorted(d.items())), ts, vals))
    out.sort(key=lambda s: s[0])
    return out


async def upload_dir(bucket: Bucket, block_dir: Path, *, skip_meta: bool = False) -> None:
    """Upload a block like a shipper: everything else first, meta.json last."""
    files = sorted(p for p in block_dir.rglob("*") if p.is_file())
    for p in files:
        if p.name != "meta.json":
            await bucket.upload(f"{block_dir.name}/{p.relative_to(block_dir).as_posix()}", p)
    if not skip_meta:
        await bucket.upload(f"{block_dir.name}/meta.json", block_dir / "meta.json")


def write(tmp: Path, series: Series, mint: int, maxt: int,
          ext: dict[str, str] | None = None) -> Path:
    thanos = None if ext is None else {"labels": ext, "source": "test"}
    meta = write_block_from_samples(tmp / "blocks", series, mint, maxt, thanos_meta=thanos)
    return tmp / "blocks" / meta.ulid


class CountingBucket:
    """A real bucket plus byte/request counters (a wrapper, not a mock: every call goes through)."""

    def __init__(self, inner: Bucket) -> None:
        self.inner = inner
        self.range_bytes = 0
        self.range_calls = 0
        self.get_bytes = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def reset(self) -> None:
        self.range_bytes = self.range_calls = self.get_bytes = 0

    async def get(self, name: str) -> bytes:
        b = await self.inner.get(name)
        self.get_bytes += len(b)
        return b

    async def get_range(self, name: str, off: int, length: int) -> bytes:
        b = await self.inner.get_range(name, off, length)
        self.range_bytes += len(b)
        self.range_calls += 1
        return b

    async def upload(self, name, data) -> None:
        await self.inner.upload(name, data)

    async def exists(self, name: str) -> bool:
        return await self.inner.exists(name)

    async def delete(self, name: str) -> None:
        await self.inner.delete(name)

    async def iter(self, prefix: str = "", recursive: bool = False) -> list[str]:
        return await self.inner.iter(prefix, recursive)

    async def attributes(self, name: str):
        return await self.inner.attributes(name)

    async def close(self) -> None:
        await self.inner.close()


async def with_gateway(tmp: Path, bucket: Bucket,
                       body: Callable[[StoreGateway, StoreClient], Awaitable[None]],
                       **cfg) -> None:
    gw = StoreGateway(StoreConfig(data_dir=tmp / "store-data", objstore_config="",
                                  grpc_address="127.0.0.1:0", http_address="127.0.0.1:0",
                                  sync_interval_s=3600, **cfg), bucket=bucket)
    await gw.start()
    client = StoreClient(f"127.0.0.1:{gw.ports['grpc']}", timeout_s=60)
    try:
        await body(gw, client)
    finally:
        await client.close()
        await gw.stop()


def expected(parts: list[tuple[Series, dict[str, str], int, int]], mint: int, maxt: int
             ) -> dict[Labels, tuple[np.ndarray, np.ndarray]]:
    """What a store holding these (series, external labels, block range) parts must return."""
    acc: dict[Labels, list[tuple[np.ndarray, np.ndarray]]] = {}
    for series, ext, bmin, bmax in parts:
        for lbls, ts, vals in series:
            keep = (ts >= max(mint, bmin)) & (ts <= maxt) & (ts < bmax)
            if keep.any():
                key = merge_external(lbls, tuple(sorted(ext.items())))
                acc.setdefault(key, []).append((ts[keep], vals[keep]))
    out = {}
    for k, ps in acc.items():
        ps.sort(key=lambda p: p[0][0])
        out[k] = (np.concatenate([p[0] for p in ps]), np.concatenate([p[1] for p in ps]))
    return out


async def check_series(client: StoreClient, want: dict, mint: int, maxt: int,
                       matchers: list[Matcher]) -> None:
    got = await client.series(mint, maxt, matchers)
    want_keys = sorted(k for k in want if matches_all(k, matchers))
    assert [s.labels for s in got] == want_keys, matchers
    for s in got:
        assert [c[0] for c in s.chunks] == sorted(c[0] for c in s.chunks)
        t, v = decode_many([c[2] for c in s.chunks], mint, maxt)
        wt, wv = want[s.labels]
        assert np.array_equal(t, wt), s.labels
        assert np.array_equal(v, wv), s.labels


# --------------------------------------------------------------------------- ranges


def test_coalesce_merges_small_gaps_and_splits_big_groups() -> None:
    s = np.array([0, 10, 100, 1000, 1010, 5000], dtype=np.int64)
    e = np.array([10, 50, 120, 1010, 1100, 6000], dtype=np.int64)
    assert coalesce(s, e, 0) == [(0, 50, 0, 2), (100, 120, 2, 3), (1000, 1100, 3, 5),
                                 (5000, 6000, 5, 6)]
    assert coalesce(s, e, 1000) == [(0, 1100, 0, 5), (5000, 6000, 5, 6)]
    assert coalesce(s, e, 10_000) == [(0, 6000, 0, 6)]
    # Cut about every max_size bytes, only at item boundaries; nothing lost.
    assert coalesce(s, e, 10_000, max_size=1000) == [(0, 120, 0, 3), (1000, 1100, 3, 5),
                                                     (5000, 6000, 5, 6)]
    assert coalesce(s[:0], e[:0], 10) == []


# --------------------------------------------------------------------------- index-header


def test_block_merge_is_label_sorted_and_joins_series_across_blocks() -> None:
    """The lazy merge across blocks (issue 13: replaces a dict merge and a full sort):
    label-sorted output, one entry per series, chunks of consecutive blocks concatenated in
    time order, overlapping blocks' chunks sorted with exact duplicates dropped."""
    from store.bucketstore import merge_block_series

    a, b, c = (("n", "a"),), (("n", "b"),), (("n", "c"),)
    blk1 = [(a, [(0, 9, b"a1")]), (c, [(0, 9, b"c1")])]
    blk2 = [(a, [(10, 19, b"a2")]), (b, [(10, 19, b"b2")])]
    overlap = [(a, [(0, 9, b"a1"), (5, 12, b"a3")])]
    assert list(merge_block_series([blk1, [], blk2])) == [
        (a, [(0, 9, b"a1"), (10, 19, b"a2")]), (b, [(10, 19, b"b2")]), (c, [(0, 9, b"c1")])]
    assert list(merge_block_series([blk1, blk2, overlap]))[0] == (
        a, [(0, 9, b"a1"), (5, 12, b"a3"), (10, 19, b"a2")])
    assert list(merge_block_series([[], []])) == []
    assert list(merge_block_series([[(c, []), (a, [])]])) == [(a, []), (c, [])]
    # Blocks in time order with the same series: chunk lists concatenated; the answer is the
    # same as the general merge's, also when external labels left a block's series unsorted.
    same1 = [(c, [(0, 9, b"c1")]), (a, [(0, 9, b"a1")])]
    same2 = [(c, [(10, 19, b"c2")]), (a, [(10, 19, b"a2")])]
    for blocks in ([blk1, blk2], [same1, same2], [same1, [], same2]):
        assert list(merge_block_series(blocks, in_time_order=True)) == \
            list(merge_block_series(blocks))
    assert list(merge_block_series([same1, same2], in_time_order=True)) == [
        (a, [(0, 9, b"a1"), (10, 19, b"a2")]), (c, [(0, 9, b"c1"), (10, 19, b"c2")])]
    # One series per block (a dashboard panel): the same series joined, different ones not.
    one = [[(a, [(i * 10, i * 10 + 9, b"a%d" % i)])] for i in range(3)]
    for blocks in (one, [one[0], [(b, [(10, 19, b"b1")])], one[2]], [one[0], [], one[2]],
                   [one[0], blk2]):
        assert list(merge_block_series(blocks, in_time_order=True)) == \
            list(merge_block_series(blocks))
    assert list(merge_block_series(one, in_time_order=True)) == [
        (a, [(0, 9, b"a0"), (10, 19, b"a1"), (20, 29, b"a2")])]


def test_index_header_matches_full_index_reader(tmp_path: Path) -> None:
    series = make_series(300, T0, H2, step=60_000)
    bdir = write(tmp_path, series, T0, T0 + H2, {"cluster": "a"})
    data = (bdir / "index").read_bytes()
    ir = IndexReader(data)

    async def main() -> None:
        bkt = CountingBucket(FilesystemBucket(tmp_path / "bucket"))
        await upload_dir(bkt, bdir)
        bkt.reset()
        path = tmp_path / "hdr" / HEADER_FILENAME
        h, fetched = await IndexHeader.load_or_fetch(bkt, f"{bdir.name}/index", len(data), path)
        assert fetched and bkt.range_calls == 3 and bkt.get_bytes == 0
        assert bkt.range_bytes < len(data)  # never the series section
        assert h.symbols == ir.symbols()
        assert h.label_names() == ir.label_names()
        for n in ir.label_names():
            assert h.label_values(n) == ir.label_values(n)
            for v in ir.label_values(n):
                s, e = h.postings_range(n, v)
                assert int.from_bytes(data[s:s + 4], "big") == 4 + 4 * len(ir.postings(n, v))
                assert s + 8 + 4 * len(ir.postings(n, v)) <= e
        # each lookup's range is the one the walk over a name's lists gives, in table order
        # and where the lists are not (an end kept per list: here each a byte short of the
        # next start, so that a lookup ignoring them shows)
        for kept_ends in (False, True):
            if kept_ends:
                starts = np.asarray(h._start_at, np.int64)
                h._ends = np.r_[starts[1:], h.postings_end] - 1
            for n in ir.label_names():
                assert [(s, e) for _, s, e in h.postings_ranges(n, lambda v: True)] == \
                    [h.postings_range(n, v) for v in ir.label_values(n)]
            # the equality matchers' lookup of many pairs in one C call: the same ranges
            pairs = [(n, v) for n in ir.label_names() for v in ir.label_values(n)]
            assert h.eq_ranges([n for n, _ in pairs], [v.encode() for _, v in pairs]) == \
                [h.postings_range(n, v) for n, v in pairs]
            (n0, v0), (n1, v1) = pairs[0], pairs[-1]
            for names, values in (([n0, n1], [v0.encode(), b"nope"]), ([n0, "no"], [v0.encode(), b"x"]),
                                  ([n1], [b""])):
                assert h.eq_ranges(names, values) is None
            assert h.eq_ranges([], []) == []
            with pytest.raises(ValueError):
                h.eq_ranges([n0], [v0.encode(), v1.encode()])
        bkt.reset()
        h2, fetched = await IndexHeader.load_or_fetch(bkt, f"{bdir.name}/index", len(data), path)
        assert not fetched and bkt.range_calls == 0 and h2.symbols == h.symbols
        path.write_bytes(path.read_bytes()[:-1] + b"\0")  # corrupt: rebuilt from the bucket
        _, fetched = await IndexHeader.load_or_fetch(bkt, f"{bdir.name}/index", len(data), path)
        assert fetched

    run(main())


def test_label_sets_share_the_previous_series_equal_pairs(tmp_path: Path) -> None:
    """IndexHeader.label_sets of consecutive series: a pair with the same symbols as the
    previous series' pair at that position is that tuple; everything else is built anew."""
    series = make_series(20, T0, H2, step=60_000)
    bdir = write(tmp_path, series, T0, T0 + H2, {})
    data = (bdir / "index").read_bytes()

    async def main() -> IndexHeader:
        bkt = FilesystemBucket(tmp_path / "bucket")
        await upload_dir(bkt, bdir)
        h, _ = await IndexHeader.load_or_fetch(bkt, f"{bdir.name}/index", len(data),
                                               tmp_path / "hdr" / HEADER_FILENAME)
        return h

    h = asyncio.run(main())
    syms = list(h.symbols)
    a, b, c = syms[:3]
    sets = [((a, b), (b, c)), ((a, b), (b, a)), ((a, b),), ((a, c), (b, a)), ((a, c), (b, a))]
    ids = np.array([syms.index(x) for ls in sets for p in ls for x in p], np.int64)
    got = h.label_sets(np.array([len(ls) for ls in sets], np.int64), ids)
    assert got == sets
    assert got[1][0] is got[0][0] and got[1][1] is not got[0][1]
    assert got[2][0] is got[1][0] and got[3][0] is not got[2][0]
    assert got[4][0] is got[3][0] and got[4][1] is got[3][1]


def test_blocks_for_a_range_are_those_overlapping_it_in_time_order() -> None:
    """BucketStore._blocks_for (one resolution and label set) gives exactly the blocks that
    overlap [mint, maxt] (start <= maxt, end > mint), in order: by bisection when the blocks
    follow one another in time (a bucket's 2 h blocks, a compacted bucket), by a filter when
    some overlap, for ranges before, inside, between and after them."""
    from types import SimpleNamespace

    from store.bucketstore import BucketStore

    def brute(blocks, mint, maxt):
        return [b for b in blocks if b.min_time <= maxt and b.max_time > mint]

    rnd = np.random.default_rng(11)
    following = []
    t = 1000
    for i in range(40):  # some touching, some with gaps, one long (compacted) block
        t += int(rnd.choice([0, 0, 7]))
        span = 500 if i != 17 else 6000
        following.append((t, t + span))
        t += span
    overlapping = following[:20] + [(following[3][0] + 1, following[9][1] + 50)]
    for spans, follow in ((following, True), (overlapping, False)):
        store = object.__new__(BucketStore)
        store.memo, store._window = None, None
        store.blocks = {f"b{i}": SimpleNamespace(min_time=lo, max_time=hi, resolution=0,
                                                 ext_labels=())
                        for i, (lo, hi) in enumerate(spans)}
        store._blocks_changed()
        assert store._all_follow is follow
        blocks = list(store.blocks.values())
        edges = sorted({x + d for lo, hi in spans for x in (lo, hi) for d in (-1, 0, 1)})
        for _ in range(3000):
            mint, maxt = sorted(int(rnd.choice(edges)) + int(rnd.integers(-3, 4))
                                for _ in range(2))
            assert store._blocks_for(mint, maxt) == brute(blocks, mint, maxt), (mint, maxt)
        assert store._blocks_for(0, 10) == [] and store._blocks_for(10 ** 9, 10 ** 9 + 1) == []
        assert store._blocks_for(min(spans)[0], max(hi for _, hi in spans)) == blocks


def test_chunk_tuples_are_zip_with_atomic_ones_left_out_of_the_gc() -> None:
    """store._items.chunk_tuples equals list(zip(...)); a (int, int, bytes) tuple is untracked
    by the GC (no collection walks it), one holding another object is not; unequal lengths
    are an error, not a short answer."""
    import gc

    from store._items import chunk_tuples

    class Other(bytes):
        pass

    mints, maxts = [1, 2, 3], [4, 5, 1 << 70]
    datas = [b"\x00", Other(b"\x01"), b""]
    got = chunk_tuples(mints, maxts, datas)
    assert got == list(zip(mints, maxts, datas))
    assert [gc.is_tracked(t) for t in got] == [False, True, False]
    with pytest.raises(ValueError):
        chunk_tuples(mints, maxts, datas[:2])


def test_postings_lookup_by_bytes_finds_every_value_and_no_other(tmp_path: Path) -> None:
    """The C binary search compares UTF-8 bytes: non-ASCII values, prefixes of values and
    values sorting before/after all others are found exactly when present."""
    vals = ["", "a", "ab", "abc", "b", "é", "éa", "z", "日本", "\U0001F600"]
    series = [((("__name__", "m"), ("v", v)), np.array([T0]), np.array([1.0]))
              for v in vals if v]
    series.sort(key=lambda s: s[0])
    bdir = write(tmp_path, series, T0, T0 + H2)
    ir = IndexReader((bdir / "index").read_bytes())

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "bucket")
        await upload_dir(bkt, bdir)
        h = await IndexHeader.fetch(bkt, f"{bdir.name}/index",
                                    (bdir / "index").stat().st_size)
        for v in vals[1:]:
            s, _ = h.postings_range("v", v)
            assert int.from_bytes((bdir / "index").read_bytes()[s + 4:s + 8], "big") == \
                len(ir.postings("v", v))
            assert h.eq_ranges(["__name__", "v"], [b"m", v.encode()]) == \
                [h.postings_range("__name__", "m"), h.postings_range("v", v)]
        for v in ["", "0", "aa", "abcd", "c", "e", "éb", "zz", "日", "\U0001F601", "\uffff"]:
            assert h.postings_range("v", v) is None, v
            assert h.eq_ranges(["__name__", "v"], [b"m", v.encode("utf-8", "surrogatepass")]) \
                is None, v
        assert h.postings_range("nope", "a") is None
        assert h.postings_range("__name__", "m") is not None

    run(main())


def test_intersect_sorted_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    for na, nb in [(0, 5), (5, 0), (1, 1000), (1000, 3), (300, 400), (1, 1)]:
        a = np.unique(rng.integers(0, 2000, na))
        b = np.unique(rng.integers(0, 2000, nb))
        assert intersect_sorted(a, b).tolist() == np.intersect1d(a, b).tolist()
    big = np.arange(0, 100, 2)
    assert intersect_sorted(np.array([99, 100, 101]), big).tolist() == []
    assert intersect_sorted(np.array([0, 98]), big).tolist() == [0, 98]


def test_index_header_memory_is_compact_arrays_not_strings(tmp_path: Path) -> None:
    """Issue 13: a loaded index-header kept a Python str per symbol and per label value
    (~150+ bytes each), so a 1M-series block cost hundreds of MiB. The header file is now
    mmapped and only position arrays (4-8 bytes per entry) stay on the heap; strings are
    decoded on demand and still answer exactly."""
    import tracemalloc

    n = 20_000  # one distinct instance value per series
    span = 2 * 60_000
    series = [((("__name__", "m"), ("instance", f"host-{i:06d}")),
               np.array([T0, T0 + 60_000], dtype=np.int64), np.array([1.0, 2.0]))
              for i in range(n)]
    bdir = write(tmp_path, series, T0, T0 + span, {"c": "a"})
    data = (bdir / "index").read_bytes()

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "blocks")
        path = tmp_path / "hdr" / HEADER_FILENAME
        h, _ = await IndexHeader.load_or_fetch(bkt, f"{bdir.name}/index", len(data), path)
        del h
        tracemalloc.start()
        try:
            h = IndexHeader.open(path)
            heap, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert heap < 20 * n, f"{heap / n:.0f} heap bytes per distinct value"
        assert h.label_values("instance")[:2] == ["host-000000", "host-000001"]
        assert h.postings_range("instance", "host-019999") is not None
        assert h.postings_range("instance", "host-0199990") is None
        assert h.postings_range("instance", "") is None

    run(main())


# --------------------------------------------------------------------------- queries


def _matcher_cases() -> list[list[Matcher]]:
    M = Matcher
    return [
        [M("=", "__name__", "metric_1")],
        [M("=", "__name__", "metric_1"), M("=", "job", "job2")],
        [M("!=", "job", "job0")],
        [M("=~", "__name__", "metric_[13]"), M("!~", "instance", "host-0000.*")],
        [M("=~", "__name__", ".+"), M("=", "env", "")],
        [M("=~", "__name__", ".+"), M("!=", "env", "")],
        [M("=", "env", "prod")],
        [M("=", "cluster", "a")],
        [M("=", "cluster", "b"), M("=", "__name__", "metric_2")],
        [M("=~", "cluster", "a|c"), M("!=", "__name__", "metric_0")],
        [M("!=", "cluster", "a"), M("=~", "job", "job[12]")],
        [M("=", "cluster", "")],
        [M("=", "cluster", "nope")],
        [M("=", "__name__", "no_such_metric")],
        [M("=", "job", "job1"), M("=", "cluster", "b"), M("=~", "env", "dev|")],
    ]


def test_series_matchers_merge_time_filter_labels_and_info(tmp_path: Path) -> None:
    s1 = make_series(200, T0, 2 * H2, seed=1)
    s2 = make_series(60, T0, H2, seed=2)
    blocks = [write(tmp_path, s1, T0, T0 + H2, {"cluster": "a"}),
              write(tmp_path, s1, T0 + H2, T0 + 2 * H2, {"cluster": "a"}),
              write(tmp_path, s2, T0, T0 + H2, {"cluster": "b", "replica": "x"})]
    parts = [(s1, {"cluster": "a"}, T0, T0 + H2), (s1, {"cluster": "a"}, T0 + H2, T0 + 2 * H2),
             (s2, {"cluster": "b", "replica": "x"}, T0, T0 + H2)]

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        assert gw.ready and len(gw.store.blocks) == 3
        info = await client.info()
        assert info.component_type == "store"
        assert info.label_sets == [(("cluster", "a"),), (("cluster", "b"), ("replica", "x"))]
        assert (info.min_time, info.max_time) == (T0, T0 + 2 * H2)

        # Every sample back; s1 series span two blocks and come back as one series.
        want = expected(parts, *ALL)
        await check_series(client, want, *ALL, [Matcher("=~", "__name__", ".+")])
        one = await client.series(*ALL, [Matcher("=", "instance", "host-00001"),
                                         Matcher("=", "cluster", "a")])
        assert len(one) == 1 and len(one[0].chunks) == 2 * (H2 // 15_000 // 120)

        for ms in _matcher_cases():
            await check_series(client, want, *ALL, ms)

        # Time filtering: inside one block, across the boundary, and outside everything.
        for mint, maxt in ((T0 + 1000, T0 + 40 * 60_000), (T0 + H2 - 600_000, T0 + H2 + 600_000),
                           (T0 + 2 * H2 - 1, T0 + 3 * H2)):
            w = expected(parts, mint, maxt)
            await check_series(client, w, mint, maxt, [Matcher("=~", "job", "job[01]")])
        assert await client.series(T0 + 3 * H2, T0 + 4 * H2, [Matcher("=~", "job", ".+")]) == []
        # Thanos's per-request store metrics moved: the empty range touched no block.
        reg = gw.registry
        assert reg.get_sample_value("thanos_bucket_store_series_blocks_queried_bucket",
                                    {"le": "0.0"}) >= 1
        assert reg.get_sample_value("thanos_bucket_store_series_blocks_queried_sum") > 0
        assert reg.get_sample_value("thanos_bucket_store_series_get_all_duration_seconds_count") > 1
        late = await client.series(T0 + H2 + 1, T0 + 2 * H2, [Matcher("=~", "job", ".+")])
        assert {dict(s.labels)["cluster"] for s in late} == {"a"}  # the b block ends at T0+H2

        skip = await client.series(*ALL, [Matcher("=", "__name__", "metric_3")], skip_chunks=True)
        assert [s.labels for s in skip] == sorted(k for k in want if dict(k)["__name__"] == "metric_3")
        assert all(s.chunks == [] for s in skip)

        # Label names and values, with external labels and matchers.
        names = await client.label_names(*ALL)
        assert names == sorted({n for k in want for n, _ in k})
        assert "cluster" in names and "replica" in names
        assert await client.label_names(*ALL, [Matcher("=", "cluster", "a")]) == \
            ["__name__", "cluster", "env", "instance", "job"]
        assert await client.label_values("cluster", *ALL) == ["a", "b"]
        assert await client.label_values("replica", *ALL) == ["x"]
        assert await client.label_values("cluster", *ALL, [Matcher("=", "instance", "host-00150")]) \
            == ["a"]
        assert await client.label_values("instance", *ALL, [Matcher("=", "cluster", "b")]) == \
            sorted({dict(k)["instance"] for k in want if dict(k)["cluster"] == "b"})
        assert await client.label_values("env", *ALL) == ["dev", "prod"]
        assert await client.label_values("job", T0 + 5 * H2, T0 + 6 * H2) == []
        assert await client.label_values("nope", *ALL) == []

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "bucket")
        for b in blocks:
            await upload_dir(bkt, b)
        await with_gateway(tmp_path, bkt, body)

    run(main())


def test_tiny_size_estimates_force_exact_rereads(tmp_path: Path) -> None:
    """Items longer than their read-ahead estimate are re-read exactly, never cut short."""
    series = make_series(50, T0, H2, seed=5)
    bdir = write(tmp_path, series, T0, T0 + H2, {"cluster": "a"})
    want = expected([(series, {"cluster": "a"}, T0, T0 + H2)], *ALL)

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        await check_series(client, want, *ALL, [Matcher("=~", "instance", "host-000[0-3].")])
        refetch = gw.store.fetch_metrics.refetches
        assert refetch.labels("series")._value.get() > 0
        assert refetch.labels("chunks")._value.get() > 0

    async def body_split(gw: StoreGateway, client: StoreClient) -> None:
        bkt = CountingBucket(gw.store.bucket)
        for b in gw.store.blocks.values():
            b.bucket = bkt
        await check_series(client, want, *ALL, [Matcher("=~", "job", ".+")])
        assert bkt.range_calls > 10  # ~100 KiB of chunks in 4 KiB pieces

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "bucket")
        await upload_dir(bkt, bdir)
        await with_gateway(tmp_path, bkt, body, series_size_estimate=3, chunk_size_estimate=5,
                           max_gap_bytes=0)
        await with_gateway(tmp_path, bkt, body_split, max_range_bytes=4096)

    run(main())


def openmetrics(series: Series) -> str:
    lines = []
    by_name: dict[str, list] = {}
    for lbls, ts, vals in series:
        by_name.setdefault(dict(lbls)["__name__"], []).append((lbls, ts, vals))
    for name, group in by_name.items():
        lines.append(f"# TYPE {name} gauge")
        for lbls, ts, vals in group:
            ls = ",".join(f'{k}="{v}"' for k, v in lbls if k != "__name__")
            for t, v in zip(ts.tolist(), vals.tolist()):
                lines.append(f"{name}{{{ls}}} {v!r} {t // 1000}.{t % 1000:03d}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Prometheus) not installed")
def test_plain_prometheus_block_from_promtool(tmp_path: Path) -> None:
    series = make_series(40, T0 + 600_000, H2, step=30_000, seed=7)
    src = tmp_path / "in.om"
    src.write_text(openmetrics(series))
    out = tmp_path / "prom"
    res = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(src), str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    bdirs = sorted(p for p in out.iterdir() if (p / "meta.json").exists())
    assert len(bdirs) >= 2  # the data crosses a 2h boundary
    assert all("thanos" not in json.loads((b / "meta.json").read_text()) for b in bdirs)
    want = expected([(series, {}, *ALL)], *ALL)

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        assert len(gw.store.blocks) == len(bdirs)
        info = await client.info()
        assert info.label_sets == [()]
        await check_series(client, want, *ALL, [Matcher("=~", "__name__", "metric_.*")])
        for ms in _matcher_cases():
            if not any(m.name == "cluster" and not m.matches("") for m in ms):
                await check_series(client, want, *ALL, ms)
        mint, maxt = T0 + H2 - 300_000, T0 + H2 + 300_000
        await check_series(client, expected([(series, {}, *ALL)], mint, maxt), mint, maxt,
                           [Matcher("=", "job", "job2")])
        assert await client.label_values("job", *ALL) == ["job0", "job1", "job2"]
        # Prometheus's own index layout passes the whole-index check.
        await gw.store.wait_verified()
        assert len(gw.store.blocks) == len(bdirs)
        assert all((tmp_path / "store-data" / b.name / VERIFIED_MARKER).is_file() for b in bdirs)

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "bucket")
        for b in bdirs:
            await upload_dir(bkt, b)
        await with_gateway(tmp_path, bkt, body)

    run(main())


# --------------------------------------------------------------------------- sync


def test_sync_skips_partial_and_marked_blocks_and_picks_up_changes(tmp_path: Path) -> None:
    s = make_series(20, T0, H2, step=60_000)
    good = write(tmp_path, s, T0, T0 + H2, {"cluster": "good"})
    partial = write(tmp_path, s, T0, T0 + H2, {"cluster": "partial"})
    marked = write(tmp_path, s, T0, T0 + H2, {"cluster": "marked"})
    later = write(tmp_path, s, T0, T0 + H2, {"cluster": "later"})
    data_dir = tmp_path / "store-data"

    async def clusters(client: StoreClient) -> list[str]:
        return await client.label_values("cluster", *ALL)

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        bkt = gw.store.bucket
        assert await clusters(client) == ["good"]
        assert sorted(gw.store.blocks) == [good.name]
        assert (data_dir / good.name / HEADER_FILENAME).is_file()
        assert not (data_dir / marked.name).exists()

        await upload_dir(bkt, later)
        assert await clusters(client) == ["good"]  # not before a sync
        await gw.sync_once()
        assert await clusters(client) == ["good", "later"]
        assert len(await client.series(*ALL, [Matcher("=", "cluster", "later")])) == 20

        # The partial upload completes; the good block gets marked, then the later one vanishes.
        await bkt.upload(f"{partial.name}/meta.json", partial / "meta.json")
        await bkt.upload(f"{good.name}/deletion-mark.json",
                         json.dumps({"id": good.name, "deletion_time": 1, "version": 1}).encode())
        await gw.sync_once()
        assert await clusters(client) == ["later", "partial"]
        assert not (data_dir / good.name).exists()  # its index-header is cleaned up
        for name in await bkt.iter(later.name, recursive=True):
            await bkt.delete(name)
        await gw.sync_once()
        assert await clusters(client) == ["partial"]
        info = await client.info()
        assert info.label_sets == [(("cluster", "partial"),)]

        text = await _get(gw, "/metrics")
        assert "thanos_bucket_store_blocks_loaded 1.0" in text
        assert 'thanos_blocks_meta_synced{state="marked-for-deletion"} 2.0' in text

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "bucket")
        await upload_dir(bkt, good)
        await upload_dir(bkt, partial, skip_meta=True)
        await upload_dir(bkt, marked)
        await bkt.upload(f"{marked.name}/deletion-mark.json",
                         json.dumps({"id": marked.name, "deletion_time": 1, "version": 1}).encode())
        await bkt.upload("debug/metas/x.json", b"{}")  # not a block directory
        (data_dir / new_ulid()).mkdir(parents=True)  # stale local state from a vanished block
        await with_gateway(tmp_path, bkt, body)
        assert sorted(p.name for p in data_dir.iterdir()) == [partial.name]

    run(main())


async def _get(gw: StoreGateway, path: str) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{gw.ports['http']}{path}") as r:
            assert r.status == 200
            return await r.text()


# --------------------------------------------------------------------------- I/O and caching


def test_ranged_reads_cache_hits_and_restart_from_local_headers(tmp_path: Path) -> None:
    series = make_series(2000, T0, H2, seed=11, names=20)
    bdir = write(tmp_path, series, T0, T0 + H2, {"cluster": "a"})
    block_bytes = sum(p.stat().st_size for p in bdir.rglob("*") if p.is_file())
    want = expected([(series, {"cluster": "a"}, T0, T0 + H2)], *ALL)
    query = [Matcher("=", "__name__", "metric_7"), Matcher("=~", "instance", "host-00[0-4].*")]
    sync_bytes: list[int] = []

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        bkt = gw.store.bucket
        assert isinstance(bkt, CountingBucket)
        sync_bytes.append(bkt.range_bytes)
        assert (await _get(gw, "/-/ready")) == "OK" and (await _get(gw, "/-/healthy")) == "OK"
        bkt.reset()
        await check_series(client, want, *ALL, query)
        cold = bkt.range_bytes
        assert 0 < cold < block_bytes / 20, (cold, block_bytes)
        assert bkt.get_bytes == 0  # nothing read whole

        bkt.reset()
        await check_series(client, want, *ALL, query)
        assert bkt.range_bytes == 0 and bkt.range_calls == 0  # all from the cache
        text = await _get(gw, "/metrics")
        # The repeated selection is one expanded-postings hit: its postings lists were
        # looked up (and missed) only the first time.
        for t in ("expanded_postings", "series", "chunks"):
            hits = _metric(text, f'thanos_store_index_cache_hits_total{{item_type="{t}"}}')
            assert hits > 0, t
        assert _metric(text, 'thanos_store_index_cache_requests_total{item_type="postings"}') > 0
        assert _metric(text, 'thanos_store_index_cache_hits_total{item_type="postings"}') == 0

    async def main() -> None:
        bkt = CountingBucket(FilesystemBucket(tmp_path / "bucket"))
        await upload_dir(bkt, bdir)
        bkt.reset()
        await with_gateway(tmp_path, bkt, body, verify_index=False)
        # The index-header came from ranged reads of a fraction of the index.
        assert 0 < sync_bytes[0] < (bdir / "index").stat().st_size / 2
        # A restart reuses the local index-header: no ranged reads at all during sync.
        bkt.reset()
        await with_gateway(tmp_path, bkt, _noop, verify_index=False)
        assert bkt.range_calls == 0

    run(main())


async def _noop(gw: StoreGateway, client: StoreClient) -> None:
    assert len(gw.store.blocks) == 1


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exported")


def test_small_cache_evicts_and_still_answers(tmp_path: Path) -> None:
    series = make_series(300, T0, H2, seed=13)
    bdir = write(tmp_path, series, T0, T0 + H2, {"cluster": "a"})
    want = expected([(series, {"cluster": "a"}, T0, T0 + H2)], *ALL)

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        for _ in range(2):
            await check_series(client, want, *ALL, [Matcher("=~", "job", ".+")])
        assert gw.cache.size <= 64 << 10
        text = await _get(gw, "/metrics")
        assert _metric(text, 'thanos_store_index_cache_items_evicted_total{item_type="chunks"}') > 0

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "bucket")
        await upload_dir(bkt, bdir)
        await with_gateway(tmp_path, bkt, body, cache_bytes=64 << 10)

    run(main())


# --------------------------------------------------------------------------- S3 (moto)


def test_s3_bucket_via_objstore_config(tmp_path: Path) -> None:
    from moto import MotoNotInstalled, MotoServer  # tests/moto.py

    server = MotoServer()
    try:
        server.start()
    except MotoNotInstalled as e:
        pytest.skip(f"moto_server is not installed: {e}")
    try:
        name = "blocks-" + uuid.uuid4().hex[:8]
        yaml = (f"type: S3\nconfig:\n  bucket: {name}\n  endpoint: {server.endpoint}\n"
                f"  insecure: true\n  region: us-east-1\n  access_key: test\n  secret_key: test\n")
        series = make_series(100, T0, H2, seed=17)
        bdir = write(tmp_path, series, T0, T0 + H2, {"cluster": "s3"})
        want = expected([(series, {"cluster": "s3"}, T0, T0 + H2)], *ALL)

        async def main() -> None:
            from objstore import bucket_from_config
            gw = StoreGateway(StoreConfig(data_dir=tmp_path / "sd", objstore_config=yaml,
                                          grpc_address="127.0.0.1:0",
                                          http_address="127.0.0.1:0"))
            await gw.start()  # the bucket does not exist yet: up, but not ready
            client = StoreClient(f"127.0.0.1:{gw.ports['grpc']}")
            try:
                assert not gw.ready
                async with aiohttp.ClientSession() as s:
                    url = f"http://127.0.0.1:{gw.ports['http']}/-/ready"
                    async with s.get(url) as r:
                        assert r.status == 503
                server.create_bucket(name)
                up = bucket_from_config(yaml)
                await upload_dir(up, bdir)
                await up.close()
                await gw.sync_once()
                assert gw.ready and len(gw.store.blocks) == 1
                assert await _get(gw, "/-/ready") == "OK"
                await check_series(client, want, *ALL, [Matcher("=~", "__name__", ".+")])
                w = expected([(series, {"cluster": "s3"}, T0, T0 + H2)], T0 + 1_000_000,
                             T0 + 2_000_000)
                await check_series(client, w, T0 + 1_000_000, T0 + 2_000_000,
                                   [Matcher("=", "cluster", "s3"), Matcher("!=", "job", "job1")])
            finally:
                await client.close()
                await gw.stop()

        run(main())
    finally:
        server.stop()


# --------------------------------------------------------------------------- corrupt blocks


def _garble(path: Path, start: int, end: int, n: int = 64) -> None:
    """Overwrite ``n`` bytes in the middle of ``path``'s [start, end) with garbage."""
    data = bytearray(path.read_bytes())
    mid = (start + end) // 2
    data[mid:mid + n] = b"\xab" * n
    path.write_bytes(bytes(data))


def _truncate_chunks(bdir: Path) -> None:
    seg = bdir / "chunks" / "000001"
    seg.write_bytes(seg.read_bytes()[: seg.stat().st_size // 2])


def _three_blocks(tmp: Path) -> tuple[list, list[Path]]:
    """Two intact blocks (cluster a over two ranges) and a third (cluster b) to corrupt."""
    parts = [(make_series(200, T0, H2, seed=21), {"cluster": "a"}, T0, T0 + H2),
             (make_series(200, T0 + H2, H2, seed=22), {"cluster": "a"}, T0 + H2, T0 + 2 * H2),
             (make_series(200, T0, H2, seed=23), {"cluster": "b"}, T0, T0 + H2)]
    return parts, [write(tmp, s, lo, hi, ext) for s, ext, lo, hi in parts]


@pytest.mark.parametrize("damage", ["index-series", "index-series-length", "index-postings",
                                    "index-symbols", "chunks-truncated",
                                    "chunks-truncated-no-sizes"])
def test_corrupt_block_is_taken_out_and_other_blocks_answer(tmp_path: Path, damage: str,
                                                            caplog) -> None:
    """A block with garbage in its index or a truncated chunks file never fails a query over
    the intact blocks: it is refused at load (sizes disagree with meta.json) or taken out of
    service at its first read error, with a warning and a Thanos metric."""
    parts, dirs = _three_blocks(tmp_path)
    bad = dirs[2]
    ir = IndexReader((bad / "index").read_bytes())
    if damage == "index-series":
        _garble(bad / "index", ir.toc.series, ir.toc.label_indices)
    elif damage == "index-series-length":  # first entry claims ~32 GiB: read exactly, refused
        data = bytearray((bad / "index").read_bytes())
        data[ir.toc.series:ir.toc.series + 5] = b"\xff\xff\xff\xff\x7f"
        (bad / "index").write_bytes(bytes(data))
    elif damage == "index-postings":  # the list of job="job0", which the query reads
        off = int(ir._postings["job"][1][0])
        _garble(bad / "index", off + 8, off + 8)
    elif damage == "index-symbols":
        _garble(bad / "index", ir.toc.symbols, ir.toc.series)
    else:
        _truncate_chunks(bad)
        if damage == "chunks-truncated-no-sizes":  # e.g. a plain Prometheus block
            meta = json.loads((bad / "meta.json").read_text())
            del meta["thanos"]["files"]
            (bad / "meta.json").write_text(json.dumps(meta))
    want = expected(parts[:2], *ALL)
    at_load = damage in ("chunks-truncated", "index-symbols")

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        text = await _get(gw, "/metrics")
        assert _metric(text, "thanos_bucket_store_block_load_failures_total") == int(at_load)
        for _ in range(2):
            await check_series(client, want, *ALL, [Matcher("=", "cluster", "a")])
            # Queries that touch the broken block still answer with everything intact.
            got = await client.series(*ALL, [Matcher("=~", "job", ".+")])
            assert sorted(s.labels for s in got) == sorted(want)
        assert sorted(gw.store.blocks) == sorted(d.name for d in dirs[:2])
        await gw.sync_once()  # a sync does not bring it back
        assert sorted(gw.store.blocks) == sorted(d.name for d in dirs[:2])
        assert await client.label_values("cluster", *ALL) == ["a"]
        text = await _get(gw, "/metrics")
        assert _metric(text, "thanos_bucket_store_block_drops_total") == int(not at_load)
        assert _metric(text, "thanos_bucket_store_blocks_loaded") == 2
        warned = [r for r in caplog.records if r.levelname == "WARNING"
                  and getattr(r, "block", None) == bad.name]
        assert warned, "no warning names the corrupt block"

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "bucket")
        for d in dirs:
            await upload_dir(bkt, d)
        await with_gateway(tmp_path, bkt, body)

    caplog.set_level("INFO")
    run(main())


def test_whole_index_check_finds_damage_no_query_touched(tmp_path: Path) -> None:
    """Garbage in a postings list no query reads is found by the background index check:
    the block goes out of service; intact blocks pass once and are not read again after a
    restart (their marker)."""
    parts, dirs = _three_blocks(tmp_path)
    bad = dirs[2]
    ir = IndexReader((bad / "index").read_bytes())
    off = int(ir._postings["instance"][1][-1])  # host-00199: no query below asks for it
    _garble(bad / "index", off + 8, off + 8, n=4)
    want = expected(parts[:2], *ALL)

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        await gw.store.wait_verified()
        assert sorted(gw.store.blocks) == sorted(d.name for d in dirs[:2])
        await check_series(client, want, *ALL, [Matcher("=~", "job", ".+")])
        text = await _get(gw, "/metrics")
        assert _metric(text, "thanos_bucket_store_block_drops_total") == 1
        for d in dirs[:2]:
            assert (tmp_path / "store-data" / d.name / VERIFIED_MARKER).is_file()

    async def restarted(gw: StoreGateway, client: StoreClient) -> None:
        await gw.store.wait_verified()
        assert sorted(gw.store.blocks) == sorted(d.name for d in dirs[:2])

    async def main() -> None:
        bkt = CountingBucket(FilesystemBucket(tmp_path / "bucket"))
        for d in dirs:
            await upload_dir(bkt, d)
        await with_gateway(tmp_path, bkt, body)
        bkt.reset()
        await with_gateway(tmp_path, bkt, restarted)
        # Only the broken block (out of service, so its local state was dropped) is read again.
        assert bkt.range_bytes <= (bad / "index").stat().st_size

    run(main())


def test_index_check_catches_any_damaged_byte(tmp_path: Path) -> None:
    """Every byte of the series and postings sections is under a checksum or is padding that
    must be zero: any one byte changed fails the whole-index check (never hangs, never any
    other error), and the intact index passes with any read size."""
    from store.indexverify import verify_index

    bdir = write(tmp_path, make_series(60, T0, H2, step=60_000, seed=5), T0, T0 + H2, {"c": "a"})
    good = (bdir / "index").read_bytes()
    segs = {f"chunks/{p.name}": p.stat().st_size for p in (bdir / "chunks").iterdir()}
    ir = IndexReader(good)
    name = f"{bdir.name}/index"
    rng = np.random.default_rng(3)
    spots = rng.integers(ir.toc.series, ir.toc.postings_table, 150).tolist()

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "blocks")
        header = await IndexHeader.fetch(bkt, name, len(good))
        for piece in (1 << 20, 64, 7):
            await verify_index(bkt, name, header, segs, piece=piece)
        for at in spots:
            bad = bytearray(good)
            bad[at] ^= int(rng.integers(1, 256))
            (bdir / "index").write_bytes(bytes(bad))
            with pytest.raises(CorruptionError):
                await verify_index(bkt, name, header, segs, piece=int(rng.integers(16, 4096)))
        # A chunk segment shorter than its refs reach is caught through the series entries.
        (bdir / "index").write_bytes(good)
        with pytest.raises(CorruptionError, match="chunk ref outside"):
            await verify_index(bkt, name, header, {k: v // 2 for k, v in segs.items()})

    run(main())


def test_store_lifts_open_files_soft_limit_for_mapped_headers() -> None:
    """Each loaded block holds its mmapped index-header (one descriptor in Python's mmap), so
    the store lifts the soft open-files limit to the hard one, as Thanos (Go) does."""
    import resource

    from store.server import raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lower = min(hard, max(1024, len(os.listdir("/proc/self/fd")) + 256))
    if lower >= hard:
        pytest.skip("hard open-files limit too low to lower the soft one below it")
    resource.setrlimit(resource.RLIMIT_NOFILE, (lower, hard))
    try:
        raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_read_chunks_checks_every_record() -> None:
    """The store's batch chunk decoder: data and encoding per record; a flipped byte or a
    cut record is an error (the block is then taken out of service), never wrong data."""
    from receiver.tsdb._blockio import crc32c, read_chunks

    def rec(enc: int, data: bytes) -> bytes:
        body = bytes([enc]) + data
        return bytes([len(data)]) + body + crc32c(body).to_bytes(4, "big")

    recs = [rec(1, b"abc"), rec(2, b""), rec(1, b"\x00" * 100)]
    encs, datas = read_chunks(recs)
    assert encs == b"\x01\x02\x01" and datas == [b"abc", b"", b"\x00" * 100]
    assert read_chunks([]) == (b"", [])
    bad = bytearray(recs[0])
    bad[2] ^= 1
    for broken in (bytes(bad), recs[0][:-1], b"", b"\xff"):
        with pytest.raises(ValueError):
            read_chunks([recs[1], broken])


def test_offset_table_narrow_offsets_refuse_what_does_not_fit() -> None:
    """Postings offsets are kept as uint32 for indexes under 4 GiB; an offset that does not
    fit is corruption, never silently truncated."""
    from store._indexheader import offset_table_positions

    def entry(name: bytes, value: bytes, off: int) -> bytes:
        out = bytearray([2, len(name)]) + name + bytes([len(value)]) + value
        while True:  # uvarint
            b, off = off & 0x7F, off >> 7
            out.append(b | (0x80 if off else 0))
            if not off:
                return bytes(out)

    table = entry(b"a", b"x", 100) + entry(b"a", b"y", 200)
    _, _, _, offs = offset_table_positions(table, 0, 2, len(table), True)
    assert np.frombuffer(offs, np.uint32).tolist() == [100, 200]
    _, _, _, offs = offset_table_positions(table, 0, 2, len(table))
    assert np.frombuffer(offs, np.int64).tolist() == [100, 200]
    big = entry(b"a", b"x", 1 << 33)
    assert np.frombuffer(offset_table_positions(big, 0, 1, len(big))[3], np.int64)[0] == 1 << 33
    with pytest.raises(ValueError, match="outside"):
        offset_table_positions(big, 0, 1, len(big), True)


def test_not_ready_until_the_storeapi_listens(tmp_path: Path, monkeypatch) -> None:
    """/-/ready says 503 after the first bucket sync until the gRPC StoreAPI is bound (a
    querier or test that trusted an early 200 got "connection refused": seen in
    tests/e2e/test_store_caches.py under load), and 200 once it is."""
    import store.server as server_mod
    series = make_series(10, T0, H2, seed=3)
    bdir = write(tmp_path, series, T0, T0 + H2, {"cluster": "r"})
    bucket = FilesystemBucket(tmp_path / "bucket")
    seen: list[tuple[bool, int]] = []
    real = server_mod.serve_storeapi

    async def serve_after_asking(*args, **kwargs):
        gw = gateways[0]
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{gw.ports['http']}/-/ready") as r:
                seen.append((gw.ready, r.status))
        return await real(*args, **kwargs)

    monkeypatch.setattr(server_mod, "serve_storeapi", serve_after_asking)
    gateways: list[StoreGateway] = []

    async def main() -> None:
        await upload_dir(bucket, bdir)
        gw = StoreGateway(StoreConfig(data_dir=tmp_path / "sd", objstore_config="",
                                      grpc_address="127.0.0.1:0", http_address="127.0.0.1:0",
                                      sync_interval_s=3600), bucket=bucket)
        gateways.append(gw)
        await gw.start()
        try:
            assert gw.ready and await _get(gw, "/-/ready") == "OK"
            client = StoreClient(f"127.0.0.1:{gw.ports['grpc']}", timeout_s=30)
            try:
                got = await client.series(T0, T0 + H2, [Matcher("=~", "__name__", ".+")])
            finally:
                await client.close()
            assert len(got) == len(series)
        finally:
            await gw.stop()

    asyncio.run(main())
    assert seen == [(False, 503)]
