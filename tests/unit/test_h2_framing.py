"""Our own HTTP/2 framing for gRPC (storeapi.h2frames, h2client, h2serverconn): the client reads
grpcio's server (wire compatibility beyond our own server), and the server ends connections that
break HTTP/2 and refuses streams beyond its limit, while it keeps serving everyone else."""
from __future__ import annotations

import asyncio
import contextlib
import random
import sys

import grpc
import grpc.aio
import pytest

from storeapi import grpc_codec
from storeapi._wire import grpc_messages, request_frames
from storeapi.h2client import H2Channel, RpcError, _Call, _Connection
from storeapi.h2frames import (ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM,
                               FRAME_SIZE_ERROR, GOAWAY, HEADERS, PING, PREFACE, PRIORITY,
                               REFUSED_STREAM, RST_STREAM, SETTINGS, WINDOW_UPDATE,
                               ProtocolError, frame, header_frames, literal, settings_frame,
                               split_frames)
from storeapi.h2server import H2GrpcServer

UNARY, STREAM = "/t.T/Unary", "/t.T/Stream"
_SNAPPY_CD = grpc_codec.compress(grpc_codec.SNAPPY, b"cd")
BIG = 3 << 20  # streamed bytes: well beyond the client's 1 MiB stream window


async def _echo(req: bytes, context) -> bytes:
    if req == b"fail":
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no: 100% sure")
    return req[::-1]


async def _stream(req: bytes, context):
    for i in range(int(req)):
        yield bytes([i % 256]) * (BIG // int(req))


async def _parked(req: bytes, context) -> bytes:
    await asyncio.sleep(30)
    return b""


def _handlers() -> list:
    return [grpc.method_handlers_generic_handler("t.T", {
        "Unary": grpc.unary_unary_rpc_method_handler(_echo),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        "Parked": grpc.unary_unary_rpc_method_handler(_parked)})]


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@contextlib.asynccontextmanager
async def _our_server(handlers: list | None = None, **server_kw):
    """Our gRPC server on a free loopback port, stopped on the way out; yields the port."""
    srv = H2GrpcServer(**server_kw)
    srv.add_generic_rpc_handlers(_handlers() if handlers is None else handlers)
    port = await srv.bind("127.0.0.1:0")
    await srv.start()
    try:
        yield port
    finally:
        await srv.stop(0)


async def _calls(ch: H2Channel) -> tuple:
    unary = await ch.unary(UNARY, b"abc", timeout=10)
    with pytest.raises(RpcError) as ei:
        await ch.unary(UNARY, b"fail", timeout=10)
    msgs = [m async for m in ch.unary_stream(STREAM, b"12", timeout=30)]
    # Leaving a stream early resets it; the connection serves the next call.
    async for _ in ch.unary_stream(STREAM, b"12", timeout=30):
        break
    again = await ch.unary(UNARY, b"xy", timeout=10)
    return (unary, ei.value.code(), ei.value.details(), len(msgs), {len(m) for m in msgs},
            msgs[5][:1], again)


EXPECTED = (b"cba", grpc.StatusCode.FAILED_PRECONDITION, "no: 100% sure", 12, {BIG // 12},
            b"\x05", b"yx")


def test_client_reads_grpcio_server_unary_errors_and_large_streams():
    async def main():
        srv = grpc.aio.server()
        srv.add_generic_rpc_handlers(_handlers())
        port = srv.add_insecure_port("127.0.0.1:0")
        await srv.start()
        ch = H2Channel(f"127.0.0.1:{port}", "identity")
        try:
            return await _calls(ch)
        finally:
            await ch.close()
            await srv.stop(0)

    assert _run(main()) == EXPECTED


def test_client_and_server_of_ours_agree():
    async def main():
        async with _our_server() as port:
            ch = H2Channel(f"127.0.0.1:{port}", "snappy")
            try:
                return await _calls(ch)
            finally:
                await ch.close()

    assert _run(main()) == EXPECTED


def _request_headers(sid: int, end_stream: bool = False) -> bytes:
    block = (b"\x83\x86" + literal(4, "/t.T/Parked") + literal(1, "x")
             + literal(b"content-type", "application/grpc"))
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid, block)


async def _raw(port: int, data: bytes, settings: bool = True) -> list[tuple[int, int, int, bytes]]:
    """Frames the server answers ``data`` (after the preface and, unless not ``settings``, an
    empty SETTINGS frame) with until it closes or 2 s."""
    return (await raw_exchange(port, PREFACE + (settings_frame({}) if settings else b"") + data))[0]


async def raw_exchange(port: int, data: bytes) -> tuple[list[tuple[int, int, int, bytes]], bool]:
    """The frames a server at ``port`` answers ``data`` with, and whether it closed the
    connection (within 2 s of its last bytes)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    got, closed = bytearray(), False
    try:
        while True:
            chunk = await asyncio.wait_for(r.read(65536), 2)
            if not chunk:
                closed = True
                break
            got += chunk
    except TimeoutError:
        pass
    except ConnectionResetError:
        closed = True
    w.close()
    return split_frames(got, 1 << 24)[0], closed


# A first frame after the preface that is not SETTINGS: grpc-go (Thanos's gRPC server) closes
# the connection without answering it (http2Server "saw invalid preface type").
NOT_SETTINGS_FIRST = {
    "PING": frame(PING, 0, 0, b"\0" * 8),
    "WINDOW_UPDATE": frame(WINDOW_UPDATE, 0, 0, (1000).to_bytes(4, "big")),
    "HEADERS": _request_headers(1, end_stream=True),
    "PRIORITY": frame(PRIORITY, 0, 1, b"\0\0\0\0\x10"),
    "unknown type": frame(0x20, 0, 0, b"x"),
}


def first_frame_answer(frames: list, closed: bool) -> tuple[list[int], bool]:
    """What a first-frame probe shows of a server: the types of the frames it sent beyond its
    own opening SETTINGS and connection WINDOW_UPDATE, and whether it closed."""
    return [f[0] for f in frames if f[0] not in (SETTINGS, WINDOW_UPDATE) or f[1] & ACK], closed


@pytest.mark.parametrize("first", list(NOT_SETTINGS_FIRST))
def test_server_closes_a_connection_whose_first_frame_is_not_settings(first):
    async def main():
        async with _our_server() as port:
            ch = H2Channel(f"127.0.0.1:{port}", "identity")
            try:
                answer = first_frame_answer(*await raw_exchange(
                    port, PREFACE + NOT_SETTINGS_FIRST[first] + frame(PING, 0, 0, b"p" * 8)))
                # a SETTINGS ACK counts as the client's SETTINGS (grpc-go takes any SETTINGS)
                ack_first = first_frame_answer(*await raw_exchange(
                    port, PREFACE + frame(SETTINGS, ACK, 0) + frame(PING, 0, 0, b"p" * 8)))
                return answer, ack_first, await ch.unary(UNARY, b"ok", timeout=10)
            finally:
                await ch.close()

    assert _run(main()) == (([], True), ([PING], False), b"ko")


BREACHES = {
    "DATA on an idle stream": frame(DATA, 0, 1, b"x"),
    "HEADERS on an even stream": _request_headers(2),
    "frame over 16 KiB": frame(DATA, 0, 1, b"x" * 20000),
    "header block over 64 KiB": frame(HEADERS, 0, 1, b"\x83") + b"".join(
        frame(CONTINUATION, 0, 1, b"\x00" * 16000) for _ in range(5)),
    "CONTINUATION without HEADERS": frame(CONTINUATION, END_HEADERS, 1, b"\x83"),
    "window update of 0": frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\0"),
    "window beyond 2^31-1": frame(WINDOW_UPDATE, 0, 0, b"\x7f\xff\xff\xff"),
    "undecodable header block": frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff"),
    "stream ids going backwards": _request_headers(5) + _request_headers(3),
}


@pytest.mark.parametrize("breach", list(BREACHES))
def test_server_ends_connections_that_break_http2_and_keeps_serving(breach):
    async def main():
        async with _our_server() as port:
            ch = H2Channel(f"127.0.0.1:{port}", "identity")
            try:
                frames = await _raw(port, BREACHES[breach])
                return [f[0] for f in frames][-1:], await ch.unary(UNARY, b"ok", timeout=10)
            finally:
                await ch.close()

    assert _run(main()) == ([GOAWAY], b"ko")


def test_server_refuses_streams_beyond_its_limit():
    async def main():
        async with _our_server(max_concurrent_streams=1) as port:
            frames = await _raw(port, _request_headers(1) + _request_headers(3))
            return [(f[0], f[2], f[3]) for f in frames if f[0] == RST_STREAM]

    assert _run(main()) == [(RST_STREAM, 3, REFUSED_STREAM.to_bytes(4, "big"))]


def test_data_after_end_stream_resets_that_stream_and_ends_its_call():
    """A stream error, not a connection error: the call running for the stream is cancelled
    (nothing waits for it with the stream gone) and the connection stays up."""
    async def main():
        started = asyncio.Event()
        cancelled = asyncio.Event()

        async def parked(req: bytes, context) -> bytes:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return b""

        async with _our_server([grpc.method_handlers_generic_handler("t.T", {
                "Parked": grpc.unary_unary_rpc_method_handler(parked)})]) as port:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(PREFACE + settings_frame({}) + _request_headers(1)
                    + frame(DATA, END_STREAM, 1, b"\0\0\0\0\0"))
            await asyncio.wait_for(started.wait(), 10)
            w.write(frame(DATA, 0, 1, b"\0\0\0\0\0"))
            await asyncio.wait_for(cancelled.wait(), 10)
            got = bytearray()
            while not any(f[0] == RST_STREAM for f in split_frames(got, 1 << 24)[0]):
                got += await asyncio.wait_for(r.read(65536), 10)
            w.close()
            return [(f[2], f[3]) for f in split_frames(got, 1 << 24)[0] if f[0] == RST_STREAM]

    assert _run(main()) == [(1, (0x5).to_bytes(4, "big"))]


def test_client_fails_a_stream_whose_server_ignores_flow_control():
    """A streamed call buffers at most its window unread: a server that sends past it (here
    3 MiB at once against a 1 MiB stream window, to a reader that has not read) fails the call
    instead of filling the client's memory."""
    async def main():
        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readexactly(len(PREFACE))
            w.write(settings_frame({}))
            w.write(frame(HEADERS, END_HEADERS, 1, b"\x88"  # :status 200
                          + literal(b"content-type", "application/grpc")))
            for _ in range(3):
                w.write(frame(DATA, 0, 1, b"\0" * (1 << 20)))
            await w.drain()
            await r.read()  # until the client hangs up

        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        ch = H2Channel(f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", "identity")
        try:
            with pytest.raises(RpcError) as ei:
                it = ch.unary_stream(STREAM, b"1", timeout=20)
                await it.__anext__()  # the call starts; then the reader dawdles
                await asyncio.sleep(1)
                async for _ in it:
                    pass
            return ei.value.code(), ei.value.details()
        finally:
            await ch.close()
            srv.close()

    assert _run(main()) == (grpc.StatusCode.INTERNAL, "server sent beyond the flow-control window")


def test_random_frames_never_take_the_server_down():
    """Seeded random frames (every type, random flags, stream ids and payloads, some valid
    request headers among them) on 100 connections at once: each connection ends or idles, and
    the server still answers a well-formed call afterwards."""
    import random
    rnd = random.Random(13)

    def junk() -> bytes:
        out = [_request_headers(1)] if rnd.random() < 0.5 else []
        for _ in range(rnd.randint(1, 8)):
            typ = rnd.randint(0, 10)
            sid = rnd.choice([0, 1, 2, 3, 5, rnd.randint(0, 1 << 31)])
            payload = rnd.randbytes(rnd.choice([0, 1, 4, 5, 6, 8, 9, 64, 300]))
            out.append(frame(typ, rnd.randint(0, 255), sid & 0x7FFFFFFF, payload))
        return b"".join(out)

    async def main():
        async with _our_server() as port:
            ch = H2Channel(f"127.0.0.1:{port}", "identity")
            try:
                await asyncio.gather(*(_raw(port, junk()) for _ in range(100)))
                return await ch.unary(UNARY, b"alive", timeout=10)
            finally:
                await ch.close()

    assert _run(main()) == b"evila"


def test_leaving_a_series_stream_early_resets_it_at_once_and_counts_it_cancelled():
    """StoreClient.iter_series left after the first series: the HTTP/2 stream is reset right
    away (the store's call ends as cancelled, not when garbage collection gets to it), and both
    sides' grpc_*_handled_total say Canceled."""
    from prometheus_client import CollectorRegistry

    from receiver.tsdb.labels import Matcher, MatchType
    from storeapi.client import StoreClient
    from storeapi.grpcmetrics import GrpcServerMetrics, client_metrics
    from storeapi.server import StoreServer

    class Many:
        def label_sets(self):
            return []

        def time_range(self):
            return 0, 1000

        def series(self, mint, maxt, matchers, skip_chunks):
            return [((("__name__", "up"), ("i", f"{i:06d}")), [(0, 10, b"\x00\x00")])
                    for i in range(50_000)]

    async def main():
        reg = CollectorRegistry()
        async with _our_server(StoreServer(Many(), "store").handlers(),
                               metrics=GrpcServerMetrics(reg)) as port:
            client = StoreClient(f"127.0.0.1:{port}", series_batch_size=1,
                                 metrics=client_metrics(reg))
            try:
                async for _ in client.iter_series(0, 1000, [Matcher(MatchType.EQ, "__name__", "up")]):
                    break
                labels = {"grpc_method": "Series", "grpc_code": "Canceled"}
                for _ in range(100):  # bounded wait for the server to see the reset
                    server = reg.get_sample_value("grpc_server_handled_total", {
                        **labels, "grpc_type": "server_stream", "grpc_service": "thanos.Store"})
                    if server:
                        break
                    await asyncio.sleep(0.05)
                client_side = reg.get_sample_value("grpc_client_handled_total", {
                    **labels, "grpc_type": "server_stream", "grpc_service": "thanos.Store"})
                return server, client_side
            finally:
                await client.close()

    assert _run(main()) == (1.0, 1.0)


def test_header_blocks_that_leave_no_decoder_state_are_decoded_once():
    """Our servers' literal-only blocks are decoded once per connection and then looked up;
    blocks that index into the dynamic table (grpcio's, Go's) go through the decoder each time
    and still read right."""
    import hpack

    from storeapi.h2client import _Connection

    async def ours():
        async with _our_server() as port:
            ch = H2Channel(f"127.0.0.1:{port}", "snappy")
            try:
                first = await _calls(ch)
                known = dict(ch._conn.known_blocks)
                return first, await _calls(ch), known, dict(ch._conn.known_blocks)
            finally:
                await ch.close()
    first, second, known, after = _run(ours())
    assert first == second == EXPECTED
    assert known and after == known  # the second round added nothing: every block was known

    conn = _Connection(H2Channel("127.0.0.1:1"))
    enc = hpack.Encoder()
    indexed = enc.encode([(":status", "200"), ("grpc-status", "0")])  # adds to the table
    assert conn.decoder.decode(indexed) == [(":status", "200"), ("grpc-status", "0")]
    assert not conn.known_blocks
    again = enc.encode([("grpc-status", "0")])  # refers to the entry added above
    assert conn.decoder.decode(again) == [("grpc-status", "0")]
    assert not conn.known_blocks


def test_server_decodes_repeated_literal_blocks_once_and_indexed_ones_alike():
    """On the server side too: a repeated literal-only request block (our client's) is
    decoded once per connection; blocks that use the dynamic table (grpcio's) decode right
    in order; at most KNOWN_BLOCKS are kept."""
    import hpack

    from storeapi.h2serverconn import KNOWN_BLOCKS, REQUEST, ServerConnection

    want = [(":method", "POST"), (":scheme", "http"), (":path", "/t.T/Unary"),
            (":authority", "a:1"), ("content-type", "application/grpc"), ("te", "trailers")]
    ours = b"\x83\x86" + literal(4, "/t.T/Unary") + literal(1, "a:1") + literal(
        b"content-type", "application/grpc") + literal(b"te", "trailers")

    def requests(conn: ServerConnection, blocks: list[bytes]) -> list[dict]:
        out = []
        for i, block in enumerate(blocks):
            events = conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, block))
            out += [e[2] for e in events if e[0] == REQUEST]
        return out

    conn = ServerConnection(100, 1 << 20)
    conn.receive(PREFACE + settings_frame({}))
    many = [b"\x83\x86" + literal(4, f"/t.T/M{i}") + literal(1, "a:1")
            for i in range(3 * KNOWN_BLOCKS)]
    assert requests(conn, [ours, ours, *many]) == [dict(want)] * 2 + [
        {":method": "POST", ":scheme": "http", ":path": f"/t.T/M{i}", ":authority": "a:1"}
        for i in range(3 * KNOWN_BLOCKS)]
    assert len(conn.decoder.known) == KNOWN_BLOCKS and ours in conn.decoder.known

    fresh = ServerConnection(100, 1 << 20)
    fresh.receive(PREFACE + settings_frame({}))
    big = b"\x83\x86" + literal(4, "/t.T/Unary") + literal(b"x-pad", "p" * 8000)
    assert requests(fresh, [big, big])[1]["x-pad"] == "p" * 8000
    assert not fresh.decoder.known  # a big block is decoded each time, never kept

    grpcio_like = ServerConnection(100, 1 << 20)
    grpcio_like.receive(PREFACE + settings_frame({}))
    enc = hpack.Encoder()
    indexed = [enc.encode(want), enc.encode(want)]  # the second refers to the first's entries
    assert requests(grpcio_like, [*indexed, ours]) == [dict(want)] * 3
    assert not grpcio_like.decoder.known


def test_grpc_server_metrics_export_go_grpc_prometheus_series_only():
    """After real calls through our server: grpc_server_* carry exactly go-grpc-prometheus's
    series (no ``_created`` samples, which Thanos does not expose), counts per method and code,
    and a cumulative handling-time histogram whose count is the handled calls."""
    from prometheus_client import CollectorRegistry, generate_latest

    from storeapi.grpcmetrics import BUCKETS, GrpcServerMetrics

    async def main():
        reg = CollectorRegistry()
        async with _our_server(metrics=GrpcServerMetrics(reg)) as port:
            ch = H2Channel(f"127.0.0.1:{port}", "snappy")
            try:
                await _calls(ch)
            finally:
                await ch.close()
        return reg

    reg = _run(main())
    text = generate_latest(reg).decode()
    names = {line.split("{")[0] for line in text.splitlines() if not line.startswith("#")}
    assert names == {"grpc_server_started_total", "grpc_server_handled_total",
                     "grpc_server_msg_received_total", "grpc_server_msg_sent_total",
                     "grpc_server_handling_seconds_bucket", "grpc_server_handling_seconds_count",
                     "grpc_server_handling_seconds_sum"}

    def v(name, method, kind, **labels):
        return reg.get_sample_value(name, {"grpc_service": "t.T", "grpc_method": method,
                                           "grpc_type": kind, **labels})

    unary, stream = ("Unary", "unary"), ("Stream", "server_stream")
    assert [v("grpc_server_started_total", *unary), v("grpc_server_msg_received_total", *unary),
            v("grpc_server_msg_sent_total", *unary),
            v("grpc_server_handled_total", *unary, grpc_code="OK"),
            v("grpc_server_handled_total", *unary, grpc_code="FailedPrecondition")] == \
        [3.0, 3.0, 2.0, 2.0, 1.0]
    assert v("grpc_server_started_total", *stream) == 2.0
    assert v("grpc_server_msg_sent_total", *stream) >= 13.0  # 12 whole + at least one
    for method in (unary, stream):
        buckets = [v("grpc_server_handling_seconds_bucket", *method, le=le)
                   for le in [str(float(b)) for b in BUCKETS] + ["+Inf"]]
        assert buckets == sorted(buckets) and None not in buckets
        handled = sum(v("grpc_server_handled_total", *method, grpc_code=c) or 0
                      for c in ("OK", "FailedPrecondition", "Canceled"))
        assert buckets[-1] == v("grpc_server_handling_seconds_count", *method) == handled
        assert 0 < v("grpc_server_handling_seconds_sum", *method) < 60


async def _sized(req: bytes, context):
    yield str(len(req)).encode()
    yield req[-3:]


def test_streamed_requests_within_and_beyond_the_send_window_share_a_live_connection():
    """A streamed call on a live connection whose request fits the send windows starts at once
    (no timer); one beyond them (here past a 64 KiB window) waits for the server's window
    updates as before. Mixed on one connection, through both streaming entry points, every
    request arrives whole and every answer is read."""
    sized = [grpc.method_handlers_generic_handler(
        "t.T", {"Sized": grpc.unary_stream_rpc_method_handler(_sized)})]

    async def main():
        async with _our_server(sized, window_bytes=65535) as port:
            ch = H2Channel(f"127.0.0.1:{port}", "identity")
            try:
                got = []
                for size in sizes:
                    req = b"x" * (size - 3) + b"end"
                    got.append([m async for m in ch.unary_stream("/t.T/Sized", req, timeout=30)])
                    each: list[bytes] = []
                    await ch.unary_stream_each("/t.T/Sized", req, 30, each.append)
                    got.append(each)
                return got
            finally:
                await ch.close()

    # (a request of 16,379 bytes is one full 16 KiB DATA frame with its 5-byte prefix; one
    # more byte takes two frames, within the window)
    sizes = (10, 200_000, 10, 10, 300_000, 16_379, 16_380, 40_000, 10)
    assert _run(main()) == [[str(n).encode(), b"end"] for n in sizes for _ in range(2)]


def test_calls_past_their_grpc_timeout_end_deadline_exceeded():
    """A unary and a streaming call still running at their grpc-timeout (a raw client that
    waits on: no deadline of its own races the server's) end with grpc-status 4, counted as
    DeadlineExceeded in grpc_server_handled_total; the connection serves the next call."""
    from prometheus_client import CollectorRegistry

    from storeapi.grpcmetrics import GrpcServerMetrics

    async def slow_stream(req: bytes, context):
        yield b"first"
        await asyncio.sleep(30)
        yield b"never"

    handlers = _handlers() + [grpc.method_handlers_generic_handler("t.S", {
        "Slow": grpc.unary_stream_rpc_method_handler(slow_stream)})]

    def call(sid: int, path: str) -> bytes:
        block = (b"\x83\x86" + literal(4, path) + literal(1, "x")
                 + literal(b"content-type", "application/grpc")
                 + literal(b"grpc-timeout", "200m"))
        return frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM, sid,
                                                                b"\0\0\0\0\0")

    async def main():
        reg = CollectorRegistry()
        async with _our_server(handlers, metrics=GrpcServerMetrics(reg)) as port:
            frames = await _raw(port, call(1, "/t.T/Parked") + call(3, "/t.S/Slow"))
            ch = H2Channel(f"127.0.0.1:{port}", "identity")
            try:
                again = await ch.unary(UNARY, b"ok", timeout=10)
            finally:
                await ch.close()
        ends = {f[2]: f[3] for f in frames if f[0] == HEADERS and f[1] & END_STREAM}
        counted = [reg.get_sample_value("grpc_server_handled_total", {
            "grpc_service": service, "grpc_method": method, "grpc_type": kind,
            "grpc_code": "DeadlineExceeded"}) for service, method, kind in (
                ("t.T", "Parked", "unary"), ("t.S", "Slow", "server_stream"))]
        return ends, again, counted

    ends, again, counted = _run(main())
    status = literal(b"grpc-status", "4")
    assert sorted(ends) == [1, 3] and all(status in block for block in ends.values())
    assert again == b"ko" and counted == [1.0, 1.0]


def test_streamed_calls_end_at_their_own_deadlines_with_one_timer_per_connection():
    """Streamed calls on one connection to a server that never answers each fail with
    DEADLINE_EXCEEDED at their own deadline (the sooner of ``timeout`` and ``until``), the
    sooner one first; the connection's single deadline timer is re-armed for the calls still
    waiting and for later ones, and holds nothing once no call waits."""
    async def main():
        held: list[asyncio.StreamWriter] = []

        async def silent(reader, writer):
            held.append(writer)
            await reader.read()  # reads everything, answers nothing

        srv = await asyncio.start_server(silent, "127.0.0.1", 0)
        ch = H2Channel(f"127.0.0.1:{srv.sockets[0].getsockname()[1]}")
        loop = asyncio.get_running_loop()
        ended: list[str] = []

        async def call(name: str, timeout: float, until: float | None = None) -> None:
            with pytest.raises(RpcError) as ei:
                await ch.unary_stream_each(STREAM, b"1", timeout, lambda m: None, until)
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            ended.append(name)
        try:
            late = asyncio.ensure_future(call("late", 3.0))
            await asyncio.sleep(0.05)  # the later deadline arms the timer first
            await call("soon", 30.0, until=loop.time() + 0.2)
            assert ended == ["soon"] and not late.done()
            await late
            await call("again", 0.2)
            assert ended == ["soon", "late", "again"]
            assert ch._conn is not None and ch._conn.timer is None
        finally:
            await ch.close()
            for w in held:
                w.close()
            srv.close()
    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_small_streamed_answer_is_read_once_its_trailers_came_a_big_one_as_it_comes():
    """unary_stream_each's reader takes the whole answer anyway: a small answer's DATA does not
    wake it, its end does (one wake-up per call, not two when the trailers come in a read of
    their own); past 64 KiB unread it is woken before the end, as the answer streams in."""
    async def main():
        sent: list[str] = []
        read = asyncio.Event()  # the reader took a message

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readexactly(len(PREFACE))
            w.write(settings_frame({}))
            for sid, size, wait_s in ((1, 10, 0.3), (3, 100 << 10, 10.0)):
                while sid not in (f[2] for f in split_frames(await r.read(1 << 16), 1 << 24)[0]):
                    pass  # until the call's HEADERS came
                read.clear()
                w.write(frame(HEADERS, END_HEADERS, sid, b"\x88"  # :status 200
                              + literal(b"content-type", "application/grpc")))
                w.write(frame(DATA, 0, sid, b"\0" + size.to_bytes(4, "big") + b"m" * size))
                await w.drain()
                # the trailers in a read of their own: after the reader took the big message
                # (a bounded wait), or after a moment for the small one (it must not be read)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(read.wait(), wait_s)
                sent.append(f"trailers {sid}")
                w.write(frame(HEADERS, END_HEADERS | END_STREAM, sid,
                              literal(b"grpc-status", "0")))
                await w.drain()
            await r.read()  # until the client hangs up

        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        ch = H2Channel(f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", "identity")
        seen: list[tuple[int, list[str]]] = []
        try:
            for _ in range(2):
                await ch.unary_stream_each(STREAM, b"1", 20, lambda m: (
                    seen.append((len(m), list(sent))), read.set()))
        finally:
            await ch.close()
            srv.close()
        return seen

    assert _run(main()) == [(10, ["trailers 1"]), (100 << 10, ["trailers 1"])]
def test_deadlines_of_calls_on_one_connection_fire_whatever_their_order():
    """The server keeps one deadline timer per connection, armed for its earliest running
    call: a short grpc-timeout after a long one still ends on time (status 4), as does one
    started after an earlier deadline already fired; the long one keeps running."""
    def call(sid: int, timeout: str) -> bytes:
        block = (b"\x83\x86" + literal(4, "/t.T/Parked") + literal(1, "x")
                 + literal(b"content-type", "application/grpc")
                 + literal(b"grpc-timeout", timeout))
        return frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM, sid,
                                                                b"\0\0\0\0\0")

    async def main():
        async with _our_server(_handlers()) as port:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(PREFACE + settings_frame({}) + call(1, "20S") + call(3, "100m"))
            got = bytearray()

            async def until_ended(sid: int) -> None:
                while not any(f[0] == HEADERS and f[1] & END_STREAM and f[2] == sid
                              for f in split_frames(got, 1 << 24)[0]):
                    got.extend(await asyncio.wait_for(r.read(65536), 10))

            await until_ended(3)
            w.write(call(5, "150m"))  # after the first deadline fired
            await until_ended(5)
            w.close()
        return {f[2]: f[3] for f in split_frames(got, 1 << 24)[0]
                if f[0] == HEADERS and f[1] & END_STREAM}

    ends = _run(main())
    assert sorted(ends) == [3, 5]
    assert all(literal(b"grpc-status", "4") in block for block in ends.values())


def test_padded_request_data_is_unpadded_and_bad_padding_ends_the_connection():
    """A request body in a PADDED DATA frame reaches the handler without its padding; padding
    as long as the frame is a protocol error (GOAWAY)."""
    from storeapi.h2frames import PADDED

    headers = frame(HEADERS, END_HEADERS, 1, b"\x83\x86" + literal(4, UNARY) + literal(1, "x")
                    + literal(b"content-type", "application/grpc"))
    message = b"\0\0\0\0\x02ok"

    async def main():
        async with _our_server(_handlers()) as port:
            good = await _raw(port, headers + frame(DATA, END_STREAM | PADDED, 1,
                                                    b"\x03" + message + b"\0\0\0"))
            bad = await _raw(port, headers + frame(DATA, END_STREAM | PADDED, 1, b"\x09" + message))
        return good, bad

    good, bad = _run(main())
    assert any(f[0] == DATA and f[3].endswith(b"ko") for f in good)
    assert [f[0] for f in bad if f[0] == GOAWAY] == [GOAWAY]


def test_a_lazy_call_resumes_in_the_read_that_ended_it():
    """unary_stream_each's caller is woken at the end of the socket read that brought its
    answer's end (no loop iteration of its own), in its own task; a failed call too, and
    other calls on the connection go on."""
    def inside_read() -> bool:
        f = sys._getframe()
        while f is not None and f.f_code is not _Connection.data_received.__code__:
            f = f.f_back
        return f is not None

    async def main():
        where: list[tuple[bool, bool]] = []

        async def each(request: bytes) -> None:
            task = asyncio.current_task()
            try:
                await ch.unary_stream_each(STREAM, request, 20, lambda m: None)
            finally:
                where.append((inside_read(), asyncio.current_task() is task))

        async with _our_server() as port:
            ch = H2Channel(f"127.0.0.1:{port}", "identity")
            try:
                await each(b"1")
                await asyncio.gather(each(b"2"), each(b"1"))
                with pytest.raises(RpcError):
                    await each(b"x")  # the server's handler fails: status UNKNOWN
                await each(b"1")
            finally:
                await ch.close()
        return where

    assert _run(main()) == [(True, True)] * 5


def _unary_request(sid: int, path: str, body: bytes) -> bytes:
    block = (b"\x83\x86" + literal(4, path) + literal(1, "x")
             + literal(b"content-type", "application/grpc"))
    return (frame(HEADERS, END_HEADERS, sid, block)
            + frame(DATA, END_STREAM, sid, b"\0" + len(body).to_bytes(4, "big") + body))


async def _read_until(r: asyncio.StreamReader, got: bytearray, done) -> list[tuple]:
    """The frames read into ``got`` once ``done(frames)`` holds."""
    while not done(frames := split_frames(got, 1 << 24)[0]):
        got += await asyncio.wait_for(r.read(65536), 10)
    return frames


@pytest.mark.parametrize("window", [65535, 3])
def test_a_unary_answer_is_headers_data_trailers_within_the_clients_window(window):
    """A small answer goes out as HEADERS, one DATA and trailers (one write); a client whose
    stream window is smaller than the answer gets only what the window allows, then the
    rest after its WINDOW_UPDATE, and the same trailers."""
    async def main():
        async with _our_server() as port:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            from storeapi.h2frames import INITIAL_WINDOW_SIZE
            w.write(PREFACE + settings_frame({INITIAL_WINDOW_SIZE: window})
                    + _unary_request(1, UNARY, b"abcdef"))
            got = bytearray()
            await _read_until(r, got, lambda fs: sum(
                len(f[3]) for f in fs if f[0] == DATA and f[2] == 1) >= min(window, 11))
            if window < 11:
                w.write(frame(WINDOW_UPDATE, 0, 1, (100).to_bytes(4, "big")))
            frames = [(f[0], f[1], f[3]) for f in await _read_until(r, got, lambda fs: any(
                f[2] == 1 and f[0] == HEADERS and f[1] & END_STREAM for f in fs)) if f[2] == 1]
            w.close()
            return frames

    frames = _run(main())
    kinds = [(t, flags) for t, flags, _ in frames]
    data = b"".join(p for t, _, p in frames if t == DATA)
    assert data == b"\0\0\0\0\x06fedcba"
    assert kinds[0] == (HEADERS, END_HEADERS) and kinds[-1] == (HEADERS, END_HEADERS | END_STREAM)
    assert [len(p) for t, _, p in frames if t == DATA] == ([11] if window > 11 else [3, 8])
    assert frames[-1][2] == literal(b"grpc-status", "0")


def test_a_call_answered_at_once_runs_as_its_own_task():
    """A call's first step runs inside data_received (no loop pass before it), yet as its own
    Task: asyncio.current_task() is the call's and asyncio.timeout works there, and a handler
    that waits is resumed by the loop as before."""
    async def main():
        seen: list = []

        async def timed(req: bytes, context) -> bytes:
            task = asyncio.current_task()
            async with asyncio.timeout(5):
                if req == b"wait":
                    await asyncio.sleep(0.01)
            seen.append(task)
            return req + b"!"

        async with _our_server([grpc.method_handlers_generic_handler("t.T", {
                "Unary": grpc.unary_unary_rpc_method_handler(timed)})]) as port:
            ch = H2Channel(f"127.0.0.1:{port}", "identity")
            try:
                got = [await ch.unary(UNARY, b"now", timeout=10),
                       await ch.unary(UNARY, b"wait", timeout=10)]
            finally:
                await ch.close()
        return got, seen, asyncio.current_task()

    got, seen, client_task = _run(main())
    assert got == [b"now!", b"wait!"]
    assert len(seen) == 2 and None not in seen and client_task not in seen
    assert seen[0] is not seen[1]
    # named: an unnamed Task's "Task-<n>" is formatted with printf, cold on every call
    assert {t.get_name() for t in seen} == {"grpc call"}


def _split_frames_reference(buf, max_frame):
    """The former Python split_frames, kept as the reference for the C one."""
    out, pos, end = [], 0, len(buf)
    while end - pos >= 9:
        length = int.from_bytes(buf[pos:pos + 3], "big")
        if length > max_frame:
            raise ProtocolError(f"frame of {length} bytes", FRAME_SIZE_ERROR)
        if end - pos < 9 + length:
            break
        typ, flags = buf[pos + 3], buf[pos + 4]
        sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        pos += 9
        out.append((typ, flags, sid, bytes(buf[pos:pos + length])))
        pos += length
    return out, pos


def _split_or_error(split, buf, max_frame):
    try:
        return split(buf, max_frame)
    except ProtocolError as e:
        return ("error", str(e), e.code)


def test_split_frames_in_c_matches_the_python_split_on_random_and_hostile_buffers():
    """Whole, truncated, oversize (24-bit lengths, reserved stream bit) and random bytes, as
    bytes, bytearray and memoryview: the same frames, bytes used and errors, never a crash."""
    rnd = random.Random(13)
    cases = [b"", b"\x00" * 8, b"\x00" * 9, b"\xff" * 9, b"\xff" * 40,
             frame(DATA, END_STREAM, 1, b"x" * 100) + frame(HEADERS, END_HEADERS, 1, b"h"),
             frame(DATA, 0, (1 << 31) | 7, b"abc"),  # reserved bit: masked off
             b"\x00\x40\x01" + bytes(6) + b"y" * 0x4001,  # 16385 bytes: over the default
             b"\x01\x00\x00" + bytes(6)]  # 65536: announced, not arrived
    for _ in range(3000):
        n = rnd.randrange(0, 6)
        buf = b"".join(frame(rnd.randrange(256), rnd.randrange(256), rnd.randrange(1 << 32),
                             rnd.randbytes(rnd.randrange(0, 40))) for _ in range(n))
        kind = rnd.randrange(4)
        if kind == 0 and buf:
            buf = buf[:rnd.randrange(len(buf))]  # truncated
        elif kind == 1:
            buf = rnd.randbytes(rnd.randrange(0, 64))
        elif kind == 2 and buf:
            i = rnd.randrange(len(buf))
            buf = buf[:i] + bytes([rnd.randrange(256)]) + buf[i + 1:]  # one byte corrupted
        cases.append(buf)
    for buf in cases:
        for max_frame in (0, 16, 16384, (1 << 24) - 1):
            want = _split_or_error(_split_frames_reference, buf, max_frame)
            for form in (bytes, bytearray, memoryview):
                assert _split_or_error(split_frames, form(buf), max_frame) == want, (buf, max_frame)
    with pytest.raises(TypeError):
        split_frames("not bytes", 16384)


def _grpc_messages_reference(buf: bytearray, max_bytes: int):
    """The former Python split of gRPC length-prefixed messages, the C one's reference."""
    out, flags = [], bytearray()
    while len(buf) >= 5:
        flag, n = buf[0], int.from_bytes(buf[1:5], "big")
        if n > max_bytes:
            return out, bytes(flags), True
        if len(buf) < 5 + n:
            break
        out.append(bytes(buf[5:5 + n]))
        flags.append(flag)
        del buf[:5 + n]
    return out, bytes(flags), False


def test_grpc_messages_in_c_match_the_python_split_on_random_and_hostile_buffers():
    """Whole, truncated, compressed-flagged, oversize (up to 2**32-1 announced) and random
    buffers: the same messages, flags, limit verdict and bytes left behind, never a crash."""
    rnd = random.Random(13)

    def msg(flag, body, n=None):
        return bytes([flag]) + (len(body) if n is None else n).to_bytes(4, "big") + body

    cases = [b"", b"\x00" * 4, b"\x00" * 5, b"\xff" * 5, b"\xff" * 30, msg(0, b"x" * 300),
             msg(0, b"a") + msg(1, b"") + msg(7, b"bc"), msg(0, b"", n=1 << 30)]
    for _ in range(3000):
        buf = b"".join(msg(rnd.choice((0, 0, 1, 255)), rnd.randbytes(rnd.randrange(0, 30)))
                       for _ in range(rnd.randrange(0, 5)))
        kind = rnd.randrange(4)
        if kind == 0 and buf:
            buf = buf[:rnd.randrange(len(buf))]
        elif kind == 1:
            buf = rnd.randbytes(rnd.randrange(0, 40))
        elif kind == 2 and buf:
            i = rnd.randrange(len(buf))
            buf = buf[:i] + bytes([rnd.randrange(256)]) + buf[i + 1:]
        cases.append(buf)
    for buf in cases:
        for limit in (0, 4, 20, 1 << 30, (1 << 63) - 1):
            want_buf, got_buf = bytearray(buf), bytearray(buf)
            want = _grpc_messages_reference(want_buf, limit)
            assert grpc_messages(got_buf, limit) == want, (buf, limit)
            assert got_buf == want_buf
    for bad in (b"\x00\x00\x00\x00\x01x", memoryview(bytearray(5)), None):
        with pytest.raises(TypeError):
            grpc_messages(bad, 10)


def test_client_decompresses_flagged_messages_and_refuses_oversize_ones_beside_plain_ones():
    """A streamed answer mixing plain and snappy messages, then one beyond the client's limit:
    the messages before it arrive decoded and in order, then RESOURCE_EXHAUSTED."""
    ch = H2Channel("127.0.0.1:1", "snappy")
    ch.max_message_bytes = 100
    call = _Call(streaming=True, send_window=0)
    call.headers["grpc-encoding"] = "snappy"
    buf = bytearray(b"\x00\x00\x00\x00\x02ab" + b"\x01" + len(_SNAPPY_CD).to_bytes(4, "big")
                    + _SNAPPY_CD + b"\x00\x00\x00\x00\x65")
    with pytest.raises(RpcError) as e:
        ch._messages(buf, call)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    buf = bytearray(b"\x00\x00\x00\x00\x02ab" + b"\x01" + len(_SNAPPY_CD).to_bytes(4, "big")
                    + _SNAPPY_CD + b"\x00\x00\x00")
    assert ch._messages(buf, call) == [b"ab", b"cd"] and buf == b"\x00\x00\x00"


def test_request_frames_in_c_match_the_python_frames():
    """A call's opening frames built in one C call are byte for byte header_frames + one
    END_STREAM DATA frame: empty, short, frame-sized and multi-frame header blocks, data up to
    the frame size, any stream id and frame size; out of range arguments are refused."""
    rnd = random.Random(29)
    cases = [(1, b"", b"", 16384), (1, b"h", b"\x00" * 5, 16384), ((1 << 31) - 1, b"b" * 16384,
             b"d" * 16384, 16384), (3, b"b" * 16385, b"", 16384), (5, b"b" * 7, b"d", 1),
             ((1 << 32) - 1, b"x" * 100, b"y" * 3, 7), (7, b"z" * 40, b"w" * 40, (1 << 24) - 1)]
    for _ in range(2000):
        max_frame = rnd.choice([1, 2, 5, 16, 100, 16384, (1 << 24) - 1])
        cases.append((rnd.randrange(1 << 32), rnd.randbytes(rnd.randrange(0, 300)),
                      rnd.randbytes(rnd.randrange(0, min(max_frame, 300) + 1)), max_frame))
    for sid, block, data, max_frame in cases:
        want = b"".join(header_frames(sid, block, max_frame, end_stream=False)) + frame(
            DATA, END_STREAM, sid, data)
        for form in (bytes, bytearray, memoryview):
            assert request_frames(sid, form(block), form(data), max_frame) == want
    for bad in ((-1, b"", b"", 16384), (1 << 32, b"", b"", 16384), (1, b"", b"", 0),
                (1, b"", b"", 1 << 24), (1, b"", b"xy", 1)):
        with pytest.raises(ValueError):
            request_frames(*bad)
    for bad in ((1, "h", b"", 16384), (1, b"", None, 16384), (1.5, b"", b"", 16384)):
        with pytest.raises(TypeError):
            request_frames(*bad)


def test_series_with_warnings_counts_grpc_client_metrics_as_iter_series_does():
    """The Series stub taken whole (series_with_warnings, its method's counts kept) and the
    streamed one (iter_series, begin/done) count a call the same: started, one message sent,
    handled by code, timed; also for a call that fails (UNAVAILABLE: nothing listens)."""
    from prometheus_client import CollectorRegistry

    from receiver.tsdb.labels import Matcher, MatchType
    from storeapi.client import StoreClient
    from storeapi.grpcmetrics import client_metrics
    from storeapi.server import StoreServer

    class One:
        def label_sets(self):
            return []

        def time_range(self):
            return 0, 1000

        def series(self, mint, maxt, matchers, skip_chunks):
            return [((("__name__", "up"), ("i", "1")), [(0, 10, b"\x00\x00")])]

    ms = [Matcher(MatchType.EQ, "__name__", "up")]
    names = ("grpc_client_started_total", "grpc_client_msg_sent_total",
             "grpc_client_handling_seconds_count")

    async def counts(whole: bool) -> list:
        reg = CollectorRegistry()
        async with _our_server(StoreServer(One(), "store").handlers()) as port:
            for address in (f"127.0.0.1:{port}", "127.0.0.1:1"):
                client = StoreClient(address, timeout_s=5, metrics=client_metrics(reg))
                try:
                    if whole:
                        await client.series_with_warnings(0, 1000, ms)
                    else:
                        async for _ in client.iter_series(0, 1000, ms):
                            pass
                except RpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE
                finally:
                    await client.close()
        labels = {"grpc_type": "server_stream", "grpc_service": "thanos.Store",
                  "grpc_method": "Series"}
        return ([reg.get_sample_value(n, labels) for n in names]
                + [reg.get_sample_value("grpc_client_handled_total", {**labels, "grpc_code": c})
                   for c in ("OK", "Unavailable")])

    whole, streamed = _run(counts(True)), _run(counts(False))
    assert whole == streamed == [2.0, 2.0, 2.0, 1.0, 1.0]
