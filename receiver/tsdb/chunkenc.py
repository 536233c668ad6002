"""Prometheus XOR chunks with numpy in and out.

The codec and the per-series head store live in C (``_chunkenc``) because encoding and decoding
are per-sample bit twiddling; this module only converts between numpy arrays and the raw
int64/float64 buffers the C side speaks. Chunk bytes are exactly Prometheus's
``XORChunk.Bytes()`` (2-byte big-endian sample count, then the Gorilla bitstream).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ._chunkenc import (
    DUPLICATE,
    MAX_CHUNK_SAMPLES,
    OK,
    OUT_OF_ORDER,
    SAME_DUPLICATE,
    TOO_OLD,
    HeadChunks,
    xor_decode,
    xor_decode_many,
    xor_decode_series,
    xor_encode,
)

__all__ = [
    "DUPLICATE", "MAX_CHUNK_SAMPLES", "OK", "OUT_OF_ORDER", "SAME_DUPLICATE", "TOO_OLD",
    "HeadChunks", "xor_encode", "xor_decode", "xor_decode_many",
    "encode", "decode", "decode_many", "decode_series", "head_samples", "num_samples",
]

# Chunk encoding byte used in block segment files and chunk metas (1 = XOR).
ENCODING_XOR = 1

BytesLike = bytes | bytearray | memoryview


def encode(ts: npt.ArrayLike, vals: npt.ArrayLike) -> bytes:
    """One XOR chunk holding the given samples (at most 65535)."""
    return xor_encode(np.ascontiguousarray(ts, dtype=np.int64),
                      np.ascontiguousarray(vals, dtype=np.float64))


def _arrays(pair: tuple[bytes, bytes]) -> tuple[np.ndarray, np.ndarray]:
    # Read-only views on the bytes the C side filled: no copy.
    return np.frombuffer(pair[0], dtype=np.int64), np.frombuffer(pair[1], dtype=np.float64)


def decode(chunk: BytesLike) -> tuple[np.ndarray, np.ndarray]:
    """All samples of one chunk as (int64 timestamps, float64 values); read-only arrays."""
    return _arrays(xor_decode(chunk))


def decode_many(chunks: Sequence[BytesLike], mint: int, maxt: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Samples with mint <= t <= maxt from one series' chunks (given in time order)."""
    return _arrays(xor_decode_many(chunks, mint, maxt))


def decode_series(series: Sequence[Sequence], mint: int, maxt: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples with mint <= t <= maxt of many series in one call, laid end to end: (ts, vals,
    offsets int64 [n+1]). Each series is its chunk list in time order, each chunk its bytes or
    a (mint, maxt, bytes) tuple as StoreAPI clients hold them."""
    ts, vals, offs = xor_decode_series(series, mint, maxt)
    return (np.frombuffer(ts, dtype=np.int64), np.frombuffer(vals, dtype=np.float64),
            np.frombuffer(offs, dtype=np.int64))


def head_samples(head: HeadChunks, ref: int, mint: int, maxt: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Samples of one head series in [mint, maxt], decoded straight from C memory."""
    return _arrays(head.samples(ref, mint, maxt))


def num_samples(chunk: BytesLike) -> int:
    """The sample count from a chunk's 2-byte header."""
    return int.from_bytes(bytes(chunk[:2]), "big")
