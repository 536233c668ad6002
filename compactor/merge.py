"""Merging the series of several local blocks into one new block (the CPU side of compaction).

Blocks that do not overlap in time (the 2h -> 8h -> 2d -> 14d levels) are merged by copying
chunks: a series' chunks from each block, in block order, without decoding. Overlapping
blocks (vertical compaction, and offline deduplication of replicas) need sample-level work:
a series found in several of them is decoded, its samples concatenated, sorted by time and
cut to one sample per timestamp, then re-encoded into 120-sample chunks. All per-sample work
is numpy.

Which sample is kept when blocks hold different values at one timestamp: Prometheus leaves it
unspecified (its chained merge keeps "one sample from random overlapped ones", the outcome of
heap order), so promring fixes it: the sample of the earliest block wins -- blocks ordered by
min time, then ULID (older first) -- the sample that was written first, as Prometheus's head
keeps the first value and refuses a different one later. Every dropped sample whose value
differs (bit for bit, so NaNs with the same bits agree) from the kept one is a conflicting
sample: counted in the stats, so the compactor logs and exports it.

Native histogram chunks (encodings 2 and 3) of raw blocks take the same two paths: copied
through with their encoding, or -- for a series in several overlapping blocks -- decoded with
receiver.tsdb.histogram, deduplicated by timestamp together with the series' float samples
(a series may switch between floats and histograms), and re-cut into histogram chunks.
Histogram samples are rare and heavy, so that path is plain Python per sample.
"""
from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from receiver.tsdb.block import BlockMeta, BlockReader, cut_chunks, write_block
from receiver.tsdb.chunkenc import ENCODING_XOR, decode
from receiver.tsdb.chunks import CorruptionError
from receiver.tsdb.histogram import (ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, HINT_GAUGE,
                                     HINT_UNKNOWN, EncodedChunk, Hist, decode_chunk)
from receiver.tsdb.histogram import cut_chunks as cut_hist_chunks
from receiver.tsdb.labels import Labels

from receiver.tsdb.aggr import ENCODING_AGGR, count_samples

StoredChunk = tuple[int, int, int, bytes]  # (mint, inclusive maxt, encoding, data)
HIST_ENCODINGS = frozenset((ENCODING_HISTOGRAM, ENCODING_FLOAT_HISTOGRAM))
RAW_ENCODINGS = frozenset((ENCODING_XOR,)) | HIST_ENCODINGS
# Re-cut histogram chunks only by size, layout and resets: the output block is one range.
_NO_CHUNK_RANGE = 1 << 62


class HaltError(Exception):
    """Compacting this group would risk data: stop it and leave every block in place."""


def _merged_series(readers: Sequence[BlockReader]
                   ) -> Iterator[tuple[Labels, list[list[StoredChunk]]]]:
    """Series in label order with, per reader that has it, its chunk list."""
    its = [((lbls, i, chunks) for lbls, chunks in r.iter_series()) for i, r in enumerate(readers)]
    cur: Labels | None = None
    acc: list[list[StoredChunk]] = []
    for lbls, _, chunks in heapq.merge(*its, key=lambda x: (x[0], x[1])):
        if lbls != cur:
            if cur is not None:
                yield cur, acc
            cur, acc = lbls, []
        acc.append(chunks)
    if cur is not None:
        yield cur, acc


def _check_chunks(lbls: Labels, chunks: list[StoredChunk], allowed: frozenset[int]) -> None:
    for c in chunks:
        if c[2] not in allowed:
            raise HaltError(f"series {dict(lbls)}: chunk encoding {c[2]:#x}, expected one of "
                            + ", ".join(f"{e:#x}" for e in sorted(allowed)))
    for a, b in zip(chunks, chunks[1:]):
        if a[1] >= b[0] or a[0] > a[1]:
            raise HaltError(f"series {dict(lbls)}: out-of-order or overlapping chunks")


def _first_per_timestamp(ts: np.ndarray, mint: int, maxt: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For time-sorted ``ts`` (ties in block order): the mask of samples kept (the first of
    each timestamp, inside [mint, maxt)), the mask of samples dropped as duplicates inside
    the range, and for each sample the index of the one kept at its timestamp."""
    first = np.ones(len(ts), dtype=bool)
    first[1:] = ts[1:] != ts[:-1]
    inside = (ts >= mint) & (ts < maxt)
    kept_at = np.flatnonzero(first)[np.cumsum(first) - 1]
    return first & inside, ~first & inside, kept_at


def _dedup_samples(lists: list[list[StoredChunk]], mint: int, maxt: int
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """Samples of one series from several blocks, one per timestamp (the earliest block's),
    and how many dropped samples disagreed with the kept one."""
    ts_parts, v_parts = [], []
    for chunks in lists:
        for _, _, _, data in chunks:
            t, v = decode(data)
            ts_parts.append(t)
            v_parts.append(v)
    ts = np.concatenate(ts_parts)
    vs = np.concatenate(v_parts)
    order = np.argsort(ts, kind="stable")
    ts, vs = ts[order], vs[order]
    keep, dropped, kept_at = _first_per_timestamp(ts, mint, maxt)
    bits = vs.view(np.uint64)
    conflicts = int(np.count_nonzero(dropped & (bits != bits[kept_at])))
    return ts[keep], vs[keep], conflicts


def _dedup_mixed(lists: list[list[StoredChunk]], mint: int, maxt: int
                 ) -> tuple[list[tuple[int, int, bytes]], int]:
    """Vertical merge of a series with histogram chunks: every sample (float or histogram)
    of every block, one per timestamp (earliest block wins, as for floats), re-encoded in
    time order -- floats into XOR chunks, histograms into histogram chunks. Also returns the
    number of dropped samples that disagreed with the kept one."""
    fts_parts, fv_parts, fsrc_parts = [], [], []
    hists: list[tuple[int, int, Hist]] = []  # (t, block index, value)
    for bi, chunks in enumerate(lists):
        for _, _, enc, data in chunks:
            if enc in HIST_ENCODINGS:
                hists.extend((t, bi, h) for t, h in decode_chunk(data, enc))
            else:
                t, v = decode(data)
                fts_parts.append(t)
                fv_parts.append(v)
                fsrc_parts.append(np.full(len(t), bi, dtype=np.int64))
    fts = np.concatenate(fts_parts) if fts_parts else np.zeros(0, dtype=np.int64)
    fvs = np.concatenate(fv_parts) if fv_parts else np.zeros(0, dtype=np.float64)
    fsrc = np.concatenate(fsrc_parts) if fsrc_parts else np.zeros(0, dtype=np.int64)
    hts = np.array([h[0] for h in hists], dtype=np.int64)
    hsrc = np.array([h[1] for h in hists], dtype=np.int64)
    # One merged timeline: index >= 0 is a float sample, < 0 the histogram -(i + 1).
    ts = np.r_[fts, hts]
    src = np.r_[fsrc, hsrc]
    idx = np.r_[np.arange(len(fts)), -np.arange(1, len(hts) + 1)]
    order = np.lexsort((src, ts))
    ts, idx = ts[order], idx[order]
    keep, dropped, kept_at = _first_per_timestamp(ts, mint, maxt)
    conflicts = _mixed_conflicts(idx[dropped], idx[kept_at[dropped]], fvs, hists)
    ts, idx = ts[keep], idx[keep]
    out: list[tuple[int, int, bytes]] = []
    if len(ts) == 0:
        return out, conflicts
    is_h = idx < 0
    cuts = np.flatnonzero(np.r_[True, is_h[1:] != is_h[:-1]]).tolist() + [len(ts)]
    prev: Hist | None = None
    for a, z in zip(cuts[:-1], cuts[1:]):
        if is_h[a]:
            run = []
            last_bi = -1
            for k in range(a, z):
                _, bi, h = hists[-int(idx[k]) - 1]
                # A sample following one of another block cannot vouch for a reset or its
                # absence: its hint is recomputed from the buckets, as Prometheus's merging
                # iterator does when it switches between sources.
                if bi != last_bi and h.hint != HINT_GAUGE and h.hint != HINT_UNKNOWN:
                    h = dataclasses.replace(h, hint=HINT_UNKNOWN)
                last_bi = bi
                run.append((int(ts[k]), h))
            out.extend(cut_hist_chunks(run, prev, chunk_range_ms=_NO_CHUNK_RANGE))
            prev = run[-1][1]
        else:
            sel = idx[a:z]
            out.extend(cut_chunks(ts[a:z], fvs[sel], mint, maxt))
            prev = None
    return out, conflicts


def _mixed_conflicts(dropped: np.ndarray, kept: np.ndarray, fvs: np.ndarray,
                     hists: list[tuple[int, int, Hist]]) -> int:
    """How many ``dropped`` merged-timeline entries (>= 0 a float, < 0 the histogram -(i+1))
    differ from the ``kept`` one at their timestamp: floats bit for bit, a float against a
    histogram always, histograms by value apart from the reset hint (Python: they are few)."""
    both_f = (dropped >= 0) & (kept >= 0)
    bits = fvs.view(np.uint64)
    n = int(np.count_nonzero(bits[dropped[both_f]] != bits[kept[both_f]]))
    n += int(np.count_nonzero((dropped >= 0) != (kept >= 0)))
    for d, k in zip(dropped[(dropped < 0) & (kept < 0)].tolist(),
                    kept[(dropped < 0) & (kept < 0)].tolist()):
        a, b = hists[-d - 1][2], hists[-k - 1][2]
        n += dataclasses.replace(a, hint=b.hint) != b
    return n


def merge_blocks(block_dirs: Sequence[Path], out_dir: Path, *, vertical: bool,
                 resolution: int, thanos_labels: dict[str, str],
                 metas: Sequence[BlockMeta]) -> tuple[BlockMeta, dict[str, int]]:
    """Write the merge of ``block_dirs`` (sorted by min time) as a new block in ``out_dir``.

    Returns its meta and stats (series, chunks in, conflicting samples dropped by a vertical
    merge, histogram series merged). Raises HaltError on
    anything that must not be compacted automatically (corrupt or unexpected data).
    """
    encoding = ENCODING_XOR if resolution == 0 else ENCODING_AGGR
    allowed = RAW_ENCODINGS if resolution == 0 else frozenset((ENCODING_AGGR,))
    if vertical and resolution != 0:
        raise HaltError("overlapping downsampled blocks cannot be merged")
    mint = min(m.min_time for m in metas)
    maxt = max(m.max_time for m in metas)
    readers: list[BlockReader] = []
    stats = {"series": 0, "chunks_in": 0, "conflicting_samples": 0}
    try:
        try:
            readers = [BlockReader(d) for d in block_dirs]
        except (CorruptionError, ValueError, OSError) as e:
            raise HaltError(f"cannot open block: {e}") from e

        def series() -> Iterator[tuple[Labels, list[tuple[int, int, bytes]]]]:
            for lbls, lists in _merged_series(readers):
                for chunks in lists:
                    _check_chunks(lbls, chunks, allowed)
                    stats["chunks_in"] += len(chunks)
                stats["series"] += 1
                if vertical and len(lists) > 1:
                    if any(c[2] in HIST_ENCODINGS for chunks in lists for c in chunks):
                        stats["histogram_series"] = stats.get("histogram_series", 0) + 1
                        merged, conflicts = _dedup_mixed(lists, mint, maxt)
                        stats["conflicting_samples"] += conflicts
                        yield lbls, merged
                        continue
                    ts, vs, conflicts = _dedup_samples(lists, mint, maxt)
                    stats["conflicting_samples"] += conflicts
                    yield lbls, cut_chunks(ts, vs, mint, maxt)
                    continue
                # Histogram chunks keep their encoding (EncodedChunk) through write_block.
                out = [(a, z, EncodedChunk(d, e) if e in HIST_ENCODINGS else d)
                       for chunks in lists for a, z, e, d in chunks]
                for prev, nxt in zip(out, out[1:]):
                    if prev[1] >= nxt[0]:
                        raise HaltError(f"series {dict(lbls)}: chunks of different blocks "
                                        "overlap")
                yield lbls, out

        parents = [{"ulid": m.ulid, "minTime": m.min_time, "maxTime": m.max_time}
                   for m in metas]
        sources = sorted({s for m in metas for s in (m.sources or [m.ulid])})
        thanos: dict[str, Any] = {"labels": dict(thanos_labels),
                                  "downsample": {"resolution": resolution},
                                  "source": "compactor"}
        try:
            meta = write_block(out_dir, series(), mint, maxt, thanos_meta=thanos,
                               encoding=encoding,
                               count_samples=count_samples if resolution else None,
                               compaction={"level": max(m.level for m in metas) + 1,
                                           "sources": sources, "parents": parents})
        except CorruptionError as e:
            raise HaltError(f"corrupt block data: {e}") from e
        return meta, stats
    finally:
        for r in readers:
            r.close()
