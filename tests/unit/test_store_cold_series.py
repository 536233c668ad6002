"""Series entries and chunks of a request's selection read over all its blocks at once
(store.coldseries): the same answers, cache contents, cache lookup counts and fetch counts as
each block's own read, and a broken series entry or chunk still takes only its block out."""
from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Callable
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
from test_store_cold_select import _counts, _entries, _synced_store, same_as_each_block  # noqa: E402
from test_store_gateway import H2, T0, make_series, run, upload_dir  # noqa: E402
import test_store_series_paths  # noqa: E402
from test_store_series_paths import SELECTORS  # noqa: E402

bucket_dir = test_store_series_paths.bucket_dir  # (the fixture, by its name here)


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


async def _store_with_metrics(bucket: Path, local: Path) -> tuple[BucketStore, object]:
    """A synced store over ``bucket`` with a 16 MiB cache, and its registry (its counters)."""
    return await _synced_store(bucket, local, 16 << 20)


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
            st, reg = await _store_with_metrics(mixed_bucket, tmp_path / side)
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


# -- the C steps of the usual cold call (store/_coldseries.c) against the Python path

def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _sealed(body: bytes) -> bytes:
    """A series entry of ``body``, its length and checksum right (so the decoders get to
    whatever the body holds)."""
    from receiver.tsdb._blockio import crc32c
    return _uvarint(len(body)) + body + crc32c(body).to_bytes(4, "big")


def _body(raw: bytes) -> bytes:
    n, i, shift = 0, 0, 0
    while True:
        n |= (raw[i] & 0x7F) << shift
        shift += 7
        i += 1
        if raw[i - 1] < 0x80:
            return raw[i:i + n]


class _Recorded:
    """What the C steps returned in each call (plan: None or "planned"; finish: "answers",
    or its code 1 or 2), recorded through the module attributes series_many calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import store.coldseries as coldseries
        self.plans: list[str | None] = []
        self.finishes: list[str | int] = []
        plan, finish = coldseries.plan_one_each, coldseries.finish_one_each

        def counted_plan(*args):
            got = plan(*args)
            self.plans.append(None if got is None else "planned")
            return got

        def counted_finish(*args):
            got = finish(*args)
            self.finishes.append("answers" if isinstance(got, list) else got)
            return got
        monkeypatch.setattr(coldseries, "plan_one_each", counted_plan)
        monkeypatch.setattr(coldseries, "finish_one_each", counted_finish)


async def _cold_call(st: BucketStore, ms: list[Matcher], at: list[int] | None) -> list:
    blocks = list(st.blocks.values())
    if at is not None:
        blocks = [blocks[i] for i in at]
    refs = await select_many(blocks, [ms] * len(blocks), st.cache, st._opts, st._fetch_limit,
                             st.fetch_metrics)
    return await series_many(blocks, refs, st.cache,  # type: ignore[arg-type]
                             st._opts, st._fetch_limit, st.fetch_metrics)


def _observed(st: BucketStore, reg) -> tuple:
    """Everything a call leaves behind: the cache's entries in LRU order, its size, the cache
    and fetch counters and the blocks' skipped chunks."""
    return (list(st.cache._d.items()), st.cache.size, _counts(reg),
            [b.skipped_chunks for b in st.blocks.values()])


async def _c_and_python(tmp_path: Path, bucket: Path, monkeypatch: pytest.MonkeyPatch,
                        warm: Callable, change: Callable | None,
                        calls: list[tuple[list[Matcher], list[int] | None]]) -> _Recorded:
    """Two stores over ``bucket``, each warmed by ``warm(store)``, then ``change(stores)``
    (the bucket or the caches, the same for both); each of ``calls`` made on one store by
    the Python path (the C plan monkeypatched to decline) and on the other as it is: the same
    answers (or the same error), cache entries in the same LRU order, size and counters."""
    import store.coldseries as coldseries
    stores = []
    for side in ("python", "c"):
        st, reg = await _store_with_metrics(bucket, tmp_path / side)
        await warm(st)
        stores.append((st, reg))
    (py, reg_py), (c, reg_c) = stores
    if change is not None:
        await change([py, c])
    recorded = _Recorded(monkeypatch)
    try:
        for ms, at in calls:
            got = []
            for st in (py, c):
                with monkeypatch.context() as m:
                    if st is py:
                        m.setattr(coldseries, "plan_one_each", lambda *_: None)
                    try:
                        got.append(await _cold_call(st, ms, at))
                    except Exception as e:  # noqa: BLE001 -- the same error on both sides
                        got.append((type(e), str(e)))
            assert got[1] == got[0], (ms, at)
            seen_c, seen_py = _observed(c, reg_c), _observed(py, reg_py)
            assert [k for k, _ in seen_c[0]] == [k for k, _ in seen_py[0]], (ms, at)
            assert seen_c == seen_py, (ms, at)
    finally:
        for st, _ in stores:
            await st.close()
    return recorded


def _entries_of(name: str) -> Callable:
    """A warm-up caching every block's series entries of metric ``name`` (the dashboard's
    broad query, skipping chunks)."""
    async def warm(st: BucketStore) -> None:
        for b in st.blocks.values():
            assert await b.series(b.min_time, b.max_time - 1, [Matcher("=", "__name__", name)],
                                  True)
    return warm


def _one(name: str, inst: int) -> list[Matcher]:
    return [Matcher("=", "__name__", name), Matcher("=", "instance", f"host-{inst:05d}")]


async def _chunk_file_of(st: BucketStore, bucket: Path, k: int, ms: list[Matcher]
                         ) -> tuple[Path, int]:
    """Block k's chunk segment file and offset of the selection's first chunk."""
    b = list(st.blocks.values())[k]
    ref = int.from_bytes((await b.series_entries(await b.select(ms))).c_ref[:8], sys.byteorder)
    return bucket / b.ulid / "chunks" / segment_name(ref >> 32), ref & 0xFFFFFFFF


@pytest.mark.parametrize("case,plans,finishes", [
    ("several blocks", ["planned", "planned"], ["answers", "answers"]),
    ("one block", ["planned", "planned"], ["answers", "answers"]),
    ("chunks partly cached", ["planned", "planned"], ["answers", "answers"]),
    ("a block's chunks partly cached", ["planned", "planned"], ["answers", "answers"]),
    ("series entries not cached", [None, "planned", "planned"], ["answers", "answers"]),
    ("a corrupt chunk record", ["planned", "planned"], [2, 2]),
    ("a failed read", ["planned", "planned"], [1, 1]),
    ("a series entry without chunks", [None, None], []),
])
def test_the_c_steps_answer_as_the_python_path(
        tmp_path: Path, bucket_dir: Path, monkeypatch: pytest.MonkeyPatch, case: str,
        plans: list, finishes: list) -> None:
    """A never-asked one-series selection over the test bucket's blocks, then again (warm:
    every chunk cached, nothing read): the C steps taken where they serve
    (``plans``/``finishes``: what they returned) and the same answers, cache entries in the
    same LRU order, size and counters as the Python path, whatever goes wrong after the plan.
    Chunks cached in part -- a block's all, or some of one block's (a broad query over a range
    that covers the oldest block in part) -- are read only where missing, on both paths."""
    ms = _one("metric_2", 12)
    at = [1] if case == "one block" else None
    entries = _entries_of("metric_2")

    async def warm(st: BucketStore) -> None:
        if case != "series entries not cached":
            await entries(st)
        if case == "chunks partly cached":  # the first block's chunks of the selection too
            b = list(st.blocks.values())[0]
            assert await b.series(b.min_time, b.max_time - 1, ms, False)
        if case == "a block's chunks partly cached":  # those of its last quarter only
            b = list(st.blocks.values())[0]
            assert await b.series(b.max_time - H2 // 4, b.max_time - 1, ms, False)
            n = len((await b.series_entries(await b.select(ms))).c_ref) // 8
            cached = [k for k in st.cache._d if k[0] == b.ulid and k[1] == "chunks"]
            assert 0 < len(cached) < n

    async def change(stores: list[BucketStore]) -> None:
        if case in ("a corrupt chunk record", "a failed read"):
            for st in stores:  # (the same lookups on both sides)
                path, off = await _chunk_file_of(st, bucket_dir, 1, ms)
            if case == "a failed read":
                path.unlink()
            else:
                raw = bytearray(path.read_bytes())
                raw[off + 4] ^= 0xFF
                path.write_bytes(bytes(raw))
        elif case == "a series entry without chunks":
            for st in stores:  # one label of symbol 0, no chunk
                b = list(st.blocks.values())[1]
                key = (b.ulid, "series", int((await b.select(ms))[0]))
                st.cache.put(key, _sealed(b"\x01\x00\x00\x00"), "series")
    rec = asyncio.run(_c_and_python(tmp_path, bucket_dir, monkeypatch, warm, change,
                                    [(ms, at), (ms, at)]))
    assert (rec.plans, rec.finishes) == (plans, finishes)


@pytest.mark.parametrize("at,inst,finish", [
    ([2], 10, "answers"),  # one block, under an external label
    (None, 10, "answers"),  # two producers (each block's own labels), absent from block 1
    (None, 3, "answers"),  # in block 0 alone
    (None, 1, None),  # its chunks in two segment files in a block: not the C steps' case
    (None, 4, 2),  # block 1's chunks native histograms: block by block after the read
    (None, 42, None),  # in no block
])
def test_the_c_steps_answer_as_the_python_path_over_producers_and_encodings(
        tmp_path: Path, mixed_bucket: Path, monkeypatch: pytest.MonkeyPatch,
        at: list[int] | None, inst: int, finish: str | int | None) -> None:
    """External labels (one producer's or two), a series absent from some blocks, chunks in
    two segment files and histogram chunks: the same as the Python path, the C steps taken
    where they serve (``finish``: what the second one returned; None: not planned)."""
    rec = asyncio.run(_c_and_python(tmp_path, mixed_bucket, monkeypatch,
                                    _entries_of("metric_0"), None, [(_one("metric_0", inst), at)]))
    assert rec.plans == [None if finish is None else "planned"]
    assert rec.finishes == ([] if finish is None else [finish])


def test_the_c_steps_answer_as_the_python_path_on_hostile_entries(
        tmp_path: Path, bucket_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block's cached series entry of each selection damaged, mostly sealed again (length
    and checksum right: the decoders get garbage counts, symbols, times and chunk refs, most
    often in the chunk metas at its end): never a crash, and the same answers or error, cache
    and counters as the Python path; the C steps planned for some, declined for others."""
    rng = random.Random(11)
    insts = list(range(2, 150, 5))[:24]

    async def change(stores: list[BucketStore]) -> None:
        for inst in insts:
            ms = _one("metric_2", inst)
            k = rng.randrange(3)
            keys = []
            for st in stores:  # (the same lookups on both sides)
                b = list(st.blocks.values())[k]
                keys.append((b.ulid, "series", int((await b.select(ms))[0])))
            body = bytearray(_body(stores[0].cache._d[keys[0]]))
            what = rng.randrange(5)
            if what <= 1:  # a chunk meta (or, for 1, any byte)
                at = rng.randrange(len(body) * 2 // 3 if what == 0 else 0, len(body))
                body[at] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)])
            elif what == 2:
                del body[rng.randrange(len(body)):]
            elif what == 3:
                body[rng.randrange(len(body) + 1):0] = bytes(
                    rng.choice([0x00, 0x7F, 0x80, 0xFF]) for _ in range(rng.randrange(1, 12)))
            raw = _sealed(bytes(body)) if rng.random() < .9 else bytes(body)
            for st, key in zip(stores, keys):
                st.cache.put(key, raw, "series")
    rec = asyncio.run(_c_and_python(tmp_path, bucket_dir, monkeypatch, _entries_of("metric_2"),
                                    change, [(_one("metric_2", inst), None) for inst in insts]))
    assert None in rec.plans and "planned" in rec.plans
    assert {1, 2, "answers"} <= set(rec.finishes)  # (a read cut short, a broken record)


@pytest.mark.parametrize("entries_cached", [True, False])
def test_the_c_steps_answer_as_the_python_path_on_hostile_reads(
        tmp_path: Path, bucket_dir: Path, monkeypatch: pytest.MonkeyPatch,
        entries_cached: bool) -> None:
    """Ranged reads coming back cut short, padded, emptied or as garbage: never a crash, and
    the same answers, cache and counters as the Python path, also where the series entries
    are read first (not cached) and the C steps go on from them."""
    import store.coldseries as coldseries
    rng = random.Random(5)
    read_batch = coldseries.read_batch
    damaged: dict[tuple, list] = {}  # the same damage on both sides, by read requests

    async def hostile(reads, limit):
        got = await read_batch(reads, limit)
        key = tuple((r[1][0], r[1][1], r[1][2]) for r in reads)
        if key not in damaged:
            out = []
            for buf in got:
                what = rng.randrange(5)
                if what == 0:
                    buf = buf[:rng.randrange(len(buf) + 1)]
                elif what == 1:
                    buf = buf + bytes(rng.randrange(256) for _ in range(20))
                elif what == 2:
                    buf = bytes(rng.randrange(256) for _ in range(len(buf)))
                elif what == 3:
                    buf = b"\xff" * 12
                out.append(buf)
            damaged[key] = out
        return damaged[key]
    monkeypatch.setattr(coldseries, "read_batch", hostile)

    async def nothing(st: BucketStore) -> None:
        pass
    rec = asyncio.run(_c_and_python(tmp_path, bucket_dir, monkeypatch,
                                    _entries_of("metric_2") if entries_cached else nothing,
                                    None, [(_one("metric_2", inst), None)
                                           for inst in range(2, 150, 5)[:20]]))
    if entries_cached:
        assert rec.plans == ["planned"] * 20 and {1, "answers"} <= set(rec.finishes)
    else:  # (planned after the entries' read where they came back whole and sound)
        assert rec.plans.count(None) >= 20 and "planned" in rec.plans and rec.finishes


def test_the_c_steps_refuse_what_is_not_theirs() -> None:
    """plan_one_each declines anything but a plan's inputs (None: the Python path decides);
    finish_one_each raises on anything but a plan's state; neither crashes."""
    import numpy as np

    from store.coldseries import finish_one_each, plan_one_each
    cache = LRUCache(1 << 20)
    for blocks, refs in [([], []), ([object()], [np.array([1])]), ([object()], [[1]]),
                         ([object()], [np.zeros((1, 1), np.int64)]),
                         ([object()], [np.array([1.0])]), (None, None), ([1, 2], [None])]:
        assert plan_one_each(blocks, refs, cache, FetchOptions()) is None
    assert plan_one_each([object()], [np.array([1])], object(), FetchOptions()) is None
    for state in [None, (), ([0], [], [], [], ()), ([0], [], [], [], (1, cache, [], [], b"",
                                                                     b"", b"", []))]:
        with pytest.raises((ValueError, TypeError)):
            finish_one_each(state, [])
    bad = ([0], [b""], [("u", "chunks", 1)], [None],
           (1, cache, [()], [()], (5).to_bytes(8, sys.byteorder), b"\0" * 8, b"\0" * 8, [b""],
            [[0]]))
    with pytest.raises(ValueError):  # (five chunks counted, one key)
        finish_one_each(bad, [b""])
    rel0, record = (0).to_bytes(8, sys.byteorder), b"\x01\x01\x00" + bytes(4)
    two = ((0).to_bytes(8, sys.byteorder) + (7).to_bytes(8, sys.byteorder), record * 2)
    for rels, poss, bufs in [([rel0], [[1]], [record]), ([rel0], [[-1]], [record]),
                             ([rel0], [["0"]], [record]), ([two[0]], [[0, 0]], [two[1]]),
                             ([rel0] * 2, [[0]] * 2, [record] * 2), ([], [], []),
                             ([rel0], [], [record])]:  # (not a plan's positions of the reads)
        bad = ([0], [b""], [("u", "chunks", 1)], [None],
               (1, cache, [()], [()], (1).to_bytes(8, sys.byteorder), b"\0" * 8, b"\0" * 8,
                rels, poss))
        with pytest.raises((ValueError, TypeError)):
            finish_one_each(bad, bufs)
    short = ([0], [b""], [("u", "chunks", 1), ("u", "chunks", 2)], [None, None],
             (1, cache, [()], [()], (2).to_bytes(8, sys.byteorder), b"\0" * 16, b"\0" * 16,
              [rel0], [[0]]))
    with pytest.raises(ValueError):  # (its reads hold one of its two missing chunks)
        finish_one_each(short, [record])
    assert len(cache) == 0 and short[3] == [None, None]
    good = ([0], [b""], [("u", "chunks", 1)], [None],
            (1, cache, [()], [()], (1).to_bytes(8, sys.byteorder), b"\0" * 8, b"\0" * 8,
             [rel0], [[0]]))
    assert finish_one_each(good, [b"\x05"]) == 1  # (a record cut short: the Python path)
    assert finish_one_each(good, [RuntimeError()]) == 1
    assert len(cache) == 0


def test_a_cold_one_series_call_after_the_broad_query_takes_the_c_steps(
        tmp_path: Path, bucket_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The usual cold call through the store (the broad query cached the metric's series
    entries; a never-asked one-series selection over three blocks): planned and finished by
    the C steps, once, with one series and its chunks from every block."""
    rec = _Recorded(monkeypatch)

    async def body() -> None:
        st = BucketStore(FilesystemBucket(bucket_dir), tmp_path / "gw", LRUCache(16 << 20),
                         new_registry(), verify_index=False)
        await st.sync_once()
        try:
            await _entries_of("metric_2")(st)
            mint, maxt = st.time_range()
            got = list(await st.series(mint, maxt, _one("metric_2", 12), False))
            assert len(got) == 1 and len(got[0][1]) >= 3 and len(st.blocks) == 3
            assert all(any(b.min_time <= c[0] < b.max_time for c in got[0][1])
                       for b in st.blocks.values())
        finally:
            await st.close()
    asyncio.run(body())
    assert (rec.plans, rec.finishes) == (["planned"], ["answers"])
