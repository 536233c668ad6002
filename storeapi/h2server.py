"""A gRPC server on HTTP/2 (framing in storeapi.h2serverconn) that accepts snappy messages.

grpcio's core refuses any ``grpc-encoding`` it does not know ("Error parsing 'grpc-encoding'
metadata") before Python sees the call, and Thanos routers compress forwarded writes with snappy
by default; and grpcio's Python API cannot raise the minimum TLS version above 1.2. This server
speaks the gRPC HTTP/2 protocol itself, on Python's ssl, so that every gRPC port (ingestor, store
gateway, querier) accepts identity, snappy, gzip and deflate messages and enforces
``--grpc-server-tls-min-version``. It serves the same ``grpc.GenericRpcHandler``
objects as a ``grpc.aio`` server (unary-unary and unary-stream methods, which is all the StoreAPI
and WriteableStore use); handlers get a context whose ``abort`` behaves like grpc.aio's.

Bounds: request messages are limited to ``max_message_bytes`` compressed and decompressed,
concurrent streams per connection to ``max_concurrent_streams``; header blocks to 64 KiB; a
client has ``handshake_timeout_s`` to send its preface and SETTINGS, and a call whose client
grants no flow-control window (or reads nothing) for ``send_stall_timeout_s`` is cancelled.
Responses are sent uncompressed (the client advertises what it accepts; identity always is).
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import grpc
from common.eagerstep import run_first_step
from storeapi import grpc_codec
from storeapi._h2fast import grpc_timeout, messages, unary_message
from storeapi.h2frames import CANCEL, ProtocolError, literal
from storeapi.h2serverconn import (DATA_IN, ENDED, REQUEST, RESET, TERMINATED, WINDOW,
                                   ServerConnection)

if TYPE_CHECKING:
    from storeapi.grpcmetrics import GrpcServerMetrics

log = logging.getLogger(__name__)

_ACCEPT_ENCODING = ",".join(grpc_codec.ACCEPTED_ENCODINGS)
_ACCEPTED = frozenset(grpc_codec.ACCEPTED_ENCODINGS)
_FLUSH_BYTES = 64 << 10  # coalesce small streamed messages into DATA frames of about this size
_PREFIX = struct.Struct(">BI")
_MAX_UNREAD_BYTES = 16 << 20  # written to a client that does not read: then it is cut off
# Header blocks we send: HPACK literals, the same on every call.
_RESPONSE_HEADERS = (b"\x88" + literal(b"content-type", "application/grpc")  # :status 200
                     + literal(b"grpc-accept-encoding", _ACCEPT_ENCODING))
_UNSUPPORTED_MEDIA = literal(8, "415")  # :status 415


def _status_block(code: grpc.StatusCode, details: str) -> bytes:
    if code is grpc.StatusCode.OK and not details:
        return _OK_STATUS
    block = literal(b"grpc-status", str(code.value[0]))
    return block + literal(b"grpc-message", _status_message(details)) if details else block


def _trailers_only_block(code: grpc.StatusCode, details: str) -> bytes:
    if code is grpc.StatusCode.OK and not details:
        return _OK_TRAILERS_ONLY
    return (_RESPONSE_HEADERS + literal(b"grpc-status", str(code.value[0]))
            + literal(b"grpc-message", _status_message(details)))


_OK_STATUS = literal(b"grpc-status", "0")  # the usual end of a call, built once
_OK_TRAILERS_ONLY = _RESPONSE_HEADERS + _OK_STATUS + literal(b"grpc-message", "")


class _Abort(Exception):
    """Raised by ``_Context.abort``: ends the call with ``code`` and ``details``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


@dataclass(frozen=True)
class _CallDetails:
    """What ``grpc.GenericRpcHandler.service`` looks at."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class _Context:
    """The part of ``grpc.aio.ServicerContext`` that handlers use."""

    def __init__(self, headers: dict[str, str], deadline: float | None, peer: str) -> None:
        # The request's headers: its metadata but the pseudo-headers (":path"...), built
        # when a handler asks for it; storeapi.server.tenant_of reads a key directly.
        self.request_headers = headers
        self._deadline = deadline
        self._peer = peer

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        raise _Abort(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return _metadata(self.request_headers)

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def peer(self) -> str:
        return self._peer


def _grpc_post(headers: dict[str, str]) -> bool:
    """A gRPC request: a POST of an application/grpc content type (else answered 415)."""
    return headers.get(":method") == "POST" and \
        headers.get("content-type", "").startswith("application/grpc")


def _metadata(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A call's metadata: its request headers but the pseudo-headers."""
    return tuple((k, v) for k, v in headers.items() if not k.startswith(":"))


def _status_message(details: str) -> str:
    """grpc-message is percent-encoded (printable ASCII except '%' stays as is)."""
    return quote(details, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


class _Stream:
    """One request stream. The fields that start the same on every call are class defaults
    (no __slots__): a new stream sets two, one Python line each fewer per call."""

    task: asyncio.Task | None = None
    sent_headers = False
    sent = 0  # response messages produced (grpc_server_msg_sent)
    expired = False  # its grpc-timeout passed: the task was cancelled for that
    deadline: float | None = None  # time.monotonic() of its grpc-timeout

    def __init__(self, headers: dict[str, str], body: bytearray | None = None) -> None:
        self.headers = headers
        self.body = bytearray() if body is None else body


def _expire(st: _Stream) -> None:
    """A call past its deadline: its task is cancelled and answers DEADLINE_EXCEEDED."""
    if st.task is not None and not st.task.done():
        st.expired = True
        st.task.cancel()


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: feeds bytes to its ServerConnection and runs one task per
    request stream."""

    def __init__(self, server: "H2GrpcServer") -> None:
        self._server = server
        # kept: asyncio.get_running_loop() is a getpid() system call per use
        self._loop = asyncio.get_running_loop()
        self._conn = ServerConnection(server.max_concurrent_streams, server.window_bytes)
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._buffered = 0  # request body bytes held by this connection's streams
        self._window_open = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._writing_paused = False  # as not self._can_write.is_set(), without a call
        self._closed = False
        self._peer = ""
        self._handshake_timer: asyncio.TimerHandle | None = None
        # One deadline timer per connection, at its earliest running call's deadline or
        # earlier (not a loop.call_at handle per call: calls usually end long before it).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = f"ipv4:{peer[0]}:{peer[1]}" if peer else ""
        self._conn.initiate_connection()
        self._flush()
        self._server._connections.add(self)
        self._handshake_timer = self._loop.call_later(
            self._server.handshake_timeout_s, self._handshake_expired)

    def _handshake_expired(self) -> None:
        """A client that has not sent its preface and SETTINGS by now is dropped (grpc-go's
        connection timeout): a stalled connection holds nothing forever."""
        if not self._conn.handshaken:
            log.debug("HTTP/2 client %s did not complete the handshake", self._peer)
            self._close()

    def connection_lost(self, exc) -> None:
        self._closed = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self._server._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for st in self._streams.values():
            if st.task is not None:
                st.task.cancel()
        self._streams.clear()
        self._window_open.set()
        self._can_write.set()

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        call = self._conn.receive_call(data)
        if call is not None:  # the usual read: one whole call (as its three events below)
            if not self._on_call(*call):
                sid, hdrs, body, n = call
                self._on_request(sid, hdrs)
                self._on_data(sid, body, n)
                self._on_end(sid)
            if self._conn.out:
                self._flush()
            return
        try:
            events = self._conn.receive(data)
        except ProtocolError as e:
            log.debug("HTTP/2 protocol error from %s: %s", self._peer, e)
            self._flush()
            self._close()
            return
        for ev in events:
            kind, sid = ev[0], ev[1]
            if kind == REQUEST:
                self._on_request(sid, ev[2])
            elif kind == DATA_IN:
                self._on_data(sid, ev[2], ev[3])
            elif kind == ENDED:
                self._on_end(sid)
            elif kind == RESET:
                st = self._drop(sid)
                if st is not None and st.task is not None:
                    st.task.cancel()
            elif kind == WINDOW:
                self._window_open.set()
            elif kind == TERMINATED:
                self._flush()
                self._close()
                return
        if self._conn.out:  # acknowledgements, window updates, refusals
            self._flush()

    # --- request handling ---------------------------------------------------------------------

    def _on_call(self, sid: int, hdrs: dict[str, str], body: bytes, n: int) -> bool:
        """A whole call read at once, started as ``_on_request``, ``_on_data`` and ``_on_end``
        would start it when none of their checks answers it (a gRPC POST in an accepted
        encoding whose body is within the limits); else False, nothing done, and those three
        take it. Test: test_h2_fast_call compares both."""
        if not _grpc_post(hdrs) or hdrs.get("grpc-encoding", grpc_codec.IDENTITY) not in _ACCEPTED \
                or self._buffered + len(body) > self._server.max_message_bytes + 5:
            return False
        self._conn.acknowledge_received_data(n, sid)
        st = self._streams[sid] = _Stream(hdrs, bytearray(body))
        self._buffered += len(body)
        st.task = _task_started_now(self._loop, self._run(sid, st))
        return True

    def _on_request(self, sid: int, hdrs: dict[str, str]) -> None:
        self._streams[sid] = _Stream(hdrs)
        if not _grpc_post(hdrs):
            self._conn.send_headers(sid, _UNSUPPORTED_MEDIA, end_stream=True)
            self._drop(sid)
            return
        enc = hdrs.get("grpc-encoding", grpc_codec.IDENTITY)
        if enc not in _ACCEPTED:
            self._trailers_only(sid, grpc.StatusCode.UNIMPLEMENTED,
                                f"grpc-encoding {enc!r} is not supported")

    def _on_data(self, sid: int, data: bytes, flow_controlled: int) -> None:
        self._conn.acknowledge_received_data(flow_controlled, sid)
        st = self._streams.get(sid)
        if st is None or st.task is not None:
            return
        st.body += data
        self._buffered += len(data)
        limit = self._server.max_message_bytes
        if len(st.body) > limit + 5:
            self._trailers_only(sid, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"received message larger than max ({limit} bytes)")
        elif self._buffered > limit + 5:  # many streams' bodies: bounded together as well
            self._trailers_only(sid, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"request messages buffered on this connection exceed max "
                                f"({limit} bytes)")

    def _on_end(self, sid: int) -> None:
        """The request is complete: its call starts (unless already answered or running)."""
        st = self._streams.get(sid)
        if st is not None and st.task is None:
            st.task = _task_started_now(self._loop, self._run(sid, st))

    def _drop(self, sid: int) -> _Stream | None:
        """Forget stream ``sid`` and the request body it held."""
        st = self._streams.pop(sid, None)
        if st is not None:
            self._buffered -= len(st.body)
        return st

    def _trailers_only(self, sid: int, code: grpc.StatusCode, details: str) -> None:
        """Answer a call that never started with status only, and stop reading its body."""
        if self._closed:
            return
        self._drop(sid)
        self._conn.send_headers(sid, _trailers_only_block(code, details), end_stream=True)
        self._conn.reset_stream(sid)  # a client still sending the body is told to stop
        self._flush()

    def _message(self, st: _Stream) -> bytes:
        """The single request message of a unary call, decompressed."""
        body, limit = st.body, self._server.max_message_bytes
        if len(body) < 5:
            raise _Abort(grpc.StatusCode.INTERNAL, "request has no complete message")
        flag, n = _PREFIX.unpack_from(body)
        if len(body) != 5 + n:
            raise _Abort(grpc.StatusCode.UNIMPLEMENTED if len(body) > 5 + n else
                         grpc.StatusCode.INTERNAL,
                         "unary call carries more than one message" if len(body) > 5 + n
                         else "truncated request message")
        data = bytes(body[5:])
        if not flag:
            return data
        enc = st.headers.get("grpc-encoding", grpc_codec.IDENTITY)
        if enc == grpc_codec.IDENTITY:
            raise _Abort(grpc.StatusCode.INTERNAL, "compressed message without grpc-encoding")
        try:
            return grpc_codec.decompress(enc, data, limit)
        except grpc_codec.MessageTooLarge as e:
            raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)) from None
        except ValueError as e:
            raise _Abort(grpc.StatusCode.INTERNAL, f"decompressing {enc} message: {e}") from None

    async def _run(self, sid: int, st: _Stream) -> None:
        path = st.headers.get(":path", "")
        raw_timeout = st.headers.get("grpc-timeout")
        timeout = None if raw_timeout is None else grpc_timeout(raw_timeout)
        deadline = None
        if timeout is not None:
            deadline = st.deadline = time.monotonic() + timeout
            if self._timer is None or deadline < self._timer_at:
                self._arm(deadline)
        method = None  # grpc_server_* of a call that reached its handler
        t0 = 0.0
        code = grpc.StatusCode.OK
        try:
            if raw_timeout is not None and timeout is None:  # as grpc-go
                raise _Abort(grpc.StatusCode.INTERNAL,
                             f"malformed grpc-timeout: {raw_timeout[:40]!r}")
            server = self._server
            handler, kind = server.routes.get(path) or server.lookup(path, st.headers)
            if handler is None:
                raise _Abort(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {path}")
            raw = unary_message(st.body)  # the usual body: one plain message, taken in C
            if raw is None:
                raw = self._message(st)
            self._buffered -= len(st.body)  # the handler has its own copy now
            st.body = bytearray()
            try:
                req = handler.request_deserializer(raw) if handler.request_deserializer else raw
            except Exception:  # noqa: BLE001 -- as grpcio: a bad request is INTERNAL
                raise _Abort(grpc.StatusCode.INTERNAL, "Exception deserializing request!") from None
            ctx = _Context(st.headers, deadline, self._peer)
            metrics = server.metrics
            if metrics is not None:
                method = metrics.served(path, kind)
                t0 = time.perf_counter()
            ser = handler.response_serializer  # None: the handler gives bytes
            if handler.unary_unary is not None:
                msg = await handler.unary_unary(req, ctx)
                st.sent = 1
                if ser is not None:
                    msg = ser(msg)
                await self._end_with(sid, st, _PREFIX.pack(0, len(msg)) + msg)
            else:
                await self._stream_responses(sid, st, handler.unary_stream(req, ctx), ser)
            if sid in self._streams:  # not answered whole by _end_with
                self._finish(sid, st, code, "")
        except _Abort as a:
            code = a.code
            self._finish(sid, st, code, a.details)
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            self._finish(sid, st, code, "Deadline Exceeded")
        except (asyncio.CancelledError, ConnectionError):
            # the deadline passed, or the client reset the stream or the connection went away
            code = grpc.StatusCode.DEADLINE_EXCEEDED if st.expired or (
                deadline is not None and deadline <= time.monotonic()) \
                else grpc.StatusCode.CANCELLED
            if st.expired:
                self._finish(sid, st, code, "Deadline Exceeded")
        except Exception as e:  # noqa: BLE001 -- as grpcio: a handler failure is UNKNOWN
            log.exception("gRPC handler for %s failed", path)
            code = grpc.StatusCode.UNKNOWN
            self._finish(sid, st, code, f"Unexpected {type(e).__name__}: {e}")
        finally:
            if method is not None:
                method.end(code, st.sent, t0)
            if sid in self._streams:
                self._drop(sid)

    async def _end_with(self, sid: int, st: _Stream, data: bytes) -> None:
        """The last messages of a call that ends OK: the usual small answer -- headers, one
        DATA frame and the OK trailers -- as one write, forgetting the stream; else sent as
        the windows allow (``_finish`` adds the trailers)."""
        if not st.sent_headers and not self._closed and sid in self._streams and \
                self._conn.send_reply(sid, _RESPONSE_HEADERS, data, _OK_STATUS):
            st.sent_headers = True
            del self._streams[sid]  # as _drop (its body was let go already)
            self._flush()
            return
        await self._send(sid, st, data, last=True)

    async def _stream_responses(self, sid: int, st: _Stream, it, ser) -> None:
        pending: list[bytes] = []  # messages, framed and joined in C when sent
        size = 0
        try:
            async for msg in it:
                st.sent += 1
                if ser is not None:
                    msg = ser(msg)
                pending.append(msg)
                size += 5 + len(msg)
                if size >= _FLUSH_BYTES:
                    await self._send(sid, st, messages(pending))
                    pending, size = [], 0
        except Exception:
            if pending:  # what was produced before a failure reaches the client, as with grpcio
                await self._send(sid, st, messages(pending))
            raise
        if pending:
            await self._end_with(sid, st, messages(pending))

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._expire_due)

    def _expire_due(self) -> None:
        """The deadline timer: calls past their deadline end; armed again for the earliest
        deadline still ahead (none: no timer until a call with a deadline starts)."""
        self._timer = None
        now, nxt = time.monotonic(), None
        for st in list(self._streams.values()):
            if st.deadline is None or st.task is None or st.task.done():
                continue
            if st.deadline <= now:
                _expire(st)
            elif nxt is None or st.deadline < nxt:
                nxt = st.deadline
        if nxt is not None and not self._closed:
            self._arm(nxt)

    # --- sending ------------------------------------------------------------------------------

    def _response_headers(self, sid: int, st: _Stream) -> None:
        if not st.sent_headers:
            st.sent_headers = True
            self._conn.send_headers(sid, _RESPONSE_HEADERS)

    async def _send(self, sid: int, st: _Stream, data: bytes, last: bool = False) -> None:
        """Send ``data`` on stream ``sid`` as the peer's flow-control windows allow. The
        ``last`` data of a call is left for ``_finish`` to write together with the trailers
        (headers, data and trailers of a small answer in one write, not three)."""
        if self._closed:
            raise ConnectionError("connection closed")
        self._response_headers(sid, st)
        view = memoryview(data)
        stalled_until = None  # a client granting no window gets send_stall_timeout_s
        while view:
            if self._closed:
                raise ConnectionError("connection closed")
            if sid not in self._streams:
                raise asyncio.CancelledError()
            window = self._conn.local_flow_control_window(sid)
            n = min(window, len(view), self._conn.max_outbound_frame_size)
            if n <= 0:
                self._window_open.clear()
                self._flush()
                loop = asyncio.get_running_loop()
                if stalled_until is None:
                    stalled_until = loop.time() + self._server.send_stall_timeout_s
                try:
                    await asyncio.wait_for(self._window_open.wait(), stalled_until - loop.time())
                except TimeoutError:
                    self._cancel_stalled(sid)
                continue
            stalled_until = None
            self._conn.send_data(sid, bytes(view[:n]))
            view = view[n:]
            if last and not view:
                return  # _finish flushes it with the trailers
            self._flush()
            if not self._can_write.is_set():
                try:
                    await asyncio.wait_for(self._can_write.wait(),
                                           self._server.send_stall_timeout_s)
                except TimeoutError:  # the client reads nothing at all: cut it off
                    log.debug("HTTP/2 client %s stopped reading", self._peer)
                    if self._transport is not None:
                        self._transport.abort()
                    raise ConnectionError("client stopped reading") from None

    def _cancel_stalled(self, sid: int) -> None:
        """A call whose client granted no window for send_stall_timeout_s: reset (CANCEL), so
        that what its handler holds is let go."""
        log.debug("HTTP/2 client %s granted no window on stream %d", self._peer, sid)
        self._drop(sid)
        self._conn.reset_stream(sid, CANCEL)
        self._flush()
        raise ConnectionError("client granted no flow-control window")

    def _finish(self, sid: int, st: _Stream, code: grpc.StatusCode, details: str) -> None:
        if self._closed or sid not in self._streams:
            return
        if not st.sent_headers:
            self._trailers_only(sid, code, details)
            return
        self._conn.send_headers(sid, _status_block(code, details), end_stream=True)
        self._flush()

    def _flush(self) -> None:
        out = self._conn.out
        if not out:
            return
        data = b"".join(out)  # as self._conn.data_to_send()
        out.clear()
        t = self._transport
        if t is not None and not t.is_closing():
            t.write(data)
            # Answers we write without waiting (PING and SETTINGS acknowledgements, resets) pile
            # up for a client that sends but never reads: such a client is cut off. (A buffer
            # that big is over the high-water mark: writing is paused.)
            if self._writing_paused and t.get_write_buffer_size() > _MAX_UNREAD_BYTES:
                log.debug("HTTP/2 client %s does not read its answers", self._peer)
                t.abort()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # --- shutdown -----------------------------------------------------------------------------

    def go_away(self) -> None:
        """Tell the client to open no new streams (running ones finish)."""
        if not self._closed:
            self._conn.close_connection()
            self._flush()

    def tasks(self) -> list[asyncio.Task]:
        return [st.task for st in self._streams.values() if st.task is not None]


_CALL_TASK = "grpc call"


def _task_started_now(loop: asyncio.AbstractEventLoop, coro) -> asyncio.Task:
    """A Task for ``coro`` whose first step runs now rather than on the loop's next pass
    (common.eagerstep) on asyncio's loop: a call that never waits -- a warm store answer -- is
    answered before ``data_received`` returns, one loop pass and one epoll call fewer per call.
    On uvloop's loop the step stays queued (see common.eagerstep)."""
    # as loop.create_task (no task factory here), named: an unnamed Task's "Task-<n>" is made
    # with printf, whose code is cold on every call of an idle server
    task = asyncio.Task(coro, loop=loop, name=_CALL_TASK)
    run_first_step(loop, task)
    return task


def _host_port(address: str) -> tuple[str | None, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    return (None if host in ("", "0.0.0.0") else host), int(port)


class H2GrpcServer:
    """Serves ``grpc.GenericRpcHandler``s like ``grpc.aio.server()``, accepting snappy too.

    Usage mirrors grpc.aio: ``add_generic_rpc_handlers``, ``add_insecure_port`` (returns the
    bound port, binding happens there), ``await start()``, ``await stop(grace)``.
    """

    def __init__(self, max_message_bytes: int = 256 << 20, max_concurrent_streams: int = 1000,
                 window_bytes: int = 4 << 20, metrics: "GrpcServerMetrics | None" = None,
                 handshake_timeout_s: float = 120.0, send_stall_timeout_s: float = 300.0) -> None:
        self.max_message_bytes = max_message_bytes
        self.handshake_timeout_s = handshake_timeout_s  # grpc-go's ConnectionTimeout default
        # above the queriers' 2 m query timeout: only a client that stopped reading meets it
        self.send_stall_timeout_s = send_stall_timeout_s
        self.metrics = metrics  # grpc_server_* (storeapi.grpcmetrics)
        self.max_concurrent_streams = max_concurrent_streams
        self.window_bytes = window_bytes
        self._handlers: list[grpc.GenericRpcHandler] = []
        # found handlers (and their grpc_type) by method path
        self.routes: dict[str, tuple[grpc.RpcMethodHandler, str]] = {}
        self._connections: set[_Connection] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._pending: list[tuple[str | None, int]] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._handlers.extend(handlers)
        self.routes.clear()

    def lookup(self, path: str, headers: dict[str, str]
               ) -> tuple[grpc.RpcMethodHandler | None, str]:
        """The handler of a call's method and its grpc_type ("unary", "server_stream"); None
        for a method we do not serve. Calls are routed by method path alone (our handlers are
        grpc.method_handlers_generic_handler), so a found method's handler is kept: no search
        per call. grpc_server_* are counted by the call itself (no wrapper per handler)."""
        found = self.routes.get(path)
        if found is not None:
            return found
        for h in self._handlers:
            handler = h.service(_CallDetails(path, _metadata(headers)))
            if handler is None:
                continue
            if handler.request_streaming or (handler.unary_unary is None
                                             and handler.unary_stream is None):
                return None, ""
            found = self.routes[path] = (
                handler, "unary" if handler.unary_unary is not None else "server_stream")
            return found
        return None, ""

    async def bind(self, address: str, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen on ``host:port`` (port 0 picks a free one), over TLS with ``ssl_context``;
        returns the bound port. A failed handshake closes only that connection."""
        host, port = _host_port(address)
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True,
                                       start_serving=False, ssl=ssl_context,
                                       ssl_handshake_timeout=10.0 if ssl_context else None)
        self._servers.append(srv)
        return srv.sockets[0].getsockname()[1]

    async def start(self) -> None:
        for srv in self._servers:
            await srv.start_serving()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; let running calls finish for up to ``grace`` seconds, then cut."""
        for srv in self._servers:
            srv.close()
        for c in list(self._connections):
            c.go_away()
        tasks = [t for c in self._connections for t in c.tasks()]
        if tasks and grace:
            await asyncio.wait(tasks, timeout=grace)
        for t in tasks:
            t.cancel()
        for c in list(self._connections):
            c._close()
        for srv in self._servers:
            await srv.wait_closed()
        self._servers.clear()
