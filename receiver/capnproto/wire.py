"""Cap'n Proto messages on a packed stream: framing, reading small structs, building them.

The RPC envelope (rpc.capnp's Message, Call, Return, ...) is a handful of small structs per
write, read and written here in Python; the bulk of a write (its WriteRequest) is converted
by ``_capnpc`` in C. Layouts (data words, pointer counts, byte offsets) are those the capnp
compiler assigns to rpc.capnp and write_request.capnp.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from . import _capnpc

MAX_SEGMENTS = 512


class FrameError(ValueError):
    """The stream is not a sequence of well-formed messages; the connection must end."""


class PackedFrames:
    """Splits a packed byte stream into unpacked framed messages (segment table + segments),
    never holding more than one message of at most ``max_message_bytes`` unpacked."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._raw = bytearray()
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._raw += data

    @property
    def buffered(self) -> int:
        """Bytes held for the unfinished message."""
        return len(self._raw) + len(self._buf)

    @property
    def partial(self) -> bool:
        """Bytes of an unfinished message are buffered."""
        return bool(self._raw or self._buf)

    def _size(self) -> tuple[int, bool]:
        """Bytes the current message needs, and whether that is its final size."""
        if len(self._buf) < 8:
            return 8, False
        n = struct.unpack_from("<I", self._buf)[0] + 1
        if n > MAX_SEGMENTS:
            raise FrameError(f"message has {n} segments (at most {MAX_SEGMENTS})")
        header = (4 + 4 * n + 7) // 8 * 8
        if len(self._buf) < header:
            return header, False
        total = header + 8 * sum(struct.unpack_from(f"<{n}I", self._buf, 4))
        if total > self.max_message_bytes:
            raise FrameError(f"message of {total} bytes exceeds the {self.max_message_bytes} byte limit")
        return total, True

    def next(self) -> bytes | None:
        """The next complete message, or None until more bytes arrive."""
        while True:
            need, final = self._size()
            have = len(self._buf)
            if final and have >= need:
                msg = bytes(self._buf[:need]) if have > need else bytes(self._buf)
                del self._buf[:need]
                return msg
            if have >= need:
                continue
            if not self._raw:
                return None
            out, used = _capnpc.unpack(self._raw, need - have)
            if used == 0:
                return None  # an incomplete packing unit
            del self._raw[:used]
            if final and have + len(out) == need:  # the rest of the message in one piece
                msg = bytes(self._buf) + out
                self._buf.clear()
                return msg
            self._buf += out


def frame(words: bytes | bytearray) -> bytes:
    """One single-segment message, packed for the wire."""
    return _capnpc.pack(struct.pack("<II", 0, len(words) // 8) + words)


@dataclass(frozen=True)
class Struct:
    """A struct inside a framed message: data section of ``dw`` words, then ``pc`` pointers."""

    msg: bytes
    seg: int
    base: int  # byte offset of the segment in msg
    word: int
    dw: int
    pc: int

    def _int(self, byte: int, size: int, signed: bool = False) -> int:
        if byte + size > self.dw * 8:
            return 0  # a field beyond a (shorter, older) data section reads as its default
        at = self.base + self.word * 8 + byte
        return int.from_bytes(self.msg[at:at + size], "little", signed=signed)

    def u16(self, byte: int) -> int:
        return self._int(byte, 2)

    def u32(self, byte: int) -> int:
        return self._int(byte, 4)

    def u64(self, byte: int) -> int:
        return self._int(byte, 8)

    def pointer_at(self, i: int) -> tuple[int, int] | None:
        """(segment, word) of pointer ``i``, None if the struct has no such pointer."""
        return (self.seg, self.word + self.dw + i) if i < self.pc else None

    def pointer(self, i: int) -> tuple | None:
        at = self.pointer_at(i)
        return None if at is None else _capnpc.pointer(self.msg, *at)

    def struct(self, i: int) -> "Struct | None":
        p = self.pointer(i)
        if p is None:
            return None
        if p[0] != 1:
            raise ValueError("capnp: expected a struct pointer")
        return Struct(self.msg, p[1], _segment_base(self.msg, p[1]), p[2], p[3], p[4])

    def text(self, i: int) -> str:
        p = self.pointer(i)
        if p is None:
            return ""
        if p[0] != 2 or p[3] != 2:
            raise ValueError("capnp: expected text")
        at = _segment_base(self.msg, p[1]) + p[2] * 8
        return self.msg[at:at + p[4]].rstrip(b"\0").decode("utf-8", "replace")

    def structs(self, i: int) -> list["Struct"]:
        """The elements of a list of structs (the first 64: RPC tables hold one or two)."""
        p = self.pointer(i)
        if p is None:
            return []
        if p[0] != 2 or p[3] != 7:
            raise ValueError("capnp: expected a list of structs")
        _, seg, word, _, count, dw, pc = p
        base = _segment_base(self.msg, seg)
        return [Struct(self.msg, seg, base, word + k * (dw + pc), dw, pc) for k in range(min(count, 64))]


def _segment_base(msg: bytes, seg: int) -> int:
    return _capnpc.segments(msg)[seg][0]


def root(msg: bytes) -> Struct:
    """The root struct of a framed message (ValueError if it has none)."""
    p = _capnpc.pointer(msg, 0, 0)
    if p is None or p[0] != 1:
        raise ValueError("capnp: message root is not a struct")
    return Struct(msg, p[1], _segment_base(msg, p[1]), p[2], p[3], p[4])


class Builder:
    """A single-segment message built front to back; word 0 is the root pointer."""

    def __init__(self) -> None:
        self.words = bytearray(8)

    def _alloc(self, n: int) -> int:
        at = len(self.words) // 8
        self.words += bytes(8 * n)
        return at

    def _pointer(self, at: int, target: int, low_bits: int, high: int) -> None:
        off = (target - at - 1) << 2 | low_bits
        struct.pack_into("<II", self.words, at * 8, off & 0xFFFFFFFF, high)

    def struct(self, at: int, dw: int, pc: int) -> int:
        """A new struct that the pointer at word ``at`` points to; returns its first word."""
        target = self._alloc(dw + pc)
        self._pointer(at, target, 0, dw | pc << 16)
        return target

    def attach(self, at: int, image: bytes, dw: int, pc: int) -> None:
        """Place a ready-made struct image (self-contained, relative pointers) and point to it."""
        target = len(self.words) // 8
        self.words += image
        self._pointer(at, target, 0, dw | pc << 16)

    def struct_list(self, at: int, n: int, dw: int, pc: int) -> int:
        """A composite list of ``n`` zeroed structs; returns the first element's word."""
        tag = self._alloc(1 + n * (dw + pc))
        struct.pack_into("<IHH", self.words, tag * 8, n << 2, dw, pc)
        self._pointer(at, tag, 1, 7 | (n * (dw + pc)) << 3)
        return tag + 1

    def text(self, at: int, value: str) -> None:
        if not value:
            return
        raw = value.encode() + b"\0"
        target = self._alloc((len(raw) + 7) // 8)
        self.words[target * 8:target * 8 + len(raw)] = raw
        self._pointer(at, target, 1, 2 | len(raw) << 3)

    def capability(self, at: int, index: int) -> None:
        struct.pack_into("<II", self.words, at * 8, 3, index)

    def put(self, word: int, byte: int, fmt: str, value: int) -> None:
        struct.pack_into("<" + fmt, self.words, word * 8 + byte, value)

    def frame(self) -> bytes:
        return frame(self.words)
