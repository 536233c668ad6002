"""Compressed query answers: negotiated as Thanos v0.42's querier does (gzip only, q-values,
any letter case; Vary on every answer), byte-identical to the plain answer once decompressed,
on every path: small bodies compressed on the loop, large ones in a thread, streamed ones piece
by piece. HEAD is refused 405, as Thanos's and Prometheus's API do."""
from __future__ import annotations

import gzip
import time

import pytest

import common.httpgzip
import querier.api
from common.httpgzip import negotiate
from querier_cluster import cluster, run

QR = "/api/v1/query_range"

# (Accept-Encoding, the Content-Encoding Thanos v0.42.4's querier answers with; checked
# against it by tests/e2e/test_query_http_thanos.py)
NEGOTIATION = [("gzip", "gzip"), ("deflate", None), ("gzip, deflate", "gzip"),
               ("deflate, gzip", "gzip"), ("br, gzip", "gzip"), (" gzip ", "gzip"),
               ("gzip;q=0", None), ("gzip;q=1.0", "gzip"), ("gzip; q=0.5", "gzip"),
               ("identity", None), ("*", None), ("GZIP", "gzip"), ("", None), ("br", None),
               ("x-gzip", None)]


@pytest.mark.parametrize("accept,coding", NEGOTIATION)
def test_negotiation_as_thanos_querier(accept, coding):
    got = negotiate(accept)
    assert (got.name if got else None) == coding


def _decoded(raw: bytes, coding: str | None) -> bytes:
    if coding == "gzip":
        return gzip.decompress(raw)
    assert coding is None, coding
    return raw


async def _answers(c, params: dict, method: str = "GET") -> dict:
    """{Accept-Encoding or None: (status, headers, raw body)} for one query."""
    out = {}
    for accept in [None] + [a for a, _ in NEGOTIATION]:
        headers = {} if accept is None else {"Accept-Encoding": accept}
        skip = ["Accept-Encoding"] if accept is None else []
        async with c.http.request(method, c.base + QR, params=params, headers=headers,
                                  skip_auto_headers=skip, auto_decompress=False) as r:
            out[accept] = (r.status, r.headers.copy(), await r.read())
    return out


def _check(answers: dict, expect_big: bool = True) -> None:
    status, headers, plain = answers[None]
    assert status == 200 and "Content-Encoding" not in headers and b'"ge"' in plain
    assert headers.getall("Vary") == ["Accept-Encoding"]  # on plain answers too
    assert int(headers["Content-Length"]) == len(plain)
    for accept, coding in NEGOTIATION:
        status, headers, raw = answers[accept]
        assert status == 200 and headers.get("Content-Encoding") == coding, (accept, headers)
        assert _decoded(raw, coding) == plain, accept  # the exact plain answer
        if coding:
            assert len(raw) < len(plain) and headers.getall("Vary") == ["Accept-Encoding"]
            if "Content-Length" in headers:  # absent when streamed (chunked)
                assert int(headers["Content-Length"]) == len(raw)


async def _push(c, n: int) -> dict:
    now = int(time.time()) * 1000
    await c.push([((("__name__", "ge"), ("i", str(i))), [now - 60_000, now], [1.5, i / 7])
                  for i in range(n)])
    return {"query": "ge", "start": str(now / 1000 - 60), "end": str(now / 1000), "step": "15"}


def test_compressed_answers_are_the_plain_answer(tmp_path):
    async def go():
        async with cluster(tmp_path) as c:
            params = await _push(c, 300)
            _check(await _answers(c, params))
            _check(await _answers(c, params, "POST"))
    run(go())


def test_large_bodies_compressed_in_a_thread_and_streamed(tmp_path, monkeypatch):
    """Past INLINE_MAX_BYTES the body is compressed in a worker; past CHUNK_BYTES the answer
    is streamed in pieces, each compressed: both decompress to the plain answer."""
    async def go():
        async with cluster(tmp_path) as c:
            params = await _push(c, 300)
            monkeypatch.setattr(common.httpgzip, "INLINE_MAX_BYTES", 2048)
            _check(await _answers(c, params))
            monkeypatch.setattr(querier.api, "CHUNK_BYTES", 4096)
            answers = await _answers(c, params)
            assert "Content-Length" not in answers["gzip"][1]  # streamed, chunked
            _check(answers)
    run(go())


def test_head_is_refused_as_thanos_and_prometheus_do(tmp_path):
    async def go():
        async with cluster(tmp_path) as c:
            params = await _push(c, 300)
            async with c.http.head(c.base + QR, params=params,
                                   headers={"Accept-Encoding": "gzip"}) as r:
                assert r.status == 405 and "Content-Encoding" not in r.headers
                assert r.headers["Allow"] == "GET, OPTIONS, POST"
                assert int(r.headers["Content-Length"]) == len(b"Method Not Allowed\n")
            async with c.http.put(c.base + QR, params=params) as r:
                assert (r.status, await r.read()) == (405, b"Method Not Allowed\n")
                assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
            async with c.http.head(c.base + "/api/v1/status/buildinfo") as r:
                assert (r.status, r.headers["Allow"]) == (405, "GET, OPTIONS")
    run(go())


def test_cors_vary_keeps_origin_and_encoding(tmp_path):
    async def go():
        async with cluster(tmp_path) as c:
            params = await _push(c, 300)
            async with c.http.get(c.base + QR, params=params, auto_decompress=False,
                                  headers={"Accept-Encoding": "gzip",
                                           "Origin": "http://x.example"}) as r:
                assert r.headers["Content-Encoding"] == "gzip"
                assert r.headers["Access-Control-Allow-Origin"] == "*"
                # Prometheus 3's lines and order: its gzip handler's first, then CORS's
                assert r.headers.getall("Vary") == ["Accept-Encoding", "Origin"], r.headers
    run(go())


def test_a_handlers_own_content_length_does_not_outlive_compression():
    """The length sent is the compressed body's, even when the handler set the plain one's."""
    import asyncio

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from common.httpgzip import compress_response

    plain = b'{"status":"success","data":[' + b'"abcdefgh",' * 600 + b'"x"]}'
    resp = web.Response(body=plain, headers={"Content-Length": str(len(plain))})
    request = make_mocked_request("GET", "/api/v1/labels", headers={"Accept-Encoding": "gzip"})
    asyncio.run(compress_response(request, resp))
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.content_length == len(resp.body) < len(plain)
    assert gzip.decompress(resp.body) == plain
