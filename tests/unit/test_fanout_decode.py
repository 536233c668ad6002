"""The querier decodes a store's float series in one C call into columns (a SeriesBatch); every
answer must equal decoding series by series, and the cases it cannot take (replicas, native
histograms, overlapping chunks) still go series by series."""
from __future__ import annotations

import numpy as np

from querier.fanout import merge_raw_series
from querier.promql import Engine
from querier.promql.types import SeriesBatch
from receiver.tsdb.chunkenc import encode
from storeapi.client import RawSeries


def _raw(n: int, plain: bool | None = False) -> list[RawSeries]:
    """n series sent out of label order; some with two chunks, one whose chunks all lie outside
    the queried range, values with staleness-free NaN and resets."""
    out = []
    rng = np.random.default_rng(5)
    for i in reversed(range(n)):
        lbls = (("__name__", "m"), ("i", f"{i:03d}"))
        t0 = 0 if i != 3 else 500_000  # series 3: nothing in [0, 200_000]
        ts = t0 + np.arange(0, 120_000, 15_000, dtype=np.int64) + i
        vals = np.cumsum(rng.random(len(ts)))
        vals[i % len(ts)] = np.nan if i % 4 == 0 else 0.0
        chunks = [(int(ts[0]), int(ts[3]), encode(ts[:4], vals[:4])),
                  (int(ts[4]), int(ts[-1]), encode(ts[4:], vals[4:]))]
        out.append(RawSeries(lbls, chunks, plain))
    return out


def _same(got, want) -> None:
    got, want = list(got), list(want)
    assert [s.labels for s in got] == [s.labels for s in want]
    for g, w in zip(got, want):
        assert g.ts.tolist() == w.ts.tolist()
        np.testing.assert_array_equal(g.vals, w.vals)


def test_distinct_float_series_decode_as_one_batch_equal_to_series_by_series():
    got = merge_raw_series(_raw(12), 30_000, 200_000)
    assert isinstance(got, SeriesBatch)
    assert len(got) == 11 and got.labels == sorted(got.labels)  # the empty one dropped
    _same(got, merge_raw_series(_raw(12, None), 30_000, 200_000))


def test_replicas_histograms_unknown_and_overlaps_go_series_by_series():
    lbls = (("__name__", "m"),)
    a = RawSeries(lbls, [(0, 30_000, encode([0, 30_000], [1, 2]))], False)
    b = RawSeries(lbls, [(0, 30_000, encode([0, 15_000], [1, 5]))], False)
    assert isinstance(merge_raw_series([a, b], 0, 100_000), list)  # a replica pair
    over = RawSeries(lbls, [(0, 60_000, encode([0, 30_000, 60_000], [1, 2, 3])),
                            (15_000, 45_000, encode([15_000, 30_000, 45_000], [7, 2, 8]))], False)
    got = merge_raw_series([over], 0, 100_000)
    assert isinstance(got, list) and got[0].ts.tolist() == [0, 15_000, 30_000, 45_000, 60_000]
    assert isinstance(merge_raw_series(_raw(3, None), 0, 100_000), list)


def test_engine_answers_equal_from_a_batch_and_from_series():
    class Q:
        def __init__(self, plain):
            self.plain = plain

        def select(self, matchers, mint, maxt):
            return merge_raw_series(_raw(12, self.plain), mint, maxt)

    e = Engine()
    for q in ("sum by (i) (rate(m[1m]))", "count(m)", "m", "max_over_time(m[45s])", "topk(3, m)"):
        want = e.range(Q(None), q, 0, 200_000, 10_000)
        got = e.range(Q(False), q, 0, 200_000, 10_000)
        assert [s[0] for s in got.series] == [s[0] for s in want.series], q
        for g, w in zip(got.series, want.series):
            assert g[1].tolist() == w[1].tolist()
            np.testing.assert_array_equal(g[2], w[2])


def test_decode_series_refuses_malformed_chunks_without_crashing():
    """Chunks come from a store over the network: short, truncated or wrongly shaped ones fail
    the decode with ValueError (as series-by-series decoding does), never read past a buffer."""
    import pytest

    from receiver.tsdb.chunkenc import decode_series
    good = encode(np.arange(0, 100_000, 10_000, dtype=np.int64), np.arange(10.0))
    assert decode_series([[good], [(0, 1, good)], []], 0, 50_000)[2].tolist() == [0, 6, 12, 12]
    for bad in ([[b"\x00"]], [[good[:len(good) // 2]]], [[(0, good)]], [[b"\xff\xff" + good[2:]]],
                [None], [[123]]):
        with pytest.raises((ValueError, TypeError)):
            decode_series(bad, 0, 1 << 40)


def test_series_in_store_order_decode_as_the_same_batch_without_a_sort():
    """A store's answer comes sorted by labels: taken in its order (one comparison per pair of
    neighbours, no sort), the batch equals the one of the same series out of order; a repeated
    label set among sorted ones (replicas) still goes series by series."""
    in_order = _raw(12)[::-1]
    assert [s.labels for s in in_order] == sorted(s.labels for s in in_order)
    got = merge_raw_series(in_order, 30_000, 200_000)
    assert isinstance(got, SeriesBatch)
    _same(got, merge_raw_series(_raw(12), 30_000, 200_000))
    _same(got, merge_raw_series(_raw(12, None), 30_000, 200_000))
    twice = in_order[:5] + in_order[4:]
    assert isinstance(merge_raw_series(twice, 30_000, 200_000), list)
