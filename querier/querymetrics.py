"""In-flight query gauges under Prometheus's engine names and Thanos's concurrency-gate names,
read from the querier's slot semaphore at scrape time (nothing is updated per query)."""
from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Gauge


def add_engine_metrics(registry: CollectorRegistry, slots: asyncio.Semaphore, max_concurrent: int
                       ) -> None:
    def running() -> int:
        return max_concurrent - slots._value  # slots held: evaluating (or finishing) queries

    def waiting() -> int:
        return len(slots._waiters or ())

    Gauge("prometheus_engine_queries", "Queries being evaluated or waiting for a slot.",
          registry=registry).set_function(lambda: running() + waiting())
    Gauge("prometheus_engine_queries_concurrent_max", "Most queries evaluated at once "
          "(--query.max-concurrent).", registry=registry).set(max_concurrent)
    Gauge("thanos_query_concurrent_gate_queries_in_flight", "Queries being evaluated.",
          registry=registry).set_function(running)
    Gauge("thanos_query_concurrent_gate_queries_max", "Most queries evaluated at once.",
          registry=registry).set(max_concurrent)
