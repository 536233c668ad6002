"""go-grpc-prometheus's server and client metrics (``grpc_server_handled_total`` and friends,
labelled ``grpc_type``, ``grpc_service``, ``grpc_method`` and ``grpc_code``), so the dashboards
and alerts written for Thanos's gRPC servers work unchanged.

Our own HTTP/2 server (storeapi.h2server) counts each call itself with ``served``/``end``; a
handler wrapper does the same for grpcio's aio server (through an interceptor). Per call it
costs a few integer additions, nothing per message byte.
"""
from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from common.ops import registry_shared
from common.plainhist import HistogramSeries, PlainHistogram

# Thanos's buckets for grpc_server_handling_seconds (and the client's).
BUCKETS = (0.001, 0.01, 0.1, 0.3, 0.6, 1, 3, 6, 9, 20, 30, 60, 90, 120)
_GO_NAMES = {grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled"}


def code_name(code: grpc.StatusCode) -> str:
    """Go's ``codes.Code.String()``: ``InvalidArgument``, ``Unavailable``, ``OK``..."""
    return _GO_NAMES.get(code) or "".join(w.capitalize() for w in code.name.split("_"))


def split_method(path: str) -> tuple[str, str]:
    """``/thanos.Store/Series`` -> ("thanos.Store", "Series")."""
    service, _, method = path.lstrip("/").rpartition("/")
    return service, method


def grpc_type(request_streaming: bool, response_streaming: bool) -> str:
    if request_streaming and response_streaming:
        return "bidi_stream"
    return "client_stream" if request_streaming else "server_stream" if response_streaming else "unary"


class _RpcMetrics:
    """started/handled/msg counters and the handling histogram under ``grpc_<side>_``, kept as
    plain numbers per method and exported at scrape time: a locked prometheus_client update per
    counter and a Python loop over the buckets per observation were a visible part of a small
    call's cost. Updated on the event loop only (one thread); a scrape reads a snapshot."""

    def __init__(self, side: str, registry: CollectorRegistry) -> None:
        self.side = side
        self.who = "the server" if side == "server" else "the client"
        # By (path, kind): only served or called methods get here.
        self._methods: dict[tuple[str, str], _Method] = {}
        self._seconds = PlainHistogram(f"grpc_{side}_handling_seconds",
                                       f"Time {self.who} took for an RPC until its status.",
                                       BUCKETS, None, _RPC_LABELS, created=False)
        registry.register(self)

    def begin(self, path: str, kind: str) -> "_Call":
        return _Call(self.method(path, kind))

    def served(self, path: str, kind: str) -> "_Method":
        """A server call of ``path`` that started, with its one request message received;
        it ends with ``_Method.end`` (fewer calls than ``begin`` for every call's floor)."""
        m = self._methods.get((path, kind)) or self.method(path, kind)
        m.started += 1
        m.received += 1
        return m

    def called(self, path: str, kind: str) -> "_Method":
        """A client call of ``path`` that started, with its one request message sent; it ends
        with ``_Method.end`` (as ``served`` on the server side)."""
        m = self._methods.get((path, kind)) or self.method(path, kind)
        m.started += 1
        m.sent += 1
        return m

    def method(self, path: str, kind: str) -> "_Method":
        m = self._methods.get((path, kind))
        if m is None:
            service, method = split_method(path)
            labels = (kind, service, method)
            m = self._methods[(path, kind)] = _Method(labels, self._seconds.labels(*labels))
        return m

    def collect(self) -> Iterator[Metric]:
        side, who = self.side, self.who
        rpc = list(_RPC_LABELS)
        started = CounterMetricFamily(f"grpc_{side}_started", f"RPCs started by {who}.",
                                      labels=rpc)
        handled = CounterMetricFamily(f"grpc_{side}_handled", f"RPCs completed by {who}, by code.",
                                      labels=rpc + ["grpc_code"])
        received = CounterMetricFamily(f"grpc_{side}_msg_received",
                                       f"Stream messages received by {who}.", labels=rpc)
        sent = CounterMetricFamily(f"grpc_{side}_msg_sent", f"Stream messages sent by {who}.",
                                   labels=rpc)
        for m in list(self._methods.values()):
            labels = list(m.labels)
            started.add_metric(labels, float(m.started))
            received.add_metric(labels, float(m.received))
            sent.add_metric(labels, float(m.sent))
            for value, n in list(m.handled.items()):
                handled.add_metric(labels + [code_name(grpc.StatusCode(value))], float(n))
        yield from (started, handled, received, sent)
        yield from self._seconds.collect()


_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class _Method:
    """One method's counts: calls started, messages, calls handled by code, and its series of
    the handling-time histogram."""

    __slots__ = ("labels", "started", "received", "sent", "handled", "seconds")

    def __init__(self, labels: tuple[str, str, str], seconds: HistogramSeries) -> None:
        self.labels = labels
        self.started = self.received = self.sent = 0
        # By the code's value: hashing a StatusCode member is a Python call (Enum.__hash__).
        self.handled: dict[tuple[int, str], int] = {}
        self.seconds = seconds

    def end(self, code: grpc.StatusCode, sent: int, t0: float) -> None:
        """A call that began at ``perf_counter()`` ``t0`` ended with ``code`` after sending
        ``sent`` messages."""
        self.sent += sent
        handled, value = self.handled, code._value_
        handled[value] = handled.get(value, 0) + 1
        seconds, took = self.seconds, time.perf_counter() - t0
        seconds.counts[bisect_left(seconds.bounds, took)] += 1  # as HistogramSeries.observe
        seconds.sum += took


class _Call:
    __slots__ = ("m", "t0")

    def __init__(self, m: _Method) -> None:
        self.m, self.t0 = m, time.perf_counter()
        m.started += 1

    def received(self, n: int = 1) -> None:
        self.m.received += n

    def sent(self, n: int = 1) -> None:
        self.m.sent += n

    def done(self, code: grpc.StatusCode) -> None:
        self.m.end(code, 0, self.t0)


class _RecordingContext:
    """The handler's context, remembering the status an ``abort`` sent."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self.code: grpc.StatusCode | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        self.code = code
        await self._ctx.abort(code, details, trailing_metadata)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


def _failure_code(ctx: _RecordingContext, e: BaseException) -> grpc.StatusCode:
    if ctx.code is not None:
        return ctx.code
    # GeneratorExit: a streamed call's responses were abandoned (the client reset the stream)
    if isinstance(e, (asyncio.CancelledError, TimeoutError, GeneratorExit)):
        left = ctx.time_remaining() if hasattr(ctx._ctx, "time_remaining") else None
        return (grpc.StatusCode.DEADLINE_EXCEEDED if left is not None and left <= 0
                else grpc.StatusCode.CANCELLED)
    return grpc.StatusCode.UNKNOWN


class GrpcServerMetrics(_RpcMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("server", registry)

    def wrap(self, handler: grpc.RpcMethodHandler | None, path: str) -> grpc.RpcMethodHandler | None:
        """``handler`` counting its calls; unary-unary and unary-stream (what we serve)."""
        if handler is None or handler.request_streaming:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, path), handler.request_deserializer,
                handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, path), handler.request_deserializer,
                handler.response_serializer)
        return handler

    def _unary(self, behaviour: Callable, path: str) -> Callable:
        async def call(request, context):
            rec, c = _RecordingContext(context), self.begin(path, "unary")
            c.received()
            try:
                resp = await behaviour(request, rec)
            except BaseException as e:
                c.done(_failure_code(rec, e))
                raise
            c.sent()
            c.done(grpc.StatusCode.OK)
            return resp
        return call

    def _stream(self, behaviour: Callable, path: str) -> Callable:
        async def call(request, context):
            rec, c = _RecordingContext(context), self.begin(path, "server_stream")
            c.received()
            sent = 0
            try:
                async for msg in behaviour(request, rec):
                    sent += 1
                    yield msg
            except BaseException as e:
                c.sent(sent)
                c.done(_failure_code(rec, e))
                raise
            c.sent(sent)
            c.done(grpc.StatusCode.OK)
        return call


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Puts GrpcServerMetrics on a grpcio aio server."""

    def __init__(self, metrics: GrpcServerMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        return self.metrics.wrap(await continuation(handler_call_details),
                                 handler_call_details.method)


class GrpcClientMetrics(_RpcMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("client", registry)


def server_metrics(registry: CollectorRegistry) -> GrpcServerMetrics:
    """The registry's one GrpcServerMetrics (``promring up`` runs several servers on one)."""
    return registry_shared(registry, "grpc_server", GrpcServerMetrics)


def client_metrics(registry: CollectorRegistry | None) -> GrpcClientMetrics | None:
    """The registry's one GrpcClientMetrics (none without a registry)."""
    return None if registry is None else registry_shared(registry, "grpc_client", GrpcClientMetrics)
