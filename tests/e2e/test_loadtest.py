"""The headless load test against a real ``promring up``: a short steady run has no errors, and
what it wrote is what its dashboard queries read back."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Not imported here: importing locust monkey-patches the test process with gevent.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                reason="locust not installed (pip install promring[loadtest])")


def test_headless_scenario_ingests_and_queries_without_errors(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest", "--start-up", "--duration", "10", "--series", "2000",
         "--interval", "2", "--per-request", "400", "--tenants", "2", "--churn", "0.05",
         "--query-wait", "0.5", "--rss-interval", "1", "--progress", "0", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["write"]["errors"] == 0 and res["samples_failed"] == 0, res["write"]
    assert res["query"]["errors"] == 0, res["query"]
    # 1,980 series every 2 s for 10 s: about 5 rounds, all acknowledged
    assert res["samples_ok"] >= 3 * 1980, res["samples_ok"]
    assert res["query"]["requests"] >= 5
    assert res["query_series"] > 0 and res["query_points"] > 0
    assert res["rss"], "the started process's RSS was sampled"
    assert res["target_exit_code"] == 0
    assert "samples/s" in proc.stdout and "p99" in proc.stdout
