"""The shipper: upload each new local block (chunks, then index, then meta.json last).

A block without ``meta.json`` in the bucket is a partial upload that readers skip, so uploading
meta.json last makes each block appear atomically. What was shipped is remembered in
``<tsdb dir>/thanos.shipper.json`` (Thanos's file and format), so a restart never uploads a
block twice; a bucket outage only delays uploads to the next sync.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from objstore import Bucket

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


def block_dirs(tsdb_dir: Path) -> list[Path]:
    """Finished local blocks (a ULID directory with meta.json), oldest first."""
    if not tsdb_dir.is_dir():
        return []
    return sorted(p for p in tsdb_dir.iterdir()
                  if p.is_dir() and len(p.name) == 26 and (p / "meta.json").is_file())


class Shipper:
    def __init__(self, bucket: Bucket, tsdb_dir: Path) -> None:
        self.bucket = bucket
        self.dir = tsdb_dir
        self.state_path = tsdb_dir / STATE_FILE
        self.state = ShipperState.load(self.state_path)
        self.uploads = 0
        self.failures = 0

    def is_uploaded(self, ulid: str) -> bool:
        return ulid in self.state.uploaded

    async def _upload_block(self, block: Path) -> None:
        ulid = block.name
        for f in sorted((block / "chunks").iterdir()):
            await self.bucket.upload(f"{ulid}/chunks/{f.name}", f)
        await self.bucket.upload(f"{ulid}/index", block / "index")
        await self.bucket.upload(f"{ulid}/meta.json", block / "meta.json")

    async def sync(self) -> int:
        """Upload every local block not shipped yet; returns how many were uploaded now."""
        shipped = 0
        changed = False
        for block in block_dirs(self.dir):
            ulid = block.name
            if ulid in self.state.uploaded:
                continue
            try:
                if not await self.bucket.exists(f"{ulid}/meta.json"):
                    await self._upload_block(block)
                    shipped += 1
                    self.uploads += 1
                    log.info("shipped block", extra={"ulid": ulid, "dir": str(self.dir)})
            except Exception as e:  # the bucket is down: keep the block, try again next sync
                self.failures += 1
                log.warning("block upload failed; will retry", extra={"ulid": ulid, "err": str(e)})
                break
            self.state.uploaded.append(ulid)
            changed = True
        local = {b.name for b in block_dirs(self.dir)}
        if any(u not in local for u in self.state.uploaded):
            self.state.uploaded = [u for u in self.state.uploaded if u in local]
            changed = True
        if changed:
            self.state.save(self.state_path)
        return shipped
