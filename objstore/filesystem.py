"""A bucket stored in a local directory: for single-node setups, tests and debugging.

Object ``a/b/c`` is the file ``<root>/a/b/c``. Blocking file I/O runs in worker threads so the
event loop of the server using the bucket keeps serving -- except the part of a small ranged read
that the page cache already holds: a store gateway issues those by the thousand, and a
non-blocking read (``RWF_NOWAIT``) serves them faster than a thread hand-off, while pages that
would need the disk (cold cache, slow disk, NFS) are still read in a worker thread.
Uploads write a hidden temp file in the target directory and rename it into place, so a reader
never sees a half-written object.
"""
from __future__ import annotations

import asyncio
import os
import resource
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from ._pread import pread_cached as _pread_cached
from ._pread import read_ranges as _read_ranges
from .bucket import (
    DIR_DELIM,
    BucketError,
    InvalidObjectName,
    ObjectAttributes,
    ObjectNotFound,
    UploadData,
    check_name,
    check_range,
    dir_prefix,
)

# Temp files live next to their target (same filesystem, so rename is atomic) and are hidden
# from listings by this prefix.
TMP_PREFIX = ".objstore-tmp-"
_COPY_CHUNK = 1 << 20
# Ranged reads up to this size try the page cache in the caller's thread first (see
# FilesystemBucket.get_range).
INLINE_READ_MAX = 1 << 20
# Descriptors get_ranges keeps open between calls (objstore._pread.read_ranges): a day of
# blocks' index and chunk files, re-checked at every use; never more than a quarter of the
# process's descriptor limit.
KEEP_FILES = 1024


@dataclass
class ReadPaths:
    """How ranged reads were served: wholly from the page cache in the caller's thread, or
    (partly) in a worker thread. Lets tests and benchmarks see the path without timing it."""
    inline: int = 0
    threaded: int = 0


def _pread_all(fd: int, off: int, want: int) -> bytes:
    """``want`` bytes at ``off``, fewer only at the file's (moved) end; may block on the disk."""
    parts = []
    while want > 0:  # a regular file reads short only at its (moved) end
        got = os.pread(fd, want, off)
        if not got:
            break
        parts.append(got)
        off += len(got)
        want -= len(got)
    return parts[0] if len(parts) == 1 else b"".join(parts)  # b"" when none


class FilesystemBucket:
    """Bucket rooted at ``directory`` (created if missing). Symbolic links are not followed."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        if not str(directory):
            raise ValueError("missing directory for filesystem bucket")
        os.makedirs(directory, exist_ok=True)
        self._root = os.path.realpath(directory)
        self._nowait = True  # off once the platform or filesystem refuses RWF_NOWAIT
        self._batch = True  # off once the kernel refuses openat2 or RWF_NOWAIT (read_ranges)
        self._dirfd = -1  # the root, opened at the first batch (read_ranges opens beneath it)
        self._kept: dict[str, int] = {}  # object name -> descriptor read_ranges keeps open
        self._keep_max = _keep_max()
        self.read_paths = ReadPaths()

    @property
    def name(self) -> str:
        return f"fs: {self._root}"

    @property
    def root(self) -> str:
        return self._root

    # -- path handling -------------------------------------------------------------------------

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self._root or real.startswith(self._root + os.sep)

    def _path(self, name: str) -> str:
        """Absolute path of object ``name``; refuses names that would land outside the root."""
        check_name(name)
        parts = name.split(DIR_DELIM)
        if parts[-1].startswith(TMP_PREFIX):
            raise InvalidObjectName(f"object name {name!r} uses the reserved prefix {TMP_PREFIX!r}")
        path = os.path.join(self._root, *parts)
        if not self._resolves_inside(parts):
            raise InvalidObjectName(f"object name {name!r} resolves outside the bucket root")
        return path

    def _resolves_inside(self, parts: list[str]) -> bool:
        """Whether ``<root>/<parts>`` stays below the root. An lstat per component while none
        is a symbolic link (realpath, walking every component from /, cost ~10x a whole ranged
        read); realpath once one is. A missing component ends the walk: nothing below it can
        lead out (names have no '.' or '..' elements)."""
        path = self._root
        for part in parts:
            path += os.sep + part
            try:
                mode = os.lstat(path).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return True
            except OSError:
                return self._inside(os.path.join(self._root, *parts))
            if stat.S_ISLNK(mode):
                return self._inside(os.path.join(self._root, *parts))
        return True

    # -- reads -----------------------------------------------------------------------------------

    def _open_range(self, name: str, off: int, length: int) -> tuple[int, int]:
        """An open descriptor of object ``name`` and how many bytes from ``off`` to read: never
        more than the file holds (pread allocates what is asked). The caller closes it."""
        path = self._path(name)
        try:
            # O_NONBLOCK: opening a FIFO planted in the directory must not hang the reader.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise ObjectNotFound(name) from e
        except OSError as e:
            raise BucketError(f"read {name}: {e}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ObjectNotFound(name, "not a regular file")
        except BaseException as e:
            os.close(fd)
            if isinstance(e, OSError):
                raise BucketError(f"read {name}: {e}") from e
            raise
        want = max(0, st.st_size - off)
        return fd, (length if 0 <= length < want else want)

    @staticmethod
    def _finish_read(name: str, fd: int, head: bytes, off: int, want: int) -> bytes:
        """``head`` and then the ``want`` bytes at ``off``; closes ``fd`` (worker threads own
        the descriptor they are handed)."""
        try:
            rest = _pread_all(fd, off, want)
        except OSError as e:
            raise BucketError(f"read {name}: {e}") from e
        finally:
            os.close(fd)
        return head + rest if head else rest

    def _read(self, name: str, off: int, length: int) -> bytes:
        fd, want = self._open_range(name, off, length)
        return self._finish_read(name, fd, b"", off, want)

    async def get(self, name: str) -> bytes:
        return await asyncio.to_thread(self._read, name, 0, -1)

    async def get_range(self, name: str, off: int, length: int) -> bytes:
        """Reads of up to INLINE_READ_MAX bytes take what the page cache holds in the event
        loop's thread (a pread from the page cache costs less than the hand-off to a worker
        thread and back) and leave only what needs the disk to a worker thread, so a cold
        cache or a slow disk never stalls the event loop; bigger reads go wholly to a thread.
        Where the filesystem cannot read without blocking (EOPNOTSUPP, as on some network and
        FUSE filesystems), every read, its open included, goes to a thread from then on. The
        open, fstat and per-component lstat of an inline read still run on the loop: cheap
        while the inode and dentry caches hold the block's files."""
        check_range(off, length)
        if not (self._nowait and 0 <= length <= INLINE_READ_MAX):
            self.read_paths.threaded += 1
            return await asyncio.to_thread(self._read, name, off, length)
        fd, want = self._open_range(name, off, length)
        try:
            head = _pread_cached(fd, off, want) if want else b""
        except BaseException as e:
            os.close(fd)
            if isinstance(e, OSError):
                raise BucketError(f"read {name}: {e}") from e
            raise
        if head is None:
            self._nowait = False
            head = b""
        elif len(head) == want:
            os.close(fd)
            self.read_paths.inline += 1
            return head
        self.read_paths.threaded += 1
        # The descriptor goes with the work: the worker thread closes it.
        return await asyncio.to_thread(self._finish_read, name, fd, head, off + len(head),
                                       want - len(head))

    async def get_ranges(self, reqs: Sequence[tuple[str, int, int]]
                         ) -> list[bytes | BaseException]:
        """``get_range`` of each (name, off, length), results (or errors) in order. A store's
        cold Series call reads one small item per block: here every range the page cache holds
        is read in one C call (open beneath the root, fstat, non-blocking pread, close; no
        Python per range), and only the others -- not cached, over INLINE_READ_MAX, a missing
        object, a symbolic link, a name the bucket refuses -- go through ``get_range`` one by
        one, so each result or error is exactly what ``get_range`` gives."""
        if not isinstance(reqs, list):
            reqs = list(reqs)
        got = self._inline(reqs)
        if got is None:
            got = [None] * len(reqs)
        else:
            self.read_paths.inline += len(reqs) - got.count(None)
        if None not in got:
            return got
        for i, v in enumerate(got):
            if v is None:
                try:
                    got[i] = await self.get_range(*reqs[i])
                except Exception as e:  # noqa: BLE001 -- handed back in its place
                    got[i] = e
        return got

    def get_ranges_now(self, reqs: list[tuple[str, int, int]]) -> list[bytes] | None:
        """``get_ranges`` without a coroutine, when the page cache holds every range (the
        usual cold Series call: each layer's await cost more than the read); None, nothing
        read as far as anyone counts, when any range needs more: the caller then takes
        ``get_ranges``, which reads the batch again."""
        got = self._inline(reqs)
        if got is None or None in got:
            return None
        self.read_paths.inline += len(reqs)
        return got

    def _inline(self, reqs: list[tuple[str, int, int]]) -> list[bytes | None] | None:
        """Each range the page cache holds, read in one C call (None where it needs
        ``get_range``), or None when batched reads are off on this platform."""
        if not (self._batch and self._nowait and reqs):
            return None
        if self._dirfd < 0:
            try:
                self._dirfd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                self._batch = False
                return None
        got = _read_ranges(self._dirfd, reqs, INLINE_READ_MAX, TMP_PREFIX, self._kept,
                           self._keep_max)
        if got is None:
            self._batch = False
        return got

    def _stat(self, name: str) -> os.stat_result | None:
        try:
            st = os.stat(self._path(name), follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise BucketError(f"stat {name}: {e}") from e
        return st if stat.S_ISREG(st.st_mode) else None

    async def exists(self, name: str) -> bool:
        return await asyncio.to_thread(self._stat, name) is not None

    async def attributes(self, name: str) -> ObjectAttributes:
        st = await asyncio.to_thread(self._stat, name)
        if st is None:
            raise ObjectNotFound(name)
        return ObjectAttributes(st.st_size, datetime.fromtimestamp(st.st_mtime, tz=timezone.utc))

    # -- listing ---------------------------------------------------------------------------------

    def _has_objects(self, directory: str) -> bool:
        """A directory counts only if some object lives below it (empty leftovers are hidden)."""
        for _, _, files in os.walk(directory):
            if any(not f.startswith(TMP_PREFIX) for f in files):
                return True
        return False

    def _iter(self, prefix: str, recursive: bool) -> list[str]:
        d = dir_prefix(prefix)
        base = os.path.join(self._root, *d[:-1].split(DIR_DELIM)) if d else self._root
        if not self._inside(base) or not os.path.isdir(base) or os.path.islink(base):
            return []
        out: list[str] = []
        if recursive:
            for dirpath, _, files in os.walk(base):
                rel = os.path.relpath(dirpath, base)
                head = d if rel == "." else d + rel.replace(os.sep, DIR_DELIM) + DIR_DELIM
                for f in files:
                    full = os.path.join(dirpath, f)
                    if not f.startswith(TMP_PREFIX) and not os.path.islink(full):
                        out.append(head + f)
        else:
            with os.scandir(base) as it:
                for entry in it:
                    if entry.name.startswith(TMP_PREFIX):
                        continue
                    if entry.is_file(follow_symlinks=False):
                        out.append(d + entry.name)
                    elif entry.is_dir(follow_symlinks=False) and self._has_objects(entry.path):
                        out.append(d + entry.name + DIR_DELIM)
        out.sort()
        return out

    async def iter(self, prefix: str = "", recursive: bool = False) -> list[str]:
        return await asyncio.to_thread(self._iter, prefix, recursive)

    # -- writes ----------------------------------------------------------------------------------

    def _upload(self, name: str, data: UploadData) -> None:
        path = self._path(name)
        parent = os.path.dirname(path)
        for attempt in range(3):
            try:
                os.makedirs(parent, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=parent)
                break
            except FileNotFoundError:
                # A concurrent delete pruned the freshly made parent; make it again.
                if attempt == 2:
                    raise
            except (FileExistsError, NotADirectoryError) as e:
                raise BucketError(f"upload {name}: a parent path is an object: {e}") from e
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o644)
                if isinstance(data, (bytes, bytearray, memoryview)):
                    f.write(data)
                else:
                    with open(os.fspath(data), "rb") as src:
                        shutil.copyfileobj(src, f, _COPY_CHUNK)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(e, IsADirectoryError):
                raise BucketError(f"upload {name}: a directory has that name") from e
            raise
        _fsync_dir(parent)

    async def upload(self, name: str, data: UploadData) -> None:
        await asyncio.to_thread(self._upload, name, data)

    def _delete(self, name: str) -> None:
        path = self._path(name)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as e:
            raise BucketError(f"delete {name}: {e}") from e
        # Prune directories the deletion left empty, as object stores have no empty "dirs".
        d = os.path.dirname(path)
        while d != self._root and d.startswith(self._root + os.sep):
            try:
                os.rmdir(d)
            except OSError:
                break
            d = os.path.dirname(d)

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._delete, name)

    async def close(self) -> None:
        self._close_dir()

    def release_kept_files(self) -> int:
        """Close every descriptor kept between batched reads (they are opened again on
        demand); how many. The store gateway calls it after a sync that dropped a block, so
        the disk space of that block's deleted files is not held by a descriptor."""
        kept = getattr(self, "_kept", {})
        fds = list(kept.values())
        kept.clear()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        return len(fds)

    def _close_dir(self) -> None:
        self.release_kept_files()
        fd, self._dirfd = getattr(self, "_dirfd", -1), -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self._close_dir()
        except Exception:  # noqa: BLE001 -- at interpreter exit os may be half torn down
            pass

    def __repr__(self) -> str:
        return f"FilesystemBucket({self._root!r})"


def _keep_max() -> int:
    """KEEP_FILES, or a quarter of the soft descriptor limit if that is less."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 0
    return KEEP_FILES if soft == resource.RLIM_INFINITY else max(0, min(KEEP_FILES, soft // 4))


def _fsync_dir(path: str) -> None:
    """Persist the rename itself; best effort (some filesystems refuse directory fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["FilesystemBucket", "ReadPaths", "TMP_PREFIX"]
