"""The store gateway keeps small selections' whole per-block answers (store.warmmemo): a warm
repeat of a dashboard's selection answers from them -- any range, whole blocks or parts of
them -- without consulting the LRU, counts the cache hits the LRU path would have, and the
memo stays bounded and forgets blocks that are no longer served."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from objstore import FilesystemBucket  # noqa: E402
from receiver.tsdb.labels import Matcher  # noqa: E402
from store.cache import ITEM_TYPES, LRUCache  # noqa: E402
from store.server import StoreGateway  # noqa: E402
from store.warmmemo import MAX_SERIES  # noqa: E402
from storeapi.client import StoreClient  # noqa: E402
from test_store_gateway import (ALL, H2, T0, check_series, expected, make_series, run,  # noqa: E402
                                upload_dir, with_gateway, write)

PARTS = [(make_series(150, T0 + i * H2, H2, seed=40 + i), {"cluster": "a"}, T0 + i * H2,
          T0 + (i + 1) * H2) for i in range(3)]
ONE = [Matcher("=", "__name__", "metric_2"), Matcher("=", "instance", "host-00007")]
FEW = [Matcher("=", "__name__", "metric_2"), Matcher("=~", "instance", "host-000[0-4].")]
RANGES = [ALL, (T0 + H2 + 1_800_000, T0 + H2 + 5_400_000),  # inside one block
          (T0 + H2 - 600_000, T0 + 2 * H2 + 1_000),  # across a block boundary
          (T0 + 3 * H2 - 3_900_000, T0 + 3 * H2 - 30_000)]  # the newest hour, as dashboards


@pytest.fixture
def bucket_dir(tmp_path: Path) -> Path:
    for i, (series, ext, lo, hi) in enumerate(PARTS):
        run(upload_dir(FilesystemBucket(tmp_path / "bucket"), write(tmp_path / f"b{i}", series,
                                                                     lo, hi, ext)))
    return tmp_path / "bucket"


class LookupSpy:
    """Counts the LRU's lookups (every call goes through to the real cache)."""

    def __init__(self, cache: LRUCache) -> None:
        self.calls = 0
        for name in ("get", "get_many", "get_all"):
            real = getattr(cache, name)

            def counted(*a, _real=real, **kw):
                self.calls += 1
                return _real(*a, **kw)
            setattr(cache, name, counted)


def _hits(gw: StoreGateway) -> dict[str, float]:
    return {t: gw.registry.get_sample_value("thanos_store_index_cache_hits_total",
                                            {"item_type": t}) or 0.0 for t in ITEM_TYPES}


def test_warm_repeat_answers_from_the_memo_for_any_range(tmp_path: Path, bucket_dir: Path
                                                         ) -> None:
    hits: dict[str, list[dict[str, float]]] = {}

    async def body(gw: StoreGateway, client: StoreClient, memo: bool) -> None:
        if not memo:
            gw.store.memo = None  # the LRU path, for the reference hit counts
        for ms in (ONE, FEW):
            for rng in RANGES:  # cold, then warm
                await check_series(client, expected(PARTS, *rng), *rng, ms)
        spy = LookupSpy(gw.cache)
        deltas = []
        for ms in (ONE, FEW):
            for rng in RANGES:
                before = _hits(gw)
                await check_series(client, expected(PARTS, *rng), *rng, ms)
                after = _hits(gw)
                deltas.append({t: after[t] - before[t] for t in ITEM_TYPES})
        hits["memo" if memo else "lru"] = deltas
        if memo:
            assert spy.calls == 0  # no block read at all: every block's answer was kept
            assert len(gw.store.memo) == 6  # two selections x three blocks
        else:
            assert spy.calls > 0

    run(with_gateway(tmp_path / "m", FilesystemBucket(bucket_dir),
                     lambda gw, c: body(gw, c, True)))
    run(with_gateway(tmp_path / "l", FilesystemBucket(bucket_dir),
                     lambda gw, c: body(gw, c, False)))
    assert hits["memo"] == hits["lru"]  # the same cache hits counted, call by call
    assert all(d["chunks"] > 0 for d in hits["memo"])


def test_memo_keeps_small_selections_with_short_matchers_only_within_its_budget(tmp_path: Path, bucket_dir: Path
                                                             ) -> None:
    async def body(gw: StoreGateway, client: StoreClient) -> None:
        memo = gw.store.memo
        assert memo is not None and memo.max_bytes == (2 << 20) // 16
        broad = [Matcher("=~", "job", "job.*")]  # 150 series per block
        assert 150 > MAX_SERIES
        await check_series(client, expected(PARTS, *ALL), *ALL, broad)
        assert len(memo) == 0
        for i in range(40):  # many small selections: older ones make room
            ms = [Matcher("=", "instance", f"host-{i:05d}")]
            await check_series(client, expected(PARTS, *ALL), *ALL, ms)
            assert memo.size <= memo.max_bytes
        assert 0 < len(memo) < 40 * 3
        memo.keep_blocks([])
        assert memo.size == 0  # everything counted was given back
        long_regex = "|".join(f"host-{i:05d}" for i in range(0, 150, 5))  # 329 characters
        ms = [Matcher("=~", "instance", long_regex)]  # 30 series: small, but a long key
        for _ in range(2):
            await check_series(client, expected(PARTS, *ALL), *ALL, ms)
        assert len(memo) == 0

    run(with_gateway(tmp_path, FilesystemBucket(bucket_dir), body, cache_bytes=2 << 20))


def test_memo_forgets_blocks_no_longer_served(tmp_path: Path, bucket_dir: Path) -> None:
    async def body(gw: StoreGateway, client: StoreClient) -> None:
        await check_series(client, expected(PARTS, *ALL), *ALL, ONE)
        assert len(gw.store.memo) == 3
        gone = min(gw.store.blocks)
        lo = gw.store.blocks[gone].min_time
        bucket = FilesystemBucket(bucket_dir)
        for name in await bucket.iter(f"{gone}/", recursive=True):
            await bucket.delete(name)
        await gw.sync_once()
        assert len(gw.store.blocks) == 2 and len(gw.store.memo) == 2
        left = [p for p in PARTS if p[2] != lo]
        await check_series(client, expected(left, *ALL), *ALL, ONE)

    run(with_gateway(tmp_path, FilesystemBucket(bucket_dir), body))


def test_no_memo_without_a_cache(tmp_path: Path, bucket_dir: Path) -> None:
    async def body(gw: StoreGateway, client: StoreClient) -> None:
        assert gw.store.memo is None
        for rng in RANGES:
            await check_series(client, expected(PARTS, *rng), *rng, ONE)

    run(with_gateway(tmp_path, FilesystemBucket(bucket_dir), body, cache_bytes=0))


def test_range_cut_checks_every_chunk_also_overlapping_ones() -> None:
    """A partly covered block's kept answer is cut chunk by chunk, as the block's own read
    does: a short chunk between two long overlapping ones can lie outside the range."""
    from store.warmmemo import selection_of

    a, b = (("n", "a"),), (("n", "b"),)
    sel = selection_of([(a, [(0, 100, b"x"), (10, 20, b"y"), (50, 200, b"z")]),
                        (b, [(0, 20, b"w")])], 0, 7200, True, 2)
    assert sel.in_range(30, 60) == ([(a, [(0, 100, b"x"), (50, 200, b"z")])], 2)
    assert sel.in_range(0, 10_000) == (sel.series, 4)  # the whole block: as kept
    assert sel.in_range(300, 400) == ([], 0)


def _python_size(series) -> tuple[int, int]:
    """(chunks, bytes counted) of an answer by the memo's formula, in plain Python."""
    from store.warmmemo import CHUNK_OVERHEAD, ENTRY_OVERHEAD

    chunks = sum(len(cs) for _, cs in series)
    data = sum(len(c[2]) for _, cs in series for c in cs)
    return chunks, ENTRY_OVERHEAD * (1 + len(series)) + CHUNK_OVERHEAD * chunks + data


def test_answer_sizes_count_as_the_memo_formula_and_refuse_other_shapes() -> None:
    import random

    from store._items import answer_sizes
    from store.warmmemo import CHUNK_OVERHEAD, ENTRY_OVERHEAD, selection_of, selections_of

    rnd = random.Random(7)
    answers = [[((("n", f"s{s}"),), [(t, t + 9, bytes(rnd.randrange(300)))
                                    for t in range(rnd.randrange(5))])
                for s in range(rnd.randrange(4))] for _ in range(50)]
    chunks, sizes = answer_sizes(answers, ENTRY_OVERHEAD, CHUNK_OVERHEAD)
    assert list(zip(chunks, sizes)) == [_python_size(a) for a in answers]
    many = selections_of(answers, list(range(50)), list(range(1, 51)), list(range(50)))
    assert many == [selection_of(a, i, i + 1, True, i) for i, a in enumerate(answers)]
    for bad in ([None], [[("l",)]], [[("l", (1, 2))]], [[("l", [(1, 2)])]], [[("l", [(1, 2, 3)])]]):
        with pytest.raises(TypeError):
            answer_sizes(bad, ENTRY_OVERHEAD, CHUNK_OVERHEAD)


def test_a_new_selection_kept_at_once_counts_as_kept_one_by_one() -> None:
    from store.warmmemo import SelectionMemo, selection_of

    def sel(n: int) -> object:
        return selection_of([((("n", "a"),), [(0, 1, b"x" * n)])], 0, 10, True, 1)

    for sizes in ([10, 20, 30], [10, 40_000, 30], [5000, 5000, 5000, 5000]):
        ulids = [f"b{i}" for i in range(len(sizes))]
        sels = [sel(n) for n in sizes]
        at_once, one_by_one = SelectionMemo(16 * 10_000), SelectionMemo(16 * 10_000)
        at_once.put_many("old", ["b0"], [sel(1)])
        one_by_one.put_many("old", ["b0"], [sel(1)])
        at_once.put_many("k", ulids, sels)
        for u, s in zip(ulids, sels):
            one_by_one.put("k", u, s)
        assert at_once.size == one_by_one.size <= at_once.max_bytes
        assert at_once._sizes == one_by_one._sizes
        assert at_once._d == one_by_one._d and list(at_once._d) == list(one_by_one._d)



def test_put_many_of_a_new_group_keeps_and_counts_as_one_by_one() -> None:
    """put_many of a group (a cold request's) equals one put per entry: repeated ULIDs,
    oversized entries, no entries, a group that evicts older ones, a group already there."""
    from store.warmmemo import SelectionMemo, selection_of

    def sel(n: int) -> object:
        return selection_of([((("n", "a"),), [(0, 1, b"x" * n)])], 0, 10, True, 1)

    cases = [(["b0", "b1", "b2"], [10, 20, 30]), (["b0", "b1", "b0"], [10, 20, 30]),
             (["b0", "b1"], [10, 40_000]), (["b0"], [40_000]), ([], []), (["b0"], [9_000]),
             (["b0", "b1", "b2", "b3"], [5000, 5000, 5000, 5000])]
    for first in (False, True):
        for ulids, sizes in cases:
            memos = SelectionMemo(16 * 10_000), SelectionMemo(16 * 10_000)
            for m in memos:
                for k in range(14):  # older groups, some evicted by the new one
                    m.put_many(f"old{k}", ["b0"], [sel(9_000)])
                if first:
                    m.put_many("k", ["b1"], [sel(7)])
            sels = [sel(n) for n in sizes]
            memos[0].put_many("k", ulids, sels)
            for ulid, one in zip(ulids, sels):
                memos[1].put("k", ulid, one)
            assert memos[0].size == memos[1].size <= memos[0].max_bytes, (ulids, sizes)
            assert memos[0]._sizes == memos[1]._sizes
            assert memos[0]._d == memos[1]._d and list(memos[0]._d) == list(memos[1]._d)


def test_a_cold_request_over_part_of_its_blocks_answers_its_range_and_keeps_whole_blocks(
        tmp_path: Path, bucket_dir: Path) -> None:
    """The cold path keeps each block's whole answer and cuts blocks the range covers in part
    (the first and last of a dashboard's range); a repeat answers from what it kept."""
    async def body(gw: StoreGateway, client: StoreClient) -> None:
        memo = gw.store.memo
        for k, rng in enumerate(RANGES):
            ms = [Matcher("=", "__name__", "metric_2"), Matcher("=", "instance", f"host-{5 * k + 2:05d}")]
            before = memo.size
            await check_series(client, expected(PARTS, *rng), *rng, ms)  # cold
            kept = memo.get(tuple((m.type, m.name, m.value) for m in ms))
            assert kept and all(s.series for s in kept.values()), rng
            assert memo.size - before == 1024 + sum(_python_size(s.series)[1]
                                                    for s in kept.values())
            assert all(s.chunks == _python_size(s.series)[0] for s in kept.values())
            spy = LookupSpy(gw.cache)
            await check_series(client, expected(PARTS, *rng), *rng, ms)  # from the memo
            assert spy.calls == 0
        for k, rng in enumerate(RANGES):  # cold again: the store's own answer holds only
            # chunks within the range (the StoreAPI encoder would drop others again)
            ms = [Matcher("=", "__name__", "metric_2"), Matcher("=", "instance",
                                                             f"host-{5 * k + 22:05d}")]
            got = list(await gw.store.series(*rng, ms, False))
            assert got and all(c[1] >= rng[0] and c[0] <= rng[1] for _, cs in got for c in cs)

    run(with_gateway(tmp_path, FilesystemBucket(bucket_dir), body))


def test_range_cut_equals_a_plain_filter_of_every_chunk() -> None:
    """Selection.in_range's cut (one C call) against the plain filter it replaces, over random
    answers with overlapping chunks and random ranges; malformed answers are refused."""
    import random

    from store._items import chunks_in_range
    from store.warmmemo import selection_of

    def plain(series, mint, maxt):
        out, n = [], 0
        for lbls, cs in series:
            cs = [c for c in cs if c[1] >= mint and c[0] <= maxt]
            if cs:
                out.append((lbls, cs))
                n += len(cs)
        return out, n

    rng = random.Random(11)
    for _ in range(500):
        series = []
        for s in range(rng.randrange(4)):
            cs = []
            for _ in range(rng.randrange(5)):
                lo = rng.randrange(0, 7200)
                cs.append((lo, lo + rng.randrange(0, 3000), bytes(rng.randrange(3))))
            series.append(((("n", f"s{s}"),), cs))
        mint = rng.randrange(-100, 7300)
        maxt = mint + rng.randrange(0, 4000)
        sel = selection_of(series, 0, 7200, True, len(series))
        want = plain(series, mint, maxt)
        whole = mint <= 0 and maxt >= 7199  # the block covered: its answer as kept
        assert sel.in_range(mint, maxt) == ((sel.series, sel.chunks) if whole else want)
        assert chunks_in_range(series, mint, maxt) == want
    for bad in ([None], [("l",)], [("l", (1,))], [("l", [(1, 2)])], [("l", [("a", 2, b"")])]):
        with pytest.raises(TypeError):
            chunks_in_range(bad, 0, 10)


def test_a_series_answer_is_freed_once_its_caller_drops_it(tmp_path: Path, bucket_dir: Path
                                                          ) -> None:
    """The querier's StoreAPI client keeps nothing of an answer after handing it out: with the
    cyclic garbage collector off, dropping the answer frees its series at once. (A reader that
    kept the answer it built, inside a reference cycle, held every answer until a full
    collection: the querier's memory grew by a whole answer per query.)"""
    import gc
    import weakref

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        for native_histograms in (False, True):
            client.native_histograms = native_histograms
            got = await client.series_with_warnings(*ALL, [Matcher("=~", "job", "job.*")])
            assert len(got.series) == 150
            gone = weakref.ref(got.series[0])
            enabled = gc.isenabled()
            gc.disable()
            try:
                del got
                assert gone() is None, native_histograms
            finally:
                if enabled:
                    gc.enable()

    run(with_gateway(tmp_path, FilesystemBucket(bucket_dir), body))
