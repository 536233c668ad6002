"""A range or instant query that is one plain selector is answered without the engine
(querier.plainrange): the same bytes as the engine's answer in the worker for every shape of
data (gaps past the lookback, staleness markers, series without samples in the range, NaN,
limit, one step), and the engine still decides everything else (replicas to merge, the sample
limit)."""
from __future__ import annotations

import numpy as np

from querier.config import QueryConfig
from querier.inline import InlineLimits
from querier.promql import Engine
from receiver.tsdb.labels import STALE_NAN_BITS
from querier_cluster import cluster, run

Q, QR = "/api/v1/query", "/api/v1/query_range"
T0 = 1_700_000_000_000
WORKER_ONLY = InlineLimits(max_nodes=0)
STALE = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]


def _data() -> list:
    ts = T0 + np.arange(240, dtype=np.int64) * 15_000
    gappy = np.concatenate([ts[:40], ts[100:]])  # a gap of 15 min: past the 5 min lookback
    stale = np.arange(240) * 1.0
    stale[120] = STALE
    nan = np.arange(240) * 0.5
    nan[7] = np.nan
    return [((("__name__", "m"), ("i", "0")), ts, np.arange(240) * 1.5),
            ((("__name__", "m"), ("i", "1")), gappy, np.arange(len(gappy)) * 2.0),
            ((("__name__", "m"), ("i", "2")), ts, stale),
            ((("__name__", "m"), ("i", "3")), ts, nan),
            ((("__name__", "m"), ("i", "4")), ts[:5], np.ones(5)),  # only early samples
            ((("__name__", "other"), ("i", "0")), ts, np.ones(240))]


def _range(query: str, start_s: float, end_s: float, step: str, **more) -> dict:
    return {"query": query, "start": str(start_s), "end": str(end_s), "step": step, **more}


S = T0 / 1000
PLAIN = [_range('m{i="0"}', S, S + 3600, "15"),
         _range("m", S, S + 3600, "14"),  # a step that does not divide the range
         _range('m{i="1"}', S + 300, S + 3000, "60"),
         _range('m{i="2"}', S, S + 3600, "15"),
         _range('m{i="3"}', S - 600, S + 4000, "30"),
         _range('m{i="4"}', S + 1800, S + 3600, "15"),  # no sample within the lookback: []
         _range("m", S + 900, S + 900, "15"),  # one step
         _range("m", S, S + 3600, "15", limit="2"),
         _range('m{i=~"[13]"}', S, S + 3600, "20"),
         _range('nothing{i="0"}', S, S + 3600, "15")]
INSTANT = [{"query": q, "time": str(t), **more} for q, t, more in [
    ('m{i="0"}', S + 600, {}), ("m", S + 1800, {}), ("m", S + 1800, {"limit": "2"}),
    ('m{i="2"}', S + 15 * 120 + 1, {}),  # the staleness marker: absent
    ('m{i="1"}', S + 15 * 60, {}),  # in the gap, past the lookback: absent
    ('m{i="3"}', S + 15 * 7 + 0.5, {}),  # NaN
    ('m{i="4"}', S + 3600, {}), ('m{i=~"[34]"}', S + 30, {})]]
NOT_PLAIN = [_range('m{i="0"} offset 1m', S, S + 3600, "15"),
             _range('(m{i="0"})', S, S + 3600, "15"),
             _range('m{i="0"}', S, S + 3600, "15", stats="all")]


def _engine_runs(monkeypatch, *methods: str) -> list:
    """The expressions the engine evaluates through ``methods`` from now on (a plain selector
    answered on the loop adds none)."""
    ranges = []

    def counted(method):
        def run(self, *a, **kw):
            ranges.append(a[1])
            return method(self, *a, **kw)
        return run
    for name in methods:
        monkeypatch.setattr(Engine, name, counted(getattr(Engine, name)))
    return ranges


async def _answers(c, reqs, path: str = QR) -> list[tuple[int, bytes]]:
    """(status, body) of each request's GET to ``path``, in order."""
    out = []
    for params in reqs:
        async with c.http.get(c.base + path, params=params) as r:
            out.append((r.status, await r.read()))
    return out


def test_plain_selector_range_queries_answer_as_the_engine_does_without_it(tmp_path, monkeypatch):
    ranges = _engine_runs(monkeypatch, "range", "instant")

    async def go():
        async with cluster(tmp_path) as c:
            await c.push(_data())
            api = c.querier.api

            def answers(reqs, path: str = QR):
                return _answers(c, reqs, path)
            fast = await answers(PLAIN)
            fast_instant = await answers(INSTANT, Q)
            assert ranges == [], "a plain selector needs no engine"
            slow = await answers(NOT_PLAIN)
            assert len(ranges) == len(NOT_PLAIN)
            api.inline = WORKER_ONLY
            assert await answers(PLAIN) == fast
            assert await answers(INSTANT, Q) == fast_instant
            assert [s for s, _ in fast + fast_instant] == [200] * (len(PLAIN) + len(INSTANT))
            assert b'"result":[]' in fast_instant[3][1] and b'"result":[]' in fast_instant[4][1]
            assert b'"NaN"' in fast_instant[5][1]
            assert (await answers(NOT_PLAIN))[:2] == slow[:2]
            bodies = [b for _, b in fast]
            assert b'"values":[]' not in bodies[5] and b'"result":[]' in bodies[5]
            assert bodies[7].count(b'"metric"') == 2 and b"results truncated" in bodies[7]
    run(go())


def test_the_engine_still_answers_what_it_must_decide(tmp_path):
    """Over the sample limit: the engine's 422, as in the worker; replicas of a series from two
    stores: merged by the engine (deduplication), as in the worker."""
    async def go():
        async with cluster(tmp_path, QueryConfig(max_samples=600, replica_labels=["replica"]),
                           n_receivers=2) as c:
            await c.push(_data(), 0)
            await c.push(_data(), 1)
            api = c.querier.api
            reqs = [_range("m", S, S + 3600, "15"), _range('m{i="2"}', S, S + 3600, "15")]
            got = []
            for inline in (api.inline, WORKER_ONLY):
                api.inline = inline
                out = []
                for params in reqs:
                    async with c.http.get(c.base + QR, params=params) as r:
                        out.append((r.status, await r.read()))
                got.append(out)
            assert got[0] == got[1]
            assert [s for s, _ in got[0]] == [422, 200]
            assert b"replica" not in got[0][1][1]
    run(go())


def test_present_samples_kernel_matches_the_engine_lookup():
    """The C kernel against the engine's own lookup (last_samples, then the present mask) over
    random series: gaps, staleness markers, empty series, steps before and after the data;
    None for timestamps that do not ascend; no steps or no series give empty answers."""
    from querier.promql._rangec import last_samples, present_samples
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(0, 5))
        lens = rng.integers(0, 40, n)
        ts = np.concatenate([np.cumsum(rng.integers(1, 90_000, k)) for k in lens] or [[]]).astype(np.int64)
        vals = rng.normal(size=len(ts))
        vals[rng.random(len(ts)) < 0.1] = STALE
        offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        start, step = int(rng.integers(-100_000, 500_000)), int(rng.integers(1, 120_000))
        T, lb = int(rng.integers(0, 60)), int(rng.integers(1, 400_000))
        got = present_samples(ts, vals, offs, start, step, T, lb)
        steps = start + np.arange(T, dtype=np.int64) * step
        x, ok, _ = last_samples(ts, vals, offs, steps, lb)
        x = np.frombuffer(x, dtype=np.float64).reshape(n, T)
        ok = np.frombuffer(ok, dtype=np.bool_).reshape(n, T)
        assert got[2] == ok.sum(1).tolist()
        assert got[3] == np.count_nonzero(lens)
        assert np.frombuffer(got[0], dtype=np.int64).tolist() == [int(steps[j]) for i in range(n)
                                                                  for j in np.flatnonzero(ok[i])]
        assert np.frombuffer(got[1], dtype=np.float64).tobytes() == x[ok].tobytes()
    ts = np.array([1, 5, 5, 9], dtype=np.int64)
    assert present_samples(ts, np.zeros(4), np.array([0, 4], dtype=np.int64), 0, 1, 10, 5) is None
    assert present_samples(ts, np.zeros(4), np.array([0, 2, 4], dtype=np.int64), 0, 1, 10, 5) is not None


def _edge_data() -> list:
    """Label values with escapes and unicode, +Inf/-Inf values, and samples placed at the
    lookback's edges of the steps of EDGE_START (every 60 s): one exactly 5 min before a step
    (out: the lookback is open at its start), one 5 min - 1 ms before a later step (in)."""
    ts = T0 + np.arange(120, dtype=np.int64) * 15_000
    inf = np.arange(120) * 1.0
    inf[20], inf[24] = np.inf, -np.inf  # the samples of the first two steps
    edge_ts = np.array([T0, T0 + 360_001, T0 + 900_000], dtype=np.int64)
    return [((("__name__", "e"), ("v", 'quo"te\\back\nline')), ts, np.arange(120) * 0.25),
            ((("__name__", "e"), ("v", "ünï€😀")), ts, inf),
            ((("__name__", "e"), ("v", "edge")), edge_ts, np.array([1.0, 2.0, 3.0])),
            ((("__name__", "e"), ("v", "plain")), ts, np.full(120, 7.0))]


EDGE_START = (T0 + 300_000) / 1000  # its first step is exactly 5 min after the sample at T0
EDGE = [_range(q, EDGE_START, EDGE_START + 1800, "60") for q in [
    'e{v="quo\\"te\\\\back\\nline"}', 'e{v="ünï€😀"}', "e{v='ünï€😀'}", 'e{v=~"ü.*"}',
    'e{v!="plain"}', 'e{v!~"(plain|edge)"}', 'e{v=~"edge|plain", }', 'e{ v = "edge" }',
    'e{v="edge"}', 'e{v=~".*"}', 'e{v!~".+"}', 'e{v="nope"}', 'e{v=~"p.*"}']]
DECLINED = [_range(q, EDGE_START, EDGE_START + 1800, "60") for q in [
    'e{v="edge"} @ 1700000000', 'e{v="edge"} offset 1m', 'abs(e{v="edge"})',
    'e{v="edge"}[5m]', 'e{v="edge"', 'e{v=~"("}', 'e{__name__="e"}', "sum", '{v="edge"}',
    'e{v="edge"} + 1']] + [
    {"query": 'e{v="edge"}', "start": "x", "end": str(EDGE_START), "step": "60"},
    {"query": 'e{v="edge"}', "start": str(EDGE_START), "end": str(EDGE_START - 1), "step": "60"},
    {"query": 'e{v="edge"}', "start": str(EDGE_START), "end": str(EDGE_START), "step": "0"},
    _range('e{v="edge"}', EDGE_START, EDGE_START + 1800, "60", dedup="maybe"),
    _range('e{v="edge"}', EDGE_START, EDGE_START + 1800, "60", partial_response="no"),
    {"start": str(EDGE_START), "end": str(EDGE_START), "step": "60"}]


def test_plain_selector_edges_answer_as_the_parser_and_engine_do(tmp_path, monkeypatch):
    """Every matcher kind, escaped and unicode label values, +-Inf, samples exactly at and just
    past the lookback: the loop path (matchers built with the tree, no engine) answers the same
    bytes as the parser's tree evaluated by the engine in the worker; what it must decline
    (@, offset, functions, invalid syntax, refused regexes, bad parameters) gets the same
    status and body, Prometheus's error shapes included."""
    import querier.parsecache as parsecache
    ranges = _engine_runs(monkeypatch, "range")

    async def go():
        async with cluster(tmp_path) as c:
            await c.push(_edge_data())
            api = c.querier.api

            def answers(reqs):
                return _answers(c, reqs)
            fast = await answers(EDGE)
            assert ranges == [], "a plain selector needs no engine"
            declined = await answers(DECLINED)
            api.inline = WORKER_ONLY
            api.parsed._trees.clear()
            monkeypatch.setattr(parsecache, "simple_selector", lambda q, names=None: None)
            assert await answers(EDGE) == fast
            assert await answers(DECLINED) == declined
            assert [s for s, _ in fast] == [200] * len(EDGE)
            bodies = [b for _, b in fast]
            assert bodies[1] == bodies[2] and b'"+Inf"' in bodies[1] and b'"-Inf"' in bodies[1]
            assert b'quo\\"te\\\\back\\nline' in bodies[0]
            # the edge series: the sample at T0 is exactly 5 min before the first step (out),
            # the one at T0 + 360.001 s 5 min - 1 ms before the seventh (in), not the eighth
            assert b'"values":[[%d,"2"]' % (EDGE_START + 120,) in bodies[8]
            assert b'[%d,"2"],[%d,"3"]' % (EDGE_START + 360, EDGE_START + 600) in bodies[8]
            assert b'"result":[]' in bodies[10] and b'"result":[]' in bodies[11]
            statuses = [s for s, _ in declined]
            assert statuses[:4] == [200, 200, 200, 400] and 400 in statuses[4:]
            assert all(b'"errorType":"bad_data"' in b for s, b in declined if s == 400)
    run(go())
