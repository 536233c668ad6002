"""A histogram for hot paths: one bisect and two additions per observation, exported at scrape
time exactly as prometheus_client's ``Histogram`` is (buckets, count, sum, created).

prometheus_client's ``observe`` takes a lock per counter and walks the buckets in Python: two of
them per store Series call were a sixth of a warm small call's handler time. Observed on one
event loop (one thread); a scrape reads a snapshot.
"""
from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString


class PlainHistogram:
    """``name``'s histogram with the upper bounds ``buckets`` (+Inf added), registered."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.name, self.documentation = name, documentation
        self._bounds = bounds
        self._le = [floatToGoString(b) for b in bounds]
        self._counts = [0] * len(bounds)  # per bucket, not cumulative
        self._sum = 0.0
        self._created = time.time()
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1  # le: value <= bound
        self._sum += value

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "histogram")]

    def collect(self) -> Iterator[Metric]:
        counts, total = list(self._counts), self._sum
        hist = Metric(self.name, self.documentation, "histogram")
        for le, n in zip(self._le, itertools.accumulate(counts)):
            hist.add_sample(f"{self.name}_bucket", {"le": le}, float(n))
        hist.add_sample(f"{self.name}_count", {}, float(sum(counts)))
        hist.add_sample(f"{self.name}_sum", {}, total)
        hist.add_sample(f"{self.name}_created", {}, self._created)
        yield hist
