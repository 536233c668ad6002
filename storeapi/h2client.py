"""A lean gRPC client on HTTP/2: unary and server-streaming calls, requests optionally snappy.

grpcio can only compress with gzip/deflate; Thanos routers compress forwarded writes with snappy
by default and Thanos ingestors accept it, so a promring router with
``--receive.grpc-compression=snappy`` sends through this client. The querier reads StoreAPI
through it too: a small call over grpc.aio costs the querier ~2 ms of CPU (its C core and poller
thread contend with the event loop for the GIL), over the ``h2`` library ~1.5 ms; this client
frames HTTP/2 itself on an ``asyncio.Protocol`` (HPACK decoding by the ``hpack`` library, request
headers written as literals without indexing), which costs a few hundred microseconds.

One HTTP/2 connection per channel carries every concurrent call; a lost connection fails its
calls with UNAVAILABLE and the next call reconnects. Bounds: frames up to ``_MAX_FRAME``, header
lists up to 64 KiB, response messages up to ``max_message_bytes``; each stream buffers at most
its receive window (``_STREAM_WINDOW``) unread.
"""
from __future__ import annotations

import asyncio
import collections
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from urllib.parse import unquote

import grpc
import grpc.aio
import hpack

from common.eagerstep import steps_taken, take_step
from storeapi import grpc_codec
from storeapi._wire import grpc_messages, one_stream, request_frames, whole_messages
from storeapi.h2frames import (
    ACK, CANCEL, COMPRESSION_ERROR, CONTINUATION, DATA, DEFAULT_FRAME, DEFAULT_WINDOW, ENABLE_PUSH,
    END_STREAM, FLOW_CONTROL_ERROR, GOAWAY, HEADERS, INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE, MAX_STREAM_ID, MAX_WINDOW,
    NO_ERROR, PING, PREFACE, PUSH_PROMISE, REFUSED_STREAM, RST_STREAM, SETTINGS,
    WINDOW_UPDATE, HeaderBlocks, HeaderDecoder, ProtocolError, frame, goaway, header_frames, literal, parse_settings,
    rst_stream, settings_frame, split_frames, unpad, window_update)

_PREFIX = struct.Struct(">BI")

_STREAM_WINDOW = 1 << 20  # per-stream receive window: what a streamed call buffers unread
_CONN_WINDOW = 4 << 20    # connection receive window (beyond the initial 65,535)
_MAX_FRAME = 1 << 20      # largest frame we accept (SETTINGS_MAX_FRAME_SIZE)
_MAX_HEADERS = 64 << 10   # largest header list we accept
_CONNECT_TIMEOUT = 20.0
_KNOWN_BLOCKS = 64        # decoded header blocks kept per connection (see h2frames.HeaderDecoder)
_LAZY_WAKE_BYTES = 64 << 10  # unread DATA that wakes a lazy call's reader before its end


class RpcError(grpc.aio.AioRpcError):
    """A failed call: a ``grpc.aio.AioRpcError`` (``code()``/``details()``), so code written
    for grpcio's client handles it unchanged."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    def __str__(self) -> str:
        return f"{self.code().name}: {self.details()}"

    __repr__ = __str__


_CODES = {c.value[0]: c for c in grpc.StatusCode}


class _Call:
    """One stream: response headers, then DATA (kept until read), then the end or an error.

    Fields that start the same for every call are class attributes (a write makes one the
    call's own): a call per query set thirteen fields one by one."""

    sid = 0
    size = 0  # bytes in chunks
    ended = False
    error: Exception | None = None
    waiter: asyncio.Future | None = None
    unacked = 0  # stream window consumed but not yet given back
    done = False  # ended or failed
    deadline: float | None = None  # loop time its waits end at (_Connection.wait)

    def __init__(self, streaming: bool, send_window: int, lazy: bool = False) -> None:
        """``lazy``: its reader takes the whole answer anyway, so DATA wakes it only once
        ``_LAZY_WAKE_BYTES`` are unread (or at the end): a small answer whose trailers come in
        a read of their own costs one wake-up, not two; and the wake-up runs at the end of the
        read that brought it (_Connection.data_received), not one loop iteration later."""
        self.headers: dict[str, str] = {}
        self.chunks: collections.deque[bytes] = collections.deque()
        self.send_window = send_window
        self.streaming = streaming
        self.lazy = lazy

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class _Connection(asyncio.Protocol):
    """One HTTP/2 client connection: frame parsing, flow control and the calls on it."""

    def __init__(self, channel: "H2Channel") -> None:
        self.channel = channel
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.decoder = HeaderDecoder(_MAX_HEADERS, _KNOWN_BLOCKS)
        self.known_blocks = self.decoder.known  # context-free header blocks, decoded
        self.header_table = self.decoder.decoder.header_table  # (_one_stream's lookups)
        self.calls: dict[int, _Call] = {}
        self.next_sid = 1
        self.peer_frame = DEFAULT_FRAME
        self.peer_window = DEFAULT_WINDOW  # initial send window of a new stream
        self.peer_streams = 1 << 31
        self.send_window = DEFAULT_WINDOW  # connection send window
        self.conn_unacked = 0
        self.blocks = HeaderBlocks(_MAX_HEADERS)
        self.closed = False
        self.draining = False  # GOAWAY received or ids exhausted: no new streams
        self.reason = "connection closed"
        self.window_open = asyncio.Event()
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.writable = True  # can_write.is_set(), read without a call (open_now)
        # One timer for the deadlines of all its calls, armed at the soonest one a call waits
        # for (see wait): a call finishing long before its deadline costs no timer.
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None  # (its lookup costs a getpid on 3.11)
        self.receiving = False  # inside data_received
        self.steps: list[asyncio.Handle] = []  # lazy calls' wake-ups, run once a read is done
        self.eager = False  # the loop's steps can be taken (common.eagerstep; not uvloop's)
        self.fast = True  # reads of one stream's plain answer taken whole (_one_stream)

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.eager = steps_taken(self.loop)
        transport.write(PREFACE + settings_frame({
            ENABLE_PUSH: 0, INITIAL_WINDOW_SIZE: _STREAM_WINDOW, MAX_FRAME_SIZE: _MAX_FRAME,
            MAX_HEADER_LIST_SIZE: _MAX_HEADERS}) + window_update(0, _CONN_WINDOW))

    def connection_lost(self, exc) -> None:
        if exc is not None and self.reason == "connection closed":
            self.reason = f"connection error: {exc}"
        self._lost()

    def pause_writing(self) -> None:
        self.writable = False
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.writable = True
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.receiving = True
        try:
            if (self.fast and not self.buf and self.blocks.pending is None
                    and (got := one_stream(data, _MAX_FRAME, _MAX_HEADERS)) is not None
                    and self._one_stream(*got)):
                frames = ()  # the usual read: one stream's answer, taken whole (_one_stream)
            elif self.buf:  # a frame began in an earlier read
                self.buf += data
                frames, used = split_frames(self.buf, _MAX_FRAME)
                del self.buf[:used]
            else:  # the usual read of whole frames: split where it lies, nothing copied first
                frames, used = split_frames(data, _MAX_FRAME)
                if used < len(data):
                    self.buf += memoryview(data)[used:]
            for f in frames:
                self._on_frame(*f)
        except (ProtocolError, hpack.HPACKError, ValueError) as e:
            self.reason = f"connection error: {e}"
            self._write(goaway(0, getattr(e, "code", COMPRESSION_ERROR)))
            self.abort()
            return
        finally:
            self.receiving = False
            if self.steps:
                self._run_steps()
        if self.calls or self.conn_unacked >= _CONN_WINDOW // 4:  # else it has nothing to do
            self._flush_window()

    def _one_stream(self, sid: int, head: bytes | None, chunks: list[bytes], ndata: int,
                    nbytes: int, tail: bytes | None, ended: bool) -> bool:
        """A read that is exactly [HEADERS] DATA* [HEADERS] of one live call, unpadded, as
        storeapi._wire.one_stream split it: taken in one step with the same effects as its
        frames one by one (_on_frame: a small answer's three frames cost a dozen Python
        calls). False, with nothing changed, when the frame-by-frame path must take it: no
        such call, or its DATA would pass the call's bounds (that path fails the call)."""
        call = self.calls.get(sid)
        if call is None:
            return False
        size = call.size + nbytes
        if nbytes and (size > _STREAM_WINDOW if call.streaming
                       else size > self.channel.max_message_bytes + 5):
            return False
        # a block HeaderDecoder.decode would look up (the table empty, the block known) is
        # looked up here, in this line: a Python call per block otherwise
        table, known = self.header_table, self.known_blocks
        if head is not None:
            call.headers.update(not table.dynamic_entries and known.get(head)
                                or self.decoder.decode(head))
        if ndata:
            self.conn_unacked += nbytes
            if not call.streaming:
                call.unacked += nbytes
            if chunks:
                call.chunks.extend(chunks)
                call.size = size
        if tail is not None:
            call.headers.update(not table.dynamic_entries and known.get(tail)
                                or self.decoder.decode(tail))
        if ended:
            self._end(sid)
        elif ndata and (not call.lazy or size >= _LAZY_WAKE_BYTES):
            self._wake(call)
        return True

    def _run_steps(self) -> None:
        """The wake-ups of the lazy calls this read ended, run now (common.eagerstep)."""
        steps, self.steps = self.steps, []
        for step in steps:
            step._run()

    def _wake(self, call: _Call) -> None:
        """Wake ``call``'s reader; a lazy call's wake-up is taken to run at the end of this
        read (everything it brought is parsed by then)."""
        w = call.waiter
        if w is not None and not w.done():
            w.set_result(None)
            if call.lazy and self.receiving and self.eager:
                step = take_step(self.loop)  # type: ignore[arg-type]
                if step is not None:
                    self.steps.append(step)

    # --- frames in ----------------------------------------------------------------------------

    def _on_frame(self, typ: int, flags: int, sid: int, payload: bytes) -> None:
        if self.blocks.pending is not None:  # (a call per frame otherwise: three per answer)
            self.blocks.check(typ)
        if typ == DATA:
            self._data(flags, sid, payload)
        elif typ == HEADERS or typ == CONTINUATION:
            block = self.blocks.feed(typ, flags, sid, payload)
            if block is not None:
                self._headers(*block)
        elif typ == RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            self._fail(sid, RpcError(
                grpc.StatusCode.UNAVAILABLE if code == REFUSED_STREAM else
                grpc.StatusCode.CANCELLED if code == CANCEL else grpc.StatusCode.INTERNAL,
                f"stream reset by server (error code {code})"))
        elif typ == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif typ == PING:
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif typ == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & MAX_STREAM_ID
            self.draining = True
            self.reason = "server closed the connection (GOAWAY)"
            for s in [s for s in self.calls if s > last]:
                self._fail(s, RpcError(grpc.StatusCode.UNAVAILABLE, "server is going away"))
            if not self.calls:
                self.abort()
        elif typ == WINDOW_UPDATE:
            inc = int.from_bytes(payload[:4], "big") & MAX_STREAM_ID
            if sid == 0:
                self.send_window += inc
            elif sid in self.calls:
                self.calls[sid].send_window += inc
            self.window_open.set()
        elif typ == PUSH_PROMISE:
            raise ProtocolError("PUSH_PROMISE with push disabled")
        # PRIORITY and unknown frame types are ignored

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise ProtocolError("DATA on stream 0")
        self.conn_unacked += len(payload)
        call = self.calls.get(sid)
        data = unpad(flags, payload)
        if call is None:
            return
        if call.streaming:
            call.unacked += len(payload) - len(data)  # padding: given back when read
        else:
            call.unacked += len(payload)
        if data:
            call.chunks.append(data)
            call.size += len(data)
            if call.size > self.channel.max_message_bytes + 5 and not call.streaming:
                self._fail(sid, RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                         "response larger than allowed"))
                self._reset(sid)
                return
            if call.streaming and call.size > _STREAM_WINDOW:
                # more unread than the stream's window allows: a server ignoring flow
                # control, which would otherwise fill our memory while the reader is slow
                self._fail(sid, RpcError(grpc.StatusCode.INTERNAL,
                                         "server sent beyond the flow-control window"))
                self._reset(sid)
                return
        if flags & END_STREAM:
            self._end(sid)
        elif not call.lazy or call.size >= _LAZY_WAKE_BYTES:
            self._wake(call)

    def _headers(self, sid: int, flags: int, block: bytes) -> None:
        # HPACK-decoded (a repeated literal-only block is looked up: HeaderDecoder)
        headers = self.decoder.decode(block)
        call = self.calls.get(sid)
        if call is None:
            return
        call.headers.update(headers)
        if flags & END_STREAM:
            self._end(sid)

    def _settings(self, payload: bytes) -> None:
        for key, value in parse_settings(payload):
            if key == MAX_CONCURRENT_STREAMS:
                self.peer_streams = value
            elif key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError("window too large", FLOW_CONTROL_ERROR)
                delta, self.peer_window = value - self.peer_window, value
                for c in self.calls.values():
                    c.send_window += delta
                self.window_open.set()
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= (1 << 24) - 1:
                    raise ProtocolError("bad SETTINGS_MAX_FRAME_SIZE")
                self.peer_frame = value
        self._write(frame(SETTINGS, ACK, 0))

    def _end(self, sid: int) -> None:
        call = self.calls.pop(sid, None)
        if call is not None:
            call.ended = call.done = True
            self._wake(call)
            self._stream_closed()

    def _fail(self, sid: int, err: Exception) -> None:
        call = self.calls.pop(sid, None)
        if call is not None and not call.done:
            call.error, call.done = err, True
            self._wake(call)
            self._stream_closed()

    def _stream_closed(self) -> None:
        self.window_open.set()  # a stream slot is free
        if self.draining and not self.calls and not self.closed:
            self.abort()  # a drained connection is closed once its last call ended

    def _lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.channel._forget(self)
        err = RpcError(grpc.StatusCode.UNAVAILABLE, f"{self.channel.address}: {self.reason}")
        for sid in list(self.calls):
            self._fail(sid, err)
        self.window_open.set()
        self.writable = True
        self.can_write.set()

    # --- waiting for a call, within its deadline -----------------------------------------------

    async def wait(self, call: _Call, deadline: float | None) -> None:
        """Until something arrives for ``call``, or RpcError(DEADLINE_EXCEEDED) at
        ``deadline`` (a loop time)."""
        loop = self.loop or asyncio.get_running_loop()
        call.waiter = loop.create_future()
        if deadline is not None:
            call.deadline = deadline
            if self.timer is None or deadline < self.timer_at:
                self._arm(loop, deadline)
        try:
            await call.waiter
        finally:
            call.waiter = None
        if deadline is not None and loop.time() >= deadline and not call.chunks and not call.done:
            raise RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.timer_at = loop.call_at(at, self._expire), at

    def _expire(self) -> None:
        """The soonest deadline came: wake every call past its deadline (its wait raises),
        and arm the timer for the soonest deadline still ahead."""
        self.timer = None
        loop = asyncio.get_running_loop()
        now, soonest = loop.time(), None
        for call in self.calls.values():
            d = call.deadline
            if d is None:
                continue
            if d <= now:
                call.wake()
            elif soonest is None or d < soonest:
                soonest = d
        if soonest is not None and not self.closed:
            self._arm(loop, soonest)

    # --- frames out ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _flush_window(self) -> None:
        """Give back connection window (and unary streams' windows) once a quarter is used."""
        out = b""
        if self.conn_unacked >= _CONN_WINDOW // 4:
            out += window_update(0, self.conn_unacked)
            self.conn_unacked = 0
        for sid, call in self.calls.items():
            if not call.streaming and call.unacked >= _STREAM_WINDOW // 4:
                out += window_update(sid, call.unacked)
                call.unacked = 0
        if out:
            self._write(out)

    def consumed(self, call: _Call, n: int) -> None:
        """A streamed call's reader took ``n`` bytes: give its stream window back in batches."""
        call.unacked += n
        if call.unacked >= _STREAM_WINDOW // 4 and not call.done and call.sid in self.calls:
            self._write(window_update(call.sid, call.unacked))
            call.unacked = 0

    def _reset(self, sid: int) -> None:
        self._write(rst_stream(sid, CANCEL))

    def cancel(self, call: _Call) -> None:
        if call.sid in self.calls:
            self.calls.pop(call.sid)
            call.done = True
            self._reset(call.sid)
            self._stream_closed()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._lost()

    def _add_stream(self, call: _Call) -> int:
        """Give ``call`` the next stream id (returned)."""
        sid = call.sid = self.next_sid
        self.next_sid += 2
        if self.next_sid > MAX_STREAM_ID:
            self.draining = True  # ids used up: the next call opens a new connection
        call.send_window = self.peer_window
        self.calls[sid] = call
        return sid

    def _new_stream(self, call: _Call, header_block: bytes) -> list[bytes]:
        """Give ``call`` the next stream id; its HEADERS frames."""
        return header_frames(self._add_stream(call), header_block, self.peer_frame,
                             end_stream=False)

    def _data_frames(self, call: _Call, view: memoryview, out: list[bytes]) -> memoryview | None:
        """DATA frames of ``view`` appended to ``out`` as far as the send windows allow; None
        once the last (END_STREAM) one is, else what is left to send."""
        while True:
            n = min(len(view), self.peer_frame, call.send_window, self.send_window)
            if n < len(view) and n <= 0:
                return view
            last = n == len(view)
            out.append(frame(DATA, END_STREAM if last else 0, call.sid, bytes(view[:n])))
            call.send_window -= n
            self.send_window -= n
            view = view[n:]
            if last:
                return None

    def open_now(self, call: _Call, header_block: bytes, data: bytes) -> bool:
        """Start ``call`` (HEADERS and the request's DATA written) when nothing is to be waited
        for -- a stream slot, send window, a writable transport -- and say so; else False with
        nothing sent (``open`` then waits, under a timer)."""
        n = len(data)
        if (len(self.calls) >= self.peer_streams or self.closed or self.draining
                or not self.writable or n > min(self.peer_window, self.send_window)):
            return False
        if n > self.peer_frame:  # more than one DATA frame (a huge request)
            out = self._new_stream(call, header_block)
            self._data_frames(call, memoryview(data), out)
            self._write(b"".join(out))
            return True
        # the usual request: HEADERS and its one DATA frame built in one C call (written
        # straight to the transport: not closed, as checked above)
        self.transport.write(  # type: ignore[union-attr]
            request_frames(self._add_stream(call), header_block, data, self.peer_frame))
        call.send_window -= n  # (as _data_frames counts its frame)
        self.send_window -= n
        return True

    async def open(self, call: _Call, header_block: bytes, data: bytes) -> None:
        """Start ``call``: HEADERS and the request's DATA, within the peer's flow control."""
        while len(self.calls) >= self.peer_streams and not self.closed:
            self.window_open.clear()
            await self.window_open.wait()
        if self.closed or self.draining:
            raise RpcError(grpc.StatusCode.UNAVAILABLE, f"{self.channel.address}: {self.reason}")
        out = self._new_stream(call, header_block)
        view = memoryview(data)
        while (view := self._data_frames(call, view, out)) is not None:
            self._write(b"".join(out))
            out = []
            self.window_open.clear()
            await self.window_open.wait()
            if self.closed or call.done:
                raise call.error or RpcError(grpc.StatusCode.UNAVAILABLE,
                                             f"{self.channel.address}: {self.reason}")
        self._write(b"".join(out))
        if not self.can_write.is_set():
            await self.can_write.wait()
        if self.closed and not call.done:
            raise RpcError(grpc.StatusCode.UNAVAILABLE, f"{self.channel.address}: {self.reason}")


class H2Channel:
    """gRPC calls to one ``host:port`` with requests compressed by ``encoding``."""

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
        self._conn: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._headers: dict[tuple[str, float | None], bytes] = {}  # request header blocks
        # unary_stream_each takes a whole answer in one step (_whole); False: only by its
        # general loop (tests compare the two)
        self.whole_fast = True

    def _forget(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None

    async def _connect(self, timeout: float | None) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.draining:
            return conn
        async with self._connecting:
            conn = self._conn
            if conn is not None and not conn.closed and not conn.draining:
                return conn
            host, _, port = self.address.rpartition(":")
            host = host.strip("[]")
            tls = {} if self.ssl_context is None else dict(
                ssl=self.ssl_context, server_hostname=self.server_name or host,
                ssl_handshake_timeout=10.0)
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(min(timeout or _CONNECT_TIMEOUT, _CONNECT_TIMEOUT)):
                    _, conn = await loop.create_connection(lambda: _Connection(self), host,
                                                           int(port), **tls)
            except (OSError, ssl.SSLError, TimeoutError, ValueError) as e:
                raise RpcError(grpc.StatusCode.UNAVAILABLE,
                               f"connect {self.address}: {e or type(e).__name__}") from None
            self._conn = conn
            return conn

    def _header_block(self, method: str, timeout: float | None) -> bytes:
        key = (method, timeout)
        block = self._headers.get(key)
        if block is None:
            scheme = b"\x87" if self.ssl_context is not None else b"\x86"  # :scheme https/http
            fields = [b"\x83", scheme, literal(4, method), literal(1, self.address),
                      literal(b"content-type", "application/grpc"), literal(b"te", "trailers"),
                      literal(b"grpc-accept-encoding", "identity")]
            if self.encoding != grpc_codec.IDENTITY:
                fields.append(literal(b"grpc-encoding", self.encoding))
            if timeout is not None:
                fields.append(literal(b"grpc-timeout", f"{max(1, int(timeout * 1000))}m"))
            block = b"".join(fields)
            if len(self._headers) < 256:  # a few methods x timeouts; others are built each time
                self._headers[key] = block
        return block

    def _message(self, request: bytes) -> bytes:
        """The request as a length-prefixed gRPC message, compressed by ``encoding``."""
        if self.encoding == grpc_codec.IDENTITY:
            return _PREFIX.pack(0, len(request)) + request
        payload = grpc_codec.compress(self.encoding, request)
        return _PREFIX.pack(1, len(payload)) + payload

    async def _start(self, method: str, request: bytes, timeout: float | None,
                     streaming: bool, lazy: bool = False, metadata: bytes = b""
                     ) -> tuple[_Connection, _Call]:
        conn = await self._connect(timeout)
        call = _Call(streaming, 0, lazy)
        try:
            await conn.open(call, self._header_block(method, timeout) + metadata,
                            self._message(request))
        except BaseException:
            conn.cancel(call)
            raise
        return conn, call

    async def unary(self, method: str, request: bytes, timeout: float | None = None,
                    metadata: bytes = b"") -> bytes:
        """Call ``method`` (``/pkg.Service/Method``) with the serialized ``request``;
        ``metadata``: extra request header fields, HPACK-encoded (see h2frames.literal)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                conn, call = await self._start(method, request, timeout, False,
                                               metadata=metadata)
                try:
                    while not call.done:
                        await conn.wait(call, None)
                except BaseException:
                    conn.cancel(call)
                    raise
        except TimeoutError:
            raise RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        if call.error is not None:
            raise call.error
        self._status(call)
        body = b"".join(call.chunks)
        if len(body) < 5:
            return b""
        flag, n = _PREFIX.unpack_from(body)
        if n > self.max_message_bytes:
            raise RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "response larger than allowed")
        return self._decompressed(call, flag, body[5:5 + n])

    async def _open_stream(self, method: str, request: bytes, timeout: float | None,
                           until: float | None = None, lazy: bool = False,
                           metadata: bytes = b""
                           ) -> tuple[_Connection, _Call, float | None]:
        """A server-streaming call started; (its connection, the call, its loop deadline): the
        sooner of ``timeout`` from now and ``until`` (a loop time, e.g. the query's deadline:
        the caller needs no timer of its own around the call)."""
        conn, call, deadline = self._open_now(method, request, timeout, until, lazy, metadata)
        if conn is not None:
            return conn, call, deadline
        return await self._start_stream(method, request, timeout, lazy, metadata, deadline)

    def _open_now(self, method: str, request: bytes, timeout: float | None,
                  until: float | None, lazy: bool, metadata: bytes
                  ) -> tuple[_Connection | None, _Call, float | None]:
        """_open_stream's usual call, on a live connection with nothing to wait for (no timer,
        no coroutine): (the connection, the call, its deadline); the connection is None when
        _start_stream must start it instead (nothing sent)."""
        conn, call = self._conn, _Call(True, 0, lazy)
        loop = conn.loop if conn is not None and conn.loop is not None else \
            asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if until is not None and (deadline is None or until < deadline):
            deadline = until
        # (a kept header block looked up here: _header_block builds and keeps one)
        if (conn is not None and not conn.closed and not conn.draining and conn.open_now(
                call, (self._headers.get((method, timeout)) or self._header_block(
                    method, timeout)) + metadata, self._message(request))):
            return conn, call, deadline
        return None, call, deadline

    async def _start_stream(self, method: str, request: bytes, timeout: float | None,
                            lazy: bool, metadata: bytes, deadline: float | None
                            ) -> tuple[_Connection, _Call, float | None]:
        """A server-streaming call started when _open_now could not, within ``deadline``."""
        try:
            async with asyncio.timeout_at(deadline):
                conn, call = await self._start(method, request, timeout, True, lazy, metadata)
        except TimeoutError:
            raise RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        return conn, call, deadline

    def _chunk_messages(self, conn: _Connection, call: _Call, buf: bytearray) -> list[bytes]:
        """The messages the call's oldest unread DATA completes (its window given back)."""
        data = call.chunks.popleft()
        call.size -= len(data)
        if not call.done:  # (a done call's window is not given back)
            conn.consumed(call, len(data))
        buf += data
        return self._messages(buf, call)

    def _ended(self, call: _Call, buf: bytearray) -> bool:
        """True once the streamed call ended well; its error (or bad status) raised."""
        if call.error is not None:
            raise call.error
        if not call.ended:
            return False
        if call.headers.get("grpc-status") != "0":  # (OK, the usual answer: no call)
            self._status(call)
        if buf:
            raise RpcError(grpc.StatusCode.INTERNAL, "stream ended inside a message")
        return True

    async def unary_stream(self, method: str, request: bytes, timeout: float | None = None,
                           metadata: bytes = b"") -> AsyncIterator[bytes]:
        """Call a server-streaming ``method``; yields each response message as it arrives.
        ``timeout`` bounds the whole call; leaving the loop early cancels the stream."""
        conn, call, deadline = await self._open_stream(method, request, timeout,
                                                       metadata=metadata)
        buf = bytearray()
        try:
            while True:
                while call.chunks:
                    for msg in self._chunk_messages(conn, call, buf):
                        yield msg
                if self._ended(call, buf):
                    return
                await conn.wait(call, deadline)
        finally:
            if not call.done:  # left early (break, error, cancellation)
                conn.cancel(call)

    async def unary_stream_each(self, method: str, request: bytes, timeout: float | None,
                                on_message: Callable[[bytes], None],
                                until: float | None = None, metadata: bytes = b"") -> None:
        """``unary_stream`` for a caller that takes the whole answer: ``on_message(msg)`` for
        each message, at the end or whenever 64 KiB are unread, in a plain coroutine (an async generator per call and
        per layer above it cost more than a small call's messages do). An exception from
        ``on_message`` cancels the stream and is raised. ``until``: a loop time the call fails
        at (DEADLINE_EXCEEDED) if ``timeout`` has not ended it before."""
        conn, call, deadline = self._open_now(method, request, timeout, until, True, metadata)
        if conn is None:  # (no coroutine for the usual call: see _open_now)
            conn, call, deadline = await self._start_stream(method, request, timeout, True,
                                                            metadata, deadline)
        buf = bytearray()
        try:
            if not call.done and not call.chunks:  # (as the loop's first pass would)
                await conn.wait(call, deadline)
            if self.whole_fast and (msgs := self._whole(call)) is not None:
                for msg in msgs:
                    on_message(msg)
                return
            while True:
                while call.chunks:  # everything that arrived, before the end is looked at
                    for msg in self._chunk_messages(conn, call, buf):
                        on_message(msg)
                if call.done and self._ended(call, buf):  # (not done: neither ended nor failed)
                    return
                await conn.wait(call, deadline)
        finally:
            if not call.done:  # failed or cancelled: the stream is reset
                conn.cancel(call)

    def _whole(self, call: _Call) -> list[bytes] | None:
        """The messages of a call that ended OK with its whole answer unread in one DATA chunk
        of uncompressed messages within bounds (the usual small answer: one read), as
        _chunk_messages and _ended would give them, in one step; None, with nothing taken,
        when the loop must take it (compressed, too large or cut messages: it raises those)."""
        chunks = call.chunks
        if not call.ended or len(chunks) != 1 or call.headers.get("grpc-status") != "0":
            return None  # (ended: not failed; a done call's window is not given back)
        msgs = whole_messages(chunks[0], self.max_message_bytes)  # (C: None if not plain)
        if msgs is not None:
            chunks.clear()
            call.size = 0
        return msgs

    def _messages(self, buf: bytearray, call: _Call) -> list[bytes]:
        """Complete length-prefixed messages taken off the front of ``buf`` (split in C: a
        small answer's one message took a dozen Python steps)."""
        out, flags, too_large = grpc_messages(buf, self.max_message_bytes)
        if any(flags):  # compressed messages (a nonzero flag byte)
            out = [self._decompressed(call, f, m) for f, m in zip(flags, out)]
        if too_large:
            raise RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "response larger than allowed")
        return out

    def _decompressed(self, call: _Call, flag: int, msg: bytes) -> bytes:
        if not flag:
            return msg
        try:
            return grpc_codec.decompress(call.headers.get("grpc-encoding", ""), msg,
                                         self.max_message_bytes)
        except grpc_codec.MessageTooLarge:
            raise RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "response larger than allowed") from None
        except ValueError as e:
            raise RpcError(grpc.StatusCode.INTERNAL, f"decompressing response: {e}") from None

    @staticmethod
    def _status(call: _Call) -> None:
        """RpcError unless the finished call's status is OK."""
        h = call.headers
        status = h.get("grpc-status")
        if status == "0":  # OK, the usual answer: no lookup
            return
        if status is None:
            raise RpcError(grpc.StatusCode.UNKNOWN if h.get(":status") == "200" else
                           grpc.StatusCode.UNAVAILABLE,
                           f"no grpc-status in response (HTTP {h.get(':status')})")
        code = _CODES.get(int(status) if status.isdigit() else -1, grpc.StatusCode.UNKNOWN)
        if code != grpc.StatusCode.OK:
            raise RpcError(code, unquote(h.get("grpc-message", "")))

    async def close(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.reason = "channel closed"
            conn._write(goaway(0, NO_ERROR))
            conn.abort()
        self._conn = None
