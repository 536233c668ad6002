"""Evaluation checks its deadline cooperatively: past EngineOptions.timeout_s a query raises
PromQLError("timeout") from inside long loops instead of running to the end."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from querier.promql import Engine, EngineOptions, PromQLError, Series
from receiver.tsdb.labels import matches_all


class Mem:
    def __init__(self, n: int) -> None:
        ts = np.arange(0, 3_600_001, 1_000, dtype=np.int64)
        rng = np.random.default_rng(1)
        self.series = [Series((("__name__", "m"), ("i", str(i))), ts, rng.random(len(ts)))
                       for i in range(n)]

    def select(self, matchers, mint, maxt):
        return [s for s in self.series if matches_all(s.labels, matchers)]


def run_bounded(fn, wait: float = 120.0):
    """fn() in a thread; what it returned or raised (the wait bounds a hang, it times nothing)."""
    out: list = []

    def body():
        try:
            out.append(("ok", fn()))
        except Exception as e:  # noqa: BLE001 -- handed to the test
            out.append(("err", e))
    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(wait)
    assert out, "evaluation did not stop"
    return out[0]


@pytest.mark.parametrize("q", [
    "quantile_over_time(0.5, m[10m])",          # one node, a long loop over series
    "max_over_time(quantile_over_time(0.5, m[10m])[30m:10s])",  # inside a subquery
])
def test_heavy_query_stops_at_its_deadline(q):
    data = Mem(300)  # each series' windows take milliseconds; all of them, seconds
    eng = Engine(EngineOptions(timeout_s=0.3))
    kind, got = run_bounded(lambda: eng.range(data, q, 1_800_000, 3_600_000, 10_000))
    assert kind == "err", "the query ran to completion past its deadline"
    assert isinstance(got, PromQLError)
    assert (got.kind, got.msg) == ("timeout", "query timed out in expression evaluation")


def test_within_deadline_answers():
    kind, got = run_bounded(lambda: Engine(EngineOptions(timeout_s=60)).range(
        Mem(3), "quantile_over_time(0.5, m[10m])", 1_800_000, 3_600_000, 10_000))
    assert kind == "ok" and len(got.series) == 3


def _holt_reference(v: np.ndarray, sf: float, tf: float) -> float:
    """Prometheus's double exponential smoothing of one window, written as its recurrence."""
    s0 = s1 = v[0]
    b = v[1] - v[0]
    for i in range(1, len(v)):
        if i > 1:
            b = tf * (s1 - s0) + (1 - tf) * b
        s0, s1 = s1, sf * v[i] + (1 - sf) * (s1 + b)
    return s1


def test_holt_winters_advances_all_windows_together():
    """The recurrence runs once per window position for all steps at once (one series with
    day-long windows was millions of Python iterations between two deadline checks)."""
    from querier.promql.rangefuncs import bounds, f_holt
    rng = np.random.default_rng(3)
    ts = np.sort(rng.choice(100_000, 400, replace=False)).astype(np.int64)
    x = rng.normal(size=400) * 1e3
    end = np.arange(0, 120_000, 700, dtype=np.int64)
    lo, hi = bounds(ts, end, 30_000)
    sf, tf = np.full(len(lo), 0.3), np.full(len(lo), 0.7)
    got, ok = f_holt(ts, x, lo, hi, None, [sf, tf])
    assert ok.sum() > 100
    for w in np.nonzero(ok)[0]:
        assert got[w] == _holt_reference(x[lo[w]:hi[w]], 0.3, 0.7)
