"""The querier's fast HTTP front (querier.fasthttp) for /api/v1/query and /api/v1/query_range:
the same bytes a client sends get the same answer as from aiohttp (a querier with the front
off, over the same ingestor, is the reference), it is really taken for the common requests,
every other request on a connection goes on with aiohttp, and a query whose client has gone
is cancelled on both fronts."""
from __future__ import annotations

import asyncio
import re
import time
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import common.ops
import querier.api
from common.ops import new_registry
from querier.config import QueryConfig
from querier.api import Answer
from querier._request import parse_get
from querier.fasthttp import (MAX_HEAD, FastConnection, FastRequest, Headers, QueryFront,
                              parse_request, read_request)
from querier.server import Querier
from querier_cluster import cluster, run
from storeapi.server import serve

T = 1_700_000_000  # seconds: the pushed samples' time
SERIES = [((("__name__", "ge"), ("i", str(i))), [(T - 60) * 1000, T * 1000], [1.5, i / 7])
          for i in range(40)]
# Ends every raw exchange (aiohttp answers it, then closes; or the server has closed already).
LAST = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
QUIET_S = 0.2  # how long an exchange waits for a first answer before it sends LAST


@asynccontextmanager
async def fronts(tmp_path, cfg: QueryConfig = QueryConfig(), monkeypatch=None):
    """(cluster, querier with the fast front, querier without it), over one ingestor."""
    if monkeypatch is not None:  # partial requests held briefly, so every exchange ends soon
        monkeypatch.setattr(common.ops, "IDLE_OR_HEADER_TIMEOUT_S", 2.0)
    async with cluster(tmp_path, cfg) as c:
        await c.push(SERIES)
        plain = Querier(replace(c.querier.cfg, http_fast_path=False), registry=new_registry())
        await plain.start()
        try:
            yield c, c.querier, plain
        finally:
            await plain.stop()


async def exchange(port: int, data: bytes, last: bytes = b"", limit_s: float = 15.0) -> bytes:
    """Everything the server sends back for ``data`` (then ``last``, written once an answer
    has started or after a short quiet time: the server reads it separately) until it closes
    the connection (the limit only bounds a server that would never close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        if last:
            try:
                out = await asyncio.wait_for(reader.read(1 << 16), QUIET_S)
            except TimeoutError:
                pass
            if out or not reader.at_eof():
                writer.write(last)
        async with asyncio.timeout(limit_s):
            while chunk := await reader.read(1 << 16):
                out += chunk
    except TimeoutError:
        out += b"<still open>"
    except ConnectionResetError:
        out += b"<reset>"
    finally:
        writer.close()
    return out


def comparable(raw: bytes) -> bytes:
    """The answer without what depends on when it was made: the Date header, and the
    evaluation time of an instant query without ``time`` (with the length it changes)."""
    raw = re.sub(rb"\r\nDate: [^\r]*", b"", raw)
    now = time.time()
    timed = re.sub(rb"\b1\d{9}(?:\.\d+)?\b",
                   lambda m: b"NOW" if abs(float(m[0]) - now) < 3600 else m[0], raw)
    return raw if timed == raw else re.sub(rb"Content-Length: \d+", b"Content-Length: N", timed)


async def same_answers(fast: Querier, plain: Querier, data: bytes, limit_s: float = 15.0
                       ) -> bytes:
    got = comparable(await exchange(fast.port, data, LAST, limit_s))
    want = comparable(await exchange(plain.port, data, LAST, limit_s))
    assert got == want, data
    return got


def get(path: str, *headers: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers)
            + "\r\n").encode()


def post(path: str, body: str, *headers: str, ctype="application/x-www-form-urlencoded") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body.encode())}\r\n" + "".join(h + "\r\n" for h in headers)
            + "\r\n" + body).encode()


QR = f"/api/v1/query_range?query=ge&start={T - 60}&end={T}&step=15"
Q = f"/api/v1/query?query=ge&time={T}"
# (raw request(s), how many of them the fast front answers)
CASES = [
    (get(Q), 1),
    (get(QR), 1),
    (get(QR, "Accept-Encoding: gzip"), 1),
    (get(QR, "Accept-Encoding: deflate, gzip"), 1),
    (get(QR, "accept-encoding: gzip;q=0"), 1),
    (get(f"/api/v1/query?query=sum(ge)&time={T}&limit=1&query=x"), 1),  # duplicate param
    (get("/api/v1/query?query=ge%zz&time=1"), 1),  # a bad percent sequence
    (get("/api/v1/query?query=%ff%fe&time=1"), 1),  # not UTF-8 once decoded
    (get("/api/v1/query?query=ge+%2B+1&time=1"), 1),
    (get("/api/v1/query?query=up(&time=1"), 1),  # 400
    (get("/api/v1/query?time=1"), 1),  # no query
    (get("/api/v1/query?query=ge&timeout=0s"), 1),  # 503
    (get("/api/v1/query_range?query=ge&start=10&end=1&step=1"), 1),
    (get("/api/v1/query_range?query=ge&start=1&end=100000&step=1"), 1),  # too many points
    (get(Q, "Connection: close"), 1),
    (get(Q, "Connection: keep-alive"), 1),
    (get(Q) + get(QR, "Accept-Encoding: gzip"), 0),  # pipelined: aiohttp's parser sees both
    (post("/api/v1/query_range", f"query=ge&start={T - 60}&end={T}&step=15"), 1),
    (post(f"/api/v1/query?time={T}", "query=ge", "Accept-Encoding: gzip"), 1),
    (post("/api/v1/query", "query=ge&time=1&query=up", "Connection: close"), 1),
    (get(Q, "Connection: close") + get(Q), 0),  # aiohttp: 400, data after Connection: close
    (post("/api/v1/query", "query=%ff&time=1"), 1),
    (post("/api/v1/query", "query=\xe9&time=1"), 1),  # UTF-8 in the body
    (post("/api/v1/query", "query=ge&time=1", ctype="text/plain"), 0),
    (post("/api/v1/query", "query=ge&time=1", ctype="application/x-www-form-urlencoded; "
          "charset=utf-8"), 0),
    (post("/api/v1/query", "&" * 1000 + "query=ge"), 0),  # aiohttp's 413: too many fields
    (b"POST /api/v1/query HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
     b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nquery", 0),
    (b"POST /api/v1/query HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 0),
    (b"GET /api/v1/query?query=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 0),
    (get(Q, "Expect: 100-continue"), 0),
    (get(Q, "Origin: http://x.example"), 0),
    (get(Q, "Connection: upgrade", "Upgrade: h2c"), 0),
    (get(Q, "X-A: 1", " folded"), 0),
    (get(Q, "X-Bad Name: 1"), 0),
    (get(Q, "NoColon"), 0),
    (get(Q, "X-Long: " + "a" * MAX_HEAD), 0),
    (get(Q, "X-Latin: caf\xe9"), 0),
    (get(Q).replace(b"\r\n", b"\n"), 0),
    (get(Q).replace(b"HTTP/1.1", b"HTTP/1.0"), 0),
    (get(Q).replace(b"GET", b"HEAD"), 0),
    (get(Q).replace(b"GET", b"PUT"), 0),
    (get(Q.replace("query", "qu%65ry", 1)), 0),  # the path percent-encoded
    (get(Q.replace("?", "#", 1)), 0),
    (get('/api/v1/query?query=ge{i="1"}&time=1'), 0),  # raw quotes and braces
    (get("/api/v1/labels"), 0),
    (get("/-/ready") + get(Q), 0),  # the connection is aiohttp's from its first request on
    (get(Q) + get("/api/v1/labels") + get(Q), 0),
    (get(Q) + b"GET /api/v1/query?query=1 HTTP/1.1\r\nHost:", 0),  # a partial second head
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0),  # TLS to a plain port
]


@pytest.mark.parametrize("raw,fast_answers", CASES, ids=[c[0][:40].decode("latin-1")
                                                          for c in CASES])
def test_every_request_answered_as_aiohttp_answers_it(tmp_path, monkeypatch, raw, fast_answers):
    async def go():
        async with fronts(tmp_path, monkeypatch=monkeypatch) as (_, fast, plain):
            await same_answers(fast, plain, raw)
            assert fast.front.answered == fast_answers
    run(go())


def test_large_answers_streamed_in_pieces_as_aiohttp_streams_them(tmp_path, monkeypatch):
    async def go():
        async with fronts(tmp_path) as (_, fast, plain):
            monkeypatch.setattr(querier.api, "CHUNK_BYTES", 1024)
            for accept in ("", "Accept-Encoding: gzip"):
                got = await same_answers(fast, plain, get(QR, *filter(None, [accept])))
                assert (b"Transfer-Encoding: chunked" in got) == bool(accept)
            assert fast.front.answered == 2
    run(go())


def test_keep_alive_mixes_fast_and_other_routes(tmp_path):
    """One connection: fast answers, then a route aiohttp serves, then the hot routes again
    (now by aiohttp): every answer is right, in order."""
    async def go():
        async with fronts(tmp_path) as (c, fast, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", fast.port)
            try:
                for path, fast_count in ((Q, 1), (QR, 2), ("/api/v1/labels", 2), (Q, 2)):
                    writer.write(get(path))
                    status = await reader.readline()
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(re.search(rb"Content-Length: (\d+)", head)[1])
                    body = await reader.readexactly(length)
                    assert status == b"HTTP/1.1 200 OK\r\n" and b'"success"' in body, body
                    assert fast.front.answered == fast_count
                assert fast.front.handed_off == 1
            finally:
                writer.close()
    run(go())


def test_http_metrics_count_fast_requests_as_aiohttp_counts_them(tmp_path):
    async def go():
        cfg = QueryConfig(route_prefix="/p")
        async with fronts(tmp_path, cfg) as (c, fast, plain):
            for q in (fast, plain):
                for raw in (get("/p" + Q), get("/p" + QR), get("/p/api/v1/query?query=(")):
                    await exchange(q.port, raw, LAST)
            assert fast.front.answered == 3

            async def counts(q: Querier) -> list[bytes]:
                text = await exchange(q.port, get("/metrics", "Connection: close"))
                return sorted(re.findall(rb"\nhttp_requests_total\{[^\n]*", text) +
                              re.findall(rb"\nhttp_request_duration_seconds_count\{[^\n]*", text))
            got, want = await counts(fast), await counts(plain)
            assert got == want and b'handler="/p/api/v1/query"' in b"".join(got), got
    run(go())


def test_the_tenant_header_is_read_in_any_case(tmp_path):
    """--query.enforce-tenancy: the tenant comes from the header, whatever its spelling."""
    async def go():
        async with fronts(tmp_path, QueryConfig(enforce_tenancy=True)) as (_, fast, plain):
            own = await same_answers(fast, plain, get(Q))
            other = await same_answers(fast, plain, get(Q, "thanos-tenant: someone-else"))
            assert b'"ge"' in own and b'"result":[]' in other
            assert fast.front.answered == 2
    run(go())


def test_web_config_auth_guards_the_hot_routes(tmp_path):
    """With --http.config every request goes through aiohttp and its basic-auth check."""
    import base64

    import bcrypt
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  u: %s\n" % bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode())
    creds = "Authorization: Basic " + base64.b64encode(b"u:pw").decode()

    async def go():
        async with fronts(tmp_path, QueryConfig(http_config=str(web))) as (_, q, __):
            assert q.front is None
            refused = await exchange(q.port, get(Q, "Connection: close"))
            allowed = await exchange(q.port, get(Q, creds, "Connection: close"))
            assert refused.startswith(b"HTTP/1.1 401 ") and allowed.startswith(b"HTTP/1.1 200 ")
    run(go())


class HangingStore:
    """A StoreAPI source whose Series calls never answer; it records their start and their
    cancellation."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    def label_sets(self):
        return [(("site", "x"),)]

    def time_range(self):
        return 0, 4_000_000_000_000

    async def series(self, mint, maxt, matchers, skip_chunks):
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def label_names(self, mint, maxt, matchers):
        return []

    def label_values(self, name, mint, maxt, matchers):
        return []


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("route", [Q, "/api/v1/query?query=sum(rate(ge[5m]))+by+(i)&time=1"])
def test_a_query_whose_client_left_is_cancelled(fast_path, route):
    """Prometheus cancels a query when its request's context ends: the store call stops and
    the query's slot is free again (on either front, inline and worker evaluations)."""
    async def go():
        source = HangingStore()
        store, port = await serve(source, "127.0.0.1:0", "store")
        q = Querier(QueryConfig(http_address="127.0.0.1:0", endpoints=[f"127.0.0.1:{port}"],
                                http_fast_path=fast_path, max_concurrent=1), registry=new_registry())
        await q.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", q.port)
            writer.write(get(route))
            await asyncio.wait_for(source.started.wait(), 30)
            assert q.api._slots.locked()  # the query holds the one slot
            writer.close()
            await asyncio.wait_for(source.cancelled.wait(), 30)
            for _ in range(600):
                if not q.api._slots.locked():
                    break
                await asyncio.sleep(0.05)
            assert not q.api._slots.locked()
            assert (q.front.answered if q.front else 0) == 0
        finally:
            await q.stop()
            await store.stop(None)
    run(go())


def test_partial_and_silent_connections_are_closed_after_the_idle_timeout(tmp_path, monkeypatch):
    """A head that never completes (slowloris) is aiohttp's, which drops it after its
    keep-alive timeout; a connection that sends nothing, or nothing more after a fast
    answer, is dropped after the same time."""
    async def go():
        async with fronts(tmp_path, monkeypatch=monkeypatch) as (_, fast, __):
            partial = await exchange(fast.port, b"GET /api/v1/query?query=ge HTTP/1.1\r\nHo")
            silent = await exchange(fast.port, b"")
            after = await exchange(fast.port, get(Q))
            assert partial == silent == b""
            assert after.startswith(b"HTTP/1.1 200 OK") and after.endswith(b"}")
            assert fast.front.answered == 1 and fast.front.handed_off == 1
    run(go())


def test_a_client_that_does_not_read_its_answers_is_sent_no_more(tmp_path):
    """Answers wait in the socket's buffer only up to its high-water mark: the next request
    waits until the client reads (memory per connection stays bounded)."""
    big = f"/api/v1/query_range?query=ge&start={T - 60}&end={T}&step=1"

    async def go():
        async with fronts(tmp_path) as (_, fast, __):
            reader, writer = await asyncio.open_connection("127.0.0.1", fast.port)
            try:
                for sent in range(1, 2000):
                    writer.write(get(big))
                    await writer.drain()
                    for _ in range(200):
                        if fast.front.answered == sent or any(
                                c.drained is not None for c in fast.front.connections):
                            break
                        await asyncio.sleep(0.01)
                    (conn,) = fast.front.connections
                    if conn.drained is not None:
                        break
                assert conn.drained is not None and conn.task is not None  # waits for the client
                writer.write(get(Q))
                await writer.drain()
                for _ in range(200):
                    if conn.buffered:
                        break
                    await asyncio.sleep(0.01)
                assert conn.buffered == get(Q) and fast.front.answered == sent - 1
                assert conn.transport.get_write_buffer_size() < (1 << 20)
            finally:
                writer.close()
    run(go())


def test_parser_leaves_incomplete_and_oversized_requests_to_aiohttp():
    routes = {"/api/v1/query": "/api/v1/query"}
    full = post("/api/v1/query", "query=ge&time=1")
    assert parse_request(full, routes).params == {"query": ["ge"], "time": ["1"]}
    for cut in range(len(full)):
        assert parse_request(full[:cut], routes) is None
    assert parse_request(get("/api/v1/query?" + "a" * MAX_HEAD), routes) is None
    big = post("/api/v1/query", "query=" + "a" * (64 << 10))
    assert parse_request(big, routes) is None


# --- hostile requests, generated -------------------------------------------------------------

_PATHS = st.sampled_from(["/api/v1/query/", "/api/v1/labels", "/API/v1/query", "//api/v1/query",
                          "/api/v1/query_rangex", "*", "", "http://x/api/v1/query"])
_KEYS = st.sampled_from(["query", "time", "start", "end", "step", "limit", "timeout", "dedup",
                         "partial_response", "max_source_resolution", "replicaLabels[]", "x", ""])
_VALUES = st.one_of(
    st.sampled_from(["ge", "sum(ge)", "ge{i=\"1\"}", "1", "(", str(T), str(T - 60), "15", "0",
                     "-1", "1e400", "NaN", "5m", "1h", "true", "auto", ""]),
    st.text(max_size=12))
_ESCAPES = st.sampled_from(["%", "%z", "%zz", "%ff", "%e9", "%c3%a9", "%00", "%0d%0a", "+", "%2B",
                            "%26", "%3D", "&", "=", ";", "#", " ", "\t", "\xe9", '"', "{"])


@st.composite
def _query_string(draw) -> str:
    from urllib.parse import quote
    parts = []
    for k, v in draw(st.lists(st.tuples(_KEYS, _VALUES), max_size=6)):
        text = f"{quote(k, safe='[]')}={quote(v)}"
        if draw(st.booleans()):  # a raw or broken escape somewhere
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(_ESCAPES) + text[at:]
        parts.append(text)
    return "&".join(parts)


_HEADERS = st.sampled_from([
    "Accept-Encoding: gzip", "Accept-Encoding: deflate", "Accept-Encoding: br, gzip",
    "accept-encoding: GZIP", "Connection: close", "Connection: keep-alive", "Connection: foo",
    "Content-Type: application/x-www-form-urlencoded", "Content-Type: text/plain",
    "Content-Length: 0", "Content-Length: 3", "Content-Length: -1", "Content-Length: abc",
    "Content-Length: 99999999999999999999", "Transfer-Encoding: chunked", "Expect: 100-continue",
    "Origin: http://a", "THANOS-TENANT: t", "X-Empty:", ": no-name", "X Y: 1", "NoColon",
    " folded", "X-Ctl: a\x01b", "X-Nul: \x00", "X-Utf8: \xe9", "Host: a", "Host: b", "Host:",
    "Host: a b", "Host: [::1", "Host: a:99999", "Accept-Encoding: gzip", "Connection: Close",
    "Content-Length: +3", "Content-Length: 3 ", "Content-Length:3", "X-Tab:\tv\t",
    "Upgrade: websocket", "Connection: Upgrade", "Cookie: a=b",
    "X-Big: " + "b" * 9000])


_MUTATIONS = ["method", "version", "no host", "header", "header", "eol", "path", "cut",
              "length", "ctype", "escape"]


@st.composite
def _request(draw) -> bytes:
    """A request the fast front takes, then none to three of its parts broken or changed."""
    post = draw(st.booleans())
    method = "POST" if post else "GET"
    target = draw(st.sampled_from(["/api/v1/query", "/api/v1/query_range"]))
    query = draw(_query_string())
    body = draw(_query_string()) if post else ""
    headers = ["Host: x"] + draw(st.lists(st.sampled_from(
        ["Accept-Encoding: gzip", "Connection: keep-alive", "User-Agent: t", "Accept: */*"]),
        max_size=2))
    if post:
        headers += ["Content-Type: application/x-www-form-urlencoded",
                    f"Content-Length: {len(body.encode())}"]
    version, eol, cut = "HTTP/1.1", "\r\n", None
    for m in draw(st.lists(st.sampled_from(_MUTATIONS), max_size=3)):
        if m == "method":
            method = draw(st.sampled_from(["HEAD", "OPTIONS", "PUT", "get", "G ET", "", "POST",
                                           "GET"]))
        elif m == "version":
            version = draw(st.sampled_from(["HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", "http/1.1", ""]))
        elif m == "no host":
            headers.remove("Host: x") if "Host: x" in headers else None
        elif m == "header":
            headers.insert(draw(st.integers(0, len(headers))), draw(_HEADERS))
        elif m == "eol":
            eol = draw(st.sampled_from(["\n", "\r", "\r\r\n"]))
        elif m == "path":
            target = draw(_PATHS)
        elif m == "cut":
            cut = draw(st.integers(0, 200))
        elif m == "length":
            headers = [h for h in headers if not h.startswith("Content-Length")]
            headers.append(f"Content-Length: {len(body.encode()) + draw(st.integers(-3, 3))}")
        elif m == "ctype":
            headers = [h for h in headers if not h.startswith("Content-Type")]
            headers.append(draw(st.sampled_from(
                ["Content-Type: text/plain", "Content-Type: multipart/form-data",
                 "Content-Type: application/x-www-form-urlencoded; charset=latin-1",
                 "Content-Type: APPLICATION/X-WWW-FORM-URLENCODED"])))
        else:
            at = draw(st.integers(0, len(query)))
            query = query[:at] + draw(_ESCAPES) + query[at:]
    if query:
        target += "?" + query
    text = f"{method} {target} {version}{eol}" + "".join(h + eol for h in headers) + eol + body
    raw = text.encode("utf-8", "surrogatepass")
    return raw if cut is None else raw[:cut]


def test_generated_hostile_requests_answered_as_aiohttp_answers_them(tmp_path, monkeypatch):
    """Random heads, escapes, headers and bodies, one to three in a row on one connection:
    the fast front's answers are aiohttp's (it answers what it understands completely)."""
    loop = asyncio.new_event_loop()
    ctx = fronts(tmp_path, monkeypatch=monkeypatch)
    _, fast, plain = loop.run_until_complete(ctx.__aenter__())
    try:
        @settings(max_examples=50, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(_request(), min_size=1, max_size=2))
        def check(requests: list[bytes]) -> None:
            # a body that never comes holds either front's connection open: 3 s shows it
            loop.run_until_complete(same_answers(fast, plain, b"".join(requests), 3.0))
        check()
        assert fast.front.answered > 0
    finally:
        loop.run_until_complete(ctx.__aexit__(None, None, None))
        loop.close()


def _fields(req: FastRequest | None) -> tuple | None:
    return None if req is None else (req.route, req.params, dict(req.headers), type(req.headers),
                                     req.close, req.size)


_C_ROUTES = {"/api/v1/query": "/api/v1/query", "/api/v1/query_range": "/api/v1/query_range"}
_C_SEEN = {"handled": 0, "left": 0}


@settings(max_examples=3000, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(_request(), st.binary(max_size=40))
def test_the_c_reading_of_a_get_is_the_python_reading(raw: bytes, tail: bytes) -> None:
    """The C reading of a GET (querier/_request.c) builds exactly the FastRequest the
    Python reading does, or leaves the request to it (NotImplemented): over generated
    hostile requests, with bytes after them (a pipelined next request)."""
    for buf in (raw, raw + tail):
        got = parse_get(buf, _C_ROUTES, FastRequest, Headers)
        if got is NotImplemented:
            _C_SEEN["left"] += 1
            continue
        _C_SEEN["handled"] += 1
        assert type(got) is FastRequest and _fields(got) == _fields(read_request(buf, _C_ROUTES))


@st.composite
def _usual_get(draw) -> bytes:
    """A GET of the kind the C reading takes: any text in its parameters (quoted with
    either kind of space), headers in any case and spacing, sometimes one thing wrong."""
    from urllib.parse import quote, quote_plus
    enc = draw(st.sampled_from([quote, quote_plus]))
    pairs = draw(st.lists(st.tuples(st.one_of(_KEYS, st.text(max_size=4)), st.text(max_size=20)),
                          max_size=5))
    query = "&".join(enc(k) + ("" if draw(st.booleans()) and not v else "=" + enc(v))
                     for k, v in pairs)
    lines = [draw(st.sampled_from(["Host: x", "host:x", "HOST:   x  ", "Host:"]))]
    lines += draw(st.lists(st.sampled_from(["Accept-Encoding: gzip", "accept-encoding:GZIP ",
                                            "Connection: close", "connection: Keep-Alive",
                                            "X-Empty:", "User-Agent:  a b  ", "Connection: x",
                                            "Content-Length: 0", "THANOS-TENANT: t"]),
                           max_size=3))
    route = draw(st.sampled_from(["/api/v1/query", "/api/v1/query_range", "/api/v1/query_rangE"]))
    raw = (f"GET {route}{'?' + query if query or draw(st.booleans()) else ''} HTTP/1.1\r\n"
           + "".join(h + "\r\n" for h in lines) + "\r\n").encode()
    return raw[:draw(st.integers(len(raw) - 3, len(raw)))] if draw(st.booleans()) else raw


@settings(max_examples=3000, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(_usual_get())
def test_the_c_reading_of_usual_gets_is_the_python_reading(raw: bytes) -> None:
    got = parse_get(raw, _C_ROUTES, FastRequest, Headers)
    want = read_request(raw, _C_ROUTES)
    if got is NotImplemented:  # only what Python does not answer either
        assert want is None
    else:
        assert _fields(got) == _fields(want)


def test_the_c_reading_takes_the_usual_gets_and_leaves_the_rest():
    """What a dashboard sends is read in C (every escape, '+', repeated and empty
    parameters); a POST, a broken escape, an escape that is not UTF-8, a repeated header and
    an incomplete head are left to Python, which reads them as before."""
    head = "HTTP/1.1\r\nHost: q:9090\r\nAccept-Encoding:  gzip  \r\nCONNECTION: Close\r\n\r\n"
    usual = ("GET /api/v1/query_range?query=sum%28rate%28x%7Binstance%3D%22i-1%22%7D%5B5m%5D"
             "%29%29+by+(job)&start=1.5&end=2&step=15&x=%c3%a9&x=&y&&=z&%2B=%2b " + head).encode()
    got = parse_get(usual, _C_ROUTES, FastRequest, Headers)
    assert got is not NotImplemented
    assert _fields(got) == _fields(read_request(usual, _C_ROUTES))
    assert got.params == {"query": ['sum(rate(x{instance="i-1"}[5m])) by (job)'],
                          "start": ["1.5"], "end": ["2"], "step": ["15"], "x": ["\xe9", ""],
                          "y": [""], "": ["z"], "+": ["+"]}
    assert got.headers.get("Accept-Encoding") == "gzip" and got.close
    assert got.size == len(usual)
    left = [b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            b"GET /api/v1/query?query=%zz HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /api/v1/query?query=%ff HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /api/v1/query HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n",
            b"GET /api/v1/query HTTP/1.1\r\nHost: x\r\n",
            b"GET /api/v1/labels HTTP/1.1\r\nHost: x\r\n\r\n"]
    for buf in left:
        assert parse_get(buf, _C_ROUTES, FastRequest, Headers) is NotImplemented
    assert read_request(left[2], _C_ROUTES).params == {"query": ["\ufffd"]}
    assert parse_request(left[2], _C_ROUTES).params == {"query": ["\ufffd"]}
    assert [parse_request(b, _C_ROUTES) for b in left[3:]] == [None, None, None]


class StepRecordingAPI:
    """The query API as the fast front calls it, recording where each handler's first step
    ran; a query whose ``query`` is ``now`` answers without awaiting anything."""

    def __init__(self) -> None:
        self.first_steps: list[tuple[bool, bool]] = []  # (inside data_received, own task)

    async def instant_query(self, request, params) -> Answer:
        task = asyncio.current_task()
        self.first_steps.append((RecordingConnection.receiving, task is not None))
        async with asyncio.timeout(30):  # needs the current task before the first await
            if params["query"] != ["now"]:
                await asyncio.sleep(0.3 if params["query"] == ["slow"] else 0.01)
        assert asyncio.current_task() is task
        return Answer(200, [b'{"status":"success","data":"%s"}' % params["query"][0].encode()])

    range_query = instant_query

    def observe(self, route: str, status: int, t0: float) -> None:
        pass


class RecordingConnection(FastConnection):
    receiving = False  # inside data_received (one loop and one connection at a time here)

    def data_received(self, data: bytes) -> None:
        RecordingConnection.receiving = True
        try:
            super().data_received(data)
        finally:
            RecordingConnection.receiving = False


def test_a_request_starts_in_the_callback_that_read_it_as_a_real_task():
    """A request's first step (up to its first await: parameters, parse, the store call
    written) runs in the loop callback that read it, not one loop iteration later, in its
    own Task (current_task and asyncio.timeout work before the first await); a request that
    answers without awaiting and pipelined requests are answered in order."""
    async def go():
        api = StepRecordingAPI()
        front = QueryFront(api, "")  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(
            lambda: RecordingConnection(front, lambda: None, 30.0), "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", srv.sockets[0].getsockname()[1])
            for queries in (["a"], ["now"], ["slow", "now"]):
                for q in queries:  # the second written while the first runs (pipelined)
                    writer.write(get(f"/api/v1/query?query={q}"))
                    await writer.drain()
                    await asyncio.sleep(0.05)
                for q in queries:
                    await reader.readuntil(b"\r\n\r\n")
                    body = await reader.readuntil(b"}")
                    assert body == b'{"status":"success","data":"%s"}' % q.encode()
            writer.close()
        finally:
            srv.close()
        # a pipelined request is started from the task that answered the one before it, one
        # loop iteration later (a task never starts inside another)
        assert api.first_steps == [(True, True), (True, True), (True, True), (False, True)]
        assert front.answered == 4 and front.handed_off == 0
    run(go())
