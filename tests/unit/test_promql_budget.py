"""One sample budget per query (Prometheus's --query.max-samples): the points a query holds at
once count -- each node's output (per-step vectors, series x steps of a range query), subquery
steps, a range function's window(s), a plain matrix selector's samples -- and the query fails
before that memory is spent. Raw samples a selector reads only on the way to a node's output do
not all count at once, as in Prometheus (it buffers one series' window at a time)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from querier.promql import Engine, EngineOptions, PromQLError, Series
from querier.promql.types import TOO_MANY_SAMPLES
from receiver.tsdb.labels import matches_all


class Mem:
    """n series "m", one sample every ``every`` ms over [0, span]."""

    def __init__(self, n: int, span: int = 3_600_000, every: int = 60_000) -> None:
        ts = np.arange(0, span + 1, every, dtype=np.int64)
        self.series = [Series((("__name__", "m"), ("i", str(i))), ts, np.full(len(ts), float(i)))
                       for i in range(n)]

    def select(self, matchers, mint, maxt):
        return [s for s in self.series if matches_all(s.labels, matchers)]


def refused(fn) -> None:
    with pytest.raises(PromQLError) as e:
        fn()
    assert e.value.kind == "execution" and e.value.msg == TOO_MANY_SAMPLES


def test_default_is_prometheus_default():
    assert EngineOptions().max_samples == 50_000_000


def test_subquery_steps_count():
    # 20 series x 360,000 subquery steps: 7.2 M points held by the inner selector.
    eng = Engine(EngineOptions(max_samples=100_000))
    refused(lambda: eng.instant(Mem(20), "max_over_time(m[1h:10ms])", 3_600_000))
    refused(lambda: eng.instant(Mem(1), "max_over_time(vector(1)[1d:1ms])", 86_400_000))
    assert len(eng.instant(Mem(20), "max_over_time(m[1h:1m])", 3_600_000).series) == 20


def test_per_step_vectors_count_in_range_queries():
    # count(m) over 50 series at 601 steps holds 50 x 601 per-step values.
    eng = Engine(EngineOptions(max_samples=20_000))
    refused(lambda: eng.range(Mem(50), "count(m)", 0, 3_600_000, 6_000))
    assert len(Engine(EngineOptions(max_samples=40_000)).range(Mem(50), "count(m)", 0, 3_600_000,
                                                               6_000).series) == 1


def test_held_points_are_released_not_summed():
    # 30 chained additions each make a 10 x 61 vector; only a few are alive at any moment.
    q = " + ".join(["m"] * 30)
    res = Engine(EngineOptions(max_samples=10 * 61 * 4)).range(Mem(10), q, 0, 3_600_000, 60_000)
    assert len(res.series) == 10


def test_selected_raw_samples_do_not_count_all_at_once():
    """Prometheus's engine counts a range query's output (10 series x 61 steps = 610 points) plus
    the window it is reading (one series' 10 min = 600 samples), not the 36,010 samples per
    series x 10 the selectors read: max-samples 5,000 answers these; 500 (< the output) does not."""
    q = Mem(10, every=1_000)
    eng = Engine(EngineOptions(max_samples=5_000))
    for expr in ("m", "rate(m[10m])", "sum(rate(m[10m]))", "max_over_time(m[10m])", "m + m"):
        assert eng.range(q, expr, 0, 3_600_000, 60_000).series, expr
    assert eng.range(q, "absent_over_time(m[10m])", 0, 3_600_000, 60_000).series == []
    assert len(eng.instant(q, "rate(m[10m])", 3_600_000).series) == 10
    small = Engine(EngineOptions(max_samples=500))
    for expr in ("m", "rate(m[10m])", "max_over_time(m[10m])"):
        refused(lambda: small.range(q, expr, 0, 3_600_000, 60_000))
    # the widest window alone is past the limit: 1 h of 1 s samples = 3,600 > 3,000
    refused(lambda: Engine(EngineOptions(max_samples=3_000)).range(Mem(1, every=1_000), "rate(m[1h])",
                                                                    0, 3_600_000, 600_000))
    # a plain matrix selector's samples are the query's value: all of them are held
    refused(lambda: eng.instant(q, "m[10m]", 3_600_000))
    assert len(Engine(EngineOptions(max_samples=7_000)).instant(q, "m[10m]", 3_600_000).series) == 10


def test_materialised_windows_count():
    # one series, 1 sample/s for 2 h; a 1 h window at each of 721 steps is 2.6 M window points
    q = Mem(1, span=7_200_000, every=1_000)
    eng = Engine(EngineOptions(max_samples=1_000_000))
    refused(lambda: eng.range(q, "quantile_over_time(0.5, m[1h])", 3_600_000, 7_200_000, 5_000))
    # functions that reduce windows in place hold only their output
    assert len(eng.range(q, "max_over_time(m[1h])", 3_600_000, 7_200_000, 5_000).series) == 1


def test_count_values_rows_count():
    eng = Engine(EngineOptions(max_samples=5_000))
    refused(lambda: eng.range(Mem(1, every=1_000), 'count_values("v", timestamp(m))', 0,
                              3_600_000, 1_000))


_CHILD = """
import sys, tracemalloc
sys.path.insert(0, {tests!r})
from unit.test_promql_budget import Mem
from querier.promql import Engine, EngineOptions, PromQLError
eng = Engine(EngineOptions(max_samples=1_000_000))
tracemalloc.start()
for q, t in (("max_over_time(vector(1)[1h:1ms])", 3_600_000), ("max_over_time(m[1h:10ms])", 3_600_000)):
    try:
        eng.instant(Mem(20), q, t)
        print("accepted", q)
    except PromQLError as e:
        pass
print(tracemalloc.get_traced_memory()[1])
"""


def test_peak_memory_stays_within_the_budget():
    """Refused before allocating: peak traced memory stays near the budget (1 M points), far
    below what the queries would take (3.6 M and 7.2 M points, ~30 bytes each)."""
    import os
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", _CHILD.format(tests=tests)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-800:]
    lines = r.stdout.split()
    assert "accepted" not in lines, r.stdout
    assert int(lines[-1]) < 48 * 1024 * 1024, f"peak {int(lines[-1]) / 2**20:.0f} MiB"
