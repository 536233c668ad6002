"""What aiohttp's layers cost per small HTTP answer (issue 13, the querier's HTTP front).

Serves a canned 1.7 KB gzipped answer (the size of the one-series query_range answer) from
each of: a bare asyncio Protocol (the floor: socket read + write), aiohttp's low-level
``web.Server`` (RequestHandler, Request, Response), a ``web.Application`` with the querier's
routes, and that Application with one middleware and an ``on_response_prepare`` receiver (the
querier's instrument middleware and CORS hook), and the querier's own front for its hot
routes (querier/fasthttp.py, over a canned query API answering a 1000-byte body: below the
compression threshold, so no gzip work in its figure either). Each runs in its own process; one keep-alive
client loops over them in alternating batches and prints each server's CPU time per request
(utime + stime from /proc), which is steadier than wall time on a shared machine.

    python bench/bench_http_front.py --rounds 12 --batch 500
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import subprocess
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from querier.api import Answer  # noqa: E402
from querier.fasthttp import QueryFront  # noqa: E402

BODY = os.urandom(1700)
VARIANTS = ("protocol", "server", "application", "application+middleware+signal", "fasthttp")
PATH = "/api/v1/query_range?query=x%7Binstance%3D%22i-00007%22%7D&start=1&end=2&step=15"


async def handler(request: web.BaseRequest) -> web.Response:
    request.query.get("query")
    return web.Response(body=BODY, content_type="application/json",
                        headers={"Content-Encoding": "gzip"})


@web.middleware
async def middleware(request: web.Request, handler) -> web.StreamResponse:
    resp = await handler(request)
    request.match_info.route.resource  # the route label of http_requests_total
    return resp


async def on_prepare(request: web.Request, resp: web.StreamResponse) -> None:
    if request.headers.get("Origin"):
        resp.headers["Access-Control-Allow-Origin"] = "*"


class Canned(asyncio.Protocol):
    """Answers every read with the canned response: no HTTP parsing at all."""
    ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
              b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(self.ANSWER)


class CannedAPI:
    """The query API as the fast front calls it, answering every query with one canned body."""
    ANSWER = b'{"status":"success","data":{"resultType":"matrix","result":[' + b"0" * 934 + b"]}}"

    async def instant_query(self, request, params) -> Answer:
        params.get("query")
        return Answer(200, [self.ANSWER])

    range_query = instant_query

    def observe(self, route: str, status: int, t0: float) -> None:
        pass


async def serve(variant: str) -> None:
    loop = asyncio.get_running_loop()
    if variant == "fasthttp":
        front = QueryFront(CannedAPI(), "")  # type: ignore[arg-type]
        srv = await loop.create_server(front.protocol_factory(
            web.Server(handler, access_log=None), 30.0), "127.0.0.1", 0)
    elif variant == "protocol":
        srv = await loop.create_server(Canned, "127.0.0.1", 0)
    elif variant == "server":
        srv = await loop.create_server(web.Server(handler, access_log=None), "127.0.0.1", 0)
    else:
        app = web.Application(middlewares=[middleware] if "middleware" in variant else [])
        for path in ("/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels"):
            app.router.add_get(path, handler)
            app.router.add_post(path, handler)
        app.router.add_get("/api/v1/label/{name}/values", handler)
        if "signal" in variant:
            app.on_response_prepare.append(on_prepare)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        srv = site._server  # type: ignore[assignment]
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        asyncio.run(serve(a.serve))
        return
    procs = {v: subprocess.Popen([sys.executable, __file__, "--serve", v], stdout=subprocess.PIPE)
             for v in VARIANTS}
    try:
        conns = {v: http.client.HTTPConnection("127.0.0.1", int(p.stdout.readline()))  # type: ignore[union-attr]
                 for v, p in procs.items()}
        cpu = dict.fromkeys(VARIANTS, 0.0)
        for _ in range(a.rounds):
            for v, p in procs.items():
                before = cpu_s(p.pid)
                for _ in range(a.batch):
                    conns[v].request("GET", PATH, headers={"Accept-Encoding": "gzip"})
                    conns[v].getresponse().read()
                cpu[v] += cpu_s(p.pid) - before
        n = a.rounds * a.batch
        for v in VARIANTS:
            print(f"{v}: {cpu[v] / n * 1e6:.0f} us CPU per request")
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
