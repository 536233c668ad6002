"""gRPC TLS and mutual TLS: every gRPC server (the ingestor's own HTTP/2 server, grpc.aio
servers of the store gateway and querier), the querier's StoreAPI client and the router's
forwarder, with certificates the test makes itself."""
from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from common.tls import ClientTLS, ServerTLS
from receiver.config import ReceiveConfig
from receiver.remotewrite import encode_write_request, snappy_compress
from receiver.router import Forwarder, OK
from receiver.server import Receiver
from receiver.tsdb.labels import Matcher, MatchType
from ruler.config import RulerConfig
from ruler.server import Ruler
from storeapi.client import StoreClient
from storeapi.h2client import RpcError
from storeapi.server import serve
from certs import PKI, self_signed, send_hostile_bytes, tls_handshake

UP = [Matcher(MatchType.EQ, "__name__", "up")]


class _Blocks:
    """A store-gateway-like source with one series."""

    def label_sets(self):
        return [(("store", "gw"),)]

    def time_range(self):
        return 0, 10_000

    def series(self, mint, maxt, matchers, skip_chunks):
        return [((("__name__", "up"), ("job", "from-store")), [])]

    def label_names(self, mint, maxt, matchers):
        return ["__name__", "job"]

    def label_values(self, name, mint, maxt, matchers):
        return ["up"]


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI.make(tmp_path_factory.mktemp("pki"))


def _mtls_server(pki: PKI) -> ServerTLS:
    return ServerTLS(cert=str(pki.server.cert), key=str(pki.server.key),
                     client_ca=str(pki.ca.cert_path))


def _client(pki: PKI, cert=None, **kw) -> ClientTLS:
    cert = pki.client if cert is None else cert
    return ClientTLS(secure=True, cert=str(cert.cert) if cert else "",
                     key=str(cert.key) if cert else "", ca=str(pki.ca.cert_path), **kw)


def _write_body(job: str, t_ms: int) -> bytes:
    return encode_write_request([((("__name__", "up"), ("job", job)),
                                  np.array([t_ms], dtype=np.int64), np.array([1.0]))])


async def _ingestor(tmp: Path, pki: PKI) -> Receiver:
    r = Receiver(ReceiveConfig(remote_write_address="127.0.0.1:0", grpc_address="127.0.0.1:0",
                               http_address="", tsdb_path=tmp / "ingestor",
                               grpc_server_tls=_mtls_server(pki)))
    await r.start()
    return r


async def _read_jobs(addr: str, tls: ClientTLS | None) -> set[str]:
    c = StoreClient(addr, timeout_s=10, tls=tls)
    try:
        return {dict(s.labels)["job"] for s in await c.series(0, 2**62, UP)}
    finally:
        await c.close()


def test_router_and_querier_over_mutual_tls_and_clients_without_certificates_refused(tmp_path, pki):
    """A router forwards to an ingestor over mTLS (snappy via our HTTP/2 client, and grpcio);
    a querier's StoreAPI client reads the ingestor and a store gateway over mTLS; a client
    without a certificate, with one from an untrusted CA, or without TLS gets nothing."""
    async def main():
        ing = await _ingestor(tmp_path, pki)
        store, sport = await serve(_Blocks(), "127.0.0.1:0", "store", tls=_mtls_server(pki))
        iaddr, saddr = f"127.0.0.1:{ing.ports['grpc']}", f"127.0.0.1:{sport}"
        ring = json.dumps([{"endpoints": [iaddr]}])
        router = Receiver(ReceiveConfig(
            remote_write_address="127.0.0.1:0", grpc_address="", http_address="",
            tsdb_path=tmp_path / "router", hashrings_content=ring,
            forward_tls=_client(pki, server_name="promring.test")))
        await router.start()
        try:
            now = int(time.time() * 1000)
            for job, compression in (("snappy-job", "snappy"), ("plain-job", "none")):
                fw = Forwarder(compression=compression, tls=_client(pki))
                body = _write_body(job, now)
                assert (await fw.send(iaddr, body))[0] == OK
                await fw.close()
            # the router's HTTP write path forwards over mTLS too
            import aiohttp
            async with aiohttp.ClientSession() as s:
                async with s.post(f"http://127.0.0.1:{router.ports['remote_write']}/api/v1/receive",
                                  data=snappy_compress(_write_body("routed", now)),
                                  headers={"Content-Encoding": "snappy",
                                           "Content-Type": "application/x-protobuf"}) as resp:
                    assert resp.status == 200, await resp.text()
            assert await _read_jobs(iaddr, _client(pki)) == {"snappy-job", "plain-job", "routed"}
            assert await _read_jobs(saddr, _client(pki)) == {"from-store"}
            for addr in (iaddr, saddr):
                for bad in (_client(pki, cert=False), _client(pki, cert=pki.rogue), None):
                    with pytest.raises((grpc.aio.AioRpcError, RpcError)) as e:
                        await _read_jobs(addr, bad)
                    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
                # a forwarder without a client certificate cannot write either
                fw = Forwarder(compression="snappy", tls=_client(pki, cert=False), retries=0)
                res, _ = await fw.send(iaddr, _write_body("intruder", now))
                await fw.close()
                assert res != OK
            assert await _read_jobs(iaddr, _client(pki)) == {"snappy-job", "plain-job", "routed"}
        finally:
            await router.stop()
            await store.stop(1)
            await ing.stop()

    _run(main())


def test_plain_text_and_handshake_garbage_are_refused_and_servers_keep_serving(tmp_path, pki):
    async def main():
        ing = await _ingestor(tmp_path, pki)
        store, sport = await serve(_Blocks(), "127.0.0.1:0", "store", tls=_mtls_server(pki))
        try:
            for port in (ing.ports["grpc"], sport):
                await asyncio.to_thread(send_hostile_bytes, port)
                # an expired client certificate is refused as well
                expired = pki.ca.issue("expired", "old", expired=True)
                with pytest.raises((grpc.aio.AioRpcError, RpcError)):
                    await _read_jobs(f"127.0.0.1:{port}", _client(pki, cert=expired))
                info = await StoreClient(f"127.0.0.1:{port}", timeout_s=10,
                                         tls=_client(pki)).info()
                assert info.label_sets is not None
        finally:
            await store.stop(1)
            await ing.stop()

    _run(main())


def test_tls_without_client_ca_serves_any_tls_client_but_not_plain_text(tmp_path, pki):
    async def main():
        tls = ServerTLS(cert=str(pki.server.cert), key=str(pki.server.key))
        store, sport = await serve(_Blocks(), "127.0.0.1:0", "store", tls=tls)
        try:
            assert await _read_jobs(f"127.0.0.1:{sport}", _client(pki, cert=False)) == {"from-store"}
            with pytest.raises(grpc.aio.AioRpcError):
                await _read_jobs(f"127.0.0.1:{sport}", None)
        finally:
            await store.stop(1)

    _run(main())


@pytest.mark.parametrize("min_version", ["1.3", "1.2"])
def test_every_grpc_port_enforces_the_minimum_tls_version(tmp_path, pki, min_version):
    """--grpc-server-tls-min-version on the ingestor's, store gateway's, querier's and ruler's
    gRPC ports (all serve Info): a client offering at most TLS 1.2 is refused under the default
    1.3 and served under 1.2; TLS 1.3 clients are always served."""
    async def main():
        tls = ServerTLS(cert=str(pki.server.cert), key=str(pki.server.key),
                        client_ca=str(pki.ca.cert_path), min_version=min_version)
        ing = Receiver(ReceiveConfig(remote_write_address="127.0.0.1:0",
                                     grpc_address="127.0.0.1:0", http_address="",
                                     tsdb_path=tmp_path / "ingestor", grpc_server_tls=tls))
        await ing.start()
        store, sport = await serve(_Blocks(), "127.0.0.1:0", "store", tls=tls)
        query, qport = await serve(_Blocks(), "127.0.0.1:0", "query", tls=tls)
        ruler = Ruler(RulerConfig(data_dir=tmp_path / "ruler", http_address="127.0.0.1:0",
                                  grpc_address="127.0.0.1:0", grpc_server_tls=tls))
        await ruler.start()
        try:
            for port, component in ((ing.ports["grpc"], "receive"), (sport, "store"),
                                    (qport, "query"), (ruler.ports["grpc"], "rule")):
                assert await asyncio.to_thread(tls_handshake, port, pki) == "TLSv1.3"
                if min_version == "1.3":
                    with pytest.raises((ssl.SSLError, ConnectionError)):
                        await asyncio.to_thread(tls_handshake, port, pki, ssl.TLSVersion.TLSv1_2)
                else:
                    assert await asyncio.to_thread(
                        tls_handshake, port, pki, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
                info = await StoreClient(f"127.0.0.1:{port}", timeout_s=10,
                                         tls=_client(pki)).info()
                assert info.component_type == component
        finally:
            await ruler.stop()
            await query.stop(1)
            await store.stop(1)
            await ing.stop()

    _run(main())


@pytest.mark.parametrize("compression", ["snappy", "none"])
def test_router_skip_verify_reaches_an_ingestor_with_a_self_signed_certificate(tmp_path,
                                                                              compression):
    """--remote-write.client-tls-skip-verify: a router forwards to an ingestor whose certificate
    no CA vouches for (our HTTP/2 client, whatever --receive.grpc-compression); without the flag
    the same forward fails verification."""
    async def main():
        own = self_signed(tmp_path / "self")
        ing = Receiver(ReceiveConfig(
            remote_write_address="127.0.0.1:0", grpc_address="127.0.0.1:0", http_address="",
            tsdb_path=tmp_path / "ingestor",
            grpc_server_tls=ServerTLS(cert=str(own.cert), key=str(own.key))))
        await ing.start()
        addr = f"127.0.0.1:{ing.ports['grpc']}"
        now = int(time.time() * 1000)
        try:
            for skip, job in ((False, "verified"), (True, "unverified")):
                fw = Forwarder(compression=compression, retries=0,
                               tls=ClientTLS(secure=True, skip_verify=skip))
                try:
                    res, msg = await fw.send(addr, _write_body(job, now))
                finally:
                    await fw.close()
                assert (res == OK) == skip, msg
                if not skip:
                    assert "CERTIFICATE_VERIFY_FAILED" in msg or "certificate" in msg.lower(), msg
            reader = StoreClient(addr, timeout_s=10, tls=ClientTLS(secure=True, ca=str(own.cert)))
            try:
                assert {dict(s.labels)["job"] for s in await reader.series(0, 2**62, UP)} \
                    == {"unverified"}
            finally:
                await reader.close()
        finally:
            await ing.stop()

    _run(main())


class _Many(_Blocks):
    """Enough series to stream several MiB (more than a stream's flow-control window)."""

    def series(self, mint, maxt, matchers, skip_chunks):
        blob = bytes(range(256)) * 8
        return [((("__name__", "up"), ("i", f"{i:05d}"), ("job", "many")),
                 [(0, 999, blob), (1000, 1999, blob)]) for i in range(1000)]


def test_querier_skip_verify_reads_a_store_with_a_self_signed_certificate(tmp_path):
    """--grpc-client-tls-skip-verify: the querier's StoreAPI client reads (Info, Series streamed
    past the flow-control window, label names and values) a server whose certificate no CA
    vouches for; without the flag it is refused; leaving a stream early cancels just it."""
    async def main():
        own = self_signed(tmp_path / "self")
        store, port = await serve(_Many(), "127.0.0.1:0", "store",
                                  tls=ServerTLS(cert=str(own.cert), key=str(own.key)))
        addr = f"127.0.0.1:{port}"
        skip = StoreClient(addr, timeout_s=20, tls=ClientTLS(secure=True, skip_verify=True))
        strict = StoreClient(addr, timeout_s=10, tls=ClientTLS(secure=True))
        try:
            assert (await skip.info()).component_type == "store"
            series = await skip.series(0, 2**62, UP)
            assert len(series) == 1000 and len(series[0].chunks) == 2
            assert series[-1].chunks[1][2] == bytes(range(256)) * 8
            assert await skip.label_names(0, 2**62, UP) == ["__name__", "job"]
            assert await skip.label_values("__name__", 0, 2**62, UP) == ["up"]
            for _ in range(8):  # more than the connection window's worth of unread streams
                async for _ in skip.iter_series(0, 2**62, UP):
                    break  # that stream is cancelled; the connection serves the next call
            assert len(await skip.series(0, 2**62, UP)) == 1000
            with pytest.raises((grpc.aio.AioRpcError, RpcError)) as e:
                await strict.series(0, 2**62, UP)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await skip.close()
            await strict.close()
            await store.stop(1)

    _run(main())
