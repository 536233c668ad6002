"""``promring tools bucket mark|retention|upload-blocks``: Thanos's bucket maintenance commands.

Each works on the bucket directly, as Thanos's tools do: ``mark`` puts or removes a block's
marker file, ``retention`` marks blocks past the compactor's retention for deletion (the
compactor deletes them after ``--delete-delay``), ``upload-blocks`` migrates a Prometheus
data directory into the bucket. Errors an operator can make (bad ULID, unknown block,
missing labels) are ``ValueError``s with a one-line message, raised before anything changes.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from compactor.marks import put_mark, remove_mark
from objstore import Bucket, bucket_from_config
from receiver.tsdb.block import (CHUNKS_DIRNAME, INDEX_FILENAME, META_FILENAME, parse_ulid,
                                 thanos_meta_section)
from shipper.shipper import STATE_FILE, ShipperState, block_dirs

log = logging.getLogger("promring.tools")

SOURCE_UPLOAD = "bucket.upload"  # Thanos's metadata.BucketUploadSource


def parse_block_ids(ids: list[str]) -> list[str]:
    """``--id`` values as ULIDs (upper case), or ValueError naming the bad one."""
    out = []
    for i in ids:
        try:
            parse_ulid(i.upper())
        except ValueError:
            raise ValueError(f"--id: {i!r} is not a valid block ULID") from None
        out.append(i.upper())
    return out


async def with_bucket(objstore_yaml: str, work):
    """``await work(bucket)`` with a bucket that is closed afterwards."""
    bucket = bucket_from_config(objstore_yaml)
    try:
        return await work(bucket)
    finally:
        await bucket.close()


async def require_blocks(bucket: Bucket, ulids: list[str]) -> None:
    """ValueError unless every block exists (a typo in an ID must not write a stray mark)."""
    missing = [u for u in ulids if not await bucket.exists(f"{u}/{META_FILENAME}")]
    if missing:
        raise ValueError(f"--id: no block {', '.join(missing)} in the bucket (no {META_FILENAME})")


def run_mark(objstore_yaml: str, ids: list[str], marker: str, details: str,
             remove: bool) -> list[str]:
    """Put (or with ``remove`` delete) ``marker`` on every block; lines saying what changed."""
    ulids = parse_block_ids(ids)
    if not remove and not details:
        raise ValueError("required flag --details not provided")

    async def go(bucket: Bucket) -> list[str]:
        await require_blocks(bucket, ulids)
        out = []
        for u in ulids:
            if remove:
                done = await remove_mark(bucket, u, marker)
                out.append(f"{u}: {marker} " + ("removed" if done else "was not present"))
            else:
                done = await put_mark(bucket, u, marker, details)
                out.append(f"{u}: {marker} " + ("written" if done else "already present, kept"))
        return out
    return asyncio.run(with_bucket(objstore_yaml, go))


def run_retention(a) -> int:
    """The compactor's retention pass alone over the blocks ``--selector.relabel-config``
    keeps (all blocks without one); returns how many blocks were marked."""
    from compactor import Compactor, cli_config
    cfg = cli_config(a)
    cfg.http_address = ""
    cfg.sync_concurrency = a.block_sync_concurrency

    async def go() -> int:
        c = Compactor(cfg)
        try:
            return await c.retention_pass()
        finally:
            await c.close()
    return asyncio.run(go())


@dataclass
class UploadOptions:
    path: Path
    labels: dict[str, str]
    upload_compacted: bool = False
    concurrency: int = 5
    hash_func: str = ""


def file_hash(path: Path, func: str) -> dict | None:
    """Thanos's optional per-file hash (``--hash-func=SHA256``) in the meta's files list."""
    if func != "SHA256":
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for buf in iter(lambda: f.read(1 << 20), b""):
            h.update(buf)
    return {"func": "SHA256", "value": h.hexdigest()}


def bucket_meta(block: Path, labels: dict[str, str], source: str, hash_func: str = "",
                extra_thanos: dict | None = None) -> bytes:
    """The block's meta.json with Thanos's section (external labels, source, file list) as it
    goes into the bucket; the local meta.json is left as it is."""
    meta = json.loads((block / META_FILENAME).read_text())
    given = dict(meta.get("thanos") or {})
    given.pop("files", None)
    given.update({"labels": dict(labels), "source": source}, **(extra_thanos or {}))
    given.setdefault("downsample", {"resolution": 0})
    # As Thanos's uploads: the chunk segments (a store need not list them) and the upload time
    # (Thanos's consistency delay counts from it rather than from an old block's ULID).
    given["segment_files"] = sorted(p.name for p in (block / CHUNKS_DIRNAME).iterdir())
    given["upload_time"] = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    section = thanos_meta_section(given, block)
    if hash_func:
        for f in section["files"]:
            if f["rel_path"] != META_FILENAME:
                f["hash"] = file_hash(block / f["rel_path"], hash_func)
    meta["thanos"] = section
    return (json.dumps(meta, indent="\t") + "\n").encode()


async def upload_block(bucket: Bucket, block: Path, meta: bytes, concurrency: int = 5) -> None:
    """Chunks (``concurrency`` at a time), then the index, then meta.json last: until meta.json
    is there, readers treat the upload as partial and skip it."""
    ulid = block.name
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(f: Path) -> None:
        async with sem:
            await bucket.upload(f"{ulid}/{CHUNKS_DIRNAME}/{f.name}", f)
    await asyncio.gather(*(one(f) for f in sorted((block / CHUNKS_DIRNAME).iterdir())))
    await bucket.upload(f"{ulid}/{INDEX_FILENAME}", block / INDEX_FILENAME)
    await bucket.upload(f"{ulid}/{META_FILENAME}", meta)


def _skip_reason(block: Path, upload_compacted: bool) -> str:
    meta = json.loads((block / META_FILENAME).read_text())
    if int((meta.get("compaction") or {}).get("level", 1)) > 1 and not upload_compacted:
        return "compacted block (use --shipper.upload-compacted)"
    if not int((meta.get("stats") or {}).get("numSamples", 0)):
        return "empty block"
    if int((meta.get("stats") or {}).get("numTombstones", 0)):
        # Only chunks and index are uploaded: the deleted series would come back in the bucket.
        return ("it has tombstones (series deleted through Prometheus's admin API); run "
                "POST /api/v1/admin/tsdb/clean_tombstones on that Prometheus, then upload again")
    return ""


def run_upload_blocks(objstore_yaml: str, opts: UploadOptions) -> list[str]:
    """Upload every block of a Prometheus (or Thanos sidecar) data dir that the bucket does not
    have, as Thanos's ``upload-blocks``: what was uploaded is remembered in the data dir's
    ``thanos.shipper.json``, so running it again uploads only new blocks."""
    if not opts.labels:
        raise ValueError("no external labels configured, uniquely identifying external labels "
                         "must be configured (--label name=\"value\")")
    if not opts.path.is_dir():
        raise ValueError(f"--path: {str(opts.path)!r} is not a readable directory")
    state_path = opts.path / STATE_FILE
    state = ShipperState.load(state_path)

    async def go(bucket: Bucket) -> list[str]:
        out = []
        for block in block_dirs(opts.path):
            if block.name in state.uploaded:
                continue
            why = _skip_reason(block, opts.upload_compacted)
            if why:
                out.append(f"{block.name}: skipped, {why}")
                continue
            if not await bucket.exists(f"{block.name}/{META_FILENAME}"):
                meta = bucket_meta(block, opts.labels, SOURCE_UPLOAD, opts.hash_func)
                await upload_block(bucket, block, meta, opts.concurrency)
                out.append(f"{block.name}: uploaded")
            else:
                out.append(f"{block.name}: already in the bucket")
            state.uploaded.append(block.name)
            state.save(state_path)
        return out
    return asyncio.run(with_bucket(objstore_yaml, go))
