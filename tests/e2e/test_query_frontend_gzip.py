"""``--query-frontend.compress-responses`` next to Thanos v0.42's query frontend (its gzip
handler): the same downstream behind both, the same requests, the same codings, Vary lines
and bodies."""
from __future__ import annotations

import asyncio
import gzip
import sys
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import ServerProcess, free_port  # noqa: E402
from peers import peer  # noqa: E402

from frontend.config import FrontendConfig  # noqa: E402
from frontend.server import QueryFrontend  # noqa: E402

SMALL = orjson.dumps({"status": "success", "data": ["a"]})  # under 1 KiB
BIG = orjson.dumps({"status": "success", "data": [f"value_{i}" for i in range(400)]})
ENCODINGS = ["gzip", "deflate", "gzip;q=0", "identity", "*", "br, gzip", "GZIP",
             "deflate, gzip", "gzip;q=0.5", "gzip; q=1.0", "x-gzip", "br", ""]


async def _downstream() -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        body = BIG if request.path.endswith("/values") else SMALL
        return web.Response(body=body, content_type="application/json")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def _answers(s: aiohttp.ClientSession, base: str) -> dict:
    out = {}
    for path in ("/api/v1/labels", "/api/v1/label/job/values"):
        for ae in ENCODINGS:
            async with s.get(base + path, headers={"Accept-Encoding": ae}) as r:
                raw = await r.read()
                coding = r.headers.get("Content-Encoding")
                body = gzip.decompress(raw) if coding == "gzip" else raw
                out[path, ae] = (r.status, coding, "Accept-Encoding" in r.headers.getall("Vary", []),
                                 body)
    return out


def test_compressed_answers_match_thanos_query_frontend(tmp_path: Path) -> None:
    async def main() -> None:
        runner, url = await _downstream()
        port = free_port()
        theirs = ServerProcess([peer("thanos"), "query-frontend", f"--http-address=127.0.0.1:{port}",
                                f"--query-frontend.downstream-url={url}",
                                "--query-frontend.compress-responses", "--log.level=warn"],
                               tmp_path, "thanos-qfe", {"http": port},
                               [f"http://127.0.0.1:{port}/-/ready"])
        ours = QueryFrontend(FrontendConfig(http_address="127.0.0.1:0", downstream_url=url,
                                            compress_responses=True))
        await ours.start()
        try:
            await asyncio.to_thread(theirs.start)
            async with aiohttp.ClientSession(auto_decompress=False) as s:
                want = await _answers(s, f"http://127.0.0.1:{port}")
                got = await _answers(s, f"http://127.0.0.1:{ours.port}")
        finally:
            await asyncio.to_thread(theirs.stop)
            await ours.stop()
            await runner.cleanup()
        assert want[("/api/v1/label/job/values", "gzip")][1] == "gzip"  # the check can tell
        assert {k: v[:3] for k, v in got.items()} == {k: v[:3] for k, v in want.items()}
        assert {k: v[3] for k, v in got.items()} == {k: v[3] for k, v in want.items()}

    asyncio.run(main())
