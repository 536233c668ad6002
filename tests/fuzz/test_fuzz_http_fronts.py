"""Fuzz target (d): the HTTP fronts of a real ``promring up`` holding some data -- the querier's
/api/v1/* and the receiver's remote-write edge -- fed hostile raw HTTP/1.1 requests
(http_reqs.py) over a socket. Each is answered in bounded time, never 5xx but a 503 query
timeout, a 4xx JSON body has Prometheus's error shape (status, errorType, error), and the
process stays alive and ready. ``FUZZ_EXAMPLES`` sets the number of requests."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings

from harness import PromringProcess

from .http_reqs import RawRequest, hostile_http_requests

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
ANSWER_BOUND_S = 150.0  # above the querier's 2 m default query timeout


class HttpFrontsTarget:
    def __init__(self, workdir: Path) -> None:
        from test_hostile_queries import push_data  # tests/e2e, on the path through http_reqs
        self.proc = PromringProcess.up(workdir / "data")
        push_data(self.proc)
        self.ports = {"http": self.proc.http_port, "remote_write": self.proc.rw_port}
        self.codes: dict[int, int] = {}

    def send(self, req: RawRequest) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-case names) and body of the answer to ``req``."""
        out = bytearray()
        with socket.create_connection(("127.0.0.1", self.ports[req.port]), timeout=10) as s:
            try:
                s.sendall(req.data)
            except OSError:
                pass  # answered and closed before the whole request was read
            s.settimeout(ANSWER_BOUND_S)
            deadline = time.monotonic() + ANSWER_BOUND_S
            while time.monotonic() < deadline:
                try:
                    got = s.recv(1 << 16)
                except ConnectionResetError:
                    break
                if not got:
                    break
                out += got
        body = bytes(out)
        while True:  # past interim answers (100 Continue) to the final one
            head, _, body = body.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            assert lines[0].startswith("HTTP/1."), f"no HTTP answer: {bytes(out)[:300]!r}"
            status = int(lines[0].split()[1])
            if not 100 <= status < 200 or not body:
                break
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (ln.partition(":") for ln in lines[1:])}
        self.codes[status] = self.codes.get(status, 0) + 1
        return status, headers, body

    def check(self, req: RawRequest, status: int, headers: dict[str, str], body: bytes) -> None:
        assert status < 500 or status == 503, (status, body[:500], req)
        if 400 <= status < 500 and headers.get("content-type", "").startswith("application/json") \
                and not req.data.startswith(b"HEAD ") and req.port == "http":
            err = json.loads(body)
            assert err.get("status") == "error" and isinstance(err.get("errorType"), str) and \
                isinstance(err.get("error"), str), (status, body[:500], req)
        assert self.proc.proc.poll() is None, "promring died"
        for port in self.ports.values():
            assert requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=30).status_code == 200


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    t = HttpFrontsTarget(tmp_path_factory.mktemp("httpfuzz"))
    yield t
    t.proc.stop()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(req=hostile_http_requests())
def test_hostile_http_requests_are_answered_4xx_or_2xx(target, req):
    target.check(req, *target.send(req))


def test_stops_cleanly_after_the_fuzzing(target):
    assert target.proc.stop() == 0, target.proc.log_text()[-3000:]
