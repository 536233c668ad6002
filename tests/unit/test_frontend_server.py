"""The query frontend in-process against a scripted downstream (a peer that fails on demand):
retries, tenant-separated cache entries, forwarded headers, limits, compression, slow-query
log."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web

from certs import PKI
from frontend.config import FrontendConfig, InMemoryCacheConfig
from frontend.flags import frontend_config
from frontend.server import QueryFrontend
from promring.cli import build_parser

DAY = 86_400


class Scripted:
    """A Prometheus-like query_range answering one series whose value names the tenant; the
    first ``fail`` requests get ``status``."""

    def __init__(self, fail: int = 0, status: int = 503, headers: dict | None = None) -> None:
        self.fail, self.status, self.headers = fail, status, headers or {}
        self.seen: list[tuple[str, dict, dict]] = []

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post()) if request.method == "POST" else dict(request.query)
        self.seen.append((request.path, form, dict(request.headers)))
        if self.status == 200 and len(self.seen) <= self.fail:
            return web.Response(body=b'{"status":"success","data":{"resultType":"vector"')
        if len(self.seen) <= self.fail:
            return web.json_response({"status": "error", "errorType": "x", "error": "no"},
                                     status=self.status)
        if request.path != "/api/v1/query_range":
            return web.json_response({"status": "success", "data": ["x" * 2000]})
        try:
            start, end, step = float(form["start"]), float(form["end"]), float(form["step"])
        except ValueError:
            return web.json_response({"status": "error", "errorType": "bad_data", "error": "x"},
                                     status=400)
        tenant = request.headers.get("THANOS-TENANT", "none")
        n = int((end - start) // step) + 1
        label = tenant + "".join(f"|{form[k]}" for k in ("dedup", "max_source_resolution")
                                 if k in form)
        values = [[start + i * step, label] for i in range(n)]
        return web.json_response({"status": "success", "data": {"resultType": "matrix",
                                  "result": [{"metric": {"t": tenant}, "values": values}]}},
                                 headers=self.headers)


async def _serve(scripted: Scripted) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


def run(scripted: Scripted, cfg: FrontendConfig, body) -> None:
    async def go():
        runner, url = await _serve(scripted)
        fe = QueryFrontend(replace(cfg, http_address="127.0.0.1:0", downstream_url=url))
        await fe.start()
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{fe.port}") as s:
                await body(s, fe)
        finally:
            await fe.stop()
            await runner.cleanup()
    asyncio.run(go())


def _range(days: int = 3, **extra) -> dict:
    return {"query": "up", "start": "0", "end": str(days * DAY), "step": "3600", **extra}


def test_5xx_parts_are_retried_4xx_are_not():
    flaky = Scripted(fail=2, status=503)

    async def body(s, fe):
        async with s.get("/api/v1/query_range", params=_range(1)) as r:
            assert r.status == 200
            assert len((await r.json())["data"]["result"][0]["values"]) == 25
    run(flaky, FrontendConfig(max_retries=3), body)
    assert len(flaky.seen) == 2 + 2  # two parts (day 0 and the point at day 1), two 503s retried

    bad = Scripted(fail=100, status=422)

    async def body4(s, fe):
        async with s.get("/api/v1/query_range", params=_range(0)) as r:
            assert r.status == 422 and (await r.json())["error"] == "no"
    run(bad, FrontendConfig(max_retries=5), body4)
    assert len(bad.seen) == 1


def test_cache_entries_are_per_tenant_and_headers_forwarded():
    down = Scripted()

    async def body(s, fe):
        for _ in range(2):
            for tenant in ("a", "b"):
                async with s.get("/api/v1/query_range", params=_range(3),
                                 headers={"THANOS-TENANT": tenant, "X-Keep": "1", "X-Drop": "1"}) as r:
                    values = (await r.json())["data"]["result"][0]["values"]
                    assert {v[1] for v in values} == {tenant} and len(values) == 3 * 24 + 1
    cfg = FrontendConfig(cache=InMemoryCacheConfig(max_size_items=100), forward_headers=("X-Keep",),
                         max_freshness_ms=0)
    run(down, cfg, body)
    assert len(down.seen) == 2 * 4  # 4 day parts per tenant; the second round from the cache
    path, form, headers = down.seen[0]
    assert headers["X-Keep"] == "1" and "X-Drop" not in headers
    assert form["partial_response"] == "true"


def test_answers_the_downstream_marks_no_store_are_not_cached():
    down = Scripted(headers={"Cache-Control": "no-store"})

    async def body(s, fe):
        for _ in range(2):
            async with s.get("/api/v1/query_range", params=_range(3)) as r:
                assert len((await r.json())["data"]["result"][0]["values"]) == 3 * 24 + 1
    run(down, FrontendConfig(cache=InMemoryCacheConfig(max_size_items=100), max_freshness_ms=0),
        body)
    assert len(down.seen) == 2 * 4


def test_max_query_length_and_compressed_answers(caplog):
    down = Scripted()

    async def body(s, fe):
        async with s.get("/api/v1/query_range", params=_range(3)) as r:
            assert r.status == 400
            assert (await r.json())["error"] == ("the query time range exceeds the limit (query "
                                                 "length: 72h0m0s, limit: 48h0m0s)")
        async with s.get("/api/v1/query_range", params=_range(1), auto_decompress=False,
                         headers={"Accept-Encoding": "gzip"}) as r:
            # under 1 KiB: sent as it is, as Thanos's gzip handler does
            assert "Content-Encoding" not in r.headers and r.headers["Vary"] == "Accept-Encoding"
            assert b'"resultType":"matrix"' in await r.read()
        async with s.get("/api/v1/labels", auto_decompress=False,
                         headers={"Accept-Encoding": "gzip"}) as r:
            assert r.headers["Content-Encoding"] == "gzip"
    with caplog.at_level(logging.INFO, logger="promring.frontend"):
        run(down, FrontendConfig(max_query_length_ms=2 * DAY * 1000, compress_responses=True,
                                 log_queries_longer_than_ms=-1), body)
    slow = [r for r in caplog.records if r.getMessage() == "slow query detected"]
    assert len(slow) == 3 and slow[0].param_query == "up"


@pytest.mark.parametrize("params", [
    {"query": "up", "start": "x", "end": "1", "step": "1"},
    {"query": "up", "start": "10", "end": "1", "step": "1"},
    {"query": "up", "start": "0", "end": "100000", "step": "1"},  # > 11,000 points
])
def test_unsplittable_requests_go_downstream_unchanged(params):
    down = Scripted()

    async def body(s, fe):
        async with s.get("/api/v1/query_range", params=params) as r:
            assert r.status in (200, 400)
    run(down, FrontendConfig(), body)
    assert len(down.seen) == 1 and down.seen[0][1] == params


def test_malformed_downstream_answer_is_a_502_error():
    down = Scripted(fail=100, status=200)

    async def body(s, fe):
        async with s.get("/api/v1/query_range", params=_range(1)) as r:
            assert r.status == 502 and (await r.json())["status"] == "error"
    run(down, FrontendConfig(), body)


def test_dedup_and_max_source_resolution_are_part_of_the_cache_key():
    down = Scripted()
    variants = [{}, {"dedup": "false"}, {"max_source_resolution": "1h"},
                {"dedup": "false", "max_source_resolution": "1h"}]

    async def body(s, fe):
        for _ in range(2):
            for extra in variants:
                async with s.get("/api/v1/query_range", params=_range(1, **extra),
                                 headers={"THANOS-TENANT": "t"}) as r:
                    want = "".join(["t", *(f"|{extra[k]}" for k in ("dedup", "max_source_resolution")
                                           if k in extra)])
                    values = (await r.json())["data"]["result"][0]["values"]
                    assert {v[1] for v in values} == {want}
    run(down, FrontendConfig(cache=InMemoryCacheConfig(max_size_items=100), max_freshness_ms=0),
        body)
    assert len(down.seen) == len(variants) * 2  # two parts each, then all from the cache


def test_tenant_from_the_client_certificate_field_goes_downstream_in_thanos_tenant(tmp_path):
    """Thanos's hidden --query-frontend.tenant-certificate-field over mutual TLS: the tenant is
    the verified client certificate's field whatever the tenant headers say; it goes downstream
    in THANOS-TENANT (split range parts and proxied calls) and the client's own tenant header
    does not; its cached parts are that tenant's. A request without a certificate or without the
    field is refused with Thanos's bad_data message and never reaches the downstream."""
    pki = PKI.make(tmp_path / "pki")
    web_yml = pki.optional_client_web_config(tmp_path / "web.yml")
    bare = pki.ca.issue("bare", "nobody")  # a common name only

    scripted = Scripted()
    cfg = FrontendConfig(split_interval_ms=DAY * 1000, tenant_header="X-Org",
                         cache=InMemoryCacheConfig(), http_config=str(web_yml),
                         tenant_certificate_field="organization")

    async def go():
        runner, url = await _serve(scripted)
        fe = QueryFrontend(replace(cfg, http_address="127.0.0.1:0", downstream_url=url))
        await fe.start()
        base = f"https://127.0.0.1:{fe.port}/api/v1"
        answers = []
        try:
            async with aiohttp.ClientSession() as s:
                for cert in (pki.client, None, bare):
                    for path, params in (("query_range", _range(2)), ("labels", {})):
                        async with s.get(f"{base}/{path}", params=params,
                                         ssl=pki.client_context(cert),
                                         headers={"X-Org": "other", "THANOS-TENANT": "x"}) as r:
                            answers.append((r.status, await r.json(content_type=None)))
        finally:
            await fe.stop()
            await runner.cleanup()
        return answers

    answers = asyncio.run(asyncio.wait_for(go(), 60))
    assert answers[0][0] == 200
    assert {s["metric"]["t"] for s in answers[0][1]["data"]["result"]} == {"team-a"}
    assert answers[1][0] == 200
    assert len(scripted.seen) == 3 + 1  # two days in three parts, and the labels call
    for _, _, headers in scripted.seen:
        assert headers.get("THANOS-TENANT") == "team-a" and "X-Org" not in headers, headers
    refused = (400, {"status": "error", "errorType": "bad_data",
                     "error": "could not get required certificate field from client cert"})
    assert answers[2] == answers[3] == refused
    no_field = (400, {"status": "error", "errorType": "bad_data",
                      "error": "could not get organization field from client cert"})
    assert answers[4] == answers[5] == no_field


def test_tenant_certificate_field_needs_client_certificates(tmp_path):
    pki = PKI.make(tmp_path / "pki")
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"tls_server_config:\n  cert_file: {pki.server.cert}\n"
                       f"  key_file: {pki.server.key}\n")
    args = ["query-frontend", "--query-frontend.downstream-url=http://127.0.0.1:1",
            "--query-frontend.tenant-certificate-field=commonName"]
    for extra in ([], ["--http.config", str(web_yml)]):
        with pytest.raises(ValueError, match="--query-frontend.tenant-certificate-field needs"):
            frontend_config(build_parser().parse_args(args + extra))
    web_yml.write_text(web_yml.read_text() + f"  client_ca_file: {pki.ca.cert_path}\n"
                                             "  client_auth_type: RequireAndVerifyClientCert\n")
    cfg = frontend_config(build_parser().parse_args(args + ["--http.config", str(web_yml)]))
    assert cfg.tenant_certificate_field == "commonName"
    with pytest.raises(SystemExit):  # Thanos's enum: anything else is refused
        build_parser().parse_args(args[:2] + ["--query-frontend.tenant-certificate-field=email"])
