"""Prometheus's streamed remote-read framing, parsed as the bytes arrive.

Each frame of an ``application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse``
body is ``uvarint(len) | CRC-32C(data), big-endian | data``; ``data`` is one
ChunkedReadResponse. A frame longer than the limit (Prometheus's own default: 50 MB) or with a
wrong checksum ends the stream with an error instead of growing a buffer without bound.
"""
from __future__ import annotations

from receiver.tsdb.crc32c import crc32c

DEFAULT_FRAME_LIMIT = 50 * 1024 * 1024  # Prometheus's config.DefaultChunkedReadLimit


class FrameError(ValueError):
    """The stream is not a valid chunked remote-read response."""


class FrameReader:
    """Feed body bytes in any pieces; complete frames come out in order."""

    def __init__(self, limit: int = DEFAULT_FRAME_LIMIT) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        while True:
            head = _uvarint(buf, pos)
            if head is None:
                break  # the size itself has not fully arrived
            size, i = head
            if size > self._limit:
                raise FrameError(f"frame of {size} bytes exceeds the limit of {self._limit}")
            end = i + 4 + size
            if end > len(buf):
                break
            want = int.from_bytes(buf[i:i + 4], "big")
            frame = bytes(buf[i + 4:end])
            if crc32c(frame) != want:
                raise FrameError("frame checksum mismatch")
            frames.append(frame)
            pos = end
        if pos:
            del buf[:pos]
        return frames

    def finish(self) -> None:
        """The body ended: leftover bytes are a truncated frame."""
        if self._buf:
            raise FrameError(f"stream ended inside a frame ({len(self._buf)} bytes left)")


def _uvarint(buf: bytearray, pos: int) -> tuple[int, int] | None:
    """(value, position after it), or None when the varint is not complete yet."""
    value, shift = 0, 0
    for i in range(pos, min(len(buf), pos + 10)):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i + 1
        shift += 7
    if len(buf) - pos >= 10:
        raise FrameError("frame size varint overflows")
    return None
