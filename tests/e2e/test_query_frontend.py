"""``promring query-frontend`` in front of a real store gateway + querier over 7 days of blocks:
split range queries answer exactly what the querier answers, the results cache serves later
refreshes, a dead memcached fails nothing, ``Cache-Control: no-store`` bypasses the cache and
every other API call is passed through unchanged."""
from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from harness import (PrometheusProcess, ServerProcess, free_port, promring_cmd, stop_process,
                     store_and_query)
from memcached import MemcachedProcess
from weekdata import DAY_MS, write_week

QUERIES = ["rate(m[5m])", "sum by (job) (rate(m[10m]))", "max_over_time(m[1h]) - m"]
STEPS = [60, 3600, 420]  # 1m, 1h, 7m (7m does not divide a day: parts start off the hour)


@pytest.fixture(scope="module")
def querier(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qfe")
    now_ms = int(time.time() * 1000)
    write_week(tmp / "bucket", now_ms)
    procs, api = store_and_query(tmp, f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
    yield api.removesuffix("/api/v1"), now_ms, tmp
    for p in procs:
        stop_process(p)


def frontend(workdir: Path, downstream: str, *extra: str) -> ServerProcess:
    ports = {"http": free_port()}
    args = promring_cmd() + ["query-frontend", "--http-address", f"127.0.0.1:{ports['http']}",
                             "--query-frontend.downstream-url", downstream, *extra]
    return ServerProcess(args, workdir, f"frontend-{ports['http']}", ports,
                         [f"http://127.0.0.1:{ports['http']}/-/ready"]).start()


def metric(base: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (handler: a suffix)."""
    total = 0.0
    for fam in text_string_to_metric_families(requests.get(base + "/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k, "").endswith(v) for k, v in labels.items()):
                total += s.value
    return total


def downstream_range_calls(querier_base: str) -> float:
    return metric(querier_base, "http_requests_total", handler="/api/v1/query_range")


def normalized(body: dict) -> dict:
    body["data"]["result"].sort(key=lambda s: sorted(s["metric"].items()))
    return body


def range_query(base: str, query: str, start_ms: int, end_ms: int, step: int,
                headers: dict | None = None) -> dict:
    r = requests.get(base + "/api/v1/query_range", timeout=120, headers=headers or {}, params={
        "query": query, "start": start_ms / 1000, "end": end_ms / 1000, "step": step})
    assert r.status_code == 200, r.text
    return normalized(r.json())


def dashboard(base: str, start_ms: int, end_ms: int, queries: list[str] = QUERIES) -> dict:
    return {(q, step): range_query(base, q, start_ms, end_ms, step)
            for q in queries for step in STEPS}


def direct_answers(querier_base: str, start_ms: int, end_ms: int, aligned: bool,
                   queries: list[str] = QUERIES) -> dict:
    """The querier's own answers (to the step-aligned range when the frontend aligns)."""
    out = {}
    for q in queries:
        for step in STEPS:
            s, e = start_ms, end_ms
            if aligned:
                s, e = s - s % (step * 1000), e - e % (step * 1000)
            out[(q, step)] = range_query(querier_base, q, s, e, step)
    return out


def test_seven_day_range_queries_equal_the_querier_with_and_without_cache(querier, tmp_path):
    qbase, now_ms, _ = querier
    start, end = now_ms - 7 * DAY_MS + 12_345, now_ms - 5_000
    want_aligned = direct_answers(qbase, start, end, aligned=True)
    assert any(len(a["data"]["result"]) == 6 for a in want_aligned.values())
    nocache = frontend(tmp_path, qbase)
    try:
        assert dashboard(f"http://127.0.0.1:{nocache.ports['http']}", start, end) == want_aligned
    finally:
        nocache.stop()
    unaligned = frontend(tmp_path, qbase, "--no-query-range.align-range-with-step",
                         "--query-range.response-cache-config",
                         "type: IN-MEMORY\nconfig:\n  max_size: 256MB\n")
    try:
        base = f"http://127.0.0.1:{unaligned.ports['http']}"
        want = direct_answers(qbase, start, end, aligned=False, queries=QUERIES[:1])
        assert dashboard(base, start, end, QUERIES[:1]) == want
        assert dashboard(base, start, end, QUERIES[:1]) == want  # from the cache
        assert metric(base, "cortex_cache_hits_total") > 0
    finally:
        unaligned.stop()

    cached = frontend(tmp_path, qbase, "--query-range.response-cache-config",
                      "type: IN-MEMORY\nconfig:\n  max_size: 256MB\n  max_size_items: 1000\n")
    try:
        base = f"http://127.0.0.1:{cached.ports['http']}"
        before = downstream_range_calls(qbase)
        assert dashboard(base, start, end) == want_aligned
        first_calls = downstream_range_calls(qbase) - before
        assert first_calls >= len(QUERIES) * len(STEPS) * 7  # split into (at least) 7 day parts
        assert metric(base, "thanos_frontend_split_queries_total") >= first_calls
        hits = metric(base, "cortex_cache_hits_total")
        before = downstream_range_calls(qbase)
        assert dashboard(base, start, end) == want_aligned
        # only the part newer than max_freshness (1m) is asked again: at most one call a query
        assert downstream_range_calls(qbase) - before <= len(QUERIES) * len(STEPS)
        assert metric(base, "cortex_cache_hits_total") > hits
        # a later refresh (the window moved on by a minute) is still answered exactly
        later = direct_answers(qbase, start + 60_000, end + 60_000, aligned=True)
        assert dashboard(base, start + 60_000, end + 60_000) == later
    finally:
        cached.stop()


def test_no_store_bypasses_the_cache(querier, tmp_path):
    qbase, now_ms, _ = querier
    start, end = now_ms - 7 * DAY_MS, now_ms - 5_000
    fe = frontend(tmp_path, qbase, "--query-range.response-cache-config",
                  "type: IN-MEMORY\nconfig:\n  max_size_items: 100\n")
    try:
        base = f"http://127.0.0.1:{fe.ports['http']}"
        want = range_query(base, "rate(m[5m])", start, end, 3600)
        fetched = metric(base, "cortex_cache_fetched_keys_total")
        before = downstream_range_calls(qbase)
        got = range_query(base, "rate(m[5m])", start, end, 3600, {"Cache-Control": "no-store"})
        assert got == want
        assert downstream_range_calls(qbase) - before >= 8  # every day part asked again
        assert metric(base, "cortex_cache_fetched_keys_total") == fetched
    finally:
        fe.stop()


def test_memcached_killed_mid_run_fails_no_query(querier, tmp_path):
    qbase, now_ms, _ = querier
    start, end = now_ms - 7 * DAY_MS, now_ms - 5_000
    want = direct_answers(qbase, start, end, aligned=True, queries=QUERIES[:1])
    mc = MemcachedProcess()
    fe = None
    try:
        fe = frontend(tmp_path, qbase, "--cache-compression-type", "snappy",
                      "--query-range.response-cache-config",
                      f"type: MEMCACHED\nconfig:\n  addresses: [{mc.address}]\n  timeout: 200ms\n")
        base = f"http://127.0.0.1:{fe.ports['http']}"
        assert dashboard(base, start, end, QUERIES[:1]) == want
        assert dashboard(base, start, end, QUERIES[:1]) == want
        assert metric(base, "cortex_cache_hits_total") > 0
        mc.kill9()
        # every query answered, all from downstream
        assert dashboard(base, start, end, QUERIES[:1]) == want
        assert metric(base, "thanos_memcached_operation_failures_total") > 0
    finally:
        if fe is not None:
            fe.stop()
        mc.stop()


def test_other_api_calls_pass_through_unchanged(querier, tmp_path):
    qbase, now_ms, _ = querier
    fe = frontend(tmp_path, qbase)
    try:
        base = f"http://127.0.0.1:{fe.ports['http']}"
        t = now_ms / 1000 - 3600
        calls = [("/api/v1/query", {"query": "sum(m)", "time": t}),
                 ("/api/v1/query", {"query": "sum(", "time": t}),
                 ("/api/v1/query_range", {"query": "m", "start": t, "end": t - 10, "step": 60}),
                 ("/api/v1/series", {"match[]": "m", "start": t - 3600, "end": t}),
                 ("/api/v1/labels", {}), ("/api/v1/label/job/values", {}),
                 ("/api/v1/status/buildinfo", {}), ("/api/v1/nope", {})]
        for path, params in calls:
            ours = requests.get(base + path, params=params, timeout=30)
            theirs = requests.get(qbase + path, params=params, timeout=30)
            assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content), path
        post = requests.post(base + "/api/v1/query", data={"query": "count(m)", "time": t})
        assert post.json()["data"]["result"][0]["value"][1] == "6"
        raw = requests.get(base + "/api/v1/series", params={"match[]": "m"}, stream=True,
                           headers={"Accept-Encoding": "gzip"}, timeout=30)
        body = raw.raw.read()
        direct = requests.get(qbase + "/api/v1/series", params={"match[]": "m"}, stream=True,
                              headers={"Accept-Encoding": "gzip"}, timeout=30)
        assert raw.headers.get("Content-Encoding") == direct.headers.get("Content-Encoding")
        if raw.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        direct_body = direct.raw.read()
        if direct.headers.get("Content-Encoding") == "gzip":
            direct_body = gzip.decompress(direct_body)
        assert body == direct_body
        assert metric(base, "thanos_query_frontend_queries_total", op="query") == 3
    finally:
        fe.stop()


def test_downstream_down_is_an_error_answer_not_a_crash(tmp_path):
    fe = frontend(tmp_path, f"http://127.0.0.1:{free_port()}",
                  "--query-range.max-retries-per-request", "2", "--query.max-retries-per-request", "2")
    try:
        base = f"http://127.0.0.1:{fe.ports['http']}"
        r = requests.get(base + "/api/v1/query_range", timeout=30,
                         params={"query": "m", "start": 0, "end": 86400 * 3, "step": 3600})
        assert r.status_code == 502 and r.json()["status"] == "error"
        assert requests.get(base + "/api/v1/labels", timeout=30).status_code == 502
        assert metric(base, "cortex_query_frontend_retries_count") >= 1
        assert requests.get(base + "/-/ready", timeout=5).status_code == 200
    finally:
        fe.stop()


def test_prometheus_as_the_downstream(tmp_path):
    """Debian's Prometheus 2.42 scraping itself every second behind the frontend, parts of
    10 s: the joined answer is Prometheus's own."""
    prom = PrometheusProcess(tmp_path / "prom", "global:\n  scrape_interval: 1s\n"
                             "scrape_configs:\n- job_name: p\n  static_configs:\n"
                             "  - targets: [$SELF]\n").start()
    fe = None
    try:
        fe = frontend(tmp_path, f"http://127.0.0.1:{prom.port}", "--query-range.split-interval",
                      "10s", "--query-range.response-cache-config",
                      "type: IN-MEMORY\nconfig:\n  max_size_items: 100\n",
                      "--query-range.response-cache-max-freshness", "3s")
        base = f"http://127.0.0.1:{fe.ports['http']}"
        time.sleep(12)
        end = int(time.time()) * 1000 - 4000
        for q in ("up", "rate(prometheus_http_requests_total[5s])"):
            want = range_query(f"http://127.0.0.1:{prom.port}", q, end - 10_000, end, 1)
            assert want["data"]["result"]
            assert range_query(base, q, end - 10_000, end, 1) == want
            assert range_query(base, q, end - 10_000, end, 1) == want  # from the cache
        assert metric(base, "cortex_cache_hits_total") > 0
        assert metric(base, "thanos_frontend_split_queries_total") >= 4
    finally:
        if fe is not None:
            fe.stop()
        prom.stop()
