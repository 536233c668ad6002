"""Thanos's Cap'n Proto replication: the ``Writer`` interface over two-party RPC, both sides.

Only what Thanos's router and ingestor exchange is spoken: ``Bootstrap`` (answered with the
Writer capability), ``Call`` of ``Writer.write`` on it (directly or pipelined on the bootstrap
answer), ``Return``, ``Finish``, ``Release`` and ``Abort``, on go-capnp's packed stream
transport. Anything else aborts the connection. The server bounds what one connection can hold:
message size, calls in flight, how long a started message may take and how long it may idle.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from common.tasks import cancel_and_wait

from . import _capnpc
from .wire import Builder, FrameError, PackedFrames, Struct, root

log = logging.getLogger(__name__)

WRITER_INTERFACE_ID = 0xCC20B9C332C83B91  # write_request.capnp's Writer (Thanos's file id)
WRITE_METHOD = 0

# WriteError (write_request.capnp).
NONE, UNAVAILABLE, ALREADY_EXISTS, INVALID_ARGUMENT, INTERNAL = range(5)
ERROR_NAMES = ("none", "unavailable", "alreadyExists", "invalidArgument", "internal")

# rpc.capnp Message union discriminants, and Exception.Type.
_UNIMPLEMENTED, _ABORT, _CALL, _RETURN, _FINISH, _RESOLVE, _RELEASE, _BOOTSTRAP = 0, 1, 2, 3, 4, 5, 6, 8
_FAILED, _EXC_UNIMPLEMENTED = 0, 3

# The ingestor's answer for the HTTP status its local write produced, as Thanos's capnp server
# maps its errors: not ready / unavailable -> unavailable, conflicts -> alreadyExists, bad input
# -> invalidArgument, anything else -> internal (with the message as extraErrorContext). capnp
# has no code for a tenant limit: 429 becomes unavailable (retry later), as Thanos's router
# treats an internal error too.
WRITE_ERROR_FOR_HTTP = {200: NONE, 204: NONE, 409: ALREADY_EXISTS, 400: INVALID_ARGUMENT,
                        413: INVALID_ARGUMENT, 429: UNAVAILABLE, 503: UNAVAILABLE}

WriteHandler = Callable[[str, bytes], Awaitable[tuple[int, str]]]


@dataclass
class ServerOptions:
    max_message_bytes: int = 256 << 20
    max_calls_in_flight: int = 64     # per connection; reading pauses beyond it
    max_connections: int = 1024
    max_buffered_bytes: int = 1 << 30  # unfinished messages of all connections together
    message_timeout_s: float = 120.0  # a started message must be complete within this
    idle_timeout_s: float = 900.0     # a connection with no message this long is closed


def _message(b: Builder, which: int, dw: int, pc: int) -> int:
    """Root Message{which: struct(dw, pc)}; returns the inner struct's word."""
    msg = b.struct(0, 1, 1)
    b.put(msg, 0, "H", which)
    return b.struct(msg + 1, dw, pc)


def _exception(b: Builder, at: int, reason: str, kind: int) -> None:
    exc = b.struct(at, 1, 2)
    b.put(exc, 4, "H", kind)
    b.text(exc + 1, reason)


def return_results(answer_id: int, error: int, context: str) -> bytes:
    b = Builder()
    ret = _message(b, _RETURN, 2, 1)
    b.put(ret, 0, "I", answer_id)
    payload = b.struct(ret + 2, 0, 2)
    results = b.struct(payload, 1, 1)  # (error :WriteError, extraErrorContext :Text)
    b.put(results, 0, "H", error)
    b.text(results + 1, context)
    return b.frame()


def return_bootstrap(answer_id: int, export_id: int) -> bytes:
    b = Builder()
    ret = _message(b, _RETURN, 2, 1)
    b.put(ret, 0, "I", answer_id)
    payload = b.struct(ret + 2, 0, 2)
    b.capability(payload, 0)
    desc = b.struct_list(payload + 1, 1, 1, 1)
    b.put(desc, 0, "H", 1)  # CapDescriptor.senderHosted
    b.put(desc, 4, "I", export_id)
    return b.frame()


def return_exception(answer_id: int, reason: str, kind: int = _FAILED) -> bytes:
    b = Builder()
    ret = _message(b, _RETURN, 2, 1)
    b.put(ret, 0, "I", answer_id)
    b.put(ret, 6, "H", 1)  # Return.exception
    _exception(b, ret + 2, reason, kind)
    return b.frame()


def abort(reason: str) -> bytes:
    b = Builder()
    msg = b.struct(0, 1, 1)
    b.put(msg, 0, "H", _ABORT)
    _exception(b, msg + 1, reason, _FAILED)
    return b.frame()


class CallFailed(Exception):
    """The server answered a call with an RPC exception (e.g. an undecodable request)."""


class _Protocol(Exception):
    """The peer broke the protocol; the connection is aborted with this reason."""


class WriterServer:
    """Serves ``Writer.write`` on a TCP port; each write goes to ``handler(tenant, body)``,
    ``body`` being the request as an uncompressed prometheus.WriteRequest."""

    EXPORT_ID = 0

    def __init__(self, handler: WriteHandler, opts: ServerOptions | None = None) -> None:
        self.handler = handler
        self.opts = opts or ServerOptions()
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task] = set()
        self.buffered = 0  # bytes of unfinished messages, all connections

    async def start(self, address: str) -> int:
        host, _, port = address.rpartition(":")
        self._server = await asyncio.start_server(self._accept, host or None, int(port),
                                                  limit=1 << 16)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await cancel_and_wait(more=list(self._conns))
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.opts.max_connections:
            writer.close()
            return
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            await _Connection(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): the task ends here (asyncio's stream callback would log the cancel)
        finally:
            self._conns.discard(task)
            writer.close()


class _Connection:
    def __init__(self, server: WriterServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server, self.opts = server, server.opts
        self.reader, self.writer = reader, writer
        self.frames = PackedFrames(self.opts.max_message_bytes)
        self.bootstraps: set[int] = set()
        self.slots = asyncio.Semaphore(self.opts.max_calls_in_flight)
        self.calls: set[asyncio.Task] = set()
        self.counted = 0  # this connection's share of server.buffered

    def _account(self) -> None:
        """Track the bytes this connection buffers; over the server's budget it is dropped
        (the router sees it unavailable and retries) instead of the process running out."""
        now = self.frames.buffered
        self.server.buffered += now - self.counted
        self.counted = now
        if now and self.server.buffered > self.opts.max_buffered_bytes:
            raise _Protocol("server busy: too many bytes of unfinished messages buffered")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        started: float | None = None  # when the unfinished message began to arrive
        try:
            while True:
                if self.frames.partial:
                    started = loop.time() if started is None else started
                    timeout = started + self.opts.message_timeout_s - loop.time()
                else:
                    started, timeout = None, self.opts.idle_timeout_s
                try:
                    data = await asyncio.wait_for(self.reader.read(1 << 16), max(timeout, 0))
                except asyncio.TimeoutError:
                    return
                if not data:
                    return
                self.frames.feed(data)
                self._account()
                while (msg := self.frames.next()) is not None:
                    started = None
                    self._account()
                    if not await self._dispatch(msg):
                        return
                self._account()
        except (FrameError, _Protocol, ValueError) as e:
            log.debug("capnp connection aborted", extra={"err": str(e)})
            try:
                await self._send(abort(str(e)))
            except ConnectionError:
                pass
        finally:
            self.server.buffered -= self.counted
            self.counted = 0
            # Writes under way finish (their answers just cannot be sent), within bounds.
            if self.calls:
                await asyncio.wait(list(self.calls), timeout=self.opts.message_timeout_s)
            await cancel_and_wait(more=list(self.calls))

    async def _send(self, frame: bytes) -> None:
        """Write one answer; a peer that does not read its answers (so they would pile up in
        our buffers) within the message timeout loses the connection (ConnectionError)."""
        self.writer.write(frame)
        try:
            await asyncio.wait_for(self.writer.drain(), self.opts.message_timeout_s)
        except asyncio.TimeoutError:
            self.writer.transport.abort()
            raise ConnectionError("peer does not read its answers") from None

    async def _dispatch(self, raw: bytes) -> bool:
        """Handle one message; False ends the connection."""
        msg = root(raw)
        which = msg.u16(0)
        if which in (_FINISH, _RELEASE, _UNIMPLEMENTED):
            return True
        if which == _ABORT:
            return False
        body = msg.struct(0)
        if body is None:
            raise _Protocol("message without content")
        if which == _BOOTSTRAP:
            qid = body.u32(0)
            self.bootstraps.add(qid)
            await self._send(return_bootstrap(qid, WriterServer.EXPORT_ID))
            return True
        if which != _CALL:
            raise _Protocol(f"unsupported rpc message (union member {which})")
        qid = body.u32(0)
        if not self._targets_writer(body.struct(0)):
            await self._send(return_exception(qid, "call to an unknown capability"))
            return True
        if body.u64(8) != WRITER_INTERFACE_ID or body.u16(4) != WRITE_METHOD:
            await self._send(return_exception(
                qid, f"method {body.u64(8):#x}.{body.u16(4)} not implemented", _EXC_UNIMPLEMENTED))
            return True
        try:
            tenant, wr = self._write_request(raw, body)
        except (ValueError, UnicodeDecodeError) as e:
            # As Thanos: an undecodable request fails the call (its router retries elsewhere).
            await self._send(return_exception(qid, f"malformed write request: {e}"))
            return True
        await self.slots.acquire()
        task = asyncio.get_running_loop().create_task(self._write(qid, tenant, wr))
        self.calls.add(task)
        task.add_done_callback(self._call_done)
        return True

    def _call_done(self, task: asyncio.Task) -> None:
        self.calls.discard(task)
        self.slots.release()

    def _targets_writer(self, target: Struct | None) -> bool:
        if target is None:
            return False
        if target.u16(4) == 0:  # importedCap
            return target.u32(0) == WriterServer.EXPORT_ID
        promised = target.struct(0)  # promisedAnswer: pipelined on the bootstrap answer
        if promised is None or promised.u32(0) not in self.bootstraps:
            return False
        transform = promised.pointer(0)
        return transform is None or (transform[0] == 2 and transform[4] == 0)

    def _write_request(self, raw: bytes, call: Struct) -> tuple[str, bytes]:
        payload = call.struct(1)
        params = payload.struct(0) if payload is not None else None
        if params is None:
            return "", b""
        at = params.pointer_at(0)
        if at is None:
            return "", b""
        tenant, body = _capnpc.to_remote_write(raw, at[0], at[1], self.opts.max_message_bytes)
        return tenant.decode(), body

    async def _write(self, qid: int, tenant: str, body: bytes) -> None:
        try:
            status, detail = await self.server.handler(tenant, body)
        except Exception as e:  # noqa: BLE001 -- one failed write must not end the connection
            log.exception("capnp write failed")
            status, detail = 500, str(e)
        error = WRITE_ERROR_FOR_HTTP.get(status, INTERNAL)
        try:
            await self._send(return_results(qid, error, detail if error != NONE else ""))
        except (ConnectionError, RuntimeError):
            pass


# ------------------------------------------------------------------------------ client


class WriterClient:
    """One connection to an ingestor's Writer; concurrent writes share it (by question id).
    A broken connection fails the writes in flight and is opened again by the next write."""

    def __init__(self, address: str, max_message_bytes: int = 256 << 20) -> None:
        self.address = address
        self.max_message_bytes = max_message_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next_qid = 1
        self._import_id: int | None = None
        self._reading: asyncio.Task | None = None
        self._opening: asyncio.Lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._writer is not None and self._import_id is not None

    async def _open(self) -> None:
        async with self._opening:
            if self.connected:
                return
            if self._writer is not None:  # a connection whose bootstrap never finished
                self._close("reconnecting")
            host, _, port = self.address.rpartition(":")
            self._reader, self._writer = await asyncio.open_connection(host, int(port))
            self._reading = asyncio.get_running_loop().create_task(self._read_loop(self._reader))
            boot = Builder()
            b = _message(boot, _BOOTSTRAP, 1, 1)
            b_qid = self._question()
            boot.put(b, 0, "I", b_qid)
            answer = self._pending[b_qid] = asyncio.get_running_loop().create_future()
            self._writer.write(boot.frame())
            raw, ret = await answer
            try:
                self._import_id = self._bootstrapped(ret)
            except ValueError as e:
                self._close(str(e))
                raise ConnectionError(f"{self.address}: {e}") from None
            self._finish(b_qid, release_caps=False)

    @staticmethod
    def _bootstrapped(ret: Struct) -> int:
        """The import id of the Writer a bootstrap Return hands over (ValueError if none)."""
        payload = ret.struct(0)
        caps = payload.structs(1) if payload is not None else []
        cap = payload.pointer(0) if payload is not None else None
        if ret.u16(6) != 0 or cap is None or cap[0] != 3 or cap[1] >= len(caps):
            raise ValueError("bootstrap did not return a capability")
        desc = caps[cap[1]]
        if desc.u16(0) not in (1, 2):  # senderHosted / senderPromise
            raise ValueError("unexpected bootstrap capability")
        return desc.u32(4)

    def _question(self) -> int:
        qid = self._next_qid
        self._next_qid = (self._next_qid + 1) & 0xFFFFFFFF
        return qid

    def _finish(self, qid: int, release_caps: bool = True) -> None:
        b = Builder()
        f = _message(b, _FINISH, 1, 0)
        b.put(f, 0, "I", qid)
        b.put(f, 4, "B", 0 if release_caps else 1)  # bool stored XOR its default (true)
        if self._writer is not None:
            self._writer.write(b.frame())

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        frames = PackedFrames(self.max_message_bytes)
        reason = "connection closed"
        try:
            while data := await reader.read(1 << 16):
                frames.feed(data)
                while (raw := frames.next()) is not None:
                    msg = root(raw)
                    which = msg.u16(0)
                    if which == _ABORT:
                        exc = msg.struct(0)
                        reason = f"aborted by peer: {exc.text(0) if exc else ''}"
                        return
                    if which != _RETURN:
                        continue
                    ret = msg.struct(0)
                    fut = self._pending.pop(ret.u32(0), None) if ret is not None else None
                    if fut is not None and not fut.done():
                        fut.set_result((raw, ret))
        except (ConnectionError, ValueError) as e:
            reason = str(e)
        finally:
            if self._reader is reader:
                self._close(reason)

    def _close(self, reason: str) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._import_id = None
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self.address}: {reason}"))

    async def write(self, tenant: str, body: bytes, timeout_s: float) -> tuple[int, str]:
        """Send one prometheus.WriteRequest body; returns (WriteError, context). Raises
        ConnectionError (never sent, or the connection broke), CallFailed or TimeoutError."""
        async with asyncio.timeout(timeout_s):
            if not self.connected:
                await self._open()
            image = _capnpc.from_remote_write(body, tenant.encode())
            b = Builder()
            call = _message(b, _CALL, 3, 3)
            qid = self._question()
            b.put(call, 0, "I", qid)
            b.put(call, 8, "Q", WRITER_INTERFACE_ID)
            b.put(call, 4, "H", WRITE_METHOD)
            target = b.struct(call + 3, 1, 1)
            b.put(target, 0, "I", self._import_id)
            payload = b.struct(call + 4, 0, 2)
            params = b.struct(payload, 0, 1)
            b.attach(params, image, 0, 3)
            fut = self._pending[qid] = asyncio.get_running_loop().create_future()
            self._writer.write(b.frame())
            try:
                raw, ret = await fut
            finally:
                self._pending.pop(qid, None)
            self._finish(qid)
        try:
            if ret.u16(6) == 1:  # exception
                exc = ret.struct(0)
                raise CallFailed(f"{self.address}: {exc.text(0) if exc else 'call failed'}")
            payload = ret.struct(0)
            results = payload.struct(0) if payload is not None else None
            return (NONE, "") if results is None else (results.u16(0), results.text(0))
        except ValueError as e:  # an answer we cannot read
            raise CallFailed(f"{self.address}: malformed answer: {e}") from None

    async def close(self) -> None:
        reading = self._reading
        self._close("client closed")
        await cancel_and_wait(reading)
