"""The client's whole-read path (storeapi._wire.one_stream + _Connection._one_stream) against its
frame-by-frame path: on random and hostile reads both leave the connection, its calls and the
bytes it wrote identical, and neither crashes."""
from __future__ import annotations

import asyncio
import random
import re

import hpack

from storeapi._wire import one_stream
from storeapi.h2client import _LAZY_WAKE_BYTES, _MAX_FRAME, _MAX_HEADERS, H2Channel, _Call, _Connection
from storeapi.h2frames import (CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS,
                               PADDED, PING, RST_STREAM, WINDOW_UPDATE, frame, literal)


class _Wire:
    """The transport side of a connection: what it wrote, and whether it was aborted."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True


_OK = literal(b"grpc-status", "0")
_HEAD = b"\x88" + literal(b"content-type", "application/grpc")  # :status 200 (indexed)
_INDEXED = hpack.Encoder().encode([(":status", "200"), ("x-a", "b")])  # adds to the table


def _block(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.4:
        return _HEAD
    if r < 0.7:
        return _OK + (literal(b"grpc-message", "m%d" % rng.randrange(9)) if rng.random() < .3
                      else b"")
    if r < 0.8:
        return _INDEXED  # the dynamic table in use from here on: every block decoded
    if r < 0.9:
        return rng.randbytes(rng.randrange(0, 12))  # HPACK garbage
    return b""


def _frame(rng: random.Random, sids: list[int], big: bool) -> bytes:
    sid = rng.choice(sids) if rng.random() < 0.95 else rng.choice([0, 2, 99])
    r = rng.random()
    if r < 0.45:
        n = rng.choice([0, 1, 5, 17, 300, 70_000] + ([700_000] if big else []))
        flags = END_STREAM if rng.random() < 0.15 else 0
        if rng.random() < 0.05:
            flags |= rng.choice([PADDED, 0x2, 0x20])
        payload = rng.randbytes(n) if n < 1000 else bytes(n)
        if flags & PADDED:
            payload = bytes([rng.randrange(0, 4)]) + payload
        return frame(DATA, flags, sid, payload)
    if r < 0.8:
        flags = END_HEADERS | (END_STREAM if rng.random() < 0.5 else 0)
        if rng.random() < 0.08:
            flags = rng.choice([0, END_STREAM, END_HEADERS | PADDED, END_HEADERS | 0x20, 0x2 | END_HEADERS])
        return frame(HEADERS, flags, sid, _block(rng))
    if r < 0.85:
        return frame(CONTINUATION, rng.choice([0, END_HEADERS]), sid, _block(rng))
    if r < 0.9:
        return frame(rng.choice([RST_STREAM, WINDOW_UPDATE]), 0, sid, rng.randbytes(4))
    if r < 0.93:
        return frame(rng.choice([PING, GOAWAY]), 0, 0, rng.randbytes(8))
    if r < 0.97:
        return frame(rng.randrange(10, 256), rng.randrange(256), sid, rng.randbytes(rng.randrange(6)))
    head = rng.randbytes(9)  # a hostile header: any length, type, flags
    return head + rng.randbytes(rng.randrange(0, 20))


def _answer(rng: random.Random, sid: int) -> list[bytes]:
    """A well-formed answer of one stream: headers, a few DATA frames, trailers."""
    frames = [frame(HEADERS, END_HEADERS, sid, _HEAD)]
    for _ in range(rng.randrange(0, 4)):
        frames.append(frame(DATA, 0, sid, rng.randbytes(rng.choice([0, 5, 40, 3000]))))
    frames.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, _OK))
    return frames


def _reads(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    if rng.random() < 0.6:  # at frame boundaries, a few frames per read
        out, i = [], 0
        while i < len(frames):
            k = rng.randrange(1, 4)
            out.append(b"".join(frames[i:i + k]))
            i += k
        return out
    data = b"".join(frames)
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(4)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def _state(conn: _Connection, calls: list[_Call], wire: _Wire) -> tuple:
    return (
        [(c.sid, dict(c.headers), list(c.chunks), c.size, c.ended, c.done,
          _no_address(repr(c.error)), c.unacked, c.waiter.done()) for c in calls],
        sorted(conn.calls), conn.conn_unacked, conn.closed, _no_address(conn.reason),
        conn.draining, bytes(conn.buf), wire.out, wire.aborted, conn.blocks.pending,
        conn.peer_window)


def _no_address(text: str) -> str:
    """An error message without object addresses (hpack's name the memoryview it failed in:
    each connection's own, equal only when the allocator happens to reuse one)."""
    return re.sub(r" at 0x[0-9a-f]+", " at 0x?", text)


async def _pair(rng: random.Random, max_message: int) -> tuple:
    """Two connections, the whole-read path on in one only, with the same calls open."""
    loop = asyncio.get_running_loop()
    out = []
    kinds = [(rng.random() < 0.5, rng.random() < 0.5) for _ in range(3)]
    for fast in (True, False):
        wire = _Wire()
        conn = _Connection(H2Channel("127.0.0.1:1", max_message_bytes=max_message))
        conn.connection_made(wire)
        conn.fast = fast
        calls = []
        for streaming, lazy in kinds:
            call = _Call(streaming, 0, lazy)
            conn._add_stream(call)
            call.waiter = loop.create_future()
            calls.append(call)
        out.append((conn, calls, wire))
    return out


def test_whole_reads_match_the_frame_by_frame_path_on_random_and_hostile_reads():
    rng = random.Random(1313)
    taken = 0

    async def one_case(case: int) -> int:
        max_message = rng.choice([64, 4096, 256 << 20])
        (fconn, fcalls, fwire), (sconn, scalls, swire) = await _pair(rng, max_message)
        sids = [c.sid for c in fcalls]
        frames: list[bytes] = []
        for _ in range(rng.randrange(1, 6)):
            if rng.random() < 0.5:
                frames += _answer(rng, rng.choice(sids))
            else:
                frames.append(_frame(rng, sids, big=case % 7 == 0))
        whole = 0
        for read in _reads(rng, frames):
            if not fconn.buf and one_stream(read, _MAX_FRAME, _MAX_HEADERS) is not None:
                whole += 1
            fconn.data_received(read)
            sconn.data_received(read)
            assert _state(fconn, fcalls, fwire) == _state(sconn, scalls, swire), (case, frames)
        return whole

    async def main() -> int:
        return sum([await one_case(i) for i in range(1500)])

    taken = asyncio.run(main())
    assert taken > 300  # the whole-read path was taken often, not only declined


def test_one_stream_splits_a_plain_answer_and_declines_anything_else():
    head, ok = frame(HEADERS, END_HEADERS, 3, _HEAD), frame(HEADERS, END_HEADERS | END_STREAM, 3, _OK)
    d1, d0 = frame(DATA, 0, 3, b"abc"), frame(DATA, 0, 3, b"")
    assert one_stream(head + d1 + d0 + ok, 1 << 20, 1 << 16) == (3, _HEAD, [b"abc"], 2, 3, _OK, True)
    assert one_stream(ok, 1 << 20, 1 << 16) == (3, _OK, [], 0, 0, None, True)
    assert one_stream(d1 + ok, 1 << 20, 1 << 16) == (3, None, [b"abc"], 1, 3, _OK, True)
    assert one_stream(frame(DATA, END_STREAM, 3, b"x"), 10, 10) == (3, None, [b"x"], 1, 1, None, True)
    for bad in [b"", head + d1 + ok + d0,  # nothing, or a frame after the end
                head + frame(DATA, 0, 5, b"x"),  # two streams
                frame(DATA, 0, 0, b"x"),  # stream 0
                d1 + head + d1,  # HEADERS between DATA frames
                head + d1 + ok[:-1],  # a partial frame
                frame(DATA, PADDED, 3, b"\x00x"), frame(HEADERS, END_HEADERS | 0x20, 3, b"12345"),
                frame(HEADERS, 0, 3, b"x"),  # a CONTINUATION to come
                frame(PING, 0, 0, bytes(8)), frame(DATA, 0x2, 3, b"x")]:
        assert one_stream(bad, 1 << 20, 1 << 16) is None, bad
    assert one_stream(frame(DATA, 0, 3, bytes(11)), 10, 100) is None  # beyond max_frame
    assert one_stream(frame(HEADERS, END_HEADERS, 3, bytes(11)), 100, 10) is None  # block too big
    assert one_stream(memoryview(head + ok), 1 << 20, 1 << 16) == (3, _HEAD, [], 0, 0, _OK, True)


def test_a_lazy_call_is_woken_by_a_whole_read_only_at_its_end_or_past_the_wake_bytes():
    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        conn = _Connection(H2Channel("127.0.0.1:1"))
        conn.connection_made(_Wire())
        got = []
        for n, end in [(10, False), (_LAZY_WAKE_BYTES, False), (10, True)]:
            call = _Call(False, 0, lazy=True)
            conn._add_stream(call)
            call.waiter = loop.create_future()
            frames = frame(HEADERS, END_HEADERS, call.sid, _HEAD) + frame(DATA, 0, call.sid, bytes(n))
            conn.data_received(frames + (frame(HEADERS, END_HEADERS | END_STREAM, call.sid, _OK)
                                         if end else b""))
            got.append(call.waiter.done())
        return got

    assert asyncio.run(main()) == [False, True, True]


def test_whole_reads_past_a_calls_bounds_fail_it_as_the_frame_by_frame_path_does():
    """A streamed call sent beyond its window, a unary one beyond max_message_bytes: the
    whole-read path declines, and the call fails (its stream reset) the same either way."""
    async def main() -> None:
        for streaming, max_message, n in [(True, 256 << 20, 700_000), (False, 1000, 600)]:
            (fconn, fcalls, fwire), (sconn, scalls, swire) = await _pair(random.Random(0), max_message)
            for conn, calls in ((fconn, fcalls), (sconn, scalls)):
                for c in calls:
                    c.streaming = streaming
            sid = fcalls[0].sid
            read = (frame(HEADERS, END_HEADERS, sid, _HEAD) + frame(DATA, 0, sid, bytes(n))
                    + frame(DATA, 0, sid, bytes(n)))
            assert one_stream(read, _MAX_FRAME, _MAX_HEADERS) is not None
            fconn.data_received(read)
            sconn.data_received(read)
            assert _state(fconn, fcalls, fwire) == _state(sconn, scalls, swire)
            assert fcalls[0].error is not None and fcalls[0].done

    asyncio.run(main())


def test_connection_window_is_given_back_when_no_call_is_left():
    """DATA of streams already gone still counts against the connection window: once a
    quarter of it is used, it is given back even with no call open."""
    from storeapi.h2frames import window_update

    async def main() -> list[bytes]:
        wire = _Wire()
        conn = _Connection(H2Channel("127.0.0.1:1"))
        conn.connection_made(wire)
        wire.out.clear()
        conn.data_received(frame(DATA, 0, 7, bytes(700_000)))
        assert wire.out == [] and conn.conn_unacked == 700_000
        conn.data_received(frame(DATA, 0, 7, bytes(700_000)))
        return wire.out

    assert asyncio.run(main()) == [window_update(0, 1_400_000)]
