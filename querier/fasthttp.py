"""The querier's HTTP front for its two hot routes, ``/api/v1/query`` and ``/api/v1/query_range``.

aiohttp spends ~200 us of CPU on each small request (its RequestHandler, a Task per request,
Request and Response objects, three extra loop iterations): as much as the rest of a one-series
query's HTTP side. This protocol owns the listening socket and answers the common case itself:
a complete HTTP/1.1 GET with a query string, or POST of a small urlencoded form, to one of the
two routes, with plain ASCII headers and nothing unusual (no Expect, Upgrade, Origin, chunked
body, HEAD...). Every other connection, from its first request that is not of that kind, is
handed to aiohttp's own RequestHandler with the bytes read so far, and stays with aiohttp:
errors, limits, timeouts of partial requests and every other route are aiohttp's as before.
The answers are the same QueryAPI functions', written with aiohttp's status line and headers.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Callable
from aiohttp.http import SERVER_SOFTWARE
from yarl import query_to_pairs  # what aiohttp's request.query and post() decode with

from common.eagerstep import run_first_step, steps_taken
from common.httpgzip import GZIP, MIN_BYTES, Coding, compressed, compressed_now, negotiate

from ._request import parse_get
from .api import Answer, QueryAPI

log = logging.getLogger(__name__)

MAX_HEAD = 8190  # aiohttp's longest request line or header: a longer head is aiohttp's to judge
MAX_FORM = 64 << 10  # a larger POST body is read (and bounded) by aiohttp
MAX_FORM_FIELDS = 1000  # aiohttp refuses more (413); such a form is left to it
MAX_PIPELINED = 256 << 10  # bytes held while a query runs; reading pauses above
ROUTES = ("/api/v1/query", "/api/v1/query_range")

# A complete request head of the kind answered here: "GET|POST <target> HTTP/1.1" with a target
# of URI characters only (no '#', no quotes), header lines of an HTTP token, a colon and
# printable ASCII, then the empty line; matched within MAX_HEAD + 4 bytes (its end included).
_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_HEAD = re.compile((r"(GET|POST) ([A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]+) HTTP/1\.1\r\n((?:"
                    + _TCHAR + r"+:[\x20-\x7e]*\r\n)*)\r\n").encode())
# A header line of a head _HEAD matched: its name, and its value without surrounding spaces.
_FIELD = re.compile(r"(" + _TCHAR + r"+):[ ]*((?:[\x20-\x7e]*[\x21-\x7e])?)[ ]*\r\n")
# Headers whose presence hands the request to aiohttp (CORS answers, uploads, protocol changes).
_HANDED_OFF = frozenset({"transfer-encoding", "expect", "upgrade", "origin", "te",
                         "http2-settings"})
_FORM = "application/x-www-form-urlencoded"
_REQUEST_TASK = "http request"


class Headers(dict):
    """A request's headers by lower-cased name (each at most once), looked up in any case."""

    def get(self, name: str, default=None):  # type: ignore[override]
        return dict.get(self, name.lower(), default)


@dataclass(slots=True)
class FastRequest:
    """A request the fast front answers: which route, its parameters and headers."""
    route: str  # the route's path, prefix included: the http metrics' handler label
    params: dict[str, list[str]]
    headers: Headers
    close: bool  # Connection: close
    size: int  # bytes of head and body


def parse_request(buf: bytes, routes: dict[str, str]) -> FastRequest | None:
    """The request at the start of ``buf`` when it is complete and one this front answers,
    else None (aiohttp then parses it and answers as it always did). The usual GET is read
    in C (querier/_request.c) into the same FastRequest; anything else by read_request."""
    req = parse_get(buf, routes, FastRequest, Headers)
    return read_request(buf, routes) if req is NotImplemented else req


def read_request(buf: bytes, routes: dict[str, str]) -> FastRequest | None:
    """parse_request in Python, for every kind of request (the meaning the C reading of a
    GET follows)."""
    m = _HEAD.match(buf, 0, MAX_HEAD + 4)
    if m is None:
        return None
    method, target, fields = m.groups()
    path, _, query = target.decode().partition("?")
    route = routes.get(path)
    if route is None:
        return None
    pairs = _FIELD.findall(fields.decode())
    headers = Headers({name.lower(): value for name, value in pairs})
    if len(headers) != len(pairs) or not _HANDED_OFF.isdisjoint(headers):  # a name repeated
        return None
    connection = headers.get("connection", "keep-alive").lower()
    if connection not in ("keep-alive", "close") or "host" not in headers:  # aiohttp: 400
        return None
    params: dict[str, list[str]] = {}
    for k, v in query_to_pairs(query):
        params.setdefault(k, []).append(v)
    size = m.end()
    length = headers.get("content-length")
    if method == b"POST":
        if headers.get("content-type") != _FORM or length is None or not length.isdigit() \
                or int(length) > MAX_FORM or len(buf) < size + int(length):
            return None
        body = buf[size:size + int(length)].rstrip()
        size += int(length)
        try:
            form = query_to_pairs(body.decode(), max_fields=MAX_FORM_FIELDS)
        except ValueError:  # not UTF-8 (aiohttp's 400), too many fields (its 413)
            return None
        for k, v in form:
            params.setdefault(k, []).append(v)
    elif length is not None:
        return None
    return FastRequest(route, params, headers, connection == "close", size)


_REASONS = {s.value: s.phrase for s in HTTPStatus}
_SERVER = f"Server: {SERVER_SOFTWARE}\r\n".encode()
_INTERNAL_ERROR = (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8"
                   b"\r\nContent-Length: 55\r\nConnection: close\r\n\r\n"
                   b"500 Internal Server Error\n\nServer got itself in trouble")


class _Date:
    """The Date header line, formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
        return self.line


def response_head(status: int, fields: bytes, date: bytes, close: bool) -> bytes:
    """Status line and headers, in aiohttp's order: the answer's own ``fields``, Date, Server,
    then Connection: close when the connection ends after it."""
    return b"".join((b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "").encode()), fields,
                     date, _SERVER, b"Connection: close\r\n\r\n" if close else b"\r\n"))


class QueryFront:
    """The fast front's shared state: the routes it answers, its open connections, counts."""

    def __init__(self, api: QueryAPI, prefix: str) -> None:
        self.api = api
        self.routes = {prefix + r: prefix + r for r in ROUTES}
        self.handlers = {prefix + ROUTES[0]: api.instant_query, prefix + ROUTES[1]: api.range_query}
        self.date = _Date()
        self.answered = 0  # requests answered here (the tests' proof that the path is taken)
        self.handed_off = 0  # connections given to aiohttp
        self.connections: set[FastConnection] = set()
        self.closing = False

    def protocol_factory(self, aiohttp_handler: Callable[[], asyncio.Protocol],
                         idle_timeout_s: float) -> Callable[[], asyncio.Protocol]:
        """What the listening socket makes per connection (``aiohttp_handler``: aiohttp's
        web.Server, a factory of its RequestHandler, for the connections handed over)."""
        return lambda: FastConnection(self, aiohttp_handler, idle_timeout_s)

    async def shutdown(self, timeout_s: float = 60.0) -> None:
        """As aiohttp's: idle connections closed, running queries given ``timeout_s`` to
        finish, then cancelled."""
        self.closing = True
        busy = []
        for conn in list(self.connections):
            if conn.task is None:
                conn.close()
            else:
                busy.append(conn.task)
        if busy:
            _, late = await asyncio.wait(busy, timeout=timeout_s)
            for task in late:
                task.cancel()
        for conn in list(self.connections):
            conn.close()


class FastConnection(asyncio.Protocol):
    """One client connection: its requests answered here until one is not of the fast kind,
    then the connection is aiohttp's. One request at a time; bytes that arrive meanwhile
    wait for its answer."""

    def __init__(self, front: QueryFront, aiohttp_handler: Callable[[], asyncio.Protocol],
                 idle_timeout_s: float) -> None:
        self.front = front
        self.aiohttp_handler = aiohttp_handler
        self.idle_timeout_s = idle_timeout_s
        self.loop = asyncio.get_running_loop()
        self.eager = steps_taken(self.loop)  # (uvloop's: no step is ever taken)
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task | None = None
        self.buffered = b""
        self.reading_paused = False
        self.drained: asyncio.Future | None = None  # set while the transport's buffer is full
        self.last_active = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.front.connections.add(self)
        self.last_active = self.loop.time()
        if self.idle_timeout_s > 0:
            self.timer = self.loop.call_at(self.last_active + self.idle_timeout_s, self._idle_check)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.buffered = self.buffered + data if self.buffered else data
        if self.task is not None:  # pipelined: read once the running query has answered
            if len(self.buffered) > MAX_PIPELINED and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()
            return
        self._next(eager=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.front.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None:  # the client is gone: its query stops (as Prometheus's)
            self.task.cancel()
        self._wake_writer()

    def pause_writing(self) -> None:
        self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    # requests

    def _next(self, eager: bool = False) -> None:
        """Answer the buffered request here, or give the connection to aiohttp. Bytes read
        together with a request (pipelined) go to aiohttp with it: its parser judges them all
        at once (one bad request among them and it answers only a 400). ``eager`` (called
        from data_received): the request's task takes its first step now (common.eagerstep),
        so a small query reaches its store call without a loop iteration of its own."""
        if self.front.closing:  # shutting down: no new request is started
            self.close()
            return
        try:
            req = parse_request(self.buffered, self.front.routes)
        except Exception:  # a parser bug must not cost the request: aiohttp answers it
            log.exception("fast HTTP parse failed")
            req = None
        if req is None or req.size != len(self.buffered):
            self._hand_off()
            return
        self.buffered = b""
        # (named: an unnamed Task's "Task-<n>" is made with printf, whose code is cold on every
        # request of an idle querier; uvloop's create_task names a Task after making it)
        task = self.task = asyncio.Task(self._serve(req), loop=self.loop, name=_REQUEST_TASK)
        if eager and self.eager:
            run_first_step(self.loop, task)

    async def _serve(self, req: FastRequest) -> None:
        t0 = time.perf_counter()
        try:
            answer = await self.front.handlers[req.route](req, req.params)
            await self._send(req, answer)
            if self.drained is not None or self.transport is None:  # (else _drain has no wait)
                await self._drain()  # a client that does not read its answers is sent no more
        except asyncio.CancelledError:
            self.close()
            raise
        except ConnectionResetError:  # the client left while a large answer was being sent
            self.close()
            return
        except Exception:  # a bug: answered as aiohttp answers an unhandled error
            log.exception("query request failed")
            if self.transport is not None:
                self.transport.write(_INTERNAL_ERROR)
            self.close()
            return
        finally:
            self.task = None
        self.front.answered += 1
        self.front.api.observe(req.route, answer.status, t0)
        self.last_active = self.loop.time()
        if req.close:
            self.close()
        elif self.transport is not None:
            if self.reading_paused:
                self.reading_paused = False
                self.transport.resume_reading()
            if self.buffered:
                self._next()

    async def _send(self, req: FastRequest, answer: Answer) -> None:
        chunks, status = answer.chunks, answer.status
        size = sum(map(len, chunks))
        # (Headers keeps lower-cased names: a plain dict lookup, without Headers.get's call)
        coding = (negotiate(dict.get(req.headers, "accept-encoding", "")) if size >= MIN_BYTES
                  else None)
        if len(chunks) == 1:
            body = chunks[0] if coding is None else compressed_now(coding, chunks[0])
            if body is None:  # (large: compressed in a worker thread)
                body = await compressed(coding, chunks[0])
            self._write(response_head(status, _fields(coding, b"Content-Length: %d\r\n" % len(body)),
                                      self.front.date(), req.close) + body)
            return
        if coding is None:  # a large answer, piece by piece (as api.send_chunks)
            self._write(response_head(status, _fields(None, b"Content-Length: %d\r\n" % size),
                                      self.front.date(), req.close))
            for piece in chunks:
                self._write(piece)
                await self._drain()
            return
        self._write(response_head(status, _fields(coding, b"Transfer-Encoding: chunked\r\n"),
                                  self.front.date(), req.close))
        co = coding.compressor()
        for piece in chunks:
            out = await asyncio.to_thread(co.compress, piece)
            if out:
                self._write(b"%x\r\n%b\r\n" % (len(out), out))
                await self._drain()
        out = co.flush()
        self._write((b"%x\r\n%b\r\n" % (len(out), out) if out else b"") + b"0\r\n\r\n")

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    async def _drain(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("client disconnected")
        if self.drained is not None:
            await self.drained

    def _wake_writer(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    # connection

    def _hand_off(self) -> None:
        """From now on aiohttp serves this connection, starting with the bytes buffered."""
        transport, data = self.transport, self.buffered
        assert transport is not None
        self.transport, self.buffered = None, b""
        self.front.connections.discard(self)
        self.front.handed_off += 1
        if self.timer is not None:
            self.timer.cancel()
        if self.reading_paused:
            transport.resume_reading()
        handler = self.aiohttp_handler()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(data)

    def _idle_check(self) -> None:
        """Close the connection when idle for the keep-alive timeout (aiohttp's)."""
        self.timer = None
        if self.transport is None:
            return
        due = self.last_active + self.idle_timeout_s
        if self.task is None and self.loop.time() >= due:
            self.close()
        else:
            self.timer = self.loop.call_at(max(due, self.loop.time() + 1.0), self._idle_check)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _fields(coding: Coding | None, length: bytes) -> bytes:
    """A JSON answer's own headers: type, coding (when compressed), then its length line."""
    if coding is None:  # Vary on a plain answer too, as Thanos's gzip handler sends it
        return b"Content-Type: application/json\r\nVary: Accept-Encoding\r\n" + length
    return (_GZIP_FIELDS if coding is GZIP else _coded_fields(coding)) + length


def _coded_fields(coding: Coding) -> bytes:
    return (b"Content-Type: application/json\r\nContent-Encoding: %b\r\nVary: Accept-Encoding\r\n"
            % coding.name.encode())


_GZIP_FIELDS = _coded_fields(GZIP)  # (the only coding negotiated today)
