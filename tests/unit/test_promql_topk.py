"""topk/bottomk with one k for every step keep exactly the rows a full sort would keep: present
before absent, numbers before NaN, by value, ties in row order (Prometheus's engine order)."""
from __future__ import annotations

import numpy as np
import pytest

from querier.promql import Engine, EngineOptions, Series
from querier.promql.aggregate import _first_k
from receiver.tsdb.labels import matches_all


def by_full_sort(x: np.ndarray, p: np.ndarray, k: int, desc: bool) -> np.ndarray:
    nan = np.isnan(x)
    vv = np.where(nan, 0.0, x)
    order = np.lexsort((-vv if desc else vv, nan, ~p), axis=0)  # stable: ties keep row order
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(len(x))[:, None].repeat(x.shape[1], 1), axis=0)
    return p & (rank < k)


@pytest.mark.parametrize("desc", [True, False])
def test_first_k_equals_the_full_sort(desc: bool) -> None:
    rng = np.random.default_rng(7)
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 2.0, -1.0]
    for _ in range(1500):
        m, T = int(rng.integers(2, 25)), int(rng.integers(1, 6))
        kind = rng.integers(0, 3)
        x = (rng.normal(size=(m, T)) if kind == 0 else
             rng.integers(-3, 3, size=(m, T)).astype(float) if kind == 1 else
             rng.choice(specials, size=(m, T)))
        p = rng.random((m, T)) < rng.uniform(0.2, 1.0)
        k = int(rng.integers(-1, m + 3))
        assert (_first_k(x, p, k, desc) == by_full_sort(x, p, k, desc)).all(), (x, p, k)


class Mem:
    def __init__(self) -> None:
        ts = np.arange(0, 600_001, 15_000, dtype=np.int64)
        vals = [np.full(len(ts), float(i % 3)) for i in range(6)]  # ties: three values, two rows each
        vals[5][::4] = np.nan
        self.series = [Series((("__name__", "m"), ("i", str(i))), ts, v) for i, v in enumerate(vals)]

    def select(self, matchers, mint, maxt):
        return [s for s in self.series if matches_all(s.labels, matchers)]


def test_topk_ties_and_nan_through_the_engine() -> None:
    eng = Engine(EngineOptions())

    def rows(q: str, t: int) -> list[str]:
        return sorted(dict(lbls)["i"] for lbls, _, _ in eng.instant(Mem(), q, t).series)
    assert rows("topk(3, m)", 585_000) == ["1", "2", "5"]  # the two 2s, then the first of the 1s
    assert rows("topk(3, m)", 600_000) == ["1", "2", "4"]  # row 5 is NaN here: numbers first
    assert rows("topk(6, m)", 600_000) == ["0", "1", "2", "3", "4", "5"]  # NaN once room is left
    assert rows("bottomk(2, m)", 600_000) == ["0", "3"]
    rng = eng.range(Mem(), "topk(3, m)", 0, 600_000, 15_000)
    assert sum(len(ts) for _, ts, _ in rng.series) == 3 * 41
