"""Histograms for hot paths: one bisect and two additions per observation, exported at scrape
time exactly as prometheus_client's ``Histogram`` is (buckets, count, sum, and ``_created``
unless told not to: go-grpc-prometheus's series have none).

prometheus_client's ``observe`` takes a lock per counter and walks the buckets in Python: two of
them per store Series call were a sixth of a warm small call's handler time. Used for the
store's Series histograms, the gRPC handling-time histograms (one series per method) and the
series gate's wait histogram. Observed on one event loop (one thread); a scrape reads a
snapshot.
"""
from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString


class HistogramSeries:
    """One label set's buckets (per bucket, not cumulative; the last is +Inf) and sum."""

    __slots__ = ("bounds", "counts", "sum", "created")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.sum += value

    def observe_many(self, value: float, n: int) -> None:
        """``observe(value)`` ``n`` times, as one update of the bucket it falls in (a batch of
        bucket reads shares its time equally among its ranges: objstore.metrics)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += n
        self.sum += value * n


class Labelled:
    """prometheus_client's ``labels()`` for plain metrics: one series per label values, made by
    ``_new_series`` on first use, kept in first-use order (a scrape's order)."""

    name: str
    _labelnames: tuple[str, ...]
    _series: dict

    def _new_series(self):
        raise NotImplementedError

    def labels(self, *values: str):
        """The series of these label values (created on first use)."""
        s = self._series.get(values)
        if s is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self.name}: {len(self._labelnames)} label values expected")
            s = self._series[values] = self._new_series()
        return s


class PlainHistogram(Labelled):
    """``name``'s histogram with the upper bounds ``buckets`` (+Inf added), one series per
    label values (``labels``; the unlabelled one is ``observe``d directly). Registered with
    ``registry`` if given; else a collector of several metrics yields its ``collect()``."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry | None, labelnames: Sequence[str] = (),
                 created: bool = True) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.name, self.documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._created = created
        self._bounds = bounds
        self._le = [floatToGoString(b) for b in bounds]
        self._series: dict[tuple[str, ...], HistogramSeries] = {}
        if not self._labelnames:
            self._one = self.labels()
            self.observe = self._one.observe  # type: ignore[method-assign]
        if registry is not None:
            registry.register(self)

    def _new_series(self) -> HistogramSeries:
        return HistogramSeries(self._bounds)

    def observe(self, value: float) -> None:
        """Observe on the unlabelled histogram (replaced by its series' own ``observe``)."""
        raise TypeError(f"{self.name} has labels: observe on .labels(...)")

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "histogram")]

    def collect(self) -> Iterator[Metric]:
        name = self.name
        hist = Metric(name, self.documentation, "histogram")
        for values, s in list(self._series.items()):
            labels = dict(zip(self._labelnames, values))
            counts, total = list(s.counts), s.sum
            for le, n in zip(self._le, itertools.accumulate(counts)):
                hist.add_sample(f"{name}_bucket", {**labels, "le": le}, float(n))
            hist.add_sample(f"{name}_count", labels, float(sum(counts)))
            hist.add_sample(f"{name}_sum", labels, total)
            if self._created:
                hist.add_sample(f"{name}_created", labels, s.created)
        yield hist
