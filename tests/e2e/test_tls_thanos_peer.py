"""With the reference peer: a real Thanos querier, given Thanos's own --grpc-client-tls-* flags,
reads a promring ingestor and a promring store gateway over mutual TLS (and a Thanos querier
without a client certificate is refused); and a promring querier with
--grpc-client-tls-skip-verify reads a Thanos querier whose certificate is self-signed."""
from __future__ import annotations

import subprocess
import time

import requests

from certs import PKI, self_signed
from harness import (free_port, promring_cmd, query_process, receive_process, start_process,
                     stop_process, wait_ready)
from peers import peer
from rw import push


def _thanos_query(tmp_path, name: str, endpoints: list[str], *tls: str) -> tuple[subprocess.Popen, str]:
    http = free_port()
    args = [peer("thanos"), "query", f"--http-address=127.0.0.1:{http}",
            f"--grpc-address=127.0.0.1:{free_port()}", *[f"--endpoint={e}" for e in endpoints], *tls]
    proc = start_process(args, f"http://127.0.0.1:{http}/-/ready", tmp_path / f"{name}.log")
    return proc, f"http://127.0.0.1:{http}/api/v1"


def _healthy(api: str) -> int:
    stores = requests.get(f"{api}/stores", timeout=10).json().get("data") or {}
    return sum(1 for group in stores.values() for s in group if not s.get("lastError"))


def test_thanos_querier_reads_promring_over_mutual_tls(tmp_path):
    thanos = peer("thanos")
    assert thanos
    pki = PKI.make(tmp_path / "pki")
    server = ["--grpc-server-tls-cert", str(pki.server.cert), "--grpc-server-tls-key",
              str(pki.server.key), "--grpc-server-tls-client-ca", str(pki.ca.cert_path)]
    ing = receive_process(tmp_path, "ingestor", *server)
    procs: list[subprocess.Popen] = []
    try:
        ing.start()
        bucket = tmp_path / "bucket"
        bucket.mkdir()
        (tmp_path / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
        sg, sh = free_port(), free_port()
        procs.append(start_process(promring_cmd() + [
            "store", "--data-dir", str(tmp_path / "store"), "--objstore.config-file",
            str(tmp_path / "objstore.yml"), "--grpc-address", f"127.0.0.1:{sg}",
            "--http-address", f"127.0.0.1:{sh}", *server],
            f"http://127.0.0.1:{sh}/-/ready", tmp_path / "store.log"))
        now = time.time()
        assert push(ing.url("remote_write", "/api/v1/receive"),
                    [([("__name__", "tls_up"), ("job", "thanos")], [int(now * 1000)], [1.0])]
                    ).status_code == 200
        endpoints = [ing.grpc, f"127.0.0.1:{sg}"]
        q, api = _thanos_query(tmp_path, "thanos-query", endpoints, "--grpc-client-tls-secure",
                               f"--grpc-client-tls-cert={pki.client.cert}",
                               f"--grpc-client-tls-key={pki.client.key}",
                               f"--grpc-client-tls-ca={pki.ca.cert_path}",
                               "--grpc-client-server-name=localhost")
        procs.append(q)
        nocert, api2 = _thanos_query(tmp_path, "thanos-nocert", endpoints, "--grpc-client-tls-secure",
                                     f"--grpc-client-tls-ca={pki.ca.cert_path}",
                                     "--grpc-client-server-name=localhost")
        procs.append(nocert)
        deadline = time.monotonic() + 40
        while _healthy(api) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _healthy(api) == 2
        res = requests.get(f"{api}/query", params={"query": "tls_up", "time": now}, timeout=10).json()
        assert [s["metric"]["job"] for s in res["data"]["result"]] == ["thanos"]
        assert _healthy(api2) == 0
        res = requests.get(f"{api2}/query", params={"query": "tls_up", "time": now}, timeout=10).json()
        assert res.get("data", {}).get("result", []) == []
    finally:
        for p in procs:
            stop_process(p)
        ing.stop()


def test_promring_querier_skip_verify_reads_a_thanos_querier_with_a_self_signed_certificate(
        tmp_path):
    """promring's own HTTP/2 gRPC client (--grpc-client-tls-skip-verify) against Go's gRPC
    server: a Thanos querier serving StoreAPI with a self-signed certificate, over a promring
    ingestor; Series streamed, Info and label calls answered."""
    assert peer("thanos")
    own = self_signed(tmp_path / "self")
    ing = receive_process(tmp_path, "ingestor")
    procs: list[subprocess.Popen] = []
    q = None
    try:
        ing.start()
        now = time.time()
        assert push(ing.url("remote_write", "/api/v1/receive"),
                    [([("__name__", "skip_up"), ("job", f"j{i}")], [int(now * 1000)], [1.0])
                     for i in range(50)]).status_code == 200
        grpc = free_port()
        http = free_port()
        procs.append(start_process(
            [peer("thanos"), "query", f"--http-address=127.0.0.1:{http}",
             f"--grpc-address=127.0.0.1:{grpc}", f"--endpoint={ing.grpc}",
             f"--grpc-server-tls-cert={own.cert}", f"--grpc-server-tls-key={own.key}"],
            f"http://127.0.0.1:{http}/-/ready", tmp_path / "thanos-query.log"))
        q = query_process(tmp_path, "query", [f"127.0.0.1:{grpc}"], "--grpc-client-tls-secure",
                          "--grpc-client-tls-skip-verify").start()
        api = q.url("http", "/api/v1")
        deadline = time.monotonic() + 40
        while _healthy(api) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _healthy(api) == 1
        res = requests.get(f"{api}/query", params={"query": "skip_up", "time": now}, timeout=30).json()
        assert sorted(s["metric"]["job"] for s in res["data"]["result"]) == sorted(
            f"j{i}" for i in range(50))
        names = requests.get(f"{api}/labels", timeout=30).json()["data"]
        assert "job" in names
    finally:
        if q is not None:
            q.stop()
        for p in procs:
            stop_process(p)
        ing.stop()
