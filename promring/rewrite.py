"""``promring tools bucket rewrite``: delete series (or time ranges of series) from blocks.

As Thanos's rewrite, for deletion requests: each ``--id`` block is downloaded, written again
without what the deletion requests select, and uploaded as a new block (chunks, index, then
meta.json last) whose ``thanos.rewrites`` records the old sources and the deletions applied.
``--delete-blocks`` then marks the old block for deletion, so the store gateway drops it
while the compactor deletes it after its delete delay. ``--dry-run`` (the default) only
prints what would be deleted.

Deletion request format (Thanos's ``[]metadata.DeletionRequest``, YAML)::

    - matchers: '{__name__="secret_metric", job="x"}'
      intervals: [{mint: 0, maxt: 1700000000000}]   # optional: whole series when absent
      request_id: ticket-42                          # optional

As in Thanos, a matcher selects only series that have its label (a matcher on an absent
label never matches). Series are deleted whole or re-encoded without the samples inside
the intervals (inclusive); untouched series keep their chunks byte for byte.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

from compactor.marks import mark_for_deletion
from objstore import Bucket
from receiver.tsdb.aggr import ENCODING_AGGR, count_samples
from receiver.tsdb.block import (CHUNKS_DIRNAME, INDEX_FILENAME, META_FILENAME, BlockReader,
                                 cut_chunks, new_ulid, read_meta, write_block)
from receiver.tsdb.chunkenc import ENCODING_XOR, decode
from receiver.tsdb.relabel import SERIES_ACTIONS, RelabelConfig
from receiver.tsdb.relabel import parse_relabel_configs as parse_relabel_configs_of
from receiver.tsdb.histogram import ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, EncodedChunk
from receiver.tsdb.labels import Labels, Matcher, MatchType

from .bucketops import bucket_meta, parse_block_ids, require_blocks, upload_block, with_bucket

log = logging.getLogger("promring.tools")

SOURCE_REWRITE = "bucket.rewrite"  # Thanos's metadata.BucketRewriteSource
_HIST = frozenset((ENCODING_HISTOGRAM, ENCODING_FLOAT_HISTOGRAM))


@dataclass
class DeletionRequest:
    selector: str
    matchers: list[Matcher]
    intervals: list[tuple[int, int]] = field(default_factory=list)
    request_id: str = ""

    def selected(self, index, refs: np.ndarray) -> np.ndarray:
        """Mask over ``refs`` (series ids of ``index``) of the series this request selects,
        from the index's postings: every matcher matches and, as in Thanos, its label is
        present (a matcher on an absent label never matches)."""
        present = [Matcher(MatchType.NEQ, n, "") for n in sorted({m.name for m in self.matchers})]
        return np.isin(refs, index.select(list(self.matchers) + present), assume_unique=True)

    def to_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {"matchers": self.selector}
        if self.intervals:
            out["intervals"] = [{"mint": a, "maxt": z} for a, z in self.intervals]
        if self.request_id:
            out["request_id"] = self.request_id
        return out


def parse_deletion_requests(text: str, flag: str = "--rewrite.to-delete-config"
                            ) -> list[DeletionRequest]:
    """Thanos's deletion request YAML; ValueError naming the flag and the entry otherwise."""
    from querier.params import BadParam, parse_matchers
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{flag}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, list) or not doc:
        raise ValueError(f"{flag}: expected a non-empty YAML list of deletion requests "
                         "({matchers: '{...}', intervals: [{mint, maxt}]})")
    out = []
    for i, d in enumerate(doc):
        where = f"{flag}: entry {i}"
        if not isinstance(d, dict) or not isinstance(d.get("matchers"), str):
            raise ValueError(f"{where}: needs 'matchers', a series selector string")
        unknown = set(d) - {"matchers", "intervals", "request_id"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        try:
            matchers = parse_matchers(d["matchers"])
        except BadParam as e:
            why = str(e).removeprefix('invalid parameter "match[]": ')
            raise ValueError(f"{where}: parse metric selector {d['matchers']}: {why}") from None
        intervals = []
        for iv in d.get("intervals") or []:
            if not isinstance(iv, dict) or not all(isinstance(iv.get(k), int) and
                                                   not isinstance(iv.get(k), bool)
                                                   for k in ("mint", "maxt")):
                raise ValueError(f"{where}: each interval needs integer 'mint' and 'maxt' "
                                 "(milliseconds)")
            if not all(-(1 << 63) <= iv[k] < 1 << 63 for k in ("mint", "maxt")):
                raise ValueError(f"{where}: interval bounds must be 64-bit millisecond timestamps")
            if iv["mint"] > iv["maxt"]:
                raise ValueError(f"{where}: interval mint {iv['mint']} > maxt {iv['maxt']}")
            intervals.append((iv["mint"], iv["maxt"]))
        out.append(DeletionRequest(d["matchers"], matchers, intervals, str(d.get("request_id") or "")))
    return out


def parse_relabel_configs(text: str, flag: str = "--rewrite.to-relabel-config",
                          supported: frozenset[str] = SERIES_ACTIONS) -> list[RelabelConfig]:
    """Relabel configs (receiver.tsdb.relabel); the rewrite keeps or drops series whole, so
    only ``keep`` and ``drop`` by default."""
    return parse_relabel_configs_of(text, flag, supported)


def labels_text(lbls: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in lbls) + "}"


def _deletions(index, refs: np.ndarray, reqs: list[DeletionRequest]
               ) -> tuple[np.ndarray, dict[int, list[tuple[int, int]]]]:
    """(mask over ``refs`` of series deleted whole, position -> intervals to cut out) for
    the series every request selects."""
    whole = np.zeros(len(refs), dtype=bool)
    cuts: dict[int, list[tuple[int, int]]] = {}
    for r in reqs:
        hit = r.selected(index, refs)
        if not r.intervals:
            whole |= hit
            continue
        for i in np.flatnonzero(hit).tolist():
            cuts.setdefault(i, []).extend(r.intervals)
    return whole, cuts


def _cut_intervals(lbls: Labels, chunks: list[tuple[int, int, int, bytes]],
                   intervals: list[tuple[int, int]], mint: int, maxt: int
                   ) -> tuple[list, int]:
    """The series' chunks without samples inside ``intervals``; (chunks, samples removed)."""
    touched = [c for c in chunks if any(c[0] <= z and a <= c[1] for a, z in intervals)]
    if not touched:
        return [_stored(c) for c in chunks], 0
    if any(c[2] != ENCODING_XOR for c in chunks):
        raise ValueError(f"series {labels_text(lbls)}: deleting time ranges of native histogram "
                         "or downsampled series is not supported; delete the whole series "
                         "(no intervals)")
    pairs = [decode(c[3]) for c in chunks]
    ts = np.concatenate([p[0] for p in pairs])
    vs = np.concatenate([p[1] for p in pairs])
    keep = np.ones(len(ts), dtype=bool)
    for a, z in intervals:
        keep &= ~((ts >= a) & (ts <= z))
    return cut_chunks(ts[keep], vs[keep], mint, maxt + 1), int((~keep).sum())


def _stored(c: tuple[int, int, int, bytes]):
    a, z, enc, data = c
    return (a, z, EncodedChunk(data, enc) if enc in _HIST else data)


@dataclass
class RewriteStats:
    series_deleted: int = 0
    series_changed: int = 0
    samples_deleted: int = 0


def rewrite_block(src: Path, out_dir: Path, reqs: list[DeletionRequest], new_id: str,
                  changelog: TextIO, *, dry_run: bool,
                  relabels: list[RelabelConfig] | None = None) -> RewriteStats:
    """Write ``src`` without what ``reqs`` select and what ``relabels`` drop as block
    ``new_id`` under ``out_dir`` (not in a dry run); every deletion is logged to
    ``changelog`` in Thanos's change-log lines."""
    stats = RewriteStats()
    with BlockReader(src) as r:
        meta = r.meta
        resolution = int(((meta.thanos or {}).get("downsample") or {}).get("resolution", 0))

        refs = r.index.select(())  # iter_series() order
        whole, cuts = _deletions(r.index, refs, reqs)

        def series() -> Iterator[tuple[Labels, list]]:
            for i, (lbls, chunks) in enumerate(r.iter_series()):
                cut = [] if whole[i] else cuts.get(i)
                if relabels and not all(rc.keeps(lbls) for rc in relabels):
                    cut = []
                if cut is None:
                    yield lbls, [_stored(c) for c in chunks]
                    continue
                if cut == []:
                    stats.series_deleted += 1
                    span = f"[{{{chunks[0][0]} {chunks[-1][1]}}}]" if chunks else "[]"
                    changelog.write(f"Deleted {labels_text(lbls)} {span}\n")
                    continue
                kept, removed = _cut_intervals(lbls, chunks, cut, meta.min_time, meta.max_time - 1)
                if removed:
                    stats.series_changed += 1
                    stats.samples_deleted += removed
                    changelog.write(f"Deleted {labels_text(lbls)} "
                                    f"[{' '.join(f'{{{a} {z}}}' for a, z in cut)}]\n")
                yield lbls, kept

        if dry_run:
            for _ in series():
                pass
            return stats
        thanos = dict(meta.thanos or {})
        thanos.pop("files", None)
        write_block(out_dir, series(), meta.min_time, meta.max_time, thanos_meta=thanos,
                    ulid=new_id, encoding=ENCODING_AGGR if resolution else ENCODING_XOR,
                    count_samples=count_samples if resolution else None,
                    compaction={"level": meta.level, "sources": [new_id],
                                "parents": list(meta.parents)})
    return stats


@dataclass
class RewriteOptions:
    ids: list[str]
    deletions: list[DeletionRequest]
    tmp_dir: Path
    relabels: list[RelabelConfig] = field(default_factory=list)
    dry_run: bool = True
    delete_blocks: bool = False
    prom_blocks: bool = False
    hash_func: str = ""
    add_change_log: bool = True


async def _download(bucket: Bucket, ulid: str, dest: Path) -> Path:
    d = dest / ulid
    shutil.rmtree(d, ignore_errors=True)
    (d / CHUNKS_DIRNAME).mkdir(parents=True)
    for name in await bucket.iter(f"{ulid}/", recursive=True):
        rel = name[len(ulid) + 1:]
        if rel in (INDEX_FILENAME, META_FILENAME) or rel.startswith(f"{CHUNKS_DIRNAME}/"):
            data = await bucket.get(name)
            await asyncio.to_thread((d / rel).write_bytes, data)
    return d


def run_rewrite(objstore_yaml: str, opts: RewriteOptions, out: TextIO = sys.stderr) -> list[str]:
    """Rewrite every ``--id`` block; lines saying what happened to each."""
    ulids = parse_block_ids(opts.ids)

    async def go(bucket: Bucket) -> list[str]:
        await require_blocks(bucket, ulids)
        opts.tmp_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for u in ulids:
            src = await _download(bucket, u, opts.tmp_dir)
            new_id = new_ulid()
            try:
                lines.append(await asyncio.to_thread(_rewrite_one, bucket, src, u, new_id, opts, out))
                if opts.dry_run:
                    continue
                if read_meta(opts.tmp_dir / new_id).num_series:
                    await _upload_rewritten(bucket, opts.tmp_dir / new_id, opts, u)
                    lines.append(f"{u}: uploaded rewritten block {new_id}")
                else:  # an empty block serves nothing: none is uploaded
                    lines.append(f"{u}: every series deleted, no block uploaded")
                _keep_only_change_log(opts.tmp_dir / new_id)
                if opts.delete_blocks and await mark_for_deletion(bucket, u, "block rewritten"):
                    lines.append(f"{u}: marked for deletion")
            finally:
                shutil.rmtree(src, ignore_errors=True)
        return lines
    return asyncio.run(with_bucket(objstore_yaml, go))


def _keep_only_change_log(block: Path) -> None:
    """The uploaded block's local copy is not needed; its change.log is kept for the operator."""
    for p in block.iterdir():
        if p.name != "change.log":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    if not any(block.iterdir()):
        block.rmdir()


def _rewrite_one(bucket: Bucket, src: Path, ulid: str, new_id: str, opts: RewriteOptions,
                 out: TextIO) -> str:
    if opts.dry_run:
        stats = rewrite_block(src, opts.tmp_dir, opts.deletions, new_id, out, dry_run=True,
                              relabels=opts.relabels)
        return (f"{ulid}: dry run: would delete {stats.series_deleted} series and "
                f"{stats.samples_deleted} samples of {stats.series_changed} more "
                "(pass --no-dry-run to rewrite)")
    work = opts.tmp_dir / (new_id + ".work")
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "change.log"
    with open(log_path if opts.add_change_log else "/dev/null", "w") as changelog:
        stats = rewrite_block(src, opts.tmp_dir, opts.deletions, new_id, changelog,
                              dry_run=False, relabels=opts.relabels)
    if opts.add_change_log:
        shutil.move(str(log_path), opts.tmp_dir / new_id / "change.log")
    shutil.rmtree(work, ignore_errors=True)
    return (f"{ulid}: deleted {stats.series_deleted} series and {stats.samples_deleted} "
            f"samples of {stats.series_changed} more; new block {new_id}"
            + (f", change log in {opts.tmp_dir / new_id / 'change.log'}"
               if opts.add_change_log else ""))


async def _upload_rewritten(bucket: Bucket, block: Path, opts: RewriteOptions, old: str) -> None:
    import json
    src_meta = json.loads((block / META_FILENAME).read_text())
    thanos = dict(src_meta.get("thanos") or {})
    if not thanos.get("labels") and not opts.prom_blocks:
        raise ValueError(f"block {old} has no external labels in its meta.json; pass "
                         "--prom-blocks to upload a plain Prometheus block")
    rewrites = list(thanos.get("rewrites") or [])
    old_meta = json.loads(await bucket.get(f"{old}/{META_FILENAME}"))
    applied: dict[str, Any] = {"sources": (old_meta.get("compaction") or {}).get("sources")
                               or [old]}
    if opts.deletions:
        applied["deletions_applied"] = [d.to_meta() for d in opts.deletions]
    if opts.relabels:
        applied["relabels_applied"] = [rc.raw for rc in opts.relabels]
    rewrites.append(applied)
    meta = bucket_meta(block, thanos.get("labels") or {}, SOURCE_REWRITE, opts.hash_func,
                       extra_thanos={"rewrites": rewrites})
    await upload_block(bucket, block, meta)
