"""A real ``promring query`` over a real ``promring store``: a query's tenant reaches the store
(``thanos-tenant`` metadata), so the store's limits attribute a refused query to it, exactly
as when the real ``thanos query`` asks."""
from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import orjson

from harness import query_process, stop_process, store_and_query, store_process
from test_store_limits_process import _one_block_bucket, _wait_small_query
from test_thanos_interop import STARTUP_S, thanos
from tests.unit.test_store_limits import H2, T0, _bucket


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def _dropped(metrics_url: str) -> dict[str, float]:
    """thanos_bucket_store_queries_dropped_total{reason="series"} by tenant."""
    with urllib.request.urlopen(metrics_url, timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("thanos_bucket_store_queries_dropped_total{") and 'reason="series"' in line:
            out[re.search(r'tenant="([^"]*)"', line).group(1)] = float(line.rsplit(" ", 1)[1])
    return out


def test_refused_query_counts_against_the_queries_tenant(tmp_path: Path) -> None:
    bucket, _ = _bucket(tmp_path)
    procs, api = store_and_query(
        tmp_path, f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n",
        store_args=("--store.limits.request-series=1",))
    try:
        store_args = procs[1].args
        metrics = f"http://{store_args[store_args.index('--http-address') + 1]}/metrics"
        t = (T0 + H2) / 1000
        status, body = _get(f"{api}/query?query=up&time={t}&partial_response=false",
                            {"THANOS-TENANT": "team-a"})
        assert status != 200 and "exceeded series limit" in body["error"], body
        assert _dropped(metrics).get("team-a") == 1
        _get(f"{api}/series?match[]=up&start={T0 / 1000}&end={t}&partial_response=false")
        assert _dropped(metrics) == {"team-a": 1, "default-tenant": 1}
        status, body = _get(f"{api}/query?query=up&time={t}", {"THANOS-TENANT": "a/b"})
        assert (status, body["errorType"]) == (400, "bad_data"), body
    finally:
        for p in procs:
            stop_process(p)


def test_our_querier_and_thanos_query_send_the_store_the_same_tenant(tmp_path: Path) -> None:
    """Differential: the same refused queries through our querier and through the real
    ``thanos query`` land on the same tenants in the store's dropped-queries counter."""
    conf, _ = _one_block_bucket(tmp_path)
    procs = []
    try:
        store = store_process(tmp_path, "store", conf, "--store.limits.request-series=3",
                              "--min-time=0000-01-01T00:00:00Z",
                              "--max-time=9999-12-31T23:59:59Z").start(STARTUP_S)
        procs.append(store)
        ours = query_process(tmp_path, "query", [store.grpc]).start(STARTUP_S)
        procs.append(ours)
        tq = thanos(tmp_path, "thanos-query", "query", f"--endpoint={store.grpc}"
                    ).start(STARTUP_S)
        procs.append(tq)
        metrics = store.url("http", "/metrics")
        t = (T0 + 60_000) / 1000
        for name, q in (("ours", ours), ("thanos", tq)):
            api = q.url("http", "/api/v1")
            _wait_small_query(api)  # the querier has found the store
            for headers in ({"THANOS-TENANT": f"team-{name}"}, {}):
                status, body = _get(f"{api}/query?query=up&time={t}&partial_response=false",
                                    headers)
                assert status == 422 and "exceeded series limit" in body["error"], body
        assert _dropped(metrics) == {"team-ours": 1, "team-thanos": 1, "default-tenant": 2}
    finally:
        for p in reversed(procs):
            p.stop()
