"""Fill modifiers, anchored/smoothed selectors and trim operators through the whole engine
(parser included): refused without their feature flags, and edge cases the upstream scripts
do not cover."""
from __future__ import annotations

import math

import numpy as np
import pytest

from querier.promql import Engine, EngineOptions, PromQLError, Series
from querier.promql import nhist as nh
from querier.promql.types import PROMQL_FEATURES
from receiver.tsdb.labels import matches_all

from test_promql_engine import STALE, L, mk, vec

ON = Engine(EngineOptions(features=PROMQL_FEATURES))
OFF = Engine(EngineOptions())
Q = mk((L(__name__="a", k="1"), ([0, 60_000], [1.0, 2.0])), (L(__name__="b", k="2"), ([0], [3.0])))


@pytest.mark.parametrize("query, msg", [
    ("a + fill(0) b", "binop fill modifiers are experimental and not enabled"),
    ("rate(a[1m] anchored)", "anchored modifier is experimental and not enabled"),
    ("a smoothed", "smoothed modifier is experimental and not enabled"),
])
def test_syntax_behind_a_flag_is_refused_without_it(query, msg):
    with pytest.raises(PromQLError, match=msg) as ex:
        OFF.instant(Q, query, 60_000)
    assert ex.value.kind == "bad_data"
    ON.instant(Q, query, 60_000)  # and evaluated with it


def test_smoothed_selector_interpolates_across_a_stale_marker():
    # Prometheus's range iteration skips stale markers: the step at 10s lies between 1@0 and 3@20s.
    q = mk((L(__name__="m"), ([0, 10_000, 20_000], [1.0, STALE, 3.0])))
    assert vec(ON.instant(q, "m smoothed", 10_000)) == {(("__name__", "m"),): 2.0}
    assert vec(ON.instant(q, "m", 10_000)) == {}


def test_instant_anchored_range_selector_returns_the_framed_window():
    q = mk((L(__name__="m"), ([0, 60_000, 90_000, 150_000], [1.0, 2.0, 3.0, 4.0])))
    r = ON.instant(q, "m[1m] anchored", 120_000)
    ((lbls, ts, vals),) = r.series
    assert r.kind == "matrix" and list(ts) == [60_000, 90_000, 120_000] and list(vals) == [2.0, 3.0, 3.0]


class HistQ:
    def __init__(self, h: nh.H) -> None:
        self.s = Series((("__name__", "h"),), np.array([0], dtype=np.int64), np.array([np.nan]),
                        np.array([h], dtype=object))
        self.f = Series((("__name__", "f"),), np.array([0], dtype=np.int64), np.array([5.0]))

    def select(self, matchers, mint, maxt):
        return [s for s in (self.s, self.f) if matches_all(s.labels, matchers)]


def test_trim_keeps_the_metric_name_and_drops_floats_with_an_info():
    h = nh.H(schema=nh.CUSTOM, cv=(2.0, 4.0), count=8.0, sum=20.0, pos={0: 1.0, 1: 2.0, 2: 5.0})
    r = ON.instant(HistQ(h), "{__name__=~'h|f'} </ 3", 0)
    ((lbls, _, got),) = r.series
    assert lbls == (("__name__", "h"),) and got.count == 2.0 and math.isclose(got.sum, 3.5)
    assert r.infos == ['PromQL info: incompatible sample types encountered for binary operator "</": float </ float']
    # histogram_count reads the trimmed buckets, not a stats-only view
    assert vec(ON.instant(HistQ(h), "histogram_count(h >/ 3)", 0)) == {(): 6.0}
    with pytest.raises(PromQLError, match='operator "</" not allowed for Scalar operations'):
        ON.instant(HistQ(h), "1 </ 2", 0)


@pytest.mark.parametrize("query", ["a smoothed", "rate(a[1m] smoothed)", "a[1m] smoothed"])
def test_smoothing_past_the_end_of_time_is_refused_not_wrapped(query):
    # smoothing looks a lookback past the evaluation time: near int64's end that would wrap
    with pytest.raises(PromQLError, match="evaluation time out of range") as ex:
        ON.instant(Q, query, 2**63 - 10)
    assert ex.value.kind == "bad_data"
