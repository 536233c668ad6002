"""Cap'n Proto replication: our wire code against pycapnp (the reference C++ implementation),
and the ingestor's Writer server answering as Thanos's does, whatever it is sent."""
from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from pathlib import Path

import capnp
import numpy as np
import pytest

from receiver.capnproto import _capnpc
from receiver.capnproto.rpc import (ALREADY_EXISTS, INVALID_ARGUMENT, NONE, CallFailed,
                                    ServerOptions, WriterClient, WriterServer)
from receiver.capnproto.wire import Builder, PackedFrames, root
from receiver.config import ReceiveConfig
from receiver.remotewrite import decode, encode_write_request
from receiver.router import CONFLICT, OK, UNAVAILABLE, Forwarder
from receiver.server import Receiver
from receiver.tsdb.histogram import from_proto_bytes

SCHEMA = capnp.load(str(Path(__file__).resolve().parents[2] / "receiver" / "capnproto" /
                        "write_request.capnp"))


def _symbols(wr, strings: list[bytes]) -> None:
    wr.symbols.data = b"".join(strings)
    wr.symbols.offsets = np.cumsum([len(s) for s in strings]).tolist()


def _reference_request(builder=None):
    """A WriteRequest built by pycapnp as Thanos's router builds one: two series (floats; a
    native histogram and an exemplar), labels in a symbol table (one empty symbol)."""
    wr = builder.init_root(SCHEMA.WriteRequest) if builder else SCHEMA.WriteRequest.new_message()
    wr.tenant = "team-a"
    _symbols(wr, [b"__name__", b"up", b"job", b"api", b"", b"trace_id", b"abc"])
    ts = wr.init("timeSeries", 2)
    lb = ts[0].init("labels", 2)
    lb[0].name, lb[0].value, lb[1].name, lb[1].value = 0, 1, 2, 3
    sm = ts[0].init("samples", 3)
    for i in range(3):
        sm[i].timestamp, sm[i].value = 1_000 * i - 5, [0.5, -2.0, float("nan")][i]
    ex = ts[0].init("exemplars", 1)[0]
    el = ex.init("labels", 1)
    el[0].name, el[0].value = 5, 6
    ex.value, ex.timestamp = 1.25, 1_500
    lb = ts[1].init("labels", 1)
    lb[0].name, lb[0].value = 0, 2
    h = ts[1].init("histograms", 2)
    h[0].count.countInt, h[0].sum, h[0].schema, h[0].zeroThreshold = 9, 4.5, -2, 1e-3
    h[0].zeroCount.zeroCountInt = 1
    sp = h[0].init("positiveSpans", 2)
    sp[0].offset, sp[0].length, sp[1].offset, sp[1].length = -3, 2, 4, 1
    h[0].positiveDeltas = [2, -1, 5]
    sp = h[0].init("negativeSpans", 1)
    sp[0].offset, sp[0].length = 0, 1
    h[0].negativeDeltas = [1]
    h[0].timestamp, h[0].resetHint = 7_000, "no"
    h[1].count.countFloat, h[1].zeroCount.zeroCountFloat, h[1].schema = 3.5, 0.5, 1
    sp = h[1].init("positiveSpans", 1)
    sp[0].offset, sp[0].length = 1, 2
    h[1].positiveCounts = [1.5, 1.5]
    h[1].timestamp, h[1].resetHint = 8_000, "gauge"
    return wr


def _framed(segments: list[bytes]) -> bytes:
    header = struct.pack(f"<{len(segments) + 1}I", len(segments) - 1, *(len(s) // 8 for s in segments))
    return header + bytes(-len(header) % 8) + b"".join(segments)


def _convert(raw: bytes) -> tuple[bytes, bytes]:
    return _capnpc.to_remote_write(raw, 0, 0, 1 << 20)


def _check_decoded(body: bytes) -> None:
    d = decode(body)
    assert d.keys == [b"\x08__name__\x02up\x03job\x03api", b"\x08__name__\x03job"]
    assert d.ts.tolist() == [-5, 995, 1995] and d.sample_series.tolist() == [0, 0, 0]
    assert d.vals[:2].tolist() == [0.5, -2.0] and np.isnan(d.vals[2])
    assert d.n_exemplars == 1 and d.hist_series.tolist() == [1, 1]
    (t0, h0), (t1, h1) = (from_proto_bytes(r) for r in d.hist_raw)
    assert (t0, h0.is_float, h0.count, h0.sum, h0.schema, h0.zt, h0.zc, h0.hint) == \
        (7_000, False, 9, 4.5, -2, 1e-3, 1, 2)
    assert h0.pspans == ((-3, 2), (4, 1)) and list(h0.pbuckets) == [2, -1, 5]
    assert h0.nspans == ((0, 1),) and list(h0.nbuckets) == [1]
    assert (t1, h1.is_float, h1.count, h1.zc, h1.schema, h1.hint) == (8_000, True, 3.5, 0.5, 1, 3)
    assert h1.pspans == ((1, 2),) and list(h1.pbuckets) == [1.5, 1.5]


def test_a_reference_write_request_converts_to_the_same_remote_write():
    tenant, body = _convert(_reference_request().to_bytes())
    assert tenant == b"team-a"
    _check_decoded(body)


def test_far_pointers_of_a_many_segment_message_are_followed():
    builder = capnp._MallocMessageBuilder(2)  # tiny first segment: everything else is far
    wr = _reference_request(builder)
    segments = wr.to_segments()
    assert len(segments) > 3
    tenant, body = _convert(_framed(segments))
    assert tenant == b"team-a"
    _check_decoded(body)


def test_our_encoding_reads_back_in_pycapnp_and_packs_like_it():
    _, body = _convert(_reference_request().to_bytes())
    image = _capnpc.from_remote_write(body, b"team-a")
    raw = _framed([struct.pack("<Q", 3 << 48) + image])  # root pointer: struct(0 data, 3 ptrs)
    with SCHEMA.WriteRequest.from_bytes(raw) as wr:
        assert wr.tenant == "team-a"
        data, ends = bytes(wr.symbols.data), list(wr.symbols.offsets)
        syms = [data[a:b] for a, b in zip([0] + ends, ends)]
        assert len(set(syms)) == len(syms)  # deduplicated
        assert [(syms[lb.name], syms[lb.value]) for lb in wr.timeSeries[0].labels] == \
            [(b"__name__", b"up"), (b"job", b"api")]
        h = wr.timeSeries[1].histograms[1]
        assert h.count.which() == "countFloat" and list(h.positiveCounts) == [1.5, 1.5]
        assert wr.timeSeries[0].exemplars[0].timestamp == 1_500
    assert _convert(raw) == (b"team-a", body)  # and it reads back identically here
    # packing: byte for byte what the reference packer makes of the same message
    assert _capnpc.pack(_reference_request().to_bytes()) == _reference_request().to_bytes_packed()


def test_unpacking_is_incremental_and_bounded():
    raw = _reference_request().to_bytes()
    packed = _reference_request().to_bytes_packed()
    frames = PackedFrames(1 << 20)
    got = []
    for i in range(len(packed)):  # one byte at a time
        frames.feed(packed[i:i + 1])
        while (m := frames.next()) is not None:
            got.append(m)
    assert got == [raw] and not frames.partial
    small = PackedFrames(64)
    small.feed(packed)
    with pytest.raises(ValueError, match="exceeds"):
        small.next()


def test_mutated_messages_are_refused_or_converted_never_crash():
    """Random corruption anywhere: a ValueError or a remote-write body the decoder accepts or
    refuses cleanly."""
    raw = bytearray(_framed(_reference_request(capnp._MallocMessageBuilder(4)).to_segments()))
    rng = random.Random(7)
    refused = 0
    for _ in range(3000):
        m = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(m))
            m[i] = rng.choice([0, 0xFF, rng.randrange(256), m[i] ^ (1 << rng.randrange(8))])
        try:
            _, body = _capnpc.to_remote_write(bytes(m[:rng.choice([len(m), rng.randrange(len(m))])]),
                                              0, 0, 1 << 20)
        except ValueError:
            refused += 1
            continue
        try:
            decode(body)
        except ValueError:
            pass
    assert refused > 100


def test_symbol_references_and_offsets_are_checked():
    wr = _reference_request()
    wr.timeSeries[0].labels[1].value = 99
    with pytest.raises(ValueError, match="outside the symbol table"):
        _convert(wr.to_bytes())
    wr = _reference_request()
    wr.symbols.offsets = [8, 4, 100]
    with pytest.raises(ValueError, match="ascending"):
        _convert(wr.to_bytes())


def test_shared_lists_cannot_amplify_a_message_without_bound():
    """2,000 series all pointing at one 5,000-sample list (legal on the wire, 150 KB) would be
    10 million samples; every use of a list is charged against a traversal limit instead."""
    n, m = 2_000, 5_000
    words = [3 << 48]  # root -> WriteRequest (0 data words, 3 pointers) at word 1
    words += [0, (1 << 2 | 1) + ((7 | (4 * n) << 3) << 32), 0]  # timeSeries list right after
    words.append((n << 2) + ((4 << 16) << 32))  # composite tag: n x (0 data, 4 pointers)
    first = len(words)
    shared = first + 4 * n
    for i in range(n):
        at = first + 4 * i + 1  # the samples pointer of series i
        words += [0, ((shared - at - 1) << 2 | 1) + ((7 | (2 * m) << 3) << 32), 0, 0]
    words.append((m << 2) + (2 << 32))  # tag: m x (2 data words)
    words += [0, 0] * m
    raw = _framed([struct.pack(f"<{len(words)}Q", *words)])
    with pytest.raises(ValueError, match="traversal limit"):
        _convert(raw)


@contextlib.asynccontextmanager
async def _ingestor(tmp: Path):
    """An in-process ingestor with its Cap'n Proto server, and a client connected to it."""
    ing = Receiver(ReceiveConfig(remote_write_address="127.0.0.1:0", grpc_address="",
                                 http_address="", tsdb_path=tmp, capnproto_address="127.0.0.1:0"))
    await ing.start()
    client = WriterClient(f"127.0.0.1:{ing.ports['capnproto']}")
    try:
        yield ing, client
    finally:
        await client.close()
        await ing.stop()


def _body(name: str, t_ms: int, label=("job", "a")) -> bytes:
    return encode_write_request([((("__name__", name), label), np.array([t_ms]), np.array([1.0]))])


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_writes_answer_thanos_write_errors_and_use_the_default_tenant(tmp_path):
    async def main():
        async with _ingestor(tmp_path) as (ing, c):
            now = int(time.time() * 1000)
            assert await c.write("t1", _body("up", now), 10) == (NONE, "")
            err, msg = await c.write("t1", _body("up", now - 60_000), 10)
            assert err == ALREADY_EXISTS and "out of order" in msg
            bad = encode_write_request([((("__name__", "up"), ("job", "x")), np.array([now]),
                                         np.array([1.0]))]).replace(b"x", b"\xff")
            err, msg = await c.write("t1", bad, 10)
            assert err == INVALID_ARGUMENT and "UTF-8" in msg
            err, msg = await c.write("../evil", _body("up", now), 10)
            assert err == INVALID_ARGUMENT and "Tenant" in msg
            assert await c.write("", _body("defaulted", now), 10) == (NONE, "")
            assert ing.db.tenant("default-tenant").head.num_series == 1
    _run(main())


def test_a_malformed_request_fails_the_call_not_the_connection(tmp_path, monkeypatch):
    async def main():
        async with _ingestor(tmp_path) as (_, c):
            real = _capnpc.from_remote_write
            monkeypatch.setattr(_capnpc, "from_remote_write",
                                lambda body, tenant: real(body, tenant)[:-8])  # cut short
            with pytest.raises(CallFailed, match="malformed write request"):
                await c.write("t", _body("up", int(time.time() * 1000)), 10)
            monkeypatch.undo()
            assert c.connected
            assert await c.write("t", _body("up", int(time.time() * 1000)), 10) == (NONE, "")
    _run(main())


@contextlib.asynccontextmanager
async def _server(**opts):
    """A bare Writer server whose writes all succeed; yields (server, port)."""
    async def handler(tenant: str, body: bytes) -> tuple[int, str]:
        return 200, ""
    srv = WriterServer(handler, ServerOptions(**opts))
    port = await srv.start("127.0.0.1:0")
    try:
        yield srv, port
    finally:
        await srv.stop()


def test_a_stalled_message_is_dropped_after_the_message_timeout():
    async def main():
        async with _server(message_timeout_s=0.5, idle_timeout_s=30) as (_, port):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"\x10\x64")  # a segment table announcing 100 words, then nothing
            assert await asyncio.wait_for(r.read(), 10) == b""  # closed by the server
            w.close()
    _run(main())


def test_router_forwarder_maps_capnp_answers(tmp_path):
    async def main():
        async with _ingestor(tmp_path) as (ing, _):
            fw = Forwarder(timeout_s=5, retries=1, protocol="capnproto")
            addr = f"127.0.0.1:{ing.ports['capnproto']}"
            now = int(time.time() * 1000)
            try:
                assert await fw.send_capnp(addr, "t", _body("up", now)) == (OK, "")
                res, msg = await fw.send_capnp(addr, "t", _body("up", now - 60_000))
                assert res == CONFLICT and "alreadyExists" in msg
                dead = f"127.0.0.1:{_free_port()}"
                res, msg = await fw.send_capnp(dead, "t", _body("up", now))
                assert res == UNAVAILABLE and dead in msg
            finally:
                await fw.close()
    _run(main())


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _abort_reason(data: bytes) -> str:
    """The reason of the Abort message a server sent before closing."""
    frames = PackedFrames(1 << 20)
    frames.feed(data)
    msg = root(frames.next())
    assert msg.u16(0) == 1  # Message.abort
    return msg.struct(0).text(0)


def test_unfinished_messages_of_all_connections_share_one_memory_budget():
    async def main():
        start = _capnpc.pack(struct.pack("<II", 0, 1000) + b"\x01" * 8 * 70)  # 70 of 1000 words
        async with _server(max_buffered_bytes=1000, message_timeout_s=30) as (srv, port):
            ra, wa = await asyncio.open_connection("127.0.0.1", port)
            wa.write(start)
            await wa.drain()
            while srv.buffered == 0:
                await asyncio.sleep(0.01)
            rb, wb = await asyncio.open_connection("127.0.0.1", port)
            wb.write(start)
            assert "server busy" in _abort_reason(await asyncio.wait_for(rb.read(), 10))
            assert 0 < srv.buffered <= 1000  # the first connection's message is still held
            wa.close()
            wb.close()
            while srv.buffered:
                await asyncio.sleep(0.01)
    _run(main())


def test_flags_and_defaults_are_thanos(tmp_path):
    from promring.cli import build_parser, receive_config
    ring = '[{"endpoints": [{"address": "a:10901", "capnproto_address": "a:7000"}, "b:10901"]}]'
    a = build_parser().parse_args(["receive", f"--receive.hashrings={ring}"])
    cfg = receive_config(a, str(tmp_path), "", "")
    assert (cfg.capnproto_address, cfg.replication_protocol) == ("0.0.0.0:19391", "protobuf")
    a = build_parser().parse_args(["receive", f"--receive.hashrings={ring}",
                                   "--receive.replication-protocol=capnproto",
                                   "--receive.capnproto-address=127.0.0.1:7001"])
    cfg = receive_config(a, str(tmp_path), "", "")
    assert (cfg.capnproto_address, cfg.replication_protocol) == ("127.0.0.1:7001", "capnproto")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["receive", "--receive.replication-protocol=grpc"])
    from receiver.hashring import parse_hashrings
    assert [e.capnproto_address for e in parse_hashrings(ring)[0].endpoints] == ["a:7000", "b:19391"]


def test_a_peer_that_never_reads_its_answers_is_dropped():
    """Answers cannot pile up in the server's buffers: unread for the message timeout, the
    connection is closed."""
    import socket

    async def main():
        b = Builder()
        msg = b.struct(0, 1, 1)
        b.put(msg, 0, "H", 8)  # Message.bootstrap
        b.struct(msg + 1, 1, 1)
        bootstrap = b.frame()
        async with _server(message_timeout_s=0.5) as (srv, port):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            try:
                for _ in range(200):  # 2,000 bootstraps at a time, answers never read
                    await loop.sock_sendall(sock, bootstrap * 2000)
                    if not srv._conns:
                        break
            except ConnectionError:
                pass  # closed by the server while we were still sending
            while srv._conns:
                await asyncio.sleep(0.05)
            sock.close()
    _run(main())


def test_a_message_trickling_in_byte_by_byte_is_dropped_after_the_message_timeout():
    """The timeout bounds the whole message, not the gap between two bytes of it."""
    async def main():
        async with _server(message_timeout_s=0.5, idle_timeout_s=30) as (_, port):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"\x70\x40\x42\x0f")  # a segment table announcing 1,000,000 words
            closed = asyncio.ensure_future(r.read())
            while not closed.done():  # then one more byte every 0.1 s, forever
                w.write(b"\x01\x01")
                await asyncio.sleep(0.1)
            assert closed.result() == b""
            w.close()
    _run(main())


def test_concurrent_writes_share_one_connection(tmp_path):
    async def main():
        async with _ingestor(tmp_path) as (ing, c):
            now = int(time.time() * 1000)
            got = await asyncio.gather(*(c.write("t", _body(f"m{i}", now), 10) for i in range(40)))
            assert got == [(NONE, "")] * 40
            assert ing.db.tenant("t").head.num_series == 40
            assert len(ing._capnp._conns) == 1
    _run(main())


def test_a_hostile_ingestor_makes_the_write_unavailable_not_the_router_fail():
    """Garbage, or a well-formed answer that hands over no capability, from the other end."""
    from receiver.capnproto.rpc import return_results
    from receiver.capnproto.wire import frame

    async def main():
        for answer in (frame(b"\x01" * 64), return_results(1, NONE, "")):
            async def serve(r, w, answer=answer):
                await r.read(1)
                w.write(answer)
                await w.drain()
                await r.read()
            srv = await asyncio.start_server(serve, "127.0.0.1", 0)
            fw = Forwarder(timeout_s=5, retries=0, protocol="capnproto")
            try:
                addr = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
                res, msg = await fw.send_capnp(addr, "t", _body("up", 1))
                assert res == UNAVAILABLE and addr in msg
            finally:
                await fw.close()
                srv.close()
    _run(main())
