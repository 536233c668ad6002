"""Series entries and chunks of a request's selection read over all its blocks at once
(store.coldseries): the same answers, cache contents, cache lookup counts and fetch counts as
each block's own read, and a broken series entry or chunk still takes only its block out."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common.ops import new_registry  # noqa: E402
from objstore import FilesystemBucket  # noqa: E402
from receiver.tsdb.block import INDEX_FILENAME, cut_chunks, write_block  # noqa: E402
from receiver.tsdb.chunks import segment_name  # noqa: E402
from receiver.tsdb.histogram import ENCODING_HISTOGRAM  # noqa: E402
from receiver.tsdb.index import SERIES_ALIGN  # noqa: E402
from receiver.tsdb.labels import Matcher  # noqa: E402
from store.block import FetchOptions  # noqa: E402
from store.bucketstore import BucketStore  # noqa: E402
from store.cache import CacheMetrics, LRUCache  # noqa: E402
from store.coldselect import select_many  # noqa: E402
from store.coldseries import series_many  # noqa: E402
from test_store_cold_select import _counts, _entries, same_as_each_block  # noqa: E402
from test_store_gateway import H2, T0, make_series, run, upload_dir  # noqa: E402
from test_store_series_paths import SELECTORS, bucket_dir  # noqa: E402,F401 (fixture)


def _random_selectors(n: int) -> list[list[tuple[str, str, str]]]:
    """Selectors over the test bucket's labels: names, instances (one series or none),
    envs and jobs, with every matcher type."""
    rng = random.Random(7)
    out = []
    for _ in range(n):
        sel = [(rng.choice(["=", "=~"]), "__name__",
                f"metric_{rng.randrange(6)}" if rng.random() < .8 else "metric_[0-2]")]
        for _ in range(rng.randrange(3)):
            kind = rng.choice(["instance", "instance", "env", "job"])
            value = {"instance": f"host-{rng.randrange(160):05d}", "env": "prod",
                     "job": f"job{rng.randrange(3)}"}[kind]
            sel.append((rng.choice(["=", "=", "!=", "=~", "!~"]), kind, value))
        out.append(sel)
    return out


@pytest.mark.parametrize("cache_bytes,opts", [
    (16 << 20, FetchOptions()),
    (16 << 20, FetchOptions(max_gap=64, series_estimate=24, chunk_estimate=40)),
    (24 << 10, FetchOptions()),
])
def test_series_of_all_blocks_at_once_equal_each_blocks_own(
        tmp_path: Path, bucket_dir: Path, cache_bytes: int, opts: FetchOptions) -> None:
    """The paths test's selectors and random ones, cold then warm: every block's whole
    answer equal to its own ``series`` over its whole range given the same refs, and the
    caches and counters of the two stores equal after every step (estimates too small for
    the items included: each then re-read exactly on both sides). On a small cache only the
    answers are compared (which entries go first differs: one insert per item type for all
    blocks instead of one per block)."""
    async def each_way(st: BucketStore, ms: list[Matcher]) -> list:
        return [await b.series(b.min_time, b.max_time - 1, ms, False, refs=await b.select(ms))
                for b in st.blocks.values()]

    async def all_way(st: BucketStore, ms: list[Matcher]) -> list:
        blocks = list(st.blocks.values())
        refs = await select_many(blocks, [ms] * len(blocks), st.cache, st._opts,
                                 st._fetch_limit, st.fetch_metrics)
        return await series_many(blocks, refs, st.cache, st._opts,  # type: ignore[arg-type]
                                 st._fetch_limit, st.fetch_metrics)
    run(same_as_each_block(tmp_path, bucket_dir, cache_bytes,
                           SELECTORS + _random_selectors(30), each_way, all_way,
                           cache_bytes == 16 << 20, opts))


@pytest.mark.parametrize("item", ["series", "chunk", "chunk, entries cached"])
def test_a_corrupt_series_entry_or_chunk_takes_only_its_block_out(
        tmp_path: Path, bucket_dir: Path, item: str) -> None:
    """One block's series entry (or first chunk) of a never-asked one-series selection is
    damaged in the bucket: the request answers from the other two blocks and that block
    goes out of service, as when each block read on its own; also when the metric's series
    entries were cached first (the one-series-per-block path, its chunks still to read)."""
    async def body() -> None:
        ms = [Matcher("=", "__name__", "metric_2"), Matcher("=", "instance", "host-00012")]
        probe = BucketStore(FilesystemBucket(bucket_dir), tmp_path / "probe",
                            LRUCache(1 << 20), new_registry(), verify_index=False)
        await probe.sync_once()
        bad = list(probe.blocks.values())[1]
        refs = await bad.select(ms)
        assert len(refs) == 1
        if item == "series":
            path, at = bucket_dir / bad.ulid / INDEX_FILENAME, int(refs[0]) * SERIES_ALIGN + 3
        else:
            ref = int.from_bytes((await bad.series_entries(refs)).c_ref[:8], sys.byteorder)
            path = bucket_dir / bad.ulid / "chunks" / segment_name(ref >> 32)
            at = (ref & 0xFFFFFFFF) + 4
        await probe.close()
        raw = bytearray(path.read_bytes())
        raw[at] ^= 0xFF  # inside the item: its checksum no longer matches
        path.write_bytes(bytes(raw))
        reg = new_registry()
        st = BucketStore(FilesystemBucket(bucket_dir), tmp_path / "gw",
                         LRUCache(1 << 20, CacheMetrics(reg)), reg, verify_index=False)
        await st.sync_once()
        try:
            mint, maxt = st.time_range()
            if item.endswith("cached"):  # the broad query's entries, without chunks
                for b in st.blocks.values():
                    assert await b.series(mint, maxt, ms[:1], True)
                assert bad.ulid in st.blocks
            got = list(await st.series(mint, maxt, ms, False))
            assert bad.ulid in st.broken and bad.ulid not in st.blocks
            assert len(got) == 1
            chunk_times = [c[0] for c in got[0][1]]
            assert chunk_times and all(not bad.min_time <= t < bad.max_time
                                       for t in chunk_times)
            assert sum(bool(b.min_time <= t < b.max_time for t in chunk_times)
                       for b in st.blocks.values()) == 2
        finally:
            await st.close()
    run(body())


@pytest.mark.parametrize("rng,exact", [
    ((T0 + H2, T0 + 2 * H2 - 1), True),  # one block, whole
    ((T0 + H2 + 1_800_000, T0 + H2 + 5_400_000), False),  # inside one block (a 1 h query)
])
def test_a_request_of_one_block_answers_as_that_blocks_own_read(
        tmp_path: Path, bucket_dir: Path, rng: tuple[int, int], exact: bool) -> None:
    """A request whose range holds one block (the 1 h dashboard query) selects and reads
    that block through the batched cold path: every selector's answer, cold then warm (from
    the memo), equals the block's own ``series`` over the range, one-series selections
    (their own short paths) included; over a whole block the caches and counters are equal
    too."""
    async def each_way(st: BucketStore, ms: list[Matcher]) -> list:
        got = []
        for b in st.blocks.values():
            got += await b.series(*rng, ms, False)
        return sorted(got)

    async def all_way(st: BucketStore, ms: list[Matcher]) -> list:
        return sorted(await st.series(*rng, ms, False))
    run(same_as_each_block(tmp_path, bucket_dir, 16 << 20, SELECTORS, each_way, all_way,
                           exact))


@pytest.fixture
def mixed_bucket(tmp_path: Path) -> Path:
    """Three blocks of one hour each: XOR chunks; native histogram chunks of the even
    instances (another encoding: passed on typed, not as plain bytes); XOR chunks under an
    external label, ``host-00003`` absent there and ``host-00009`` in it alone. Chunks of
    the XOR blocks spread over several segment files."""
    bucket = FilesystemBucket(tmp_path / "bucket")
    hour = 3_600_000
    for i in range(3):
        t0 = T0 + i * hour
        series = make_series(12, t0, hour, step=60_000, seed=40 + i, names=1)
        if i == 2:
            series = [s for s in series if ("instance", "host-00003") not in s[0]]
        else:
            series = [s for s in series if ("instance", "host-00009") not in s[0]]
        if i == 1:  # even instances as histogram chunks (the store passes their bytes on)
            chunked = [(lbls, [(int(ts[0]), int(ts[-1]), b"\x00\x01" + bytes([k]) * 9)])
                       for k, (lbls, ts, _) in enumerate(series) if k % 2 == 0]
            meta = write_block(tmp_path / "blocks", chunked, t0, t0 + hour,
                               encoding=ENCODING_HISTOGRAM, count_samples=lambda _: 1)
        else:
            chunked = [(lbls, cut_chunks(ts, vals, t0, t0 + hour, 20))
                       for lbls, ts, vals in series]  # three chunks per series
            meta = write_block(
                tmp_path / "blocks", chunked, t0, t0 + hour, segment_size=2048,
                thanos_meta={"labels": {"region": "eu"}, "source": "test"} if i == 2 else None)
        run(upload_dir(bucket, tmp_path / "blocks" / meta.ulid))
    return tmp_path / "bucket"


@pytest.mark.parametrize("warm_up", ["entries and chunks", "entries only", "one block's chunks"])
def test_one_series_per_block_from_cached_entries_as_each_blocks_own(
        tmp_path: Path, mixed_bucket: Path, warm_up: str) -> None:
    """After a broad query cached the metric's series entries (and, depending on
    ``warm_up``, all, none or one block's chunks), never-asked one-series selections --
    each block's entries decoded in one call, their chunks checked in one -- give every
    block's whole answer exactly as its own ``series`` over its whole range does, with the
    same cache entries and counters: a series absent from a block, an external label, chunks
    in two segment files, histogram chunks and chunks still to read included."""
    async def body() -> None:
        stores = []
        for side in ("each", "all"):
            reg = new_registry()
            st = BucketStore(FilesystemBucket(mixed_bucket), tmp_path / side,
                             LRUCache(16 << 20, CacheMetrics(reg)), reg, verify_index=False)
            await st.sync_once()
            name = [Matcher("=", "__name__", "metric_0")]
            for k, b in enumerate(st.blocks.values()):
                skip = warm_up == "entries only" or (warm_up != "entries and chunks" and k)
                assert await b.series(b.min_time, b.max_time - 1, name, skip)
            stores.append((st, reg))
        (each, reg_each), (every, reg_all) = stores
        try:
            for inst in (1, 3, 9, 10, 3, 11, 42):
                ms = [Matcher("=", "__name__", "metric_0"),
                      Matcher("=", "instance", f"host-{inst:05d}")]
                want = [await b.series(b.min_time, b.max_time - 1, ms, False,
                                       refs=await b.select(ms)) for b in each.blocks.values()]
                blocks = list(every.blocks.values())
                refs = await select_many(blocks, [ms] * len(blocks), every.cache,
                                         every._opts, every._fetch_limit, every.fetch_metrics)
                got = await series_many(blocks, refs, every.cache,  # type: ignore[arg-type]
                                        every._opts, every._fetch_limit, every.fetch_metrics)
                assert got == want, inst
                assert _counts(reg_all) == _counts(reg_each), inst
                assert _entries(every) == _entries(each), inst
                assert [b.skipped_chunks for b in blocks] == \
                    [b.skipped_chunks for b in each.blocks.values()]
            assert sum(len(w) for w in want) == 0  # (host-00042: in no block)
        finally:
            for st, _ in stores:
                await st.close()
    run(body())


def test_a_cold_one_series_selection_is_decoded_and_checked_for_all_blocks_at_once(
        tmp_path: Path, bucket_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A never-asked one-series selection over three blocks (a cold dashboard panel over
    6 h): its series entries are decoded, and its chunks read and checked, in one call for
    all blocks, not block by block (each block's Python steps cost ~0.1 ms after idle)."""
    import store.coldseries as coldseries
    from store.block import BucketBlock
    calls = {"decoded_entries": 0, "read_chunks": 0}
    each_block = BucketBlock.decoded_entries
    all_blocks = coldseries.read_chunks

    def decoded_entries(self, raws):
        calls["decoded_entries"] += 1
        return each_block(self, raws)

    def read_chunks(raws):
        calls["read_chunks"] += 1
        return all_blocks(raws)
    monkeypatch.setattr(BucketBlock, "decoded_entries", decoded_entries)
    monkeypatch.setattr(coldseries, "read_chunks", read_chunks)

    async def body() -> None:
        st = BucketStore(FilesystemBucket(bucket_dir), tmp_path / "gw", LRUCache(16 << 20),
                         new_registry(), verify_index=False)
        await st.sync_once()
        try:
            mint, maxt = st.time_range()
            ms = [Matcher("=", "__name__", "metric_2"), Matcher("=", "instance", "host-00012")]
            got = list(await st.series(mint, maxt, ms, False))
            assert len(got) == 1 and len(got[0][1]) >= 3 and len(st.blocks) == 3
            assert calls == {"decoded_entries": 0, "read_chunks": 1}
        finally:
            await st.close()
    run(body())


def test_one_series_per_block_of_different_series_answers_each_blocks_own(
        tmp_path: Path) -> None:
    """Each block holds one series of the selection, a different one in each (a regex over
    instances that moved): every block's answer carries its own series' labels, never one
    block's labels for all (the path for one series in every block shares them only when
    they are equal)."""
    bucket = FilesystemBucket(tmp_path / "bucket")
    hour = 3_600_000
    for i in range(3):
        t0 = T0 + i * hour
        series = [s for s in make_series(3, t0, hour, step=60_000, seed=60 + i, names=1)
                  if ("instance", f"host-{i:05d}") in s[0]]
        chunked = [(lbls, cut_chunks(ts, vals, t0, t0 + hour, 20)) for lbls, ts, vals in series]
        meta = write_block(tmp_path / "blocks", chunked, t0, t0 + hour)
        run(upload_dir(bucket, tmp_path / "blocks" / meta.ulid))

    async def body() -> None:
        reg = new_registry()
        st = BucketStore(FilesystemBucket(tmp_path / "bucket"), tmp_path / "gw",
                         LRUCache(16 << 20, CacheMetrics(reg)), reg, verify_index=False)
        await st.sync_once()
        try:
            ms = [Matcher("=", "__name__", "metric_0"), Matcher("=~", "instance", "host-0000[0-2]")]
            blocks = list(st.blocks.values())
            refs = await select_many(blocks, [ms] * len(blocks), st.cache, st._opts,
                                     st._fetch_limit, st.fetch_metrics)
            got = await series_many(blocks, refs, st.cache,  # type: ignore[arg-type]
                                    st._opts, st._fetch_limit, st.fetch_metrics)
            want = [await b.series(b.min_time, b.max_time - 1, ms, False) for b in blocks]
            assert got == want
            assert [dict(a[0][0])["instance"] for a in got] == ["host-00000", "host-00001",
                                                                "host-00002"]
        finally:
            await st.close()
    run(body())


def test_each_ascending_checks_every_blocks_refs_and_only_within_a_block() -> None:
    from store.coldseries import each_ascending

    def reference(refs: list[int], counts: list[int]) -> bool:
        at = 0
        for n in counts:
            run = refs[at:at + n]
            if run != sorted(set(run)):
                return False
            at += n
        return True

    rng = random.Random(3)
    for _ in range(3000):
        counts = [rng.choice([0, 0, 1, 2, 3]) for _ in range(rng.randrange(1, 5))]
        refs = [rng.randrange(6) for _ in range(sum(counts))]
        assert each_ascending(refs, counts) == reference(refs, counts), (refs, counts)
    assert each_ascending([5, 9, 1, 2], [2, 2]) and not each_ascending([5, 9, 9, 12], [3, 1])
    assert each_ascending([], [0, 0]) and each_ascending([4], [0, 1, 0])
