"""Late native histogram samples of the out-of-order head (Prometheus 3 takes them too).

Histogram samples are rare and heavy, so, like the in-order histogram head, this is plain
Python per sample: per series, sorted timestamp and value lists. Copy-on-write (a batch builds
new lists and a new dict, then swaps them in) so that a checkpoint or block cut reading from a
worker thread never sees a half-done insert.
"""
from __future__ import annotations

import bisect
from typing import Iterator

from .histhead import _same
from .histogram import Hist

OK, DUPLICATE, SAME_DUPLICATE = 0, 2, 4  # the head's status codes


class OOOHistograms:
    def __init__(self) -> None:
        self._series: dict[int, tuple[list[int], list[Hist]]] = {}
        self.num_samples = 0

    def insert(self, ref: int, t: int, h: Hist, held: Hist | None, pending: dict) -> int:
        """Insert one sample into ``pending`` (a batch's copy, see ``batch``); ``held`` is
        the value another store (the in-order head) keeps at ``t``. Returns its status."""
        got = pending.get(ref)
        if got is None:
            got = self._series.get(ref, ([], []))
        ts, hs = got
        k = bisect.bisect_left(ts, t)
        if held is None and k < len(ts) and ts[k] == t:
            held = hs[k]
        if held is not None:
            return SAME_DUPLICATE if _same(held, h) else DUPLICATE
        pending[ref] = (ts[:k] + [t] + ts[k:], hs[:k] + [h] + hs[k:])
        return OK

    def commit(self, pending: dict) -> None:
        """Swap a batch's inserted series in (one assignment)."""
        if pending:
            merged = {**self._series, **pending}
            self.num_samples = sum(len(v[0]) for v in merged.values())
            self._series = merged

    def get(self, ref: int, t: int) -> Hist | None:
        ts, hs = self._series.get(ref, ((), ()))
        k = bisect.bisect_left(ts, t)
        return hs[k] if k < len(ts) and ts[k] == t else None

    def samples(self, ref: int, mint: int, maxt: int) -> tuple[list[int], list[Hist]]:
        ts, hs = self._series.get(ref, ([], []))
        a, z = bisect.bisect_left(ts, mint), bisect.bisect_right(ts, maxt)
        return ts[a:z], hs[a:z]

    def refs(self) -> list[int]:
        return sorted(self._series)

    def items(self) -> Iterator[tuple[int, list[int], list[Hist]]]:
        """Every series' samples, refs ascending (a snapshot)."""
        series = self._series
        for ref in sorted(series):
            yield ref, series[ref][0], series[ref][1]

    @property
    def min_time(self) -> int | None:
        return min((v[0][0] for v in self._series.values()), default=None)

    @property
    def max_time(self) -> int | None:
        return max((v[0][-1] for v in self._series.values()), default=None)
