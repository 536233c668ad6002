"""Focused tests of the PromQL engine's core features with hand-computed expectations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from querier.promql import Engine, EngineOptions, PromQLError, Series
from receiver.tsdb.labels import STALE_NAN_BITS, Matcher, matches_all

STALE = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]


class Mem:
    def __init__(self, series: dict) -> None:
        self.series = [Series(tuple(sorted(l.items())), np.array(ts, dtype=np.int64), np.array(v, dtype=np.float64))
                       for l, (ts, v) in series]
        self.calls: list[tuple[int, int]] = []

    def select(self, matchers: list[Matcher], mint: int, maxt: int) -> list[Series]:
        self.calls.append((mint, maxt))
        return [s for s in self.series if matches_all(s.labels, matchers)]


def mk(*items):
    return Mem(list(items))


def L(**kw):
    return kw


E = Engine()
# counter c: 0, 10, 20, ... every 15s for 10 minutes
TS = list(range(0, 600_001, 15_000))
Q = mk((L(__name__="c_total", job="a"), (TS, [i * 10.0 for i in range(len(TS))])),
       (L(__name__="c_total", job="b"), (TS, [i * 20.0 for i in range(len(TS))])),
       (L(__name__="g", job="a", inst="1"), ([0, 60_000], [1.0, 5.0])),
       (L(__name__="g", job="b", inst="2"), ([0, 60_000], [3.0, 7.0])))


def vec(res):
    assert res.kind == "vector"
    return {tuple(l): v for l, _, v in res.series}


def test_selector_lookback_and_staleness():
    q = mk((L(__name__="m"), ([0, 10_000, 20_000], [1.0, STALE, 2.0])))
    assert vec(E.instant(q, "m", 5_000)) == {(("__name__", "m"),): 1.0}
    assert vec(E.instant(q, "m", 15_000)) == {}  # stale marker ends the series
    assert vec(E.instant(q, "m", 20_000 + 299_999)) == {(("__name__", "m"),): 2.0}
    assert vec(E.instant(q, "m", 20_000 + 300_000)) == {}  # lookback is left-open


def test_matchers_offset_and_at():
    assert vec(E.instant(Q, 'g{job=~"a|x", inst!="2"}', 60_000)) == {(("__name__", "g"), ("inst", "1"), ("job", "a")): 5.0}
    assert set(vec(E.instant(Q, 'g{job!~"a"}', 60_000)).values()) == {7.0}
    assert set(vec(E.instant(Q, "g offset 1m", 60_000)).values()) == {1.0, 3.0}
    assert set(vec(E.instant(Q, "g @ 0", 60_000)).values()) == {1.0, 3.0}
    r = E.range(Q, "g @ end()", 0, 60_000, 30_000)
    assert all(list(v) == [v[-1]] * 3 for _, _, v in r.series)


def test_rate_increase_delta():
    # perfectly linear counter: rate = 10/15 per second for job a
    r = vec(E.instant(Q, "rate(c_total[1m])", 300_000))
    assert r[(("job", "a"),)] == pytest.approx(10 / 15)
    assert r[(("job", "b"),)] == pytest.approx(20 / 15)
    assert vec(E.instant(Q, 'increase(c_total{job="a"}[1m])', 300_000))[(("job", "a"),)] == pytest.approx(40.0)
    assert vec(E.instant(Q, 'irate(c_total{job="a"}[1m])', 300_000))[(("job", "a"),)] == pytest.approx(10 / 15)
    # samples 1@0s, 5@60s in (-60s, 60s]: the 60s gap to the window start is under 1.1x the
    # sample interval, so delta extrapolates all the way: 4 * 120/60
    assert vec(E.instant(Q, 'delta(g{job="a"}[2m])', 60_000))[(("inst", "1"), ("job", "a"))] == pytest.approx(8.0)


def test_rate_counter_reset():
    q = mk((L(__name__="x_total"), ([0, 10_000, 20_000, 30_000], [5.0, 10.0, 2.0, 7.0])))
    # window (-10s, 30s] holds all four samples; raw increase across the reset is
    # (7 - 5) + 10 = 12 over 30s sampled; the 10s to the window start is below 1.1x the 10s
    # interval and zero is reached only 12.5s back, so it extrapolates to 40s: 12 * 40/30
    r = vec(E.instant(q, "increase(x_total[40s])", 30_000))
    assert r[()] == pytest.approx(12 * 40 / 30)
    assert vec(E.instant(q, "resets(x_total[1m])", 30_000))[()] == 1
    assert vec(E.instant(q, "changes(x_total[1m])", 30_000))[()] == 3


def test_range_window_left_open():
    q = mk((L(__name__="m"), ([0, 10_000, 20_000], [1.0, 2.0, 4.0])))
    assert vec(E.instant(q, "count_over_time(m[10s])", 20_000))[()] == 1
    assert vec(E.instant(q, "sum_over_time(m[20s])", 20_000))[()] == 6
    assert vec(E.instant(q, "avg_over_time(m[1m])", 20_000))[()] == pytest.approx(7 / 3)
    assert vec(E.instant(q, "max_over_time(m[1m])", 20_000))[()] == 4
    assert vec(E.instant(q, "quantile_over_time(0.5, m[1m])", 20_000))[()] == 2
    assert vec(E.instant(q, "last_over_time(m[1m])", 20_000)) == {(("__name__", "m"),): 4.0}
    assert vec(E.instant(q, "stddev_over_time(m[1m])", 20_000))[()] == pytest.approx(np.std([1, 2, 4]))


def test_aggregations():
    assert vec(E.instant(Q, "sum(g)", 60_000)) == {(): 12.0}
    assert vec(E.instant(Q, "sum by (job) (g)", 60_000)) == {(("job", "a"),): 5.0, (("job", "b"),): 7.0}
    assert vec(E.instant(Q, "avg without (inst) (g)", 60_000)) == {(("job", "a"),): 5.0, (("job", "b"),): 7.0}
    assert vec(E.instant(Q, "count(g)", 60_000)) == {(): 2.0}
    assert vec(E.instant(Q, "stddev(g)", 60_000)) == {(): 1.0}
    assert vec(E.instant(Q, "quantile(0.5, g)", 60_000)) == {(): 6.0}
    top = E.instant(Q, "topk(1, g)", 60_000)
    assert [v for _, _, v in top.series] == [7.0]
    cv = vec(E.instant(Q, 'count_values("v", g)', 60_000))
    assert cv == {(("v", "5"),): 1.0, (("v", "7"),): 1.0}


def test_binary_ops_and_matching():
    q = mk((L(__name__="a", i="1", x="p"), ([0], [10.0])), (L(__name__="a", i="2", x="q"), ([0], [20.0])),
           (L(__name__="b", i="1"), ([0], [2.0])), (L(__name__="b", i="2"), ([0], [4.0])))
    assert vec(E.instant(q, "a / on(i) b", 0)) == {(("i", "1"),): 5.0, (("i", "2"),): 5.0}
    r = vec(E.instant(q, "a * on(i) group_left b", 0))
    assert r == {(("i", "1"), ("x", "p")): 20.0, (("i", "2"), ("x", "q")): 80.0}
    assert vec(E.instant(q, "a > 15", 0)) == {(("__name__", "a"), ("i", "2"), ("x", "q")): 20.0}
    assert vec(E.instant(q, "a > bool 15", 0)) == {(("i", "1"), ("x", "p")): 0.0, (("i", "2"), ("x", "q")): 1.0}
    assert len(vec(E.instant(q, "a and on(i) b", 0))) == 2
    assert len(vec(E.instant(q, 'a unless on(i) b{i="1"}', 0))) == 1
    assert len(vec(E.instant(q, "a or b", 0))) == 4
    assert E.instant(q, "2 ^ 3 + 1", 0).series == (0, 9.0)
    with pytest.raises(PromQLError) as ei:
        E.instant(q, "a + on() b", 0)
    assert ei.value.kind == "execution"


def test_functions_misc():
    q = mk((L(__name__="m", a="x-y"), ([0], [-2.5])))
    assert vec(E.instant(q, "abs(m)", 0)) == {(("a", "x-y"),): 2.5}
    assert vec(E.instant(q, "clamp(m, -1, 1)", 0))[(("a", "x-y"),)] == -1
    r = vec(E.instant(q, 'label_replace(m, "b", "$2", "a", "(.*)-(.*)")', 0))
    assert r == {(("__name__", "m"), ("a", "x-y"), ("b", "y")): -2.5}
    assert vec(E.instant(q, 'absent(nope{job="j"})', 0)) == {(("job", "j"),): 1.0}
    assert vec(E.instant(q, "absent(m)", 0)) == {}
    assert E.instant(q, "scalar(m)", 0).series == (0, -2.5)
    assert vec(E.instant(q, "timestamp(m)", 1000))[(("a", "x-y"),)] == 0.0
    assert E.instant(q, "time()", 2500).series == (2500, 2.5)


def test_histogram_quantile_classic():
    q = mk(*[(L(__name__="h_bucket", le=le), ([0], [c])) for le, c in (("1", 10.0), ("2", 20.0), ("+Inf", 20.0))])
    assert vec(E.instant(q, "histogram_quantile(0.75, h_bucket)", 0)) == {(): 1.5}
    assert vec(E.instant(q, "histogram_quantile(1, h_bucket)", 0)) == {(): 2.0}


def test_range_query_and_subquery():
    r = E.range(Q, 'g{job="a"}', 0, 120_000, 30_000)
    assert r.kind == "matrix"
    (_, ts, vals), = r.series
    assert list(ts) == [0, 30_000, 60_000, 90_000, 120_000] and list(vals) == [1, 1, 5, 5, 5]
    s = vec(E.instant(Q, 'max_over_time(rate(c_total{job="a"}[1m])[5m:1m])', 300_000))
    assert s[(("job", "a"),)] == pytest.approx(10 / 15)


def test_errors_and_limits():
    with pytest.raises(PromQLError) as ei:
        E.instant(Q, "sum(", 0)
    assert ei.value.kind == "bad_data"
    with pytest.raises(PromQLError) as ei:
        E.range(Q, "g[1m]", 0, 10, 1)
    assert ei.value.kind == "bad_data"
    small = Engine(EngineOptions(max_samples=5))
    with pytest.raises(PromQLError) as ei:
        small.instant(Q, "c_total[10m]", 600_000)
    assert ei.value.kind == "execution" and "too many samples" in str(ei.value)


def test_selector_fetched_once_for_range():
    q = mk((L(__name__="m"), (TS, [1.0] * len(TS))))
    E.range(q, "rate(m[1m])", 120_000, 600_000, 15_000)
    assert q.calls == [(120_000 - 60_000 + 1, 600_000)]


def test_info_annotation_non_counter():
    # as Prometheus 3 answers: only a series rate gave a result for (one sample in (0, 60s]: none)
    assert not E.instant(Q, "rate(g[1m])", 60_000).infos
    r = E.instant(Q, "rate(g[2m])", 60_000)
    assert any("might not be a counter" in i for i in r.infos)
    assert not E.instant(Q, "rate(c_total[1m])", 60_000).infos



def test_dropped_names_collide_or_stay_distinct_with_schema_labels():
    """rate() drops the name, __type__ and __unit__ of every row: rows then equal are an error
    (as Prometheus 3 without delayed name removal), distinct ones keep their order and labels;
    the non-counter note is judged per name (and type) whatever the other labels are."""
    q = mk((L(__name__="a_total", job="x"), (TS, [float(i) for i in range(len(TS))])),
           (L(__name__="b", job="x"), (TS, [float(i) for i in range(len(TS))])),
           (L(__name__="b", __type__="gauge", __unit__="s", job="y"), (TS, [1.0] * len(TS))),
           (L(__name__="b", job="z", zone="1"), (TS, [2.0] * len(TS))))
    with pytest.raises(PromQLError, match="same labelset"):
        E.instant(q, 'rate({job="x"}[1m])', 600_000)
    r = E.range(q, 'rate({__name__=~"b|a_total", job=~"y|z"}[1m])', 540_000, 600_000, 30_000)
    assert [tuple(l) for l, _, _ in r.series] == [(("job", "y"),), (("job", "z"), ("zone", "1"))]
    notes = E.instant(q, 'rate({job=~"y|z"}[1m])', 600_000).infos
    assert sum("might not be a counter" in i for i in notes) == 1  # one name: one note

# -- native histograms -----------------------------------------------------------------------------
from querier.promql import nhist  # noqa: E402


def _hseries(lbls: dict, ts: list[int], hs: list) -> Series:
    return Series(tuple(sorted(lbls.items())), np.array(ts, dtype=np.int64), np.full(len(ts), np.nan),
                  np.array(hs + [None], dtype=object)[:-1])


class HMem:
    def __init__(self, *series: Series) -> None:
        self.series = list(series)

    def select(self, matchers, mint, maxt):
        return [s for s in self.series if matches_all(s.labels, matchers)]


def _h(count: float, s: float, pos: dict, schema: int = 0, hint: int = nhist.UNKNOWN) -> nhist.H:
    return nhist.H(schema=schema, count=count, sum=s, pos=dict(pos), hint=hint)


def test_native_histogram_functions_and_arithmetic():
    # buckets (0.5,1]:1 (1,2]:2 (2,4]:1 at schema 0
    h = _h(4, 6, {0: 1, 1: 2, 2: 1})
    q = HMem(_hseries({"__name__": "lat", "job": "a"}, [0], [h]))
    assert E.instant(q, "histogram_count(lat)", 10_000).series[0][2] == 4
    assert E.instant(q, "histogram_avg(lat)", 10_000).series[0][2] == 1.5
    # the median falls in (1,2], half way in log2 scale: 2**0.5
    assert E.instant(q, "histogram_quantile(0.5, lat)", 10_000).series[0][2] == pytest.approx(math.sqrt(2))
    assert E.instant(q, "histogram_fraction(0, 2, lat)", 10_000).series[0][2] == pytest.approx(0.75)
    doubled = E.instant(q, "lat * 2", 10_000).series[0][2]
    assert isinstance(doubled, nhist.H) and doubled.count == 8 and doubled.pos == {0: 2, 1: 4, 2: 2}
    diff = E.instant(q, "lat - lat", 10_000).series[0][2]
    assert diff.count == 0 and diff.hint == nhist.GAUGE
    r = E.instant(q, "lat + 1", 10_000)
    assert r.series == [] and any("incompatible sample types" in i for i in r.infos)


def test_native_histogram_rate_and_sum_with_schema_reduction():
    a = [_h(10 * i, 10 * i, {1: 10 * i}, schema=1) for i in range(5)]  # (2**0.5, 2]
    b = [_h(5 * i, 5 * i, {0: 5 * i}, schema=0) for i in range(5)]  # (0.5, 1]
    q = HMem(_hseries({"__name__": "h", "x": "a"}, [i * 60_000 for i in range(5)], a),
             _hseries({"__name__": "h", "x": "b"}, [i * 60_000 for i in range(5)], b))
    r = E.instant(q, "rate(h[4m])", 240_000)
    rates = {dict(l)["x"]: v for l, _, v in r.series}
    # window (0, 4m]: samples at 1..4m, increase 30 over 180 s, extrapolated 60 s to the left edge
    assert rates["a"].count == pytest.approx(30 * (240 / 180) / 240)
    assert rates["a"].hint == nhist.GAUGE and rates["a"].pos == {1: pytest.approx(30 * (240 / 180) / 240)}
    s = E.instant(q, "sum(h)", 240_000).series[0][2]
    assert s.schema == 0 and s.count == 60 and s.pos == {1: 40, 0: 20}  # schema-1 bucket 1 -> schema-0 bucket 1
    mixed = HMem(_hseries({"__name__": "h"}, [0], [_h(1, 1, {0: 1})]),
                 Series((("__name__", "h"), ("f", "1")), np.array([0]), np.array([3.0])))
    r = E.instant(mixed, "sum(h)", 10_000)
    assert r.series == [] and any("mix of histograms and floats" in w for w in r.warnings)


def test_histogram_quantile_range_equals_each_step_with_buckets_missing_at_some_steps():
    """Steps are grouped by which buckets are present (one bucket_quantile call per set of
    bounds across histograms): a range query must give what an instant query gives per step,
    including steps where buckets are missing, bounds repeat, and counts need monotonicity."""
    rng = np.random.default_rng(4)
    ts = np.arange(0, 600_001, 30_000)
    items = []
    for job in ("a", "b", "c"):
        for le in ("0.1", "0.5", "1", "1.0", "5", "+Inf"):
            v = np.sort(rng.random(len(ts))) * 100 + float(le.replace("+Inf", "1e3"))
            if le == "1":
                v[5] = 0.0  # needs the monotonicity fix
            keep = rng.random(len(ts)) > (0.3 if le in ("0.5", "5") else 0.0)
            items.append((L(__name__="lat", job=job, le=le), (ts[keep].tolist(), v[keep].tolist())))
    q = Mem(items)
    E = Engine(EngineOptions(features=frozenset({"promql-experimental-functions"})))
    for expr in ("histogram_quantile(0.9, lat)", "histogram_quantiles(lat, \"q\", 0.2, 0.7)",
                 "histogram_fraction(0.2, 3, lat)"):
        got = E.range(q, expr, 0, 600_000, 30_000)
        per_step = {}
        for t in range(0, 600_001, 30_000):
            for l, _, val in E.instant(q, expr, t).series:
                per_step[(l, t)] = val
        flat = {(l, int(t)): val for l, tt, vv in got.series for t, val in zip(tt, vv)}
        assert flat.keys() == per_step.keys(), expr
        for k, val in flat.items():
            assert val == per_step[k] or (math.isnan(val) and math.isnan(per_step[k])), (expr, k)
        assert set(got.infos) == {i for t in range(0, 600_001, 30_000) for i in E.instant(q, expr, t).infos}


def test_a_reused_tree_selects_with_its_own_matchers_every_time():
    """A dashboard query's parsed tree is evaluated again and again (querier.parsecache); its
    selector's matchers are built once and kept on it: a queryable that changes the list it is
    given (or the next query) must not see the change."""
    from querier.promql.engine import parse

    class Appending(Mem):
        def select(self, matchers, mint, maxt):
            got = super().select(matchers, mint, maxt)
            self.seen.append([(m.name, m.value) for m in matchers])
            matchers.append(Matcher.__new__(Matcher))  # a hostile caller keeps the list
            return got

    q = Appending([({"__name__": "m", "i": "1"}, ([0], [1.0])),
                   ({"__name__": "m", "i": "2"}, ([0], [2.0]))])
    q.seen = []
    expr = parse('m{i="1"}')
    for _ in range(3):
        res = Engine().instant(q, 'm{i="1"}', 10_000, expr)
        assert [(dict(l)["i"], v) for l, _, v in res.series] == [("1", 1.0)]
    assert q.seen == [[("__name__", "m"), ("i", "1")]] * 3
