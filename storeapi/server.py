"""StoreAPI gRPC server (``thanos.Store`` + ``thanos.info.Info``) over an abstract series source.

Handlers are registered by method path with our own (de)serializers instead of the generated
``*_pb2_grpc`` servicers, so that Series frames can be hand-encoded bytes (see wire.py) and the
server does not depend on the exact grpcio version the stubs were generated with.
"""
from __future__ import annotations

import inspect
import itertools
import logging
from types import CoroutineType
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Protocol

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry

from receiver.tsdb.labels import Labels, Matcher
from google.protobuf import any_pb2

from receiver.hashring._ringc import xxh64
from common.tls import ServerTLS, server_ssl_context
from storeapi import hints_pb2, info_pb2, labels_pb2, rpc_pb2, types_pb2
from storeapi.convert import MatcherFields, labels_to_pb, matchers_from_fields
from storeapi.h2server import H2GrpcServer
from storeapi.seriesrequest import PlainSeriesRequest, series_request
from receiver.tsdb.histogram import (ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, EncodedChunk,
                                     chunk_encoding)
from storeapi.wire import SeriesEncoder

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 << 20
GRPC_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)

STORE_SERVICE = "thanos.Store"
INFO_SERVICE = "thanos.info.Info"
WRITEABLE_STORE_SERVICE = "thanos.WriteableStore"
NO_MATCHERS = "no matchers specified (excluding external labels)"


# Memo of request matcher sets: entries, and the label characters a set may hold to be kept.
_MATCHER_FIELDS = attrgetter("type", "name", "value")  # a memo key's part per LabelMatcher
_MEMO_ENTRIES = 512
_MEMO_KEY_CHARS = 1024
_NAME, _VALUE = itemgetter(1), itemgetter(2)


def _matcher_key(pbs: Iterable) -> tuple[MatcherFields, ...]:
    """The memo key of a request's matchers: upb LabelMatchers' (type, name, value) triples
    (upb's container sliced into a list first: its own iteration ends in an IndexError made
    with printf on every call); a PlainSeriesRequest's matchers are that tuple already."""
    if type(pbs) is tuple:
        return pbs
    return tuple(map(_MATCHER_FIELDS, pbs if type(pbs) is list else pbs[:]))


def _key_chars(key: tuple[MatcherFields, ...]) -> int:
    """The label characters of a memo key, counted in C (no generator step per matcher)."""
    return sum(map(len, map(_NAME, key))) + sum(map(len, map(_VALUE, key)))


class InvalidRequest(ValueError):
    """Raised by a source for a request it refuses (sent as INVALID_ARGUMENT, not INTERNAL)."""


class ResourceExhausted(Exception):
    """Raised by a source for a request over a configured limit (sent as RESOURCE_EXHAUSTED
    with the message as is). Not a ValueError: that would read as a broken block."""


TENANT_METADATA = "thanos-tenant"  # Thanos's tenancy header, as gRPC metadata (lower case)
DEFAULT_TENANT = "default-tenant"  # Thanos's tenant of a call without one


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    """The call's tenant as Thanos's store reads it (GetTenantFromGRPCMetadata): the first
    ``thanos-tenant`` metadata value, else ``default-tenant``. Our HTTP/2 server's context
    looks it up in the request headers (no metadata tuple built per call)."""
    headers = getattr(context, "request_headers", None)  # storeapi.h2server's context
    if headers is not None:  # (the key is lower case, no pseudo-header)
        return headers.get(TENANT_METADATA, DEFAULT_TENANT)
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_METADATA:
            return value
    return DEFAULT_TENANT


# Deprecated Store.Info reports the component as an enum; thanos.info.Info as a string.
_STORE_TYPES = {
    "query": rpc_pb2.QUERY, "rule": rpc_pb2.RULE, "sidecar": rpc_pb2.SIDECAR,
    "store": rpc_pb2.STORE, "receive": rpc_pb2.RECEIVE, "debug": rpc_pb2.DEBUG,
}



@dataclass(frozen=True)
class AggrData:
    """The aggregate sub-chunks (XOR bytes, None = not sent) of one downsampled chunk.

    A source may return it in place of XOR bytes as a chunk's data; it is sent as the
    AggrChunk's count/sum/min/max/counter fields (Thanos's downsampled series)."""

    count: bytes | None = None
    sum: bytes | None = None
    min: bytes | None = None
    max: bytes | None = None
    counter: bytes | None = None


Chunks = list[tuple[int, int, "bytes | AggrData"]]


def _xor_pb(data: bytes | None) -> types_pb2.Chunk | None:
    return None if data is None else types_pb2.Chunk(type=types_pb2.Chunk.XOR, data=data)


def aggr_series_body(lbls: Labels, chunks: Chunks) -> bytes:
    """A ``thanos.Series`` body whose chunks may be aggregates (rare: downsampled data, so
    the generated message classes are fast enough here)."""
    out = []
    for mint, maxt, data in chunks:
        if isinstance(data, AggrData):
            out.append(types_pb2.AggrChunk(
                min_time=mint, max_time=maxt, count=_xor_pb(data.count),
                sum=_xor_pb(data.sum), min=_xor_pb(data.min), max=_xor_pb(data.max),
                counter=_xor_pb(data.counter)))
        else:
            out.append(types_pb2.AggrChunk(min_time=mint, max_time=maxt,
                                           raw=_xor_pb(bytes(data))))
    return types_pb2.Series(labels=labels_to_pb(lbls), chunks=out).SerializeToString()


# TSDB chunk encodings of native histograms -> StoreAPI Chunk.Encoding.
_CHUNK_TYPES = {ENCODING_HISTOGRAM: types_pb2.Chunk.HISTOGRAM,
                ENCODING_FLOAT_HISTOGRAM: types_pb2.Chunk.FLOAT_HISTOGRAM}


def typed_series_body(lbls: Labels, chunks: Chunks) -> bytes:
    """A ``thanos.Series`` body with native histogram chunks (EncodedChunk data) among XOR
    ones; each chunk's Chunk.type says which."""
    out = [types_pb2.AggrChunk(min_time=mint, max_time=maxt, raw=types_pb2.Chunk(
        type=_CHUNK_TYPES.get(chunk_encoding(data), types_pb2.Chunk.XOR), data=bytes(data)))
        for mint, maxt, data in chunks]
    return types_pb2.Series(labels=labels_to_pb(lbls), chunks=out).SerializeToString()


class SeriesSource(Protocol):
    """What a StoreAPI server serves (the ingestor's heads, the store gateway's blocks).

    ``series``, ``label_names`` and ``label_values`` may also be ``async def`` (the store
    gateway reads object storage); the server awaits whatever awaitable they return.
    """

    def label_sets(self) -> list[Labels]:
        """External label sets (one per tenant for an ingestor)."""
        ...

    def time_range(self) -> tuple[int, int]:
        """(min_t, max_t) in ms; (max int64, min int64) means empty."""
        ...

    def series(self, mint: int, maxt: int, matchers: list[Matcher],
               skip_chunks: bool) -> Iterable[tuple[Labels, Chunks]]:
        """Matching series sorted by labels (external labels included), each with its
        (mint, maxt, XOR bytes) chunks sorted by time. A ``warnings`` attribute on the result
        (strings) is sent as warning frames after the series."""
        ...

    def label_names(self, mint: int, maxt: int, matchers: list[Matcher]) -> list[str]: ...

    def label_values(self, name: str, mint: int, maxt: int, matchers: list[Matcher]) -> list[str]: ...


class CallGate(Protocol):
    """A bound on concurrent Series calls (the store's ``--store.grpc.series-max-concurrency``
    gate): ``enter`` returns None when a slot was free, else an awaitable of the caller's
    turn; an entered call ``leave``s when it ends, however it ends."""

    def enter(self) -> Awaitable[None] | None: ...

    def leave(self) -> None: ...


WriteHandler = Callable[[rpc_pb2.WriteRequest, grpc.aio.ServicerContext], Awaitable[rpc_pb2.WriteResponse]]


_DATA = itemgetter(2)  # a chunk's data in a (mint, maxt, data) triple
_PLAIN = frozenset({bytes})  # XOR chunk bytes: the hand-written encoder's case


class StoreServer:
    """Serves a SeriesSource as ``thanos.Store`` and ``thanos.info.Info``."""

    def __init__(self, source: SeriesSource, component_type: str = "receive",
                 exemplars: bool = False, series_gate: CallGate | None = None) -> None:
        """``exemplars``: Info advertises the Exemplars API (served beside this one);
        every Series call passes ``series_gate`` (the store's concurrency gate)."""
        self._source = source
        self._gate = series_gate
        self._component = component_type
        self._exemplars = exemplars
        # Sources that understand downsampling say so by their series() parameters.
        try:
            params = inspect.signature(source.series).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        self._takes_resolution = "max_resolution_ms" in params
        self._takes_aggregates = "aggregates" in params
        self._takes_limit = "limit" in params  # the store gateway's limits count up to it
        # ...and label their metrics with the caller's tenant (series, label names/values)
        self._takes_tenant = "tenant" in params
        self._matcher_memo: dict[tuple[MatcherFields, ...], tuple[Matcher, ...]] = {}

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        store = grpc.method_handlers_generic_handler(STORE_SERVICE, {
            "Info": grpc.unary_unary_rpc_method_handler(
                self.store_info, rpc_pb2.InfoRequest.FromString,
                rpc_pb2.InfoResponse.SerializeToString),
            "Series": grpc.unary_stream_rpc_method_handler(
                self.series, series_request, None),  # (the usual request decoded in C; the
            # frames are bytes already)
            "LabelNames": grpc.unary_unary_rpc_method_handler(
                self.label_names, rpc_pb2.LabelNamesRequest.FromString,
                rpc_pb2.LabelNamesResponse.SerializeToString),
            "LabelValues": grpc.unary_unary_rpc_method_handler(
                self.label_values, rpc_pb2.LabelValuesRequest.FromString,
                rpc_pb2.LabelValuesResponse.SerializeToString),
        })
        info = grpc.method_handlers_generic_handler(INFO_SERVICE, {
            "Info": grpc.unary_unary_rpc_method_handler(
                self.info, info_pb2.InfoRequest.FromString,
                info_pb2.InfoResponse.SerializeToString),
        })
        return [store, info]

    def register(self, server: "grpc.aio.Server | H2GrpcServer") -> None:
        server.add_generic_rpc_handlers(self.handlers())

    # --- Info -------------------------------------------------------------------------------

    def _label_sets_pb(self) -> list[labels_pb2.LabelSet]:
        return [labels_pb2.LabelSet(labels=labels_to_pb(ls)) for ls in self._source.label_sets()]

    async def store_info(self, request: rpc_pb2.InfoRequest,
                         context: grpc.aio.ServicerContext) -> rpc_pb2.InfoResponse:
        mint, maxt = self._source.time_range()
        return rpc_pb2.InfoResponse(
            min_time=mint, max_time=maxt,
            storeType=_STORE_TYPES.get(self._component, rpc_pb2.UNKNOWN),
            label_sets=self._label_sets_pb())

    async def info(self, request: info_pb2.InfoRequest,
                   context: grpc.aio.ServicerContext) -> info_pb2.InfoResponse:
        mint, maxt = self._source.time_range()
        sets = [labels_pb2.ZLabelSet(labels=labels_to_pb(ls)) for ls in self._source.label_sets()]
        return info_pb2.InfoResponse(
            label_sets=sets, ComponentType=self._component,
            store=info_pb2.StoreInfo(min_time=mint, max_time=maxt, supports_sharding=True,
                                     supports_without_replica_labels=True),
            exemplars=info_pb2.ExemplarsInfo(min_time=-(1 << 63), max_time=(1 << 63) - 1)
            if self._exemplars else None)

    # --- Series -----------------------------------------------------------------------------

    async def _matchers(self, pbs, context: grpc.aio.ServicerContext) -> list[Matcher]:
        """A request's matchers (upb's LabelMatchers or a PlainSeriesRequest's triples); a
        dashboard's repeated sets (regexes compiled) are reused from a small memo, keyed by
        ``_matcher_key`` (Matchers are immutable)."""
        key = _matcher_key(pbs)
        hit = self._matcher_memo.get(key)
        if hit is not None:
            return list(hit)
        try:
            got = matchers_from_fields(key)
            if _key_chars(key) <= _MEMO_KEY_CHARS:
                if len(self._matcher_memo) >= _MEMO_ENTRIES:
                    del self._matcher_memo[next(iter(self._matcher_memo))]  # the oldest
                self._matcher_memo[key] = tuple(got)
            return got
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise  # unreachable: abort raises

    def _replica_labels(self, requested: Iterable[str]) -> set[str]:
        """Names from without_replica_labels that are external labels (only those are stripped,
        as in Thanos: the server decides what a replica label is)."""
        if not requested:  # the usual request: no set built
            return set()
        wanted = set(requested)
        return {n for ls in self._source.label_sets() for n, _ in ls if n in wanted}

    async def series(self, request: PlainSeriesRequest | rpc_pb2.SeriesRequest,
                     context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        # Inside the gate from the first step through the last frame (also when the caller
        # stops reading: closing this generator leaves). The gate is entered here, not by a
        # wrapper generator: one generator step less per frame.
        gate = self._gate
        if gate is not None:
            wait = gate.enter()
            if wait is not None:
                await wait
        try:
            if not request.matchers:  # as Thanos: never "everything" by accident
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, NO_MATCHERS)
            matchers = await self._matchers(request.matchers, context)
            shard = ShardFilter.of(request) if request.HasField("shard_info") else None
            mint, maxt, skip = request.min_time, request.max_time, request.skip_chunks
            wanted = request.without_replica_labels
            strip = self._replica_labels(wanted) if wanted else None
            batch = max(1, request.response_batch_size)
            limit = request.limit if request.limit > 0 else -1
            enc = SeriesEncoder()
            pending: list[bytes] = []
            try:
                kw: dict[str, object] = {}
                if self._takes_resolution and request.max_resolution_window:
                    kw["max_resolution_ms"] = request.max_resolution_window
                if self._takes_aggregates and request.aggregates:
                    kw["aggregates"] = list(request.aggregates)
                if self._takes_limit and request.limit > 0:
                    kw["limit"] = request.limit
                if self._takes_tenant:
                    kw["tenant"] = tenant_of(context)
                got = self._source.series(mint, maxt, matchers, skip, **kw)
                it: Iterable[tuple[Labels, Chunks]] = (
                    await got if type(got) is CoroutineType else await _resolve(got))
                warnings = list(getattr(it, "warnings", ()))  # a source may report partial data
                if strip:
                    it = _strip_and_sort(it, strip)
                # A short list (the usual answer) is one part: no generator for it.
                parts = (it,) if type(it) is list and len(it) <= _PART else _parts(it)
                for part in parts:
                    bodies = _frames(enc, part, mint, maxt, skip, shard)
                    if limit > 0:
                        bodies = bodies[:limit]
                        limit -= len(bodies)
                    if batch == 1:
                        for frame in bodies:
                            yield frame
                    else:
                        pending += bodies
                        while len(pending) >= batch:
                            yield enc.batch_of_frames(pending[:batch])
                            del pending[:batch]
                    if limit == 0:
                        break
            except InvalidRequest as e:
                code, err = grpc.StatusCode.INVALID_ARGUMENT, e
            except ResourceExhausted as e:
                code, err = grpc.StatusCode.RESOURCE_EXHAUSTED, e
            except Exception as e:  # noqa: BLE001 -- any source failure becomes a gRPC status
                log.exception("Series failed")
                code, err = grpc.StatusCode.INTERNAL, e
            else:
                err = None
                if pending:
                    yield enc.batch_of_frames(pending)
                for w in warnings:
                    yield rpc_pb2.SeriesResponse(warning=w).SerializeToString()
                hints = self._response_hints(request, matchers) \
                    if request.HasField("hints") else None
                if hints is not None:
                    yield hints
            if err is not None:
                await context.abort(code, f"series: {err}" if code is grpc.StatusCode.INTERNAL
                                    else str(err))
        finally:
            if gate is not None:
                gate.leave()

    def _response_hints(self, request: PlainSeriesRequest | rpc_pb2.SeriesRequest,
                        matchers: list[Matcher]) -> bytes | None:
        """A final SeriesResponse with SeriesResponseHints (the blocks read), for clients that
        send SeriesRequestHints and sources that know their blocks (the store gateway)."""
        queried = getattr(self._source, "queried_blocks", None)
        if queried is None or not request.HasField("hints") or \
                not request.hints.Is(hints_pb2.SeriesRequestHints.DESCRIPTOR):
            return None
        ids = queried(request.min_time, request.max_time, request.max_resolution_window, matchers)
        hints = hints_pb2.SeriesResponseHints(queried_blocks=[hints_pb2.Block(id=i) for i in ids])
        wrapped = any_pb2.Any()
        wrapped.Pack(hints, type_url_prefix="type.googleapis.com/")
        return rpc_pb2.SeriesResponse(hints=wrapped).SerializeToString()

    # --- labels -----------------------------------------------------------------------------

    async def label_names(self, request: rpc_pb2.LabelNamesRequest,
                          context: grpc.aio.ServicerContext) -> rpc_pb2.LabelNamesResponse:
        matchers = await self._matchers(request.matchers, context)
        try:
            names = await _resolve(self._source.label_names(
                request.start, request.end, matchers,
                **({"tenant": tenant_of(context)} if self._takes_tenant else {})))
        except ResourceExhausted as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except Exception as e:  # noqa: BLE001
            log.exception("LabelNames failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"label names: {e}")
        strip = self._replica_labels(request.without_replica_labels)
        names = sorted(n for n in set(names) if n not in strip)
        if request.limit > 0:
            names = names[:request.limit]
        return rpc_pb2.LabelNamesResponse(names=names)

    async def label_values(self, request: rpc_pb2.LabelValuesRequest,
                           context: grpc.aio.ServicerContext) -> rpc_pb2.LabelValuesResponse:
        if not request.label:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "label name parameter cannot be empty")
        matchers = await self._matchers(request.matchers, context)
        try:
            values = await _resolve(self._source.label_values(
                request.label, request.start, request.end, matchers,
                **({"tenant": tenant_of(context)} if self._takes_tenant else {})))
        except ResourceExhausted as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except Exception as e:  # noqa: BLE001
            log.exception("LabelValues failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"label values: {e}")
        values = sorted(set(values))
        if request.limit > 0:
            values = values[:request.limit]
        return rpc_pb2.LabelValuesResponse(values=values)


_PART = 512  # series encoded per C call: large enough to amortise it, small enough to stream


def _parts(it: Iterable[tuple[Labels, Chunks]]) -> Iterable[list[tuple[Labels, Chunks]]]:
    """A source's series in lists of up to _PART, taken as the (maybe lazy) source yields.
    When a lazy source fails, the series it gave before are still sent, then the error."""
    if isinstance(it, list):
        yield from (it[i:i + _PART] for i in range(0, len(it), _PART))
        return
    it = iter(it)
    while True:
        part: list[tuple[Labels, Chunks]] = []
        try:
            part.extend(itertools.islice(it, _PART))  # keeps what came before a failure
        except Exception:
            if part:
                yield part
            raise
        if not part:
            return
        yield part


def _frames(enc: SeriesEncoder, part: list[tuple[Labels, Chunks]], mint: int, maxt: int,
            skip: bool, shard: "ShardFilter | None") -> list[bytes]:
    """SeriesResponse frames of the series of ``part`` that are sent (each also a SeriesBatch
    entry, see SeriesEncoder.batch_of_frames). Plain XOR series are encoded all at once in C;
    the rest (histograms, aggregates, sharded or skip_chunks requests) one by one."""
    got = enc.many(part, mint, maxt, True) if shard is None and not skip else [None] * len(part)
    if None not in got and False not in got:
        return got
    out = []
    for (lbls, chunks), body in zip(part, got):
        if body is None:
            body = _series_body(enc, lbls, chunks, mint, maxt, skip, shard)
            if body is not None:
                body = enc.series_response(body)
        if body is not None and body is not False:
            out.append(body)
    return out


def _series_body(enc: SeriesEncoder, lbls: Labels, chunks: Chunks, mint: int, maxt: int,
                 skip: bool, shard: "ShardFilter | None") -> bytes | None:
    """One series' body, None when it is not sent (another shard's, or no chunk in range)."""
    if shard is not None and not shard.keeps(lbls):
        return None
    if skip:
        chunks = []
    elif chunks and (chunks[0][1] < mint or chunks[-1][0] > maxt):
        chunks = [c for c in chunks if c[1] >= mint and c[0] <= maxt]
        if not chunks:
            return None
    # The data types of the chunks, found without a Python step per chunk.
    kinds = set(map(type, map(_DATA, chunks))) if chunks else _PLAIN
    if kinds <= _PLAIN:
        return enc.series(lbls, chunks)
    if any(issubclass(k, AggrData) for k in kinds):
        return aggr_series_body(lbls, chunks)
    if any(issubclass(k, EncodedChunk) for k in kinds):
        return typed_series_body(lbls, chunks)
    return enc.series(lbls, chunks)


async def _resolve(result):
    """A synchronous source's result as is; an async source's result awaited."""
    return await result if inspect.isawaitable(result) else result


def _strip_and_sort(it: Iterable[tuple[Labels, Chunks]],
                     strip: set[str]) -> list[tuple[Labels, Chunks]]:
    """Drop replica labels; their removal can reorder series, so sort again."""
    out = [(tuple(p for p in lbls if p[0] not in strip), chunks) for lbls, chunks in it]
    out.sort(key=lambda s: s[0])
    return out


class ShardFilter:
    """Thanos's series sharding (SeriesRequest.shard_info): a series belongs to shard
    xxhash64(name 0xff value 0xff ...) mod total_shards over its labels in (``by``) or not in
    (without) the sharding labels, taken from the final label set (external labels included,
    replica labels stripped)."""

    __slots__ = ("index", "total", "by", "names")

    def __init__(self, index: int, total: int, by: bool, names: frozenset[str]) -> None:
        self.index, self.total, self.by, self.names = index, total, by, names

    @classmethod
    def of(cls, request: rpc_pb2.SeriesRequest) -> "ShardFilter | None":
        if not request.HasField("shard_info") or request.shard_info.total_shards < 1:
            return None
        si = request.shard_info
        return cls(si.shard_index, si.total_shards, si.by, frozenset(si.labels))

    def keeps(self, lbls: Labels) -> bool:
        by, names = self.by, self.names
        key = b"".join(n.encode() + b"\xff" + v.encode() + b"\xff"
                       for n, v in lbls if (n in names) == by)
        return xxh64(key) % self.total == self.index


def writeable_store_handler(handler: WriteHandler) -> grpc.GenericRpcHandler:
    """``thanos.WriteableStore/RemoteWrite`` backed by ``handler`` (for ingestors/routers)."""
    return grpc.method_handlers_generic_handler(WRITEABLE_STORE_SERVICE, {
        "RemoteWrite": grpc.unary_unary_rpc_method_handler(
            handler, rpc_pb2.WriteRequest.FromString, rpc_pb2.WriteResponse.SerializeToString),
    })


async def serve(source: SeriesSource, address: str, component_type: str = "receive",
                writer: WriteHandler | None = None, tls: ServerTLS | None = None,
                registry: CollectorRegistry | None = None,
                exemplars: grpc.GenericRpcHandler | None = None,
                series_gate: CallGate | None = None) -> tuple[H2GrpcServer, int]:
    """Start a gRPC server with Store + Info (and WriteableStore when ``writer`` is given, the
    Exemplars API when ``exemplars`` is) on ``address`` (TLS when ``tls`` is enabled); returns
    the started server and the bound port (useful for ``host:0``); with ``registry``, the
    grpc_server_* metrics go there.

    Our own HTTP/2 server, not grpc.aio: its TLS is Python's ssl, which enforces
    ``--grpc-server-tls-min-version`` (grpcio always accepts TLS 1.2), and it takes snappy."""
    from storeapi.grpcmetrics import server_metrics
    server = H2GrpcServer(max_message_bytes=MAX_MESSAGE_BYTES,
                          metrics=server_metrics(registry) if registry is not None else None)
    StoreServer(source, component_type, exemplars=exemplars is not None,
                series_gate=series_gate).register(server)
    if exemplars is not None:  # the Exemplars API, advertised in Info
        server.add_generic_rpc_handlers((exemplars,))
    if writer is not None:
        server.add_generic_rpc_handlers((writeable_store_handler(writer),))
    try:
        port = await server.bind(address, server_ssl_context(tls))
    except OSError as e:
        raise OSError(f"cannot bind StoreAPI gRPC server to {address}: {e}") from e
    await server.start()
    return server, port
