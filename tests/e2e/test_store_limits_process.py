"""``promring store`` with Thanos's Series limit flags, as processes: a Thanos user's store
command line starts, a request over ``--store.limits.request-series`` fails with Thanos's
ResourceExhausted message through our querier and through the real ``thanos query`` (a
warning under partial response, HTTP 422 without), while a small request still answers."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import requests

from harness import query_process, store_process
from receiver.tsdb.block import write_block_from_samples
from test_thanos_interop import STARTUP_S, thanos

H2 = 2 * 3600 * 1000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H2
LIMIT_MSG = "exceeded series limit: limit 3 violated (got 5)"


def _one_block_bucket(tmp: Path) -> tuple[Path, str]:
    """A filesystem bucket of one 2 h block holding up{instance="h0".."h4"}."""
    ts = T0 + np.arange(480, dtype=np.int64) * 15_000
    series = [((("__name__", "up"), ("instance", f"h{i}")), ts, np.full(480, float(i)))
              for i in range(5)]
    meta = write_block_from_samples(tmp / "bucket", series, T0, T0 + H2)
    conf = tmp / "objstore.yml"
    conf.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
    return conf, meta.ulid


def _range(api: str, query: str, **extra: str) -> requests.Response:
    return requests.get(f"{api}/query_range", params={
        "query": query, "start": T0 / 1000, "end": (T0 + H2 - 1) / 1000, "step": "60",
        **extra}, timeout=30)


def _wait_small_query(api: str) -> dict:
    """The one-series query, once the querier has found the store (bounded wait)."""
    deadline = time.monotonic() + STARTUP_S
    while True:
        r = _range(api, 'up{instance="h1"}')
        body = r.json()
        if r.status_code == 200 and body["data"]["result"]:
            return body
        assert time.monotonic() < deadline, f"store never answered: {r.status_code} {r.text}"
        time.sleep(0.3)


def _check_limited(api: str, ulid: str) -> None:
    small = _wait_small_query(api)
    assert [s["metric"]["instance"] for s in small["data"]["result"]] == ["h1"]
    assert not small.get("warnings")
    # Partial response allowed (both queriers' default): no data from the store, a warning.
    r = _range(api, "up")
    assert r.status_code == 200, r.text
    warned = r.json()
    assert warned["data"]["result"] == []
    assert any(f"fetch postings for block {ulid}: rpc error: code = ResourceExhausted desc = "
               f"{LIMIT_MSG}" in w for w in warned["warnings"]), warned
    # Partial response refused: the query fails as a 422 execution error with that message.
    r = _range(api, "up", partial_response="false")
    assert r.status_code == 422, r.text
    failed = r.json()
    assert failed["status"] == "error" and failed["errorType"] == "execution"
    assert LIMIT_MSG in failed["error"] and ulid in failed["error"], failed


def test_store_series_limit_through_our_querier_and_thanos_query(tmp_path: Path) -> None:
    conf, ulid = _one_block_bucket(tmp_path)
    procs = []
    try:
        store = store_process(tmp_path, "store", conf, "--store.limits.request-series=3",
                              "--store.grpc.series-max-concurrency=4",
                              "--min-time=0000-01-01T00:00:00Z", "--max-time=9999-12-31T23:59:59Z"
                              ).start(STARTUP_S)
        procs.append(store)
        ours = query_process(tmp_path, "query", [store.grpc]).start(STARTUP_S)
        procs.append(ours)
        _check_limited(ours.url("http", "/api/v1"), ulid)
        tq = thanos(tmp_path, "thanos-query", "query", f"--endpoint={store.grpc}"
                    ).start(STARTUP_S)
        procs.append(tq)
        _check_limited(tq.url("http", "/api/v1"), ulid)
        metrics = requests.get(store.url("http", "/metrics"), timeout=10).text
        dropped = [ln for ln in metrics.splitlines()
                   if ln.startswith('thanos_bucket_store_queries_dropped_total{reason="series"')]
        assert dropped and float(dropped[0].split()[-1]) >= 4.0, dropped  # 2 per querier
        assert "thanos_bucket_store_series_gate_queries_max 4.0" in metrics
    finally:
        for p in reversed(procs):
            p.stop()
