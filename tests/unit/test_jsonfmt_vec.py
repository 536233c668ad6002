"""The bulk JSON number formatters give exactly the per-value spellings (Prometheus's)."""
from __future__ import annotations

import numpy as np

from querier.jsonfmt import format_value, format_values_vec, points_json, ts_fragment, ts_fragments_vec

EDGES = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-4, 9.99999e-5, 1e16, 9999999999999998.0, 2.0**53,
         2.0**53 + 2, -2.0**53, 1e21, 1e-6, 1e-7, 0.1 + 0.2, 5e-324, 1.7976931348623157e308, -1.5, 3.0]


def test_values_match_format_value_everywhere():
    rng = np.random.default_rng(0)
    arrays = [np.array(EDGES), rng.normal(0, 1, 20000), rng.normal(0, 1e6, 20000).round(2),
              rng.integers(-10**6, 10**6, 20000).astype(float), 10.0 ** rng.uniform(-12, 25, 20000),
              -(10.0 ** rng.uniform(-12, 25, 20000)), np.zeros(0), np.array([-0.0])]
    for arr in arrays + [np.concatenate(arrays)]:
        assert format_values_vec(arr) == [format_value(v) for v in arr.tolist()]


def test_timestamps_match_ts_fragment():
    rng = np.random.default_rng(1)
    for ts in (rng.integers(-10**13, 10**13, 20000), np.arange(-3000, 3000), np.arange(0, 10**7, 1000),
               np.zeros(0, dtype=np.int64)):
        assert ts_fragments_vec(ts) == [ts_fragment(t) for t in ts.tolist()]


def test_points_json_is_the_matrix_values_array():
    ts = np.array([1_700_000_000_000, 1_700_000_015_500], dtype=np.int64)
    assert points_json(ts, np.array([1.0, 0.25])) == b'[[1700000000,"1"],[1700000015.500,"0.25"]]'
    assert points_json(ts[:0], np.zeros(0)) == b"[]"


def _reference(ts: np.ndarray, vals: np.ndarray) -> bytes:
    return ("[" + ",".join(f'[{ts_fragment(t)},"{format_value(v)}"]'
                           for t, v in zip(ts.tolist(), vals.tolist())) + "]").encode()


def test_points_json_matches_the_per_point_spelling():
    """The C path (orjson's digits re-spelt) and its Python fallback give Prometheus's text for
    every class of value: whole, fractions, the 1e-6 and 1e21 switches to exponent form, NaN/Inf,
    negative zero and negative or sub-second timestamps."""
    rng = np.random.default_rng(2)
    n = 6000
    ts = np.sort(rng.integers(-10**13, 10**13, n))
    arrays = [rng.normal(0, 1, n), rng.normal(0, 1e6, n).round(2), rng.integers(-10**6, 10**6, n).astype(float),
              10.0 ** rng.uniform(-12, 25, n), -(10.0 ** rng.uniform(-8, -3, n)), rng.exponential(3.0, n).cumsum(),
              10.0 ** rng.uniform(-6.5, -5.5, n), 10.0 ** rng.uniform(15, 17, n)]
    for arr in arrays:
        for k in range(0, n, 1000):  # most slices hold no fallback value, so the C path runs
            assert points_json(ts[k:k + 1000], arr[k:k + 1000]) == _reference(ts[k:k + 1000], arr[k:k + 1000])
    for v in EDGES:
        assert points_json(ts[:3], np.array([1.5, v, 2.0])) == _reference(ts[:3], np.array([1.5, v, 2.0])), v
