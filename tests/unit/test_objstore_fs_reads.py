"""Ranged reads of the filesystem bucket: what the page cache holds is read in the event loop's
thread, what needs the disk in a worker thread -- so a cold page cache (or a slow disk, NFS)
never stalls a store gateway's event loop. Pages are really dropped from the page cache
(posix_fadvise DONTNEED on a clean, fsynced file); the path taken is read from the bucket's
``read_paths`` counters, never from timing."""
from __future__ import annotations

import asyncio
import ctypes
import mmap
import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from objstore import FilesystemBucket, InvalidObjectName, ObjectNotFound  # noqa: E402
from objstore import filesystem  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
SIZE = 64 * PAGE
# The kernel keeps or drops a large folio (up to 2 MiB) whole: the partly cached file is cut
# at a 4 MiB boundary so its second half can really be dropped.
HALF = 4 << 20


def _nowait_works(directory: Path) -> bool:
    """Whether this kernel and filesystem can read without blocking (Linux 4.14+, ext4, xfs,
    btrfs, tmpfs...): the inline path exists only there."""
    probe = directory / "probe"
    probe.write_bytes(b"x" * PAGE)
    fd = os.open(probe, os.O_RDONLY)
    try:
        return filesystem._pread_cached(fd, 0, PAGE) is not None
    finally:
        os.close(fd)
        probe.unlink()


@pytest.fixture
def bucket(tmp_path: Path) -> FilesystemBucket:
    if not _nowait_works(tmp_path):
        pytest.skip("no non-blocking reads (RWF_NOWAIT) on this kernel/filesystem: every "
                    "ranged read goes to a worker thread")
    return FilesystemBucket(tmp_path / "bkt")


def _drop_from_page_cache(b: FilesystemBucket, name: str, off: int = 0, length: int = 0) -> None:
    """Evict the object's pages (the upload fsynced it, so they are clean and really go)."""
    fd = os.open(os.path.join(b.root, name), os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, off, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _resident(b: FilesystemBucket, name: str, off: int) -> bool:
    """Whether the page at ``off`` is in the page cache, by mincore(2) on a mapping: unlike a
    probing read, it starts no readahead that would bring the page back."""
    path = os.path.join(b.root, name)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as m:
        libc = ctypes.CDLL(None, use_errno=True)
        vec = (ctypes.c_ubyte * (len(m) // PAGE + 1))()
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        if libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(len(m)), vec) != 0:
            pytest.skip(f"mincore: {os.strerror(ctypes.get_errno())}")
        return bool(vec[off // PAGE] & 1)


def test_warm_range_read_stays_in_the_event_loop_thread(bucket):
    data = os.urandom(SIZE)

    async def go() -> None:
        await bucket.upload("blk/chunks", data)
        assert await bucket.get_range("blk/chunks", 0, -1) == data  # unbounded: a thread
        before = (bucket.read_paths.inline, bucket.read_paths.threaded)
        assert await bucket.get_range("blk/chunks", 5, 300) == data[5:305]
        assert await bucket.get_range("blk/chunks", SIZE - 10, 100) == data[-10:]  # at the end
        assert await bucket.get_range("blk/chunks", SIZE + 1, 10) == b""
        assert await bucket.get_range("blk/chunks", 0, 0) == b""
        assert (bucket.read_paths.inline, bucket.read_paths.threaded) == \
            (before[0] + 4, before[1])
    asyncio.run(go())


def _cold_reads(b: FilesystemBucket, monkeypatch, name: str, drop_from: int, off: int,
                length: int, expect: bytes, attempts: int = 20) -> list[tuple[int, int]]:
    """Drops the object's pages from ``drop_from`` on, reads ``length`` bytes at ``off``, and
    again, ``attempts`` times; returns (thread, bytes read inline first) for each read that went
    to a worker thread. Several attempts: the kernel starts readahead for the pages a
    non-blocking read misses, and a fast disk (a VM's host cache) can finish it before that
    read gives up -- then the read rightly was served inline (here: 10-50 % of such reads)."""
    handed: list[tuple[int, int]] = []
    finish = filesystem.FilesystemBucket._finish_read

    def finish_read(name: str, fd: int, head: bytes, at: int, want: int) -> bytes:
        handed.append((threading.get_ident(), len(head)))  # then reads for real
        return finish(name, fd, head, at, want)
    monkeypatch.setattr(filesystem.FilesystemBucket, "_finish_read", staticmethod(finish_read))
    for _ in range(attempts):
        _drop_from_page_cache(b, name, drop_from, 0)
        if _resident(b, name, max(off, drop_from)):
            pytest.skip("the kernel kept the pages despite POSIX_FADV_DONTNEED")
        assert asyncio.run(b.get_range(name, off, length)) == expect
    assert b.read_paths.inline + b.read_paths.threaded == attempts
    assert b.read_paths.threaded == len(handed)
    return handed


def test_cold_range_read_goes_to_a_worker_thread_with_the_same_bytes(bucket, monkeypatch):
    data = os.urandom(2 * HALF)
    asyncio.run(bucket.upload("blk/chunks", data))
    off = HALF + 7
    handed = _cold_reads(bucket, monkeypatch, "blk/chunks", 0, off, 64 * PAGE,
                         data[off:off + 64 * PAGE])
    assert handed, "no cold read went to a worker thread"
    assert all(thread != threading.get_ident() for thread, _ in handed)
    assert any(head == 0 for _, head in handed)


def test_partly_cached_range_reads_the_cached_head_inline_and_the_rest_in_a_thread(
        bucket, monkeypatch):
    data = os.urandom(2 * HALF)
    asyncio.run(bucket.upload("blk/index", data))
    # The first half stays cached (the upload wrote it), the second is dropped.
    off = HALF - 2 * PAGE + 1
    handed = _cold_reads(bucket, monkeypatch, "blk/index", HALF, off, 4 * PAGE,
                         data[off:off + 4 * PAGE])
    if not _resident(bucket, "blk/index", HALF - 1):
        pytest.skip("the kernel dropped more pages than asked for")
    assert handed, "no partly cold read went to a worker thread"
    # The cached head was read inline; only the rest was left to the thread.
    assert all(thread != threading.get_ident() and head >= 2 * PAGE - 1
               for thread, head in handed)
    assert any(head == 2 * PAGE - 1 for _, head in handed)


def test_filesystem_without_nowait_reads_in_a_thread(tmp_path, monkeypatch):
    """A platform or filesystem without non-blocking reads (pread_cached answers None, as on
    EOPNOTSUPP) is asked once; from then on every ranged read goes to a worker thread, with the
    right bytes."""
    b = FilesystemBucket(tmp_path)
    data = os.urandom(3 * PAGE)
    asyncio.run(b.upload("o", data))
    calls: list[int] = []

    def unsupported(fd: int, off: int, want: int) -> None:
        calls.append(off)
    monkeypatch.setattr(filesystem, "_pread_cached", unsupported)
    assert asyncio.run(b.get_range("o", 1, 10)) == data[1:11]
    assert asyncio.run(b.get_range("o", PAGE, PAGE)) == data[PAGE:2 * PAGE]
    assert calls == [1]
    assert (b.read_paths.inline, b.read_paths.threaded) == (0, 2)


def test_pread_cached_reads_what_is_cached_and_refuses_bad_arguments(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(3 * PAGE)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert filesystem._pread_cached(fd, 5, 100) == data[5:105]
        assert filesystem._pread_cached(fd, 3 * PAGE - 4, 100) == data[-4:]  # short at the end
        assert filesystem._pread_cached(fd, 10 * PAGE, 100) == b""
        assert filesystem._pread_cached(fd, 0, 0) == b""
        for bad in ((fd, -1, 10), (fd, 0, -1)):
            with pytest.raises(ValueError):
                filesystem._pread_cached(*bad)
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        filesystem._pread_cached(fd, 0, 10)  # closed: EBADF


@pytest.mark.parametrize("where", ["dir", "subdir", "file"])
def test_symlinks_resolve_like_realpath_at_every_depth(tmp_path, where):
    """Names are checked by lstat-ing their components and resolving with realpath only where
    a component is a symbolic link: a link that stays inside the root reads as before, one that
    leaves it is refused, at any depth (block dir, chunks dir, segment file)."""
    outside = tmp_path / "outside"
    (outside / "chunks").mkdir(parents=True)
    (outside / "chunks" / "000001").write_bytes(b"secret")
    root = tmp_path / "b"
    b = FilesystemBucket(root)
    asyncio.run(b.upload("real/chunks/000001", b"inside-data"))
    link, inside_target, outside_target = {
        "dir": ("blk", root / "real", outside),
        "subdir": ("blk/chunks", root / "real" / "chunks", outside / "chunks"),
        "file": ("blk/chunks/000001", root / "real" / "chunks" / "000001",
                 outside / "chunks" / "000001"),
    }[where]
    if where != "dir":
        (root / "blk" / "chunks").mkdir(parents=True, exist_ok=True)
        if where == "subdir":
            (root / "blk" / "chunks").rmdir()
    os.symlink(inside_target, root / link)
    assert asyncio.run(b.get_range("blk/chunks/000001", 1, 5)) == b"nside"
    assert asyncio.run(b.get("blk/chunks/000001")) == b"inside-data"
    os.unlink(root / link)
    os.symlink(outside_target, root / link)
    for call in (lambda: b.get_range("blk/chunks/000001", 0, 3), lambda: b.get("blk/chunks/000001"),
                 lambda: b.upload("blk/chunks/000001", b"x")):
        with pytest.raises(InvalidObjectName):
            asyncio.run(call())
    assert (outside / "chunks" / "000001").read_bytes() == b"secret"
    with pytest.raises(ObjectNotFound):  # missing components: nothing to resolve, not found
        asyncio.run(b.get_range("none/chunks/000001", 0, 3))


def test_plain_names_are_checked_without_realpath(tmp_path, monkeypatch):
    """realpath (a Python walk from / with an lstat per component) runs only for names that
    pass through a symbolic link; a store gateway's thousands of plain reads skip it."""
    b = FilesystemBucket(tmp_path / "b")
    asyncio.run(b.upload("blk/chunks/000001", b"0123456789"))
    os.symlink(tmp_path / "b" / "blk", tmp_path / "b" / "alias")
    resolved: list[str] = []
    realpath = os.path.realpath

    def counting_realpath(path, *args, **kw):
        resolved.append(os.fspath(path))
        return realpath(path, *args, **kw)
    monkeypatch.setattr(filesystem.os.path, "realpath", counting_realpath)
    assert asyncio.run(b.get_range("blk/chunks/000001", 2, 3)) == b"234"
    with pytest.raises(ObjectNotFound):
        asyncio.run(b.get_range("blk/absent/000001", 2, 3))
    assert resolved == []
    assert asyncio.run(b.get_range("alias/chunks/000001", 2, 3)) == b"234"
    assert len(resolved) == 1
