"""Hand-built remote-write protobuf for tests that must send what our encoder never would
(label bytes that are not UTF-8, raw timestamps)."""
from __future__ import annotations

import struct


def uvarint(x: int) -> bytes:
    out = bytearray()
    while x >= 0x80:
        out.append(x & 0x7F | 0x80)
        x >>= 7
    out.append(x)
    return bytes(out)


def ld(num: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return uvarint(num << 3 | 2) + uvarint(len(payload)) + payload


def byte_series(pairs: list[tuple[bytes, bytes]], t: int, v: float) -> bytes:
    """One WriteRequest.timeseries entry with byte labels and one sample at ``t``."""
    labels = b"".join(ld(1, ld(1, n) + ld(2, val)) for n, val in pairs)
    return ld(1, labels + ld(2, b"\x09" + struct.pack("<d", v) + b"\x10" + uvarint(t & (2**64 - 1))))
