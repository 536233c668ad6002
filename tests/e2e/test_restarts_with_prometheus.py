"""Restarts lose nothing: Debian's Prometheus 2.42 scrapes itself every second and remote-writes
into ``promring up`` while promring is restarted with SIGTERM and with ``kill -9``.

Prometheus must never count a failed (non-retryable) sample, and promring must end up holding
exactly the samples Prometheus holds over the covered window (``count_over_time`` per series).
The issue asks for 5 SIGTERM and 5 kill -9 restarts; CI runs ``PROMRING_E2E_RESTARTS`` (default 2)
of each -- ``PROMRING_E2E_RESTARTS=5 pytest tests/e2e/test_restarts_with_prometheus.py`` is the
full run.
"""
from __future__ import annotations

import os
import shutil
import time

import pytest

from harness import PrometheusProcess, self_scrape_remote_write
from rw import query

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus package is not installed "
                                       "(the README's test command installs it)")

RESTARTS = int(os.environ.get("PROMRING_E2E_RESTARTS", "2"))

def _scalar(api: str, q: str, t: float) -> float:
    res = query(api, q, t)
    return float(res[0]["value"][1]) if res else 0.0


def _counts(api: str, window_s: int, t: float) -> dict:
    """count_over_time per series (computed from the raw range selection: PromQL's
    count_over_time drops the metric name, which would merge series)."""
    out = {}
    for s in query(api, f'{{job="prometheus"}}[{window_s}s]', t):
        s["metric"].pop("tenant_id", None)
        out[tuple(sorted(s["metric"].items()))] = len(s["values"])
    return out


def test_prometheus_loses_nothing_through_sigterm_and_kill9_restarts(promring_up, tmp_path):
    pr = promring_up(tmp_path / "data")
    prom = PrometheusProcess(tmp_path / "prom", self_scrape_remote_write(
        pr.write_url, queue={"batch_send_deadline": "1s", "min_backoff": "100ms", "max_backoff": "1s"})).start()
    try:
        time.sleep(4)  # remote write is flowing
        t_start = time.time()
        for _ in range(RESTARTS):
            for restart in ("stop", "kill9"):
                time.sleep(2)
                assert getattr(pr, restart)() in (None, 0, -9), restart
                time.sleep(1)  # Prometheus meets a refused connection and backs off
                pr.start()
        time.sleep(3)
        t_end = time.time()
        # Wait until Prometheus has sent everything it scraped before t_end.
        deadline = time.monotonic() + 60
        while _scalar(prom.api, "max(prometheus_remote_storage_queue_highest_sent_timestamp_seconds)",
                      time.time()) < t_end + 1:
            assert time.monotonic() < deadline, "Prometheus did not catch up"
            time.sleep(0.5)
        now = time.time()
        assert _scalar(prom.api, "sum(prometheus_remote_storage_samples_failed_total)", now) == 0
        assert _scalar(prom.api, "sum(prometheus_remote_storage_samples_dropped_total)", now) == 0
        window = int(t_end - t_start)
        want = _counts(prom.api, window, t_end)
        got = _counts(pr.api, window, t_end)
        assert len(want) > 100
        missing = {k: (want[k], got.get(k)) for k in want if got.get(k) != want[k]}
        assert not missing, list(missing.items())[:10]
        assert set(got) == set(want)
    finally:
        prom.stop()
    log = pr.log_text()
    assert "Traceback" not in log, log[-3000:]
