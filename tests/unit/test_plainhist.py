"""common.plainhist.PlainHistogram is exported exactly as prometheus_client's Histogram (text
and OpenMetrics formats, the creation time aside) after the same observations."""
from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from common.plainhist import PlainHistogram


@pytest.mark.parametrize("buckets", [(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                                     (0.001, 0.01, 0.1, 0.3, 0.6, 1, 3, 6, 9, 20, 30, 60, 90,
                                      120), (0.5, float("inf"))])
def test_exported_as_prometheus_client_histogram(buckets: tuple[float, ...]) -> None:
    ref_reg, plain_reg = CollectorRegistry(), CollectorRegistry()
    ref = Histogram("thanos_x_seconds", "X.", buckets=buckets, registry=ref_reg)
    plain = PlainHistogram("thanos_x_seconds", "X.", buckets, plain_reg)
    for v in (0, 0.0005, 0.001, 0.3, 1, 3, 5, 12, 120, 200, 5000):
        ref.observe(v)
        plain.observe(v)
    for gen in (generate_latest, openmetrics):
        want, got = (re.sub(r"_created \S+", "_created T", gen(r).decode())
                     for r in (ref_reg, plain_reg))
        assert got == want
    assert plain_reg.get_sample_value("thanos_x_seconds_count") == 11


def test_labelled_exported_as_prometheus_client_histogram() -> None:
    """One series per label values, in first-use order, as a labelled Histogram's children;
    without ``_created`` when asked (go-grpc-prometheus's histograms have none)."""
    buckets = (0.001, 0.01, 0.1, 1)
    ref_reg, plain_reg, bare_reg = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    ref = Histogram("grpc_x_seconds", "X.", ["grpc_type", "grpc_method"], buckets=buckets,
                    registry=ref_reg)
    plain = PlainHistogram("grpc_x_seconds", "X.", buckets, plain_reg, ("grpc_type", "grpc_method"))
    bare = PlainHistogram("grpc_x_seconds", "X.", buckets, bare_reg, ("grpc_type", "grpc_method"),
                          created=False)
    for i, v in enumerate((0, 0.0005, 0.001, 0.3, 1, 3, 5)):
        labels = ("unary", "Info") if i % 2 else ("server_stream", "Series")
        ref.labels(*labels).observe(v)
        plain.labels(*labels).observe(v)
        bare.labels(*labels).observe(v)
    want, got = (re.sub(r"_created(\{[^}]*\})? \S+", r"_created\1 T", generate_latest(r).decode())
                 for r in (ref_reg, plain_reg))
    assert got == want
    assert generate_latest(bare_reg).decode() == "".join(
        line + "\n" for line in want.splitlines() if "_created" not in line)
    with pytest.raises(TypeError):
        plain.observe(1.0)
    with pytest.raises(ValueError):
        plain.labels("unary")
