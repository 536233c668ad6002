"""HTTP servers under Prometheus's web config (--http.config) and receive's remote-write TLS
flags: TLS, mutual TLS, basic auth with bcrypt, headers, the tenant from the client
certificate, and certificates/web config rotated on disk without a restart."""
from __future__ import annotations

import asyncio
import base64
import os
import shutil
import ssl
import time

import aiohttp
import bcrypt
import grpc
import numpy as np
import pytest

from certs import PKI, send_hostile_bytes
from common.tls import ClientTLS, ServerTLS
from common.webconfig import BasicAuth, WebConfigError, parse_web_config
from receiver.config import ReceiveConfig
from receiver.remotewrite import encode_write_request, snappy_compress
from receiver.server import Receiver
from storeapi.client import StoreClient
from storeapi.server import serve

RW_HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI.make(tmp_path_factory.mktemp("pki"))


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def _body(job: str) -> bytes:
    return snappy_compress(encode_write_request([((("__name__", "up"), ("job", job)),
                                                  np.array([int(time.time() * 1000)], dtype=np.int64),
                                                  np.array([1.0]))]))


def _client_ctx(pki: PKI, cert=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


def _auth(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def _post(port: int, ctx, headers=None, job="j") -> int:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"https://127.0.0.1:{port}/api/v1/receive", data=_body(job),
                          headers={**RW_HEADERS, **(headers or {})}, ssl=ctx) as r:
            return r.status


def test_remote_write_over_tls_with_basic_auth_from_the_web_config(tmp_path, pki):
    web = tmp_path / "web.yml"
    web.write_text(f"""
tls_server_config:
  cert_file: {pki.server.cert}
  key_file: {pki.server.key}
basic_auth_users:
  prometheus: {HASH}
http_server_config:
  headers:
    X-Frame-Options: deny
""")

    async def main():
        r = Receiver(ReceiveConfig(remote_write_address="127.0.0.1:0", grpc_address="",
                                   http_address="127.0.0.1:0", tsdb_path=tmp_path / "d",
                                   http_config=str(web)))
        await r.start()
        ctx = _client_ctx(pki)
        try:
            rw = r.ports["remote_write"]
            assert await _post(rw, ctx, _auth("prometheus", "wrong"), "bad1") == 401
            assert await _post(rw, ctx, _auth("nobody", "s3cret"), "bad2") == 401
            assert await _post(rw, ctx, {}, "bad3") == 401
            assert await _post(rw, ctx, {"Authorization": "Basic !!!"}, "bad4") == 401
            assert r.db.num_series() == 0
            assert await _post(rw, ctx, _auth("prometheus", "s3cret"), "good") == 200
            assert r.db.num_series() == 1
            async with aiohttp.ClientSession() as s:
                async with s.get(f"https://127.0.0.1:{r.ports['http']}/metrics", ssl=ctx) as resp:
                    assert resp.status == 401
                    assert resp.headers["WWW-Authenticate"] == "Basic"
                async with s.get(f"https://127.0.0.1:{r.ports['http']}/metrics", ssl=ctx,
                                 headers=_auth("prometheus", "s3cret")) as resp:
                    assert resp.status == 200
                    assert resp.headers["X-Frame-Options"] == "deny"
                with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
                    async with s.get(f"http://127.0.0.1:{rw}/-/ready") as resp:
                        assert resp.status >= 400
                        raise aiohttp.ClientError("refused by status")
            await asyncio.to_thread(send_hostile_bytes, rw)
            assert await _post(rw, ctx, _auth("prometheus", "s3cret"), "after") == 200
        finally:
            await r.stop()

    _run(main())


def test_remote_write_mutual_tls_and_tenant_from_the_client_certificate(tmp_path, pki):
    async def main():
        r = Receiver(ReceiveConfig(
            remote_write_address="127.0.0.1:0", grpc_address="", http_address="",
            tsdb_path=tmp_path / "d", tenant_certificate_field="organization",
            remote_write_tls=ServerTLS(cert=str(pki.server.cert), key=str(pki.server.key),
                                       client_ca=str(pki.ca.cert_path))))
        await r.start()
        try:
            rw = r.ports["remote_write"]
            for bad in (None, pki.rogue):
                with pytest.raises(aiohttp.ClientError):
                    await _post(rw, _client_ctx(pki, bad))
            assert r.db.num_series() == 0
            # the tenant header cannot override the certificate's organization
            assert await _post(rw, _client_ctx(pki, pki.client), {"THANOS-TENANT": "other"}) == 200
            assert sorted(r.db.tenants) == ["team-a"]
            assert (tmp_path / "d" / "team-a").is_dir() and not (tmp_path / "d" / "other").exists()
            no_org = pki.ca.issue("no-org", "nobody")
            assert await _post(rw, _client_ctx(pki, no_org)) == 400
        finally:
            await r.stop()

    _run(main())


def _rotate(src, dst) -> None:
    """Replace ``dst``'s cert and key with ``src``'s, each atomically (as a secret mount)."""
    for a, b in ((src.cert, dst.cert), (src.key, dst.key)):
        tmp = str(b) + ".tmp"
        shutil.copyfile(a, tmp)
        os.replace(tmp, b)


def _served_serial(port: int, ca) -> int:
    import socket
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            der = s.getpeercert(binary_form=True)
    from cryptography import x509
    return x509.load_der_x509_certificate(der).serial_number


def _serial(files) -> int:
    from cryptography import x509
    return x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number


def test_certificates_rotated_on_disk_are_served_without_restart_or_failed_request(tmp_path, pki):
    live = pki.ca.issue("live", "promring.test", server=True)
    nxt = pki.ca.issue("next", "promring.test", server=True)
    tls = ServerTLS(cert=str(live.cert), key=str(live.key), client_ca=str(pki.ca.cert_path))
    first = _serial(live)

    async def main():
        r = Receiver(ReceiveConfig(remote_write_address="127.0.0.1:0", grpc_address="127.0.0.1:0",
                                   http_address="", tsdb_path=tmp_path / "d",
                                   remote_write_tls=tls, grpc_server_tls=tls))
        await r.start()
        store, sport = await serve(r.source, "127.0.0.1:0", "store", tls=tls)
        ctx = _client_ctx(pki, pki.client)
        grpc_tls = ClientTLS(secure=True, cert=str(pki.client.cert), key=str(pki.client.key),
                             ca=str(pki.ca.cert_path))
        ports = (r.ports["remote_write"], r.ports["grpc"])
        try:
            for p in ports:
                assert await asyncio.to_thread(_served_serial, p, pki.ca.cert_path) == first
            stop = asyncio.Event()
            failures: list[str] = []
            done = 0

            async def writer():
                nonlocal done
                while not stop.is_set():
                    st = await _post(ports[0], ctx, job=f"w{done % 5}")
                    if st != 200:
                        failures.append(f"http {st}")
                    c = StoreClient(f"127.0.0.1:{sport}", timeout_s=10, tls=grpc_tls)
                    try:
                        await c.info()
                    except grpc.aio.AioRpcError as e:
                        failures.append(f"grpc {e.code()}")
                    finally:
                        await c.close()
                    done += 1

            task = asyncio.create_task(writer())
            await asyncio.sleep(0.3)
            await asyncio.to_thread(_rotate, nxt, live)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                served = [await asyncio.to_thread(_served_serial, p, pki.ca.cert_path)
                          for p in (*ports, sport)]
                if served == [_serial(nxt)] * 3:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            stop.set()
            await task
            assert served == [_serial(nxt)] * 3
            assert failures == [] and done > 0
        finally:
            await store.stop(1)
            await r.stop()

    _run(main())


def test_web_config_edits_apply_without_restart(tmp_path, pki):
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  a: {HASH}\n")

    async def main():
        r = Receiver(ReceiveConfig(remote_write_address="127.0.0.1:0", grpc_address="",
                                   http_address="", tsdb_path=tmp_path / "d",
                                   http_config=str(web)))
        await r.start()
        try:
            url = f"http://127.0.0.1:{r.ports['remote_write']}/api/v1/receive"

            async def status(user):
                async with aiohttp.ClientSession() as s:
                    async with s.post(url, data=_body("x"), headers={**RW_HEADERS, **_auth(user, "s3cret")}) as resp:
                        return resp.status

            assert await status("a") == 200 and await status("b") == 401
            web.write_text(f"basic_auth_users:\n  b: {HASH}\n")
            deadline = time.monotonic() + 10
            while await status("a") != 401 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await status("a") == 401 and await status("b") == 200
            web.write_text("basic_auth_users: [not, a, mapping\n")  # broken edit: keep the last good
            await asyncio.sleep(1.2)
            assert await status("b") == 200
        finally:
            await r.stop()

    _run(main())


def test_bcrypt_checks_are_cached_and_serialised(monkeypatch):
    calls = []
    real = bcrypt.checkpw

    def counting(pw, h):
        calls.append(pw)
        return real(pw, h)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    users = {"u": HASH.encode()}

    async def main():
        auth = BasicAuth()
        hdr = _auth("u", "bad")["Authorization"]
        results = await asyncio.gather(*[auth.check(users, hdr) for _ in range(50)])
        assert results == [False] * 50
        before = len(calls)
        assert await auth.check(users, hdr) is False
        assert len(calls) == before  # a repeated wrong password costs no bcrypt
        assert await auth.check(users, _auth("u", "s3cret")["Authorization"]) is True
        assert await auth.check(users, _auth("ghost", "s3cret")["Authorization"]) is False

    _run(main())
    assert len(calls) == 3  # 50 identical concurrent checks ran bcrypt once


@pytest.mark.parametrize("text, why", [
    ("basic_auth_users:\n  u: plaintext\n", "bcrypt"),
    ("http_server_config:\n  headers:\n    Set-Cookie: x\n", "can not be configured"),
    ("tls_server_config:\n  cert_file: /x\n", "missing key_file"),
    ("tls_server_config:\n  cert_file: {c}\n  key_file: {k}\n  client_ca_file: {ca}\n",
     "client_auth_type"),
    ("tls_server_config:\n  cert_file: {c}\n  key_file: {k}\n  min_version: TLS99\n", "min_version"),
    ("bogus: 1\n", "unknown"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow-all\n", "invalid value"),
])
def test_bad_web_configs_are_refused_with_a_reason(pki, text, why):
    text = text.format(c=pki.server.cert, k=pki.server.key, ca=pki.ca.cert_path)
    with pytest.raises(WebConfigError, match=why):
        parse_web_config(text)


def test_web_config_can_start_requiring_client_certificates_without_restart(tmp_path, pki):
    web = tmp_path / "web.yml"
    tls = f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n"
    web.write_text(tls)

    async def main():
        r = Receiver(ReceiveConfig(remote_write_address="127.0.0.1:0", grpc_address="",
                                   http_address="", tsdb_path=tmp_path / "d",
                                   http_config=str(web)))
        await r.start()
        rw = r.ports["remote_write"]

        async def status(cert) -> int | None:
            try:
                return await _post(rw, _client_ctx(pki, cert))
            except aiohttp.ClientError:
                return None

        try:
            assert await status(None) == 200
            web.write_text(tls + f"  client_auth_type: RequireAndVerifyClientCert\n"
                                 f"  client_ca_file: {pki.ca.cert_path}\n")
            deadline = time.monotonic() + 10
            while await status(None) is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await status(None) is None
            assert await status(pki.rogue) is None
            assert await status(pki.client) == 200
        finally:
            await r.stop()

    _run(main())


def test_a_flood_of_distinct_wrong_passwords_is_bounded_and_does_not_delay_known_users():
    users = {"u": HASH.encode()}

    async def main():
        auth = BasicAuth(max_waiting=4)
        good = _auth("u", "s3cret")["Authorization"]
        assert await auth.check(users, good) is True  # now cached
        flood = [asyncio.create_task(auth.check(users, _auth("u", f"guess{i}")["Authorization"]))
                 for i in range(20)]
        await asyncio.sleep(0)
        # while the flood queues, the known user's cached check answers without waiting for it
        assert await asyncio.wait_for(auth.check(users, good), 5) is True
        results = await asyncio.gather(*flood)
        assert results.count(None) == 16 and results.count(False) == 4

    _run(main())
