"""Every connection the gRPC-server fuzzer (test_fuzz_grpc_server.py) found to break our HTTP/2
gRPC server, as an explicit regression case against an in-process H2GrpcServer over a socket:
each call is answered with the status a Go gRPC server gives, and the server serves on."""
from __future__ import annotations

import asyncio
import contextlib

import grpc
import hpack

from storeapi.h2frames import (CANCEL, DATA, END_HEADERS, END_STREAM, HEADERS,
                               INITIAL_WINDOW_SIZE, PREFACE, RST_STREAM, SETTINGS, frame,
                               settings_frame, split_frames)
from storeapi.h2server import H2GrpcServer


async def _echo(req: bytes, context) -> bytes:
    return req


class _Big:
    """A streaming handler of 1 MiB that records when its generator is closed (what a Series
    call holds -- a store's series gate slot, block readers -- is let go there)."""

    def __init__(self) -> None:
        self.closed = 0

    async def __call__(self, req: bytes, context):
        try:
            for _ in range(16):
                yield b"x" * (64 << 10)
        finally:
            self.closed += 1


BIG = _Big()


def _handlers() -> list:
    return [grpc.method_handlers_generic_handler("t.T", {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Big": grpc.unary_stream_rpc_method_handler(BIG)})]


@contextlib.asynccontextmanager
async def _server(**kw):
    srv = H2GrpcServer(**kw)
    srv.add_generic_rpc_handlers(_handlers())
    port = await srv.bind("127.0.0.1:0")
    await srv.start()
    try:
        yield port, srv
    finally:
        await srv.stop(0)


def _request(sid: int, extra: list[tuple[str, str]], body: bytes = b"hi",
             path: str = "/t.T/Echo") -> bytes:
    return _call(path, extra, b"\0" + len(body).to_bytes(4, "big") + body, sid=sid)


async def _until(port: int, data: bytes, pick, timeout: float = 5.0):
    """Write ``data`` after the preface, then read the server's frames until ``pick(type, flags,
    stream id, payload, hpack decoder)`` returns something; None if nothing did within
    ``timeout`` seconds or the server hung up."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(PREFACE + data)
    buf, dec = bytearray(), hpack.Decoder()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                got = await asyncio.wait_for(r.read(1 << 16), left)
            except TimeoutError:
                return None
            if not got:
                return None
            buf += got
            frames, used = split_frames(buf, 1 << 24)
            del buf[:used]
            for f in frames:
                found = pick(*f, dec)
                if found is not None:
                    return found
        return None
    finally:
        w.close()


async def _trailers(port: int, data: bytes, sid: int = 1) -> dict[str, str] | None:
    """The header block that ends stream ``sid`` (after SETTINGS and ``data``)."""
    def pick(typ, flags, s, payload, dec):
        if typ == HEADERS:
            hdrs = dict(dec.decode(payload, raw=False))  # every block: the HPACK state
            if s == sid and flags & END_STREAM:
                return hdrs
        return None
    return await _until(port, frame(SETTINGS, 0, 0) + data, pick)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_malformed_grpc_timeout_is_internal_not_a_dead_call():
    """A grpc-timeout of non-ASCII digits ('²S') or more digits than int() takes raised in the
    call's task before it answered: the call hung forever, its task kept. grpc-go answers
    INTERNAL "malformed grpc-timeout" for any malformed value (also more than 8 digits)."""
    async def main():
        async with _server() as (port, _):
            out = []
            for value in ["\u00b2S", "1" * 5000 + "S", "123456789S", "x1S", "5x", "S"]:
                out.append(await _trailers(port, _request(1, [("grpc-timeout", value)])))
            ok = await _trailers(port, _request(1, [("grpc-timeout", "10S")]))
            return out, ok
    out, ok = _run(main())
    for hdrs in out:
        assert hdrs is not None, "the call was never answered"
        assert hdrs["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0]), hdrs
        assert hdrs["grpc-message"].startswith("malformed grpc-timeout"), hdrs
    assert ok is not None and ok["grpc-status"] == "0"


async def _closed_within(port: int, data: bytes, seconds: float) -> bool:
    """Whether the server hangs up on a client that wrote ``data`` and then stalled."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    try:
        while True:
            if not await asyncio.wait_for(r.read(1 << 16), seconds):
                return True
    except TimeoutError:
        return False
    finally:
        w.close()


def test_client_stalled_before_the_http2_handshake_is_dropped():
    """A client that connects and never sends its preface and SETTINGS (or half of them) held
    its connection forever; grpc-go drops it after its connection timeout (120 s by default),
    which is what ``handshake_timeout_s`` is. A client that completed the handshake stays."""
    async def main():
        async with _server(handshake_timeout_s=0.5) as (port, _):
            silent = await _closed_within(port, b"", 10)
            half = await _closed_within(port, PREFACE[:10], 10)
            no_settings = await _closed_within(port, PREFACE, 10)
            shaken = await _closed_within(port, PREFACE + frame(SETTINGS, 0, 0), 2)
            answered = await _trailers(port, _request(1, []))
            return silent, half, no_settings, shaken, answered
    silent, half, no_settings, shaken, answered = _run(main())
    assert silent and half and no_settings
    assert not shaken
    assert answered is not None and answered["grpc-status"] == "0"


async def _reset_code(port: int, data: bytes, sid: int, seconds: float) -> int | None:
    """The RST_STREAM code the server sends on ``sid`` within ``seconds``."""
    def pick(typ, flags, s, payload, dec):
        return int.from_bytes(payload, "big") if typ == RST_STREAM and s == sid else None
    return await _until(port, data, pick, seconds)


def test_call_stalled_by_a_client_that_never_opens_its_window_is_cancelled():
    """A client that sets its stream window to 0 (or stops granting window) and never sends a
    WINDOW_UPDATE parked the call's task, and all it holds, for as long as the connection
    lived: 20 such streams held every slot of a store's series gate. After
    ``send_stall_timeout_s`` without window the call is reset (CANCEL) and its handler closed;
    other calls are served meanwhile."""
    async def main():
        async with _server(send_stall_timeout_s=0.5) as (port, _):
            stalled = settings_frame({INITIAL_WINDOW_SIZE: 0})
            code = await _reset_code(port, stalled + _request(1, [], b"", "/t.T/Big"),
                                     1, 10)
            await asyncio.sleep(0.2)
            ok = await _trailers(port, _request(1, []))
            return code, BIG.closed, ok
    code, closed, ok = _run(main())
    assert code == CANCEL
    assert closed == 1
    assert ok is not None and ok["grpc-status"] == "0"


def _call(path: str = "/t.T/Echo", extra=(), data: bytes = b"\0\0\0\0\x02hi",
          end_on_headers: bool = False, sid: int = 1) -> bytes:
    """A call on stream ``sid`` whose DATA is ``data`` as is (a lying length prefix stays)."""
    block = hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                                    (":authority", "x"), ("content-type", "application/grpc"),
                                    ("te", "trailers"), *extra])
    if end_on_headers:
        return frame(HEADERS, END_HEADERS | END_STREAM, sid, block)
    return frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM, sid, data)


def test_hostile_calls_get_the_status_grpcio_gives():
    """What the fuzzer sends that grpcio's server answers, ours answers with the same code:
    an unknown method or service, a compressed flag without grpc-encoding, a gzip message that
    does not inflate, a malformed grpc-timeout. (Where grpcio never answers -- a length prefix
    longer than the message, no message at all -- ours answers INTERNAL; an unknown
    grpc-encoding is UNIMPLEMENTED, as grpc-go, Thanos's server, has it.)"""
    cases = [_call("/t.T/Nope"), _call("/x.Y/Z"), _call(data=b"\x01\0\0\0\x02hi"),
             _call(extra=[("grpc-encoding", "gzip")], data=b"\x01\0\0\0\x02hi"),
             _call(extra=[("grpc-timeout", "x1S")])]
    own = [_call(data=b"\0\0\0\0\x09hi"), _call(end_on_headers=True),
           _call(extra=[("grpc-encoding", "zstd")])]

    def status(typ, flags, s, payload, dec):
        if typ == HEADERS:
            hdrs = dict(dec.decode(payload, raw=False))
            if s == 1 and flags & END_STREAM:
                return hdrs.get("grpc-status")
        return None

    async def main():
        ref = grpc.aio.server()
        ref.add_generic_rpc_handlers(_handlers())
        ref_port = ref.add_insecure_port("127.0.0.1:0")
        await ref.start()
        try:
            async with _server() as (port, _):
                ours = [await _until(port, frame(SETTINGS, 0, 0) + c, status) for c in cases]
                theirs = [await _until(ref_port, frame(SETTINGS, 0, 0) + c, status)
                          for c in cases]
                alone = [await _until(port, frame(SETTINGS, 0, 0) + c, status) for c in own]
        finally:
            await ref.stop(0)
        return ours, theirs, alone
    ours, theirs, alone = _run(main())
    assert ours == theirs == ["12", "12", "13", "13", "13"]
    assert alone == ["13", "13", "12"]


def test_request_bodies_buffered_on_one_connection_are_bounded_together():
    """Each stream's unfinished request body was bounded by the message limit, but not their
    sum: a client opening many streams and never ending them made the server hold
    streams x max_message_bytes (1000 x 256 MiB on a store). Bodies buffered on a connection
    are now bounded together by the message limit: the stream that passes it is answered
    RESOURCE_EXHAUSTED; the other stream, and the connection, go on."""
    head = hpack.Encoder()
    block = head.encode([(":method", "POST"), (":scheme", "http"), (":path", "/t.T/Echo"),
                         (":authority", "x"), ("content-type", "application/grpc"),
                         ("te", "trailers")])
    body = b"\0" + (700).to_bytes(4, "big") + b"x" * 700
    part = body[:600]  # no END_STREAM: the body stays buffered
    data = (frame(HEADERS, END_HEADERS, 1, block) + frame(DATA, 0, 1, part)
            + frame(HEADERS, END_HEADERS, 3, head.encode([(":method", "POST"), (":scheme", "http"),
                                                          (":path", "/t.T/Echo"),
                                                          (":authority", "x"),
                                                          ("content-type", "application/grpc"),
                                                          ("te", "trailers")]))
            + frame(DATA, 0, 3, part) + frame(DATA, END_STREAM, 1, body[600:]))

    seen: dict[int, str | None] = {}

    def ends(typ, flags, s, payload, dec):
        if typ == HEADERS:
            hdrs = dict(dec.decode(payload, raw=False))
            if flags & END_STREAM:
                seen[s] = hdrs.get("grpc-status")
                if len(seen) == 2:
                    return dict(seen)
        return None

    async def main():
        async with _server(max_message_bytes=1000) as (port, _):
            return await _until(port, frame(SETTINGS, 0, 0) + data, ends)
    assert _run(main()) == {3: "8", 1: "0"}
