"""Fuzz target (b): the whole write path of a real ``promring receive``. Every fuzzed body is
answered 2xx or 4xx (never 5xx), the process stays ready, and it starts again after SIGTERM and
after kill -9 with everything it acknowledged. ``FUZZ_EXAMPLES`` sets the number of bodies."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings

from harness import receive_process

from .bodies import EXCLUDE_KNOWN_WRITE_CORE_ISSUES, Body, bodies, hits_known_write_core_issue

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))


class WritePathTarget:
    """A receive process and what the fuzzer has seen from it."""

    def __init__(self, workdir: Path) -> None:
        self.proc = receive_process(workdir, "fuzzed").start()
        self.url = self.proc.url("remote_write", "/api/v1/receive")
        self.session = requests.Session()
        self.codes: dict[int, int] = {}
        self.server_errors: list[tuple[int, str, Body]] = []

    def post(self, body: Body, tenant: str = "fuzz") -> requests.Response:
        headers = {"Content-Type": "application/x-protobuf", "THANOS-TENANT": tenant,
                   "X-Prometheus-Remote-Write-Version": "0.1.0"}
        if body.snappy:
            headers["Content-Encoding"] = "snappy"
        r = self.session.post(self.url, data=body.data, headers=headers, timeout=30)
        self.codes[r.status_code] = self.codes.get(r.status_code, 0) + 1
        if r.status_code >= 500:
            self.server_errors.append((r.status_code, r.text, body))
        return r

    def ready(self) -> bool:
        return requests.get(self.proc.url("remote_write", "/-/ready"), timeout=10).status_code == 200

    def rss_kib(self) -> int:
        for line in open(f"/proc/{self.proc.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    t = WritePathTarget(tmp_path_factory.mktemp("fuzz"))
    yield t
    t.proc.stop()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies(safe=EXCLUDE_KNOWN_WRITE_CORE_ISSUES))
def test_every_body_gets_2xx_or_4xx(target, body):
    if EXCLUDE_KNOWN_WRITE_CORE_ISSUES:
        assume(not hits_known_write_core_issue(body))
    r = target.post(body)
    assert r.status_code < 500, (r.status_code, r.text)


def test_still_ready_and_restarts(target):
    assert target.ready()
    assert target.proc.stop() == 0, target.proc.log_text()[-3000:]
    target.proc.start()
    assert target.ready()
    target.proc.kill9()
    target.proc.start()
    assert target.ready()
