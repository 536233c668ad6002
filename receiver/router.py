"""The receive router: split a remote-write request by hashring owner and replicate it.

Each series goes to the ``replication_factor`` endpoints the tenant's hashring assigns to
xxhash64(tenant + labels). Every endpoint gets one ``thanos.WriteableStore/RemoteWrite`` per
replica number it holds (as Thanos's router sends them), holding exactly the series it is that
replica of, cut out of the original protobuf bytes (no re-encoding), and carrying that 1-based
``replica`` so that the receiver stores it instead of routing it again. The
request succeeds once every series is acknowledged by a quorum of its replicas; the answer then
does not wait for slower replicas, whose writes finish in the background.

Status aggregation follows Thanos, so Prometheus retries exactly what can succeed later:
conflicts acknowledged by a quorum (out-of-order, duplicates, bad labels: retrying cannot help)
answer 409; a quorum refusing bad input answers 400, or 429 for an exhausted tenant limit;
anything else short of a quorum answers 503.
"""
from __future__ import annotations

from common.varint import uvarint

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import grpc.aio
import numpy as np
from prometheus_client import CollectorRegistry, Counter

from common.tasks import cancel_and_wait
from common.tls import ClientTLS, client_ssl_context, grpc_channel
from storeapi import grpc_codec
from storeapi.grpcmetrics import GrpcClientMetrics
from storeapi.h2client import H2Channel, RpcError
from storeapi.server import GRPC_OPTIONS, MAX_MESSAGE_BYTES

from .capnproto import rpc as capnp_rpc
from .hashring import _ringc
from .hashring.config import Endpoint
from .hashring.ring import Hashrings, InsufficientNodesError, hash_series
from .remotewrite import DecodedWrite

log = logging.getLogger(__name__)

REMOTE_WRITE_METHOD = "/thanos.WriteableStore/RemoteWrite"
GRPC_COMPRESSIONS = ("snappy", "none")  # --receive.grpc-compression, as in Thanos
REPLICATION_PROTOCOLS = ("protobuf", "capnproto")  # --receive.replication-protocol, as in Thanos

# Outcome of one endpoint's share of a request.
PENDING, OK, CONFLICT, BAD, LIMIT, UNAVAILABLE, ERROR = range(7)
_NAMES = {OK: "ok", CONFLICT: "conflict", BAD: "bad_request", LIMIT: "limit",
          UNAVAILABLE: "unavailable", ERROR: "error"}

_FROM_GRPC = {
    grpc.StatusCode.ALREADY_EXISTS: CONFLICT,
    grpc.StatusCode.INVALID_ARGUMENT: BAD,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LIMIT,
    grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: UNAVAILABLE,
    grpc.StatusCode.CANCELLED: UNAVAILABLE,
}
_FROM_HTTP = {200: OK, 204: OK, 409: CONFLICT, 400: BAD, 413: BAD, 429: LIMIT, 503: UNAVAILABLE}
# A capnp WriteError, as Thanos's capnp client turns it into a gRPC code (internal -> unavailable).
_FROM_CAPNP = {capnp_rpc.NONE: OK, capnp_rpc.UNAVAILABLE: UNAVAILABLE,
               capnp_rpc.ALREADY_EXISTS: CONFLICT, capnp_rpc.INVALID_ARGUMENT: BAD,
               capnp_rpc.INTERNAL: UNAVAILABLE}

# What an ingestor answers over gRPC for the HTTP status its local write produced.
GRPC_FOR_HTTP = {409: grpc.StatusCode.ALREADY_EXISTS, 400: grpc.StatusCode.INVALID_ARGUMENT,
                 413: grpc.StatusCode.INVALID_ARGUMENT, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
                 503: grpc.StatusCode.UNAVAILABLE}

CHANNEL_OPTIONS = GRPC_OPTIONS + (
    # Reconnect quickly to an ingestor that comes back, instead of gRPC's 2-minute ceiling.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
)

LocalWriter = Callable[[str, bytes], Awaitable[tuple[int, str]]]


def quorum(replication_factor: int) -> int:
    """Acknowledgements a series needs: a majority, but one of two replicas suffices."""
    return 1 if replication_factor == 2 else replication_factor // 2 + 1



def write_request_tail(tenant: str, replica: int) -> bytes:
    """Fields 2 (tenant) and 3 (replica) of a thanos.WriteRequest."""
    t = tenant.encode()
    out = b"\x12" + uvarint(len(t)) + t if t else b""
    return out + (b"\x18" + uvarint(replica) if replica else b"")


class Forwarder:
    """One connection per ingestor; sends raw thanos.WriteRequest bytes.

    ``compression`` is ``--receive.grpc-compression``: "snappy" (Thanos's default) goes through
    our HTTP/2 client, since grpcio cannot compress with snappy; "none" through grpcio, or
    through our client too (uncompressed) when the TLS settings skip certificate verification,
    which grpcio cannot.
    """

    def __init__(self, timeout_s: float = 5.0, retries: int = 2, compression: str = "snappy",
                 tls: ClientTLS | None = None, protocol: str = "protobuf",
                 metrics: GrpcClientMetrics | None = None) -> None:
        if compression not in GRPC_COMPRESSIONS:
            raise ValueError(f"unknown gRPC compression {compression!r}")
        if protocol not in REPLICATION_PROTOCOLS:
            raise ValueError(f"unknown replication protocol {protocol!r}")
        self.protocol = protocol
        self._capnp: dict[str, capnp_rpc.WriterClient] = {}
        self.timeout_s = timeout_s
        self.retries = retries
        self.compression = compression
        self.tls = tls
        self.metrics = metrics  # grpc_client_* of the forwarded writes
        self._ssl = client_ssl_context(tls)  # our HTTP/2 client's (snappy)
        self._channels: dict[str, tuple[object, Callable[[bytes], Awaitable[bytes]]]] = {}

    def _stub(self, address: str) -> Callable[[bytes], Awaitable[bytes]]:
        got = self._channels.get(address)
        if got is None:
            if self.compression == "snappy" or (self.tls is not None and self.tls.skip_verify):
                encoding = grpc_codec.SNAPPY if self.compression == "snappy" else grpc_codec.IDENTITY
                h2 = H2Channel(address, encoding, max_message_bytes=MAX_MESSAGE_BYTES,
                               ssl_context=self._ssl,
                               server_name=self.tls.server_name if self.tls else "")
                got = (h2, lambda payload: h2.unary(REMOTE_WRITE_METHOD, payload, self.timeout_s))
            else:
                ch = grpc_channel(address, self.tls, CHANNEL_OPTIONS)
                stub = ch.unary_unary(REMOTE_WRITE_METHOD, request_serializer=None,
                                      response_deserializer=None)
                got = (ch, lambda payload: stub(payload, timeout=self.timeout_s))
            self._channels[address] = got
        return got[1]

    async def send(self, address: str, payload: bytes) -> tuple[int, str]:
        """Deliver once; only refused connections are retried (a timed-out call may have landed
        and a resend would turn its samples into conflicts)."""
        delay = 0.05
        for attempt in range(self.retries + 1):
            call = self.metrics.begin(REMOTE_WRITE_METHOD, "unary") if self.metrics else None
            try:
                await self._stub(address)(payload)
                if call is not None:
                    call.sent()
                    call.done(grpc.StatusCode.OK)
                return OK, ""
            except (grpc.aio.AioRpcError, RpcError) as e:
                if call is not None:
                    call.done(e.code())
                res = _FROM_GRPC.get(e.code(), ERROR)
                msg = f"{address}: {e.details() or e.code().name}"
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    return res, msg
            await asyncio.sleep(delay)
            delay *= 4
        return UNAVAILABLE, f"{address}: unreachable"

    async def send_capnp(self, address: str, tenant: str, body: bytes) -> tuple[int, str]:
        """Deliver a prometheus.WriteRequest body to a Cap'n Proto Writer. A connection that
        cannot be opened or that breaks is retried on a new one, as Thanos's capnp client
        reconnects (a write that did land then answers a conflict, which counts as stored)."""
        client = self._capnp.get(address)
        if client is None:
            client = self._capnp[address] = capnp_rpc.WriterClient(address, MAX_MESSAGE_BYTES)
        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                error, detail = await client.write(tenant, body, self.timeout_s)
            except (OSError, TimeoutError, capnp_rpc.CallFailed) as e:
                why = str(e) or type(e).__name__
                msg = why if why.startswith(address) else f"{address}: {why}"
                if not isinstance(e, ConnectionError) or attempt == self.retries:
                    return UNAVAILABLE, msg
                await asyncio.sleep(delay)
                delay *= 4
                continue
            if error == capnp_rpc.NONE:
                return OK, ""
            name = capnp_rpc.ERROR_NAMES[error] if error < len(capnp_rpc.ERROR_NAMES) else str(error)
            return _FROM_CAPNP.get(error, ERROR), f"{address}: {name}{': ' + detail if detail else ''}"
        return UNAVAILABLE, f"{address}: unreachable"

    async def retain(self, addresses: set[str]) -> None:
        """Close channels of endpoints no longer in any hashring."""
        for a in [a for a in self._channels if a not in addresses]:
            ch, _ = self._channels.pop(a)
            await ch.close()
        for a in [a for a in self._capnp if a not in addresses]:
            await self._capnp.pop(a).close()

    async def close(self) -> None:
        await self.retain(set())


@dataclass
class RouteResult:
    status: int
    message: str = ""


class Router:
    """Routes decoded requests over the hashrings that ``rings()`` returns at call time."""

    def __init__(self, rings: Callable[[], Hashrings], forwarder: Forwarder,
                 local_endpoint: str = "", local_writer: LocalWriter | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self._rings = rings
        self.forwarder = forwarder
        self.local_endpoint = local_endpoint
        self.local_writer = local_writer
        self._background: set[asyncio.Task] = set()
        self.forwards = Counter("thanos_receive_forward_requests", "Per-endpoint writes by result.",
                                ["result"], registry=registry) if registry is not None else None

    async def write(self, tenant: str, raw: bytes, dec: DecodedWrite,
                    replica: int = 0) -> RouteResult:
        """``raw`` is the uncompressed prometheus.WriteRequest that ``dec`` was decoded from.
        ``replica`` > 0 (1-based, from the replica header): an already replicated write; only
        that replica of each series is written, not replicated again (as Thanos)."""
        n = len(dec.keys)
        if n == 0:
            return RouteResult(200)
        found = self._rings().for_tenant(tenant)
        if found is None:
            return RouteResult(500, "no matching hashring to handle tenant")
        _, ring = found
        spans = _ringc.series_spans(raw)
        if len(spans) != 16 * n:
            return RouteResult(400, "cannot split request: series count mismatch")
        try:
            assign = ring.assign(hash_series(tenant, dec.keys))  # (n, rf) endpoint indices
        except InsufficientNodesError as e:
            return RouteResult(500, str(e))
        if replica > 0:
            assign = assign[:, replica - 1:replica]
        rf = assign.shape[1]
        need = quorum(rf)
        # One request per (endpoint, replica n) as Thanos sends them: the replica number tells a
        # router+ingestor which replica it holds, so each request carries only series whose
        # replica n that endpoint is.
        tasks: dict[asyncio.Task, tuple[int, int]] = {}
        for r in range(rf):
            col = assign[:, r]
            number = replica if replica > 0 else r + 1
            for node in np.unique(col).tolist():
                rows = np.flatnonzero(col == node).astype(np.int32)
                body = _ringc.gather(raw, spans, rows.tobytes())
                ep = ring.endpoints[node]
                tasks[asyncio.create_task(self._send(ep, tenant, body, number))] = (node, r)
        results = np.full((len(ring.endpoints), rf), PENDING, dtype=np.int8)
        cols = np.arange(rf)[None, :]
        messages: dict[tuple[int, int], str] = {}
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                key = tasks[t]
                res, msg = t.result()
                results[key] = res
                if msg:
                    messages[key] = msg
            if not pending:
                break
            per = results[assign, cols]
            acked = ((per == OK) | (per == CONFLICT)).sum(axis=1)
            open_ = (per == PENDING).sum(axis=1)
            if (acked >= need).all() or ((acked + open_) < need).any():
                break
        for t in pending:  # slower replicas finish on their own
            self._background.add(t)
            t.add_done_callback(self._background.discard)
        return self._verdict(results[assign, cols], need, messages)

    async def _send(self, ep: Endpoint, tenant: str, body: bytes, replica: int) -> tuple[int, str]:
        address = ep.address
        local = self.local_endpoint in (ep.address, ep.capnproto_address)
        if local and self.local_writer is not None:
            try:
                status, msg = await self.local_writer(tenant, body)
            except Exception as e:  # noqa: BLE001 -- a local failure is one replica's failure
                log.exception("local write failed")
                status, msg = 500, str(e)
            res = _FROM_HTTP.get(status, ERROR)
        elif self.forwarder.protocol == "capnproto":  # carries no replica number (as Thanos)
            res, msg = await self.forwarder.send_capnp(ep.capnproto_address, tenant, body)
        else:
            res, msg = await self.forwarder.send(address, body + write_request_tail(tenant, replica))
        if self.forwards is not None:
            self.forwards.labels(_NAMES.get(res, "error")).inc()
        if res not in (OK, CONFLICT) and msg:
            log.debug("replica write failed", extra={"endpoint": address, "err": msg})
        return res, msg

    @staticmethod
    def _verdict(per: np.ndarray, need: int, messages: dict) -> RouteResult:
        detail = "; ".join(sorted(set(messages.values())))
        acked = ((per == OK) | (per == CONFLICT)).sum(axis=1)
        if (acked >= need).all():
            if ((per == CONFLICT).sum(axis=1) >= need).any():
                return RouteResult(409, detail or "conflict")
            return RouteResult(200)
        short = per[acked < need]
        for code, status in ((BAD, 400), (LIMIT, 429)):
            if ((short == code).sum(axis=1) >= need).any():
                return RouteResult(status, detail)
        return RouteResult(503, f"quorum not reached ({need} of {per.shape[1]} replicas): {detail}")

    async def close(self) -> None:
        await cancel_and_wait(more=list(self._background))
        await self.forwarder.close()
