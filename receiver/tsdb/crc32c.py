"""CRC-32C (Castagnoli), the checksum of every Prometheus TSDB block section.

Python's ``zlib.crc32`` is the IEEE polynomial, which Prometheus does not use, so the
checksum lives in the small C extension ``_blockio`` (SSE4.2 instruction when the CPU has it,
slicing-by-8 tables otherwise).
"""
from __future__ import annotations

from ._blockio import crc32c as _crc32c

__all__ = ["crc32c"]


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data``; pass a previous result as ``crc`` to checksum in pieces."""
    return _crc32c(data, crc)
