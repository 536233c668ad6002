"""Downsampling one series: raw samples -> 5m aggregates, 5m aggregates -> 1h aggregates.

Follows Thanos's algorithm (pkg/compact/downsample) so the chunks we write are the ones
Thanos would write: windows end at ``t - t % res + res - 1`` (the last window of a chunk at
the chunk's last sample instead), a series is cut into about ``targetChunkCount`` chunks of
whole windows, NaNs are dropped, and the counter sub-chunk starts with the batch's first raw
value and ends with its last raw value repeated at the last timestamp -- that extra pair is
what lets a reader detect a counter reset across chunk boundaries. All arithmetic is numpy
over whole batches; Python loops only over chunks.

Native histogram chunks (encodings 2 and 3) are left out of downsampled blocks: Thanos
aggregates them into float-histogram sum/counter sub-chunks, which neither our aggregate
chunk format nor our querier reads yet. Their samples stay in the raw blocks (never
deleted because of this), and the count of series left out is reported to the caller.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from receiver.tsdb._chunkenc import window_sums
from receiver.tsdb.block import BlockMeta, BlockReader, write_block
from receiver.tsdb.chunkenc import ENCODING_XOR as ENCODING_XOR_BYTE, decode, encode
from receiver.tsdb.histogram import ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM
from receiver.tsdb.labels import STALE_NAN_BITS, Labels

from receiver.tsdb.aggr import ENCODING_AGGR, AggrChunk, apply_counter_resets, count_samples

AggrChunkData = tuple[int, int, AggrChunk]  # (mint, inclusive maxt, aggregates)
_RAW_SCRAPE_MS = 60 * 1000  # Thanos assumes 1m raw resolution when sizing chunks
_MAX_SAMPLES_PER_AGGR_CHUNK = 140
_HIST_ENCODINGS = (ENCODING_HISTOGRAM, ENCODING_FLOAT_HISTOGRAM)


def current_window(t: np.ndarray | int, res: int) -> np.ndarray | int:
    """Inclusive end of the ``res``-aligned window holding ``t`` (Go's truncating ``%``)."""
    return t - np.fmod(t, res) + res - 1


def target_chunk_count(mint: int, maxt: int, in_res: int, out_res: int, count: int) -> int:
    """How many chunks to cut a downsampled series into (about 140 samples each)."""
    span = maxt - mint
    max_samples = float(span // out_res)
    fullness = 1.0 if span == 0 else min(1.0, count / (span / in_res))
    expected = int(max_samples * fullness) + 1
    x = 1
    while expected // x > _MAX_SAMPLES_PER_AGGR_CHUNK:
        x += 1
    return x


def _drop_stale(ts: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    stale = vals.view(np.uint64) == np.uint64(STALE_NAN_BITS)
    if stale.any():
        return ts[~stale], vals[~stale]
    return ts, vals


def _sequential_sums(vals: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each window's sum added up from 0.0 sample by sample in time order (in C), as Thanos's
    aggregator does, so our sum chunks are bit-identical to Thanos's: reduceat adds in
    another order, which can differ in the last bit."""
    return np.frombuffer(window_sums(np.ascontiguousarray(vals, dtype=np.float64),
                                     np.ascontiguousarray(starts, dtype=np.int64)))


def _windows(ts: np.ndarray, vals: np.ndarray, res: int) -> dict[str, np.ndarray]:
    """Per-window aggregates of one batch (sorted ts, no NaN), like Thanos's floatAggregator:
    the counter restarts at the batch's first value and treats any decrease as a reset."""
    w = current_window(ts, res)
    starts = np.flatnonzero(np.r_[True, w[1:] != w[:-1]])
    ends = np.r_[starts[1:], len(ts)] - 1
    inc = np.where(vals[1:] < vals[:-1], vals[1:], vals[1:] - vals[:-1])
    counter = np.cumsum(np.r_[vals[:1], inc])
    lens = np.diff(np.r_[starts, len(ts)])
    return {
        "t": np.minimum(w[ends], ts[-1]),
        "count": lens.astype(np.float64),
        "sum": _sequential_sums(vals, starts),
        "min": np.minimum.reduceat(vals, starts),
        "max": np.maximum.reduceat(vals, starts),
        "counter": counter[ends],
    }


def _batches(ts: np.ndarray, batch_size: int, res: int) -> list[tuple[int, int]]:
    """[i, j) index ranges of about ``batch_size`` samples, extended to a window end."""
    out = []
    i, n = 0, len(ts)
    while i < n:
        j = min(i + batch_size, n)
        cw = current_window(int(ts[j - 1]), res)
        j = max(j, int(np.searchsorted(ts, cw, side="right")))
        out.append((i, j))
        i = j
    return out


def downsample_raw(ts: np.ndarray, vals: np.ndarray, res: int) -> list[AggrChunkData]:
    """Aggregate chunks at resolution ``res`` from one raw series' samples (time-sorted)."""
    ts = np.asarray(ts, dtype=np.int64)
    vals = np.asarray(vals, dtype=np.float64)
    ts, vals = _drop_stale(ts, vals)
    if len(ts) == 0:
        return []
    n_chunks = target_chunk_count(int(ts[0]), int(ts[-1]), _RAW_SCRAPE_MS, res, len(ts))
    out: list[AggrChunkData] = []
    for i, j in _batches(ts, len(ts) // n_chunks + 1, res):
        bt, bv = ts[i:j], vals[i:j]
        keep = ~np.isnan(bv)
        if not keep.all():
            bt, bv = bt[keep], bv[keep]
        if len(bt) == 0:
            continue
        a = _windows(bt, bv, res)
        wt = a["t"]
        ct = np.r_[bt[:1], wt, wt[-1:]]
        cv = np.r_[bv[:1], a["counter"], bv[-1:]]
        out.append((int(wt[0]), int(wt[-1]), AggrChunk(
            count=encode(wt, a["count"]), sum=encode(wt, a["sum"]), min=encode(wt, a["min"]),
            max=encode(wt, a["max"]), counter=encode(ct, cv))))
    return out


def _decode_sub(chunks: Sequence[AggrChunk], aggr: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for c in chunks:
        sub = c.get(aggr)
        if sub:
            ts, vs = decode(sub)
            ts, vs = _drop_stale(ts, vs)
            if len(ts) > 1 and not np.all(ts[1:] >= ts[:-1]):
                ok = ts >= np.maximum.accumulate(ts)
                ts, vs = ts[ok], vs[ok]
            out.append((ts, vs))
    return out


def _aggr_batch(chunks: Sequence[AggrChunk], res: int) -> AggrChunkData | None:
    subs: dict[str, bytes | None] = {}
    mint, maxt = None, None
    for aggr, name, pick in ((0, "count", "sum"), (1, "sum", "sum"), (2, "min", "min"),
                             (3, "max", "max")):
        parts = _decode_sub(chunks, aggr)
        if not parts or not sum(len(p[0]) for p in parts):
            subs[name] = None
            continue
        ts = np.concatenate([p[0] for p in parts])
        vs = np.concatenate([p[1] for p in parts])
        a = _windows(ts, vs, res)
        subs[name] = encode(a["t"], a[pick])
        mint = int(a["t"][0]) if mint is None else min(mint, int(a["t"][0]))
        maxt = int(a["t"][-1]) if maxt is None else max(maxt, int(a["t"][-1]))
    ct, cv, last = apply_counter_resets(_decode_sub(chunks, 4))
    if len(ct):
        a = _windows(ct, cv, res)
        wt = a["t"]
        subs["counter"] = encode(np.r_[ct[:1], wt, wt[-1:]], np.r_[cv[:1], a["counter"], last])
        mint = int(wt[0]) if mint is None else min(mint, int(wt[0]))
        maxt = int(wt[-1]) if maxt is None else max(maxt, int(wt[-1]))
    if mint is None or maxt is None:
        return None
    return mint, maxt, AggrChunk(**subs)


def downsample_aggr(chunks: Sequence[AggrChunkData], in_res: int, out_res: int
                    ) -> list[AggrChunkData]:
    """Re-aggregate one series' aggregate chunks (time-sorted) to the coarser ``out_res``."""
    if not chunks:
        return []
    for (_, z, _), (a, _, _) in zip(chunks, chunks[1:]):
        if z >= a:
            raise ValueError("overlapping aggregate chunks within a series")
    n_samples = 0
    for _, _, c in chunks:
        if c.count:
            n_samples += int.from_bytes(c.count[:2], "big")
    n_chunks = target_chunk_count(chunks[0][0], chunks[-1][1], in_res, out_res, n_samples)
    size = max(1, len(chunks) // n_chunks)
    out = []
    for i in range(0, len(chunks), size):
        r = _aggr_batch([c for _, _, c in chunks[i:i + size]], out_res)
        if r is not None:
            out.append(r)
    return out


def downsample_block(block_dir: Path, out_dir: Path, res: int,
                     skipped: dict[str, int] | None = None) -> tuple[BlockMeta, int]:
    """Write the ``res``-resolution copy of a raw or 5m block into ``out_dir``.

    The new block keeps the source block's time range, external labels and compaction
    history (level, sources, parents), as Thanos's does; only the resolution changes.
    Returns its meta and the number of input samples read. Native histogram chunks are
    not downsampled; ``skipped`` (if given) receives ``histogram_series`` and
    ``histogram_samples`` left out.
    """
    if skipped is None:
        skipped = {}
    skipped.setdefault("histogram_series", 0)
    skipped.setdefault("histogram_samples", 0)
    reader = BlockReader(block_dir)
    try:
        src = reader.meta
        thanos = dict(src.thanos or {})
        in_res = int((thanos.get("downsample") or {}).get("resolution", 0))
        if in_res >= res:
            raise ValueError("target resolution not coarser than the block's")
        n_in = [0]

        def series() -> Iterator[tuple[Labels, list[tuple[int, int, bytes]]]]:
            for lbls, chunks in reader.iter_series():
                if not chunks:
                    continue
                if in_res == 0:
                    hist = [c for c in chunks if c[2] in _HIST_ENCODINGS]
                    if hist:
                        skipped["histogram_series"] += 1
                        skipped["histogram_samples"] += sum(
                            int.from_bytes(c[3][:2], "big") for c in hist)
                        chunks = [c for c in chunks if c[2] not in _HIST_ENCODINGS]
                        if not chunks:
                            continue
                    ts_parts, v_parts = [], []
                    for _, _, enc, data in chunks:
                        if enc != ENCODING_XOR_BYTE:
                            raise ValueError(f"series {dict(lbls)}: chunk encoding {enc}")
                        t, v = decode(data)
                        ts_parts.append(t)
                        v_parts.append(v)
                    ts = np.concatenate(ts_parts)
                    vs = np.concatenate(v_parts)
                    if len(ts) > 1 and not np.all(ts[1:] > ts[:-1]):
                        ok = np.r_[True, ts[1:] > np.maximum.accumulate(ts)[:-1]]
                        ts, vs = ts[ok], vs[ok]
                    n_in[0] += len(ts)
                    out = downsample_raw(ts, vs, res)
                else:
                    ac = []
                    for a, z, enc, data in chunks:
                        if enc != ENCODING_AGGR:
                            raise ValueError(f"series {dict(lbls)}: chunk encoding {enc}")
                        c = AggrChunk.decode(data)
                        n_in[0] += int.from_bytes(c.count[:2], "big") if c.count else 0
                        ac.append((a, z, c))
                    out = downsample_aggr(ac, in_res, res)
                if out:
                    yield lbls, [(a, z, c.encode()) for a, z, c in out]

        thanos["downsample"] = {"resolution": res}
        thanos["source"] = "compactor"
        meta = write_block(out_dir, series(), src.min_time, src.max_time, thanos_meta=thanos,
                           encoding=ENCODING_AGGR, count_samples=count_samples,
                           compaction={"level": src.level, "sources": src.sources or [src.ulid],
                                       "parents": src.parents})
        return meta, n_in[0]
    finally:
        reader.close()
