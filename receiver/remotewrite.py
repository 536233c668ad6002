"""Prometheus remote-write 1.0: request bodies to flat arrays, and back for clients.

Decoding is the receiver's hot path, so the protobuf walk lives in C (``receiver._rwdecode``)
and this module only handles the HTTP-level concerns: which encodings are acceptable, the
snappy block format, and refusing decompression bombs before allocating for them. The encoder
is for our own clients (tests, benchmarks, load generators); it emits canonical proto3 bytes
(empty/zero fields omitted), identical to what the official protobuf library serialises.
"""
from __future__ import annotations

from common.varint import uvarint

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cramjam
import numpy as np

from receiver import _rwdecode
from receiver.tsdb.labels import Labels

DEFAULT_MAX_DECOMPRESSED_BYTES = 64 << 20

# Series validation codes returned per series, mirroring Thanos labelpb.ValidateLabels.
STATUS_OK = 0
STATUS_EMPTY_LABELS = 1
STATUS_DUPLICATE_LABELS = 2
STATUS_OUT_OF_ORDER_LABELS = 3
STATUS_INVALID_UTF8 = 4  # a label name or value is not valid UTF-8 (Prometheus refuses these)

# Exemplar validation codes (Prometheus drops such exemplars and keeps the request's samples).
EX_OK = 0
EX_LABELS_TOO_LONG = 1  # names + values over exemplar.ExemplarMaxLabelSetLength (128) runes
EX_INVALID_UTF8 = 2
EX_MALFORMED = 3  # the Exemplar message does not parse

STATUS_MESSAGES = {
    STATUS_EMPTY_LABELS: "labelset contains an empty label name or value",
    STATUS_DUPLICATE_LABELS: "label set contains duplicate label names",
    STATUS_OUT_OF_ORDER_LABELS: "labelset is not ordered by label name",
    STATUS_INVALID_UTF8: "label name or value is not valid UTF-8",
}

_PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
_WRITE_REQUEST_V1 = "prometheus.WriteRequest"


class RemoteWriteError(ValueError):
    """A request body we refuse; ``status`` is the HTTP status to answer with (400 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class DecodedWrite:
    """One WriteRequest as arrays: ``sample_series[i]`` indexes ``keys`` for sample ``i``.

    Decoded with a head's series-ref cache (``decode(data, cache)``), a series whose label
    bytes the cache knew has no key built (``series_keys[i]`` is None, ``cached_refs[i]`` its
    ref); ``keys`` builds the missing ones on demand from ``data``."""

    series_keys: list[bytes | None]
    series_status: np.ndarray  # uint8 per series, see STATUS_*
    sample_series: np.ndarray  # int32 per sample
    ts: np.ndarray  # int64 per sample, milliseconds
    vals: np.ndarray  # float64 per sample, NaN payloads (stale markers) intact
    n_histograms: int
    n_exemplars: int
    # Native histogram samples (remote write 1.0 TimeSeries.histograms), column-wise:
    # hist_series[i] indexes ``keys``; hist_raw[i] is the prometheus.Histogram message's bytes.
    hist_series: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    hist_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hist_raw: list[bytes] = field(default_factory=list)
    # Exemplars (TimeSeries.exemplars), column-wise: ex_series[i] indexes ``keys``; ex_keys[i]
    # is the exemplar's canonical label key (empty when invalid); ex_status[i] is EX_*.
    ex_series: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    ex_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ex_vals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    ex_keys: list[bytes] = field(default_factory=list)
    ex_status: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    # Set by a decode with a cache: the cache, its generation then, each series' cached ref
    # (-1: not cached), each series' (offset, length) of label bytes in ``data``.
    cache: Any = None
    cache_generation: int = 0
    cached_refs: np.ndarray | None = None
    label_spans: np.ndarray | None = None
    data: Any = None

    @property
    def n_samples(self) -> int:
        return len(self.ts)

    @property
    def n_series(self) -> int:
        return len(self.series_keys)

    @property
    def keys(self) -> list[bytes]:
        """Every series' canonical label key (the cached ones built now, once)."""
        if self.cached_refs is not None and None in self.series_keys:
            self.keys_at(np.flatnonzero(self.cached_refs >= 0))
        return self.series_keys  # type: ignore[return-value]

    def keys_at(self, idx: np.ndarray) -> list[bytes]:
        """The keys of series ``idx``, building those the decoder left out."""
        keys = self.series_keys
        got = [keys[i] for i in idx.tolist()]
        if None in got:
            missing = np.array([i for i, k in zip(idx.tolist(), got) if k is None], dtype=np.int64)
            assert self.label_spans is not None
            for i, k in zip(missing.tolist(), _rwdecode.keys_at_spans(self.data, self.label_spans[missing])):
                keys[i] = k
            got = [keys[i] for i in idx.tolist()]
        return got  # type: ignore[return-value]


def decode(data: Any, cache: Any = None) -> DecodedWrite:
    """Decode an *uncompressed* WriteRequest; raises ValueError if it is malformed.

    ``cache``: the target head's ``refcache`` (see ``receiver.tsdb.head``), so that series it
    knows need no key, validation or lookup; the head checks the cache and its generation
    before trusting the refs."""
    refs = spans = None
    if cache is None:
        got = _rwdecode.decode_with_histograms(data)
    else:
        generation = cache.generation
        *got, refs, spans = _rwdecode.decode_with_refs(data, cache)
    (keys, status, series, ts, vals, n_hist, n_ex, h_series, h_ts, h_raw,
     e_series, e_ts, e_vals, e_keys, e_status) = got
    out = DecodedWrite(
        series_keys=keys,
        series_status=np.frombuffer(status, dtype=np.uint8),
        sample_series=np.frombuffer(series, dtype=np.int32),
        ts=np.frombuffer(ts, dtype=np.int64),
        vals=np.frombuffer(vals, dtype=np.float64),
        n_histograms=n_hist,
        n_exemplars=n_ex,
        hist_series=np.frombuffer(h_series, dtype=np.int32),
        hist_ts=np.frombuffer(h_ts, dtype=np.int64),
        hist_raw=h_raw,
        ex_series=np.frombuffer(e_series, dtype=np.int32),
        ex_ts=np.frombuffer(e_ts, dtype=np.int64),
        ex_vals=np.frombuffer(e_vals, dtype=np.float64),
        ex_keys=e_keys,
        ex_status=np.frombuffer(e_status, dtype=np.uint8),
    )
    if refs is not None:
        out.cache, out.cache_generation, out.data = cache, generation, data
        out.cached_refs = np.frombuffer(refs, dtype=np.int64)
        out.label_spans = np.frombuffer(spans, dtype=np.int64).reshape(-1, 2)
    return out


def check_content_type(content_type: str | None) -> None:
    """Accept remote-write 1.0 (``application/x-protobuf``, optionally ``proto=prometheus.WriteRequest``).

    A missing header is tolerated, as Prometheus's own receiver does; remote-write 2.0
    (``proto=io.prometheus.write.v2.Request``) and anything else get 415.
    """
    if content_type is None or not content_type.strip():
        return
    media, *params = [part.strip() for part in content_type.split(";")]
    if media.lower() != _PROTOBUF_CONTENT_TYPE:
        raise RemoteWriteError(
            f"unsupported Content-Type {content_type!r}: expected {_PROTOBUF_CONTENT_TYPE}", 415)
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "proto" and value.strip().strip('"') != _WRITE_REQUEST_V1:
            raise RemoteWriteError(
                f"unsupported remote-write message {value.strip()!r}: only {_WRITE_REQUEST_V1} "
                "(remote write 1.0) is accepted", 415)


def check_content_encoding(content_encoding: str | None) -> None:
    """Remote write 1.0 always uses snappy; a missing header is tolerated as snappy."""
    if content_encoding is None or not content_encoding.strip():
        return
    if content_encoding.strip().lower() != "snappy":
        raise RemoteWriteError(
            f"unsupported Content-Encoding {content_encoding!r}: remote write requires snappy", 415)


def snappy_uncompressed_length(body: bytes | bytearray | memoryview) -> int:
    """Read the uvarint length header of a snappy block without decompressing anything."""
    x = shift = 0
    for i in range(min(len(body), 10)):
        c = body[i]
        x |= (c & 0x7F) << shift
        if c < 0x80:
            return x
        shift += 7
    raise RemoteWriteError("snappy: corrupt input: missing or invalid length header")


def decompress_body(
    body: bytes | bytearray | memoryview,
    content_encoding: str | None,
    content_type: str | None,
    *,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> bytes:
    """The uncompressed WriteRequest of an HTTP remote-write body (a router forwards these
    bytes as they are); every refusal is a RemoteWriteError."""
    check_content_type(content_type)
    check_content_encoding(content_encoding)
    size = snappy_uncompressed_length(body)
    # A snappy copy element of 3 bytes expands to at most 64: a header claiming more than ~22x
    # the body is corrupt input (400), not a large request (413).
    if size > len(body) * 22 + 64:
        raise RemoteWriteError(f"snappy: corrupt input (header claims {size} bytes from {len(body)})")
    if size > max_decompressed_bytes:
        raise RemoteWriteError(
            f"decompressed request would be {size} bytes, over the {max_decompressed_bytes} byte limit",
            status=413)
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as e:  # cramjam raises its own DecompressionError
        raise RemoteWriteError(f"snappy: {e}") from None


def decode_body(
    body: bytes | bytearray | memoryview,
    content_encoding: str | None,
    content_type: str | None,
    *,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> DecodedWrite:
    """Turn an HTTP remote-write body into arrays; every refusal is a RemoteWriteError."""
    raw = decompress_body(body, content_encoding, content_type,
                          max_decompressed_bytes=max_decompressed_bytes)
    try:
        return decode(raw)
    except ValueError as e:
        raise RemoteWriteError(str(e)) from None


def snappy_compress(data: bytes | bytearray | memoryview) -> bytes:
    """Snappy *block* format, as remote write 1.0 sends it."""
    return bytes(cramjam.snappy.compress_raw(data))


# ---------------------------------------------------------------- encoding (clients)



def _string_field(tag: int, s: str) -> bytes:
    b = s.encode()
    return bytes((tag,)) + uvarint(len(b)) + b if b else b""


def _encode_labels(labels: Labels) -> bytes:
    parts = []
    for name, value in labels:
        body = _string_field(0x0A, name) + _string_field(0x12, value)
        parts.append(b"\x0a" + uvarint(len(body)) + body)
    return b"".join(parts)


def _encode_samples(ts: np.ndarray, vals: np.ndarray) -> tuple[bytes, np.ndarray]:
    """All Sample submessages (with their TimeSeries.samples tag) in one vectorised pass.

    Returns the concatenated bytes and each sample's end offset in them. Layout of one row
    before masking: 0x12 len | 0x09 value(8) | 0x10 varint(ts)(<=10); zero fields are omitted
    exactly as proto3 does.
    """
    n = len(ts)
    u = ts.view(np.uint64)
    vbits = vals.view(np.uint64)
    nbytes = np.ones(n, dtype=np.int64)
    for k in range(1, 10):
        nbytes += (u >> np.uint64(7 * k)) != 0
    has_v = vbits != 0
    has_t = u != 0
    rows = np.zeros((n, 22), dtype=np.uint8)
    mask = np.zeros((n, 22), dtype=bool)
    body_len = np.where(has_v, 9, 0) + np.where(has_t, 1 + nbytes, 0)
    rows[:, 0] = 0x12
    rows[:, 1] = body_len
    mask[:, :2] = True
    rows[:, 2] = 0x09
    rows[:, 3:11] = vals.astype("<f8").view(np.uint8).reshape(n, 8)
    mask[:, 2:11] = has_v[:, None]
    rows[:, 11] = 0x10
    k = np.arange(10)
    groups = ((u[:, None] >> (np.uint64(7) * k.astype(np.uint64))) & np.uint64(0x7F)).astype(np.uint8)
    cont = k[None, :] < (nbytes[:, None] - 1)
    rows[:, 12:22] = groups | (cont.astype(np.uint8) << 7)
    mask[:, 11] = has_t
    mask[:, 12:22] = has_t[:, None] & (k[None, :] < nbytes[:, None])
    ends = np.cumsum(2 + body_len)
    return rows[mask].tobytes(), ends


def encode_write_request(series: Iterable[tuple[Labels, Any, Any]]) -> bytes:
    """Serialise (labels, ts, vals) triples as an uncompressed prometheus.WriteRequest.

    Labels are written in the order given (callers normally pass sorted Labels); ts are int64
    milliseconds, vals float64 with their exact bit patterns kept.
    """
    items = []
    ts_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for labels, ts, vals in series:
        t = np.ascontiguousarray(ts, dtype=np.int64).reshape(-1)
        v = np.ascontiguousarray(vals, dtype=np.float64).reshape(-1)
        if len(t) != len(v):
            raise ValueError(f"series {labels!r}: {len(t)} timestamps but {len(v)} values")
        items.append((labels, len(t)))
        ts_parts.append(t)
        val_parts.append(v)
    if not items:
        return b""
    all_ts = np.concatenate(ts_parts)
    all_vals = np.concatenate(val_parts)
    sample_bytes, ends = _encode_samples(all_ts, all_vals) if len(all_ts) else (b"", np.zeros(0, np.int64))
    ends_list = ends.tolist()
    out = []
    pos = 0  # sample index
    off = 0  # byte offset into sample_bytes
    for labels, n in items:
        end_off = ends_list[pos + n - 1] if n else off
        body = _encode_labels(labels) + sample_bytes[off:end_off]
        out.append(b"\x0a" + uvarint(len(body)) + body)
        pos += n
        off = end_off
    return b"".join(out)


def encode_histogram_write_request(series: Iterable[tuple[Labels, Iterable[bytes]]]) -> bytes:
    """Serialise (labels, [prometheus.Histogram message bytes]) pairs as an uncompressed
    WriteRequest whose series carry only native histogram samples (TimeSeries field 4)."""
    out = []
    for labels, hists in series:
        body = _encode_labels(labels) + b"".join(
            b"\x22" + uvarint(len(h)) + h for h in hists)
        out.append(b"\x0a" + uvarint(len(body)) + body)
    return b"".join(out)
