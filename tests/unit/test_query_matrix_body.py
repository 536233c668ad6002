"""querier._pointsjson.matrix_body (a float matrix answer's whole body, written in C from
present_samples' output) is byte for byte the general encoder's answer (one_matrix_json for one
series, result_chunks(result_payload()) for others) for any labels, times and values; refuses
hostile input with None, TypeError or ValueError; and is what a plain selector's range query
answers with, the same bytes as the Python path and the worker's engine."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import querier.plainrange as plainrange
from querier._pointsjson import matrix_body
from querier.api import one_matrix_json, result_chunks, result_payload
from querier.inline import InlineLimits
from querier.jsonfmt import format_value
from querier.promql.types import QueryResult
from querier_cluster import cluster, run

EDGE_VALUES = [0.0, -0.0, 1.0, -1.0, 0.1, 0.2 + 0.1, 1e-7, -1e-7, 1e-6, 9.99e-7, 1e-5, 1.5e-5,
               1e-4, 9.999e-5, 0.001234, 1e15 + 0.5, 1e16, 1e20, 1e21, -1e21, 1.5e300, 5e-324,
               2.2250738585072014e-308, 1.7976931348623157e308, math.nan, math.inf, -math.inf,
               2.0 ** 53, 2.0 ** 53 + 2, 2.0 ** 53 - 1, -(2.0 ** 53 - 1), 2.0 ** 52 + 0.5,
               2.0 ** 60, 1.2345678901234567, 0.30000000000000004, 123456.78901234567,
               9007199254740991.0, 4503599627370495.5, 2.0 ** -14, 2.0 ** -13 * 3,
               float.fromhex("0x1.0000000000001p-10"), float.fromhex("0x1.fffffffffffffp+40"),
               100000000000000130000.0, 1e-4 * (1 + 2 ** -52), 12.5, 0.5, 1e22 + 1e6]
NEG_STALE = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000001))[0]  # a NaN with a payload
EDGE_LABELS = [(("__name__", "m"),), (), (("a", 'quo"te\\back/slash'),),
               (("a", "".join(map(chr, range(32))) + "\x7f"), ("b", "ünï€😀\u2028")),
               (("__name__", "x"), ("instance", "i-00123"), ("job", "node"))]


def _today(labels: list, ts: list[list[int]], vals: list[list[float]]) -> bytes:
    """The answer's bytes as the Python path writes them (querier.api)."""
    series = [(lbls, np.array(t, dtype=np.int64), np.array(v, dtype=np.float64))
              for lbls, t, v in zip(labels, ts, vals) if len(t)]
    res = QueryResult("matrix", series)
    if len(series) == 1:
        return b"".join(one_matrix_json(res))
    return b"".join(result_chunks(result_payload(res)))


def _c(labels: list, ts: list[list[int]], vals: list[list[float]]) -> bytes | None:
    pts = np.array([x for t in ts for x in t], dtype=np.int64).tobytes()
    pvals = np.array([x for v in vals for x in v], dtype=np.float64).tobytes()
    return matrix_body(labels, pts, pvals, [len(t) for t in ts])


def test_edge_values_times_and_labels_are_the_python_path_s():
    n = len(EDGE_VALUES)
    ts = [(-5_000 + 1_333 * i) * (1 if i % 3 else -1) for i in range(n)]
    ts[:3] = [-(2 ** 63), 2 ** 63 - 1, 0]
    for lbls in EDGE_LABELS:
        assert _c([lbls], [ts], [EDGE_VALUES]) == _today([lbls], [ts], [EDGE_VALUES])
        assert _c([lbls], [[7]], [[NEG_STALE]]) == _today([lbls], [[7]], [[NEG_STALE]])
    labels = EDGE_LABELS[:]
    tss = [ts[:i] for i in range(len(labels))]  # the first has no point: left out
    valss = [EDGE_VALUES[:i] for i in range(len(labels))]
    assert _c(labels, tss, valss) == _today(labels, tss, valss)
    assert _c([], [], []) == _today([], [], []) == (
        b'{"status":"success","data":{"resultType":"matrix","result":[]}}')
    assert _c(labels[:2], [[], []], [[], []]) == _today([], [], [])


def test_values_as_format_value_spells_them():
    """Every value alone, and many random ones of every magnitude (the shortest-digits path
    and its dtoa fallback), against format_value."""
    rng = np.random.default_rng(5)
    vals = np.concatenate([
        np.array(EDGE_VALUES),
        rng.normal(size=4000) * 10.0 ** rng.integers(-12, 25, 4000),
        np.cumsum(rng.exponential(5, 4000)),
        np.round(rng.random(4000) * 1000, 3),
        rng.integers(0, 2 ** 63, 4000, dtype=np.uint64).view(np.float64),
        2.0 ** rng.integers(-20, 60, 1000),
        np.nextafter(2.0 ** rng.integers(-20, 60, 1000), 0),
        (rng.integers(1, 10 ** 6, 2000) + 0.5) / 10.0 ** rng.integers(0, 12, 2000)])
    body = matrix_body([()], np.zeros(len(vals), dtype=np.int64).tobytes(), vals.tobytes(),
                       [len(vals)])
    head = b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":['
    assert body.startswith(head) and body.endswith(b"]}]}}")
    got = body[len(head):-len(b"]}]}}")].decode()
    assert got == ",".join(f'[0,"{format_value(float(v))}"]' for v in vals)


_TEXT = st.text(max_size=10)  # any unicode: quotes, backslashes, control characters
_VALUES = st.one_of(st.floats(), st.sampled_from(EDGE_VALUES),
                    st.integers(-(2 ** 53), 2 ** 53).map(float),
                    st.decimals(places=4, min_value=-10 ** 6, max_value=10 ** 6,
                                allow_nan=False).map(float))
_TIMES = st.integers(-(2 ** 63), 2 ** 63 - 1) | st.integers(-10 ** 13, 10 ** 13)


@settings(max_examples=300, deadline=None)
@given(series=st.lists(st.tuples(st.dictionaries(_TEXT, _TEXT, max_size=4),
                                 st.lists(st.tuples(_TIMES, _VALUES), max_size=12)),
                       max_size=6))
def test_any_matrix_is_the_python_path_s(series):
    labels = [tuple(sorted(d.items())) for d, _ in series]
    ts = [[t for t, _ in pts] for _, pts in series]
    vals = [[v for _, v in pts] for _, pts in series]
    assert _c(labels, ts, vals) == _today(labels, ts, vals)


@settings(max_examples=2000, deadline=None)
@given(v=st.floats())
def test_any_float_is_format_value_s(v):
    body = matrix_body([()], b"\0" * 8, struct.pack("<d", v), [1])
    assert body.endswith(b'[0,"%s"]]}]}}' % format_value(v).encode())


def test_labels_it_cannot_write_alike_give_none():
    """None (the Python path decides): labels orjson.dumps(dict(lbls)) would write otherwise
    (repeated or unsorted names), non-str names or values, lone surrogates, not tuples."""
    pts, pvals = b"\0" * 8, b"\0" * 8
    for lbls in [(("b", "1"), ("a", "2")), (("a", "1"), ("a", "2")), (("a", 1),), ((1, "a"),),
                 (("a", "\ud800"),), (("\udfff", "a"),), [("a", "b")], (["a", "b"],),
                 (("a", "b", "c"),), ("ab",), None, "x", (("a", b"b"),)]:
        assert matrix_body([lbls], pts, pvals, [1]) is None, lbls
    # a series without points is not looked at
    assert matrix_body([None, (("a", "b"),)], pts, pvals, [0, 1]) is not None


def test_hostile_input_gives_errors_not_crashes():
    pts, pvals = np.arange(3, dtype=np.int64).tobytes(), np.ones(3).tobytes()
    lbls = [(("a", "b"),)]
    bad = [
        (lbls, pts, pvals, [2]),  # counts short of the points
        (lbls, pts, pvals, [4]),  # past them
        ([lbls[0]] * 2, pts, pvals, [4, -1]),  # negative
        (lbls, pts, pvals, [2 ** 70]),
        (lbls, pts, pvals, [1.5 + 1.5]),
        (lbls, pts, pvals, ["3"]),
        (lbls, pts, pvals, [3, 0]),  # more counts than labels
        (lbls * 2, pts, pvals, [3]),
        (lbls, pts[:-1], pvals[:-1], [3]),  # not whole int64s
        (lbls, pts, pvals[:-8], [3]),  # lengths differ
        (lbls, pts[:8], pvals, [1]),
    ]
    for args in bad:
        with pytest.raises(ValueError):
            matrix_body(*args)
    for args in [(lbls, "x", pvals, [3]), (lbls, pts, None, [3]), (1, pts, pvals, [3]),
                 (lbls, pts, pvals, 3), (lbls, pts, pvals), ()]:
        with pytest.raises(TypeError):
            matrix_body(*args)
    # any contiguous buffer, aligned or not
    raw = bytearray(1) + pts + pvals
    got = matrix_body(lbls, memoryview(raw)[1:25], memoryview(raw)[25:], (3,))
    assert got == matrix_body(lbls, pts, pvals, [3])
    assert matrix_body(lbls, b"", b"", [0]) == _today([], [], [])


T0 = 1_700_000_000_000
QR = "/api/v1/query_range"


def _data() -> list:
    ts = T0 + np.arange(240, dtype=np.int64) * 15_000
    rng = np.random.default_rng(3)
    return [((("__name__", "m"), ("instance", "i-00123")), ts, np.cumsum(rng.exponential(5, 240))),
            ((("__name__", "m"), ("instance", "i-00124")), ts, np.arange(240) * 1.0),
            ((("__name__", "m"), ("instance", 'q"\\é')), ts, rng.normal(size=240) * 1e-5)]


def _calls(monkeypatch) -> list:
    """The answers matrix_body gives the querier from now on."""
    got = []

    def counted(*a):
        out = matrix_body(*a)
        got.append(out)
        return out
    monkeypatch.setattr(plainrange, "matrix_body", counted)
    return got


def test_a_plain_selector_range_query_answers_with_matrix_body(tmp_path, monkeypatch):
    """The one-series panel (and a few series) take matrix_body; the Python path it falls back
    to (matrix_body declining) and the engine in the worker answer the same bytes. A limit
    that cuts the answer takes the Python path (its warning)."""
    s = T0 / 1000
    reqs = [{"query": q, "start": str(s + a), "end": str(s + b), "step": step, **more}
            for q, a, b, step, more in [
                ('m{instance="i-00123"}', 0, 3600, "14", {}),
                ('m{instance="i-00124"}', -600, 3000, "15", {}),
                ('m{instance=~"i-.*"}', 300, 3300.5, "30", {}),
                ("m", 0, 3600, "60", {}),
                ('m{instance="nope"}', 0, 3600, "60", {}),
                ("m", 0, 3600, "60", {"limit": "3"})]]

    async def go():
        async with cluster(tmp_path) as c:
            await c.push(_data())

            async def answers() -> list:
                out = []
                for params in reqs:
                    async with c.http.get(c.base + QR, params=params) as r:
                        out.append((r.status, r.headers.get("Content-Type"), await r.read()))
                return out
            calls = _calls(monkeypatch)
            fast = await answers()
            assert len(calls) == len(reqs) and all(b is not None for b in calls)
            assert [b for _, _, b in fast] == calls
            assert b'"i-00123"' in fast[0][2] and fast[0][2].count(b'"metric"') == 1
            assert fast[3][2].count(b'"metric"') == 3 and b'"result":[]' in fast[4][2]
            monkeypatch.setattr(plainrange, "matrix_body", lambda *a: None)
            assert await answers() == fast
            c.querier.api.inline = InlineLimits(max_nodes=0)  # the worker's engine
            assert await answers() == fast
            c.querier.api.inline = InlineLimits()
            calls = _calls(monkeypatch)
            async with c.http.get(c.base + QR, params={**reqs[3], "limit": "2"}) as r:
                cut = await r.read()
            assert calls == [] and b"results truncated" in cut and cut.count(b'"metric"') == 2
    run(go())


def test_plain_range_falls_back_to_the_result_with_the_same_answer():
    """plain_range gives the body only for the matrix alone; with store warnings, a limit
    cutting it, labels matrix_body declines or a body over max_bytes, the QueryResult of the
    same points (no second decode), whose Python answer is the body's bytes."""
    import asyncio

    from querier.fanout import FanoutQueryable
    from receiver.tsdb.chunkenc import xor_encode
    from storeapi.client import RawSeries

    ts = T0 + np.arange(120, dtype=np.int64) * 15_000

    def series(lbls: tuple, vals) -> RawSeries:
        chunk = xor_encode(ts, np.asarray(vals, dtype=np.float64))
        return RawSeries(lbls, [(int(ts[0]), int(ts[-1]), chunk)], histograms=False)
    raw = [series((("__name__", "m"), ("i", "0")), np.arange(120) * 0.1),
           series((("__name__", "m"), ("i", "1")), np.arange(120) * 2.0)]
    loop = asyncio.new_event_loop()
    try:
        fanout = FanoutQueryable(None, loop)

        def answer(raw, limit=0, max_bytes=1 << 20):
            return plainrange.plain_range(fanout, raw, T0, T0 + 1_800_000, 30_000, 300_000,
                                          10 ** 6, limit, max_bytes)

        def python(res: QueryResult) -> bytes:
            return b"".join(one_matrix_json(res) if len(res.series) == 1
                            else result_chunks(result_payload(res)))
        for r in (raw[:1], raw):
            body = answer(r)
            assert type(body) is list and len(body) == 1
            cut = [answer(r, max_bytes=len(body[0]))]
            if len(r) > 1:  # a limit that cuts it: the api truncates the result
                cut.append(answer(r, limit=1))
            for res in cut:
                assert type(res) is QueryResult and python(res) == body[0]
            assert answer(r, limit=len(r)) == body
            fanout.warnings.append("a store said so")
            res = answer(r)
            assert type(res) is QueryResult and python(res) == body[0]
            fanout.warnings.clear()
        unsorted = [series((("i", "0"), ("__name__", "m")), np.ones(120))]
        res = answer(unsorted)
        assert type(res) is QueryResult and python(res).startswith(
            b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":'
            b'{"i":"0","__name__":"m"}')
    finally:
        loop.close()
