"""Batched ranged reads (``objstore.bucket.get_ranges``): a store's cold Series call reads one
small item per block, and the filesystem bucket serves the whole batch in one C call. Every
result or error must be exactly what one ``get_range`` per range gives, through every wrapper
(metrics, prefix, caching bucket), counted as Thanos counts single reads, with no descriptor
left open and no stale view of an object deleted or replaced between batches."""
from __future__ import annotations

import asyncio
import gc
import os
import random
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from objstore import FilesystemBucket, ObjectNotFound, PrefixedBucket  # noqa: E402
from objstore import filesystem  # noqa: E402
from objstore.bucket import get_ranges, get_ranges_now  # noqa: E402
from objstore.metrics import instrumented  # noqa: E402
from store.cache import InMemoryBytesCache, CacheBackendConfig  # noqa: E402
from store.cachingbucket import CachingBucket, CachingBucketConfig  # noqa: E402

BLOCK = "01M8SMVFMXVTE0EJF67AHFVN29"


async def _singles(b, reqs) -> list:
    out = []
    for r in reqs:
        try:
            out.append(await b.get_range(*r))
        except Exception as e:  # noqa: BLE001
            out.append(e)
    return out


def _same(batch: list, single: list) -> None:
    assert len(batch) == len(single)
    for i, (a, s) in enumerate(zip(batch, single)):
        if isinstance(s, bytes):
            assert a == s, i
        else:
            assert type(a) is type(s) and str(a) == str(s), (i, a, s)


def _populate(root: Path, rnd: random.Random) -> dict[str, bytes]:
    b = FilesystemBucket(root)
    files = {f"{BLOCK}/index": rnd.randbytes(70_000), f"{BLOCK}/chunks/000001": rnd.randbytes(40_000),
             f"{BLOCK}/chunks/000002": b"", "other/x": rnd.randbytes(10)}
    for name, data in files.items():
        asyncio.run(b.upload(name, data))
    return files


def _odd_names(root: Path, tmp: Path) -> list[str]:
    """Names the fast path must leave to get_range: a link inside and one out of the root, a
    directory, a FIFO, a missing object, refused names, the temp-file prefix."""
    (tmp / "outside").write_bytes(b"secret" * 100)
    os.symlink(root / BLOCK / "index", root / "inlink")
    os.symlink(tmp / "outside", root / "outlink")
    os.mkfifo(root / "fifo")
    (root / f"{filesystem.TMP_PREFIX}x").write_bytes(b"tmp")
    return ["inlink", "outlink", BLOCK, "fifo", f"{BLOCK}/missing", "missing/index", "a//b",
            "../escape", "/abs", "a/./b", "trailing/", f"{filesystem.TMP_PREFIX}x", ""]


def test_batch_equals_single_reads_on_random_ranges(tmp_path):
    rnd = random.Random(7)
    root = tmp_path / "bkt"
    files = _populate(root, rnd)
    names = list(files) + _odd_names(root, tmp_path)
    reqs = []
    for _ in range(400):
        name = rnd.choice(names)
        size = len(files.get(name, b"x" * 600))
        off = rnd.choice([0, rnd.randrange(size + 1), size, size + rnd.randrange(1, 100)])
        length = rnd.choice([-1, 0, 1, rnd.randrange(1, 2 * size + 2), size - off])
        reqs.append((name, off, length))
    reqs += [(f"{BLOCK}/index", -1, 5), (f"{BLOCK}/index", 0, -2)]  # refused arguments
    b = FilesystemBucket(root)
    single = asyncio.run(_singles(b, reqs))
    inline = b.read_paths.inline
    batch = asyncio.run(get_ranges(b, reqs))
    _same(batch, single)
    plain = sum(isinstance(s, bytes) and not r[0].endswith("link") for r, s in zip(reqs, single))
    # every plain read came from the C batch (the links each through get_range: inline too)
    assert b.read_paths.inline - inline >= plain
    for wrapped in (instrumented(FilesystemBucket(root), CollectorRegistry()),
                    PrefixedBucket(FilesystemBucket(tmp_path), "bkt")):
        _same(asyncio.run(get_ranges(wrapped, reqs)), asyncio.run(_singles(wrapped, reqs)))


def test_only_uncached_or_unusual_ranges_take_the_single_read_path(tmp_path, monkeypatch):
    root = tmp_path / "bkt"
    files = _populate(root, random.Random(1))
    b = FilesystemBucket(root)
    big = os.urandom(filesystem.INLINE_READ_MAX + 10)
    asyncio.run(b.upload("big", big))
    singles: list[tuple] = []
    get_range = FilesystemBucket.get_range

    async def counting(self, name, off, length):
        singles.append((name, off, length))
        return await get_range(self, name, off, length)
    monkeypatch.setattr(FilesystemBucket, "get_range", counting)
    reqs = [(f"{BLOCK}/index", 10, 100), (f"{BLOCK}/index", 500, 16), (f"{BLOCK}/chunks/000001", 8, 30),
            (f"{BLOCK}/missing", 0, 4), ("big", 1, filesystem.INLINE_READ_MAX + 1)]
    got = asyncio.run(b.get_ranges(reqs))
    assert got[:3] == [files[f"{BLOCK}/index"][10:110], files[f"{BLOCK}/index"][500:516],
                       files[f"{BLOCK}/chunks/000001"][8:38]]
    assert isinstance(got[3], ObjectNotFound) and got[4] == big[1:filesystem.INLINE_READ_MAX + 2]
    assert singles == reqs[3:]  # the missing object and the over-long read
    # a kernel without openat2 (or a filesystem without non-blocking reads): all single reads
    monkeypatch.setattr(filesystem, "_read_ranges", lambda *a: None)
    singles.clear()
    assert asyncio.run(b.get_ranges(reqs[:3])) == got[:3]
    assert singles == reqs[:3]
    assert asyncio.run(b.get_ranges(reqs[:1])) == got[:1]  # not tried again
    assert len(singles) == 4


def _open_fds() -> set[str]:
    gc.collect()  # buckets of earlier tests close their root directory when collected
    return set(os.listdir("/proc/self/fd"))


def test_descriptors_kept_between_batches_are_bounded_and_closed(tmp_path):
    root = tmp_path / "bkt"
    files = _populate(root, random.Random(2))
    b = FilesystemBucket(root)
    reqs = [(n, 0, 10) for n in files for _ in range(3)] + [(f"{BLOCK}/missing", 0, 1)]
    before = _open_fds()
    for _ in range(50):
        asyncio.run(b.get_ranges(reqs))
    # the root directory and one descriptor per object read: kept, not one per batch
    assert len(_open_fds() - before) == 1 + len(files) and sorted(b._kept) == sorted(files)
    assert b.release_kept_files() == len(files)
    assert _open_fds() - before == {str(b._dirfd)}
    b._keep_max = 2  # at most that many, the oldest closed first
    for _ in range(5):
        asyncio.run(b.get_ranges(reqs))
        assert len(b._kept) == 2 and len(_open_fds() - before) == 3
    asyncio.run(b.close())
    assert _open_fds() == before and not b._kept


def test_kept_descriptors_read_what_a_fresh_open_reads_as_objects_change(tmp_path):
    """A kept descriptor never serves an object deleted, replaced (uploads rename over the
    name), rewritten in place or swapped for a symbolic link: every batch, between random such
    changes, equals single reads, which open the object afresh."""
    rnd = random.Random(11)
    root = tmp_path / "bkt"
    files = _populate(root, rnd)
    (tmp_path / "outside").write_bytes(b"secret" * 100)
    names = list(files)
    b = FilesystemBucket(root)
    kept_hits = 0
    for _ in range(400):
        reqs = [(rnd.choice(names), rnd.choice([0, rnd.randrange(3000)]), rnd.choice([-1, 4, 300]))
                for _ in range(6)]
        kept_hits += sum(r[0] in b._kept for r in reqs)
        _same(asyncio.run(b.get_ranges(reqs)), asyncio.run(_singles(b, reqs)))
        name = rnd.choice(names)
        path = root / name
        action = rnd.randrange(6)
        if action in (0, 1) and path.is_symlink():
            os.unlink(path)  # (the bucket refuses to write through a link out of its root)
        elif action == 0:
            asyncio.run(b.delete(name))
        elif action == 1:
            asyncio.run(b.upload(name, rnd.randbytes(rnd.randrange(3000))))
        elif action == 2 and path.is_file() and not path.is_symlink():
            path.write_bytes(rnd.randbytes(rnd.randrange(3000)))  # same inode, new bytes
        elif action == 3:
            path.parent.mkdir(parents=True, exist_ok=True)
            link = path.parent / "link.tmp"
            os.symlink(rnd.choice([tmp_path / "outside", root / names[0]]), link)
            os.replace(link, path)
    assert kept_hits > 300  # the kept descriptors were used, not just opened
    assert len(b._kept) <= len(names)
    asyncio.run(b.close())


def test_batch_counted_per_range_as_thanos_counts_reads(tmp_path):
    root = tmp_path / "bkt"
    _populate(root, random.Random(3))
    reg = CollectorRegistry()
    b = instrumented(FilesystemBucket(root), reg)

    def v(name: str) -> float:
        return reg.get_sample_value(name, {"bucket": b.name, "operation": "get_range"}) or 0.0
    got = asyncio.run(get_ranges(b, [(f"{BLOCK}/index", 0, 10), (f"{BLOCK}/index", 100, 7),
                                     (f"{BLOCK}/missing", 0, 5), ("../escape", 0, 5),
                                     (f"{BLOCK}/chunks/000002", 0, 5)]))
    assert [len(x) if isinstance(x, bytes) else type(x).__name__ for x in got] == \
        [10, 7, "ObjectNotFound", "InvalidObjectName", 0]
    assert v("thanos_objstore_bucket_operations_total") == 5
    assert v("thanos_objstore_bucket_operation_fetched_bytes_total") == 17
    assert v("thanos_objstore_bucket_operation_failures_total") == 1  # not the missing one
    assert v("thanos_objstore_bucket_operation_duration_seconds_count") == 3
    asyncio.run(get_ranges(b, [(f"{BLOCK}/index", 0, 10), (f"{BLOCK}/missing", 0, 5)]))
    assert v("thanos_objstore_bucket_operations_total") == 7  # (later batches count too)
    assert v("thanos_objstore_bucket_operation_fetched_bytes_total") == 27
    assert v("thanos_objstore_bucket_operation_failures_total") == 1
    assert v("thanos_objstore_bucket_operation_duration_seconds_count") == 4


class _Forwarding:
    """A wrapper that only forwards unknown attributes (as test and tool wrappers do): its
    own get_range must still see every read."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.reads: list[tuple] = []

    async def get_range(self, name, off, length):
        self.reads.append((name, off, length))
        return await self.inner.get_range(name, off, length)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_wrappers_without_a_batch_read_each_range_through_their_get_range(tmp_path):
    root = tmp_path / "bkt"
    files = _populate(root, random.Random(4))
    w = _Forwarding(FilesystemBucket(root))
    reqs = [(f"{BLOCK}/index", 3, 4), (f"{BLOCK}/missing", 0, 1)]
    got = asyncio.run(get_ranges(w, reqs, asyncio.Semaphore(1)))
    assert got[0] == files[f"{BLOCK}/index"][3:7] and isinstance(got[1], ObjectNotFound)
    assert w.reads == reqs


def test_caching_bucket_serves_chunk_ranges_from_its_cache_in_a_batch(tmp_path):
    root = tmp_path / "bkt"
    files = _populate(root, random.Random(5))
    inner = _Forwarding(FilesystemBucket(root))
    cb = CachingBucket(inner, InMemoryBytesCache(1 << 20),
                       CachingBucketConfig(CacheBackendConfig(), 1000),
                       CollectorRegistry())
    chunks = f"{BLOCK}/chunks/000001"
    reqs = [(chunks, 1500, 100), (f"{BLOCK}/index", 5, 5), (chunks, 10, 20)]
    want = [files[chunks][1500:1600], files[f"{BLOCK}/index"][5:10], files[chunks][10:30]]
    assert asyncio.run(get_ranges(cb, reqs)) == want
    assert sorted(inner.reads) == sorted([(chunks, 0, 1000), (chunks, 1000, 1000), reqs[1]])
    inner.reads.clear()
    assert asyncio.run(get_ranges(cb, reqs)) == want
    assert inner.reads == [reqs[1]]  # the chunk ranges from the cache, the index one passed on


def test_batch_read_now_gives_what_get_ranges_gives_or_nothing(tmp_path):
    """``get_ranges_now`` (the cold Series call's reads without an await per layer): through
    every wrapper that passes a batch on, either exactly ``get_ranges``'s results -- only when
    every range is a plain read the page cache holds -- or None; a wrapper without it, or a
    batch with any unusual range, gets None."""
    rnd = random.Random(11)
    root = tmp_path / "bkt"
    files = _populate(root, rnd)
    names = list(files) + _odd_names(root, tmp_path)
    asyncio.run(FilesystemBucket(root).upload("big", os.urandom(filesystem.INLINE_READ_MAX + 10)))
    wrapped = [FilesystemBucket(root), instrumented(FilesystemBucket(root), CollectorRegistry()),
               PrefixedBucket(FilesystemBucket(tmp_path), "bkt"),
               instrumented(PrefixedBucket(FilesystemBucket(tmp_path), "bkt"), CollectorRegistry())]
    served = 0
    for _ in range(300):
        reqs = []
        for _ in range(rnd.randrange(1, 5)):
            name = rnd.choice(names if rnd.random() < 0.3 else list(files)[:2])
            size = len(files.get(name, b"x" * 600))
            off = rnd.randrange(size + 1)
            reqs.append((name, off, rnd.choice([0, 1, size - off, rnd.randrange(1, 600)])))
        if rnd.random() < 0.05:
            reqs.append(("big", 0, filesystem.INLINE_READ_MAX + 1))
        want = asyncio.run(get_ranges(FilesystemBucket(root), reqs))
        plain = all(isinstance(w, bytes) for w in want) and \
            not any(r[0] in ("inlink", "big") for r in reqs)
        for b in wrapped:
            got = get_ranges_now(b, reqs)
            if plain:
                assert got == want, reqs
            else:
                assert got is None or got == want, reqs
        served += plain
    assert served > 100
    assert get_ranges_now(_Forwarding(FilesystemBucket(root)), [(f"{BLOCK}/index", 0, 4)]) is None
    assert get_ranges_now(FilesystemBucket(root), []) is None


def test_batch_read_now_counted_as_get_ranges_counts_it(tmp_path):
    root = tmp_path / "bkt"
    _populate(root, random.Random(12))
    reqs = [(f"{BLOCK}/index", 0, 10), (f"{BLOCK}/index", 100, 7), (f"{BLOCK}/chunks/000002", 0, 0)]
    counted = []
    for now in (False, True):
        reg = CollectorRegistry()
        b = instrumented(FilesystemBucket(root), reg)
        got = get_ranges_now(b, reqs) if now else asyncio.run(get_ranges(b, reqs))
        assert [len(x) for x in got] == [10, 7, 0]
        counted.append([reg.get_sample_value(n, {"bucket": b.name, "operation": "get_range"})
                        for n in ("thanos_objstore_bucket_operations_total",
                                  "thanos_objstore_bucket_operation_fetched_bytes_total",
                                  "thanos_objstore_bucket_operation_duration_seconds_count")])
        assert get_ranges_now(b, [(f"{BLOCK}/missing", 0, 4)]) is None  # not counted
        assert reg.get_sample_value("thanos_objstore_bucket_operations_total",
                                    {"bucket": b.name, "operation": "get_range"}) == 3
    assert counted[0] == counted[1] == [3, 17, 3]
