"""Status endpoints, format_query, query_exemplars, ``stats``, gzip, CORS and parse-error
positions of the query API, in the shapes Prometheus answers with (field names taken from
Debian's Prometheus 2.42 and Prometheus 3.x's web/api/v1/api.go)."""
from __future__ import annotations

import gzip
import os
import time

import pytest

from querier.config import QueryConfig
from querier.promql import PromQLError
from querier_cluster import cluster, run

Q, QR = "/api/v1/query", "/api/v1/query_range"


def test_status_endpoints_answer_in_prometheus_shapes(tmp_path):
    cfg = QueryConfig(flags={"query.timeout": "2m", "web.cors.origin": ".*"})

    async def go():
        async with cluster(tmp_path, cfg) as c:
            status, body = await c.get("/api/v1/status/buildinfo")
            assert status == 200 and set(body["data"]) == {
                "version", "revision", "branch", "buildUser", "buildDate", "goVersion"}
            assert int(body["data"]["version"].split(".")[0]) >= 3, body  # Grafana: current Prometheus
            status, body = await c.get("/api/v1/status/flags")
            assert (status, body) == (200, {"status": "success", "data": cfg.flags})
            status, body = await c.get("/api/v1/status/config")
            assert status == 200 and isinstance(body["data"]["yaml"], str), body
            assert "lookback_delta" in body["data"]["yaml"], body
            status, body = await c.get("/api/v1/status/runtimeinfo")
            d = body["data"]
            assert status == 200 and {"startTime", "CWD", "hostname", "serverTime",
                                      "reloadConfigSuccess", "lastConfigTime", "corruptionCount",
                                      "goroutineCount", "GOMAXPROCS", "GOMEMLIMIT", "GOGC",
                                      "GODEBUG", "storageRetention"} == set(d), d
            # The Python process's own figures (the UI's status page) have their own endpoint.
            status, body = await c.get("/api/v1/status/process")
            assert status == 200 and {"pid", "threadCount", "cpuCount", "pythonVersion"} <= set(body["data"])
            assert d["CWD"] == os.getcwd() and d["GOMAXPROCS"] == os.cpu_count()
            assert d["startTime"].endswith("Z") and d["goroutineCount"] >= 1
            now = int(time.time()) * 1000
            await c.push([((("__name__", "m1"), ("i", str(i))), [now], [1.0]) for i in range(3)]
                         + [((("__name__", "m2"), ("i", "0")), [now], [1.0])])
            status, body = await c.get("/api/v1/status/tsdb")
            d = body["data"]
            assert status == 200 and set(d) == {
                "headStats", "seriesCountByMetricName", "labelValueCountByLabelName",
                "memoryInBytesByLabelName", "seriesCountByLabelValuePair"}, d
            assert set(d["headStats"]) == {"numSeries", "numLabelPairs", "chunkCount",
                                           "minTime", "maxTime"}
            assert d["headStats"]["numSeries"] == 4
            assert d["seriesCountByMetricName"] == [{"name": "m1", "value": 3},
                                                    {"name": "m2", "value": 1}]
            assert {"name": "i", "value": 3} in d["labelValueCountByLabelName"]
            assert d["seriesCountByLabelValuePair"][:2] == [
                {"name": "tenant_id=default-tenant", "value": 4}, {"name": "__name__=m1", "value": 3}]
            status, body = await c.get("/api/v1/status/tsdb", limit="1")
            assert len(body["data"]["seriesCountByMetricName"]) == 1, body
    run(go())


def test_format_query_and_query_exemplars(tmp_path):
    async def go():
        async with cluster(tmp_path) as c:
            for call in (c.get, c.post):
                assert await call("/api/v1/format_query", query="sum(rate(x[5m]))by(job)") == (
                    200, {"status": "success", "data": "sum by (job) (rate(x[5m]))"})
                assert await call("/api/v1/format_query", query="sum(") == (400, {
                    "status": "error", "errorType": "bad_data",
                    "error": 'invalid parameter "query": 1:5: parse error: unclosed left parenthesis'})
                assert await call("/api/v1/query_exemplars", query="up", start="0", end="100") == (
                    200, {"status": "success", "data": []})
            assert await c.get("/api/v1/query_exemplars", query="up(") == (400, {
                "status": "error", "errorType": "bad_data",
                "error": "1:4: parse error: unclosed left parenthesis"})
    run(go())


@pytest.mark.parametrize("query,error", [
    ("sum(rate(x[5m])", "1:16: parse error: unclosed left parenthesis"),
    ("foo{", "1:5: parse error: unexpected end of input inside braces"),
    ("1+", "1:3: parse error: unexpected end of input"),
    ("x[5m", "1:5: parse error: unclosed left bracket"),
    ("rate(x[5m]) +", "1:14: parse error: unexpected end of input"),
    ("sum(x) + foo(y)", '1:10: parse error: unknown function with name "foo"'),
    ('abs(x) + abs("a,b", y)', '1:10: parse error: expected 1 argument(s) in call to "abs", got 2'),
    ("sum by (a) (x) + topk by (a) (x)", "1:18: parse error: wrong number of arguments for "
                                         "aggregate expression provided, expected 2, got 1"),
    ("rate(x)", '1:6: parse error: expected type range vector in call to function "rate", got '
                "instant vector"),
    ("x[1m:] anchored", "1:1: parse error: anchored modifier is experimental and not enabled"),
    ("a + fill(0) b", "1:1: parse error: binop fill modifiers are experimental and not enabled"),
])
def test_parse_errors_carry_prometheus_positions(tmp_path, query, error):
    async def go():
        async with cluster(tmp_path) as c:
            status, body = await c.get(Q, query=query)
            assert status == 400, body
            assert body["error"] == f'invalid parameter "query": {error}'
    run(go())


def test_stats_all_adds_prometheus_stats_object(tmp_path):
    async def go():
        async with cluster(tmp_path) as c:
            now = int(time.time()) * 1000
            await c.push([((("__name__", "st"), ("i", str(i))), [now - 1000, now], [1.0, 2.0])
                          for i in range(3)])
            status, body = await c.get(Q, query="st", time=str(now / 1000))
            assert "stats" not in body["data"], body
            status, body = await c.get(Q, query="sum(st)", time=str(now / 1000), stats="all")
            stats = body["data"]["stats"]
            assert set(stats["timings"]) == {"evalTotalTime", "resultSortTime", "queryPreparationTime",
                                             "innerEvalTime", "execQueueTime", "execTotalTime"}
            assert stats["samples"]["totalQueryableSamples"] == 6, stats
            assert stats["samples"]["peakSamples"] >= 3, stats
            status, body = await c.post(QR, query="st", start=str(now / 1000 - 1),
                                        end=str(now / 1000), step="1", stats="all")
            assert status == 200 and body["data"]["stats"]["samples"]["peakSamples"] >= 6, body
    run(go())


def test_gzip_when_asked_and_only_for_bodies_worth_it(tmp_path, monkeypatch):
    import querier.api
    monkeypatch.setattr(querier.api, "CHUNK_BYTES", 4096)  # the piecewise answer is gzipped too

    async def go():
        async with cluster(tmp_path) as c:
            now = int(time.time()) * 1000
            await c.push([((("__name__", "gz"), ("i", str(i))), [now], [1.0]) for i in range(200)])
            url = c.base + Q
            params = {"query": "gz", "time": str(now / 1000)}
            async with c.http.get(url, params=params, headers={"Accept-Encoding": "gzip"},
                                  auto_decompress=False) as r:
                raw = await r.read()
                assert r.headers.get("Content-Encoding") == "gzip", r.headers
            body = gzip.decompress(raw)
            assert len(body) > len(raw) and body.count(b'"gz"') == 200
            async with c.http.get(url, params=params, headers={"Accept-Encoding": "identity"},
                                  auto_decompress=False) as r:
                assert "Content-Encoding" not in r.headers
            async with c.http.get(url, params={"query": "1"}, headers={"Accept-Encoding": "gzip"},
                                  auto_decompress=False) as r:
                assert "Content-Encoding" not in r.headers  # a tiny body is sent as it is
    run(go())


def test_cors_headers_as_prometheus(tmp_path):
    async def go():
        async with cluster(tmp_path) as c:
            async with c.http.get(c.base + Q, params={"query": "1"},
                                  headers={"Origin": "http://x.example"}) as r:
                assert r.headers["Access-Control-Allow-Origin"] == "*"
                assert r.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
                assert r.headers["Access-Control-Allow-Headers"] == \
                    "Accept, Authorization, Content-Type, Origin"
                assert r.headers["Access-Control-Expose-Headers"] == "Date"
            async with c.http.options(c.base + Q, headers={"Origin": "http://x.example"}) as r:
                assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
            async with c.http.get(c.base + Q, params={"query": "1"}) as r:
                assert "Access-Control-Allow-Origin" not in r.headers
        async with cluster(tmp_path / "b", QueryConfig(cors_origin=r"https://ok\.example")) as c:
            for origin, allowed in (("https://ok.example", True), ("https://ok.example.evil", False)):
                async with c.http.get(c.base + Q, params={"query": "1"},
                                      headers={"Origin": origin}) as r:
                    assert r.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)
    run(go())


def test_cli_passes_its_flags_and_cors_origin_to_the_querier():
    from promring.cli import build_parser, command_flags, query_config
    parser = build_parser()
    a = parser.parse_args(["query", "--web.cors.origin", r"https://a\.example", "--query.timeout",
                           "1m", "--endpoint", "127.0.0.1:1"])
    cfg = query_config(a, a.endpoints)
    assert cfg.cors_origin == r"https://a\.example"
    assert cfg.flags["query.timeout"] == "1m" and cfg.flags["endpoint"] == "127.0.0.1:1"
    assert cfg.flags["web.cors.origin"] == r"https://a\.example"
    assert cfg.flags["query.partial-response"] == "true"
    a = parser.parse_args(["up", "--objstore.config", "type: S3\nconfig: {secret_key: x}"])
    assert command_flags(a)["objstore.config"] == "<secret>"
    a = parser.parse_args(["query", "--web.cors.origin", "(unclosed"])
    with pytest.raises(ValueError, match="--web.cors.origin"):
        query_config(a, [])


def test_a_hostile_query_is_refused_boundedly():
    """200 nested calls with 100,000 arguments: refused with a parse error, quickly."""
    from querier.promql.engine import parse
    q = "abs(" * 200 + "x" + ",y" * 100_000 + ")" * 200
    with pytest.raises(PromQLError) as e:
        parse(q)
    assert e.value.kind == "bad_data" and "nests too deeply" in e.value.msg
    q = "abs(" * 50 + "x" + ",y" * 100_000 + ")" * 50
    with pytest.raises(PromQLError) as e:
        parse(q)
    assert e.value.msg == 'invalid parameter "query": 1:197: parse error: expected 1 argument(s) in call to "abs", got 100001'
