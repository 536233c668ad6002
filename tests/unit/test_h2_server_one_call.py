"""The store's whole-call read (ServerConnection.receive_call) against its frame-by-frame path
(receive): on random and hostile reads after a handshake, a read it takes leaves the connection
exactly as receive's frames would (the same events, stream states, windows and bytes queued),
and one it declines changes nothing (receive then takes it)."""
from __future__ import annotations

import dataclasses
import random

import hpack

from storeapi.h2frames import (CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, PADDED,
                               PING, PREFACE, RST_STREAM, SETTINGS, WINDOW_UPDATE, frame, literal)
from storeapi.h2serverconn import DATA_IN, ENDED, REQUEST, ServerConnection

# A call's header block as our querier sends it (literals only: decoded once, then known)
_CALL = (b"\x83\x86" + literal(4, "/thanos.Store/Series") + literal(1, "127.0.0.1:1")
         + literal(b"content-type", "application/grpc") + literal(b"te", "trailers"))
_OTHER = _CALL + literal(b"thanos-tenant", "t")
_INDEXED = hpack.Encoder().encode([(":method", "POST"), ("x-a", "b")])  # uses the table


def _block(rng: random.Random) -> bytes:
    return rng.choices([_CALL, _OTHER, _INDEXED, rng.randbytes(rng.randrange(12)), b""],
                       [70, 25, 1, 1, 1])[0]


def _frames(rng: random.Random, conn: ServerConnection) -> list[bytes]:
    """A read's frames: mostly a well-formed call on the next stream id, else anything."""
    nxt = conn.last_sid + 2 if conn.last_sid % 2 else conn.last_sid + 1
    if rng.random() < 0.93:
        sid = rng.choices([nxt, nxt + 2, conn.last_sid, nxt + 1, 0], [94, 3, 1, 1, 1])[0]
        body = rng.randbytes(rng.choice([0, 5, 40, 300, 16_000, 16_000, 70_000, 2_000_000]))
        if len(body) > 2_000:
            body = bytes(len(body))
        out = [frame(HEADERS, END_HEADERS, sid, _block(rng))]
        if len(body) <= 16_384:
            out.append(frame(DATA, END_STREAM if rng.random() < 0.9 else 0, sid, body))
        else:  # beyond the peer's frame size: several DATA frames
            out += [frame(DATA, 0, sid, body[i:i + 16_384]) for i in range(0, len(body), 16_384)]
            out.append(frame(DATA, END_STREAM, sid, b""))
        if rng.random() < 0.1:
            out.insert(rng.randrange(len(out) + 1), frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01\x00"))
        return out
    sid = rng.choice([conn.last_sid, nxt, 0, 2])
    r = rng.random()
    if r < 0.3:
        return [frame(HEADERS, rng.choice([END_HEADERS | END_STREAM, 0, END_HEADERS | PADDED,
                                           END_HEADERS | 0x20]), sid, _block(rng))]
    if r < 0.5:
        flags = rng.choice([0, END_STREAM, PADDED | END_STREAM])
        payload = rng.randbytes(rng.randrange(8))
        return [frame(DATA, flags, sid, bytes([0]) + payload if flags & PADDED else payload)]
    if r < 0.6:
        return [frame(CONTINUATION, rng.choice([0, END_HEADERS]), sid, _block(rng))]
    if r < 0.75:
        return [frame(rng.choice([RST_STREAM, WINDOW_UPDATE]), 0, sid, rng.randbytes(4))]
    if r < 0.85:
        return [frame(PING, 0, 0, rng.randbytes(8))]
    return [rng.randbytes(rng.randrange(1, 30))]


def _state(conn: ServerConnection) -> tuple:
    return ({sid: dataclasses.astuple(st) for sid, st in conn.streams.items()}, conn.last_sid,
            conn.recv_window, conn.recv_unacked, conn.send_window, bytes(conn.buf), conn.out,
            conn.blocks.pending, dict(conn.decoder.known),
            len(conn.decoder.decoder.header_table.dynamic_entries))


def _connection(rng: random.Random, streams: int = 0) -> ServerConnection:
    conn = ServerConnection(streams or rng.choice([1, 3, 100]), rng.choice([65_535, 1 << 20]))
    conn.initiate_connection()
    conn.receive(PREFACE + frame(SETTINGS, 0, 0))
    conn.out.clear()
    return conn


def test_whole_calls_match_the_frame_by_frame_path_on_random_and_hostile_reads():
    rng = random.Random(2024)
    taken = declined = 0
    for case in range(600):
        seed = rng.random()
        fast, slow = _connection(random.Random(seed)), _connection(random.Random(seed))
        for _ in range(rng.randrange(1, 30)):
            frames = _frames(rng, slow)
            read = b"".join(frames)
            if rng.random() < 0.15:  # a read cut short: its rest comes in the next one
                read = read[:rng.randrange(len(read) + 1)]
            before = _state(fast)
            got = fast.receive_call(read)
            try:
                want = slow.receive(read)
            except Exception:  # noqa: BLE001 -- the frame-by-frame path ends the connection
                assert got is None, (case, frames)
                assert _state(fast) == before
                break
            if got is None:
                declined += 1
                assert _state(fast) == before, (case, frames)
                assert fast.receive(read) == want
            else:
                taken += 1
                sid, headers, body, n = got
                assert [(REQUEST, sid, headers), (DATA_IN, sid, body, n), (ENDED, sid)] == want
            assert _state(fast) == _state(slow), (case, frames)
            if not slow.streams or rng.random() < 0.2:
                continue
            for sid in list(slow.streams):  # the server answers some calls meanwhile
                given = rng.choice([0, 0, 40_000])  # (window given back: not always)
                for c in (fast, slow):
                    c.send_reply(sid, b"\x88", b"x" * 5, b"")
                    c.acknowledge_received_data(given, sid)
    assert taken > 200 and declined > 200  # both paths were taken often


def test_the_first_call_of_a_header_block_goes_frame_by_frame_and_the_next_ones_whole():
    conn = _connection(random.Random(1), streams=100)
    call = frame(HEADERS, END_HEADERS, 1, _CALL) + frame(DATA, END_STREAM, 1, b"\x00\x00\x00\x00\x01x")
    assert conn.receive_call(call) is None  # the block not decoded yet
    assert [e[0] for e in conn.receive(call)] == [REQUEST, DATA_IN, ENDED]
    sid, headers, body, n = conn.receive_call(
        frame(HEADERS, END_HEADERS, 3, _CALL) + frame(DATA, END_STREAM, 3, b"\x00\x00\x00\x00\x01y"))
    assert (sid, headers[":path"], body, n) == (3, "/thanos.Store/Series", b"\x00\x00\x00\x00\x01y", 6)
    assert conn.streams[3].remote_closed and conn.last_sid == 3
