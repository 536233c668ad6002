"""Compact (version 2) WAL payloads: any record type described as columns, encoded in numpy.

A record type declares a :class:`Layout`: its columns in order, each ``"delta"`` (int64 ids or
timestamps: the first value in full, then zigzag deltas), ``"xor"`` (float64 bits, each XORed
with the previous one, as Gorilla does) and optionally a trailing list of byte blobs. Every
column is then stored in the fewest whole bytes its largest value needs (0..8, one width byte
per column) and *byte-shuffled*: all low bytes first, then all second bytes, ...; the high
bytes of deltas and XORs are mostly zero, so the snappy pass over the frame squeezes them out.
Everything is a few numpy operations over the whole record -- no per-sample Python.

Payload of one record::

    u32 n | per column: u8 width, [delta: i64 first value if n], width x (n or n-1) shuffled bytes
          | [blobs: u8 width, n shuffled lengths, the blobs joined]

A new record type needs only a layout; it gets both the compact encoding and compression.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np


_U4 = struct.Struct("<I")
_I8 = struct.Struct("<q")
_LE_U64 = np.dtype("<u8")
_LE_I64 = np.dtype("<i8")
_LE_F64 = np.dtype("<f8")
# Rows per record, both ways: a corrupt row count (only past a CRC collision) must not make
# replay allocate without bound. Requests and checkpoint batches stay far below it.
MAX_ROWS = 1 << 28


class RecordDecodeError(ValueError):
    """A payload whose internal sizes do not add up (only reachable past a CRC collision or a bug)."""


@dataclass(frozen=True)
class Layout:
    """Columns of one record type, in payload order, and whether byte blobs follow them."""

    columns: tuple[str, ...]  # each "delta" (int64) or "xor" (float64)
    blobs: bool = False


def _width(u: np.ndarray) -> int:
    return (int(u.max()).bit_length() + 7) // 8 if len(u) else 0


def _shuffled(u: np.ndarray) -> list:
    """Width byte + the low ``width`` bytes of each uint64, grouped by byte position."""
    w = _width(u)
    if w == 0:
        return [bytes((0,))]
    planes = np.ascontiguousarray(u, dtype=_LE_U64).view(np.uint8).reshape(len(u), 8)[:, :w]
    return [bytes((w,)), np.ascontiguousarray(planes.T)]


def _unshuffled(buf: memoryview, off: int, end: int, n: int) -> tuple[np.ndarray, int]:
    """Inverse of :func:`_shuffled` for ``n`` values; returns uint64 values and the next offset."""
    if off >= end:
        raise RecordDecodeError("compact column truncated")
    w = buf[off]
    off += 1
    if w > 8:
        raise RecordDecodeError(f"compact column width {w}")
    stop = off + w * n
    if stop > end:
        raise RecordDecodeError("compact column runs past record")
    out = np.zeros((n, 8), dtype=np.uint8)
    if w:
        planes = np.frombuffer(buf, dtype=np.uint8, count=w * n, offset=off).reshape(w, n)
        for j in range(w):  # one pass per byte position (<= 8; far faster than one 2-D .T copy)
            out[:, j] = planes[j]
    return out.view(_LE_U64).reshape(n), stop


def _encode_delta(x: np.ndarray) -> list:
    x = np.ascontiguousarray(x, dtype=_LE_I64)
    if not len(x):
        return _shuffled(x.view(_LE_U64))
    d = x[1:] - x[:-1]  # wraps like the cumsum that undoes it
    zz = ((d << 1) ^ (d >> 63)).view(_LE_U64)
    return [_I8.pack(int(x[0])), *_shuffled(zz)]


def _decode_delta(buf: memoryview, off: int, end: int, n: int) -> tuple[np.ndarray, int]:
    if not n:
        u, off = _unshuffled(buf, off, end, 0)
        return u.view(_LE_I64), off
    if end - off < 8:
        raise RecordDecodeError("compact column truncated")
    (first,) = _I8.unpack_from(buf, off)
    zz, off = _unshuffled(buf, off + 8, end, n - 1)
    d = (zz >> np.uint64(1)) ^ (np.uint64(0) - (zz & np.uint64(1)))
    out = np.empty(n, dtype=_LE_I64)
    out[0] = first
    out[1:] = d.view(_LE_I64)
    return np.cumsum(out, out=out), off


def _encode_xor(v: np.ndarray) -> list:
    bits = np.ascontiguousarray(v, dtype=_LE_F64).view(_LE_U64)
    x = bits.copy()
    x[1:] ^= bits[:-1]
    return _shuffled(x)


def _decode_xor(buf: memoryview, off: int, end: int, n: int) -> tuple[np.ndarray, int]:
    x, off = _unshuffled(buf, off, end, n)
    return np.bitwise_xor.accumulate(x).view(_LE_F64), off


_ENCODERS = {"delta": _encode_delta, "xor": _encode_xor}
_DECODERS = {"delta": _decode_delta, "xor": _decode_xor}


def encode(layout: Layout, columns: list[np.ndarray], blobs: list[bytes] | None = None) -> list:
    """Buffers whose concatenation is the compact payload of one record."""
    n = len(columns[0]) if columns else len(blobs or ())
    if n > MAX_ROWS:
        raise ValueError(f"WAL record of {n} rows is too large (at most {MAX_ROWS})")
    if len(columns) != len(layout.columns) or any(len(c) != n for c in columns):
        raise ValueError(f"record columns do not match layout {layout.columns}")
    parts: list = [_U4.pack(n)]
    for kind, col in zip(layout.columns, columns):
        parts += _ENCODERS[kind](col)
    if layout.blobs:
        if blobs is None or len(blobs) != n:
            raise ValueError(f"record has {n} rows but {len(blobs or ())} blobs")
        parts += _shuffled(np.fromiter(map(len, blobs), dtype=_LE_U64, count=n))
        parts.append(b"".join(blobs))
    return parts


def decode(layout: Layout, buf: memoryview, off: int, end: int
           ) -> tuple[list[np.ndarray], list[bytes] | None, int]:
    """Inverse of :func:`encode`: (columns, blobs or None, offset after the payload)."""
    if end - off < 4:
        raise RecordDecodeError("compact payload too short")
    (n,) = _U4.unpack_from(buf, off)
    off += 4
    if n > MAX_ROWS:
        raise RecordDecodeError(f"compact record claims {n} rows")
    cols = []
    for kind in layout.columns:
        col, off = _DECODERS[kind](buf, off, end, n)
        cols.append(col)
    blobs = None
    if layout.blobs:
        lens, off = _unshuffled(buf, off, end, n)
        ends = np.cumsum(lens.view(_LE_I64))
        total = int(ends[-1]) if n else 0
        if (lens > np.uint64(end - off)).any() or total > end - off:
            raise RecordDecodeError("compact blobs run past record")
        blob = bytes(buf[off:off + total])
        blobs = [blob[s:e] for s, e in zip((ends - lens.view(_LE_I64)).tolist(), ends.tolist())]
        off += total
    return cols, blobs, off
