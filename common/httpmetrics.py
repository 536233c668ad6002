"""Thanos's HTTP server metrics, ``http_requests_total{handler,code}`` and
``http_request_duration_seconds{handler}``, one pair per registry: in ``promring up`` the
remote-write endpoint (``handler="receive"``, as Thanos's receiver) and the query API share it.

Kept as plain numbers and exported at scrape time exactly as prometheus_client's ``Counter`` and
``Histogram`` would be: their locked updates and Python walk over the buckets were about a dozen
calls on every query's path; :meth:`HTTPMetrics.observe` makes three. Updated on the event
loop only (one thread); a scrape reads a snapshot.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import Metric

from common.ops import registry_shared
from common.plainhist import HistogramSeries, Labelled, PlainHistogram


class CounterSeries:
    """One label set's count and creation time."""

    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class PlainCounter(Labelled):
    """``name``'s counter (exported as ``name_total`` and ``name_created``), one series per
    label values in first-use order, as a labelled prometheus_client ``Counter``."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], CounterSeries] = {}
        registry.register(self)

    def _new_series(self) -> CounterSeries:
        return CounterSeries()

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "counter")]

    def collect(self) -> Iterator[Metric]:
        m = Metric(self.name, self.documentation, "counter")
        for values, s in list(self._series.items()):
            labels = dict(zip(self._labelnames, map(str, values)))
            m.add_sample(f"{self.name}_total", labels, s.value)
            m.add_sample(f"{self.name}_created", labels, s.created)
        yield m


class HTTPMetrics:
    """The pair, and the series of each (handler, code) found once, not on every request."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = PlainCounter("http_requests", "HTTP requests by handler and code.",
                                     ["handler", "code"], registry)
        self.latency = PlainHistogram("http_request_duration_seconds",
                                      "HTTP request latency by handler.",
                                      Histogram.DEFAULT_BUCKETS, registry, ["handler"])
        self._by: dict[tuple[str, int], tuple[CounterSeries, HistogramSeries]] = {}

    def observe(self, handler: str, status: int, t0: float) -> None:
        """A request to ``handler`` answered with ``status``, started at ``t0``
        (perf_counter)."""
        s = self._by.get((handler, status))
        if s is None:
            s = self._by[(handler, status)] = (self.requests.labels(handler, str(status)),
                                               self.latency.labels(handler))
        s[0].inc()
        s[1].observe(time.perf_counter() - t0)


def http_metrics(registry: CollectorRegistry) -> HTTPMetrics:
    return registry_shared(registry, "http", HTTPMetrics)
