"""Status endpoints, format_query, query_exemplars, ``stats``, CORS and parse errors, diffed
against Debian's Prometheus 2.42 on a free port: same status and JSON shape (every field 2.42
has; Prometheus 3.x adds hostname, serverTime and GOMEMLIMIT to runtimeinfo, which we have too),
and the same texts where the answer is deterministic."""
from __future__ import annotations

import shutil

import aiohttp
import pytest

from harness import answers_of_prometheus_and_querier
from peers import peer
from querier.config import QueryConfig

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus package is not installed")

SHAPES = ["/api/v1/status/buildinfo", "/api/v1/status/config", "/api/v1/status/flags",
          "/api/v1/status/runtimeinfo", "/api/v1/status/tsdb",
          "/api/v1/query?query=1&stats=all"]
# Answers that must be equal byte for byte in their JSON (status, data or error text).
EXACT = [
    ("/api/v1/format_query", {"query": "sum(rate(x[5m]))by(job)"}),
    ("/api/v1/format_query", {"query": "a / on(b) group_left(c) d"}),
    ("/api/v1/format_query", {"query": 'foo{a="b",c!~"d"} offset 5m'}),
    ("/api/v1/format_query", {"query": "x[5m:1m] @ 100"}),
    ("/api/v1/format_query", {"query": "sum("}),
    ("/api/v1/query_exemplars", {"query": "up", "start": "0", "end": "100"}),
    ("/api/v1/query_exemplars", {"query": "up("}),
    ("/api/v1/query", {"query": "sum(rate(x[5m])"}),
    ("/api/v1/query", {"query": "foo{"}),
    ("/api/v1/query", {"query": "x[5m"}),
    ("/api/v1/query", {"query": "1+"}),
    ("/api/v1/query", {"query": "rate(x[5m]) /\n  "}),
    ("/api/v1/query", {"query": "sum(x) + foo(y)"}),
    ("/api/v1/query", {"query": "a\n + foo(b)"}),
    ("/api/v1/query", {"query": 'abs(x) + abs("a,b", y)'}),
    ("/api/v1/query", {"query": "label_replace(x)"}),
    ("/api/v1/query", {"query": "sum by (a) (x) + topk by (a) (x)"}),
]
CORS = ["Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers", "Access-Control-Expose-Headers", "Vary"]


# Prometheus 3.14's parser says "expected number, duration, step(), or range()" after a bare
# `offset` (duration expressions); 2.42 and the 3.16 peer say "expected duration". Ours follows
# 3.14 (tests/unit/test_promql_parser.py), so that text is compared with neither here.


def _without(shape: dict, path: str, *fields: str) -> dict:
    """``shape`` without the given stats sample fields (for /query?stats=all)."""
    if "stats=all" not in path:
        return shape
    samples = {k: v for k, v in shape["stats"]["samples"].items() if k not in fields}
    return {**shape, "stats": {**shape["stats"], "samples": samples}}


def _shape(v):
    if isinstance(v, dict):
        return {k: _shape(x) for k, x in v.items()}
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return "number"  # JSON has one number type (Go prints a zero duration as 0)
    return type(v).__name__


async def _answers(base: str) -> dict:
    out: dict = {"shapes": {}, "exact": [], "cors": {}}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for path in SHAPES:
            async with http.get(base + path) as r:
                out["shapes"][path] = (r.status, await r.json(content_type=None))
        for path, params in EXACT:
            for method in ("GET", "POST"):
                kw = {"params": params} if method == "GET" else {"data": params}
                async with http.request(method, base + path, **kw) as r:
                    out["exact"].append((method, path, params, r.status,
                                         await r.json(content_type=None)))
        for method in ("GET", "OPTIONS"):
            async with http.request(method, base + "/api/v1/query", params={"query": "1"},
                                    headers={"Origin": "http://x.example"}) as r:
                out["cors"][method] = (r.status, {h: ", ".join(r.headers.getall(h, ()))
                                                  for h in CORS})
    return out


def test_status_answers_match_prometheus_242(tmp_path):
    theirs, mine = answers_of_prometheus_and_querier(
        tmp_path, _answers, QueryConfig(flags={"query.timeout": "2m"}))
    for path in SHAPES:
        (ts, tb), (ms, mb) = theirs["shapes"][path], mine["shapes"][path]
        assert (ms, mb["status"]) == (ts, tb["status"]) == (200, "success"), (path, mb)
        t_shape, m_shape = _shape(tb["data"]), _shape(mb["data"])
        if path.endswith("/flags"):
            continue  # a map of strings either way; the flags themselves differ
        if path.endswith("/runtimeinfo"):
            m_shape = {k: v for k, v in m_shape.items()
                       if k not in ("hostname", "serverTime", "GOMEMLIMIT")}
        m_shape = _without(m_shape, path, "samplesRead")  # Prometheus 3's, not 2.42's
        assert m_shape == t_shape, (path, m_shape, t_shape)
    diffs = [(t[:3], t[3:], m[3:]) for t, m in zip(theirs["exact"], mine["exact"]) if t != m]
    assert not diffs, "\n".join(f"{req}:\n  prometheus {t}\n  promring   {m}" for req, t, m in diffs)
    # Every answer also varies by Accept-Encoding, as Thanos v0.42's querier and Prometheus 3's
    # gzip handler send it (tests/e2e/test_query_http_thanos.py); 2.42 says so only on compressed
    # answers. The rest of Vary (Origin) and every other CORS header are 2.42's.
    assert {m: (c, {**hs, "Vary": hs["Vary"].removeprefix("Accept-Encoding, ")})
            for m, (c, hs) in mine["cors"].items()} == theirs["cors"]


def test_status_answers_match_prometheus_3(tmp_path):
    """The same endpoints against the Prometheus 3 reference peer: every JSON shape it answers
    with, its CORS headers, and the parse and format texts of our Prometheus 3.14 parser."""
    theirs, mine = answers_of_prometheus_and_querier(
        tmp_path, _answers, QueryConfig(flags={"query.timeout": "2m"}), prometheus=peer("prometheus"))
    for path in SHAPES:
        (ts, tb), (ms, mb) = theirs["shapes"][path], mine["shapes"][path]
        assert (ms, mb["status"]) == (ts, tb["status"]) == (200, "success"), (path, mb)
        if path.endswith("/flags"):
            continue
        t_shape, m_shape = _shape(tb["data"]), _shape(mb["data"])
        t_shape = _without(t_shape, path, "seriesTouched")  # new in 3.16; 3.14 has no such field
        assert m_shape == t_shape, (path, m_shape, t_shape)
    diffs = [(t[:3], t[3:], m[3:]) for t, m in zip(theirs["exact"], mine["exact"]) if t != m]
    assert not diffs, "\n".join(f"{req}:\n  prometheus {t}\n  promring   {m}" for req, t, m in diffs)
    # 3.14 answers the default --web.cors.origin (.*) with "*" (util/httputil/cors.go, as 2.42
    # and the test above) and one Vary header; the 3.16 peer echoes the Origin and puts its gzip
    # handler's Vary first. Every other CORS header is compared.
    def strip(cors: dict) -> dict:
        return {m: (c, {h: v for h, v in hs.items() if h not in ("Access-Control-Allow-Origin", "Vary")})
                for m, (c, hs) in cors.items()}
    assert strip(mine["cors"]) == strip(theirs["cors"])
