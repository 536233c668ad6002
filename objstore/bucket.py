"""The object storage contract every backend (filesystem, S3, prefixed views) fulfils.

Semantics follow Thanos's objstore.Bucket so that block layouts written by one tool are read the
same way by another: flat object names with "/" as a virtual directory separator, ``iter``
listing one directory level with sub-directories reported as ``"dir/"`` unless recursive, and a
single "not found" error type callers can test for regardless of backend.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, Protocol, Union, runtime_checkable

from common.aio import gather_eager

# (object name, offset, length) of one ranged read; length -1 reads to the end.
RangeRequest = tuple[str, int, int]
IS_BYTES = bytes.__instancecheck__  # isinstance(x, bytes) as a C callable (map, filter)

DIR_DELIM = "/"

# What ``upload`` accepts: in-memory bytes, or a local file streamed from disk (large blocks).
UploadData = Union[bytes, bytearray, memoryview, Path, "os.PathLike[str]"]


class BucketError(Exception):
    """Any failure reported by a bucket (after retries, where the backend retries)."""


class ObjectNotFound(BucketError):
    """The named object does not exist."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"object not found: {name}" + (f" ({detail})" if detail else ""))
        self.name = name


class AccessDenied(BucketError):
    """The backend refused access to the object or bucket (S3 403)."""


class InvalidObjectName(BucketError, ValueError):
    """The object name cannot be stored portably (empty parts, '..', leading '/', ...)."""


def is_not_found(err: BaseException) -> bool:
    """True if ``err`` means the object does not exist (Thanos's IsObjNotFoundErr)."""
    return isinstance(err, ObjectNotFound)


def is_access_denied(err: BaseException) -> bool:
    return isinstance(err, AccessDenied)


class ObjectAttributes(NamedTuple):
    """Unpacks as ``size, last_modified``; ``last_modified`` is timezone-aware (UTC)."""

    size: int
    last_modified: datetime


@runtime_checkable
class Bucket(Protocol):
    """Async object store. Objects are immutable blobs; uploads replace whole objects."""

    @property
    def name(self) -> str:
        """Human-readable bucket identity for logs (e.g. ``fs: /data`` or the S3 bucket)."""
        ...

    async def get(self, name: str) -> bytes:
        """Whole object. Raises ObjectNotFound."""
        ...

    async def get_range(self, name: str, off: int, length: int) -> bytes:
        """``length`` bytes from ``off`` (fewer at the end; ``length=-1`` reads to the end).

        Reading at or past the end yields ``b""``. Raises ObjectNotFound.
        """
        ...

    async def upload(self, name: str, data: UploadData) -> None:
        """Create or replace ``name`` atomically: readers see the old or the new object, never a part."""
        ...

    async def exists(self, name: str) -> bool:
        ...

    async def delete(self, name: str) -> None:
        """Remove the object. Deleting a missing object is not an error (S3 semantics), so that
        concurrent cleanups of the same block do not fail each other."""
        ...

    async def iter(self, prefix: str = "", recursive: bool = False) -> list[str]:
        """Sorted full names under directory ``prefix`` ("" is the root; "a" means "a/").

        Not recursive: objects directly in the directory plus sub-directories as ``"a/sub/"``.
        Recursive: every object below, no directory entries. A missing directory lists empty.
        """
        ...

    async def attributes(self, name: str) -> ObjectAttributes:
        """Size and last-modified time. Raises ObjectNotFound."""
        ...

    async def close(self) -> None:
        ...


def check_name(name: str) -> str:
    """Validate an object name so every backend stores it under the same key.

    Names like ``a//b``, ``./a`` or ``a/../b`` would be distinct keys on S3 but collapse (or escape
    the root) on a filesystem, so they are refused everywhere.
    """
    if not isinstance(name, str) or not name:
        raise InvalidObjectName(f"object name must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise InvalidObjectName(f"object name contains NUL: {name!r}")
    parts = name.split(DIR_DELIM)
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidObjectName(
            f"object name {name!r} has an empty, '.' or '..' path element (or a leading/trailing '/')"
        )
    return name


def dir_prefix(prefix: str) -> str:
    """Normalise an iter directory: "" stays "", "a" and "a/" become "a/"; validated like names."""
    if prefix == "":
        return ""
    stripped = prefix[:-1] if prefix.endswith(DIR_DELIM) else prefix
    check_name(stripped)
    return stripped + DIR_DELIM


def check_range(off: int, length: int) -> None:
    if off < 0:
        raise ValueError(f"negative offset {off}")
    if length < -1:
        raise ValueError(f"invalid length {length} (use -1 to read to the end)")


class PrefixedBucket:
    """A view of ``bucket`` where every name lives under ``prefix/`` (the YAML ``prefix`` key).

    Lets several clusters or tenants share one bucket without seeing each other's blocks.
    """

    def __init__(self, bucket: Bucket, prefix: str) -> None:
        trimmed = prefix.strip(DIR_DELIM)
        if not trimmed:
            raise ValueError("prefix must contain something other than '/'")
        check_name(trimmed)
        self._bkt = bucket
        self._prefix = trimmed + DIR_DELIM

    @property
    def name(self) -> str:
        return self._bkt.name

    @property
    def prefix(self) -> str:
        return self._prefix[:-1]

    @property
    def inner(self) -> Bucket:
        return self._bkt

    def _full(self, name: str) -> str:
        return self._prefix + check_name(name)

    async def get(self, name: str) -> bytes:
        try:
            return await self._bkt.get(self._full(name))
        except ObjectNotFound as e:
            raise ObjectNotFound(name) from e

    async def get_range(self, name: str, off: int, length: int) -> bytes:
        try:
            return await self._bkt.get_range(self._full(name), off, length)
        except ObjectNotFound as e:
            raise ObjectNotFound(name) from e

    async def get_ranges(self, reqs: Sequence[RangeRequest]) -> list[bytes | BaseException]:
        out: list[bytes | BaseException | None] = [None] * len(reqs)
        at: list[int] = []
        full: list[RangeRequest] = []
        for i, (name, off, length) in enumerate(reqs):
            try:
                full.append((self._full(name), off, length))
                at.append(i)
            except InvalidObjectName as e:
                out[i] = e
        for i, v in zip(at, await get_ranges(self._bkt, full)):
            out[i] = ObjectNotFound(reqs[i][0]) if isinstance(v, ObjectNotFound) else v
        return out  # type: ignore[return-value]

    def get_ranges_now(self, reqs: list[RangeRequest]) -> list[bytes] | None:
        try:
            full = [(self._full(name), off, length) for name, off, length in reqs]
        except InvalidObjectName:
            return None  # get_ranges hands the error back in its place
        return get_ranges_now(self._bkt, full)

    async def upload(self, name: str, data: UploadData) -> None:
        await self._bkt.upload(self._full(name), data)

    async def exists(self, name: str) -> bool:
        return await self._bkt.exists(self._full(name))

    async def delete(self, name: str) -> None:
        await self._bkt.delete(self._full(name))

    async def iter(self, prefix: str = "", recursive: bool = False) -> list[str]:
        names = await self._bkt.iter(self._prefix + dir_prefix(prefix), recursive)
        n = len(self._prefix)
        return [s[n:] for s in names if s.startswith(self._prefix)]

    async def attributes(self, name: str) -> ObjectAttributes:
        try:
            return await self._bkt.attributes(self._full(name))
        except ObjectNotFound as e:
            raise ObjectNotFound(name) from e

    async def close(self) -> None:
        await self._bkt.close()

    def __repr__(self) -> str:
        return f"PrefixedBucket({self._bkt!r}, {self.prefix!r})"


def get_ranges_now(bucket: Bucket, reqs: list[RangeRequest]) -> list[bytes] | None:
    """Every range of ``reqs`` read at once without waiting, where the bucket's class can
    (``get_ranges_now``: the filesystem bucket, and the wrappers that pass a batch on, when
    the page cache holds it all); else None and nothing done, for ``get_ranges``."""
    now = getattr(type(bucket), "get_ranges_now", None)
    return None if now is None or not reqs else now(bucket, reqs)


async def get_ranges(bucket: Bucket, reqs: Sequence[RangeRequest],
                     limit: asyncio.Semaphore | None = None) -> list[bytes | BaseException]:
    """``bucket.get_range`` of each request, each result or error in its place. A bucket
    whose class defines ``get_ranges`` (the filesystem bucket, and the wrappers that pass a
    batch on) serves them all in one call, which has at most one read in flight at a time (so
    ``limit`` is not taken); any other -- S3, or a wrapper that only forwards unknown
    attributes -- gets one ``get_range`` per request, at most ``limit`` in flight. Each range
    counts as one bucket operation either way."""
    if not reqs:
        return []
    batch = getattr(type(bucket), "get_ranges", None)
    if batch is not None:
        return await batch(bucket, reqs)

    async def one(name: str, off: int, length: int) -> bytes | BaseException:
        try:
            async with limit if limit is not None else nullcontext():
                return await bucket.get_range(name, off, length)
        except Exception as e:  # noqa: BLE001 -- handed back in its place
            return e
    return await gather_eager([one(*r) for r in reqs])


def with_prefix(bucket: Bucket, prefix: str) -> Bucket:
    """``bucket`` itself when ``prefix`` is empty or only slashes (as Thanos does), else a view."""
    if not prefix.replace(DIR_DELIM, ""):
        return bucket
    return PrefixedBucket(bucket, prefix)
