"""Thanos's HTTP server metrics, ``http_requests_total{handler,code}`` and
``http_request_duration_seconds{handler}``, one pair per registry: in ``promring up`` the
remote-write endpoint (``handler="receive"``, as Thanos's receiver) and the query API share it."""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from common.ops import registry_shared


@dataclass
class HTTPMetrics:
    requests: Counter
    latency: Histogram


def http_metrics(registry: CollectorRegistry) -> HTTPMetrics:
    return registry_shared(registry, "http", lambda r: HTTPMetrics(
        Counter("http_requests", "HTTP requests by handler and code.", ["handler", "code"],
                registry=r),
        Histogram("http_request_duration_seconds", "HTTP request latency by handler.",
                  ["handler"], registry=r)))
