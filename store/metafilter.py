"""Which of a bucket's blocks a store gateway serves, beyond completeness: Thanos's meta
filters for ``--selector.relabel-config`` (label sharding), ``--consistency-delay`` and
``--ignore-deletion-marks-delay``.

Why: several store gateways shard one bucket by the blocks' external labels; a store in
front of an eventually consistent bucket must not load a block uploaded a moment ago; and a
block the compactor marked for deletion must stay served until its replacement is loaded
everywhere, then go before the compactor deletes it.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from common.units import parse_time_or_duration
from receiver.tsdb.block import BlockMeta, ulid_time
from receiver.tsdb.relabel import RelabelConfig, selects_block

log = logging.getLogger(__name__)

# Sources whose blocks are complete when their meta.json appears (Thanos's exemptions
# from the consistency delay: its compactor and bucket repair).
_SETTLED_SOURCES = frozenset({"compactor", "compactor.repair", "bucket.repair"})
LABEL_EXCLUDED, TOO_FRESH = "label-excluded", "too-fresh"  # thanos_blocks_meta_synced states


@dataclass(frozen=True)
class BlockFilters:
    """The library default drops deletion-marked blocks at once; ``promring store`` uses
    Thanos's flag defaults (``consistency_delay_s`` 0, ``ignore_deletion_marks_delay_s``
    24 h)."""
    consistency_delay_s: float = 0.0
    ignore_deletion_marks_delay_s: float = 0.0
    selector: tuple[RelabelConfig, ...] = field(default_factory=tuple)

    def excluded(self, meta: BlockMeta, now_s: float | None = None) -> str | None:
        """Why a complete block is not served yet (a sync state), or None."""
        thanos = meta.thanos or {}
        if not selects_block(meta.ulid, thanos.get("labels"), self.selector):
            return LABEL_EXCLUDED
        if self.consistency_delay_s > 0 and thanos.get("source") not in _SETTLED_SOURCES and \
                _age_s(meta, time.time() if now_s is None else now_s) < self.consistency_delay_s:
            return TOO_FRESH
        return None

    def mark_expired(self, ulid: str, raw_mark: bytes, now_s: float | None = None) -> bool:
        """Whether a block's deletion-mark.json has been there longer than the delay (then
        the block is no longer served). As Thanos, a mark that is not valid JSON (a partial
        upload) is ignored with a warning: the block stays."""
        deletion_time = None
        try:
            mark = json.loads(raw_mark)
            if isinstance(mark, dict):
                deletion_time = float(mark.get("deletion_time") or 0)
        except (ValueError, TypeError):
            pass
        if deletion_time is None:
            log.warning("found partial deletion-mark.json; if it stays, delete it from the "
                        "bucket by hand", extra={"block": ulid})
            return False
        now = time.time() if now_s is None else now_s
        return now - deletion_time > self.ignore_deletion_marks_delay_s


def _age_s(meta: BlockMeta, now_s: float) -> float:
    """Since the upload Thanos's shipper stamps in meta.json, else since the ULID's time."""
    upload = (meta.thanos or {}).get("upload_time")
    if isinstance(upload, str) and "T" in upload and not upload.startswith("0001-01-01"):
        try:
            return now_s - parse_time_or_duration(upload)() / 1000
        except ValueError:
            pass
    return now_s - ulid_time(meta.ulid) / 1000


DUPLICATE = "duplicate"


def duplicates(metas: Iterable[BlockMeta]) -> set[str]:
    """Thanos's deduplicate filter: within one compaction group (resolution and external
    labels), a block whose compaction sources another block's sources contain is a
    duplicate (the compactor's output replaces its inputs at once, while the inputs stay
    in the bucket until their deletion marks age out). Most sources first, then by ULID."""
    groups: dict[tuple, list[BlockMeta]] = {}
    for m in metas:
        t = m.thanos or {}
        key = ((t.get("downsample") or {}).get("resolution", 0),
               tuple(sorted((t.get("labels") or {}).items())))
        groups.setdefault(key, []).append(m)
    out: set[str] = set()
    for group in groups.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda m: (-len(m.sources), m.ulid))
        covering: list[frozenset[str]] = []
        for m in group:
            sources = frozenset(m.sources)
            if any(sources <= parent for parent in covering):
                out.add(m.ulid)
            else:
                covering.append(sources)
    return out
