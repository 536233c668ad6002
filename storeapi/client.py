"""Asyncio StoreAPI client used by the querier; talks to promring or Thanos stores.

Calls go over our own lean HTTP/2 client (storeapi/h2client.py): a small Series call over
grpc.aio cost the querier about 2 ms of CPU, most of it grpcio's C core and poller thread
contending with the event loop; and grpcio cannot skip certificate verification
(``--grpc-client-tls-skip-verify``)."""
from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import grpc

from common.tls import ClientTLS, client_ssl_context, is_metadata_value
from receiver.tsdb.labels import Labels, Matcher
from receiver.tsdb.histogram import ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, EncodedChunk
from storeapi import exemplars_pb2, grpc_codec, info_pb2, metadata_pb2, rpc_pb2, rules_pb2, types_pb2
from storeapi._wire import matcher_fields, series_response, with_times
from storeapi.convert import labels_from_pb, matchers_to_pb
from storeapi.grpcmetrics import GrpcClientMetrics
from storeapi.h2client import H2Channel, RpcError
from storeapi.h2frames import literal
from storeapi.server import MAX_MESSAGE_BYTES, TENANT_METADATA, AggrData
from storeapi.wire import series_request_rest

_HIST_ENCODINGS = {types_pb2.Chunk.HISTOGRAM: ENCODING_HISTOGRAM,
                   types_pb2.Chunk.FLOAT_HISTOGRAM: ENCODING_FLOAT_HISTOGRAM}


@dataclass
class RawSeries:
    labels: Labels
    # (mint, maxt, raw chunk bytes), in the store's order: XOR as plain bytes, native
    # histogram chunks as receiver.tsdb.histogram.EncodedChunk (a bytes with .encoding).
    chunks: list[tuple[int, int, bytes]]
    # False: no chunk is a native histogram chunk (the client knows it from decoding, so the
    # querier skips looking at every chunk); None: not known, look at the chunks.
    histograms: bool | None = field(default=None, compare=False)


_HISTOGRAMS, _CHUNKS = operator.attrgetter("histograms"), operator.attrgetter("chunks")


def float_only(raw: list[RawSeries]) -> bool:
    """No series in ``raw`` is known to hold, or may hold, native histogram chunks (every
    ``histograms`` is False), in C steps only: a generator per query is a Python call per
    series."""
    return all(map(operator.is_, map(_HISTOGRAMS, raw), itertools.repeat(False)))


def chunk_count(raw: list[RawSeries]) -> int:
    """Chunks over all series of ``raw`` (C steps only, as :func:`float_only`)."""
    return sum(map(len, map(_CHUNKS, raw)))


@dataclass
class AggrSeries:
    """A series as a downsampling-aware reader needs it: each chunk's data is XOR bytes
    (a raw chunk) or an AggrData (the aggregates of a downsampled chunk)."""
    labels: Labels
    chunks: list[tuple[int, int, bytes | AggrData]]


# storeapi Aggr enum values, for series_aggr(aggregates=...).
AGGR_RAW, AGGR_COUNT, AGGR_SUM, AGGR_MIN, AGGR_MAX, AGGR_COUNTER = range(6)


def _strategy(partial_response: bool) -> int:
    """The store may answer with warnings (WARN) instead of failing (ABORT)."""
    return types_pb2.WARN if partial_response else types_pb2.ABORT


SERIES = "/thanos.Store/Series"
_MAX_REQUEST_TAILS = 1024  # kept request option encodings per client (see StoreClient)...
_MAX_KEPT_TAIL_BYTES = 4096  # ...each at most this long: at most 4 MiB in all

# storeapi._wire.series_response's frame kinds.
_FRAME_SERIES, _FRAME_WARNING = 1, 2
_MALFORMED = "malformed SeriesResponse frame"


@functools.lru_cache(maxsize=1024)
def tenant_metadata(tenant: str) -> bytes:
    """The ``thanos-tenant`` request header field as Thanos's querier sends it to its stores
    (pkg/store/proxy.go), HPACK-encoded once per tenant; b"" for no tenant. ValueError for a
    value gRPC metadata cannot carry."""
    if not tenant:
        return b""
    if not is_metadata_value(tenant):
        raise ValueError(f"tenant {tenant!r} is not printable ASCII")
    return literal(TENANT_METADATA.encode(), tenant)


class MalformedFrame(ValueError):
    """A Series frame that is not a valid thanos.SeriesResponse (fails the call)."""


def _histogram_chunk(data: bytes, chunk_type: int) -> EncodedChunk:
    """A native histogram chunk's data, knowing its TSDB chunk encoding."""
    return EncodedChunk(data, _HIST_ENCODINGS[chunk_type])


@dataclass
class StoreInfo:
    label_sets: list[Labels]
    min_time: int
    max_time: int
    component_type: str = ""
    supports_without_replica_labels: bool = False
    serves_rules: bool = False  # Info announced the Rules API (a ruler)
    exemplars: bool = False  # serves thanos.Exemplars (Info's ExemplarsInfo)


@dataclass
class SeriesResult:
    series: list[RawSeries]
    warnings: list[str] = field(default_factory=list)


class _Stubs:
    """Callables for each StoreAPI method on one channel (no generated *_pb2_grpc needed),
    each counted in grpc_client_* (``metrics``) as go-grpc-prometheus counts a client's calls:
    started and one message sent when it starts, handled by code and timed when it ends."""

    def __init__(self, ch: H2Channel, metrics: GrpcClientMetrics | None) -> None:
        self.channel = ch
        def uu(path: str, resp):
            async def call(req, timeout: float | None = None, metadata: bytes = b""):
                c = _begin(metrics, path, "unary")
                try:
                    r = resp.FromString(await ch.unary(path, req.SerializeToString(), timeout,
                                                       metadata))
                except BaseException as e:
                    _done(c, e)
                    raise
                _done(c, None)
                return r
            return call

        def us(path: str, resp):
            async def call(req, timeout: float | None = None, metadata: bytes = b""):
                c = _begin(metrics, path, "server_stream")
                try:  # closed at once when the caller leaves early: the stream is reset then
                    async with contextlib.aclosing(
                            ch.unary_stream(path, req if isinstance(req, bytes)
                                            else req.SerializeToString(), timeout,
                                            metadata)) as it:
                        async for msg in it:
                            yield msg if resp is None else resp.FromString(msg)
                except BaseException as e:
                    _done(c, e)
                    raise
                _done(c, None)
            return call

        self.info = uu("/thanos.info.Info/Info", info_pb2.InfoResponse)
        self.store_info = uu("/thanos.Store/Info", rpc_pb2.InfoResponse)
        self.label_names = uu("/thanos.Store/LabelNames", rpc_pb2.LabelNamesResponse)
        self.label_values = uu("/thanos.Store/LabelValues", rpc_pb2.LabelValuesResponse)
        # Series frames as raw bytes, decoded in C (storeapi._wire.series_response).
        self.series_raw = us(SERIES, None)
        self.rules = us("/thanos.Rules/Rules", rules_pb2.RulesResponse)
        self.metadata = us("/thanos.Metadata/MetricMetadata", metadata_pb2.MetricMetadataResponse)
        self.exemplars = us("/thanos.Exemplars/Exemplars", exemplars_pb2.ExemplarsResponse)


def _begin(metrics: GrpcClientMetrics | None, path: str, kind: str):
    if metrics is None:
        return None
    c = metrics.begin(path, kind)
    c.sent()
    return c


def _done(c, error: BaseException | None) -> None:
    """Record a call's end: OK, its RpcError's code, or CANCELLED (cancelled or left early)."""
    if c is not None:
        c.done(grpc.StatusCode.OK if error is None else _code(error))


def _code(error: BaseException) -> grpc.StatusCode:
    """The status a call that raised ``error`` ended with: its RpcError's code, or CANCELLED
    (cancelled or left early)."""
    return error.code() if isinstance(error, RpcError) else grpc.StatusCode.CANCELLED


def _kept_histogram_chunk(kept: list[int], data: bytes, chunk_type: int) -> EncodedChunk:
    """_histogram_chunk counting the chunks it keeps in ``kept[0]`` (bound to a reader's cell
    by functools.partial: no closure built in Python per call)."""
    kept[0] += 1
    return _histogram_chunk(data, chunk_type)


class _SeriesReader:
    """Series frames (each decoded in C) into lists of complete series and warning strings, in
    stream order: a series the store split over frames is merged, so a series is given out
    once the next one starts (or at the end)."""

    # Until a frame sets them (class attributes: no lines of their own per call):
    cur: RawSeries | None = None  # the last series: the next frame may continue it
    dropped = 0  # non-XOR (native histogram) or downsampled-only chunks we cannot use
    whole: SeriesResult | None = None  # what take() kept so far

    def __init__(self, address: str, native_histograms: bool) -> None:
        self.address = address
        # (histogram chunks kept, counted in a cell of their own: a bound method of the reader
        # kept on it would be a reference cycle, and the answer it holds would then live until
        # a full garbage collection)
        self.kept = [0]
        self.hist = (functools.partial(_kept_histogram_chunk, self.kept)
                     if native_histograms else None)

    def feed(self, frame: bytes) -> list[RawSeries] | str | None:
        """What ``frame`` completes: series, a warning, or None. MalformedFrame if it is not a
        valid thanos.SeriesResponse."""
        before = self.kept[0]
        cur = self.cur
        try:
            kind, payload, n = series_response(frame, cur.labels if cur else None, self.hist)
        except ValueError:
            raise MalformedFrame(_MALFORMED) from None
        if kind == _FRAME_WARNING:
            return payload
        if kind != _FRAME_SERIES:  # hints, or a frame type from a newer peer
            return None
        self.dropped += n
        if not payload:
            return None
        plain = False if self.kept[0] == before else None  # RawSeries.histograms
        first = 0
        if cur is not None and cur.labels == payload[0][0]:
            cur.chunks.extend(payload[0][1])
            cur.histograms = cur.histograms if plain is False else None
            first = 1
        if first == len(payload):
            return None
        done = [cur] if cur is not None else []
        last = len(payload) - 1  # kept as the current series: the next frame may continue it
        for lbls, chunks in payload[first:last]:  # (a loop: a comprehension is a call on 3.11)
            done.append(RawSeries(lbls, chunks, plain))
        self.cur = RawSeries(*payload[last], plain)
        return done or None

    def finish(self) -> list[list[RawSeries] | str]:
        """The last series and the dropped-chunks warning, once the stream ended."""
        out: list[list[RawSeries] | str] = [[self.cur]] if self.cur is not None else []
        if self.dropped:
            out.append(self._dropped_warning())
        return out

    def _dropped_warning(self) -> str:
        return (f"{self.address}: ignored {self.dropped} chunks that are not raw XOR float or "
                "native histogram chunks")

    # For a caller that takes the whole answer (series_with_warnings): frames given to take(),
    # then result(), with no list per frame or at the end.

    def take(self, frame: bytes) -> None:
        """feed(), keeping what ``frame`` completes for result()."""
        item = self.feed(frame)
        if item is not None:
            whole = self.whole
            if whole is None:
                whole = self.whole = SeriesResult([])
            if isinstance(item, str):
                whole.warnings.append(item)
            else:
                whole.series += item

    def result(self) -> SeriesResult:
        """Everything take() kept, then what finish() gives, once the stream ended."""
        whole = self.whole or SeriesResult([])
        self.whole = None  # (handed out: nothing of it kept here)
        if self.cur is not None:
            whole.series.append(self.cur)
        if self.dropped:
            whole.warnings.append(self._dropped_warning())
        return whole


async def _cancel(call) -> None:
    """Stop a Series stream (closing its generator resets the HTTP/2 stream)."""
    await call.aclose()


class StoreClient:
    """One StoreAPI endpoint. The channel is created lazily so that it binds to the running loop.

    ``series_batch_size`` asks the store for SeriesBatch frames (honoured by promring and by
    recent Thanos; older stores ignore it and send one series per frame, which also works).
    """

    def __init__(self, address: str, timeout_s: float = 120.0, series_batch_size: int = 256,
                 native_histograms: bool = False, tls: ClientTLS | None = None,
                 metrics: GrpcClientMetrics | None = None) -> None:
        """``native_histograms``: keep HISTOGRAM/FLOAT_HISTOGRAM chunks (as EncodedChunk data)
        instead of dropping them with a warning; for callers that can decode them."""
        self.address = address
        self.native_histograms = native_histograms
        self.tls = tls
        self.metrics = metrics  # grpc_client_*
        self._timeout = timeout_s
        self._batch = series_batch_size
        self._channel: H2Channel | None = None
        self._stubs: _Stubs | None = None
        # encoded SeriesRequest fields after the matchers, by options: every query of a
        # dashboard sends the same ones
        self._request_tails: dict[tuple, bytes] = {}

    def _rpc(self) -> _Stubs:
        if self._stubs is None:
            tls = self.tls
            ch = H2Channel(self.address, grpc_codec.IDENTITY, MAX_MESSAGE_BYTES,
                           ssl_context=client_ssl_context(tls),
                           server_name=tls.server_name if tls is not None else "")
            self._channel, self._stubs = ch, _Stubs(ch, self.metrics)
        return self._stubs

    async def info(self) -> StoreInfo:
        """thanos.info.Info; falls back to the deprecated Store.Info of Thanos < 0.37 peers."""
        try:
            r = await self._rpc().info(info_pb2.InfoRequest(), timeout=self._timeout)
        except RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            old = await self._rpc().store_info(rpc_pb2.InfoRequest(), timeout=self._timeout)
            return StoreInfo(
                label_sets=[labels_from_pb(ls.labels) for ls in old.label_sets],
                min_time=old.min_time, max_time=old.max_time,
                component_type=rpc_pb2.StoreType.Name(old.storeType).lower())
        # An endpoint without the Store API (a stateless ruler) holds no data: an empty range.
        mint, maxt = ((r.store.min_time, r.store.max_time) if r.HasField("store")
                      else ((1 << 63) - 1, -(1 << 63)))
        return StoreInfo(
            label_sets=[labels_from_pb(ls.labels) for ls in r.label_sets],
            min_time=mint, max_time=maxt, component_type=r.ComponentType,
            supports_without_replica_labels=r.store.supports_without_replica_labels,
            serves_rules=r.HasField("rules"), exemplars=r.HasField("exemplars"))

    def _series_request(self, mint: int, maxt: int, matchers: Iterable[Matcher],
                        skip_chunks: bool, without_replica_labels: Iterable[str], limit: int,
                        partial_response: bool) -> bytes | rpc_pb2.SeriesRequest:
        """The request, serialized by storeapi.wire (upb's own error for a string that is not
        UTF-8): the times and matchers encoded in C per call, the option fields after them
        kept per option set (a cold query's new matchers miss any cache keyed by them, and
        hashing them costs a Python call per matcher)."""
        matchers = tuple(matchers)  # (read twice when the fallback below needs them)
        without_replica_labels = tuple(without_replica_labels)
        key = (skip_chunks, without_replica_labels, limit, partial_response)
        try:
            tail = self._request_tails.get(key)
            if tail is None:
                tail = self._request_tail(key)
            return with_times(mint, maxt, matcher_fields(matchers)) + tail
        except UnicodeEncodeError:
            return rpc_pb2.SeriesRequest(
                min_time=mint, max_time=maxt, matchers=matchers_to_pb(matchers),
                skip_chunks=skip_chunks, without_replica_labels=list(without_replica_labels),
                limit=limit, response_batch_size=self._batch,
                partial_response_disabled=not partial_response,
                partial_response_strategy=_strategy(partial_response))

    def _request_tail(self, key: tuple) -> bytes:
        """The SeriesRequest fields after the matchers of the option set ``key``, kept (at
        most _MAX_REQUEST_TAILS of at most _MAX_KEPT_TAIL_BYTES each)."""
        skip_chunks, without_replica_labels, limit, partial_response = key
        tail = series_request_rest((), skip_chunks, without_replica_labels, limit, self._batch,
                                   _strategy(partial_response), not partial_response)
        if len(tail) <= _MAX_KEPT_TAIL_BYTES:  # (many long replica label names are not kept)
            if len(self._request_tails) >= _MAX_REQUEST_TAILS:
                self._request_tails.clear()
            self._request_tails[key] = tail
        return tail

    async def iter_series(self, mint: int, maxt: int, matchers: Iterable[Matcher],
                          skip_chunks: bool = False, without_replica_labels: Iterable[str] = (),
                          limit: int = 0, partial_response: bool = False, tenant: str = "",
                          ) -> AsyncIterator[RawSeries | str]:
        """Yields each complete series (frames of a series split by the store are merged) and
        each warning string, in stream order.

        With ``partial_response`` a store that proxies others (a Thanos querier or store gateway)
        may report failures as warnings instead of failing the call (strategy WARN vs ABORT).
        ``tenant`` (every call that takes it): sent as ``thanos-tenant`` metadata, as Thanos's
        querier does (the store attributes its limits and metrics to it).
        """
        request = self._series_request(mint, maxt, matchers, skip_chunks, without_replica_labels,
                                       limit, partial_response)
        async for item in self._series_parts(request, tenant_metadata(tenant)):
            if isinstance(item, str):
                yield item
            else:
                for s in item:
                    yield s

    async def _series_parts(self, request: rpc_pb2.SeriesRequest | bytes, metadata: bytes = b""
                            ) -> AsyncIterator[list[RawSeries] | str]:
        """The Series stream as lists of complete series and warning strings, in stream
        order (see _SeriesReader)."""
        call = self._rpc().series_raw(request, timeout=self._timeout, metadata=metadata)
        reader = _SeriesReader(self.address, self.native_histograms)
        async for frame in call:
            try:
                item = reader.feed(frame)
            except MalformedFrame:
                await _cancel(call)
                raise
            if item is not None:
                yield item
        for item in reader.finish():
            yield item

    async def series_with_warnings(self, mint: int, maxt: int, matchers: Iterable[Matcher],
                                   skip_chunks: bool = False,
                                   without_replica_labels: Iterable[str] = (),
                                   limit: int = 0, partial_response: bool = False,
                                   until: float | None = None, tenant: str = "") -> SeriesResult:
        """``until``: a loop time (the query's deadline) the call fails at with
        DEADLINE_EXCEEDED, if the client's own timeout has not ended it before."""
        request = self._series_request(mint, maxt, matchers, skip_chunks, without_replica_labels,
                                       limit, partial_response)
        reader = _SeriesReader(self.address, self.native_histograms)
        request = request if isinstance(request, bytes) else request.SerializeToString()
        ch = self._channel or self._rpc().channel
        # Frames taken as they arrive, in this coroutine: no async generator per layer, and
        # no call wrapper of _Stubs (counted here as _begin and _done count, without a
        # metrics _Call object per call).
        m = self.metrics.called(SERIES, "server_stream") if self.metrics is not None else None
        t0 = time.perf_counter()
        try:
            await ch.unary_stream_each(SERIES, request, self._timeout, reader.take, until,
                                       tenant_metadata(tenant))
        except BaseException as e:
            if m is not None:
                m.end(_code(e), 0, t0)
            raise
        if m is not None:
            m.end(grpc.StatusCode.OK, 0, t0)
        return reader.result()

    async def series(self, mint: int, maxt: int, matchers: Iterable[Matcher],
                     skip_chunks: bool = False) -> list[RawSeries]:
        """All matching series (sorted by labels as the store sends them); warnings dropped."""
        return (await self.series_with_warnings(mint, maxt, matchers, skip_chunks)).series

    async def series_aggr(self, mint: int, maxt: int, matchers: Iterable[Matcher],
                          max_resolution_window: int, aggregates: Iterable[int] = (),
                          without_replica_labels: Iterable[str] = (),
                          partial_response: bool = False, tenant: str = ""
                          ) -> tuple[list[AggrSeries], list[str]]:
        """Series at the coarsest resolution <= ``max_resolution_window`` (ms) the stores
        have, with raw XOR chunks where they only have raw data; ``aggregates`` are the
        storeapi Aggr values wanted (Thanos's querier asks per PromQL function, see
        querier.downsampled.aggrs_from_func). Returns (series, warnings)."""
        request = rpc_pb2.SeriesRequest(
            min_time=mint, max_time=maxt, matchers=matchers_to_pb(matchers),
            max_resolution_window=max_resolution_window, aggregates=list(aggregates),
            without_replica_labels=list(without_replica_labels),
            response_batch_size=self._batch, partial_response_disabled=not partial_response,
            partial_response_strategy=_strategy(partial_response))
        call = self._rpc().series_raw(request, timeout=self._timeout,
                                      metadata=tenant_metadata(tenant))
        out: list[AggrSeries] = []
        warnings: list[str] = []
        async for frame in call:
            try:
                kind, payload, _ = series_response(frame, out[-1].labels if out else None, None,
                                                   AggrData)
            except ValueError:
                await _cancel(call)
                raise MalformedFrame(_MALFORMED) from None
            if kind == _FRAME_WARNING:
                warnings.append(payload)
            elif kind == _FRAME_SERIES and payload:
                first = 0
                if out and out[-1].labels == payload[0][0]:  # a series split over frames
                    out[-1].chunks.extend(payload[0][1])
                    first = 1
                out += [AggrSeries(lbls, chunks) for lbls, chunks in payload[first:]]
        return out, warnings

    async def label_names(self, mint: int, maxt: int, matchers: Iterable[Matcher] = (),
                          partial_response: bool = False, tenant: str = "") -> list[str]:
        r = await self._rpc().label_names(
            rpc_pb2.LabelNamesRequest(start=mint, end=maxt, matchers=matchers_to_pb(matchers),
                                      partial_response_disabled=not partial_response,
                                      partial_response_strategy=_strategy(partial_response)),
            timeout=self._timeout, metadata=tenant_metadata(tenant))
        return list(r.names)

    async def label_values(self, name: str, mint: int, maxt: int,
                           matchers: Iterable[Matcher] = (), partial_response: bool = False,
                           tenant: str = "") -> list[str]:
        r = await self._rpc().label_values(
            rpc_pb2.LabelValuesRequest(label=name, start=mint, end=maxt,
                                       matchers=matchers_to_pb(matchers),
                                       partial_response_disabled=not partial_response,
                                       partial_response_strategy=_strategy(partial_response)),
            timeout=self._timeout, metadata=tenant_metadata(tenant))
        return list(r.values)

    async def metric_metadata(self, metric: str = "", limit: int = -1,
                              partial_response: bool = False
                              ) -> tuple[dict[str, list[tuple[str, str, str]]], list[str]]:
        """thanos.Metadata: family -> distinct (type, help, unit), and warnings. An endpoint
        without the Metadata API (a store gateway) has none."""
        out: dict[str, list[tuple[str, str, str]]] = {}
        warnings: list[str] = []
        req = metadata_pb2.MetricMetadataRequest(
            metric=metric, limit=max(min(limit, (1 << 31) - 1), -1),
            partial_response_strategy=_strategy(partial_response))
        try:
            async for r in self._rpc().metadata(req, timeout=self._timeout):
                if r.WhichOneof("result") == "warning":
                    warnings.append(r.warning)
                for name, entry in r.metadata.metadata.items():
                    metas = out.setdefault(name, [])
                    for m in entry.metas:
                        if (m.type, m.help, m.unit) not in metas:
                            metas.append((m.type, m.help, m.unit))
        except RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        return out, warnings

    async def rules(self, req: rules_pb2.RulesRequest
                    ) -> tuple[list[rules_pb2.RuleGroup], list[str]]:
        """thanos.Rules: the endpoint's rule groups, and warnings."""
        groups: list[rules_pb2.RuleGroup] = []
        warnings: list[str] = []
        async for r in self._rpc().rules(req, timeout=self._timeout):
            if r.WhichOneof("result") == "group":
                groups.append(r.group)
            elif r.WhichOneof("result") == "warning":
                warnings.append(r.warning)
        return groups, warnings

    async def exemplars(self, query: str, start: int, end: int, partial_response: bool = False
                        ) -> tuple[list[tuple[Labels, list[tuple[Labels, float, int]]]], list[str]]:
        """thanos.Exemplars: (series labels, [(exemplar labels, value, ts ms)]) per series, and
        warnings. An endpoint without the Exemplars API has none."""
        out: list[tuple[Labels, list[tuple[Labels, float, int]]]] = []
        warnings: list[str] = []
        req = exemplars_pb2.ExemplarsRequest(query=query, start=start, end=end,
                                             partial_response_strategy=_strategy(partial_response))

        def lbls(ls) -> Labels:
            return tuple(sorted((lb.name, lb.value) for lb in ls.labels))

        try:
            async for r in self._rpc().exemplars(req, timeout=self._timeout):
                if r.WhichOneof("result") == "warning":
                    warnings.append(r.warning)
                elif r.WhichOneof("result") == "data":
                    out.append((lbls(r.data.seriesLabels),
                                [(lbls(e.labels), e.value, e.ts) for e in r.data.exemplars]))
        except RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        return out, warnings

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stubs = None
