"""Garbage-collector settings for query-serving processes (``promring query`` / ``store``).

A query builds tens of thousands of short-lived tuples and lists (label sets, chunk lists,
frames). With CPython's default thresholds that triggers young collections every 700
allocations and, every hundred of them, a full collection that walks every object the
process holds -- ~60,000 from the imported modules alone, 50-100 ms of CPU at random points
of random queries (measured on the scale benchmark's store: a third of a 24 h query).

After start-up, everything alive is long-lived (modules, configuration, loaded blocks'
index-headers): it is collected once and moved to the permanent generation (``gc.freeze``),
so collections never walk it again, and the young generation is made large enough that a
query's objects mostly die by reference counting before a collection sees them. Cyclic
garbage is still collected, just in fewer, larger batches (bounded by ``YOUNG_THRESHOLD``
container allocations).
"""
from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # container allocations between young collections (CPython: 700)
OLDER_THRESHOLDS = (20, 20)


def freeze_startup_heap() -> None:
    """Collect what start-up left behind, freeze the rest, and widen the young generation.
    Call once, when a long-running process has finished starting."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
