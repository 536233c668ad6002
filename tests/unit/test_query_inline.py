"""Small queries evaluated on the event loop (querier.inline): the same bytes as the worker
path for answers and errors, bigger queries still in the worker (with the data already fetched
reused, not fetched twice), and the limits of issue 11 on the loop path too."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from querier.config import QueryConfig
from querier.inline import DEFAULT_INLINE_LIMITS, InlineLimits, inline_cost
from querier_cluster import cluster, run

Q, QR = "/api/v1/query", "/api/v1/query_range"
T0 = 1_700_000_000_000
WORKER_ONLY = InlineLimits(max_nodes=0)


class CountingPool(ThreadPoolExecutor):
    """The querier's worker pool, counting the queries handed to it."""

    def __init__(self, n: int) -> None:
        super().__init__(max_workers=n, thread_name_prefix="query")
        self.submitted = 0

    def submit(self, *a, **kw):
        self.submitted += 1
        return super().submit(*a, **kw)


def _series(n: int, samples: int) -> list:
    ts = T0 + np.arange(samples, dtype=np.int64) * 15_000
    return [((("__name__", "m"), ("i", str(k)), ("job", "j")), ts, np.arange(samples) * (k + 1.5))
            for k in range(n)] + [((("__name__", "c"), ("i", "0")), ts, np.cumsum(np.ones(samples)))]


def _series_calls(c) -> float:
    return c.querier.registry.get_sample_value(
        "grpc_client_started_total",
        {"grpc_type": "server_stream", "grpc_service": "thanos.Store", "grpc_method": "Series"}) or 0


REQUESTS = [
    (Q, {"query": 'm{i="1"}', "time": str(T0 / 1000 + 600)}),
    (Q, {"query": "m", "time": str(T0 / 1000 + 600), "stats": "all"}),
    (Q, {"query": "rate(c[5m])", "time": str(T0 / 1000 + 900)}),
    (Q, {"query": "m[2m]", "time": str(T0 / 1000 + 900)}),
    (Q, {"query": "vector(1) + 2", "time": str(T0 / 1000 + 900)}),
    (Q, {"query": 'm{i="0"} / on() c', "time": str(T0 / 1000 + 900)}),
    (Q, {"query": "m", "time": str(T0 / 1000 + 900), "limit": "1"}),
    (QR, {"query": 'm{i="2"}', "start": str(T0 / 1000), "end": str(T0 / 1000 + 1800), "step": "15"}),
    (QR, {"query": "sum by (job) (rate(m[1m]))", "start": str(T0 / 1000),
          "end": str(T0 / 1000 + 1800), "step": "30"}),
    (QR, {"query": "time()", "start": str(T0 / 1000), "end": str(T0 / 1000 + 60), "step": "7"}),
    (QR, {"query": "nope", "start": str(T0 / 1000), "end": str(T0 / 1000 + 60), "step": "7"}),
    # errors: parse, range vector in a range query, too many samples, bad function arguments
    (Q, {"query": "sum(", "time": str(T0 / 1000)}),
    (QR, {"query": "m[1m]", "start": str(T0 / 1000), "end": str(T0 / 1000 + 60), "step": "7"}),
    (QR, {"query": "m", "start": str(T0 / 1000), "end": str(T0 / 1000 + 1800), "step": "1"}),
    (Q, {"query": 'label_replace(m, "x", "y", "i", "(")', "time": str(T0 / 1000 + 60)}),
    (Q, {"query": 'm{i="0"} + ignoring(i) m', "time": str(T0 / 1000 + 60)}),
]


def test_small_queries_answer_on_the_loop_byte_for_byte_as_in_the_worker(tmp_path):
    async def go():
        async with cluster(tmp_path, QueryConfig(max_samples=2000)) as c:
            await c.push(_series(3, 200))
            api = c.querier.api
            api._pool = pool = CountingPool(4)

            async def answers() -> list[tuple[int, bytes]]:
                out = []
                for path, params in REQUESTS:
                    async with c.http.get(c.base + path, params=params) as r:
                        out.append((r.status, await r.read()))
                return out
            on_loop = await answers()
            assert pool.submitted == 0, "every one of these is small enough for the loop"
            api.inline = WORKER_ONLY
            in_worker = await answers()
            assert pool.submitted == len(REQUESTS) - 1  # all but the parse error
            for (path, params), a, b in zip(REQUESTS, on_loop, in_worker):
                if params.get("stats"):  # timings differ; the rest must not
                    a = (a[0], _without_timings(a[1]))
                    b = (b[0], _without_timings(b[1]))
                assert a == b, (params, a, b)
            statuses = [s for s, _ in on_loop]
            assert statuses[:11] == [200] * 11 and statuses[11:] == [400, 400, 422, 422, 422], statuses
    run(go())


def _without_timings(body: bytes) -> bytes:
    import orjson
    d = orjson.loads(body)
    d["data"]["stats"].pop("timings")
    return orjson.dumps(d)


@pytest.mark.parametrize("query, bound", [
    ("sum(m)", {"max_samples": 300}),  # 3 x 200 samples is more
    # a plain selector, fetched by querier.inline.fetch_plain under the same bounds
    ("m", {"max_series": 2}), ("m", {"max_chunks": 2}), ("m", {"max_samples": 300})])
def test_a_query_over_the_bound_goes_to_the_worker_without_fetching_twice(tmp_path, query, bound):
    """Fetched on the loop, found too big, then evaluated by the worker with that same data:
    one Series call, and the answer the worker alone gives; within the bounds, the loop
    answers it (no worker) the same."""
    async def go():
        async with cluster(tmp_path) as c:
            await c.push(_series(3, 200))
            api = c.querier.api
            api._pool = pool = CountingPool(4)
            params = {"query": query, "start": str(T0 / 1000), "end": str(T0 / 1000 + 2000),
                      "step": "10"}
            answers = []
            for limits, submitted in ((replace(DEFAULT_INLINE_LIMITS, **bound), 1),
                                      (WORKER_ONLY, 1), (DEFAULT_INLINE_LIMITS, 0)):
                api.inline = limits
                pool.submitted, calls = 0, _series_calls(c)
                async with c.http.get(c.base + QR, params=params) as r:
                    answers.append((r.status, await r.read()))
                assert (pool.submitted, _series_calls(c)) == (submitted, calls + 1), limits
            assert answers[0][0] == 200 and answers.count(answers[0]) == 3
    run(go())


def test_cost_bound_grows_with_series_steps_samples_and_windows():
    assert inline_cost(1, 240, 1, 240, 0) == 480
    assert inline_cost(3, 240, 0, 0, 0) == 720  # no series yet: the steps still count
    assert inline_cost(2, 100, 10, 1000, 20) == 2 * (1000 + 20_000)
    lim = DEFAULT_INLINE_LIMITS
    # a one-series dashboard query fits at 1 h and 24 h (240 steps); 11,000 steps of a long
    # expression, or a rate over 64 series with 20 windows per sample, do not
    assert inline_cost(1, 241, 1, 240, 0) <= lim.max_cost
    assert inline_cost(1, 241, 1, 5760, 0) <= lim.max_cost
    assert inline_cost(lim.max_nodes, 11_000, 1, 0, 0) > lim.max_cost
    assert inline_cost(3, 241, 64, 64 * 240, 20) > lim.max_cost


def test_parse_cache_keeps_only_trees_evaluation_leaves_unchanged():
    from querier.parsecache import ParseCache
    cache = ParseCache(frozenset(), max_entries=2)
    a = cache.parse('rate(m{i="1"}[5m])')
    assert cache.parse('rate(m{i="1"}[5m])') is a
    d = cache.parse("rate(m[step() * 4])")  # resolved in place per query: parsed every time
    assert cache.parse("rate(m[step() * 4])") is not d
    e = cache.parse("m offset step()")  # a bare selector, yet rewritten per query
    assert cache.parse("m offset step()") is not e
    cache.parse("b")
    cache.parse("c")  # the least recently used ("rate(...)") goes
    assert cache.parse('rate(m{i="1"}[5m])') is not a
    assert len(cache._trees) == 2


def test_duration_expressions_take_each_query_s_step(tmp_path):
    """The same text at two steps (a tree resolved in place must not be reused)."""
    async def go():
        async with cluster(tmp_path) as c:
            await c.push(_series(1, 200))
            api = c.querier.api

            async def both() -> list:
                out = []
                for step in ("15", "30", "15"):
                    async with c.http.get(c.base + QR, params={
                            "query": "max_over_time(c[step() * 2] offset step())",
                            "start": str(T0 / 1000 + 300), "end": str(T0 / 1000 + 900),
                            "step": step}) as r:
                        out.append((r.status, await r.read()))
                return out
            on_loop = await both()
            api.inline = WORKER_ONLY
            assert on_loop == await both()
            assert on_loop[0][0] == 200 and on_loop[0] == on_loop[2] and on_loop[0] != on_loop[1]
    run(go())


def test_a_query_on_the_loop_holds_its_slot_until_its_deadline(tmp_path):
    """--query.max-concurrent and --query.timeout on the loop path: a query waiting on a hung
    endpoint keeps the only slot (the next one times out in the queue), answers Prometheus's
    timeout at its deadline, and frees the slot."""
    import asyncio

    from querier.endpoints import HealthOptions
    from querier_cluster import BlackHole
    hole = BlackHole()

    async def go():
        async with cluster(tmp_path, QueryConfig(timeout_s=5, max_concurrent=1),
                           extra_endpoints=(hole.address,),
                           health=HealthOptions(info_timeout_s=300.0)) as c:
            api = c.querier.api
            api._pool = pool = CountingPool(1)
            first = asyncio.ensure_future(c.get(Q, query="up", timeout="2"))
            for _ in range(200):  # bounded wait for it to be running
                if api._running:
                    break
                await asyncio.sleep(0.01)
            assert api._running and pool.submitted == 0  # running, and on the loop
            assert await c.get(Q, query="vector(1)", timeout="0.3") == (503, {
                "status": "error", "errorType": "timeout",
                "error": "query timed out in query queue"})
            assert await first == (503, {"status": "error", "errorType": "timeout",
                                         "error": "query timed out in expression evaluation"})
            assert not api._running
            assert (await c.get(Q, query="vector(1)"))[0] == 200
    try:
        run(go())
    finally:
        hole.close()


def test_a_store_call_past_the_query_deadline_is_a_timeout_with_or_without_partial_response(
        tmp_path):
    """The loop path hands the query's deadline down to the store calls (no timer of its own):
    a call ended by it must still answer Prometheus's timeout, not a partial answer with a
    warning (partial_response=true) nor an endpoint error (false)."""
    from querier.endpoints import HealthOptions
    from querier_cluster import BlackHole
    hole = BlackHole()

    async def go():
        async with cluster(tmp_path, QueryConfig(timeout_s=5), extra_endpoints=(hole.address,),
                           health=HealthOptions(info_timeout_s=300.0)) as c:
            for partial in ("true", "false"):
                assert await c.get(Q, query="up", timeout="0.3", partial_response=partial) == (
                    503, {"status": "error", "errorType": "timeout",
                          "error": "query timed out in expression evaluation"}), partial
                assert not c.querier.api._running
    try:
        run(go())
    finally:
        hole.close()


PLAN_QUERIES = {  # query -> how many of its selects are known from the plan alone
    "m": 1, 'm{i="1"}': 1, "rate(c[5m])": 1, "sum by (job) (rate(m[1m]))": 1,
    "m offset 5m": 1, "rate(m[2m] offset 1h)": 1, "-(m) * 2": 1,
    "histogram_quantile(0.9, rate(m[5m]))": 1, "last_over_time(m[1h] offset -10m)": 1,
    'm{i=~""}': 1, "m + c": 2, "m / m": 1, 'sum(rate(m[5m])) / sum(rate(c[1m] offset 1m))': 2,
    "m @ 100": 0, "rate(m[5m] @ end())": 0, "m[2m]": 0, "rate(m[5m:1m])": 0, "vector(1)": 0,
    "rate(m[step()])": 0, "m offset (1h + 5m)": 0, "m + (c @ 100)": 1,
}


def test_the_selects_known_from_the_plan_are_the_ones_the_engine_asks_for():
    """querier.inline.plan_selects fetches plain selectors' data before the engine runs: each
    key must be exactly one the engine asks for (else a store call is wasted), at instant and
    range steps alike; the engine may ask for more (the selectors the plan does not tell)."""
    from querier.fanout import FanoutQueryable
    from querier.inline import LoopQueryable, _NeedSelect, plan_selects
    from querier.promql import Engine, EngineOptions
    from querier.promql.engine import parse
    lb = 300_000
    engine = Engine(EngineOptions(lookback_delta_ms=lb))
    for query, known in PLAN_QUERIES.items():
        for start, end, step in ((T0, T0, 0), (T0, T0 + 1_800_000, 7_000)):
            expr = parse(query)
            last = start + (end - start) // step * step if step else start
            planned = plan_selects(expr, start, last, lb)
            qa = LoopQueryable(FanoutQueryable(None, None))
            asked = []
            for _ in range(5):  # every select the engine makes, each answered with no series
                try:
                    if step:
                        engine.range(qa, query, start, end, step, expr)
                    else:
                        engine.instant(qa, query, start, expr)
                    break
                except _NeedSelect as need:
                    asked.append((need.key, need.range_ms))
                    qa.raw[need.key] = []
                except Exception:  # noqa: BLE001 -- e.g. a range vector in a range query
                    break
            assert len(planned) == known, (query, step)
            assert all(p in asked for p in planned), (query, step, planned, asked)


def test_sample_count_read_in_c_steps_is_the_chunk_headers_sum_even_for_short_chunks():
    """_samples reads each chunk's 16-bit count with struct (no generator); chunks shorter
    than two bytes are counted as the header reader always did (as far as they go)."""
    import random

    from querier.inline import _samples
    from storeapi.client import RawSeries

    def reference(raw):
        return sum(int.from_bytes(c[2][:2], "big") for s in raw for c in s.chunks)

    rng = random.Random(7)
    for _ in range(200):
        raw = [RawSeries((("i", str(k)),), [(0, 1, bytes(rng.randrange(256) for _ in range(
            rng.choice((0, 1, 2, 3, 40))))) for _ in range(rng.randrange(4))])
               for k in range(rng.randrange(4))]
        assert _samples(raw) == reference(raw)


def test_counting_a_fetched_select_is_fits_over_the_new_totals():
    """_count adds a selection to the totals and says whether the query still fits the loop:
    the same as _fits() over the new totals (and float-only data), at every limit's edge."""
    import random

    from querier.inline import InlineQuery, _samples
    from storeapi.client import RawSeries, chunk_count

    rng = random.Random(3)
    for _ in range(400):
        lim = InlineLimits(max_series=rng.randrange(5), max_chunks=rng.randrange(8),
                           max_samples=rng.randrange(0, 600, 50),
                           max_cost=rng.randrange(0, 3000, 100))
        q = InlineQuery(None, rng.randrange(1, 4), rng.randrange(1, 20),
                        rng.choice((0, 15_000)), lim)
        for _ in range(rng.randrange(1, 3)):
            raw = [RawSeries((("i", str(k)),), [(0, 1, rng.randrange(200).to_bytes(2, "big"))
                                                for _ in range(rng.randrange(3))],
                             rng.choice((False, False, None)))
                   for k in range(rng.randrange(3))]
            range_ms = rng.choice((0, 60_000))
            before = (q.series, q.chunks, q.samples, q.windows)
            got = q._count(raw, range_ms)
            if any(s.histograms is not False for s in raw) and before[0] + len(raw) <= lim.max_series:
                assert got is False  # native histograms may be in it: the worker decodes them
                break
            want_q = InlineQuery(None, q.nodes, q.steps, q.step_ms, lim)
            want_q.series = before[0] + len(raw)
            want_q.chunks = before[1] + chunk_count(raw)
            want_q.samples = before[2] + _samples(raw)
            want_q.windows = q.windows
            if want_q.series > lim.max_series:
                assert got is False
                break
            if want_q.chunks > lim.max_chunks:
                assert got is False
                break
            assert (q.series, q.chunks, q.samples) == (want_q.series, want_q.chunks, want_q.samples)
            assert got == want_q._fits()
            if not got:
                break


def test_an_engine_is_made_only_for_queries_the_engine_evaluates(tmp_path, monkeypatch):
    """A plain one-series range query answered by querier.plainrange makes no Engine; one the
    engine evaluates on the loop makes one, and so does one handed to the worker; the answers
    are the same either way."""
    import querier.api
    from querier.promql import Engine

    made = []

    class Counted(Engine):
        def __init__(self, *a, **kw) -> None:
            made.append(1)
            super().__init__(*a, **kw)
    monkeypatch.setattr(querier.api, "Engine", Counted)
    rng = {"start": str(T0 / 1000), "end": str(T0 / 1000 + 1800), "step": "15"}

    async def go():
        async with cluster(tmp_path) as c:
            await c.push(_series(3, 200))
            api = c.querier.api
            got = []
            for query, engines in (('m{i="1"}', 0), ('m{i="0"} / on() c', 1),
                                   ('m{i="1"}', 0)):
                made.clear()
                async with c.http.get(c.base + QR, params={"query": query, **rng}) as r:
                    got.append((r.status, await r.read()))
                assert len(made) == engines, query
            api.inline = WORKER_ONLY
            for query in ('m{i="1"}', 'm{i="0"} / on() c'):
                made.clear()
                async with c.http.get(c.base + QR, params={"query": query, **rng}) as r:
                    assert (r.status, await r.read()) == got[0 if query == 'm{i="1"}' else 1]
                assert len(made) == 1
            assert got[0][0] == got[1][0] == 200 and got[0] == got[2]
    run(go())
