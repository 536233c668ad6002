"""The store's hot-path histograms (grpc_server_handling_seconds per method, the Series
request histograms of the bucket store, the series gate's wait histogram) all come from
common.plainhist; their /metrics text after a fixed set of observations is pinned here,
exactly as the separate implementations exported it before they were folded into one."""
from __future__ import annotations

import re
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry, generate_latest

import storeapi.grpcmetrics as grpcmetrics
from store.bucketstore import SyncMetrics
from store.limits import SeriesGate

GOLDEN = Path(__file__).with_name("data") / "plainhist_exposition.txt"
DURATIONS = (0.0, 0.0005, 0.001, 0.002, 0.3, 1.0, 7.5, 119.0, 121.0, 5000.0)


class _Clock:
    """perf_counter for grpcmetrics: each call's start at 0, its end at the next duration."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def exposition(monkeypatch) -> str:
    reg = CollectorRegistry()
    clock = _Clock()
    monkeypatch.setattr(grpcmetrics.time, "perf_counter", clock)
    server = grpcmetrics.GrpcServerMetrics(reg)
    client = grpcmetrics.GrpcClientMetrics(reg)
    for i, took in enumerate(DURATIONS):
        for m, path, kind in ((server, "/thanos.Store/Series", "server_stream"),
                              (server, "/thanos.Store/Info", "unary"),
                              (client, "/thanos.Store/Series", "server_stream")):
            clock.now = 0.0
            call = m.begin(path, kind)
            call.received()
            call.sent(i)
            clock.now = took
            call.done(grpc.StatusCode.OK if i % 3 else grpc.StatusCode.RESOURCE_EXHAUSTED)
    sync = SyncMetrics(reg)
    for i, took in enumerate(DURATIONS):
        sync.get_all.observe(took)
        sync.blocks_queried.observe(i * 97 % 1500)
    gate = SeriesGate(4, reg)
    for took in DURATIONS:
        gate.observe_wait(took)
    text = generate_latest(reg).decode()
    return re.sub(r"^(\w+_created(\{[^}]*\})?) \S+$", r"\1 T", text, flags=re.M)


def test_exposition_unchanged(monkeypatch) -> None:
    assert exposition(monkeypatch) == GOLDEN.read_text()
