"""Debian's Prometheus 2.42 remote-writes into ``promring receive`` over TLS with basic auth
(--http.config) and over mutual TLS (--remote-write.server-tls-*); a second Prometheus with a
wrong password and without a client certificate stores nothing. Certificates are the test's."""
from __future__ import annotations

import asyncio
import shutil
import time

import bcrypt
import pytest
import requests

from certs import PKI
from harness import PrometheusProcess, receive_process, wait_ready
from receiver.tsdb.labels import Matcher, MatchType
from storeapi.client import StoreClient

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus package is not installed")

CONFIG = """
global:
  scrape_interval: 1s
  external_labels: {{src: {src}}}
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["$SELF"]
remote_write:
  - url: "https://127.0.0.1:{auth_port}/api/v1/receive"
    basic_auth: {{username: prometheus, password: {password}}}
    tls_config: {{ca_file: {ca}, server_name: localhost}}
    queue_config: {{batch_send_deadline: 1s}}
  - url: "https://127.0.0.1:{mtls_port}/api/v1/receive"
    tls_config: {{ca_file: {ca}, server_name: localhost{client}}}
    queue_config: {{batch_send_deadline: 1s}}
"""


def _sources(grpc_addr: str) -> set[str]:
    async def main():
        c = StoreClient(grpc_addr, timeout_s=10)
        try:
            got = await c.series(0, 2**62, [Matcher(MatchType.EQ, "__name__", "up")])
            return {dict(s.labels).get("src", "") for s in got}
        finally:
            await c.close()
    return asyncio.run(main())


def _wait_https_ready(url: str, ca: str, auth=None, cert=None, proc=None,
                      timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, verify=ca, auth=auth, cert=cert, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise TimeoutError(f"{url} not ready")
        time.sleep(0.2)


def test_prometheus_writes_over_tls_with_basic_auth_and_mutual_tls(tmp_path):
    pki = PKI.make(tmp_path / "pki")
    hashed = bcrypt.hashpw(b"right-pw", bcrypt.gensalt(rounds=8)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n"
                   f"basic_auth_users:\n  prometheus: {hashed}\n")
    auth_rx = receive_process(tmp_path, "auth", "--http.config", str(web))
    mtls_rx = receive_process(tmp_path, "mtls", "--remote-write.server-tls-cert", str(pki.server.cert),
                              "--remote-write.server-tls-key", str(pki.server.key),
                              "--remote-write.server-tls-client-ca", str(pki.ca.cert_path))
    procs = []
    try:
        client = (str(pki.client.cert), str(pki.client.key))
        for rx, auth, cert in ((auth_rx, ("prometheus", "right-pw"), None), (mtls_rx, None, client)):
            rx.ready_urls = []
            rx.start()
            _wait_https_ready(f"https://localhost:{rx.ports['remote_write']}/-/ready",
                              str(pki.ca.cert_path), auth, cert, rx.proc)
        # the mTLS receiver's own HTTP port is plain (no --http.config): ready there too
        wait_ready(f"http://127.0.0.1:{mtls_rx.ports['http']}/-/ready", proc=mtls_rx.proc)
        common = dict(auth_port=auth_rx.ports["remote_write"], mtls_port=mtls_rx.ports["remote_write"],
                      ca=pki.ca.cert_path)
        good = PrometheusProcess(tmp_path / "good", CONFIG.format(
            src="good", password="right-pw",
            client=f", cert_file: {pki.client.cert}, key_file: {pki.client.key}", **common))
        bad = PrometheusProcess(tmp_path / "bad", CONFIG.format(
            src="bad", password="wrong-pw", client="", **common))
        procs = [good.start(), bad.start()]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = [_sources(auth_rx.grpc), _sources(mtls_rx.grpc)]
            if seen == [{"good"}, {"good"}]:
                break
            time.sleep(0.5)
        time.sleep(3)  # the bad Prometheus has had many send attempts by now
        assert [_sources(auth_rx.grpc), _sources(mtls_rx.grpc)] == [{"good"}, {"good"}]
        bad_log = bad.log_path.read_text(errors="replace")
        assert "401" in bad_log
        assert auth_rx.proc.poll() is None and mtls_rx.proc.poll() is None
    finally:
        for p in procs:
            p.stop()
        auth_rx.stop()
        mtls_rx.stop()
