"""Range functions run over many series laid end to end (querier/promql/functions.py batches
them); every function must give exactly what it gives one series at a time."""
from __future__ import annotations

import numpy as np
import pytest

from querier.promql import functions
from querier.promql.rangefuncs import RANGE_FUNCS, Windows, batch_bounds, bounds

T0, STEP, RNG = 1_000_000, 15_000, 120_000
END = T0 + np.arange(0, 40) * STEP
EXTRA = {"quantile_over_time": [np.full(len(END), 0.9)], "predict_linear": [np.full(len(END), 60.0)],
         "holt_winters": [np.full(len(END), 0.3), np.full(len(END), 0.6)],
         "double_exponential_smoothing": [np.full(len(END), 0.3), np.full(len(END), 0.6)]}


def _series(seed: int, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Ragged series: empty, single-sample, gappy, with resets, NaN and ±Inf."""
    rng = np.random.default_rng(seed)
    tss, xs = [], []
    for i in range(n):
        k = [0, 1, 2, 30, 200][i % 5]
        ts = np.sort(rng.choice(np.arange(T0 - RNG, END[-1] + 1, 1000), k, replace=False))
        x = np.cumsum(rng.random(k) * 10)
        if k > 10:
            x[k // 2:] -= x[k // 2]  # a counter reset
            x[3] = [np.nan, np.inf, -np.inf, 5.0][i % 4]
        tss.append(ts.astype(np.int64))
        xs.append(x)
    return tss, xs


def test_batch_bounds_equal_per_series_bounds():
    tss, _ = _series(1, 25)
    lens = np.array([len(t) for t in tss])
    offs = np.concatenate([[0], np.cumsum(lens)])
    lo, hi = batch_bounds(np.concatenate(tss), offs, END, RNG)
    for i, ts in enumerate(tss):
        l1, h1 = bounds(ts, END, RNG)
        w = slice(i * len(END), (i + 1) * len(END))
        assert (lo[w] - offs[i] == l1).all() and (hi[w] - offs[i] == h1).all()


def test_batch_bounds_of_extreme_spans_and_unordered_ends():
    """No banding: timestamps near the int64 ends and window ends that go back (a step list is
    not always ascending) still give searchsorted's bounds per series."""
    tss = [np.array([-(1 << 62), -5, 3, 1 << 62], dtype=np.int64), np.zeros(0, np.int64),
           np.array([0, 10, 20, 30], dtype=np.int64)]
    end = np.array([25, 3, -(1 << 62), 1 << 62, 10, 10, 0], dtype=np.int64)
    lens = np.array([len(t) for t in tss])
    offs = np.concatenate([[0], np.cumsum(lens)])
    for rng in (0, 10, 1 << 62):
        lo, hi = batch_bounds(np.concatenate(tss), offs, end, rng)
        for i, ts in enumerate(tss):
            l1, h1 = bounds(ts, end, rng)
            w = slice(i * len(end), (i + 1) * len(end))
            assert (lo[w] - offs[i] == l1).all() and (hi[w] - offs[i] == h1).all(), rng


class _Sh:
    def check_deadline(self):
        pass

    def fits(self, points):
        pass


class _Ev:
    sh = _Sh()
    T = len(END)


class _M:
    def __init__(self, tss, xs, laid_out: bool = False):
        self.ts, self.vals, self.end, self.rng = tss, xs, END, RNG
        self.eval_ts, self.ext = END, None  # a plain range (no anchored/smoothed)
        self.labels = [(("i", str(i)),) for i in range(len(tss))]
        offs = np.concatenate([[0], np.cumsum([len(t) for t in tss])]).astype(np.int64)
        # as a matrix selector gives them: the series also laid end to end
        self.cat = (np.concatenate(tss), np.concatenate(xs), offs) if laid_out else None


@pytest.mark.parametrize("laid_out", [False, True])
@pytest.mark.parametrize("name", sorted(RANGE_FUNCS))
def test_every_range_function_batched_equals_one_series_at_a_time(name, laid_out, monkeypatch):
    tss, xs = _series(7, 40)
    extra = EXTRA.get(name, [])
    n = len(tss)
    monkeypatch.setattr(functions, "BATCH_POINTS", 300)  # several batches, and split ones
    vals, pres = np.zeros((n, len(END))), np.zeros((n, len(END)), bool)
    functions._float_range_rows(_Ev(), name, RANGE_FUNCS[name], _M(tss, xs, laid_out), extra,
                                np.arange(n), vals, pres)
    for i in range(n):
        lo, hi = bounds(tss[i], END, RNG)
        if not (hi > lo).any():
            assert not pres[i].any()
            continue
        r, ok = RANGE_FUNCS[name](tss[i], xs[i], lo, hi, Windows(END, RNG, END), extra)
        assert (pres[i] == ok).all(), (name, i)
        np.testing.assert_array_equal(np.where(ok, vals[i], 0), np.where(ok, r, 0), err_msg=f"{name} {i}")


def test_small_counter_after_huge_resetting_counters_keeps_its_precision():
    """Reset corrections summed per window: a prefix sum across the batch (1e15-sized resets of
    earlier series) once wiped out a small counter's increase laid after them."""
    big_ts = np.arange(T0 - RNG, END[-1] + 1, 5000, dtype=np.int64)
    big = np.tile([1e15, 2e15, 3e15, 1.0], len(big_ts) // 4 + 1)[:len(big_ts)]
    small = (np.arange(len(big_ts)) % 7) * 0.001  # resets of its own
    tss, xs = [big_ts] * 30 + [big_ts], [big] * 30 + [small]
    vals, pres = np.zeros((31, len(END))), np.zeros((31, len(END)), bool)
    functions._float_range_rows(_Ev(), "increase", RANGE_FUNCS["increase"], _M(tss, xs), [],
                                np.arange(31), vals, pres)
    lo, hi = bounds(big_ts, END, RNG)
    want, ok = RANGE_FUNCS["increase"](big_ts, small, lo, hi, Windows(END, RNG, END), [])
    assert ok.all() and (vals[30] == want).all()


def _prometheus_extrapolated(ts, x, end: int, rng: int, counter: bool, rate: bool):
    """Prometheus's extrapolatedRate for one window of float samples, line by line (the
    reference the vectorised kernel must match to the last bit); None: no result."""
    if len(ts) < 2:
        return None
    res = x[-1] - x[0]
    if counter:
        with np.errstate(all="ignore"):  # inf + -inf
            for prev, cur in zip(x[:-1], x[1:]):
                if cur < prev:
                    res += prev
        res += 0.0
    with np.errstate(all="ignore"):
        dstart = (int(ts[0]) - (end - rng)) / 1000
        dend = (end - int(ts[-1])) / 1000
        sampled = (int(ts[-1]) - int(ts[0])) / 1000
        avg = np.float64(sampled) / (len(ts) - 1)
        thr = avg * 1.1
        if dstart >= thr:
            dstart = avg / 2
        if counter:
            dz = np.float64(sampled) * (np.float64(x[0]) / res)
            if res > 0 and x[0] >= 0 and dz < dstart:
                dstart = dz
        if dend >= thr:
            dend = avg / 2
        factor = (np.float64(sampled) + dstart + dend) / sampled
        if rate:
            factor /= rng / 1000
        return res * factor


@pytest.mark.parametrize("name,counter,rate", [("rate", True, True), ("increase", True, False),
                                               ("delta", False, False)])
def test_extrapolated_functions_equal_prometheus_per_window(name, counter, rate):
    """Several resets in one window, NaN and ±Inf: corrections are added to the result one by
    one in sample order, as Prometheus does (not summed apart first)."""
    tss, xs = _series(11, 40)
    rng = np.random.default_rng(3)
    for ts, x in zip(tss, xs):
        if not len(x):
            continue  # the engine passes no empty series
        if len(x) > 10:
            x[rng.choice(len(x), 5, replace=False)] *= 1e-3  # more resets, of mixed sizes
        lo, hi = bounds(ts, END, RNG)
        got, ok = RANGE_FUNCS[name](ts, x, lo, hi, Windows(END, RNG, END), [])
        for j, e in enumerate(END.tolist()):
            want = _prometheus_extrapolated(ts[lo[j]:hi[j]], x[lo[j]:hi[j]], e, RNG, counter, rate)
            assert ok[j] == (want is not None)
            if want is not None:
                np.testing.assert_array_equal(got[j], want, err_msg=f"{name} step {j}")


def test_last_samples_equal_per_series_search_with_stale_markers_and_unordered_steps():
    """The instant selector's C lookup: newest sample at or before each step within the
    lookback, absent on a staleness marker; steps need not ascend (@ and subqueries)."""
    from querier.promql._rangec import last_samples
    from querier.promql.values import is_stale
    from receiver.tsdb.labels import STALE_NAN_BITS
    stale = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
    tss, xs = _series(9, 30)
    tss, xs = [t for t in tss if len(t)], [x.copy() for x in xs if len(x)]
    for x in xs[::3]:
        x[len(x) // 2] = stale
    steps = np.concatenate([END, END[::-1][:7], [END[0] - 10 * RNG]]).astype(np.int64)
    offs = np.concatenate([[0], np.cumsum([len(t) for t in tss])]).astype(np.int64)
    v, ok, st = (np.frombuffer(b, dtype=d).reshape(len(tss), -1) for b, d in zip(
        last_samples(np.concatenate(tss), np.concatenate(xs), offs, steps, RNG),
        (np.float64, np.bool_, np.int64)))
    for i, (ts, x) in enumerate(zip(tss, xs)):
        idx = np.searchsorted(ts, steps, side="right") - 1
        want = (idx >= 0) & (ts[np.maximum(idx, 0)] > steps - RNG) & ~is_stale(x[np.maximum(idx, 0)])
        assert (ok[i] == want).all(), i
        np.testing.assert_array_equal(v[i][want], x[idx[want]])
        assert (st[i][want] == ts[idx[want]]).all()
