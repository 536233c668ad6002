"""Start timestamps and type-and-unit labels behind their feature flags: on, they act as in
Prometheus 3.14's scripts; off, the engine answers as a default Prometheus 3.14 server."""
from __future__ import annotations

import numpy as np
import pytest

from querier.promql import Engine, EngineOptions, PromQLError, Series
from querier.promql.types import EXPERIMENTAL_FUNCTIONS, TYPE_AND_UNIT_LABELS, USE_START_TIMESTAMPS
from receiver.tsdb.labels import Matcher, matches_all


class Mem:
    def __init__(self, *series: Series) -> None:
        self.series = list(series)

    def select(self, matchers: list[Matcher], mint: int, maxt: int) -> list[Series]:
        return [s for s in self.series if matches_all(s.labels, matchers)]


def S(labels: dict, ts: list[int], vals: list[float], sts: list[int] | None = None) -> Series:
    return Series(tuple(sorted(labels.items())), np.array(ts, dtype=np.int64), np.array(vals, dtype=np.float64),
                  None, None if sts is None else np.array(sts, dtype=np.int64))


def vec(res) -> dict:
    assert res.kind == "vector"
    return {tuple(l): v for l, _, v in res.series}


# A delta counter (OTel style): every sample counts 60 since the previous sample's time.
TS = [60_000 * k for k in range(2, 12)]
DELTA = Mem(S({"__name__": "d_total"}, TS, [60.0] * len(TS), [t - 60_000 for t in TS]))
ON = Engine(EngineOptions(features=frozenset((USE_START_TIMESTAMPS, EXPERIMENTAL_FUNCTIONS))))
OFF = Engine(EngineOptions(features=frozenset((EXPERIMENTAL_FUNCTIONS,))))


def test_start_timestamps_turn_a_delta_counter_into_increases_only_with_the_feature():
    assert vec(ON.instant(DELTA, "increase(d_total[5m])", 600_000)) == {(): pytest.approx(300.0)}
    assert vec(ON.instant(DELTA, "resets(d_total[5m])", 600_000)) == {(): 4.0}
    # a default server reads no start timestamps: a constant counter did not increase
    assert vec(OFF.instant(DELTA, "increase(d_total[5m])", 600_000)) == {(): 0.0}
    assert vec(OFF.instant(DELTA, "resets(d_total[5m])", 600_000)) == {(): 0.0}


def test_subquery_and_plain_series_carry_no_start_timestamps():
    assert vec(ON.instant(DELTA, "increase(d_total[5m:1m])", 600_000)) == {(): 0.0}
    plain = Mem(S({"__name__": "c_total"}, TS, [60.0 * k for k in range(len(TS))]))
    assert vec(ON.instant(plain, "increase(c_total[5m])", 600_000)) == vec(
        OFF.instant(plain, "increase(c_total[5m])", 600_000))


def test_start_timestamp_function():
    assert vec(ON.instant(DELTA, "start_timestamp(d_total)", 600_000)) == {(): 540.0}
    assert vec(OFF.instant(DELTA, "start_timestamp(d_total)", 600_000)) == {}  # feature off: no STs
    assert vec(ON.instant(DELTA, "start_timestamp(d_total * 1)", 600_000)) == {}
    with pytest.raises(PromQLError, match='function "start_timestamp" is not enabled'):
        Engine().instant(DELTA, "start_timestamp(d_total)", 600_000)


def test_start_time_overlap_is_warned():
    q = Mem(S({"__name__": "o_total"}, [120_000, 180_000, 240_000], [60.0, 120.0, 180.0],
              [0, 60_000, 120_000]))  # each start reaches back before the previous sample
    r = ON.instant(q, "rate(o_total[3m])", 240_000)
    assert any('start time that overlaps with previous sample timestamp for metric "o_total"' in w
               for w in r.warnings)
    assert not OFF.instant(q, "rate(o_total[3m])", 240_000).warnings


TYPED = Mem(S({"__name__": "m", "__type__": "gauge", "__unit__": "seconds", "job": "a"}, [0], [5.0]))


@pytest.mark.parametrize("features", [frozenset(), frozenset((TYPE_AND_UNIT_LABELS,))])
def test_type_and_unit_labels_go_with_the_name(features):
    """Prometheus 3.14 drops __type__/__unit__ wherever it drops __name__, flag or not."""
    e = Engine(EngineOptions(features=features))
    assert vec(e.instant(TYPED, "-m", 0)) == {(("job", "a"),): -5.0}
    assert vec(e.instant(TYPED, "m + 1", 0)) == {(("job", "a"),): 6.0}
    assert list(vec(e.instant(TYPED, "m", 0))) == [tuple(sorted(
        {"__name__": "m", "__type__": "gauge", "__unit__": "seconds", "job": "a"}.items()))]
    assert vec(e.instant(TYPED, 'sum by (job) ({__type__="gauge"})', 0)) == {(("job", "a"),): 5.0}


def test_non_counter_hint_reads_the_type_label_with_the_feature():
    q = Mem(S({"__name__": "x_total", "__type__": "gauge"}, [0, 60_000], [1.0, 2.0]))
    on = Engine(EngineOptions(features=frozenset((TYPE_AND_UNIT_LABELS,))))
    assert on.instant(q, "rate(x_total[2m])", 60_000).infos == [
        'PromQL info: metric might not be a counter, __type__ label is not set to "counter" or "histogram", '
        'got "gauge": "x_total"']
    assert Engine().instant(q, "rate(x_total[2m])", 60_000).infos == []  # the name says counter
