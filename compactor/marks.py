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
    if await bucket.exists(f"{ulid}/{DELETION_MARK}"):
        return False
    await bucket.upload(f"{ulid}/{DELETION_MARK}", deletion_mark(ulid, details, now))
    return True
