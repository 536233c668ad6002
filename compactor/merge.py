"""Merging the series of several local blocks into one new block (the CPU side of compaction).

Blocks that do not overlap in time (the 2h -> 8h -> 2d -> 14d levels) are merged by copying
chunks: a series' chunks from each block, in block order, without decoding. Overlapping
blocks (vertical compaction, and offline deduplication of replicas) need sample-level work:
a series found in several of them is decoded, its samples concatenated, sorted by time and
cut to one sample per timestamp (the first block's, blocks being ordered by min time), then
re-encoded into 120-sample chunks. All per-sample work is numpy.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from receiver.tsdb.block import BlockMeta, BlockReader, cut_chunks, write_block
from receiver.tsdb.chunkenc import ENCODING_XOR, decode
from receiver.tsdb.chunks import CorruptionError
from receiver.tsdb.labels import Labels

from receiver.tsdb.aggr import ENCODING_AGGR, count_samples

StoredChunk = tuple[int, int, int, bytes]  # (mint, inclusive maxt, encoding, data)


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


def _check_chunks(lbls: Labels, chunks: list[StoredChunk], encoding: int) -> None:
    for c in chunks:
        if c[2] != encoding:
            raise HaltError(f"series {dict(lbls)}: chunk encoding {c[2]:#x}, expected "
                            f"{encoding:#x}")
    for a, b in zip(chunks, chunks[1:]):
        if a[1] >= b[0] or a[0] > a[1]:
            raise HaltError(f"series {dict(lbls)}: out-of-order or overlapping chunks")


def _dedup_samples(lists: list[list[StoredChunk]], mint: int, maxt: int
                   ) -> tuple[np.ndarray, np.ndarray]:
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
    keep = np.r_[True, ts[1:] != ts[:-1]] & (ts >= mint) & (ts < maxt)
    return ts[keep], vs[keep]


def merge_blocks(block_dirs: Sequence[Path], out_dir: Path, *, vertical: bool,
                 resolution: int, thanos_labels: dict[str, str],
                 metas: Sequence[BlockMeta]) -> tuple[BlockMeta, dict[str, int]]:
    """Write the merge of ``block_dirs`` (sorted by min time) as a new block in ``out_dir``.

    Returns its meta and stats (series, samples in, samples out). Raises HaltError on
    anything that must not be compacted automatically (corrupt or unexpected data).
    """
    encoding = ENCODING_XOR if resolution == 0 else ENCODING_AGGR
    if vertical and resolution != 0:
        raise HaltError("overlapping downsampled blocks cannot be merged")
    mint = min(m.min_time for m in metas)
    maxt = max(m.max_time for m in metas)
    readers: list[BlockReader] = []
    stats = {"series": 0, "chunks_in": 0}
    try:
        try:
            readers = [BlockReader(d) for d in block_dirs]
        except (CorruptionError, ValueError, OSError) as e:
            raise HaltError(f"cannot open block: {e}") from e

        def series() -> Iterator[tuple[Labels, list[tuple[int, int, bytes]]]]:
            for lbls, lists in _merged_series(readers):
                for chunks in lists:
                    _check_chunks(lbls, chunks, encoding)
                    stats["chunks_in"] += len(chunks)
                stats["series"] += 1
                if vertical and len(lists) > 1:
                    ts, vs = _dedup_samples(lists, mint, maxt)
                    yield lbls, cut_chunks(ts, vs, mint, maxt)
                    continue
                out = [(a, z, d) for chunks in lists for a, z, _, d in chunks]
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
