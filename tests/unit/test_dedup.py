"""Replica deduplication: chain for identical receive replicas, Thanos's penalty algorithm for
HA Prometheus pairs (checked against a sample-by-sample transcription), counter adjustment, and
the querier's merge of replica series once their replica labels are stripped."""
from __future__ import annotations

import numpy as np
import pytest

from querier.dedup import chain, penalty, penalty_reference, strip_labels
from querier.fanout import merge_raw_series
from receiver.tsdb.chunkenc import encode
from storeapi.client import RawSeries


def rep(ts, vals=None):
    ts = np.asarray(ts, dtype=np.int64)
    return ts, (np.asarray(vals, dtype=np.float64) if vals is not None else ts / 1000.0)


def test_chain_is_the_union_by_timestamp():
    ts, vals = chain([rep([0, 10, 20], [1, 2, 3]), rep([10, 30], [9, 4])])
    assert ts.tolist() == [0, 10, 20, 30]
    assert vals.tolist() == [1, 2, 3, 4]


def test_penalty_follows_one_replica_and_fills_its_gap_from_the_other():
    a = rep(list(range(0, 60_000, 15_000)) + list(range(150_000, 300_000, 15_000)))
    b = rep(list(range(7_000, 300_000, 15_000)))
    ts, _ = penalty([a, b])
    # Before any delta is known the other replica gets a 5 s penalty only, so B (7 s later)
    # takes over at once; from then on one replica is followed: no doubled sampling rate, and
    # A's gap is never visible.
    assert ts[:3].tolist() == [0, 7_000, 22_000]
    assert set(range(67_000, 150_000, 15_000)) <= set(ts.tolist())
    assert (np.diff(ts)[1:] >= 14_000).all()
    assert np.diff(ts).max() <= 16_000
    # A gap in the followed replica B: A takes over once the penalty (twice B's last delta)
    # has passed, so the hole shrinks from 90 s to under three scrape intervals.
    b_gap = rep(list(range(7_000, 100_000, 15_000)) + list(range(187_000, 300_000, 15_000)))
    ts, _ = penalty([rep(range(0, 300_000, 15_000)), b_gap])
    assert 135_000 in ts.tolist() and np.diff(ts).max() == 38_000
    assert (np.diff(ts)[1:] >= 14_000).all()


def test_penalty_of_identical_replicas_is_one_copy():
    a = rep(range(0, 100_000, 10_000))
    ts, vals = penalty([a, a, a])
    assert ts.tolist() == a[0].tolist() and vals.tolist() == a[1].tolist()


def test_penalty_counter_adjustment_hides_replica_offsets():
    # Replica b's counter started later: its values are 100 lower. Switching to it must not
    # look like a reset.
    a = rep([0, 15_000, 30_000], [1000, 1010, 1020])
    b = rep([5_000, 20_000, 35_000, 50_000, 65_000], [905, 915, 925, 935, 945])
    ts, vals = penalty([a, b], counter=True)
    assert (np.diff(vals) >= 0).all(), vals
    ts2, vals2 = penalty([a, b], counter=False)
    assert ts.tolist() == ts2.tolist() and (np.diff(vals2) < 0).any()


@pytest.mark.parametrize("seed", range(6))
def test_penalty_matches_the_sample_by_sample_algorithm(seed):
    rng = np.random.default_rng(seed)
    for _ in range(300):
        reps = []
        for _ in range(rng.integers(2, 5)):
            n = rng.integers(0, 60)
            gaps = rng.choice([15_000, 15_000, 15_000, 14_000, 16_000, 60_000, 1_000, 400], size=n)
            ts = np.cumsum(gaps) + rng.integers(0, 20_000)
            vals = np.cumsum(rng.random(n) * 10) + (rng.random() * 50 if rng.random() < 0.5 else 0)
            reps.append((ts.astype(np.int64), vals))
        for counter in (False, True):
            got, want = penalty(reps, counter), penalty_reference(reps, counter)
            assert got[0].tolist() == want[0].tolist()
            np.testing.assert_allclose(got[1], want[1])


def test_strip_labels():
    assert strip_labels((("a", "1"), ("replica", "x"), ("z", "2")), frozenset({"replica"})) == \
        (("a", "1"), ("z", "2"))


def test_merge_raw_series_deduplicates_replicas_with_either_function():
    lbls = (("__name__", "m"), ("job", "j"))
    r0 = RawSeries(lbls, [(0, 45_000, encode([0, 15_000, 30_000, 45_000], [1, 2, 3, 4]))])
    r1 = RawSeries(lbls, [(0, 45_000, encode([0, 15_000, 30_000, 45_000], [1, 2, 3, 4]))])
    for func in ("chain", "penalty"):
        out = merge_raw_series([r0, r1], 0, 100_000, func)
        assert len(out) == 1
        assert out[0].ts.tolist() == [0, 15_000, 30_000, 45_000]
        assert out[0].vals.tolist() == [1, 2, 3, 4]


def test_store_selection_by_time_range_and_external_labels():
    from querier.endpoints import Info
    from querier.fanout import store_may_match
    from receiver.tsdb.labels import Matcher

    info = Info(1000, 2000, [(("region", "eu"), ("tenant_id", "a"))])
    assert store_may_match(info, 1500, 3000, [])
    assert not store_may_match(info, 2001, 3000, [])  # entirely after the store's data
    assert not store_may_match(info, 0, 999, [])       # entirely before
    assert store_may_match(info, 0, 5000, [Matcher("=", "tenant_id", "a"), Matcher("=", "job", "x")])
    assert not store_may_match(info, 0, 5000, [Matcher("=", "tenant_id", "b")])
    assert not store_may_match(info, 0, 5000, [Matcher("=~", "region", "us.*")])
    assert store_may_match(None, 0, 1, [Matcher("=", "tenant_id", "zz")])  # unknown: ask it
    assert store_may_match(Info(0, 10, []), 0, 5, [Matcher("=", "tenant_id", "zz")])
    # label sets where none, one or all matchers name an external label; a later set matching
    two = Info(0, 10, [(("region", "eu"),), (("region", "us"), ("tenant_id", "b"))])
    assert store_may_match(two, 0, 5, [Matcher("=", "__name__", "x"), Matcher("=", "i", "1")])
    assert store_may_match(two, 0, 5, [Matcher("=", "__name__", "x"), Matcher("=", "region", "us")])
    assert store_may_match(two, 0, 5, [Matcher("=", "region", "us"), Matcher("=", "tenant_id", "b")])
    assert not store_may_match(two, 0, 5, [Matcher("=", "region", "us"),
                                           Matcher("=", "tenant_id", "a")])
    assert not store_may_match(two, 0, 5, [Matcher("!~", "region", "eu|us")])
    assert store_may_match(two, 0, 5, [Matcher("=", "tenant_id", "")])  # "eu" has no tenant_id


def test_engine_tells_the_store_which_function_a_selector_feeds():
    """Thanos adjusts counter resets during penalty dedup only under rate/increase/irate/resets;
    the engine passes the function name down with each select."""
    import numpy as np

    from querier.promql import Engine, Series

    class Recording:
        def __init__(self):
            self.funcs = []

        def select(self, matchers, mint, maxt):  # pragma: no cover - select_with_hints wins
            raise AssertionError("select_with_hints should be used")

        def select_with_hints(self, matchers, mint, maxt, func=None, range_ms=0):
            self.funcs.append(func)
            ts = np.arange(0, 600_000, 15_000, dtype=np.int64)
            return [Series((("__name__", "x"),), ts, np.arange(len(ts), dtype=np.float64))]

    q = Recording()
    e = Engine()
    for query in ("rate(x[5m])", "x", "sum(increase(x[1m]))", "max_over_time(x[1m])", "resets(x[5m])"):
        e.instant(q, query, 300_000)
    assert q.funcs == ["rate", None, "increase", "max_over_time", "resets"]


def test_overlapping_chunks_of_one_store_are_merged_one_sample_per_timestamp():
    """A store gateway serving an in-order block and an out-of-order block of the same range
    sends one series with overlapping chunks: the querier decodes them into time order, one
    sample per timestamp (the first chunk's on a tie)."""
    lbls = (("__name__", "m"), ("job", "j"))
    in_order = (0, 60_000, encode([0, 30_000, 60_000], [1, 2, 3]))
    late = (15_000, 45_000, encode([15_000, 30_000, 45_000], [7, 2, 8]))
    out = merge_raw_series([RawSeries(lbls, [in_order, late])], 0, 100_000)
    assert out[0].ts.tolist() == [0, 15_000, 30_000, 45_000, 60_000]
    assert out[0].vals.tolist() == [1, 7, 2, 8, 3]
