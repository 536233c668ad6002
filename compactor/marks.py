"""Thanos's block marker files: deletion, no-compaction and no-downsampling marks.

Each is a small JSON object next to the block's ``meta.json``. Field names and version
numbers are Thanos's (pkg/block/metadata/markers.go) so marks written by either system are
honoured by the other.
"""
from __future__ import annotations

import json
import time
from typing import Any

from objstore import Bucket, ObjectNotFound

DELETION_MARK = "deletion-mark.json"
NO_COMPACT_MARK = "no-compact-mark.json"
NO_DOWNSAMPLE_MARK = "no-downsample-mark.json"
MARK_VERSION = 1

# Thanos's reasons for no-compact marks.
REASON_MANUAL = "manual"
REASON_OUT_OF_ORDER = "block-index-out-of-order-chunk"


def deletion_mark(ulid: str, details: str, now: float | None = None) -> bytes:
    return json.dumps({"id": ulid, "version": MARK_VERSION, "details": details,
                       "deletion_time": int(now if now is not None else time.time())}).encode()


def no_compact_mark(ulid: str, reason: str, details: str, now: float | None = None) -> bytes:
    return json.dumps({"id": ulid, "version": MARK_VERSION, "details": details,
                       "no_compact_time": int(now if now is not None else time.time()),
                       "reason": reason}).encode()


def no_downsample_mark(ulid: str, reason: str, details: str,
                       now: float | None = None) -> bytes:
    return json.dumps({"id": ulid, "version": MARK_VERSION, "details": details,
                       "no_downsample_time": int(now if now is not None else time.time()),
                       "reason": reason}).encode()


async def read_mark(bucket: Bucket, ulid: str, name: str) -> dict[str, Any] | None:
    """The parsed mark, ``None`` when absent; an unreadable mark reads as ``{}`` (present)."""
    try:
        raw = await bucket.get(f"{ulid}/{name}")
    except ObjectNotFound:
        return None
    try:
        d = json.loads(raw)
        return d if isinstance(d, dict) else {}
    except ValueError:
        return {}


async def mark_for_deletion(bucket: Bucket, ulid: str, details: str,
                            now: float | None = None) -> bool:
    """Upload ``deletion-mark.json`` unless one exists; True when this call wrote it."""
    return await put_mark(bucket, ulid, DELETION_MARK, details, now)


MARKERS = (DELETION_MARK, NO_COMPACT_MARK, NO_DOWNSAMPLE_MARK)


def manual_mark(ulid: str, marker: str, details: str, now: float | None = None) -> bytes:
    """The body of ``marker`` as an operator's ``tools bucket mark`` writes it (Thanos's
    ``manual`` reason for the no-compact and no-downsample marks)."""
    if marker == DELETION_MARK:
        return deletion_mark(ulid, details, now)
    if marker == NO_COMPACT_MARK:
        return no_compact_mark(ulid, REASON_MANUAL, details, now)
    if marker == NO_DOWNSAMPLE_MARK:
        return no_downsample_mark(ulid, REASON_MANUAL, details, now)
    raise ValueError(f"unknown marker {marker!r}; one of {', '.join(MARKERS)}")


async def put_mark(bucket: Bucket, ulid: str, marker: str, details: str,
                   now: float | None = None) -> bool:
    """Upload ``marker`` for the block unless one exists (as Thanos: an existing mark is kept
    with its time); True when this call wrote it."""
    body = manual_mark(ulid, marker, details, now)
    if await bucket.exists(f"{ulid}/{marker}"):
        return False
    await bucket.upload(f"{ulid}/{marker}", body)
    return True


async def remove_mark(bucket: Bucket, ulid: str, marker: str) -> bool:
    """Delete ``marker`` of the block; True when there was one."""
    if marker not in MARKERS:
        raise ValueError(f"unknown marker {marker!r}; one of {', '.join(MARKERS)}")
    if not await bucket.exists(f"{ulid}/{marker}"):
        return False
    await bucket.delete(f"{ulid}/{marker}")
    return True
