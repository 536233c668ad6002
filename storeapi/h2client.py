"""A unary gRPC client on HTTP/2 (the ``h2`` library) that can compress requests with snappy.

grpcio can only compress with gzip/deflate; Thanos routers compress forwarded writes with snappy
by default and Thanos ingestors accept it, so a promring router with
``--receive.grpc-compression=snappy`` sends through this client. One HTTP/2 connection per
channel carries every concurrent call; a lost connection fails its calls with UNAVAILABLE and the
next call reconnects. Server-streaming calls (``unary_stream``) let the querier read StoreAPI
over it too, e.g. where certificate verification must be skipped, which grpcio cannot.
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import time
from collections.abc import AsyncIterator
from urllib.parse import unquote

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from storeapi import grpc_codec

_PREFIX = struct.Struct(">BI")


class RpcError(Exception):
    """A failed call; ``code()``/``details()`` as on ``grpc.aio.AioRpcError``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


_CODES = {c.value[0]: c for c in grpc.StatusCode}


_STREAM_WINDOW = 1 << 20  # per-stream receive window: what a streamed call buffers unread


class _Call:
    def __init__(self, streaming: bool = False) -> None:
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        # Streamed calls: DATA (bytes, flow-controlled length), then None at the end or an
        # exception; acknowledged to the server only as the reader takes them.
        self.queue: asyncio.Queue | None = asyncio.Queue() if streaming else None


class H2Channel:
    """Unary calls to one ``host:port`` with requests compressed by ``encoding``."""

    def __init__(self, address: str, encoding: str = grpc_codec.SNAPPY,
                 max_message_bytes: int = 256 << 20, ssl_context: ssl.SSLContext | None = None,
                 server_name: str = "") -> None:
        """``ssl_context``: dial TLS, checking the certificate against ``server_name`` (default:
        the dialed host)."""
        self.address = address
        self.ssl_context = ssl_context
        self.server_name = server_name
        self.encoding = encoding
        self.max_message_bytes = max_message_bytes
        self._conn: h2.connection.H2Connection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._calls: dict[int, _Call] = {}
        self._window = asyncio.Event()
        self._connecting = asyncio.Lock()

    async def _connect(self) -> h2.connection.H2Connection:
        async with self._connecting:
            if self._conn is not None:
                return self._conn
            host, _, port = self.address.rpartition(":")
            try:
                tls = {} if self.ssl_context is None else dict(
                    ssl=self.ssl_context, server_hostname=self.server_name or host.strip("[]"),
                    ssl_handshake_timeout=10.0)
                reader, writer = await asyncio.open_connection(host.strip("[]"), int(port), **tls)
            except (OSError, ssl.SSLError) as e:
                raise RpcError(grpc.StatusCode.UNAVAILABLE, f"connect {self.address}: {e}") from None
            conn = h2.connection.H2Connection(h2.config.H2Configuration(
                client_side=True, header_encoding="utf-8"))
            conn.local_settings = h2.settings.Settings(client=True, initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW})
            conn.initiate_connection()
            conn.increment_flow_control_window(4 * _STREAM_WINDOW)
            writer.write(conn.data_to_send())
            self._conn, self._writer = conn, writer
            self._reader_task = asyncio.get_running_loop().create_task(self._read(conn, reader))
            return conn

    async def _read(self, conn: h2.connection.H2Connection, reader: asyncio.StreamReader) -> None:
        reason = "connection closed"
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    self._event(conn, ev)
                if self._writer is not None:
                    self._writer.write(conn.data_to_send())
                if conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
                    reason = "server closed the connection (GOAWAY)"
                    break
        except (OSError, h2.exceptions.ProtocolError) as e:
            reason = f"connection error: {e}"
        finally:
            self._drop(conn, reason)

    def _event(self, conn: h2.connection.H2Connection, ev) -> None:
        if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            call = self._calls.get(ev.stream_id)
            if call is not None:
                call.headers.update(dict(ev.headers))
        elif isinstance(ev, h2.events.DataReceived):
            call = self._calls.get(ev.stream_id)
            if call is not None and call.queue is not None:
                call.queue.put_nowait((ev.data, ev.flow_controlled_length))
                return
            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if call is not None:
                call.body += ev.data
                if len(call.body) > self.max_message_bytes + 5:
                    self._fail(ev.stream_id, RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                      "response larger than allowed"))
        elif isinstance(ev, h2.events.StreamEnded):
            call = self._calls.pop(ev.stream_id, None)
            if call is not None and not call.done.done():
                call.done.set_result(None)
                if call.queue is not None:
                    call.queue.put_nowait(None)
        elif isinstance(ev, h2.events.StreamReset):
            self._fail(ev.stream_id, RpcError(grpc.StatusCode.UNAVAILABLE
                                              if ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                                              else grpc.StatusCode.INTERNAL,
                                              f"stream reset by server ({ev.error_code!r})"))
        elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._window.set()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            last = ev.last_stream_id or 0
            for sid in [s for s in self._calls if s > last]:
                self._fail(sid, RpcError(grpc.StatusCode.UNAVAILABLE, "server is going away"))

    def _fail(self, sid: int, err: Exception) -> None:
        call = self._calls.pop(sid, None)
        if call is not None and not call.done.done():
            call.done.set_exception(err)
            if call.queue is not None:
                call.done.exception()  # retrieved: the reader gets it from the queue
                call.queue.put_nowait(err)

    def _drop(self, conn: h2.connection.H2Connection, reason: str) -> None:
        if self._conn is conn:
            self._conn = None
            if self._writer is not None:
                self._writer.close()
            self._writer = None
        for sid in list(self._calls):
            self._fail(sid, RpcError(grpc.StatusCode.UNAVAILABLE, f"{self.address}: {reason}"))
        self._window.set()

    async def unary(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        """Call ``method`` (``/pkg.Service/Method``) with the serialized ``request``."""
        try:
            async with asyncio.timeout(timeout):
                return await self._unary(method, request, timeout)
        except TimeoutError:
            raise RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None

    async def _unary(self, method: str, request: bytes, timeout: float | None) -> bytes:
        conn, sid, call = await self._open(method, request, timeout, _Call())
        try:
            await call.done
        except asyncio.CancelledError:
            self._cancel(conn, sid)
            raise
        return self._result(call)

    async def unary_stream(self, method: str, request: bytes, timeout: float | None = None
                           ) -> AsyncIterator[bytes]:
        """Call a server-streaming ``method``; yields each response message as it arrives.
        ``timeout`` bounds the whole call; leaving the loop early cancels the stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            conn, sid, call = await asyncio.wait_for(
                self._open(method, request, timeout, _Call(streaming=True)), timeout)
        except TimeoutError:
            raise RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        assert call.queue is not None
        buf = bytearray()
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    item = await asyncio.wait_for(call.queue.get(), left)
                except TimeoutError:
                    raise RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
                if isinstance(item, Exception):
                    raise item
                if item is None:
                    self._result(call, body=False)  # raises on a non-OK status
                    if buf:
                        raise RpcError(grpc.StatusCode.INTERNAL, "stream ended inside a message")
                    return
                data, flow = item
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    conn.acknowledge_received_data(flow, sid)
                    self._flush(conn)
                buf += data
                for msg in self._messages(buf, call):
                    yield msg
        finally:
            if sid in self._calls:  # left early (break, error, cancellation)
                self._cancel(conn, sid)
            unread = 0  # give back the connection window that unread DATA still holds
            while not call.queue.empty():
                item = call.queue.get_nowait()
                if isinstance(item, tuple):
                    unread += item[1]
            if unread:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    conn.acknowledge_received_data(unread, sid)
                    self._flush(conn)

    def _messages(self, buf: bytearray, call: _Call) -> list[bytes]:
        """Complete length-prefixed messages taken off the front of ``buf``."""
        out = []
        while len(buf) >= 5:
            flag, n = _PREFIX.unpack_from(buf)
            if n > self.max_message_bytes:
                raise RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "response larger than allowed")
            if len(buf) < 5 + n:
                break
            msg = bytes(buf[5:5 + n])
            del buf[:5 + n]
            if flag:
                msg = grpc_codec.decompress(call.headers.get("grpc-encoding", ""), msg,
                                            self.max_message_bytes)
            out.append(msg)
        return out

    def _cancel(self, conn: h2.connection.H2Connection, sid: int) -> None:
        self._calls.pop(sid, None)
        with contextlib.suppress(h2.exceptions.ProtocolError):
            conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            self._flush(conn)

    async def _open(self, method: str, request: bytes, timeout: float | None,
                    call: _Call) -> tuple[h2.connection.H2Connection, int, _Call]:
        """Start a call: headers and the (compressed) request message, stream half-closed."""
        conn = await self._connect()
        compressed = self.encoding != grpc_codec.IDENTITY
        payload = grpc_codec.compress(self.encoding, request) if compressed else request
        data = _PREFIX.pack(1 if compressed else 0, len(payload)) + payload
        headers = [(":method", "POST"), (":scheme", "http"), (":path", method),
                   (":authority", self.address), ("content-type", "application/grpc"),
                   ("te", "trailers"), ("grpc-accept-encoding", "identity")]
        if compressed:
            headers.append(("grpc-encoding", self.encoding))
        if timeout is not None:
            headers.append(("grpc-timeout", f"{max(1, int(timeout * 1000))}m"))
        sid = conn.get_next_available_stream_id()
        self._calls[sid] = call
        try:
            conn.send_headers(sid, headers)
            await self._send(conn, sid, data)
        except asyncio.CancelledError:
            self._cancel(conn, sid)
            raise
        except (OSError, h2.exceptions.ProtocolError) as e:
            # The peer went away mid-send (e.g. killed): an unavailable endpoint, as grpcio
            # reports it, never a raw socket error for the caller to trip over.
            self._calls.pop(sid, None)
            if not call.done.done():
                call.done.cancel()
            self._drop(conn, f"connection error: {e}")
            raise RpcError(grpc.StatusCode.UNAVAILABLE, f"{self.address}: connection error: {e}") from None
        return conn, sid, call

    async def _send(self, conn: h2.connection.H2Connection, sid: int, data: bytes) -> None:
        view = memoryview(data)
        while True:
            if self._conn is not conn:
                raise RpcError(grpc.StatusCode.UNAVAILABLE, f"{self.address}: connection lost")
            n = min(conn.local_flow_control_window(sid), len(view), conn.max_outbound_frame_size)
            if n <= 0 and view:
                self._window.clear()
                self._flush(conn)
                await self._window.wait()
                continue
            last = n == len(view)
            conn.send_data(sid, bytes(view[:n]), end_stream=last)
            view = view[n:]
            self._flush(conn)
            if self._writer is not None:
                await self._writer.drain()
            if last:
                return

    def _flush(self, conn: h2.connection.H2Connection) -> None:
        if self._writer is not None and self._conn is conn:
            self._writer.write(conn.data_to_send())

    def _result(self, call: _Call, body: bool = True) -> bytes:
        """The response message of a finished call (RpcError unless its status is OK)."""
        h = call.headers
        status = h.get("grpc-status")
        if status is None:
            raise RpcError(grpc.StatusCode.UNKNOWN if h.get(":status") == "200" else
                           grpc.StatusCode.UNAVAILABLE,
                           f"no grpc-status in response (HTTP {h.get(':status')})")
        code = _CODES.get(int(status) if status.isdigit() else -1, grpc.StatusCode.UNKNOWN)
        if code != grpc.StatusCode.OK:
            raise RpcError(code, unquote(h.get("grpc-message", "")))
        if not body:
            return b""
        body = call.body
        if len(body) < 5:
            return b""
        flag, n = _PREFIX.unpack_from(body)
        msg = bytes(body[5:5 + n])
        if flag:
            msg = grpc_codec.decompress(h.get("grpc-encoding", ""), msg, self.max_message_bytes)
        return msg

    async def close(self) -> None:
        conn, task = self._conn, self._reader_task
        if conn is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                conn.close_connection()
                self._flush(conn)
            self._drop(conn, "channel closed")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
