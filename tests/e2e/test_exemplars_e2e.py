"""Real Prometheus 2.42 (exemplar storage on) scrapes an OpenMetrics counter with exemplars and
remote-writes them into ``promring up --tsdb.max-exemplars``: /api/v1/query_exemplars answers
what Prometheus's own answers (its shape, our tenant label aside), also after a restart."""
from __future__ import annotations

import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from harness import PrometheusProcess, self_scrape_remote_write

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus package is not installed "
                                       "(the README's test command installs it)")

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class _App(BaseHTTPRequestHandler):
    """A counter that grows by one per scrape, its exemplar naming a new trace each time."""

    scrapes = 0
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        with self.lock:
            _App.scrapes += 1
            n = _App.scrapes
        body = ("# TYPE demo_requests counter\n# HELP demo_requests Requests served.\n"
                f'demo_requests_total{{path="/a"}} {n} # {{trace_id="t{n}"}} 1.5 {time.time():.3f}\n'
                f'demo_requests_total{{path="/b"}} {2 * n} # {{trace_id="u{n}",span_id="s"}} {n}\n'
                "# EOF\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", OPENMETRICS)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _without_tenant(data: list) -> list:
    out = [dict(s, seriesLabels={k: v for k, v in s["seriesLabels"].items() if k != "tenant_id"})
           for s in data]
    return sorted(out, key=lambda s: sorted(s["seriesLabels"].items()))


def test_exemplars_from_prometheus_match_its_own_and_survive_restart(promring_up, tmp_path):
    app = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    pr = promring_up(tmp_path / "data", "--tsdb.max-exemplars=1000")
    prom = PrometheusProcess(
        tmp_path / "prom",
        self_scrape_remote_write(pr.write_url, send_exemplars=True,
                                 jobs={"demo": f"127.0.0.1:{app.server_address[1]}"}),
        "--enable-feature=exemplar-storage").start()
    query = {"query": 'demo_requests_total{path=~"/a|/b"}', "start": "0"}
    try:
        deadline = time.monotonic() + 60
        ours: list = []
        while time.monotonic() < deadline:
            time.sleep(1)
            ours = requests.get(f"{pr.api}/query_exemplars", params=query).json()["data"]
            if len(ours) == 2 and all(len(s["exemplars"]) >= 3 for s in ours):
                break
        assert len(ours) == 2, ours
        # Up to the newest exemplar we hold, Prometheus holds the same ones.
        end = min(max(e["timestamp"] for e in s["exemplars"]) for s in ours)
        params = dict(query, end=f"{end:.3f}")
        theirs = requests.get(f"{prom.api}/query_exemplars", params=params).json()
        ours = requests.get(f"{pr.api}/query_exemplars", params=params).json()
        assert theirs["status"] == ours["status"] == "success"
        assert _without_tenant(ours["data"]) == _without_tenant(theirs["data"])
        assert sum(len(s["exemplars"]) for s in ours["data"]) >= 4
        assert {s["seriesLabels"]["tenant_id"] for s in ours["data"]} == {"default-tenant"}
        ex = ours["data"][0]["exemplars"][0]
        assert set(ex) == {"labels", "value", "timestamp"} and isinstance(ex["value"], str)
    finally:
        prom.stop()
        app.shutdown()
    pr.stop()
    pr = promring_up(tmp_path / "data", "--tsdb.max-exemplars=1000")
    again = requests.get(f"{pr.api}/query_exemplars", params=params).json()
    assert again == ours
    # A selector no series matches, and one naming another tenant, find nothing.
    none = requests.get(f"{pr.api}/query_exemplars", params={"query": "nothing_here"}).json()
    assert none == {"status": "success", "data": []}
    bad = requests.get(f"{pr.api}/query_exemplars", params={"query": "sum("})
    assert bad.status_code == 400 and bad.json()["errorType"] == "bad_data"
