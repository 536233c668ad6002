"""What the compactor knows about the bucket: block metas, marks, partial uploads, groups.

A block is a top-level ``<ULID>/`` with a readable ``meta.json``; one without is a partial
upload (a shipper still uploading, a crashed upload, or a deletion in progress). Blocks are
grouped like Thanos: by external labels (minus the offline-dedup replica labels) and
downsampling resolution; only blocks of one group are ever merged.

``covered`` implements the crash-recovery rule (Thanos's deduplicate filter + garbage
collection): a block whose ``compaction.sources`` are all included in another block of the
same resolution holds nothing that block lacks, so it is marked for deletion. That is how a
rerun finishes a compaction whose result was uploaded before its sources were marked.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from objstore import Bucket, ObjectNotFound
from receiver.tsdb.block import META_FILENAME, BlockMeta, parse_ulid
from receiver.tsdb.labels import Labels

from .marks import DELETION_MARK, NO_COMPACT_MARK, NO_DOWNSAMPLE_MARK

GroupKey = tuple[Labels, int]  # (external labels without replica labels, resolution)


def is_ulid(s: str) -> bool:
    try:
        parse_ulid(s)
        return True
    except ValueError:
        return False


@dataclass
class BlockInfo:
    meta: BlockMeta
    files: list[str] = field(default_factory=list)
    deletion_mark: dict[str, Any] | None = None
    no_compact: bool = False
    no_downsample: bool = False

    @property
    def ulid(self) -> str:
        return self.meta.ulid

    @property
    def min_time(self) -> int:
        return self.meta.min_time

    @property
    def max_time(self) -> int:
        return self.meta.max_time

    @property
    def labels(self) -> Labels:
        lbls = (self.meta.thanos or {}).get("labels") or {}
        return tuple(sorted((str(k), str(v)) for k, v in lbls.items()))

    @property
    def resolution(self) -> int:
        return int(((self.meta.thanos or {}).get("downsample") or {}).get("resolution", 0))

    @property
    def sources(self) -> frozenset[str]:
        return frozenset(self.meta.sources or [self.meta.ulid])

    def group_key(self, replica_labels: frozenset[str] = frozenset()) -> GroupKey:
        return (tuple(p for p in self.labels if p[0] not in replica_labels), self.resolution)


@dataclass
class BucketState:
    blocks: dict[str, BlockInfo] = field(default_factory=dict)  # includes deletion-marked
    partial: dict[str, list[str]] = field(default_factory=dict)  # ulid -> objects (no meta)
    corrupted: dict[str, str] = field(default_factory=dict)  # ulid -> why meta is unreadable

    def live(self) -> list[BlockInfo]:
        """Blocks not marked for deletion, by (min_time, ulid)."""
        return sorted((b for b in self.blocks.values() if b.deletion_mark is None),
                      key=lambda b: (b.min_time, b.ulid))

    def groups(self, replica_labels: frozenset[str] = frozenset()
               ) -> dict[GroupKey, list[BlockInfo]]:
        out: dict[GroupKey, list[BlockInfo]] = {}
        for b in self.live():
            out.setdefault(b.group_key(replica_labels), []).append(b)
        return out

    def covered(self) -> dict[str, str]:
        """Live blocks whose sources another live block of the same resolution includes:
        ulid -> ulid of the covering block. Of blocks with identical sources the newest
        ULID stays."""
        out: dict[str, str] = {}
        by_res: dict[int, list[BlockInfo]] = {}
        for b in self.live():
            by_res.setdefault(b.resolution, []).append(b)
        for blocks in by_res.values():
            holders: dict[str, list[BlockInfo]] = {}  # source ulid -> blocks holding it
            for b in blocks:
                for s in b.sources:
                    holders.setdefault(s, []).append(b)
            for b in blocks:
                probe = min(b.sources)
                for c in holders.get(probe, ()):
                    if c is b:
                        continue
                    if b.sources <= c.sources and (b.sources != c.sources or c.ulid > b.ulid):
                        out[b.ulid] = c.ulid
                        break
        return out


async def _inspect(bucket: Bucket, ulid: str, limit: asyncio.Semaphore
                   ) -> tuple[str, BlockInfo | list[str] | str]:
    async with limit:
        files = await bucket.iter(ulid, recursive=True)
        names = {f[len(ulid) + 1:] for f in files}
        if META_FILENAME not in names:
            return "partial", files
        try:
            raw = await bucket.get(f"{ulid}/{META_FILENAME}")
            meta = BlockMeta.from_dict(json.loads(raw))
            if meta.ulid != ulid:
                raise ValueError(f"meta.json names block {meta.ulid}")
        except ObjectNotFound:
            return "partial", files
        except (ValueError, KeyError, TypeError) as e:
            return "corrupted", f"meta.json: {e}"
        info = BlockInfo(meta, files=files, no_compact=NO_COMPACT_MARK in names,
                         no_downsample=NO_DOWNSAMPLE_MARK in names)
        if DELETION_MARK in names:
            try:
                info.deletion_mark = json.loads(await bucket.get(f"{ulid}/{DELETION_MARK}"))
            except (ObjectNotFound, ValueError):
                info.deletion_mark = {}
            if not isinstance(info.deletion_mark, dict):
                info.deletion_mark = {}
        return "block", info


async def sync_state(bucket: Bucket, concurrency: int = 20) -> BucketState:
    """List the bucket and read every block's meta and marks."""
    entries = await bucket.iter("")
    ulids = [e[:-1] for e in entries if e.endswith("/") and is_ulid(e[:-1])]
    limit = asyncio.Semaphore(concurrency)
    results = await asyncio.gather(*(_inspect(bucket, u, limit) for u in ulids))
    st = BucketState()
    for u, (kind, val) in zip(ulids, results):
        if kind == "block":
            st.blocks[u] = val  # type: ignore[assignment]
        elif kind == "partial":
            st.partial[u] = val  # type: ignore[assignment]
        else:
            st.corrupted[u] = val  # type: ignore[assignment]
    return st
