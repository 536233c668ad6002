"""The TLS flags end to end: ``promring query`` reads a ``promring receive`` ingestor and a
``promring store`` gateway over mutual TLS (--grpc-server-tls-*, --grpc-client-tls-*), a router
forwards over mutual TLS (--remote-write.client-tls-*), and unusable TLS settings stop a
component at start with exit status 2 and a message naming the problem."""
from __future__ import annotations

import json
import ssl
import subprocess
import time

import pytest
import requests

from certs import PKI, self_signed, tls_handshake
from harness import free_port, promring_cmd, query_process, receive_process, start_process, stop_process
from rw import push


def _server_flags(pki: PKI) -> list[str]:
    return ["--grpc-server-tls-cert", str(pki.server.cert), "--grpc-server-tls-key",
            str(pki.server.key), "--grpc-server-tls-client-ca", str(pki.ca.cert_path)]


def _client_flags(pki: PKI, prefix: str = "--grpc-client") -> list[str]:
    return [f"{prefix}-tls-secure", f"{prefix}-tls-cert", str(pki.client.cert),
            f"{prefix}-tls-key", str(pki.client.key), f"{prefix}-tls-ca", str(pki.ca.cert_path),
            f"{prefix}-server-name", "localhost"]


def test_query_reads_ingestor_and_store_gateway_and_router_forwards_over_mutual_tls(tmp_path):
    pki = PKI.make(tmp_path / "pki")
    ing = receive_process(tmp_path, "ingestor", *_server_flags(pki))
    ring = tmp_path / "hashrings.json"
    router = None
    procs = []
    try:
        ing.start()
        ring.write_text(json.dumps([{"endpoints": [ing.grpc]}]))
        router = receive_process(tmp_path, "router", "--receive.hashrings-file", str(ring),
                                 *_client_flags(pki, "--remote-write.client")).start()
        bucket = tmp_path / "bucket"
        bucket.mkdir()
        (tmp_path / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
        sg, sh = free_port(), free_port()
        procs.append(start_process(promring_cmd() + [
            "store", "--data-dir", str(tmp_path / "store"), "--objstore.config-file",
            str(tmp_path / "objstore.yml"), "--grpc-address", f"127.0.0.1:{sg}",
            "--http-address", f"127.0.0.1:{sh}", *_server_flags(pki)],
            f"http://127.0.0.1:{sh}/-/ready", tmp_path / "store.log"))
        q = query_process(tmp_path, "query", [ing.grpc, f"127.0.0.1:{sg}"],
                          *_client_flags(pki), *_server_flags(pki)).start()
        unauth = query_process(tmp_path, "query-nocert", [ing.grpc, f"127.0.0.1:{sg}"],
                               "--grpc-client-tls-secure", "--grpc-client-tls-ca",
                               str(pki.ca.cert_path)).start()
        now = time.time()
        r = push(router.url("remote_write", "/api/v1/receive"),
                 [([("__name__", "tls_up"), ("job", "x")], [int(now * 1000)], [1.0])])
        assert r.status_code == 200, r.text
        api = q.url("http", "/api/v1")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stores = requests.get(f"{api}/stores", timeout=10).json()["data"]
            healthy = [s for group in stores.values() for s in group if not s.get("lastError")]
            if len(healthy) == 2:
                break
            time.sleep(0.3)
        assert len(healthy) == 2, stores
        res = requests.get(f"{api}/query", params={"query": "tls_up", "time": now}, timeout=10).json()
        assert [s["metric"]["job"] for s in res["data"]["result"]] == ["x"]
        # a querier without a client certificate reaches nothing
        res = requests.get(unauth.url("http", "/api/v1/query"),
                           params={"query": "tls_up", "time": now}, timeout=30).json()
        assert res.get("data", {}).get("result", []) == []
        # --grpc-server-tls-min-version (default 1.3) holds on every component's gRPC port
        for port in (ing.ports["grpc"], sg, q.ports["grpc"]):
            assert tls_handshake(port, pki) == "TLSv1.3"
            with pytest.raises((ssl.SSLError, ConnectionError)):
                tls_handshake(port, pki, ssl.TLSVersion.TLSv1_2)
        unauth.stop()
        q.stop()
    finally:
        for p in procs:
            stop_process(p)
        if router is not None:
            router.stop()
        ing.stop()


@pytest.mark.parametrize("args, message", [
    (["--grpc-server-tls-cert", "/nonexistent.crt", "--grpc-server-tls-key", "/nonexistent.key"],
     "cannot read /nonexistent.crt"),
    (["--grpc-server-tls-cert", "{cert}"], "both a certificate and a key"),
    (["--http.config", "{bad_web}"], "can not be configured"),
    (["--receive.tenant-certificate-field", "organization"], "needs verified client certificates"),
])
def test_unusable_tls_settings_stop_the_start_with_a_clear_error(tmp_path, args, message):
    pki = PKI.make(tmp_path / "pki")
    bad_web = tmp_path / "web.yml"
    bad_web.write_text("http_server_config:\n  headers:\n    Server: x\n")
    args = [a.format(cert=pki.server.cert, bad_web=bad_web) for a in args]
    out = subprocess.run(promring_cmd() + ["receive", "--tsdb.path", str(tmp_path / "d"),
                                           "--remote-write.address", "127.0.0.1:0",
                                           "--grpc-address", "127.0.0.1:0",
                                           "--http-address", "127.0.0.1:0", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr


def test_query_and_router_skip_verify_reach_components_with_self_signed_certificates(tmp_path):
    """--grpc-client-tls-skip-verify (query) and --remote-write.client-tls-skip-verify (router)
    reach an ingestor whose certificate no CA vouches for; a querier verifying it reads nothing."""
    own = self_signed(tmp_path / "self")
    ing = receive_process(tmp_path, "ingestor", "--grpc-server-tls-cert", str(own.cert),
                          "--grpc-server-tls-key", str(own.key))
    ring = tmp_path / "hashrings.json"
    router = q = strict = None
    try:
        ing.start()
        ring.write_text(json.dumps([{"endpoints": [ing.grpc]}]))
        router = receive_process(tmp_path, "router", "--receive.hashrings-file", str(ring),
                                 "--remote-write.client-tls-secure",
                                 "--remote-write.client-tls-skip-verify").start()
        q = query_process(tmp_path, "query", [ing.grpc], "--grpc-client-tls-secure",
                          "--grpc-client-tls-skip-verify").start()
        strict = query_process(tmp_path, "query-strict", [ing.grpc],
                               "--grpc-client-tls-secure").start()
        now = time.time()
        r = push(router.url("remote_write", "/api/v1/receive"),
                 [([("__name__", "self_signed_up"), ("job", "x")], [int(now * 1000)], [1.0])])
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 30
        while True:
            res = requests.get(q.url("http", "/api/v1/query"),
                               params={"query": "self_signed_up", "time": now}, timeout=10).json()
            if res["data"]["result"] or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert [s["metric"]["job"] for s in res["data"]["result"]] == ["x"]
        res = requests.get(strict.url("http", "/api/v1/query"),
                           params={"query": "self_signed_up", "time": now}, timeout=30).json()
        assert res.get("data", {}).get("result", []) == []
    finally:
        for p in (strict, q, router):
            if p is not None:
                p.stop()
        ing.stop()
