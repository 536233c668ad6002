"""Real Prometheus 2.42 scrapes itself and remote_writes into ``promring up``; both must answer
a Grafana-style set of queries identically (ignoring promring's external labels)."""
from __future__ import annotations

import math
import shutil
import time

import pytest
import requests

from harness import PrometheusProcess, self_scrape_remote_write

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus package is not installed "
                                       "(the README's test command installs it)")


INSTANT_QUERIES = [
    "up",
    "prometheus_http_requests_total",
    'prometheus_http_requests_total{handler=~"/api/v1/.*", code!="500"}',
    "rate(prometheus_http_requests_total[10s])",
    "irate(prometheus_http_requests_total[10s])",
    "increase(prometheus_tsdb_head_samples_appended_total[10s])",
    "sum by (handler) (rate(prometheus_http_requests_total[10s]))",
    "sum without (instance) (rate(prometheus_http_requests_total[10s]))",
    "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[10s])))",
    "histogram_quantile(0.5, rate(prometheus_http_response_size_bytes_bucket[10s]))",
    "topk(3, prometheus_http_requests_total)",
    "bottomk(2, go_memstats_alloc_bytes)",
    'label_replace(up, "host", "$1", "instance", "(.*):.*")',
    'label_join(up, "both", "/", "job", "instance")',
    "absent(nonexistent_metric_xyz)",
    "absent(up)",
    "resets(go_goroutines[10s])",
    "changes(go_goroutines[10s])",
    "delta(go_memstats_heap_alloc_bytes[10s])",
    "deriv(process_resident_memory_bytes[10s])",
    "avg_over_time(go_goroutines[10s])",
    "max_over_time(process_resident_memory_bytes[10s])",
    "min_over_time(go_memstats_heap_alloc_bytes[10s])",
    "count_over_time(up[10s])",
    "quantile_over_time(0.5, go_goroutines[10s])",
    "go_memstats_heap_alloc_bytes / go_memstats_heap_sys_bytes * 100",
    "prometheus_http_requests_total > bool 5",
    "prometheus_http_requests_total > 5",
    "sum by (code) (rate(prometheus_http_requests_total[10s])) / ignoring(code) group_left sum(rate(prometheus_http_requests_total[10s]))",
    "rate(prometheus_http_requests_total[10s]) * on(instance) group_left up",
    "up or nonexistent_metric_xyz",
    "prometheus_http_requests_total unless prometheus_http_requests_total{code=\"200\"}",
    "prometheus_http_requests_total and on(handler) prometheus_http_requests_total{handler=\"/metrics\"}",
    "count by (job) (up)",
    "avg(rate(prometheus_http_requests_total[10s]))",
    "max by (handler) (prometheus_http_requests_total)",
    "quantile(0.5, rate(prometheus_http_requests_total[10s]))",
    "prometheus_http_requests_total offset 5s",
    "sort_desc(sum by (handler) (prometheus_http_requests_total))",
    "time()",
    "scalar(up)",
    "vector(1)",
    "sum(up) * 2 + 1",
]

RANGE_QUERIES = [
    "rate(prometheus_http_requests_total[10s])",
    "sum by (handler) (increase(prometheus_http_requests_total[10s]))",
    "histogram_quantile(0.99, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[10s])))",
    "go_goroutines",
    "avg_over_time(go_goroutines[5s])",
]


def _key(metric: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in metric.items() if k != "tenant_id"))


def _close(a: str, b: str) -> bool:
    if a == b:
        return True
    fa, fb = float(a), float(b)
    if math.isnan(fa) and math.isnan(fb):
        return True
    return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12)


def _normalize(data: dict) -> tuple[str, object]:
    kind = data["resultType"]
    if kind in ("scalar", "string"):
        return kind, data["result"]
    out = {}
    for s in data["result"]:
        pts = s.get("values") or [s["value"]]
        out[_key(s["metric"])] = pts
    return kind, out


def _assert_same(q: str, ours: dict, theirs: dict) -> None:
    assert ours["status"] == "success", (q, ours)
    kind_o, o = _normalize(ours["data"])
    kind_t, t = _normalize(theirs["data"])
    assert kind_o == kind_t, q
    if kind_o in ("scalar", "string"):
        assert o[0] == t[0] and _close(o[1], t[1]), (q, o, t)
        return
    assert set(o) == set(t), f"{q}: series differ\nours:   {sorted(o)}\ntheirs: {sorted(t)}"
    for k in t:
        po, pt = o[k], t[k]
        assert [p[0] for p in po] == [p[0] for p in pt], (q, k)
        assert all(_close(a[1], b[1]) for a, b in zip(po, pt)), f"{q} {k}: {po} != {pt}"


def test_promring_answers_like_prometheus(promring_up, tmp_path):
    pr = promring_up()
    prom = PrometheusProcess(tmp_path / "prom", self_scrape_remote_write(pr.write_url)).start()
    try:
        time.sleep(40)
        # Scrape timestamps of the single self-scrape target; evaluate half-way between two of
        # them so no sample sits on a range boundary (2.42 and 3.x differ exactly there).
        # Every window starts well after the first scrape: for a counter born inside the
        # window, 2.42 and 3.x extrapolate rate() differently (3.x is right, and ours).
        r = requests.get(f"{prom.api}/query", params={"query": "up[60s]"}).json()
        stamps = [p[0] for p in r["data"]["result"][0]["values"]]
        assert len(stamps) >= 34, stamps
        # Prometheus 2.42 prints instant-vector and scalar timestamps as Go floats (".69"), 3.x
        # -- and we -- with three millisecond digits (".690"); keep the last digit non-zero.
        t_ms = round((stamps[-6] + stamps[-7]) / 2 * 1000)
        t_eval = (t_ms + (1 if t_ms % 10 == 0 else 0)) / 1000
        # Wait until promring has the newest sample we compare against.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = requests.get(f"{pr.api}/query", params={"query": "up", "time": stamps[-3]}).json()
            if got["data"]["result"] and got["data"]["result"][0]["value"][0] == stamps[-3]:
                break
            time.sleep(0.5)
        for q in INSTANT_QUERIES:
            params = {"query": q, "time": t_eval}
            theirs = requests.get(f"{prom.api}/query", params=params).json()
            ours = requests.get(f"{pr.api}/query", params=params).json()
            assert theirs["status"] == "success", (q, theirs)
            _assert_same(q, ours, theirs)
        for q in RANGE_QUERIES:
            params = {"query": q, "start": stamps[-20] + 0.5, "end": t_eval, "step": 2}
            theirs = requests.get(f"{prom.api}/query_range", params=params).json()
            ours = requests.get(f"{pr.api}/query_range", params=params).json()
            _assert_same(q, ours, theirs)
        # Byte for byte: with our external label cut out, the JSON is exactly Prometheus's.
        for path, params in (("query", {"query": "up", "time": t_eval}),
                             ("query", {"query": "go_goroutines", "time": t_eval}),
                             ("query", {"query": "time()", "time": t_eval}),
                             ("query", {"query": 'vector(1) * 0.1', "time": t_eval}),
                             ("query_range", {"query": "go_goroutines", "start": stamps[-16] + 0.25,
                                              "end": t_eval, "step": 0.75})):
            theirs = requests.get(f"{prom.api}/{path}", params=params).text
            ours = requests.get(f"{pr.api}/{path}", params=params).text
            assert ours.replace(',"tenant_id":"default-tenant"', "") == theirs, (params, ours, theirs)
        # The series API sees what Prometheus sent, plus our tenant label.
        ours = requests.get(f"{pr.api}/series", params={"match[]": "up"}).json()
        assert ours["data"] == [{"__name__": "up", "instance": f"127.0.0.1:{prom.port}",
                                 "job": "prometheus", "tenant_id": "default-tenant"}]
    finally:
        prom.stop()


def test_metadata_sent_by_prometheus_is_served_in_its_shape(promring_up, tmp_path):
    """Prometheus remote-writes its scraped metadata; /api/v1/metadata answers with the same
    type/help/unit Prometheus itself reports, and still after a restart of promring."""
    pr = promring_up()
    prom = PrometheusProcess(
        tmp_path / "prom", self_scrape_remote_write(pr.write_url, metadata_send_interval="1s")).start()
    try:
        names = ("prometheus_http_requests_total", "go_goroutines",
                 "prometheus_http_request_duration_seconds")
        deadline = time.monotonic() + 60
        ours: dict = {}
        while time.monotonic() < deadline and not all(n in ours for n in names):
            time.sleep(1)
            ours = requests.get(f"{pr.api}/metadata").json()["data"]
        for name in names:
            theirs = requests.get(f"{prom.api}/metadata", params={"metric": name}).json()
            assert ours[name] == theirs["data"][name], name
        assert len(ours) >= 50, len(ours)
        got = requests.get(f"{pr.api}/metadata", params={"metric": "go_goroutines"}).json()
        assert got == {"status": "success", "data": {"go_goroutines": [
            {"type": "gauge", "help": "Number of goroutines that currently exist.", "unit": ""}]}}
    finally:
        prom.stop()
    pr.stop()
    pr = promring_up(tmp_path / "data", "--web.cors.origin", r"https://grafana\.example")
    got = requests.get(f"{pr.api}/metadata", params={"metric": "go_goroutines"}).json()
    assert got["data"]["go_goroutines"][0]["type"] == "gauge", got
    # The process's own flags and retention reach the status endpoints.
    flags = requests.get(f"{pr.api}/status/flags").json()["data"]
    assert flags["web.cors.origin"] == r"https://grafana\.example" and flags["tsdb.retention"] == "15d"
    assert requests.get(f"{pr.api}/status/runtimeinfo").json()["data"]["storageRetention"] == "15d"
    r = requests.get(f"{pr.api}/query", params={"query": "1"},
                     headers={"Origin": "https://grafana.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://grafana.example"
