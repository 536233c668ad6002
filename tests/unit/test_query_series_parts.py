"""A big selection decoded a slice of series at a time and each slice looked up or fed to its
range function before the next is decoded (querier.fanout.series_parts, the engine's
_selected_parts): the same answers as over the whole selection at once, for every range
function and instant vector selectors under the usual operators, in range and instant queries,
with replicas merged (a slice never splits their label set), counter resets and staleness
markers."""
from __future__ import annotations

import numpy as np
import pytest

from querier import fanout
from querier.fanout import FanoutQueryable, SelectOptions
from querier.promql import Engine, EngineOptions, PromQLError
from querier.promql.types import SeriesParts
from receiver.tsdb.chunkenc import encode
from receiver.tsdb.labels import STALE_NAN_BITS
from storeapi.client import RawSeries

T0 = 1_700_000_000_000
STEP = 15_000


def _chunks(ts: np.ndarray, vals: np.ndarray, per: int = 40) -> list:
    return [(int(ts[i]), int(ts[min(i + per, len(ts)) - 1]), encode(ts[i:i + per], vals[i:i + per]))
            for i in range(0, len(ts), per)]


def _raw(replicas: bool) -> list[RawSeries]:
    rnd = np.random.default_rng(7)
    out = []
    for k in range(24):
        n = 240 - 7 * k
        ts = T0 + np.arange(n, dtype=np.int64) * STEP + k
        vals = np.cumsum(rnd.integers(0, 5, n)).astype(float)
        if k % 5 == 1:
            vals[rnd.integers(0, n // 2) * 2 % n:][:3] = 0.0  # counter resets
        if k % 7 == 3:
            vals[n // 3] = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
        labels = (("__name__", "m"), ("i", f"{k:02d}"), ("job", "j" + str(k % 3)))
        out.append(RawSeries(labels, _chunks(ts, vals), histograms=False))
        if replicas and k % 4 == 0:  # the same series again from a second store, a gap filled
            keep = np.arange(n) % 3 != 0
            out.append(RawSeries(labels, _chunks(ts[keep], vals[keep]), histograms=False))
    if replicas:
        out.reverse()  # not in label order, as several stores' answers are
    return out


class FixedAnswer:
    """A StoreSet answering Series calls from ``raw``."""

    def __init__(self, raw: list[RawSeries]) -> None:
        self.raw = raw

    async def series(self, mint: int, maxt: int, matchers, **kw) -> list[RawSeries]:
        return [r for r in self.raw
                if all(m.matches(dict(r.labels).get(m.name, "")) for m in matchers)]


class Stores(FanoutQueryable):
    """The querier's queryable over a fixed store answer, run without an event loop."""

    def __init__(self, raw: list[RawSeries], opts: SelectOptions = fanout.DEFAULT_OPTIONS) -> None:
        super().__init__(FixedAnswer(raw), None, opts)  # type: ignore[arg-type]
        self.parted = 0

    def _run(self, coro):
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value
        raise AssertionError("the fixed answer never waits")

    def select_parts(self, *a, **kw):
        got = super().select_parts(*a, **kw)
        self.parted += isinstance(got, SeriesParts) and len(got) > 1
        return got


def _rows(series) -> list:
    """A matrix's rows comparable with ==, NaN equal to NaN."""
    return [(labels, np.asarray(ts).tolist(), np.asarray(vals, dtype=float).tobytes())
            for labels, ts, vals in series]


QUERIES = [
    "rate(m[5m])", "increase(m[3m])", "delta(m[5m])", "irate(m[2m])", "idelta(m[2m])",
    "resets(m[10m])", "changes(m[10m])", "deriv(m[5m])", "predict_linear(m[5m], 60)",
    "avg_over_time(m[5m])", "sum_over_time(m[5m])", "count_over_time(m[5m])",
    "min_over_time(m[5m])", "max_over_time(m[5m])", "last_over_time(m[5m])",
    "quantile_over_time(0.9, m[5m])", "quantile_over_time(2, m[5m])", "stddev_over_time(m[5m])",
    "present_over_time(m[5m])", "double_exponential_smoothing(m[5m], 0.5, 0.5)",
    "double_exponential_smoothing(m[5m], 1.5, 0.5)", "absent_over_time(m[5m])",
    "sum by (job) (rate(m[5m]))", "topk(3, rate(m[5m]))", "rate(m[5m] offset 10m)",
    "rate(m[5m] @ 1700001800)", "rate(nope[5m])", 'rate(m{i="03"}[5m])',
    # instant vector selectors (engine.vector_selector) too
    "m", "m offset 5m", "m @ 1700001800", "timestamp(m)", "count by (job) (m)", "sum(m)",
    "m > 100", "m / on (i, job) m", "m / ignoring (i) m", "absent(m)", "absent(nope)",
    'label_replace(m, "i", "x", "job", ".*")', "quantile(0.5, m)", "topk(2, m)", "-m",
    "sort_by_label(m, \"job\")", 'm{i="03"}', "rate(m[5m]) / m", "sum(rate(m[5m])) by (job) * 2",
]


@pytest.mark.parametrize("replicas", [False, True])
def test_range_functions_over_slices_answer_as_over_the_whole_selection(monkeypatch, replicas):
    engine = Engine(EngineOptions(lookback_delta_ms=300_000, features=frozenset(
        {"promql-experimental-functions"})))
    opts = fanout.SelectOptions(replica_labels=("r",)) if replicas else fanout.DEFAULT_OPTIONS

    def answers(part_chunks: int, part_cells: int = 1 << 30) -> tuple[list, int]:
        monkeypatch.setattr(fanout, "PART_CHUNKS", part_chunks)
        monkeypatch.setattr(fanout, "PART_CELLS", part_cells)
        out, parted = [], []
        for q in QUERIES:
            for instant in (False, True):
                qa = Stores(_raw(replicas), opts)
                try:
                    r = (engine.instant(qa, q, T0 + 1_800_000) if instant else
                         engine.range(qa, q, T0 + 300_000, T0 + 3_600_000, 60_000))
                    out.append((q, r.kind, _rows(r.series), r.warnings, r.infos))
                except PromQLError as e:  # errors must match too
                    out.append((q, e.kind, str(e)))
                if qa.parted:
                    parted.append(q)
        return out, parted

    whole, parted = answers(1 << 30)
    assert parted == []
    many = {q for q in QUERIES if "nope" not in q and '"03"' not in q  # more than one series
            and not q.startswith("absent_over_time")}  # (reads its argument whole)
    for part_chunks in (1, 5, 13):
        sliced, parted = answers(part_chunks)
        assert set(parted) == many
        assert sliced == whole
    # sliced by series x steps: one series a slice in range queries, 5 and 13 in instant ones
    for part_cells in (1, 5, 13):
        sliced, parted = answers(1 << 30, part_cells)
        assert set(parted) == many
        assert sliced == whole


def test_a_selection_of_few_chunks_over_many_steps_is_sliced_by_series_times_steps():
    """A 1 h rate over 12,000 series at scale 4 held few chunks but made [series, steps]
    temporaries of 23 MiB each: the slices bound series x steps too."""
    raw = _raw(False)
    assert fanout.chunk_count(raw) <= fanout.PART_CHUNKS
    steps = fanout.PART_CELLS // 5  # five series a slice at most (their chunks count too)
    got = fanout.series_parts(raw, T0, T0 + 3_600_000, steps=steps)
    assert isinstance(got, SeriesParts)
    sizes = [len(p) for p in got.parts()]
    assert sum(sizes) == len(raw) and max(sizes) == 5 and len(sizes) <= 6
    assert not isinstance(fanout.series_parts(raw, T0, T0 + 3_600_000, steps=1), SeriesParts)
