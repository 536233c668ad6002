"""gRPC message compression ("grpc-encoding") that grpcio's core lacks: snappy as Thanos sends it.

Thanos compresses forwarded writes with snappy by default (``--receive.grpc-compression``), using
the snappy *framing* format (stream identifier chunk, then compressed/uncompressed chunks of at
most 64 KiB each). gzip and deflate are the standard gRPC encodings. Decompression is bounded: a
message that would inflate past the receiver's limit is refused before it is inflated.
"""
from __future__ import annotations

import zlib

import cramjam

IDENTITY = "identity"
SNAPPY = "snappy"
GZIP = "gzip"
DEFLATE = "deflate"
ACCEPTED_ENCODINGS = (IDENTITY, SNAPPY, GZIP, DEFLATE)

_SNAPPY_STREAM_ID = b"\xff\x06\x00\x00sNaPpY"
_SNAPPY_MAX_CHUNK = 65536


class MessageTooLarge(ValueError):
    """The decompressed message exceeds the configured limit."""


def snappy_framed_size(data: bytes) -> int:
    """Total uncompressed size of a snappy framing-format stream, read from the chunk headers
    (one step per chunk of up to 64 KiB, so cheap); raises ValueError if the framing is broken."""
    mv = memoryview(data)
    pos, total, n = 0, 0, len(data)
    while pos < n:
        if n - pos < 4:
            raise ValueError("snappy: truncated chunk header")
        kind = mv[pos]
        length = mv[pos + 1] | (mv[pos + 2] << 8) | (mv[pos + 3] << 16)
        body = pos + 4
        if body + length > n:
            raise ValueError("snappy: truncated chunk")
        if kind == 0x00:  # compressed: crc32c(4) + raw block whose varint header is its size
            size, shift, i = 0, 0, body + 4
            while True:
                if i >= body + length or shift > 28:
                    raise ValueError("snappy: bad block length")
                b = mv[i]
                size |= (b & 0x7F) << shift
                i += 1
                if b < 0x80:
                    break
                shift += 7
            if size > _SNAPPY_MAX_CHUNK:
                raise ValueError("snappy: chunk larger than 64 KiB")
            total += size
        elif kind == 0x01:  # uncompressed: crc32c(4) + data
            if length < 4:
                raise ValueError("snappy: bad uncompressed chunk")
            total += length - 4
        elif kind <= 0x7F:
            raise ValueError(f"snappy: reserved unskippable chunk type {kind:#x}")
        pos = body + length
    return total


def _snappy_decompress(data: bytes, limit: int) -> bytes:
    if not data:
        return b""
    if data.startswith(_SNAPPY_STREAM_ID):
        if snappy_framed_size(data) > limit:
            raise MessageTooLarge(f"decompressed message larger than {limit} bytes")
        return bytes(cramjam.snappy.decompress(data))
    # Raw block format (some clients): the varint header states the size.
    if cramjam.snappy.decompress_raw_len(data) > limit:
        raise MessageTooLarge(f"decompressed message larger than {limit} bytes")
    return bytes(cramjam.snappy.decompress_raw(data))


def decompress(encoding: str, data: bytes, limit: int) -> bytes:
    """The message ``data`` compressed with ``encoding``, inflated to at most ``limit`` bytes;
    ValueError (MessageTooLarge over the limit) if it cannot be."""
    if encoding == SNAPPY:
        try:
            return _snappy_decompress(data, limit)
        except cramjam.DecompressionError as e:
            raise ValueError(f"snappy: {e}") from None
    if encoding in (GZIP, DEFLATE):
        d = zlib.decompressobj(wbits=31 if encoding == GZIP else 15)
        try:
            out = d.decompress(data, limit + 1)
        except zlib.error as e:
            raise ValueError(f"{encoding}: {e}") from None
        if len(out) > limit:
            raise MessageTooLarge(f"decompressed message larger than {limit} bytes")
        if not d.eof:
            raise ValueError(f"{encoding}: truncated message")
        return out
    raise ValueError(f"unsupported grpc-encoding {encoding!r}")


def compress(encoding: str, data: bytes) -> bytes:
    """``data`` compressed with ``encoding`` as a gRPC peer expects it (snappy: framing format)."""
    if encoding == SNAPPY:
        return bytes(cramjam.snappy.compress(data))
    if encoding == GZIP:
        c = zlib.compressobj(wbits=31)
        return c.compress(data) + c.flush()
    if encoding == DEFLATE:
        return zlib.compress(data)
    raise ValueError(f"unsupported grpc-encoding {encoding!r}")
