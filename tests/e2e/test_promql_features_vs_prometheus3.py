"""PromQL feature flags against the reference Prometheus 3 (tests/peers.py): with Prometheus's
defaults (delayed name removal off, experimental functions refused) and with both flags on, the
same data and queries get the same answers and the same errors from promring and Prometheus."""
from __future__ import annotations

import time
from contextlib import contextmanager

import pytest
import requests

from harness import PrometheusProcess
from peers import peer
from rw import push

FLAGS = "promql-delayed-name-removal,promql-experimental-functions"
QUERIES = [
    'sum(count_over_time({job="node"}[1m]))',   # names dropped at once: a collision
    'count_over_time({job="node"}[1m])',
    'label_replace(rate(a_total[1m]), "was", "$1", "__name__", "(.*)")',
    'label_replace({job="node"}, "was", "$1", "__name__", "(.*)")',
    "timestamp(a_total)",
    'timestamp(label_replace(a_total, "x", "y", "", ""))',
    "timestamp(sort(a_total))",
    "-a_total",
    'sort_by_label({job="node"}, "__name__")',
    "limitk(1, a_total)",
    "mad_over_time(a_total[1m])",
    "abs(a_total) + on() group_left b_total",
    "a_total + fill(0) b_total",  # behind a flag neither run turns on: the same parse error
]


def _answer(api: str, q: str, t: float) -> tuple[int, object]:
    r = requests.get(f"{api}/query", params={"query": q, "time": t}, timeout=30)
    body = r.json()
    if body["status"] != "success":
        return r.status_code, (body["errorType"], body["error"])
    res = body["data"]["result"]
    for s in res if isinstance(res, list) else []:
        s["metric"].pop("tenant_id", None)
    return r.status_code, sorted(res, key=lambda s: sorted(s["metric"].items())) \
        if isinstance(res, list) else res


def _range_answer(api: str, q: str, start: float, end: float) -> tuple[int, object]:
    r = requests.get(f"{api}/query_range", params={"query": q, "start": start, "end": end, "step": 7.5},
                     timeout=30)
    body = r.json()
    if body["status"] != "success":
        return r.status_code, (body["errorType"], body["error"])
    return r.status_code, sorted((sorted((k, v) for k, v in s["metric"].items() if k != "tenant_id"),
                                  [(t, round(float(v), 9)) for t, v in s["values"]])
                                 for s in body["data"]["result"])


def _assert_same_answers(theirs_api: str, ours_api: str, queries: list[str], t: float,
                         same=lambda a, b: a == b) -> None:
    diffs = []
    for q in queries:
        theirs, ours = _answer(theirs_api, q, t), _answer(ours_api, q, t)
        if not same(theirs, ours):
            diffs.append(f"{q}\n  prometheus {theirs}\n  promring   {ours}")
    assert not diffs, "\n".join(diffs)


@contextmanager
def _prometheus_and_promring(promring_up, tmp_path, extra: list[str], series: list):
    """The reference Prometheus 3 and promring, both started with ``extra`` flags and both
    sent ``series`` by remote write; Prometheus is stopped afterwards (promring_up stops ours)."""
    prom = PrometheusProcess(tmp_path / "prom3", "global:\n  scrape_interval: 1h\n",
                             "--web.enable-remote-write-receiver", *extra)
    prom.args[0] = peer("prometheus")
    prom.start()
    try:
        pr = promring_up(tmp_path / "data", *extra)
        for url in (pr.write_url, prom.api.replace("/api/v1", "/api/v1/write")):
            assert push(url, series).status_code in (200, 204)
        yield prom, pr
    finally:
        prom.stop()


@pytest.mark.parametrize("features", ["", FLAGS])
def test_feature_flags_answer_as_prometheus_3(promring_up, tmp_path, features):
    extra = [f"--enable-feature={features}"] if features else []
    now = int(time.time() * 1000)
    ts = [now - 120_000 + i * 15_000 for i in range(9)]
    series = [((("__name__", "a_total"), ("job", "node")), ts, [float(i) for i in range(9)]),
              ((("__name__", "b_total"), ("job", "node")), ts, [2.0 * i for i in range(9)])]
    with _prometheus_and_promring(promring_up, tmp_path, extra, series) as (prom, pr):
        _assert_same_answers(prom.api, pr.api, QUERIES, (ts[-1] + 1000) / 1000)


EDGE_QUERIES = [
    "deriv(pinf[2m])", "deriv(ninf[2m])", "predict_linear(pinf[2m], 60)",
    "predict_linear(ninf[2m], 60)", "rate(cinf[2m])", "increase(cinf[2m])", "irate(cinf[2m])",
    "increase(long_total[1h])", "rate(long_total[1h])", "delta(long_total[1h])",
    "deriv(long_total[1h])", "predict_linear(long_total[1h], 3600)",
    "sum_over_time(long_total[1h])", "avg_over_time(long_total[1h])",
    "stddev_over_time(long_total[1h])", "quantile_over_time(0.9, long_total[1h])",
]


def _same(a, b) -> bool:
    """Equal answers; sample values within 1e-12 relative (summation order differs: Prometheus
    adds with Kahan compensation, promring mostly pairwise), NaN and ±Inf exactly."""
    if a[0] != b[0] or not isinstance(a[1], list) or not isinstance(b[1], list):
        return a == b
    if [s["metric"] for s in a[1]] != [s["metric"] for s in b[1]]:
        return False
    for x, y in zip(a[1], b[1]):
        u, v = float(x["value"][1]), float(y["value"][1])
        if x["value"][0] != y["value"][0] or not (
                str(u) == str(v) or abs(u - v) <= 1e-12 * max(abs(u), abs(v))):
            return False
    return True


def test_edge_values_answer_as_prometheus_3(promring_up, tmp_path):
    """Constant ±Inf windows, +Inf in a counter and a long increase range, as issue 15 lists."""
    now = int(time.time() * 1000)
    ts = [now - 120_000 + i * 15_000 for i in range(9)]
    lts = [now - 3_600_000 + i * 15_000 for i in range(241)]
    inf = float("inf")
    series = [((("__name__", "pinf"),), ts, [inf] * 9),
              ((("__name__", "ninf"),), ts, [-inf] * 9),
              ((("__name__", "cinf"),), ts, [1.0, 2.0, inf, inf, 3.0, 4.0, inf, 5.0, 6.0]),
              ((("__name__", "long_total"),), lts,
               [1e9 + i * 0.1 + (i % 7) * 1e-3 for i in range(241)])]
    with _prometheus_and_promring(promring_up, tmp_path, [], series) as (prom, pr):
        _assert_same_answers(prom.api, pr.api, EDGE_QUERIES, (ts[-1] + 1000) / 1000, _same)


INFO_TYPE_FLAGS = "promql-experimental-functions,type-and-unit-labels"
INFO_TYPE_QUERIES = [
    "info(up)", 'info(up, {zone=~".+"})', 'info(up, {zone=~".*"})', 'info(up, {__name__="build_info"})',
    'info(up, {__name__=~".+_info"})', "info(up offset 30s)", "info(rate(req_total[1m]))",
    'info({job="node"})', "info(target_info)",
    "req_total", "-req_total", "req_total + 1", "rate(req_total[1m])", 'sum by (job) ({__type__="counter"})',
    'sum without (instance) (req_total)', 'count({__unit__="requests"})',
    'req_total / ignoring(instance) group_left req_total{instance="a"}',
    'req_total and on(job) up', "histogram_quantile(0.5, rate(lat_bucket[1m]))",
]


def _info_type_series(now: int) -> list:
    ts = [now - 120_000 + i * 15_000 for i in range(9)]
    out = []
    for inst, zone in (("a", "z1"), ("b", "z2"), ("c", "")):
        out.append(((("__name__", "up"), ("instance", inst), ("job", "node")), ts, [1.0] * 9))
        out.append(((("__name__", "req_total"), ("__type__", "counter"), ("__unit__", "requests"),
                     ("instance", inst), ("job", "node")), ts, [float(i * 3) for i in range(9)]))
        if zone:
            out.append(((("__name__", "target_info"), ("instance", inst), ("job", "node"), ("zone", zone)),
                        ts, [1.0] * 9))
    out.append(((("__name__", "build_info"), ("instance", "a"), ("job", "node"), ("version", "1.2")), ts, [1.0] * 9))
    for le, k in (("0.1", 1), ("1", 2), ("+Inf", 3)):
        out.append(((("__name__", "lat_bucket"), ("__type__", "histogram"), ("__unit__", "seconds"),
                     ("job", "node"), ("le", le)), ts, [float(i * k) for i in range(9)]))
    return out


@pytest.mark.parametrize("features", ["", INFO_TYPE_FLAGS])
def test_info_and_type_and_unit_labels_answer_as_prometheus_3(promring_up, tmp_path, features):
    """info() and __type__/__unit__ labels on remote-written data: the same answers (and, with
    the flags off, the same refusal of info()) as Prometheus 3 with the same --enable-feature."""
    now = int(time.time() * 1000)
    extra = [f"--enable-feature={features}"] if features else []
    with _prometheus_and_promring(promring_up, tmp_path, extra, _info_type_series(now)) as (prom, pr):
        _assert_same_answers(prom.api, pr.api, INFO_TYPE_QUERIES, (now - 120_000 + 8 * 15_000 + 1000) / 1000)


PARSE_QUERIES = [  # syntax errors, type errors, and duration expressions (on by default in 3.x)
    "sum(a_total b)", "rate(a_total b)", "a_total offset y", "a_total[5m 1]", 'a_total{a="b" c="d"}',
    "sum by (a b) (a_total)", "a_total[5m+]", "(a_total)[5m]", "1 > 2", "a_total[5m] + 1",
    "abs(a_total,)", '"unterminated', "a_total[0]", "a_total[1m/0]", 'a_total{a=~"(a"}',
    "sum(rate(a_total[5m])", "a_total @ start(", "rate(a_total)", "a_total[5m:1m] offset 1m offset 1m",
    "a + on(b) group_left", "round(a_total, >/0.1)", "1e999", "a_total offset 1000y",
    "count_over_time(a_total[30s * 2])", "count_over_time(a_total[1m:step() + 15s])",
    "a_total offset (10s + 20s)", "a_total offset -(-30s)", "a_total offset 15s * 2",
    "count_over_time(a_total[range()])", "count_over_time(a_total[min_of(1m, 2m)])",
]


def test_parse_errors_and_duration_expressions_answer_as_prometheus_3(promring_up, tmp_path):
    """Our parser against Prometheus 3's: the same errors (text and ``line:col``) and the same
    answers for duration expressions, with Prometheus's default features."""
    now = int(time.time() * 1000)
    ts = [now - 120_000 + i * 15_000 for i in range(9)]
    series = [((("__name__", "a_total"), ("job", "node")), ts, [float(i) for i in range(9)])]
    with _prometheus_and_promring(promring_up, tmp_path, [], series) as (prom, pr):
        _assert_same_answers(prom.api, pr.api, PARSE_QUERIES, (ts[-1] + 1000) / 1000)


EXTENDED_FLAGS = "promql-binop-fill-modifiers,promql-extended-range-selectors"
EXTENDED_QUERIES = [
    "a_total + fill(0) c_total", "a_total - fill_left(1) fill_right(2) c_total",
    "a_total > bool on(job) fill(3) c_total", "c_total / on(job) group_left fill_right(10) b_total",
    "increase(a_total[1m] anchored)", "rate(a_total[1m] smoothed)", "delta(b_total[45s] smoothed)",
    "changes(a_total[1m] anchored)", "resets(a_total[2m] anchored)", "a_total smoothed",
    "b_total offset 7s smoothed", "max_over_time(a_total[1m] anchored)", "timestamp(a_total smoothed)",
    "timestamp((b_total smoothed))", "a_total == fill(5) c_total", "b_total + ignoring(x) fill(1) a_total",
    "increase(a_total[20s] anchored)", "rate(a_total[10s] smoothed)", "resets(a_total[30s] anchored offset 1m)",
    "increase(a_total[1m] smoothed @ 100)", "sum(rate(a_total[1m] anchored))",
]


def test_fill_and_extended_selectors_answer_as_prometheus_3(promring_up, tmp_path):
    """Fill modifiers and anchored/smoothed selectors (with their flags) against Prometheus 3,
    at a time between samples so smoothing interpolates; the counter resets once."""
    now = int(time.time() * 1000)
    ts = [now - 120_000 + i * 15_000 for i in range(9)]
    series = [((("__name__", "a_total"), ("job", "node")), ts, [5.0, 7, 8, 2, 4, 9, 9, 12, 13]),
              ((("__name__", "b_total"), ("job", "node"), ("x", "1")), ts, [2.0 * i for i in range(9)]),
              ((("__name__", "c_total"), ("job", "other")), ts[2:], [1.0] * 7)]
    flags = [f"--enable-feature={EXTENDED_FLAGS}"]
    with _prometheus_and_promring(promring_up, tmp_path, flags, series) as (prom, pr):
        for t in (ts[5] + 7_500, ts[2], ts[8] + 200_000):
            _assert_same_answers(prom.api, pr.api, EXTENDED_QUERIES, t / 1000, _same)
        for q in ("rate(a_total[1m] smoothed)", "a_total smoothed", "increase(a_total[45s] anchored)",
                  "a_total - fill_right(0) c_total"):
            theirs, ours = (_range_answer(api, q, ts[0] / 1000, (ts[8] + 60_000) / 1000)
                            for api in (prom.api, pr.api))
            assert ours == theirs, f"{q}\n  prometheus {theirs}\n  promring   {ours}"
        # range vectors: the window framed by its boundary values
        _assert_same_answers(prom.api, pr.api, ["a_total[1m] anchored", "b_total[1m] smoothed"],
                             (ts[5] + 7_500) / 1000)


TRIM_QUERIES = [
    "histogram_count(h </ 3)", "histogram_sum(h </ 3)", "histogram_count(h >/ 0.7)",
    "histogram_sum(h >/ -1.5)", "histogram_count(hf </ 1.3)", "histogram_sum(hf >/ 0)",
    "histogram_count(hc </ 0.3)", "histogram_sum(hc >/ 0.3)", "histogram_count(hc >/ 5)",
    "histogram_quantile(0.5, h </ 4)", "histogram_fraction(0, 1, hf >/ 0.5)", "h </ 1", "f </ 1",
]


def test_trim_operators_answer_as_prometheus_3(promring_up, tmp_path):
    """</ and >/ on exponential (integer and float) and custom-bucket histograms."""
    from test_native_histograms_e2e import STEP, custom_hist, push as push_hists, SERIES
    t0 = int(time.time() * 1000) - 20 * STEP
    with _prometheus_and_promring(promring_up, tmp_path, [], [((("__name__", "f"),), [t0], [2.0])]
                                  ) as (prom, pr):
        for url in (pr.write_url, prom.api.replace("/api/v1", "/api/v1/write")):
            push_hists(url, t0, 0, 10, {**SERIES, "hc": custom_hist})
        _assert_same_answers(prom.api, pr.api, TRIM_QUERIES[:-2], (t0 + 9 * STEP) / 1000, _same)
        # a histogram result and the float operand that is dropped: compared whole
        _assert_same_answers(prom.api, pr.api, TRIM_QUERIES[-2:], (t0 + 9 * STEP) / 1000)
