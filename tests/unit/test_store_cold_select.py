"""A request's selections worked out over all its blocks at once (store.coldselect): the same
series refs, cache contents, cache lookup counts and fetch counts as each block's own
``select``, and a broken block still taken out alone."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common.ops import new_registry  # noqa: E402
from objstore import FilesystemBucket  # noqa: E402
from objstore.metrics import instrumented  # noqa: E402
from receiver.tsdb.block import INDEX_FILENAME  # noqa: E402
from receiver.tsdb.chunks import CorruptionError  # noqa: E402
from receiver.tsdb.labels import Matcher  # noqa: E402
from store.block import FetchOptions  # noqa: E402
from store.bucketstore import BucketStore  # noqa: E402
from store.cache import CacheMetrics, LRUCache  # noqa: E402
from store.coldselect import select_many  # noqa: E402
from test_store_gateway import run  # noqa: E402
import test_store_series_paths  # noqa: E402
from test_store_series_paths import SELECTORS  # noqa: E402

bucket_dir = test_store_series_paths.bucket_dir  # (its fixture, found here by its name)


def _counts(reg) -> dict[str, float]:
    """Every cache and fetch counter sample, by name and labels."""
    out = {}
    for fam in reg.collect():
        if fam.name.startswith(("thanos_store_index_cache", "promring_store_bucket")):
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                out[f"{s.name}{sorted(s.labels.items())}"] = s.value
    return out


async def _synced_store(bucket: Path, local: Path, cache_bytes: int = 1 << 20
                        ) -> tuple[BucketStore, object]:
    """A store of the bucket (a 1 MiB cache unless told) after its first sync, and its
    registry (its counters)."""
    reg = new_registry()
    st = BucketStore(FilesystemBucket(bucket), local, LRUCache(cache_bytes, CacheMetrics(reg)),
                     reg, verify_index=False)
    await st.sync_once()
    return st, reg


def _entries(st: BucketStore) -> list:
    """The cache's entries, block by block in time order (keys without the ULID; the LRU
    order within a request is not kept: one insert per item type instead of per block)."""
    order = {u: i for i, u in enumerate(st.blocks)}
    return sorted((order[k[0]], k[1], repr(k[2:]), v) for k, v in st.cache._d.items())


async def same_as_each_block(tmp_path: Path, bucket_dir: Path, cache_bytes: int,
                             selectors: list, each_way: Callable, all_way: Callable,
                             exact: bool, opts: FetchOptions | None = None) -> None:
    """Over two stores of the bucket, every selector cold then warm: ``each_way(store,
    matchers)`` (block by block) equals ``all_way(store, matchers)``; with ``exact`` the
    two stores' cache entries and counters are equal after every step too."""
    stores = []
    for side in ("each", "all"):
        reg = new_registry()
        st = BucketStore(FilesystemBucket(bucket_dir), tmp_path / side,
                         LRUCache(cache_bytes, CacheMetrics(reg)), reg, verify_index=False,
                         opts=opts)
        await st.sync_once()
        stores.append((st, reg))
    (each, reg_each), (every, reg_all) = stores
    try:
        for rnd in range(2):
            for sel in selectors:
                ms = [Matcher(t, n, v) for t, n, v in sel]
                assert await all_way(every, ms) == await each_way(each, ms), (rnd, sel)
                if exact:
                    assert _counts(reg_all) == _counts(reg_each), (rnd, sel)
                    assert _entries(every) == _entries(each), (rnd, sel)
    finally:
        for st, _ in stores:
            await st.close()


@pytest.mark.parametrize("cache_bytes", [1 << 20, 24 << 10])
def test_selections_of_all_blocks_at_once_equal_each_blocks_own(
        tmp_path: Path, bucket_dir: Path, cache_bytes: int) -> None:
    """Every selector of the paths test (equality, regexes, negations, empty values, nothing
    matching), cold then warm: refs equal to each block's ``select``, and the caches and
    counters of the two stores equal after every step. On a small cache (entries evicted,
    some selections not kept) the refs are still equal; which entries go first differs
    (one insert per item type for all blocks instead of one per block), so there only
    the answers are compared."""
    async def each_way(st: BucketStore, ms: list[Matcher]) -> list:
        return [(await b.select(ms)).tolist() for b in st.blocks.values()]

    async def all_way(st: BucketStore, ms: list[Matcher]) -> list:
        blocks = list(st.blocks.values())
        got = await select_many(blocks, [ms] * len(blocks), st.cache, st._opts,
                                st._fetch_limit, st.fetch_metrics)
        return [g.tolist() for g in got]  # type: ignore[union-attr]
    run(same_as_each_block(tmp_path, bucket_dir, cache_bytes, SELECTORS, each_way, all_way,
                           cache_bytes == 1 << 20))


def test_a_corrupt_postings_list_takes_only_its_block_out(tmp_path: Path,
                                                          bucket_dir: Path) -> None:
    """One block's postings list of the new instance is damaged in the bucket: the cold
    one-series request answers from the other two blocks and that block goes out of
    service, as when each block selected on its own."""
    async def body() -> None:
        st, reg = await _synced_store(bucket_dir, tmp_path / "gw")
        try:
            name = Matcher("=", "__name__", "metric_2")
            mint, maxt = st.time_range()
            await st.series(mint, maxt, [name], False)  # the broad query first
            bad = list(st.blocks.values())[1]
            start, _ = bad.header.postings_range("instance", "host-00012")
            path = bucket_dir / bad.ulid / INDEX_FILENAME
            raw = bytearray(path.read_bytes())
            raw[start + 9] ^= 0xFF  # inside the list: its checksum no longer matches
            path.write_bytes(bytes(raw))
            got = list(await st.series(mint, maxt, [name, Matcher("=", "instance",
                                                                  "host-00012")], False))
            assert bad.ulid in st.broken and bad.ulid not in st.blocks
            assert len(got) == 1
            chunk_times = [c[0] for c in got[0][1]]
            assert chunk_times and all(not bad.min_time <= t < bad.max_time
                                       for t in chunk_times)
        finally:
            await st.close()
    run(body())


def test_refs_searched_in_a_raw_postings_list_equal_the_decoded_intersection() -> None:
    """in_postings (the C search of sorted refs in a checked, still encoded postings list)
    keeps exactly the refs the decoded list holds, for lists and ref sets of every size,
    refs outside uint32 included; a list whose count runs past its bytes is refused."""
    import numpy as np

    from store._items import in_postings
    from store.block import intersect_sorted
    rng = np.random.default_rng(7)
    for n, k in [(0, 0), (0, 3), (1, 1), (5, 0), (40, 3), (1000, 1), (1000, 500), (3, 900)]:
        lst = np.unique(rng.integers(0, 3000, n)).astype(">u4")
        raw = (4 + 4 * len(lst)).to_bytes(4, "big") + len(lst).to_bytes(4, "big") + \
            lst.tobytes() + b"CRC!"
        refs = np.unique(np.concatenate([rng.integers(0, 3000, k),
                                         rng.choice(lst, min(k, len(lst))) if len(lst) else
                                         np.zeros(0, np.int64), [-1, 1 << 33]])).astype(np.int64)
        got = np.frombuffer(in_postings(refs, raw), np.int64)
        assert got.tolist() == intersect_sorted(refs, lst.astype(np.int64)).tolist()
    with pytest.raises(ValueError):
        in_postings(np.zeros(1, np.int64), (8).to_bytes(4, "big") + (5).to_bytes(4, "big") +
                    b"\0" * 8)


def _raw_postings(refs) -> bytes:
    """A postings list as the index holds it (checksum not checked here)."""
    import numpy as np
    lst = np.asarray(refs).astype(">u4")
    return (4 + 4 * len(lst)).to_bytes(4, "big") + len(lst).to_bytes(4, "big") + \
        lst.tobytes() + b"CRC!"


def test_the_short_path_of_single_list_matchers_equals_the_general_combine() -> None:
    """A plan whose matchers each read one list and none matches "" (``x{instance="i"}``)
    is combined by both_postings / in_postings on the raw lists (no array per list): the
    same refs (EMPTY itself when none) as the general path, for one to three lists of every
    size, equal lengths included; both_postings refuses a list whose count runs past it."""
    import numpy as np

    from receiver.tsdb.index import EMPTY
    from store._items import both_postings
    from store.block import PostingsPlan, combine_postings
    rng = np.random.default_rng(11)
    sizes = [0, 1, 2, 5, 40, 1000]
    for trial in range(300):
        k = 1 + trial % 3
        lists = [np.unique(rng.integers(0, 2000, rng.choice(sizes))) for _ in range(k)]
        if trial % 7 == 0 and k > 1:
            lists[1] = lists[0].copy()  # equal lengths: their order must not matter
        raws = {16 * (j + 1): _raw_postings(v) for j, v in enumerate(lists)}
        ranges = [(s, s + len(r)) for s, r in raws.items()]
        ms = [Matcher("=", f"l{j}", "v") for j in range(k)]
        short = PostingsPlan([(m, [r]) for m, r in zip(ms, ranges)], None, ranges,
                             [[r] for r in ranges], True)
        got = combine_postings(short, raws)
        want = combine_postings(short._replace(single=False), raws)
        assert got.dtype == want.dtype == np.int64
        assert got.tolist() == want.tolist()
        assert (got is EMPTY) == (want is EMPTY)
    with pytest.raises(ValueError):
        both_postings(_raw_postings([1]), (8).to_bytes(4, "big") + (5).to_bytes(4, "big") +
                      b"\0" * 8)
    with pytest.raises(ValueError):
        both_postings(b"short", _raw_postings([1]))


def test_single_selections_of_all_blocks_equal_each_blocks_combine() -> None:
    """single_selections (every block's one-list-per-matcher selection combined in one C
    call) gives each block the refs combine_single gives (one to five lists of every size,
    equal lengths, unsorted lengths, empty intersections, the 64 lists it takes), and as
    uint32 the bytes selection_kept keeps; a list whose count runs past its bytes, a group
    that is not a list or holds no list or too many, is refused (ValueError, TypeError)."""
    import numpy as np

    from store._items import single_selections
    from store.block import combine_single
    rng = np.random.default_rng(13)
    sizes = [0, 1, 2, 5, 40, 1000]
    groups = []
    for trial in range(400):
        k = 1 + trial % 5
        lists = [np.unique(rng.integers(0, 2000, rng.choice(sizes))) for _ in range(k)]
        if trial % 7 == 0 and k > 1:
            lists[k - 1] = lists[0].copy()
        groups.append([_raw_postings(v) for v in lists])
    groups.append([_raw_postings(np.arange(j, 300, 1 + j % 3)) for j in range(64)])
    got = single_selections([list(g) for g in groups])
    assert len(got) == len(groups)
    for g, (refs, u32) in zip(groups, got):
        want = combine_single(list(g))
        assert np.frombuffer(refs, np.int64).tolist() == want.tolist()
        assert u32 == want.astype(np.uint32).tobytes()
    with pytest.raises(ValueError):
        single_selections([[_raw_postings([1]), (8).to_bytes(4, "big") +
                            (5).to_bytes(4, "big") + b"\0" * 8]])
    for bad in ([[]], [[_raw_postings([1])] * 65]):
        with pytest.raises(ValueError):
            single_selections(bad)
    with pytest.raises(TypeError):
        single_selections([(_raw_postings([1]),)])
    with pytest.raises(TypeError):
        single_selections([[17]])


def test_a_selection_of_more_matchers_than_single_selections_takes_is_combined_alone(
        tmp_path: Path, bucket_dir: Path) -> None:
    """A never-asked selection of 70 equality matchers (more lists than the one C call
    takes) over all blocks gives each block's own ``select`` refs."""
    async def body() -> None:
        st = BucketStore(FilesystemBucket(bucket_dir), tmp_path / "gw", LRUCache(1 << 20),
                         new_registry(), verify_index=False)
        await st.sync_once()
        try:
            ms = [Matcher("=", "__name__", "metric_2"), Matcher("=", "instance", "host-00012")]
            ms += [Matcher("=", "job", "job0")] * 68
            blocks = list(st.blocks.values())
            got = await select_many(blocks, [ms] * len(blocks), st.cache, st._opts,
                                    st._fetch_limit, st.fetch_metrics)
            want = [await b._expand_postings(ms) for b in blocks]
            assert [g.tolist() for g in got] == [w.tolist() for w in want]  # type: ignore[union-attr]
            assert all(len(w) == 1 for w in want)
        finally:
            await st.close()
    run(body())


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_block_whose_index_is_cut_or_gone_under_the_batch_is_taken_out_alone(
        tmp_path: Path, bucket_dir: Path, damage: str, monkeypatch) -> None:
    """The postings lists of a cold one-series request are read in one batch over all blocks
    (one C call for the filesystem bucket, each range still one bucket operation): one
    block's index truncated before the list, or deleted, fails only that block's read -- the
    answer comes from the others and that block goes out of service."""
    batches: list[int] = []
    get_ranges = FilesystemBucket.get_ranges

    get_ranges_now = FilesystemBucket.get_ranges_now

    async def counting(self, reqs):
        batches.append(len(reqs))
        return await get_ranges(self, reqs)

    def counting_now(self, reqs):  # (a batch the page cache serves whole ends here)
        got = get_ranges_now(self, reqs)
        if got is not None:
            batches.append(len(reqs))
        return got
    monkeypatch.setattr(FilesystemBucket, "get_ranges", counting)
    monkeypatch.setattr(FilesystemBucket, "get_ranges_now", counting_now)

    async def body() -> None:
        reg = new_registry()
        st = BucketStore(instrumented(FilesystemBucket(bucket_dir), reg), tmp_path / "gw",
                         LRUCache(1 << 20, CacheMetrics(reg)), reg, verify_index=False)
        await st.sync_once()
        try:
            name = Matcher("=", "__name__", "metric_2")
            mint, maxt = st.time_range()
            await st.series(mint, maxt, [name], False)
            ops = reg.get_sample_value("thanos_objstore_bucket_operations_total",
                                       {"bucket": st.bucket.name, "operation": "get_range"})
            batches.clear()
            bad = list(st.blocks.values())[1]
            start, _ = bad.header.postings_range("instance", "host-00012")
            path = bucket_dir / bad.ulid / INDEX_FILENAME
            if damage == "truncated":
                path.write_bytes(path.read_bytes()[:start + 6])
            else:
                path.unlink()
            got = list(await st.series(mint, maxt, [name, Matcher("=", "instance",
                                                                  "host-00012")], False))
            assert batches[0] == len(list(st.blocks)) + 1  # every block's list in one batch
            assert bad.ulid in st.broken and bad.ulid not in st.blocks
            assert len(got) == 1 and got[0][1]
            assert all(not bad.min_time <= c[0] < bad.max_time for c in got[0][1])
            # one operation per list read, then the broken block's own select reads again (a
            # cut list: its range, then its length prefix exactly)
            assert reg.get_sample_value("thanos_objstore_bucket_operations_total", {
                "bucket": st.bucket.name, "operation": "get_range"}) - ops == \
                batches[0] + {"truncated": 2, "deleted": 1}[damage]
        finally:
            await st.close()
    run(body())


def test_selection_ids_of_different_matchers_differ() -> None:
    """The expanded-postings key's string of matchers (store.block.selection_id) tells
    apart lists that a plain join would not: names and values holding the separators,
    digits and match operators, split differently between name and value or matchers."""
    from store.block import selection_id
    lists = [
        [("=", "a", "b")], [("=", "a", "b"), ("=", "c", "")], [("=", "a", "b=c")],
        [("=", "a", "b1:c")], [("=", "a1:", "b")], [("!=", "a", "b")], [("=~", "a", "b")],
        [("=", "a", "1:b")], [("=", "a", ""), ("=", "b", "")], [("=", "a", "1:b0:")],
        [("=", "a", "b"), ("!~", "c", "d")], [("=", "a", "b!~1:c1:d")], [],
    ]
    ids = [selection_id([Matcher(t, n, v) for t, n, v in ms]) for ms in lists]
    assert len(set(ids)) == len(lists)
    assert ids[0] == selection_id([Matcher("=", "a", "b")])
    # each operator spelled as its value (the member itself a str holding it), plain str
    got = selection_id([Matcher(t, "n", "v") for t in ("=", "!=", "=~", "!~")])
    assert got == "=1:n1:v!=1:n1:v=~1:n1:v!~1:n1:v" and type(got) is str


def test_kept_metric_name_ranges_equal_the_index_headers_and_stay_bounded(
        tmp_path: Path, bucket_dir: Path) -> None:
    """A block keeps the postings ranges of the last few metric names asked (a dashboard
    asks the same names every refresh): each equal to the index-header's own lookup, names
    that nothing has included, and never more than NAME_RANGES_KEPT of them."""
    from store.block import METRIC_NAME, NAME_RANGES_KEPT

    async def body() -> None:
        st = BucketStore(FilesystemBucket(bucket_dir), tmp_path / "gw", LRUCache(1 << 20),
                         new_registry(), verify_index=False)
        await st.sync_once()
        try:
            b = next(iter(st.blocks.values()))
            names = [f"metric_{i}" for i in range(6)] + [f"nope_{i}" for i in range(40)]
            for rnd in range(2):
                for name in names:
                    want = b.header.postings_range(METRIC_NAME, name)
                    assert b._name_range(name) == want, (rnd, name)
                    assert len(b._name_ranges) <= NAME_RANGES_KEPT
            assert b._name_range("metric_1") is not None
            assert b._name_range("nope_1") is None
        finally:
            await st.close()
    run(body())


def test_a_sync_that_drops_blocks_closes_the_descriptors_kept_for_their_files(
        tmp_path: Path, bucket_dir: Path) -> None:
    """The filesystem bucket keeps the descriptors of the files a cold request read; once a
    sync drops a block (deleted from the bucket), none is held open any more, so its files'
    disk space is freed (an unlinked file lives on while a descriptor holds it)."""
    import os
    import shutil
    copy = tmp_path / "bkt"
    shutil.copytree(bucket_dir, copy)

    async def body() -> None:
        reg = new_registry()
        fs = FilesystemBucket(copy)
        st = BucketStore(instrumented(fs, reg), tmp_path / "gw",  # wrapped, as the CLI's is
                         LRUCache(1 << 20, CacheMetrics(reg)), reg, verify_index=False)
        await st.sync_once()
        try:
            mint, maxt = st.time_range()
            await st.series(mint, maxt, [Matcher("=", "__name__", "metric_2"),
                                         Matcher("=", "instance", "host-00012")], False)
            gone = list(st.blocks)[0]
            assert any(n.startswith(gone) for n in fs._kept)
            await st.sync_once()  # nothing dropped: the descriptors stay
            assert any(n.startswith(gone) for n in fs._kept)
            shutil.rmtree(copy / gone)
            await st.sync_once()
            assert gone not in st.blocks and not fs._kept
            held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                    if os.path.exists(f"/proc/self/fd/{fd}")]
            assert not [p for p in held if gone in p]
        finally:
            await st.close()
    run(body())


def test_equality_plans_and_one_segment_reads_equal_the_general_ones(
        tmp_path: Path, bucket_dir: Path) -> None:
    """The shortcuts of the cold one-series request: equality matchers planned with one
    index-header call (``eq_plan``) give ``postings_plan``'s plan (marked in order when each
    matcher's list is ``ranges`` at its place), and a few chunk refs of one segment
    (``one_segment``) the object, spans and one-call read arguments of ``chunk_segments``."""
    from store.coldselect import _equalities

    async def body() -> None:
        st = BucketStore(FilesystemBucket(bucket_dir), tmp_path / "gw", LRUCache(1 << 20),
                         new_registry(), verify_index=False)
        await st.sync_once()
        try:
            sels = [[("=", "__name__", "metric_2"), ("=", "instance", "host-00007")],
                    [("=", "instance", "host-00007"), ("=", "__name__", "metric_2")],
                    [("=", "instance", "host-00007"), ("=", "instance", "host-00007")],
                    [("=", "__name__", "metric_1")], [("=", "__name__", "nope")],
                    [("=", "__name__", "metric_2"), ("=", "instance", "host-nope")]]
            in_order = []
            for b in st.blocks.values():
                for sel in sels:
                    ms = [Matcher(t, n, v) for t, n, v in sel]
                    eq = _equalities(ms)
                    assert eq is not None
                    got, want = b.eq_plan(ms, *eq), b.postings_plan(ms)
                    assert (got is None) == (want is None), sel
                    if got is None:
                        continue
                    assert got._replace(in_order=False) == want, sel
                    assert got.in_order == (got.narrowing == [[r] for r in got.ranges]), sel
                    in_order.append(got.in_order)
                e = await b.series_entries(await b.select([Matcher("=", "__name__", "metric_2")]))
                refs = sorted(set(np.frombuffer(e.c_ref, np.int64).tolist()))
                for ids in (refs[:1], refs[:3], refs[5:9], refs[:40]):
                    segs = b.chunk_segments(ids)
                    one = b.one_segment(ids)
                    if len(ids) > 16:  # (more than a few: the general path)
                        assert one is None
                        continue
                    assert len(segs) == 1 and one is not None
                    assert (one[0], one[2]) == (segs[0][0], segs[0][4])
                    assert one[1]() == segs[0][3]()
                broken = [(refs[0] >> 32) << 32 | 1]  # before the segment's first chunk
                assert b.one_segment(broken) is not None
                with pytest.raises(CorruptionError):
                    b.one_segment(broken)[1]()
            assert True in in_order and False in in_order
            assert _equalities([Matcher("=", "a", "")]) is None
            assert _equalities([Matcher("=~", "a", "b")]) is None and _equalities([]) is None
        finally:
            await st.close()
    run(body())


def test_equality_plans_of_all_blocks_in_one_call_equal_each_blocks_eq_plan(
        tmp_path: Path, bucket_dir: Path) -> None:
    """``eq_plans`` (the cold one-series request's plans of every block in one C call) gives
    each block what its own ``eq_plan`` gives -- the plan, with the same in-order mark and
    the same list objects shared by ``matchers`` and ``narrowing``, or None where a name or
    value has no list -- and False for a block whose index-header fails (its own select then
    fails and takes it out), without failing the others."""
    from store._indexheader import eq_plans
    from store.block import PostingsPlan
    from store.coldselect import _EQ_STATE, _equalities

    async def body() -> None:
        st = BucketStore(FilesystemBucket(bucket_dir), tmp_path / "gw", LRUCache(1 << 20),
                         new_registry(), verify_index=False)
        await st.sync_once()
        try:
            blocks = list(st.blocks.values())
            assert len(blocks) > 1
            sels = [[("=", "__name__", "metric_2"), ("=", "instance", "host-00007")],
                    [("=", "instance", "host-00007"), ("=", "__name__", "metric_2")],
                    [("=", "instance", "host-00007"), ("=", "instance", "host-00007")],
                    [("=", "instance", "host-00003"), ("=", "__name__", "metric_1"),
                     ("=", "instance", "host-00003")],
                    [("=", "__name__", "metric_1")], [("=", "__name__", "nope")],
                    [("=", "nolabel", "x")],
                    [("=", "__name__", "metric_2"), ("=", "instance", "host-nope")]]
            states = list(map(_EQ_STATE, blocks))
            for sel in sels:
                ms = [Matcher(t, n, v) for t, n, v in sel]
                eq = _equalities(ms)
                assert eq is not None
                got = eq_plans(states, eq[0], eq[1], ms, PostingsPlan)
                want = [b.eq_plan(ms, *eq) for b in blocks]
                assert got == want, sel
                for g in got:
                    if g is not None:
                        assert type(g) is PostingsPlan
                        assert all(a is b for (_, a), b in zip(g.matchers, g.narrowing))
            ms = [Matcher("=", "__name__", "metric_2")]
            eq = _equalities(ms)
            broken = states[:1] + [("not", "a", "state")] + states[1:]
            got = eq_plans(broken, eq[0], eq[1], ms, PostingsPlan)
            assert got[1] is False and got[0] == blocks[0].eq_plan(ms, *eq)
            assert got[2:] == [b.eq_plan(ms, *eq) for b in blocks[1:]]
            blocks[0].header.close()  # an unmapped header: lookups fail for it alone
            got = eq_plans(states, eq[0], eq[1], ms, PostingsPlan)
            with pytest.raises(Exception):
                blocks[0].eq_plan(ms, *eq)
            assert got[0] is False and got[1:] == [b.eq_plan(ms, *eq) for b in blocks[1:]]
        finally:
            await st.close()
    run(body())


def test_checked_postings_cuts_and_checks_lists_as_each_read_alone() -> None:
    """checked_postings (one C call for a cold request's reads, one per block) gives each
    read's postings list exactly, or refuses the batch where split_items and _check_postings
    refuse a read: cut short, a wrong checksum, a length that disagrees with the count."""
    import random
    import struct as st
    from array import array

    from receiver.tsdb._blockio import checked_postings, crc32c
    from store._items import split_items
    from store.block import _check_postings

    def one(buf: bytes) -> bytes:  # the reference: a read alone
        items, _ = split_items(buf, array("q", [0]), 0)
        if items[0] is None:
            raise ValueError("cut short")
        _check_postings(items[0])
        return items[0]

    def listed(refs: list[int], count: int | None = None) -> bytes:
        body = st.pack(">I", len(refs) if count is None else count) + \
            b"".join(st.pack(">I", r) for r in refs)
        return st.pack(">I", len(body)) + body + st.pack(">I", crc32c(body))

    rng = random.Random(5)
    for _ in range(400):
        buf = listed(sorted(rng.sample(range(1000), rng.randrange(4))), None)
        kind = rng.randrange(6)
        if kind == 1:
            buf += bytes(rng.randrange(1, 9))  # a read longer than the list
        elif kind == 2:
            buf = buf[:rng.randrange(len(buf))]  # cut short
        elif kind == 3:
            k = rng.randrange(len(buf))
            buf = buf[:k] + bytes([buf[k] ^ 1 << rng.randrange(8)]) + buf[k + 1:]
        elif kind == 4:
            buf = listed([1, 2], count=rng.choice([0, 1, 3]))
        try:
            want: bytes | type = one(buf)
        except (ValueError, st.error):
            want = ValueError
        if want is ValueError:
            with pytest.raises(ValueError):
                checked_postings([listed([7]), buf])
        else:
            assert checked_postings([listed([7]), buf]) == [listed([7]), want]
    assert checked_postings([]) == []
    with pytest.raises(TypeError):
        checked_postings([bytearray(listed([1]))])


# -- the cold one-series selection's C path (store._coldselect) against the Python one

_NAME = ("=", "__name__", "metric_2")
_INSTANCE = ("=", "instance", "host-00012")
_ALL3 = (0, 1, 2)


def _flip_a_byte(block, path: Path) -> None:
    """A byte inside block's postings list of host-00012 changed: its checksum fails."""
    start, _ = block.header.postings_range("instance", "host-00012")
    raw = bytearray(path.read_bytes())
    raw[start + 9] ^= 0xFF
    path.write_bytes(bytes(raw))


def _cut(block, path: Path) -> None:
    """The index cut inside the length prefix of that list: its read comes back short."""
    start, _ = block.header.postings_range("instance", "host-00012")
    path.write_bytes(path.read_bytes()[:start + 6])


def _remove(block, path: Path) -> None:
    """The index file gone: the block's read fails."""
    path.unlink()


# (steps: (block positions, selector)), the step before which block 1's index is damaged
COLD_CASES = {
    "several blocks": ([(_ALL3, [_NAME]), (_ALL3, [_NAME, _INSTANCE]),
                        (_ALL3, [_NAME, _INSTANCE]),
                        (_ALL3, [_NAME, ("=", "instance", "host-00013")])], None, None),
    "one block": ([((1,), [_NAME]), ((1,), [_NAME, _INSTANCE]), ((2,), [_NAME, _INSTANCE])],
                  None, None),
    "cached in some blocks": ([(_ALL3, [_NAME]), ((1,), [_NAME, _INSTANCE]),
                               (_ALL3, [_NAME, _INSTANCE]),
                               ((0, 2), [_NAME, ("=", "instance", "host-00013")])],
                              None, None),
    "corrupt list": ([(_ALL3, [_NAME]), (_ALL3, [_NAME, _INSTANCE])], 1, _flip_a_byte),
    "truncated list": ([(_ALL3, [_NAME]), (_ALL3, [_NAME, _INSTANCE])], 1, _cut),
    "missing index": ([(_ALL3, [_NAME]), (_ALL3, [_NAME, _INSTANCE])], 1, _remove),
    "long matchers": ([(_ALL3, [_NAME]), (_ALL3, [_NAME, _INSTANCE])], None, None),
    "not the fast case": ([(_ALL3, [("=", "__name__", "metric_1"), _INSTANCE]),  # two misses
                           (_ALL3, [_NAME]),
                           (_ALL3, [_NAME, ("=~", "instance", "host-0001[23]")]),
                           (_ALL3, [_NAME, ("=", "env", "")]),
                           (_ALL3, [_NAME, ("!=", "instance", "host-00012")]),
                           (_ALL3, [_NAME, ("=", "instance", "host-nope")]),
                           (_ALL3, [_NAME, ("=", "instance", "host-00014")])], None, None),
}


async def _cold_steps(tmp_path: Path, bucket_dir: Path, side: str, steps: list,
                      damage_at: int | None, damage: Callable | None, seen: list) -> None:
    """Each step's select_many over a fresh store of a copy of the bucket: its refs, then
    the cache's entries in LRU order, its size and every cache and fetch counter."""
    import shutil
    bucket = tmp_path / side / "bucket"
    shutil.copytree(bucket_dir, bucket)
    st, reg = await _synced_store(bucket, tmp_path / side / "gw")
    try:
        blocks = list(st.blocks.values())
        for k, (at, sel) in enumerate(steps):
            if k == damage_at:
                damage(blocks[1], bucket / blocks[1].ulid / INDEX_FILENAME)  # type: ignore[misc]
            ms = [Matcher(t, n, v) for t, n, v in sel]
            picked = [blocks[i] for i in at]
            got = await select_many(picked, [ms] * len(picked), st.cache, st._opts,
                                    st._fetch_limit, st.fetch_metrics)
            seen.append(([None if g is None else g.tolist() for g in got],
                         list(st.cache._d.items()), st.cache.size, _counts(reg)))
    finally:
        await st.close()


@pytest.mark.parametrize("case", list(COLD_CASES))
def test_the_c_path_of_a_cold_selection_equals_the_python_path(
        tmp_path: Path, bucket_dir: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step of each case, through store._coldselect where it applies and through the
    Python path alone: the same refs, the same cache entries in the same LRU order, the same
    size and counters. The C path is taken where it should be: each new selection of
    equality matchers whose blocks miss one list each (a failed or broken read handed back
    to the Python path after the read), never for the others."""
    from store import coldselect
    if case == "long matchers":  # name and instance too long to be kept (34 chars)
        monkeypatch.setattr(coldselect, "MAX_KEY_MATCHER_CHARS", 24)
        coldselect.bind_c(24)
        try:
            _c_and_python_equal(tmp_path, bucket_dir, case, monkeypatch)
        finally:
            coldselect.bind_c()
    else:
        _c_and_python_equal(tmp_path, bucket_dir, case, monkeypatch)


def _c_and_python_equal(tmp_path: Path, bucket_dir: Path, case: str,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    from store import coldselect
    steps, damage_at, damage = COLD_CASES[case]
    plan, finish = coldselect._cold.plan, coldselect._cold.finish
    planned: list[bool] = []
    finished: list[bool] = []
    by_c: list = []
    by_python: list = []

    def counting_plan(*args):
        got = plan(*args)
        planned.append(got is not None)
        return got

    def counting_finish(*args):
        got = finish(*args)
        finished.append(got is not None)
        return got
    with monkeypatch.context() as m:
        m.setattr(coldselect._cold, "plan", counting_plan)
        m.setattr(coldselect._cold, "finish", counting_finish)
        run(_cold_steps(tmp_path, bucket_dir, "c", steps, damage_at, damage, by_c))
    with monkeypatch.context() as m:
        m.setattr(coldselect._cold, "plan", lambda *args: None)
        run(_cold_steps(tmp_path, bucket_dir, "py", steps, damage_at, damage, by_python))
    assert len(by_c) == len(steps)
    for k, (c, py) in enumerate(zip(by_c, by_python)):
        assert c == py, (case, k)
    assert len(planned) == len(steps)
    fast = {"several blocks": [True, True, False, True],
            "one block": [True, True, False],  # (block 2 misses both lists)
            "cached in some blocks": [True, True, False, True],
            "corrupt list": [True, True], "truncated list": [True, True],
            "missing index": [True, True], "long matchers": [True, True],
            "not the fast case": [False, True, False, False, False, False, True]}[case]
    assert planned == fast
    assert finished == [ok and not (damage_at == k) for k, ok in enumerate(fast) if ok]
    if case == "long matchers":  # the second selection is not kept
        assert sum(k[1] == "expanded_postings" for k, _ in by_c[1][1]) == 3
    if damage is not None:  # the damaged block is left to its own select
        assert by_c[damage_at][0][1] is None and all(by_c[damage_at][0][i] for i in (0, 2))


def test_hostile_input_to_the_c_path_is_refused_not_crashing(tmp_path: Path,
                                                             bucket_dir: Path) -> None:
    """store._coldselect's calls given what select_many never gives them: the Python path
    (None) or a TypeError, ValueError or AttributeError, never a crash; a refused call after
    the reads leaves the cache as it was."""
    from store import _coldselect as cold

    async def body() -> None:
        st, reg = await _synced_store(bucket_dir, tmp_path / "gw")
        try:
            blocks = list(st.blocks.values())
            ms = [Matcher(*_NAME), Matcher(*_INSTANCE)]
            c = st.cache
            for args in [("blocks", [ms], c), (blocks, [ms] * 3, object()),
                         ([], [], c), (blocks, [ms] * 2, c), (blocks, [ms, ms, list(ms)], c),
                         (blocks, [[]] * 3, c), (blocks, ["ab"] * 3, c)]:
                assert cold.plan(*args) is None
            for args in [([object()], [ms], c), (blocks, [[1, 2]] * 3, c)]:
                with pytest.raises(AttributeError):
                    cold.plan(*args)
            with pytest.raises(TypeError):
                cold.plan(blocks, 5, c)
            with pytest.raises(TypeError):
                cold.plan(blocks, [ms] * 3)
            with pytest.raises(TypeError):
                cold.bind(*range(13))
            before = (list(c._d.items()), c.size, _counts(reg))
            reqs, state = cold.plan(blocks, [[Matcher(*_NAME)]] * 3, c)
            after_plan = (list(c._d.items()), c.size, _counts(reg))
            assert after_plan != before  # (the postings lookup was counted)
            plans, keys, raws, miss, sel_keys, short = state
            bad_states = [(), state[:5], (1, 2, 3, 4, 5, 6),
                          (plans, keys, raws, [m + 1000 for m in miss], sel_keys, short),
                          (plans, keys, raws, [-1] * 3, sel_keys, short),
                          (plans, keys, raws[:-1], miss, sel_keys, short),
                          ([(1,)] * 3, keys, raws, miss, sel_keys, short),
                          (plans, keys, raws, ["x"] * 3, sel_keys, short)]
            for bad in bad_states:
                with pytest.raises((ValueError, TypeError)):
                    cold.finish(bad, [b""] * 3, c)
            with pytest.raises(ValueError):
                cold.finish(state, [b""] * 2, c)
            with pytest.raises(TypeError):
                cold.finish(state, (b"",) * 3, c)
            for bufs in ([b""] * 3, [b"\x00\x00\x00\x04" + b"\xff" * 8] * 3,
                         [b"\xff" * 64] * 3, [None] * 3, [OSError()] * 3):
                assert cold.finish(state, bufs, c) is None
            assert (list(c._d.items()), c.size, _counts(reg)) == after_plan
            bufs = [await b.bucket.get_range(*r[1]) for b, r in zip(blocks, reqs)]
            got = cold.finish(state, bufs, c)
            assert [g.tolist() for g in got] == \
                [(await b.select([Matcher(*_NAME)])).tolist() for b in blocks]
        finally:
            await st.close()
    run(body())
