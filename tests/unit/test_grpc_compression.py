"""gRPC message compression on the write path: our HTTP/2 gRPC server accepts what Thanos
routers send (snappy framing format by default), our client sends it, and everything is bounded."""
from __future__ import annotations

import asyncio
import struct

import cramjam
import grpc
import grpc.aio
import pytest

from receiver.tsdb.labels import Labels, Matcher, MatchType
from storeapi import grpc_codec, rpc_pb2
from storeapi.client import StoreClient
from storeapi.h2client import H2Channel, RpcError
from storeapi._h2fast import grpc_timeout as parse_timeout
from storeapi.h2server import H2GrpcServer
from storeapi.server import StoreServer

METHOD = "/thanos.WriteableStore/RemoteWrite"


class _Source:
    """Two series with one XOR-less chunk list (enough for the Series/Info paths)."""

    def label_sets(self) -> list[Labels]:
        return [(("replica", "a"),)]

    def time_range(self) -> tuple[int, int]:
        return 0, 1000

    def series(self, mint, maxt, matchers, skip_chunks):
        return [((("__name__", "up"), ("job", str(i))), []) for i in range(2)]

    def label_names(self, mint, maxt, matchers):
        return ["__name__", "job"]

    def label_values(self, name, mint, maxt, matchers):
        return ["up"]


async def _serve(write_handler, **kw):
    srv = H2GrpcServer(**kw)
    srv.add_generic_rpc_handlers(StoreServer(_Source(), "receive").handlers())
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "thanos.WriteableStore", {"RemoteWrite": grpc.unary_unary_rpc_method_handler(
            write_handler, request_deserializer=None, response_serializer=None)}),))
    port = await srv.bind("127.0.0.1:0")
    await srv.start()
    return srv, f"127.0.0.1:{port}"


def _recorder():
    """A RemoteWrite handler recording (payload, grpc-encoding) of each call."""
    seen: list[tuple[bytes, str | None]] = []

    async def handler(data, context):
        seen.append((data, dict(context.invocation_metadata()).get("grpc-encoding")))
        return b""

    return seen, handler


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("encoding", ["snappy", "gzip", "deflate", "identity"])
def test_write_arrives_decompressed_for_every_encoding(encoding):
    payload = rpc_pb2.WriteRequest(tenant="t1", replica=1).SerializeToString() + b"\x0a\x00" * 5000

    async def main():
        seen, handler = _recorder()
        srv, addr = await _serve(handler)
        ch = H2Channel(addr, encoding)
        try:
            assert await ch.unary(METHOD, payload, timeout=10) == b""
        finally:
            await ch.close()
            await srv.stop(1)
        return seen

    seen = _run(main())
    assert seen == [(payload, None if encoding == "identity" else encoding)]


def test_snappy_frames_are_the_framing_format_thanos_uses():
    data = b"abc" * 100000
    framed = grpc_codec.compress("snappy", data)
    assert framed.startswith(b"\xff\x06\x00\x00sNaPpY")
    assert grpc_codec.snappy_framed_size(framed) == len(data)
    assert grpc_codec.decompress("snappy", framed, len(data)) == data
    # Raw block format (other clients) is accepted too.
    assert grpc_codec.decompress("snappy", bytes(cramjam.snappy.compress_raw(data)), len(data)) == data


@pytest.mark.parametrize("encoding", ["snappy", "gzip"])
def test_decompression_bomb_is_refused_without_inflating(encoding):
    big = b"\x00" * (4 << 20)
    with pytest.raises(grpc_codec.MessageTooLarge):
        grpc_codec.decompress(encoding, grpc_codec.compress(encoding, big), 1 << 20)

    async def main():
        async def handler(data, context):
            raise AssertionError("handler must not run")

        srv, addr = await _serve(handler, max_message_bytes=1 << 20)
        ch = H2Channel(addr, encoding)
        try:
            with pytest.raises(RpcError) as ei:
                await ch.unary(METHOD, big, timeout=10)
            return ei.value.code()
        finally:
            await ch.close()
            await srv.stop(1)

    assert _run(main()) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_corrupt_snappy_is_an_error_status_not_a_crash():
    async def main():
        async def handler(data, context):
            return b""

        srv, addr = await _serve(handler)
        r, w = await asyncio.open_connection(*addr.split(":"))
        import h2.config, h2.connection, h2.events
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                 header_encoding="utf-8"))
        c.initiate_connection()
        body = b"\xff\x06\x00\x00sNaPpY\x00\x09\x00\x00garbage!!"
        c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", METHOD),
                           (":authority", addr), ("content-type", "application/grpc"),
                           ("te", "trailers"), ("grpc-encoding", "snappy")])
        c.send_data(1, struct.pack(">BI", 1, len(body)) + body, end_stream=True)
        w.write(c.data_to_send())
        headers = {}
        while "grpc-status" not in headers:
            data = await r.read(65536)
            assert data, "server closed the connection"
            for ev in c.receive_data(data):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    headers.update(dict(ev.headers))
        w.close()
        # The server is still serving afterwards.
        ch = H2Channel(addr, "snappy")
        await ch.unary(METHOD, b"", timeout=10)
        await ch.close()
        await srv.stop(1)
        return headers

    h = _run(main())
    assert h["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0]), h


def test_abort_codes_unknown_method_and_unsupported_encoding():
    async def main():
        async def handler(data, context):
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "out of order sample: 50% äh")

        srv, addr = await _serve(handler)
        out = []
        for method, enc in ((METHOD, "snappy"), ("/thanos.Nope/Nope", "identity"),
                            (METHOD, "zstd")):
            ch = H2Channel(addr, "identity")
            ch.encoding = enc
            if enc == "zstd":  # a codec we do not know: compress() would refuse, so fake it
                grpc_codec_compress = grpc_codec.compress
                grpc_codec.compress = lambda e, d: d
            try:
                await ch.unary(method, b"x", timeout=10)
            except RpcError as e:
                out.append((e.code(), e.details()))
            finally:
                if enc == "zstd":
                    grpc_codec.compress = grpc_codec_compress
                await ch.close()
        await srv.stop(1)
        return out

    got = _run(main())
    assert got[0] == (grpc.StatusCode.ALREADY_EXISTS, "out of order sample: 50% äh")
    assert got[1][0] == grpc.StatusCode.UNIMPLEMENTED
    assert got[2][0] == grpc.StatusCode.UNIMPLEMENTED and "zstd" in got[2][1]


def test_deadline_from_grpc_timeout_header():
    assert parse_timeout("5S") == 5.0 and parse_timeout("250m") == 0.25
    assert parse_timeout("") is None and parse_timeout("5x") is None and parse_timeout("S") is None

    async def main():
        async def handler(data, context):
            await asyncio.sleep(30)

        srv, addr = await _serve(handler)
        ch = H2Channel(addr, "snappy")
        try:
            with pytest.raises(RpcError) as ei:
                await ch.unary(METHOD, b"", timeout=0.3)
            return ei.value.code()
        finally:
            await ch.close()
            await srv.stop(1)

    assert _run(main()) == grpc.StatusCode.DEADLINE_EXCEEDED


def test_grpcio_clients_read_the_store_api_from_our_server():
    """Queriers (ours: grpcio; Thanos's: grpc-go) read Series/Info/labels from this server."""
    async def main():
        async def handler(data, context):
            return b""

        srv, addr = await _serve(handler)
        client = StoreClient(addr)
        try:
            series = [s.labels async for s in client.iter_series(
                0, 1000, [Matcher(MatchType.EQ, "__name__", "up")])]
            async with grpc.aio.insecure_channel(addr) as ch:
                info = await ch.unary_unary("/thanos.Store/Info")(
                    rpc_pb2.InfoRequest().SerializeToString(), timeout=10)
                names = await ch.unary_unary("/thanos.Store/LabelNames")(
                    rpc_pb2.LabelNamesRequest(start=0, end=1000).SerializeToString(), timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as ei:
                    await ch.unary_unary("/thanos.Store/LabelValues")(
                        rpc_pb2.LabelValuesRequest().SerializeToString(), timeout=10)
        finally:
            await client.close()
            await srv.stop(1)
        return series, rpc_pb2.InfoResponse.FromString(info), \
            rpc_pb2.LabelNamesResponse.FromString(names), ei.value.code()

    series, info, names, code = _run(main())
    assert len(series) == 2
    assert info.max_time == 1000 and info.storeType == rpc_pb2.RECEIVE
    assert list(names.names) == ["__name__", "job"]
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_client_reports_unreachable_as_unavailable_and_reconnects():
    async def main():
        async def handler(data, context):
            return b""

        srv, addr = await _serve(handler)
        await srv.stop(0)
        ch = H2Channel(addr, "snappy")
        with pytest.raises(RpcError) as ei:
            await ch.unary(METHOD, b"", timeout=5)
        host, port = addr.split(":")
        srv2 = H2GrpcServer()
        srv2.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "thanos.WriteableStore", {"RemoteWrite": grpc.unary_unary_rpc_method_handler(
                handler, request_deserializer=None, response_serializer=None)}),))
        await srv2.bind(addr)
        await srv2.start()
        try:
            await ch.unary(METHOD, b"", timeout=5)
        finally:
            await ch.close()
            await srv2.stop(1)
        return ei.value.code()

    assert _run(main()) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("compression,expected", [("snappy", "snappy"), ("none", None)])
def test_router_forwarder_compresses_as_configured(compression, expected):
    """``--receive.grpc-compression``: snappy by default (as Thanos), none through grpcio."""
    from receiver.router import OK, Forwarder

    async def main():
        seen, handler = _recorder()
        srv, addr = await _serve(handler)
        fwd = Forwarder(timeout_s=5, retries=0, compression=compression)
        try:
            res = await fwd.send(addr, b"\x0a\x00" * 1000)
        finally:
            await fwd.close()
            await srv.stop(1)
        return res, seen

    res, seen = _run(main())
    assert res == (OK, "")
    assert seen == [(b"\x0a\x00" * 1000, expected)]
    assert Forwarder().compression == "snappy"
    with pytest.raises(ValueError):
        Forwarder(compression="lz4")


def test_garbage_and_abrupt_clients_do_not_take_the_server_down():
    async def main():
        seen, handler = _recorder()
        srv, addr = await _serve(handler)
        host, port = addr.split(":")
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,
                     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):  # the last one just hangs up
            r, w = await asyncio.open_connection(host, int(port))
            w.write(junk)
            await w.drain()
            await asyncio.wait_for(r.read(65536), 10)
            w.close()
        # A client that disconnects in the middle of a large upload.
        r, w = await asyncio.open_connection(host, int(port))
        import h2.config, h2.connection
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", METHOD),
                           (":authority", addr), ("content-type", "application/grpc")])
        c.send_data(1, struct.pack(">BI", 0, 1 << 20) + b"x" * 16000)
        w.write(c.data_to_send())
        await w.drain()
        w.close()
        ch = H2Channel(addr, "snappy")
        try:
            await ch.unary(METHOD, b"still here", timeout=10)
        finally:
            await ch.close()
            await srv.stop(1)
        return seen

    assert _run(main()) == [(b"still here", "snappy")]


def test_peer_reset_mid_send_is_unavailable_not_a_socket_error():
    """Regression: an ingestor killed while the router's HTTP/2 client was sending surfaced as a
    raw ConnectionResetError from drain(), which the router's write handler turned into a 500.
    The reset is injected where the client writes the request (the race a kill -9 hits) on a
    real connection: the transport reports the connection lost instead of sending."""
    async def main():
        async def handler(data, context):
            return b""

        srv, addr = await _serve(handler)
        ch = H2Channel(addr, "identity")
        try:
            await ch.unary(METHOD, b"", timeout=5)  # connected

            conn = ch._conn

            def reset(data):
                conn.connection_lost(ConnectionResetError("Connection lost"))
            conn.transport.write = reset
            with pytest.raises(RpcError) as ei:
                await ch.unary(METHOD, b"x", timeout=5)
            assert await ch.unary(METHOD, b"", timeout=5) == b""  # reconnects
        finally:
            await ch.close()
            await srv.stop(1)
        return ei.value.code()

    assert _run(main()) == grpc.StatusCode.UNAVAILABLE


def test_forwarded_writes_are_counted_by_grpc_code_on_both_ends():
    """grpc_client_* on the router's forwarder and grpc_server_* on our HTTP/2 server, with
    go-grpc-prometheus's labels and Go's code names."""
    from prometheus_client import CollectorRegistry

    from receiver.router import Forwarder
    from storeapi.grpcmetrics import client_metrics, server_metrics

    server_reg, client_reg = CollectorRegistry(), CollectorRegistry()
    rpc = {"grpc_service": "thanos.WriteableStore", "grpc_method": "RemoteWrite",
           "grpc_type": "unary"}

    async def handler(data, context):
        if data == b"bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
        return b""

    async def main():
        srv, addr = await _serve(handler, metrics=server_metrics(server_reg))
        fwd = Forwarder(timeout_s=5, retries=0, metrics=client_metrics(client_reg))
        try:
            assert (await fwd.send(addr, b"good"))[1] == ""
            assert (await fwd.send(addr, b"bad"))[1] != ""
        finally:
            await fwd.close()
            await srv.stop(1)

    _run(main())
    for reg, side in ((server_reg, "server"), (client_reg, "client")):
        assert reg.get_sample_value(f"grpc_{side}_started_total", rpc) == 2
        assert reg.get_sample_value(f"grpc_{side}_handled_total", {**rpc, "grpc_code": "OK"}) == 1
        assert reg.get_sample_value(f"grpc_{side}_handled_total",
                                    {**rpc, "grpc_code": "InvalidArgument"}) == 1
        assert reg.get_sample_value(f"grpc_{side}_handling_seconds_count", rpc) == 2
    assert server_reg.get_sample_value("grpc_server_msg_received_total", rpc) == 2
