"""Binary-operator fill modifiers (Prometheus 3.14 promql-binop-fill-modifiers): edge cases
beyond the upstream fill-modifier.test script, with expectations derived from Prometheus's
VectorBinop (fill samples carry the match labels; matches are judged per step)."""
from __future__ import annotations

import math

import pytest

from querier.promql import Engine, EngineOptions, PromQLError
from querier.promql.types import PROMQL_FEATURES

from test_promql_engine import L, mk, vec

E = Engine(EngineOptions(features=PROMQL_FEATURES))


def test_two_unmatched_left_series_of_one_group_need_group_left():
    # ignoring(job): both left series fall into the match group {instance="a"}; filled, they
    # collide just as two matched ones would.
    q = mk((L(__name__="l", job="x", instance="a"), ([0], [1.0])),
           (L(__name__="l", job="y", instance="a"), ([0], [2.0])),
           (L(__name__="r", instance="b"), ([0], [3.0])))
    with pytest.raises(PromQLError, match="many-to-one matching must be explicit"):
        E.instant(q, "l + ignoring(job) fill(0) r", 0)
    got = vec(E.instant(q, "l + ignoring(job) group_left fill(0) r", 0))
    assert got == {(("instance", "a"), ("job", "x")): 1.0, (("instance", "a"), ("job", "y")): 2.0,
                   (("instance", "b"),): 3.0}


def test_fill_left_row_takes_group_labels_from_its_one_side_series():
    q = mk((L(__name__="req", status="200", method="GET"), ([0], [1.0])),
           (L(__name__="lim", status="500", owner="b"), ([0], [50.0])))
    got = vec(E.instant(q, "req + on(status) group_left(owner) fill_left(0) lim", 0))
    # req{status="200"} has no match and no fill_right: dropped. lim{status="500"} is filled
    # on the left with the match labels {status="500"}; owner comes from lim itself.
    assert got == {(("owner", "b"), ("status", "500")): 50.0}


def test_duplicate_one_side_is_an_error_with_fill_even_when_other_side_is_empty():
    q = mk((L(__name__="r", job="x", i="1"), ([0], [1.0])),
           (L(__name__="r", job="x", i="2"), ([0], [2.0])))
    assert vec(E.instant(q, "nothing + on(job) r", 0)) == {}
    with pytest.raises(PromQLError, match="found duplicate series for the match group"):
        E.instant(q, "nothing + on(job) fill(0) r", 0)


def test_fill_matches_per_step_in_range_queries():
    q = mk((L(__name__="a", k="1"), ([0, 120_000], [1.0, 3.0])),
           (L(__name__="b", k="1"), ([60_000], [20.0])))
    r = E.range(q, "a - fill(100) b", 0, 120_000, 60_000)
    ((lbls, ts, vals),) = r.series
    assert lbls == (("k", "1"),) and list(ts) == [0, 60_000, 120_000]
    # b is missing only at 0; lookback keeps a@0 at 60s and b@60s at 120s.
    assert list(vals) == [1.0 - 100, 1.0 - 20.0, 3.0 - 20.0]


def test_fill_nan_comparison_keeps_the_fill_sample_value():
    q = mk((L(__name__="a", k="1"), ([0], [1.0])), (L(__name__="b", k="2"), ([0], [2.0])))
    assert vec(E.instant(q, "a == fill(NaN) b", 0)) == {}
    got = vec(E.instant(q, "a != fill(NaN) b", 0))  # the left value is kept: the fill where filled
    assert got[(("__name__", "a"), ("k", "1"))] == 1.0 and math.isnan(got[(("k", "2"),)]) and len(got) == 2
    got = vec(E.instant(q, "a != bool fill(NaN) b", 0))
    assert got == {(("k", "1"),): 1.0, (("k", "2"),): 1.0}
    got = vec(E.instant(q, "a + fill_left(NaN) b", 0))
    assert list(got) == [(("k", "2"),)] and math.isnan(got[(("k", "2"),)])


@pytest.mark.parametrize("query, msg", [
    ("a and fill(0) b", "not allowed for set operators"),
    ("1 + fill(0) a", "only allowed between instant vectors"),
])
def test_fill_where_it_cannot_apply_is_refused_not_ignored(query, msg):
    q = mk((L(__name__="a"), ([0], [1.0])), (L(__name__="b"), ([0], [2.0])))
    with pytest.raises(PromQLError, match=msg) as ex:
        E.instant(q, query, 0)
    assert ex.value.kind == "bad_data"
