"""LEB128 unsigned varints (protobuf's and the TSDB formats'), in one place."""
from __future__ import annotations

_U64 = (1 << 64) - 1
_ONE_BYTE = [bytes([i]) for i in range(0x80)]  # the usual small field (a batch size, a flag)


def uvarint(x: int) -> bytes:
    """Encode ``x``; a negative int64 takes its 10-byte two's-complement form, as in protobuf."""
    if 0 <= x < 0x80:
        return _ONE_BYTE[x]
    x &= _U64
    out = bytearray()
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80)
        x >>= 7
    out.append(x)
    return bytes(out)


def put_uvarint(out: bytearray, x: int) -> None:
    out += uvarint(x)


def uvarint_at(buf: bytes | bytearray | memoryview, i: int, what: str = "uvarint"
               ) -> tuple[int, int] | None:
    """(value, next index) of the uvarint at ``buf[i]``, or None when ``buf`` ends inside it
    (a reader that may fetch more); >64 bits: ValueError."""
    x = shift = 0
    n = len(buf)
    while i < n:
        c = buf[i]
        i += 1
        x |= (c & 0x7F) << shift
        if c < 0x80:
            return x, i
        shift += 7
        if shift > 63:
            raise ValueError(f"{what}: overflows 64 bits")
    return None


def read_uvarint(buf: bytes | bytearray | memoryview, i: int, what: str = "uvarint") -> tuple[int, int]:
    """Decode at ``buf[i]``; returns (value, next index). Truncation or >64 bits: ValueError."""
    r = uvarint_at(buf, i, what)
    if r is None:
        raise ValueError(f"{what}: truncated")
    return r
