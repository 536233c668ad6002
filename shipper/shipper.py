"""The shipper: upload each new local block (chunks, then index, then meta.json last).

A block without ``meta.json`` in the bucket is a partial upload that readers skip, so uploading
meta.json last makes each block appear atomically. What was shipped is remembered in
``<tsdb dir>/thanos.shipper.json`` (Thanos's file and format), so a restart never uploads a
block twice; a bucket outage only delays uploads to the next sync.

That record is not trusted blindly: a bucket can lose a block after it was shipped (an outage
that ends with an empty bucket, a wrong lifecycle rule). Each shipped block still on local
disk is checked in the bucket (one ``meta.json`` existence probe) soon after the process
starts and then every ``verify_interval_s``, a few per sync; one that is gone is uploaded
again. Local
retention asks ``confirm_uploaded``, which checks right then that the bucket holds every file
of the block at its local size, so nothing is deleted locally that the bucket does not hold
(an incomplete copy is uploaded again).
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from objstore import Bucket, ObjectNotFound

log = logging.getLogger(__name__)

STATE_FILE = "thanos.shipper.json"


@dataclass
class ShipperState:
    version: int = 1
    uploaded: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> "ShipperState":
        try:
            d = json.loads(path.read_text())
            return cls(version=int(d.get("version", 1)), uploaded=list(d.get("uploaded") or []))
        except FileNotFoundError:
            return cls()
        except (ValueError, TypeError) as e:  # a torn or foreign file: re-check the bucket
            log.warning("unreadable shipper state, starting over", extra={"path": str(path), "err": str(e)})
            return cls()

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": self.version, "uploaded": sorted(self.uploaded)}, indent=1))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)


@dataclass
class ShipperOptions:
    # How often a shipped block that is still local is checked to be in the bucket (one
    # existence probe per block), and at most how many are checked per sync (the longest
    # unchecked first: after a start, every block once, a few per round).
    verify_interval_s: float = 3600.0
    verify_per_sync: int = 8
    # A block written by someone else (Prometheus, next to a sidecar) gets its meta.json
    # rewritten on the way to the bucket (the thanos section); the local file stays as it is.
    meta_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Only level-1 blocks are shipped unless this is set (Thanos's --shipper.upload-compacted):
    # a compacted block repeats data already shipped in its sources.
    upload_compacted: bool = True
    # Thanos ignores blocks without samples.
    skip_empty: bool = False


class ShipperMetrics:
    """Thanos's shipper counters (per tenant, as Thanos receive wraps them), plus re-uploads."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.uploads = Counter("thanos_shipper_uploads", "Blocks uploaded.", ["tenant"],
                               registry=registry)
        self.upload_failures = Counter("thanos_shipper_upload_failures",
                                       "Block uploads that failed.", ["tenant"],
                                       registry=registry)
        self.reuploads = Counter("promring_shipper_reuploads",
                                 "Blocks recorded as shipped but missing from the bucket, "
                                 "uploaded again.", ["tenant"], registry=registry)
        self.last_success = Gauge("thanos_shipper_last_successful_upload_time",
                                  "Unix time of the last successful block upload.", ["tenant"],
                                  registry=registry)


def block_dirs(tsdb_dir: Path) -> list[Path]:
    """Finished local blocks (a ULID directory with meta.json), oldest first."""
    if not tsdb_dir.is_dir():
        return []
    return sorted(p for p in tsdb_dir.iterdir()
                  if p.is_dir() and len(p.name) == 26 and (p / "meta.json").is_file())


class Shipper:
    def __init__(self, bucket: Bucket, tsdb_dir: Path, *, opts: ShipperOptions | None = None,
                 metrics: ShipperMetrics | None = None, tenant: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bucket = bucket
        self.dir = tsdb_dir
        self.opts = opts or ShipperOptions()
        self.state_path = tsdb_dir / STATE_FILE
        self.state = ShipperState.load(self.state_path)
        self._m = metrics
        self._tenant = tenant
        self._clock = clock
        self._verified: dict[str, float] = {}  # ulid -> when last seen in the bucket
        self._incomplete: set[str] = set()  # shipped, but found incomplete in the bucket
        self.uploads = 0
        self.failures = 0
        self.reuploads = 0

    def is_uploaded(self, ulid: str) -> bool:
        """Recorded as shipped (the local record only; see ``confirm_uploaded``)."""
        return ulid in self.state.uploaded

    async def confirm_uploaded(self, ulid: str) -> bool:
        """Recorded as shipped, and the bucket holds every file of it now at its local size
        (one request per file: this runs once per block, before deleting the local copy). A
        block found incomplete is uploaded again by the next sync. Bucket errors confirm
        nothing."""
        if ulid not in self.state.uploaded:
            return False
        block = self.dir / ulid
        try:
            held = await self._bucket_holds(block)
        except Exception as e:  # noqa: BLE001 -- an unreachable bucket confirms nothing
            log.warning("cannot confirm block in bucket; keeping it locally",
                        extra={"ulid": ulid, "err": str(e)})
            return False
        if held:
            self._verified[ulid] = self._clock()
        else:
            log.warning("block recorded as shipped is incomplete in the bucket; keeping it "
                        "locally and uploading it again", extra={"ulid": ulid})
            self._verified.pop(ulid, None)
            self._incomplete.add(ulid)
        return held

    async def _bucket_holds(self, block: Path) -> bool:
        files = [*sorted((block / "chunks").iterdir()), block / "index", block / "meta.json"]
        for f in files:
            rel = f.relative_to(block).as_posix()
            try:
                size = (await self.bucket.attributes(f"{block.name}/{rel}")).size
            except ObjectNotFound:
                return False
            if size != f.stat().st_size and not (rel == "meta.json" and self.opts.meta_transform):
                return False
        return True

    def _inc(self, metric: str) -> None:
        if self._m is not None:
            getattr(self._m, metric).labels(self._tenant).inc()

    async def _upload_block(self, block: Path) -> None:
        ulid = block.name
        for f in sorted((block / "chunks").iterdir()):
            await self.bucket.upload(f"{ulid}/chunks/{f.name}", f)
        await self.bucket.upload(f"{ulid}/index", block / "index")
        transform = self.opts.meta_transform
        if transform is None:
            await self.bucket.upload(f"{ulid}/meta.json", block / "meta.json")
        else:
            meta = transform(json.loads((block / "meta.json").read_text()))
            await self.bucket.upload(f"{ulid}/meta.json", json.dumps(meta, indent="\t").encode())

    def _wanted(self, block: Path) -> bool:
        """Whether a block not shipped yet is to be shipped at all (level and emptiness)."""
        opts = self.opts
        if opts.upload_compacted and not opts.skip_empty:
            return True
        try:
            meta = json.loads((block / "meta.json").read_text())
            level = int(meta.get("compaction", {}).get("level", 1))
            samples = int(meta.get("stats", {}).get("numSamples", 1))
        except (OSError, ValueError, TypeError, AttributeError):
            return False  # unreadable now (being written?): look again next sync
        return (opts.upload_compacted or level <= 1) and not (opts.skip_empty and samples == 0)

    def _due(self, ulid: str, now: float) -> bool:
        seen = self._verified.get(ulid)
        return seen is None or now - seen >= self.opts.verify_interval_s

    async def sync(self) -> int:
        """Upload every local block not shipped yet, and again any shipped one the bucket
        lost (checked when due); returns how many were uploaded now."""
        shipped = 0
        changed = False
        now = self._clock()
        blocks = block_dirs(self.dir)
        recorded_set = set(self.state.uploaded)
        due = sorted((b.name for b in blocks if b.name in recorded_set and self._due(b.name, now)),
                     key=lambda u: self._verified.get(u, float("-inf")))
        check = set(due[:self.opts.verify_per_sync]) | self._incomplete
        for block in blocks:
            ulid = block.name
            recorded = ulid in recorded_set
            if recorded and ulid not in check:
                continue
            if not recorded and not self._wanted(block):
                continue
            try:
                if (ulid in self._incomplete
                        or not await self.bucket.exists(f"{ulid}/meta.json")):
                    if recorded:
                        log.warning("block recorded as shipped is missing from the bucket; "
                                    "uploading it again", extra={"ulid": ulid, "dir": str(self.dir)})
                    await self._upload_block(block)
                    shipped += 1
                    self.uploads += 1
                    self._inc("uploads")
                    if self._m is not None:
                        self._m.last_success.labels(self._tenant).set_to_current_time()
                    if recorded:
                        self.reuploads += 1
                        self._inc("reuploads")
                    log.info("shipped block", extra={"ulid": ulid, "dir": str(self.dir)})
            except Exception as e:  # the bucket is down: keep the block, try again next sync
                self.failures += 1
                self._inc("upload_failures")
                log.warning("block upload failed; will retry", extra={"ulid": ulid, "err": str(e)})
                break
            self._verified[ulid] = now
            self._incomplete.discard(ulid)
            if not recorded:
                self.state.uploaded.append(ulid)
                changed = True
        local = {b.name for b in block_dirs(self.dir)}
        if any(u not in local for u in self.state.uploaded):
            self.state.uploaded = [u for u in self.state.uploaded if u in local]
            changed = True
        for u in [u for u in self._verified if u not in local]:
            del self._verified[u]
        self._incomplete &= local
        if changed:
            self.state.save(self.state_path)
        return shipped
