"""HTTP/2 framing shared by our gRPC client and server (RFC 9113, RFC 7541).

Only what gRPC needs: frames are built and split here, header blocks we send are HPACK literals
without indexing (no dynamic table state to keep for them), header blocks we receive are decoded
by the ``hpack`` library (peers use Huffman coding and the dynamic table).
"""
from __future__ import annotations

import struct

import hpack

from storeapi._wire import split_frames as _split_frames

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types, flags and error codes.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x7, 0x8, 0x9

# SETTINGS identifiers.
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)

MAX_WINDOW = MAX_STREAM_ID = (1 << 31) - 1
DEFAULT_WINDOW = 65535
DEFAULT_FRAME = 16384


_FRAME_HEAD = struct.Struct(">HBBBI")  # length (high 16 bits, low 8 bits), type, flags, stream


class ProtocolError(Exception):
    """The peer broke HTTP/2: the connection is closed with ``code`` (a GOAWAY error code)."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def frame(typ: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    if n >> 24 or not 0 <= sid < 1 << 32:
        raise OverflowError("frame payload or stream id out of range")
    return _FRAME_HEAD.pack(n >> 8, n & 0xFF, typ, flags, sid) + payload


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big")
                                          for k, v in values.items()))


def window_update(sid: int, n: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, n.to_bytes(4, "big"))


def rst_stream(sid: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, sid, code.to_bytes(4, "big"))


def goaway(last_sid: int, code: int) -> bytes:
    return frame(GOAWAY, 0, 0, last_sid.to_bytes(4, "big") + code.to_bytes(4, "big"))


def split_frames(buf: bytes | bytearray, max_frame: int
                 ) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """The complete frames at the front of ``buf`` as (type, flags, stream id, payload), and
    how many bytes they took; ProtocolError for a frame longer than ``max_frame``. Split in C
    (storeapi._wire): every read of both our client and server goes through here."""
    frames, used, bad = _split_frames(buf, max_frame)
    if bad >= 0:
        raise ProtocolError(f"frame of {bad} bytes", FRAME_SIZE_ERROR)
    return frames, used


def unpad(flags: int, payload: bytes) -> bytes:
    """A DATA or HEADERS payload without its padding (and HEADERS' priority fields are left)."""
    if flags & PADDED:
        if not payload or payload[0] >= len(payload):
            raise ProtocolError("padding longer than the frame")
        return payload[1:len(payload) - payload[0]]
    return payload


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise ProtocolError("SETTINGS of a bad length", FRAME_SIZE_ERROR)
    return [(int.from_bytes(payload[i:i + 2], "big"), int.from_bytes(payload[i + 2:i + 6], "big"))
            for i in range(0, len(payload), 6)]


def hpack_int(n: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer with an N-bit prefix; ``first`` holds the pattern bits above it."""
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes((first | n,))
    out = bytearray((first | limit,))
    n -= limit
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def literal(name: bytes | int, value: str) -> bytes:
    """A header field as a literal without indexing, its name given by static-table index or
    as bytes (lower case)."""
    v = value.encode()
    head = (hpack_int(name, 4) if isinstance(name, int)
            else b"\x00" + hpack_int(len(name), 7) + name)
    return head + hpack_int(len(v), 7) + v


def header_frames(sid: int, block: bytes, max_frame: int, end_stream: bool) -> list[bytes]:
    """HEADERS (+ CONTINUATION) frames carrying ``block``."""
    out = []
    for i in range(0, max(len(block), 1), max_frame):
        flags = END_HEADERS if i + max_frame >= len(block) else 0
        if i == 0:
            out.append(frame(HEADERS, flags | (END_STREAM if end_stream else 0), sid,
                             block[i:i + max_frame]))
        else:
            out.append(frame(CONTINUATION, flags, sid, block[i:i + max_frame]))
    return out


_PLAIN_FLAGS = END_HEADERS | PADDED | PRIORITY_FLAG


class HeaderBlocks:
    """Header blocks put together from HEADERS and CONTINUATION frames (nothing else may come
    between them), at most ``limit`` bytes each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # (sid, HEADERS flags, block) of a block waiting for its CONTINUATION frames
        self.pending: tuple[int, int, bytearray] | None = None

    def check(self, typ: int) -> None:
        if self.pending is not None and typ != CONTINUATION:
            raise ProtocolError("expected CONTINUATION")

    def feed(self, typ: int, flags: int, sid: int, payload: bytes
             ) -> tuple[int, int, bytes] | None:
        """A HEADERS or CONTINUATION frame; the block as (stream id, HEADERS flags, bytes)
        once its END_HEADERS came."""
        if typ == HEADERS:
            if not sid:
                raise ProtocolError("HEADERS on stream 0")
            if flags & _PLAIN_FLAGS == END_HEADERS:  # the usual whole block: no copy
                if len(payload) > self.limit:
                    raise ProtocolError("header block too large")
                return sid, flags, payload
            payload = unpad(flags, payload)
            self.pending = (sid, flags, bytearray(payload[5:] if flags & PRIORITY_FLAG
                                                   else payload))
        elif self.pending is None or self.pending[0] != sid:
            raise ProtocolError("unexpected CONTINUATION")
        else:
            self.pending[2].extend(payload)
        if len(self.pending[2]) > self.limit:
            raise ProtocolError("header block too large")
        if not flags & END_HEADERS:
            return None
        sid, first_flags, block = self.pending
        self.pending = None
        return sid, first_flags, bytes(block)


class HeaderDecoder:
    """HPACK decoding of one connection's received header blocks (``hpack.Decoder``), with
    the blocks that leave the dynamic table empty -- literal-only ones, as our client and
    servers send on every call -- decoded once and then looked up: they decode the same
    every time. Blocks that use the dynamic table (grpcio's, Go's) always go through the
    decoder, in order. At most ``keep`` blocks of at most ``max_block_bytes`` each are kept
    (a server's peer could otherwise park ``keep`` × 64 KiB on every connection)."""

    def __init__(self, max_header_list_size: int, keep: int, max_block_bytes: int = 4096
                 ) -> None:
        self.decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self.known: dict[bytes, list[tuple[str, str]]] = {}
        self._keep = keep
        self._max_block = max_block_bytes

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        table = self.decoder.header_table
        if table.dynamic_entries:
            return self.decoder.decode(block, raw=False)
        headers = self.known.get(block)
        if headers is None:
            size = table.maxsize
            headers = self.decoder.decode(block, raw=False)
            if not table.dynamic_entries and table.maxsize == size and \
                    len(self.known) < self._keep and len(block) <= self._max_block:
                self.known[bytes(block)] = headers
        return headers
