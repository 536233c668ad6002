"""common.httpmetrics's plain counter and histogram are exported exactly as the prometheus_client
Counter and Histogram they replace (text and OpenMetrics formats, creation times aside), after
the same requests observed either way (the query API's observe, the receiver's labels())."""
from __future__ import annotations

import re
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from common.httpmetrics import http_metrics


def _normalized(text: bytes) -> str:
    return re.sub(r"_created(\{[^}]*\})? \S+", r"_created\1 T", text.decode())


def test_exported_as_prometheus_client_counter_and_histogram() -> None:
    ref_reg, plain_reg = CollectorRegistry(), CollectorRegistry()
    requests = Counter("http_requests", "HTTP requests by handler and code.", ["handler", "code"],
                       registry=ref_reg)
    latency = Histogram("http_request_duration_seconds", "HTTP request latency by handler.",
                        ["handler"], registry=ref_reg)
    m = http_metrics(plain_reg)
    assert http_metrics(plain_reg) is m  # one pair per registry (promring up shares it)
    # (durations away from the bucket bounds: observe() adds its own microseconds)
    cases = [("/api/v1/query_range", 200, 0.001), ("/api/v1/query", 400, 0.003),
             ("/api/v1/query_range", 200, 0.02), ("other", 404, 0.3), ("receive", 204, 12.0),
             ("/api/v1/query_range", 503, 0.004), ("/api/v1/query_range", 200, 1e9)]
    for handler, status, took in cases:
        requests.labels(handler, str(status)).inc()
        latency.labels(handler).observe(took)
        if handler == "receive":  # the receiver's way
            m.requests.labels(handler, str(status)).inc()
            m.latency.labels(handler).observe(took)
        else:
            m.observe(handler, status, time.perf_counter() - took)
    for gen in (generate_latest, openmetrics):
        want, got = _normalized(gen(ref_reg)), _normalized(gen(plain_reg))
        # the measured durations differ from ``took`` by the microseconds observe() takes
        want, got = (re.sub(r"(_sum\{[^}]*\}) \S+", r"\1 S", t) for t in (want, got))
        assert got == want
    assert plain_reg.get_sample_value(
        "http_requests_total", {"handler": "/api/v1/query_range", "code": "200"}) == 3
    assert plain_reg.get_sample_value(
        "http_request_duration_seconds_bucket",
        {"handler": "/api/v1/query_range", "le": "0.025"}) == 3
    assert plain_reg.get_sample_value(
        "http_request_duration_seconds_sum", {"handler": "receive"}) == 12.0


def test_an_empty_pair_and_wrong_use() -> None:
    ref_reg, plain_reg = CollectorRegistry(), CollectorRegistry()
    Counter("http_requests", "HTTP requests by handler and code.", ["handler", "code"],
            registry=ref_reg)
    Histogram("http_request_duration_seconds", "HTTP request latency by handler.", ["handler"],
              registry=ref_reg)
    m = http_metrics(plain_reg)
    assert generate_latest(plain_reg) == generate_latest(ref_reg)
    with pytest.raises(ValueError):
        m.requests.labels("only-one")
    with pytest.raises(ValueError):
        m.requests.labels("h", "200").inc(-1)
