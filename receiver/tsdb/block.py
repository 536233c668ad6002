"""Prometheus TSDB blocks: write a block directory, read it back, and ``meta.json`` / ULIDs.

A block is ``<dir>/<ULID>/`` holding ``chunks/000001…``, ``index``, ``tombstones`` and
``meta.json``. It covers the half-open time range [minTime, maxTime). Blocks are written
into ``<ULID>.tmp`` and renamed into place, so a reader (or a shipper scanning the data dir)
never sees a half-written block. The layout is byte-compatible with Prometheus 2.x, so
``promtool``, Prometheus and Thanos read our blocks and we read theirs.
"""
from __future__ import annotations

import json
import mmap
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .chunkenc import ENCODING_XOR, encode
from .histogram import ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, EncodedChunk
from .chunks import ChunkReader, ChunkWriter, CorruptionError, DEFAULT_SEGMENT_SIZE
from .index import IndexReader, write_index
from .labels import Labels, Matcher

META_FILENAME = "meta.json"
INDEX_FILENAME = "index"
TOMBSTONES_FILENAME = "tombstones"
CHUNKS_DIRNAME = "chunks"
META_VERSION_1 = 1
MAGIC_TOMBSTONES = 0x0130BA30
TOMBSTONES_FORMAT_V1 = 1
# Empty tombstones: magic, version, then the CRC32C of zero entries (0).
EMPTY_TOMBSTONES = struct.pack(">IBI", MAGIC_TOMBSTONES, TOMBSTONES_FORMAT_V1, 0)
SAMPLES_PER_CHUNK = 120

_HISTOGRAM_ENCODINGS = (ENCODING_HISTOGRAM, ENCODING_FLOAT_HISTOGRAM)
ChunkData = tuple[int, int, bytes]  # (mint, inclusive maxt, XOR chunk bytes)

# ---------------------------------------------------------------------------- ULIDs

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_INDEX = {c: i for i, c in enumerate(_CROCKFORD)}


def new_ulid(ms: int | None = None, entropy: bytes | None = None) -> str:
    """A ULID: 48-bit Unix-ms timestamp + 80 random bits, as 26 Crockford base32 chars."""
    if ms is None:
        ms = time.time_ns() // 1_000_000
    if entropy is None:
        entropy = os.urandom(10)
    if not 0 <= ms < 1 << 48 or len(entropy) != 10:
        raise ValueError("ULID needs a 48-bit timestamp and 10 bytes of entropy")
    n = (ms << 80) | int.from_bytes(entropy, "big")
    return "".join(_CROCKFORD[(n >> (125 - 5 * i)) & 31] for i in range(26))


def parse_ulid(s: str) -> int:
    """The 128-bit integer of a ULID string (raises ValueError when malformed)."""
    if len(s) != 26 or s[0] > "7":
        raise ValueError(f"not a ULID: {s!r}")
    n = 0
    for c in s.upper():
        if c not in _CROCKFORD_INDEX:
            raise ValueError(f"not a ULID: {s!r}")
        n = (n << 5) | _CROCKFORD_INDEX[c]
    return n


def ulid_time(s: str) -> int:
    """The millisecond timestamp a ULID was made at."""
    return parse_ulid(s) >> 80


# ---------------------------------------------------------------------------- meta.json


@dataclass
class BlockMeta:
    """The parts of ``meta.json`` we use; unknown fields of read metas are kept in ``extra``."""

    ulid: str
    min_time: int
    max_time: int
    num_samples: int = 0
    num_series: int = 0
    num_chunks: int = 0
    num_tombstones: int = 0
    level: int = 1
    # Prometheus splits numSamples by kind (BlockStats, omitempty): XOR chunk samples and
    # native histogram chunk samples; aggregate (downsampled) blocks set neither.
    num_float_samples: int = 0
    num_histogram_samples: int = 0
    sources: list[str] = field(default_factory=list)
    parents: list[dict[str, Any]] = field(default_factory=list)
    version: int = META_VERSION_1
    thanos: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # Prometheus marks the stats fields omitempty; mirror that.
        stats = {k: v for k, v in (("numSamples", self.num_samples),
                                   ("numFloatSamples", self.num_float_samples),
                                   ("numHistogramSamples", self.num_histogram_samples),
                                   ("numSeries", self.num_series),
                                   ("numChunks", self.num_chunks),
                                   ("numTombstones", self.num_tombstones)) if v}
        compaction: dict[str, Any] = {"level": self.level, "sources": list(self.sources)}
        if self.parents:
            compaction["parents"] = list(self.parents)
        compaction.update(self.extra.get("compaction", {}))
        d: dict[str, Any] = {"ulid": self.ulid, "minTime": self.min_time, "maxTime": self.max_time,
                             "stats": stats, "compaction": compaction, "version": self.version}
        d.update({k: v for k, v in self.extra.items() if k not in ("compaction", "stats")})
        if self.thanos is not None:
            d["thanos"] = self.thanos
        return d

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent="\t") + "\n").encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlockMeta:
        if d.get("version") != META_VERSION_1:
            raise CorruptionError(f"meta.json: unsupported version {d.get('version')!r}")
        stats = d.get("stats") or {}
        comp = dict(d.get("compaction") or {})
        known = {"ulid", "minTime", "maxTime", "stats", "compaction", "version", "thanos"}
        extra = {k: v for k, v in d.items() if k not in known}
        rest = {k: v for k, v in comp.items() if k not in ("level", "sources", "parents")}
        if rest:
            extra["compaction"] = rest
        return cls(ulid=d["ulid"], min_time=int(d["minTime"]), max_time=int(d["maxTime"]),
                   num_samples=int(stats.get("numSamples", 0)),
                   num_series=int(stats.get("numSeries", 0)),
                   num_chunks=int(stats.get("numChunks", 0)),
                   num_tombstones=int(stats.get("numTombstones", 0)),
                   num_float_samples=int(stats.get("numFloatSamples", 0)),
                   num_histogram_samples=int(stats.get("numHistogramSamples", 0)),
                   level=int(comp.get("level", 1)), sources=list(comp.get("sources") or []),
                   parents=list(comp.get("parents") or []), version=d["version"],
                   thanos=d.get("thanos"), extra=extra)


def read_meta(block_dir: Path) -> BlockMeta:
    """Parse ``<block_dir>/meta.json``; rejects meta versions other than 1."""
    with open(Path(block_dir) / META_FILENAME, "rb") as f:
        return BlockMeta.from_dict(json.load(f))


def write_meta(block_dir: Path, meta: BlockMeta) -> None:
    """Write ``meta.json`` atomically (tmp file, fsync, rename)."""
    path = Path(block_dir) / META_FILENAME
    tmp = path.with_name(META_FILENAME + ".tmp")
    with open(tmp, "wb") as f:
        f.write(meta.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# Facts about one block's own files and upload: never carried over from another block's meta.
_PER_BLOCK_THANOS_FIELDS = ("files", "segment_files", "index_stats", "upload_time")


def _thanos_section(given: dict[str, Any], block_dir: Path, segments: Sequence[str]
                    ) -> dict[str, Any]:
    """Fill Thanos's defaults and this block's file list (sizes let a store skip HEAD
    requests; ``segment_files``, as Thanos's shipper and compactor write it, lets Thanos's
    store gateway skip listing chunks/)."""
    t: dict[str, Any] = {"version": 1, "labels": {}, "downsample": {"resolution": 0},
                         "source": ""}
    t.update({k: v for k, v in given.items() if k not in _PER_BLOCK_THANOS_FIELDS})
    files = [{"rel_path": f"{CHUNKS_DIRNAME}/{s}",
              "size_bytes": (block_dir / CHUNKS_DIRNAME / s).stat().st_size}
             for s in segments]
    files.append({"rel_path": INDEX_FILENAME,
                  "size_bytes": (block_dir / INDEX_FILENAME).stat().st_size})
    files.append({"rel_path": META_FILENAME})
    t["files"] = files
    t["segment_files"] = list(segments)
    return t


def thanos_meta_section(given: dict[str, Any], block_dir: Path) -> dict[str, Any]:
    """Thanos's meta section for an existing block directory (one written by Prometheus, or
    rewritten): ``given`` plus defaults and the list of its files with their sizes."""
    segments = sorted(p.name for p in (Path(block_dir) / CHUNKS_DIRNAME).iterdir())
    return _thanos_section(given, Path(block_dir), segments)


# ---------------------------------------------------------------------------- writing

_BATCH_CHUNKS = 1 << 16


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_block(dir: Path, series: Iterable[tuple[Labels, Sequence[ChunkData]]], mint: int,
                maxt: int, *, thanos_meta: dict[str, Any] | None = None, ulid: str | None = None,
                segment_size: int = DEFAULT_SEGMENT_SIZE, encoding: int = ENCODING_XOR,
                count_samples: Callable[[bytes], int] | None = None,
                compaction: dict[str, Any] | None = None) -> BlockMeta:
    """Write one block of XOR chunks to ``<dir>/<ULID>/`` and return its meta.

    ``series`` yields ``(labels, [(chunk mint, inclusive chunk maxt, XOR bytes), ...])`` in
    strictly increasing label order, chunks in time order; every chunk must lie inside the
    block range [mint, maxt). Series without chunks are skipped.

    A block of another chunk encoding (Thanos's downsampled aggregate chunks, 0xff) passes
    ``encoding`` and ``count_samples`` (samples per chunk, for the meta's stats).
    ``compaction`` overrides the meta's level/sources/parents (compactor output) and may
    carry Prometheus's ``hints`` (``["from-out-of-order"]``).
    """
    if maxt <= mint:
        raise ValueError("block maxt must be > mint")
    ulid = ulid or new_ulid()
    parse_ulid(ulid)
    dir = Path(dir)
    final = dir / ulid
    tmp = dir / (ulid + ".tmp")
    if final.exists():
        raise FileExistsError(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = _write_block_files(tmp, series, mint, maxt, ulid, thanos_meta, segment_size,
                                  encoding, count_samples, compaction)
        os.replace(tmp, final)
        _fsync_path(dir)
        return meta
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_block_files(tmp: Path, series: Iterable[tuple[Labels, Sequence[ChunkData]]],
                       mint: int, maxt: int, ulid: str, thanos_meta: dict[str, Any] | None,
                       segment_size: int, encoding: int = ENCODING_XOR,
                       count_samples: Callable[[bytes], int] | None = None,
                       compaction: dict[str, Any] | None = None) -> BlockMeta:
    labels: list[Labels] = []
    counts: list[int] = []
    mints: list[int] = []
    maxts: list[int] = []
    refs: list[np.ndarray] = []
    pending: list[bytes] = []
    pending_enc = encoding
    extra_samples = 0
    hist_samples = 0
    with ChunkWriter(tmp / CHUNKS_DIRNAME, segment_size) as cw:
        for lbls, chunks in series:
            if not chunks:
                continue
            labels.append(lbls)
            counts.append(len(chunks))
            cm, cz, cd = zip(*chunks)
            mints.extend(cm)
            maxts.extend(cz)
            if count_samples is not None:
                extra_samples += sum(count_samples(d) for d in cd)
            for d in cd:
                # Chunks that carry their own encoding (native histograms: EncodedChunk)
                # are written as such; a run of one encoding is one batch.
                enc = getattr(d, "encoding", encoding)
                if enc != pending_enc and pending:
                    refs.append(cw.write(pending, pending_enc))
                    pending = []
                pending_enc = enc
                pending.append(d)
                if enc != ENCODING_XOR and count_samples is None and len(d) >= 2:
                    extra_samples += d[0] << 8 | d[1]
                    if enc in _HISTOGRAM_ENCODINGS:
                        hist_samples += d[0] << 8 | d[1]
            if len(pending) >= _BATCH_CHUNKS:
                refs.append(cw.write(pending, pending_enc))
                pending = []
        if pending:
            refs.append(cw.write(pending, pending_enc))
        segments = cw.close()
        num_samples, num_chunks = cw.num_samples + extra_samples, cw.num_chunks

    c_mint = np.array(mints, dtype=np.int64)
    c_maxt = np.array(maxts, dtype=np.int64)
    if len(c_mint) and (c_mint.min() < mint or c_maxt.max() >= maxt):
        raise ValueError(f"chunks reach outside the block range [{mint}, {maxt})")
    c_ref = np.concatenate(refs) if refs else np.zeros(0, dtype=np.int64)
    series_refs = write_index(tmp / INDEX_FILENAME, labels, np.array(counts, dtype=np.int64),
                              c_mint, c_maxt, c_ref)
    _fsync_path(tmp / INDEX_FILENAME)
    with open(tmp / TOMBSTONES_FILENAME, "wb") as f:
        f.write(EMPTY_TOMBSTONES)
        os.fsync(f.fileno())

    meta = BlockMeta(ulid=ulid, min_time=mint, max_time=maxt, num_samples=num_samples,
                     num_series=len(labels), num_chunks=num_chunks, sources=[ulid])
    if count_samples is None:
        meta.num_float_samples = cw.num_samples  # pack_chunks counts XOR chunks only
        meta.num_histogram_samples = hist_samples
    if compaction is not None:
        meta.level = int(compaction.get("level", 1))
        meta.sources = list(compaction.get("sources") or [ulid])
        meta.parents = list(compaction.get("parents") or [])
        if compaction.get("hints"):
            meta.extra["compaction"] = {"hints": sorted(compaction["hints"])}
    if thanos_meta is not None:
        meta.thanos = _thanos_section(thanos_meta, tmp, segments)
        if meta.thanos.get("source") == "compactor":  # as Thanos's compactor, for its outputs
            stats = index_stats(series_refs, np.array(counts, dtype=np.int64), c_ref)
            if stats:
                meta.thanos["index_stats"] = stats
    write_meta(tmp, meta)
    return meta


def index_stats(series_refs: np.ndarray, chunk_counts: np.ndarray, chunk_refs: np.ndarray
                ) -> dict[str, int]:
    """Thanos's ``index_stats`` the way its compactor estimates them (its index health
    check): ``series_max_size`` = the largest gap between consecutive series entries,
    ``chunk_max_size`` = the largest gap between a series' consecutive chunks in one segment,
    each series' last two chunks left out. Zero estimates are left out, as in Thanos."""
    out: dict[str, int] = {}
    if len(series_refs) > 1:
        out["series_max_size"] = int(np.diff(series_refs).max()) * 16
    n = int(chunk_counts.sum())
    first = np.repeat(np.cumsum(chunk_counts) - chunk_counts, chunk_counts)
    last_pairable = np.repeat(chunk_counts, chunk_counts) - 3  # position i pairs with i + 1
    pair = np.flatnonzero((np.arange(n) - first) <= last_pairable)
    if len(pair):
        refs = chunk_refs.astype(np.int64)
        same_seg = (refs[pair] >> 32) == (refs[pair + 1] >> 32)
        gaps = (refs[pair + 1] - refs[pair])[same_seg]
        if len(gaps):
            out["chunk_max_size"] = int(gaps.max())
    return {k: v for k, v in out.items() if v > 0}


def cut_chunks(ts: np.ndarray, vals: np.ndarray, mint: int, maxt: int,
               samples_per_chunk: int = SAMPLES_PER_CHUNK) -> list[ChunkData]:
    """XOR chunks of ``samples_per_chunk`` samples from the samples inside [mint, maxt)."""
    ts = np.asarray(ts, dtype=np.int64)
    vals = np.asarray(vals, dtype=np.float64)
    if len(ts) != len(vals):
        raise ValueError("timestamps and values differ in length")
    if len(ts) > 1 and not np.all(ts[1:] > ts[:-1]):
        raise ValueError("timestamps must be strictly increasing")
    a, z = np.searchsorted(ts, [mint, maxt], side="left")
    out: list[ChunkData] = []
    for i in range(int(a), int(z), samples_per_chunk):
        j = min(i + samples_per_chunk, int(z))
        out.append((int(ts[i]), int(ts[j - 1]), encode(ts[i:j], vals[i:j])))
    return out


def write_block_from_samples(dir: Path,
                             series_samples: Iterable[tuple[Labels, np.ndarray, np.ndarray]],
                             mint: int, maxt: int, *, thanos_meta: dict[str, Any] | None = None,
                             ulid: str | None = None,
                             samples_per_chunk: int = SAMPLES_PER_CHUNK) -> BlockMeta:
    """Like :func:`write_block` from raw samples: samples outside [mint, maxt) are dropped,
    so no chunk crosses the block boundary; each series is cut into 120-sample chunks."""
    def gen() -> Iterator[tuple[Labels, list[ChunkData]]]:
        for lbls, ts, vals in series_samples:
            yield lbls, cut_chunks(ts, vals, mint, maxt, samples_per_chunk)
    return write_block(dir, gen(), mint, maxt, thanos_meta=thanos_meta, ulid=ulid)


# ---------------------------------------------------------------------------- reading


class BlockReader:
    """Opens one block directory: meta, index (mmap) and chunk segments (mmap)."""

    def __init__(self, block_dir: Path, verify_chunk_crc: bool = True) -> None:
        self.dir = Path(block_dir)
        self.meta = read_meta(self.dir)
        with open(self.dir / INDEX_FILENAME, "rb") as f:
            self._index_map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self.index = IndexReader(self._index_map)
            self.chunks = ChunkReader(self.dir / CHUNKS_DIRNAME, verify_chunk_crc)
        except BaseException:
            self._index_map.close()
            raise

    def series(self, mint: int, maxt: int, matchers: Sequence[Matcher]
               ) -> list[tuple[Labels, list[ChunkData]]]:
        """Series matching ``matchers`` with their chunks overlapping [mint, maxt] (inclusive),
        sorted by labels; series with no such chunk are left out."""
        out: list[tuple[Labels, list[ChunkData]]] = []
        if maxt < self.meta.min_time or mint >= self.meta.max_time:
            return out
        ir, cr = self.index, self.chunks
        for ref in ir.select(matchers).tolist():
            lbls, metas = ir.series(ref)
            chunks = []
            for a, z, cref in metas:
                if a <= maxt and z >= mint:
                    enc, data = cr.chunk_with_encoding(cref)
                    if enc in _HISTOGRAM_ENCODINGS:
                        data = EncodedChunk(data, enc)  # native histograms keep their encoding
                    elif enc != ENCODING_XOR:
                        raise ValueError(f"series {lbls}: chunk encoding {enc} is not supported")
                    chunks.append((a, z, data))
            if chunks:
                out.append((lbls, chunks))
        return out

    def iter_series(self, matchers: Sequence[Matcher] = ()
                    ) -> Iterator[tuple[Labels, list[tuple[int, int, int, bytes]]]]:
        """Every matching series in label order with all its chunks as
        ``(mint, inclusive maxt, encoding byte, data)`` -- any encoding (the compactor reads
        downsampled blocks through this)."""
        ir, cr = self.index, self.chunks
        for ref in ir.select(matchers).tolist():
            lbls, metas = ir.series(ref)
            yield lbls, [(a, z, *cr.chunk_with_encoding(c)) for a, z, c in metas]

    def close(self) -> None:
        self.chunks.close()
        del self.index
        self._index_map.close()

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
