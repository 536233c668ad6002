"""``tools bucket verify``: report overlapping and broken blocks without changing anything.

Checks (Thanos's verifier issues, as far as they apply): unreadable ``meta.json``; partial
uploads; blocks of one group (external labels + resolution) whose time ranges overlap;
files a meta lists but the bucket lacks. With ``deep`` every block is downloaded and every
chunk read (CRC-checked) and checked to be in order and inside the block's range.
"""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from objstore import Bucket

from .planner import overlapping
from .state import BlockInfo, sync_state


@dataclass
class Issue:
    kind: str  # overlap | corrupt-meta | partial-upload | missing-file | broken-block
    blocks: list[str]
    message: str
    labels: dict[str, str] = field(default_factory=dict)
    resolution: int = 0


def _overlaps(blocks: list[BlockInfo]) -> list[list[BlockInfo]]:
    found = []
    rest = sorted(blocks, key=lambda b: (b.min_time, b.ulid))
    while rest:
        ov = overlapping(rest)
        if not ov:
            break
        found.append(ov)
        last = ov[-1]
        rest = rest[rest.index(last) + 1:] if last in rest else []
    return found


def _check_block_dir(d: Path) -> str | None:
    from receiver.tsdb.block import BlockReader  # heavy import only for deep checks

    try:
        with BlockReader(d) as r:
            lo, hi = r.meta.min_time, r.meta.max_time
            prev = None
            for lbls, chunks in r.iter_series():
                if prev is not None and lbls <= prev:
                    return f"series out of order at {dict(lbls)}"
                prev = lbls
                for i, (a, z, _, _) in enumerate(chunks):
                    if a > z or a < lo or z >= hi:
                        return f"series {dict(lbls)}: chunk [{a},{z}] outside [{lo},{hi})"
                    if i and chunks[i - 1][1] >= a:
                        return f"series {dict(lbls)}: overlapping chunks"
    except Exception as e:  # noqa: BLE001 -- any read failure means a broken block
        return f"{type(e).__name__}: {e}"
    return None


async def verify(bucket: Bucket, *, deep: bool = False) -> list[Issue]:
    """All issues found in the bucket; deletion-marked blocks are ignored."""
    st = await sync_state(bucket)
    issues: list[Issue] = []
    for u, why in sorted(st.corrupted.items()):
        issues.append(Issue("corrupt-meta", [u], why))
    for u in sorted(st.partial):
        if not any(f.endswith("/deletion-mark.json") for f in st.partial[u]):
            issues.append(Issue("partial-upload", [u], "block directory without meta.json"))
    live = st.live()
    groups: dict[tuple, list[BlockInfo]] = {}
    for b in live:
        groups.setdefault(b.group_key(), []).append(b)
    for (lbls, res), blocks in sorted(groups.items()):
        for ov in _overlaps(blocks):
            issues.append(Issue(
                "overlap", [b.ulid for b in ov],
                "overlapping blocks: " + ", ".join(f"{b.ulid}[{b.min_time},{b.max_time})"
                                                   for b in ov),
                dict(lbls), res))
    for b in live:
        present = set(b.files)
        listed = [f.get("rel_path") for f in (b.meta.thanos or {}).get("files") or []]
        need = {f"{b.ulid}/{p}" for p in listed if p} | {f"{b.ulid}/index"}
        missing = sorted(need - present)
        if not any(f.startswith(f"{b.ulid}/chunks/") for f in present) and b.meta.num_chunks:
            missing.append(f"{b.ulid}/chunks/")
        if missing:
            issues.append(Issue("missing-file", [b.ulid], "missing " + ", ".join(missing),
                                dict(b.labels), b.resolution))
    if deep:
        tmp = Path(tempfile.mkdtemp(prefix="verify-"))
        try:
            for b in live:
                d = tmp / b.ulid
                (d / "chunks").mkdir(parents=True)
                for f in b.files:
                    rel = f[len(b.ulid) + 1:]
                    if rel == "index" or rel == "meta.json" or rel.startswith("chunks/"):
                        (d / rel).write_bytes(await bucket.get(f))
                why = await asyncio.to_thread(_check_block_dir, d)
                if why:
                    issues.append(Issue("broken-block", [b.ulid], why, dict(b.labels),
                                        b.resolution))
                shutil.rmtree(d, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return issues
