"""The Prometheus next to the sidecar as a StoreAPI series source, through remote read.

Series come from ``/api/v1/read`` asking for STREAMED_XOR_CHUNKS: the body is parsed frame by
frame as it arrives and each chunk's bytes go out in the Series response as they are (no
decoding and re-encoding; a frame is decoded in C, storeapi/_wire.c). Prometheus numbers
chunk encodings like the TSDB (XOR=1, HISTOGRAM=2, FLOAT_HISTOGRAM=3): XOR data stays plain
bytes, the others become EncodedChunk. A Prometheus without streaming answers SAMPLES (one snappy
ReadResponse), which is cut into XOR chunks of 120 samples as Thanos does. Matchers on
external labels are decided here against the external labels and not sent to Prometheus.
"""
from __future__ import annotations

import logging

import aiohttp
import cramjam
import numpy as np

from receiver.tsdb import chunkenc
from receiver.tsdb.histogram import EncodedChunk
from receiver.tsdb.labels import Labels, Matcher, MatchType
from storeapi import prompb_pb2, remote_pb2
from storeapi._wire import chunked_read_series
from storeapi.server import NO_MATCHERS, Chunks, InvalidRequest

from .chunked import DEFAULT_FRAME_LIMIT, FrameReader
from .meta import PromMetadata
from .promclient import PrometheusClient, PrometheusError

log = logging.getLogger(__name__)

STREAMED_TYPE = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
SAMPLES_PER_CHUNK = 120  # Thanos's MaxSamplesPerChunk for SAMPLES answers
MAX_SAMPLED_BODY = 1 << 30  # a SAMPLES answer is one message: bound what is buffered
_PB_MATCH = {MatchType.EQ: prompb_pb2.LabelMatcher.EQ, MatchType.NEQ: prompb_pb2.LabelMatcher.NEQ,
             MatchType.RE: prompb_pb2.LabelMatcher.RE, MatchType.NRE: prompb_pb2.LabelMatcher.NRE}


def split_external(matchers: list[Matcher], ext: Labels) -> tuple[bool, list[Matcher]]:
    """(whether the external labels satisfy their matchers, the other matchers) -- Thanos's
    rule: a matcher on an external label's name is answered by its value here."""
    values = dict(ext)
    rest = []
    for m in matchers:
        v = values.get(m.name)
        if v is None:
            rest.append(m)
        elif not m.matches(v):
            return False, []
    return True, rest


def with_external(lbls: Labels | dict[str, str], ext: Labels) -> Labels:
    """A series' labels with the external labels added; external labels win (as Thanos).
    Prometheus's remote read already merges them into its (sorted) label sets, so usually
    there is nothing to do."""
    if isinstance(lbls, tuple) and all(p in lbls for p in ext):
        return lbls
    d = dict(lbls)
    d.update(ext)
    return tuple(sorted(d.items()))


def read_request(matchers: list[Matcher], mint: int, maxt: int) -> bytes:
    q = remote_pb2.Query(start_timestamp_ms=mint, end_timestamp_ms=maxt, matchers=[
        prompb_pb2.LabelMatcher(type=_PB_MATCH[MatchType(m.type)], name=m.name, value=m.value)
        for m in matchers])
    req = remote_pb2.ReadRequest(queries=[q], accepted_response_types=[
        remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS, remote_pb2.ReadRequest.SAMPLES])
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))




def sample_chunks(samples) -> Chunks:
    """A SAMPLES answer's samples as XOR chunks of at most 120 samples."""
    n = len(samples)
    ts = np.fromiter((s.timestamp for s in samples), dtype=np.int64, count=n)
    vals = np.fromiter((s.value for s in samples), dtype=np.float64, count=n)
    out: Chunks = []
    for i in range(0, n, SAMPLES_PER_CHUNK):
        t, v = ts[i:i + SAMPLES_PER_CHUNK], vals[i:i + SAMPLES_PER_CHUNK]
        out.append((int(t[0]), int(t[-1]), chunkenc.encode(t, v)))
    return out


class PrometheusStore:
    """SeriesSource over one Prometheus (see storeapi.server.SeriesSource)."""

    def __init__(self, client: PrometheusClient, meta: PromMetadata,
                 frame_limit: int = DEFAULT_FRAME_LIMIT) -> None:
        self._client = client
        self._meta = meta
        self._frame_limit = frame_limit

    def label_sets(self) -> list[Labels]:
        return [self._meta.labels] if self._meta.labels else []

    def time_range(self) -> tuple[int, int]:
        return self._meta.timestamps()

    async def series(self, mint: int, maxt: int, matchers: list[Matcher],
                     skip_chunks: bool) -> list[tuple[Labels, Chunks]]:
        ext = self._meta.labels
        match, rest = split_external(matchers, ext)
        if not match:
            return []
        if not rest:
            raise InvalidRequest(NO_MATCHERS)
        mint = max(mint, self._meta.mint)  # not before what Prometheus holds (and --min-time)
        if skip_chunks:
            found = await self._client.series(rest, mint, maxt)
            out = [(with_external(s, ext), []) for s in found]
        else:
            out = await self._remote_read(rest, mint, maxt, ext)
        # Adding external labels can reorder series; the StoreAPI promises label order.
        out.sort(key=lambda s: s[0])
        return out

    async def _remote_read(self, matchers: list[Matcher], mint: int, maxt: int,
                           ext: Labels) -> list[tuple[Labels, Chunks]]:
        headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                   "X-Prometheus-Remote-Read-Version": "0.1.0"}
        url = self._client.base + "/api/v1/read"
        try:
            async with self._client.session.post(
                    url, data=read_request(matchers, mint, maxt), headers=headers,
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=120)) as r:
                if r.status // 100 != 2:
                    text = (await r.content.read(512)).decode(errors="replace")
                    raise PrometheusError(f"remote read: HTTP {r.status}: {text.strip()}")
                ctype = r.headers.get("Content-Type", "")
                if ctype.startswith("application/x-protobuf"):
                    return await self._sampled(r, ext)
                if not ctype.startswith(STREAMED_TYPE):
                    raise PrometheusError(f"not supported remote read content type: {ctype}")
                return await self._streamed(r, ext)
        except aiohttp.ClientError as e:
            raise PrometheusError(f"remote read: {e!r}") from e

    async def _streamed(self, r: aiohttp.ClientResponse, ext: Labels
                        ) -> list[tuple[Labels, Chunks]]:
        reader = FrameReader(self._frame_limit)
        out: list[tuple[Labels, Chunks]] = []
        async for piece in r.content.iter_any():
            try:
                found = [s for frame in reader.feed(piece) for s in chunked_read_series(frame)]
            except ValueError as e:  # FrameError or a malformed frame
                raise PrometheusError(f"remote read: {e}") from e
            for lbls, chunks, other in found:
                if not chunks:
                    continue
                if other:
                    chunks = [c if len(c) == 3 else (c[0], c[1], EncodedChunk(c[2], c[3]))
                              for c in chunks]
                out.append((with_external(lbls, ext), chunks))
        try:
            reader.finish()
        except ValueError as e:
            raise PrometheusError(f"remote read: {e}") from e
        return out

    async def _sampled(self, r: aiohttp.ClientResponse, ext: Labels
                       ) -> list[tuple[Labels, Chunks]]:
        parts, size = [], 0
        async for piece in r.content.iter_any():
            size += len(piece)
            if size > MAX_SAMPLED_BODY:
                raise PrometheusError("remote read SAMPLES answer larger than "
                                      f"{MAX_SAMPLED_BODY} bytes")
            parts.append(piece)
        body = b"".join(parts)
        try:
            resp = remote_pb2.ReadResponse.FromString(
                bytes(cramjam.snappy.decompress_raw(body)))
        except Exception as e:  # noqa: BLE001 -- cramjam and protobuf raise their own types
            raise PrometheusError(f"remote read: undecodable SAMPLES answer: {e}") from e
        if len(resp.results) != 1:
            raise PrometheusError(f"unexpected result size {len(resp.results)}")
        out = []
        for ts in resp.results[0].timeseries:
            if not ts.samples:
                continue  # Prometheus can send empty series (Thanos skips them too)
            out.append((with_external([(lb.name, lb.value) for lb in ts.labels], ext),
                        sample_chunks(ts.samples)))
        return out

    async def label_names(self, mint: int, maxt: int, matchers: list[Matcher]) -> list[str]:
        ext = self._meta.labels
        match, rest = split_external(matchers, ext)
        if not match:
            return []
        names = await self._client.label_names(rest, mint, maxt)
        return sorted(set(names) | {n for n, _ in ext}) if names else []

    async def label_values(self, name: str, mint: int, maxt: int,
                           matchers: list[Matcher]) -> list[str]:
        ext = self._meta.labels
        match, rest = split_external(matchers, ext)
        if not match:
            return []
        value = dict(ext).get(name)
        if value is not None:
            if not rest:
                return [value]
            return [value] if await self._client.series(rest, mint, maxt, limit=1) else []
        return await self._client.label_values(name, rest, mint, maxt)
