"""The query API against hostile parameters and slow endpoints: Prometheus's error shapes for
every bad number, timeouts that answer at the deadline and cancel the fan-out, and an event
loop that keeps answering ``/-/ready`` while a heavy query runs.

Expected errors were taken from Debian's Prometheus 2.42 where it answers (``curl -G
.../api/v1/query --data-urlencode timeout=bogus`` etc.); where 2.42 overflows silently and
answers 200 with a garbage timestamp (``time=1e18``), the answer is a 400 with the same wording.
"""
from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson

from querier.config import QueryConfig
from querier.endpoints import HealthOptions
from querier_cluster import BlackHole, cluster, run

Q, QR = "/api/v1/query", "/api/v1/query_range"


def bad(msg: str) -> tuple[int, dict]:
    return 400, {"status": "error", "errorType": "bad_data", "error": msg}


def timeout(msg: str) -> tuple[int, dict]:
    return 503, {"status": "error", "errorType": "timeout", "error": msg}


STEP_NEG = ('invalid parameter "step": zero or negative query resolution step widths are not '
            "accepted. Try a positive integer")
TOO_MANY = ("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the "
            "query resolution (?step=XX)")

CASES = [
    # timeout: validated like Prometheus (duration or float seconds)
    (Q, {"query": "1", "timeout": "bogus"},
     bad('invalid parameter "timeout": cannot parse "bogus" to a valid duration')),
    (Q, {"query": "1", "timeout": "1e300"},
     bad('invalid parameter "timeout": cannot parse "1e300" to a valid duration. It overflows int64')),
    (Q, {"query": "1", "timeout": "-1"}, timeout("query timed out in query queue")),
    (Q, {"query": "1", "timeout": "NaN"}, timeout("query timed out in query queue")),
    (QR, {"query": "1", "start": "0", "end": "10", "step": "1", "timeout": "bogus"},
     bad('invalid parameter "timeout": cannot parse "bogus" to a valid duration')),
    ("/api/v1/labels", {"timeout": "1.5m"},
     bad('invalid parameter "timeout": cannot parse "1.5m" to a valid duration')),
    # times: anything that is not an int64 millisecond timestamp
    (Q, {"query": "1", "time": "1e18"},
     bad('invalid parameter "time": Invalid time value for \'time\': cannot parse "1e18" to a valid timestamp')),
    (Q, {"query": "1", "time": "NaN"},
     bad('invalid parameter "time": Invalid time value for \'time\': cannot parse "NaN" to a valid timestamp')),
    (Q, {"query": "1", "time": "-Inf"},
     bad('invalid parameter "time": Invalid time value for \'time\': cannot parse "-Inf" to a valid timestamp')),
    (Q, {"query": "1", "time": "2020-01-01"},
     bad('invalid parameter "time": Invalid time value for \'time\': cannot parse "2020-01-01" to a valid timestamp')),
    (QR, {"query": "1", "start": "0", "end": "1e300", "step": "1e290"},
     bad('invalid parameter "end": cannot parse "1e300" to a valid timestamp')),
    (QR, {"query": "1", "start": "", "end": "0", "step": "1"},
     bad('invalid parameter "start": cannot parse "" to a valid timestamp')),
    (QR, {"query": "1", "start": "100", "end": "0", "step": "1"},
     bad('invalid parameter "end": end timestamp must not be before start time')),
    ("/api/v1/series", {"match[]": "up", "start": "-1e300"},
     bad('invalid parameter "start": Invalid time value for \'start\': cannot parse "-1e300" to a valid timestamp')),
    ("/api/v1/label/job/values", {"end": "1e19"},
     bad('invalid parameter "end": Invalid time value for \'end\': cannot parse "1e19" to a valid timestamp')),
    # step
    (QR, {"query": "1", "start": "0", "end": "100", "step": "0"}, bad(STEP_NEG)),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "-1"}, bad(STEP_NEG)),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "NaN"}, bad(STEP_NEG)),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "Inf"},
     bad('invalid parameter "step": cannot parse "Inf" to a valid duration. It overflows int64')),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "1e300"},
     bad('invalid parameter "step": cannot parse "1e300" to a valid duration. It overflows int64')),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "bogus"},
     bad('invalid parameter "step": cannot parse "bogus" to a valid duration')),
    (QR, {"query": "1", "start": "0", "end": "100000", "step": "1"}, bad(TOO_MANY)),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "1e-6"}, bad(TOO_MANY)),
    (QR, {"query": "1", "start": "-9e15", "end": "9e15", "step": "1000000h"}, bad(TOO_MANY)),
    # limit (Prometheus >= 2.49 and Thanos) and Thanos's boolean parameters
    (Q, {"query": "1", "limit": "-1"}, bad('invalid parameter "limit": limit must be non-negative')),
    ("/api/v1/series", {"match[]": "up", "limit": "abc"},
     bad('invalid parameter "limit": strconv.Atoi: parsing "abc": invalid syntax')),
    ("/api/v1/labels", {"limit": "99999999999999999999"},
     bad('invalid parameter "limit": strconv.Atoi: parsing "99999999999999999999": value out of range')),
    (Q, {"query": "1", "partial_response": "maybe"},
     bad("'partial_response' parameter: strconv.ParseBool: parsing \"maybe\": invalid syntax")),
    (Q, {"query": "1", "dedup": "yes"},
     bad("'dedup' parameter: strconv.ParseBool: parsing \"yes\": invalid syntax")),
]


def test_numeric_parameters_get_prometheus_400s(tmp_path):
    async def go():
        async with cluster(tmp_path) as c:
            for path, params, want in CASES:
                assert await c.get(path, **params) == want, (path, params)
                if "/label/" not in path:  # label values are GET only, as in Prometheus
                    assert await c.post(path, **params) == want, (path, params)
            # The extremes that are valid still answer (no overflow further down).
            for t in ("9.2e15", "-9.2e15"):
                status, body = await c.get(Q, query="up offset -290y", time=t)
                assert status == 200, body
            status, body = await c.get(QR, query="1", start="0", end="0.01", step="1e-6")
            assert status == 200 and len(body["data"]["result"][0]["values"]) == 11, body
            # Client libraries' "no bound" spellings of Prometheus's min and max time.
            status, body = await c.get("/api/v1/series", **{
                "match[]": "up", "start": "-292273086-05-16T16:47:06Z",
                "end": "292277025-08-18T07:12:54.999999999Z"})
            assert status == 200, body
    run(go())


def test_overflow_anywhere_in_a_query_is_a_400_not_a_422_or_500(tmp_path):
    """Whatever raises OverflowError/ValueError while evaluating (here an @ time past int64
    milliseconds) is the user's bad input: 400 bad_data, never "Python int too large"."""
    async def go():
        async with cluster(tmp_path) as c:
            for q in ("up @ 9223372036854775", "rate(up[5m] @ 9223372036854775)"):
                status, body = await c.get(Q, query=q, time="9.2e15")
                assert (status, body["errorType"]) == (400, "bad_data"), body
                assert "Python int" not in body["error"], body
    run(go())


def test_limit_truncates_with_a_warning(tmp_path):
    async def go():
        async with cluster(tmp_path) as c:
            now = int(time.time()) * 1000
            await c.push([((("__name__", "lim"), ("i", str(i))), [now], [1.0]) for i in range(5)])
            status, body = await c.get(Q, query="lim", time=str(now / 1000), limit="2")
            assert status == 200 and len(body["data"]["result"]) == 2, body
            assert body["warnings"] == ["results truncated due to limit"]
            status, body = await c.get("/api/v1/label/i/values", limit="3")
            assert body["data"] == ["0", "1", "2"] and body["warnings"], body
            status, body = await c.get("/api/v1/series", **{"match[]": "lim", "limit": "4"})
            assert len(body["data"]) == 4 and body["warnings"], body
            status, body = await c.get("/api/v1/series", **{"match[]": "lim", "limit": "0"})
            assert len(body["data"]) == 5 and "warnings" not in body, body
    run(go())


def test_timeouts_answer_at_the_deadline_and_cancel_the_fanout(tmp_path):
    """An endpoint that accepts connections and never answers: the ``timeout`` parameter and
    ``--query.timeout`` both end every API call with Prometheus's timeout error, and the query
    slot is free again at once (with one slot, the next query is not stuck in the queue)."""
    hole = BlackHole()
    cfg = QueryConfig(timeout_s=1.5, max_concurrent=1)
    # Health checks must not take the black hole out of the queries during this test.
    health = HealthOptions(info_timeout_s=300.0)

    async def go():
        async with cluster(tmp_path, cfg, extra_endpoints=(hole.address,), health=health) as c:
            for _ in range(3):
                assert await c.get(Q, query="up", timeout="0.3") == timeout(
                    "query timed out in expression evaluation")
            assert await c.get(QR, query="up", start="0", end="100", step="1", timeout="300ms") == \
                timeout("query timed out in expression evaluation")
            # No parameter, or a longer one: --query.timeout (1.5 s) applies.
            assert await c.get(Q, query="up") == timeout("query timed out in expression evaluation")
            assert await c.post(Q, query="up", timeout="1h") == timeout(
                "query timed out in expression evaluation")
            for path, params in (("/api/v1/series", {"match[]": "up"}), ("/api/v1/labels", {}),
                                 ("/api/v1/label/job/values", {})):
                assert await c.get(path, timeout="0.3", **params) == timeout(
                    "context deadline exceeded"), path
            # The endpoint is still hung, yet nothing of those requests keeps a slot.
            assert await c.get(Q, query="up", timeout="0.3") == timeout(
                "query timed out in expression evaluation")
    try:
        run(go())
    finally:
        hole.close()


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def test_ready_answers_while_a_heavy_query_runs(tmp_path):
    """A range query over 40 series x 7,200 steps (~290k points of JSON) runs while
    ``/-/ready`` and ``/-/healthy`` are probed back to back; every probe must answer within a
    bounded wait (the encoding of the result happens in the worker, not on the event loop)."""
    async def go():
        async with cluster(tmp_path, QueryConfig(timeout_s=120)) as c:
            now = int(time.time()) * 1000
            ts = np.arange(now - 3_600_000, now, 15_000)
            rng = np.random.default_rng(1)
            await c.push([((("__name__", "heavy"), ("s", str(k))), ts, rng.random(len(ts)))
                          for k in range(40)])
            async def twice():
                for _ in range(2):
                    answer = await c.get(QR, query="heavy", start=str(now / 1000 - 3600),
                                         end=str(now / 1000), step="0.5")
                return answer
            heavy = asyncio.ensure_future(twice())
            latencies: list[float] = []
            while not heavy.done():
                for path in ("/-/ready", "/-/healthy"):
                    t0 = time.perf_counter()
                    async with c.http.get(c.base + path, timeout=5) as r:  # bounded wait
                        assert r.status == 200
                    latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.001)
            status, body = heavy.result()
            assert status == 200 and len(body["data"]["result"]) == 40
            assert len(latencies) >= 5, "the probes should run while the query runs"
            print(f"/-/ready+/-/healthy during a heavy query: n={len(latencies)} "
                  f"p50={_percentile(latencies, 0.5) * 1000:.1f}ms "
                  f"p99={_percentile(latencies, 0.99) * 1000:.1f}ms")
    run(go())


def test_malformed_form_bodies_are_400_not_500(tmp_path):
    """Also a form body that does not decode as its Content-Encoding says, on the routes
    aiohttp serves (found by tests/fuzz/test_fuzz_http_fronts.py: gzip or deflate garbage
    answered 500). The fast front (querier/fasthttp.py) reads query and query_range forms as
    Go's net/http does, Content-Encoding unread: not an error there."""
    form = "application/x-www-form-urlencoded"
    async def go():
        async with cluster(tmp_path) as c:
            for ctype, body, enc in (("multipart/form-data; boundary=xx", b"garbage", None),
                                     (form, b"\xff\xfe=1", None),
                                     (form, b"query=up&time=1", "gzip"),
                                     (form, b"query=up&time=1", "deflate")):
                headers = {"Content-Type": ctype}
                if enc:
                    headers["Content-Encoding"] = enc
                for path in ((Q, QR) if not enc else ()) + ("/api/v1/series", "/api/v1/labels"):
                    async with c.http.post(c.base + path, data=body, headers=headers) as r:
                        got = await r.json(content_type=None)
                        assert r.status == 400, got
                        assert got["errorType"] == "bad_data"
                        assert got["error"].startswith("error parsing form values: "), got
    run(go())


def test_large_bodies_are_encoded_in_pieces_with_the_same_bytes(monkeypatch):
    """The body is built in ~CHUNK_BYTES pieces (no single GIL-holding dumps of it all), and
    the pieces together are exactly what one orjson.dumps gives."""
    from querier import api
    from querier.promql import QueryResult
    monkeypatch.setattr(api, "CHUNK_BYTES", 200)
    ts = np.arange(0, 50_000, 500, dtype=np.int64)
    rows = [(((f"l{k}", "v"),), ts, np.linspace(0, 1, len(ts))) for k in range(20)]
    for res in (QueryResult("matrix", rows, ["w1"], ["i1"]), QueryResult("matrix", rows[:1]),
                QueryResult("matrix", []), QueryResult("vector", [(((("a", "1"),)), 5, 1.5)] * 3),
                QueryResult("scalar", (1000, 2.0))):
        payload = api.result_payload(res)
        chunks = api.result_chunks(payload)
        assert b"".join(chunks) == orjson.dumps(payload)
        assert len(chunks) == (21 if len(res.series) == 20 else 1) or res.kind == "vector"
    data = [{"__name__": "m", "i": str(i)} for i in range(100)]
    chunks = api.metadata_to_json(data, 0, ["x"])
    assert len(chunks) > 10
    assert orjson.loads(b"".join(chunks)) == {"status": "success", "data": data, "warnings": ["x"]}
    assert orjson.loads(b"".join(api.metadata_to_json([], 0, []))) == {"status": "success", "data": []}


def test_stopping_the_querier_ends_running_queries(tmp_path):
    """A query waiting on a hung endpoint must not keep its worker (and so the process exit)
    until its timeout: closing the API cancels its store calls and the worker ends."""
    hole = BlackHole()

    async def go():
        async with cluster(tmp_path, QueryConfig(timeout_s=120), extra_endpoints=(hole.address,),
                           health=HealthOptions(info_timeout_s=300.0)) as c:
            api = c.querier.api
            pending = asyncio.ensure_future(c.get(Q, query="up"))
            for _ in range(200):  # bounded wait for the query to be running
                if api._running:
                    break
                await asyncio.sleep(0.05)
            assert api._running
            api.close()
            for _ in range(200):  # bounded wait for its worker to end
                if not api._running:
                    break
                await asyncio.sleep(0.05)
            assert not api._running, "the worker is still waiting on the hung endpoint"
            assert (await pending)[0] == 503
    try:
        run(go())
    finally:
        hole.close()


def test_head_of_a_piecewise_body_sends_no_body(tmp_path, monkeypatch):
    """HEAD is refused 405 (as Thanos's querier) with no body; a body after a HEAD answer
    would be read by the client as the next response on the same connection."""
    from querier import api
    monkeypatch.setattr(api, "CHUNK_BYTES", 100)

    async def go():
        async with cluster(tmp_path) as c:
            now = int(time.time()) * 1000
            await c.push([((("__name__", "h"), ("i", str(i))), [now], [1.0]) for i in range(50)])
            params = {"query": "h", "time": str(now / 1000)}
            async with c.http.head(c.base + Q, params=params) as r:
                assert r.status == 405 and await r.read() == b""
            for _ in range(2):  # the same keep-alive connection still works
                async with c.http.get(c.base + Q, params=params) as r:
                    body = await r.read()
                    assert r.status == 200
                    assert len(orjson.loads(body)["data"]["result"]) == 50
    run(go())


def test_long_get_urls_and_headers_are_served_as_prometheus_does(tmp_path):
    """Go's net/http takes a request line and headers of up to 1 MiB; aiohttp's default is
    8 KiB per line, so a GET query of 10 KiB (a long PromQL, many match[]) that Prometheus
    answers got a plain-text 400 (seen fuzzing the HTTP front)."""
    query = f'label_replace(vector(1500), "x", "{"y" * 18_000}", "", "")'  # ~18 KiB
    async def go():
        async with cluster(tmp_path) as c:
            async with c.http.get(c.base + Q, params={"query": query, "time": "1000"},
                                  headers={"X-Long": "v" * 20_000}) as r:
                got = r.status, await r.json(content_type=None)
        assert got[0] == 200, got
        assert got[1]["data"]["result"][0]["value"] == [1000, "1500"]
    run(go())


def test_infinite_max_source_resolution_is_bad_data_not_500(tmp_path):
    """max_source_resolution=Inf (or 1e309) overflowed converting to milliseconds: a 500 with
    a traceback (found by tests/fuzz/test_fuzz_http_fronts.py). Thanos answers 400."""
    async def go():
        async with cluster(tmp_path) as c:
            for value in ("Inf", "-Inf", "+Inf", "1e309", "NaN"):
                for path, extra in ((Q, {"time": "1000"}),
                                    (QR, {"start": "0", "end": "100", "step": "10"})):
                    async with c.http.get(c.base + path, params={
                            "query": "1", "max_source_resolution": value, **extra}) as r:
                        got = await r.json(content_type=None)
                        assert r.status == 400, (value, path, got)
                        assert got["errorType"] == "bad_data", got
                        assert "max_source_resolution" in got["error"], got
    run(go())


def test_a_form_body_that_never_arrives_is_not_waited_for_forever(tmp_path, monkeypatch):
    """A POST whose body stops short of its Content-Length held its connection and handler
    forever (seen probing the HTTP front after fuzzing). Prometheus's --web.read-timeout (5 m)
    bounds reading a request; ours is BODY_READ_TIMEOUT_S: then 400 and the connection closes."""
    from querier import api
    monkeypatch.setattr(api, "BODY_READ_TIMEOUT_S", 0.5)
    async def go():
        async with cluster(tmp_path) as c:
            host, port = c.base.removeprefix("http://").split(":")
            out = {}
            for path in ("/api/v1/labels",):  # (query's fast front hands such a request here)
                r, w = await asyncio.open_connection(host, int(port))
                w.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                        "x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nquery=1".encode())
                out[path] = await asyncio.wait_for(r.read(), 20)  # until the server closes
                w.close()
            return out
    for path, answer in run_value(go()).items():
        assert answer.startswith(b"HTTP/1.1 400"), (path, answer[:200])
        assert b"error parsing form values" in answer, (path, answer[-200:])


def run_value(coro):
    return asyncio.run(coro)


def test_a_query_s_timeout_parameter_is_read_as_before():
    """_timeout_s: absent or empty -> --query.timeout; else the parameter, capped by it; a bad
    duration is bad_data."""
    import pytest

    from querier.api import QueryAPI
    from querier.config import QueryConfig
    from querier.params import BadParam
    api = QueryAPI.__new__(QueryAPI)  # only cfg is read by _timeout_s
    api.cfg = QueryConfig(timeout_s=120.0)
    assert api._timeout_s({}) == api._timeout_s({"timeout": [""]}) == 120.0
    assert api._timeout_s({"timeout": ["30s", "1s"]}) == 30.0
    assert api._timeout_s({"timeout": ["5m"]}) == 120.0
    with pytest.raises(BadParam):
        api._timeout_s({"timeout": ["soon"]})
