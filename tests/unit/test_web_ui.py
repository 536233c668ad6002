"""The web UI's routes on the querier: pages under the route/external prefix, static assets,
and the JSON the pages read (/api/v1/stores in Thanos's shape, flags, runtime info)."""
from __future__ import annotations

import asyncio

from promring.cli import build_parser, command_flags
from querier.config import QueryConfig
from querier.endpoints import HealthOptions
from querier_cluster import cluster, dead_address, run

FAST = HealthOptions(healthy_interval_s=0.2, backoff_min_s=0.1, backoff_max_s=0.2, tick_s=0.05)


async def _wait_checked(c, n: int) -> None:
    for _ in range(200):
        if sum(st.last_check > 0 for st in c.querier.stores.health.status.values()) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("endpoints never checked")


def test_pages_and_assets_are_served_at_the_root(tmp_path):
    async def go():
        async with cluster(tmp_path) as c:
            async with c.http.get(c.base + "/", allow_redirects=False) as r:
                assert (r.status, r.headers["Location"]) == (302, "/graph")
            for page in ("graph", "alerts", "rules", "stores", "status", "flags"):
                async with c.http.get(f"{c.base}/{page}") as r:
                    text = await r.text()
                    assert r.status == 200 and r.content_type == "text/html"
                    assert f'data-page="{page}"' in text and 'data-prefix=""' in text
                    assert 'src="/static/app.js"' in text
                    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            for asset, ctype in (("app.js", "javascript"), ("style.css", "text/css")):
                async with c.http.get(f"{c.base}/static/{asset}") as r:
                    assert r.status == 200 and ctype in r.content_type
            async with c.http.get(f"{c.base}/static/../web.py") as r:
                assert r.status in (403, 404)
    run(go())


def test_pages_honour_route_and_external_prefix(tmp_path):
    """Behind a proxy that strips /proxied, the UI is routed at /q and links to /proxied."""
    async def go():
        cfg = QueryConfig(route_prefix="/q", external_prefix="/proxied")
        async with cluster(tmp_path, cfg) as c:
            async with c.http.get(c.base + "/q/graph") as r:
                text = await r.text()
                assert r.status == 200
                assert 'data-prefix="/proxied"' in text and 'src="/proxied/static/app.js"' in text
            for path in ("/q/", "/q", "/"):
                async with c.http.get(c.base + path, allow_redirects=False) as r:
                    assert (r.status, r.headers["Location"]) == (302, "/proxied/graph")
            async with c.http.get(c.base + "/q/static/query.js") as r:
                assert r.status == 200
            async with c.http.get(c.base + "/graph") as r:
                assert r.status == 404
    run(go())


def test_stores_endpoint_has_thanos_shape_and_lists_a_dead_endpoint(tmp_path):
    async def go():
        dead = dead_address()
        async with cluster(tmp_path, extra_endpoints=(dead,), health=FAST) as c:
            await _wait_checked(c, 2)
            status, body = await c.get("/api/v1/stores")
            assert status == 200 and body["status"] == "success"
            data = body["data"]
            assert sorted(data) == ["receive", "unknown"]
            (up,) = data["receive"]
            assert up["name"] == c.grpc(0) and up["lastError"] is None
            assert up["lastCheck"].endswith("Z") and not up["lastCheck"].startswith("0001")
            assert up["labelSets"] == [] and up["maxTime"] == (1 << 63) - 1
            (down,) = data["unknown"]
            assert down["name"] == dead and down["lastError"]
            assert (down["minTime"], down["maxTime"], down["labelSets"]) == (0, 0, [])
    run(go())


def test_flags_and_runtime_info(tmp_path):
    async def go():
        cfg = QueryConfig(flags={"query.timeout": "2m", "endpoint": "a:1,b:2"})
        async with cluster(tmp_path, cfg) as c:
            status, body = await c.get("/api/v1/status/flags")
            assert (status, body["data"]) == (200, {"query.timeout": "2m", "endpoint": "a:1,b:2"})
            status, body = await c.get("/api/v1/status/runtimeinfo")
            assert status == 200 and body["data"]["startTime"].endswith("Z")
            status, body = await c.get("/api/v1/status/process")
            assert status == 200
            info = body["data"]
            assert info["threadCount"] >= 1
            assert info["residentMemoryBytes"] > 0
    run(go())


def test_command_flags_lists_every_flag_of_the_subcommand_and_hides_secrets():
    a = build_parser().parse_args(["query", "--endpoint=a:1", "--endpoint=b:2",
                                   "--query.replica-label=replica", "--query.auto-downsampling"])
    flags = command_flags(a)
    assert flags["endpoint"] == "a:1,b:2"
    assert flags["query.replica-label"] == "replica"
    assert flags["query.auto-downsampling"] == "true"
    assert flags["http-address"] == "0.0.0.0:10902"
    assert "help" not in flags and "version" not in flags
    up = command_flags(build_parser().parse_args(["up", "--objstore.config=type: S3\nsecret_key: x"]))
    assert up["objstore.config"] == "<secret>" and up["data-dir"] == "./data"


def test_the_ui_adds_pages_only_and_leaves_the_json_to_the_query_api():
    """One implementation of /api/v1/stores, status/flags and runtimeinfo: the query API's."""
    from aiohttp import web

    from ui import WebUI
    app = web.Application()
    WebUI().register(app)
    paths = {r.resource.canonical for r in app.router.routes()}
    assert "/graph" in paths and "/stores" in paths
    assert not [p for p in paths if p.startswith("/api/")], paths
