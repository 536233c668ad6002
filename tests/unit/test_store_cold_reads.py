"""The store gateway's cold read path: items cut out of coalesced ranged reads in C, the LRU
filled in batches, and filesystem-bucket reads."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store._items import split_items  # noqa: E402
from store.block import _ITEM_KINDS, _chunk_len, _postings_len, _series_len  # noqa: E402
from store.cache import ENTRY_OVERHEAD, LRUCache  # noqa: E402


def _uvarint(x: int) -> bytes:
    out = bytearray()
    while True:
        b, x = x & 0x7F, x >> 7
        out.append(b | (0x80 if x else 0))
        if not x:
            return bytes(out)


def _items(kind: str, sizes: list[int]) -> list[bytes]:
    """Items framed as the index / chunk segments frame them (contents are filler)."""
    out = []
    for k, n in enumerate(sizes):
        body = bytes([(k * 7 + i) % 251 for i in range(n)])
        if kind == "postings":
            out.append(len(body).to_bytes(4, "big") + body + b"CRC!")
        elif kind == "series":
            out.append(_uvarint(len(body)) + body + b"CRC!")
        else:
            out.append(_uvarint(len(body)) + b"\x01" + body + b"CRC!")
    return out


@pytest.mark.parametrize("kind,length_at", [("postings", _postings_len),
                                            ("series", _series_len), ("chunks", _chunk_len)])
def test_split_items_cuts_what_the_python_framing_cuts(kind: str, length_at) -> None:
    """Every item that lies wholly inside the read comes back byte for byte; one running past
    the end (or whose length prefix is cut) is None with its length when known, as the
    Python framing functions say, so the caller re-reads exactly that item."""
    items = _items(kind, [0, 1, 5, 127, 128, 300, 20000, 3])
    gap = b"\xee" * 3
    buf = gap + gap.join(items)
    rels = np.cumsum([len(gap)] + [len(i) + len(gap) for i in items[:-1]]).astype(np.int64)
    for cut in (len(buf), len(buf) - 2, rels[-1] + 1, rels[5] + 200, rels[2], 0):
        part = buf[:cut]
        got, lens = split_items(part, rels, _ITEM_KINDS[kind])
        lens = np.frombuffer(lens, np.int64)
        for k, at in enumerate(rels.tolist()):
            want_len = length_at(memoryview(part), at) if at < len(part) else None
            assert lens[k] == (-1 if want_len is None else want_len)
            whole = want_len is not None and at + want_len <= len(part)
            assert got[k] == (items[k] if whole else None)
    assert split_items(b"", np.zeros(0, np.int64), 0) == ([], b"")


def test_split_items_refuses_overflowing_lengths_and_bad_arguments() -> None:
    """A length that cannot be an item is corruption (ValueError takes the block out of
    service), never a huge allocation or an out-of-bounds read."""
    for kind in (1, 2):
        with pytest.raises(ValueError):
            split_items(b"\xff" * 12, np.zeros(1, np.int64), kind)
    with pytest.raises(ValueError):
        split_items(b"abc", np.array([-1], np.int64), 0)
    with pytest.raises(ValueError):
        split_items(b"abc", np.zeros(1, np.int64), 3)
    with pytest.raises(ValueError):
        split_items(b"abc", b"\x00" * 7, 0)
    got, lens = split_items(b"\x00\x00", np.array([0, 1, 5], np.int64), 0)
    assert got == [None, None, None] and np.frombuffer(lens, np.int64).tolist() == [-1] * 3


def test_lru_batch_insert_accounts_replacements_duplicates_and_evictions() -> None:
    cache = LRUCache(10 * (100 + ENTRY_OVERHEAD))
    cache.put_many([1, 2, 3], [b"a" * 100] * 3, "series")
    assert cache.size == 3 * (100 + ENTRY_OVERHEAD) and len(cache) == 3
    cache.put_many([2, 4], [b"b" * 50, b"c" * 100], "series")  # 2 replaced
    assert cache.get(2, "series") == b"b" * 50
    assert cache.size == 3 * (100 + ENTRY_OVERHEAD) + 50 + ENTRY_OVERHEAD
    cache.put_many([5, 5], [b"x" * 10, b"y" * 20], "chunks")  # last one wins
    assert cache.get(5, "chunks") == b"y" * 20 and len(cache) == 5
    assert cache.size == sum(len(cache.get(k, "series")) + ENTRY_OVERHEAD
                             for k in (1, 2, 3, 4, 5))
    # Bigger than the whole budget: not cached, and nothing else evicted for it.
    cache.put_many([6], [b"z" * cache.max_bytes], "chunks")
    assert cache.get(6, "chunks") is None and len(cache) == 5
    # Over budget: the least recently used go first (1, 3, then 2; 4 and 5 used since).
    cache.get(2, "series")
    cache.get(4, "series")
    cache.get(5, "chunks")
    cache.put_many(list(range(10, 18)), [b"n" * 100] * 8, "postings")
    assert [cache.get(k, "series") is None for k in (1, 3, 2, 4, 5)] == [True] * 3 + [False] * 2
    assert cache.size <= cache.max_bytes
    assert cache.size == sum(len(v) + ENTRY_OVERHEAD for v in cache._d.values())


def test_filesystem_ranged_reads_inline_and_threaded_agree(tmp_path: Path) -> None:
    """Small ranged reads are served by a pread in the caller's thread, big ones in a worker
    thread: both return exactly the object's bytes for every range, short at the end."""
    import asyncio

    from objstore import FilesystemBucket
    from objstore.filesystem import INLINE_READ_MAX

    data = np.random.default_rng(3).bytes(INLINE_READ_MAX * 2 + 12345)

    async def go() -> None:
        bkt = FilesystemBucket(tmp_path / "b")
        await bkt.upload("blk/chunks/000001", data)
        for off, ln in [(0, 1), (7, INLINE_READ_MAX), (5, INLINE_READ_MAX + 1),
                        (len(data) - 10, 100), (len(data) - 10, INLINE_READ_MAX * 3),
                        (0, len(data)), (3, -1), (len(data), 4), (len(data) + 9, 1)]:
            want = data[off:] if ln < 0 else data[off:off + ln]
            assert await bkt.get_range("blk/chunks/000001", off, ln) == want

    asyncio.run(go())


def test_filesystem_reads_of_non_files_fail_fast(tmp_path: Path) -> None:
    """A FIFO or a directory where an object should be is 'not found' at once, never a read
    that blocks the event loop (small reads run in it)."""
    import asyncio
    import os

    from objstore import FilesystemBucket, ObjectNotFound

    async def go() -> None:
        bkt = FilesystemBucket(tmp_path / "b")
        await bkt.upload("blk/index", b"x" * 10)
        os.mkfifo(tmp_path / "b" / "blk" / "fifo")
        for name in ("blk/fifo", "blk", "blk/missing", "nope/index"):
            with pytest.raises(ObjectNotFound):
                await asyncio.wait_for(bkt.get_range(name, 0, 4), 10)

    asyncio.run(go())


def test_lru_metrics_follow_inserts_replacements_and_evictions() -> None:
    """Thanos's index-cache gauges and counters (items, bytes, added, evicted by type) match
    the cache after batches that add, replace and evict."""
    from prometheus_client import CollectorRegistry

    from store.cache import CacheMetrics
    reg = CollectorRegistry()
    cache = LRUCache(4 * (100 + ENTRY_OVERHEAD), CacheMetrics(reg))

    def val(name: str, **labels: str) -> float | None:
        return reg.get_sample_value(f"thanos_store_index_cache_{name}", labels)
    assert (val("items"), val("total_size_bytes"), val("items_added_total", item_type="series"),
            val("items_evicted_total", item_type="chunks")) == (0, 0, 0, 0)
    cache.put_many([1, 2, 3], [b"a" * 100] * 3, "series")
    cache.put_many([3], [b"b" * 50], "series")  # replaced: counted as added, not evicted
    assert (val("items"), val("total_size_bytes")) == (3, cache.size)
    assert val("items_added_total", item_type="series") == 4
    cache.put_many([4, 5, 6], [b"c" * 100] * 3, "chunks")  # evicts series 1 and 2
    assert (val("items"), val("total_size_bytes")) == (len(cache), cache.size) == (4, cache.size)
    assert val("items_evicted_total", item_type="series") == 2
    assert val("items_evicted_total", item_type="chunks") == 0
    assert val("items_added_total", item_type="chunks") == 3
    assert val("max_size_bytes") == cache.max_bytes
    # the store's keys, (block, item type, ref): an entry's type is its key's
    cache.put_many([("b", "postings", 7), ("b", "postings", 9)], [b"p" * 100] * 2, "postings")
    cache.put_many([("b", "expanded_postings", "s")], [b"e" * 100], "expanded_postings")
    assert val("items_evicted_total", item_type="series") == 3  # 1, 2, then 3
    assert val("items_evicted_total", item_type="chunks") == 2  # 4 and 5
    cache.put_many([10, 11], [b"d" * 100] * 2, "series")  # evicts chunk 6 and a postings list
    assert val("items_evicted_total", item_type="chunks") == 3
    assert val("items_evicted_total", item_type="postings") == 1
    assert cache.get(("b", "expanded_postings", "s"), "expanded_postings") == b"e" * 100
    assert cache._types == {10: "series", 11: "series"}  # nothing kept of evicted keys
    # a batch mixing both kinds of keys: each other key's type is kept whatever comes first
    cache.put_many([("b", "postings", 8), 12], [b"f" * 100] * 2, "series")
    cache.put_many([13, 14, 15, 16], [b"g" * 100] * 4, "chunks")  # evicts everything before
    assert val("items_evicted_total", item_type="series") == 6  # 10, 11 and 12
    assert val("items_evicted_total", item_type="postings") == 3  # 7, 9 and 8
    assert val("items_evicted_total", item_type="expanded_postings") == 1
    assert set(cache._types) == {13, 14, 15, 16}


def test_postings_lists_are_checked_as_read_and_decoded_after() -> None:
    """A postings list read from the bucket is checked once (checksum, length, count), before
    it is cached; a cached one decodes without the check, to the same refs."""
    from receiver.tsdb._blockio import crc32c
    from receiver.tsdb.chunks import CorruptionError
    from store.block import _check_postings, _decode_postings

    def framed(body: bytes) -> bytes:
        crc = crc32c(body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + body + crc

    refs = [3, 70, 4096, 2**32 - 1]
    body = len(refs).to_bytes(4, "big") + b"".join(r.to_bytes(4, "big") for r in refs)
    good = framed(body)
    _check_postings(good)
    assert _decode_postings(good).tolist() == refs and _decode_postings(good).dtype == np.int64
    bad_crc = good[:10] + bytes([good[10] ^ 1]) + good[11:]
    bad_count = framed((len(refs) + 1).to_bytes(4, "big") + body[4:])
    for raw in (bad_crc, bad_count, good[:-1], framed(b"\0\0")):
        with pytest.raises(CorruptionError):
            _check_postings(raw)


def test_small_reads_planned_on_lists_equal_the_array_plans() -> None:
    """A one-series read's few items are planned on lists (no numpy call per step): the same
    groups as the array coalesce, the same item spans, and a ref outside its section is
    corruption either way."""
    from store.block import _small_spans
    from store.ranges import coalesce
    rnd = np.random.default_rng(11)
    for _ in range(2000):
        n = int(rnd.integers(2, 17))
        starts = np.sort(rnd.choice(1 << 16, n, replace=False)).astype(np.int64)
        ends = starts + rnd.integers(1, 3000, n)
        gap, size = int(rnd.integers(0, 2000)), int(rnd.choice([1 << 62, 4000, 20000]))
        assert coalesce(starts.tolist(), ends.tolist(), gap, size) == \
            coalesce(starts, ends, gap, size)
        est, hi = int(rnd.integers(1, 5000)), int(starts[-1]) + int(rnd.integers(1, 5000))
        want = np.minimum(starts + est, hi)
        np.minimum(want[:-1], starts[1:], out=want[:-1])
        assert _small_spans(starts.tolist(), est, 0, hi) == (starts.tolist(), want.tolist())
    for starts, lo, hi in (([7, 9], 8, 100), ([8, 100], 8, 100)):
        assert _small_spans(starts, 10, lo, hi) is None


def test_item_reads_plan_a_few_items_as_the_list_spans_and_coalesce_do() -> None:
    """store._items.item_reads (a cold one-series read's series entries or chunks, each
    block's in one C call) gives exactly the reads _small_spans + coalesce give, with the
    items' offsets in each read, and None for an item outside its section."""
    from array import array

    from store._items import item_reads
    from store.block import ALL_BITS, _small_spans
    from store.ranges import coalesce
    rnd = np.random.default_rng(5)
    outside = 0
    for _ in range(5000):
        n = int(rnd.integers(1, 13))
        lo = int(rnd.integers(0, 100))
        hi = lo + int(rnd.integers(1, 5000))
        offs = sorted(set(int(x) for x in rnd.integers(max(lo - 5, 0), hi + 5, n)))
        est, gap = int(rnd.integers(0, 800)), int(rnd.integers(0, 300))
        size = int(rnd.choice([1 << 62, int(rnd.integers(1, 3000))]))
        if rnd.random() < 0.5:  # chunk refs: segment number above, offset below
            seg = int(rnd.integers(1, 4)) << 32
            ids, mask, mul = [seg | o for o in offs], 0xFFFFFFFF, 1
        else:  # series refs: offset / 16
            offs = sorted({o - o % 16 for o in offs})
            ids, mask, mul = [o // 16 for o in offs], ALL_BITS, 16
        spans = _small_spans(offs, est, lo, hi)
        want = None if spans is None else [
            (gs, ge, a, z, array("q", [s - gs for s in spans[0][a:z]]).tobytes())
            for gs, ge, a, z in coalesce(*spans, gap, size)]
        outside += want is None
        assert item_reads(ids, mask, mul, est, lo, hi, gap, size) == want
    assert 0 < outside < 5000
    for bad in ([], list(range(5000))):
        with pytest.raises(ValueError):
            item_reads(bad, ALL_BITS, 16, 10, 0, 1 << 20, 0, 1 << 20)
