"""Chunk segment files of a Prometheus TSDB block (``<block>/chunks/000001`` ...).

A segment is an 8-byte header (magic ``0x85BD40DD``, version 1, three zero bytes) followed by
records ``uvarint(len(data)) | encoding byte | data | CRC32C(encoding + data)``. A chunk is
addressed by a 64-bit ref: the segment's 0-based position in the sorted file list in the upper
32 bits and the record's byte offset inside that file in the lower 32. Segments are capped at
512 MiB so every offset fits in 32 bits.

Record packing and CRCs run in C (``_blockio``) a batch at a time; Python only cuts segments.
"""
from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from ._blockio import pack_chunks, read_chunk
from .chunkenc import ENCODING_XOR

MAGIC_CHUNKS = 0x85BD40DD
CHUNKS_FORMAT_V1 = 1
SEGMENT_HEADER = struct.pack(">IB3x", MAGIC_CHUNKS, CHUNKS_FORMAT_V1)
SEGMENT_HEADER_SIZE = len(SEGMENT_HEADER)
DEFAULT_SEGMENT_SIZE = 512 * 1024 * 1024

BytesLike = bytes | bytearray | memoryview


class CorruptionError(ValueError):
    """A block file fails a magic, version, bounds or checksum check."""


def segment_name(seq: int) -> str:
    """File name of the 0-based segment ``seq`` (files are numbered from 000001)."""
    return f"{seq + 1:06d}"


def chunk_ref(seq: int, offset: int) -> int:
    return (seq << 32) | offset


class ChunkWriter:
    """Appends chunks to the segment files of one block directory, cutting at ``segment_size``."""

    def __init__(self, dir: Path, segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
        if segment_size > 1 << 32 or segment_size <= SEGMENT_HEADER_SIZE:
            raise ValueError("segment_size must be in (8, 4 GiB]")
        self._dir = Path(dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._limit = segment_size
        self._seq = -1
        self._pos = 0
        self._f: object | None = None
        self.files: list[str] = []
        self.num_samples = 0
        self.num_chunks = 0

    def _cut(self) -> None:
        self._finish_segment()
        self._seq += 1
        name = segment_name(self._seq)
        self._f = open(self._dir / name, "wb", buffering=1 << 20)
        self._f.write(SEGMENT_HEADER)  # type: ignore[attr-defined]
        self._pos = SEGMENT_HEADER_SIZE
        self.files.append(name)

    def _finish_segment(self) -> None:
        if self._f is not None:
            f = self._f
            f.flush()  # type: ignore[attr-defined]
            os.fsync(f.fileno())  # type: ignore[attr-defined]
            f.close()  # type: ignore[attr-defined]
            self._f = None

    def write(self, chunks: Sequence[BytesLike], encoding: int = ENCODING_XOR) -> np.ndarray:
        """Append ``chunks`` (raw chunk data, without the encoding byte); return their refs."""
        refs = np.empty(len(chunks), dtype=np.int64)
        start = 0
        if self._f is None and len(chunks):
            self._cut()
        while start < len(chunks):
            payload, offs, n, ns = pack_chunks(chunks, start, self._pos, self._limit, encoding)
            if n == 0:
                self._cut()
                continue
            self._f.write(payload)  # type: ignore[attr-defined]
            refs[start:start + n] = np.frombuffer(offs, dtype=np.int64) | (self._seq << 32)
            self._pos += len(payload)
            self.num_samples += ns
            start += n
        self.num_chunks += len(chunks)
        return refs

    def close(self) -> list[str]:
        """Flush and fsync; returns the segment file names written."""
        self._finish_segment()
        return self.files

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ChunkReader:
    """Random access to the chunks of a block's ``chunks/`` directory through mmap."""

    def __init__(self, dir: Path, verify_crc: bool = True) -> None:
        self._verify = verify_crc
        self._maps: list[mmap.mmap] = []
        names = sorted(p.name for p in Path(dir).iterdir() if p.name.isdigit())
        try:
            for name in names:
                with open(Path(dir) / name, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size < SEGMENT_HEADER_SIZE:
                        raise CorruptionError(f"chunk segment {name}: shorter than its header")
                    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self._maps.append(m)
                magic, version = struct.unpack_from(">IB", m, 0)
                if magic != MAGIC_CHUNKS:
                    raise CorruptionError(f"chunk segment {name}: bad magic {magic:#x}")
                if version != CHUNKS_FORMAT_V1:
                    raise CorruptionError(f"chunk segment {name}: unsupported version {version}")
        except BaseException:
            self.close()
            raise

    def chunk_with_encoding(self, ref: int) -> tuple[int, bytes]:
        """(encoding byte, chunk data) for a chunk ref."""
        seq, off = ref >> 32, ref & 0xFFFFFFFF
        if seq >= len(self._maps):
            raise CorruptionError(f"chunk ref {ref:#x}: segment {seq} does not exist")
        try:
            return read_chunk(self._maps[seq], off, self._verify)
        except ValueError as e:
            raise CorruptionError(f"chunk segment {segment_name(seq)}: {e}") from None

    def chunk(self, ref: int) -> bytes:
        """The chunk data (e.g. XOR bytes as ``chunkenc.decode`` takes them) for a chunk ref."""
        return self.chunk_with_encoding(ref)[1]

    def close(self) -> None:
        for m in self._maps:
            m.close()
        self._maps = []

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
