"""Extended range selectors (anchored / smoothed): the vectorised window arithmetic against a
plain per-window transcription of Prometheus's extendedRate / pickFirstSampleIndices, over
random series batched together (resets, NaNs, gaps, offsets between series)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from querier.promql import nhist as nh
from querier.promql.engine import Evaluator, _Shared
from querier.promql.functions import _float_range_rows
from querier.promql.rangeext import ANCHORED, EXT_FUNCS, SMOOTHED, Extended, extended_points
from querier.promql.types import EngineOptions, PromQLError
from querier.promql.values import Matrix

LB = 300_000


def ref_rate(ts, x, end, rng, smoothed, counter, rate):
    """extendedRate for one window, written the way Prometheus's Go code reads."""
    lo_t = end - rng - LB
    hi_t = end + (LB if smoothed else 0)
    f = [(t, v) for t, v in zip(ts, x) if lo_t < t <= hi_t]
    if not f:
        return None
    rs, re = end - rng, end
    last = len(f) - 1
    first = max(0, next((i for i in range(last) if f[i][0] > rs), last) - 1)
    if smoothed:
        last = next((i for i in range(last) if f[i][0] >= re), last)
    if f[last][0] <= rs or (smoothed and f[first][0] > re):
        return None

    def interp(p1, p2, t):
        y1, y2 = p1[1], p2[1]
        if counter and y2 < y1:
            y1 = 0.0
        return y1 + (y2 - y1) * (t - p1[0]) / (p2[0] - p1[0])
    left = interp(f[first], f[first + 1], rs) if smoothed and f[first][0] < rs else f[first][1]
    right = interp(f[last - 1], f[last], re) if smoothed and last > 0 and f[last][0] > re else f[last][1]
    res = right - left
    if counter:
        a = first + 1 if f[first][0] <= rs else first
        b = last - 1 if f[last][0] >= re else last
        prev = left
        for _, v in f[a:b + 1]:
            if v < prev:
                res += prev
            prev = v
        if right < prev:
            res += prev
    return res / (rng / 1000) if rate else res


def ref_count(ts, x, end, rng, name):
    f = [(t, v) for t, v in zip(ts, x) if end - rng - LB < t <= end]
    rs = end - rng
    after = next((i for i in range(len(f)) if f[i][0] > rs), len(f))
    if after >= len(f):
        return None
    start = max(0, after - 1)
    c = 0
    for (_, p), (_, q) in zip(f[start:], f[start + 1:]):
        if name == "resets":
            c += q < p
        else:
            c += q != p and not (math.isnan(p) and math.isnan(q))
    return c


def evaluator(steps) -> Evaluator:
    sh = _Shared(None, EngineOptions(), int(steps[0]), int(steps[-1]), time.monotonic() + 60)
    return Evaluator(sh, np.asarray(steps, dtype=np.int64))


@pytest.mark.parametrize("mode, name", [(m, n) for m in (ANCHORED, SMOOTHED) for n in EXT_FUNCS
                                         if m == ANCHORED or n not in ("changes", "resets")])
def test_vectorised_windows_match_the_per_window_definition(mode, name):
    rng_ = np.random.default_rng(7)
    tss, xs = [], []
    for k in range(6):
        n = int(rng_.integers(1, 40))
        ts = np.sort(rng_.choice(np.arange(0, 1_200_000, 5_000), n, replace=False)).astype(np.int64) + k * 1_000
        x = np.cumsum(rng_.integers(-3, 10, n)).astype(np.float64)
        if k == 2:
            x[n // 2] = np.nan
        tss.append(ts)
        xs.append(x)
    steps = np.arange(0, 1_500_001, 45_000, dtype=np.int64)
    rng = 120_000
    m = Matrix([(("k", str(k)),) for k in range(6)], tss, xs, np.zeros(6, bool), steps, rng, steps,
               None, Extended(mode, LB))
    ev = evaluator(steps)
    vals = np.zeros((6, len(steps)))
    pres = np.zeros((6, len(steps)), bool)
    _float_range_rows(ev, name, EXT_FUNCS[name], m, [], np.arange(6), vals, pres)
    for k in range(6):
        for j, end in enumerate(steps.tolist()):
            if name in ("changes", "resets"):
                want = ref_count(tss[k], xs[k], end, rng, name)
            else:
                want = ref_rate(tss[k], xs[k], end, rng, mode == SMOOTHED, name != "delta", name == "rate")
            assert pres[k, j] == (want is not None), (k, end)
            if want is not None:
                got = vals[k, j]
                assert (math.isnan(want) and math.isnan(got)) or math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (k, end, got, want)


def test_instant_anchored_matrix_frames_the_window_with_its_boundary_values():
    ts = np.array([0, 60_000, 90_000, 150_000], dtype=np.int64)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    # window (60s, 120s]: anchored picks the sample at 60s for the start, the last one for the end
    t, v = extended_points(ts, x, None, 120_000, 60_000, Extended(ANCHORED, LB))
    assert t.tolist() == [60_000, 90_000, 120_000] and v.tolist() == [2.0, 3.0, 3.0]
    # smoothed interpolates the end between 90s and 150s
    t, v = extended_points(ts, x, None, 120_000, 60_000, Extended(SMOOTHED, LB))
    assert t.tolist() == [60_000, 90_000, 120_000] and v.tolist() == [2.0, 3.0, 3.5]
    assert extended_points(ts, x, None, 60_000, 30_000, Extended(ANCHORED, LB)) is not None
    assert extended_points(ts, x, None, 400_000_000, 60_000, Extended(ANCHORED, LB)) is None


def test_instant_extended_matrix_refuses_histograms():
    ts = np.array([0, 60_000], dtype=np.int64)
    hs = np.array([nh.H(count=1.0), None], dtype=object)
    with pytest.raises(PromQLError, match="smoothed modifier is not supported with histograms"):
        extended_points(ts, np.zeros(2), hs, 60_000, 60_000, Extended(SMOOTHED, LB))
