"""WAL record types and their payload encodings (see :mod:`receiver.wal.wal` for framing).

Two encodings exist, told apart by the frame header's version byte. Version 2 (written today)
is the compact one of :mod:`receiver.wal.compact`: each record type is registered in
:data:`CODECS` with its column layout, and that is all a new record type needs. Version 1, the
raw columnar layout below, is what older WALs hold; it is still decoded (and its encoders are
kept for benchmarks and tests).

Version-1 payloads are raw little-endian array bytes so that encoding is a few buffer copies and decoding
is ``np.frombuffer`` -- no per-sample Python. Every array starts 8-byte aligned within the
payload (and frames are 8-byte aligned in the segment), so decoded views are aligned.

Series payload (type 1)::

    u64 n | u64 blob_len | refs: n x <i8 | key_lens: n x <u4 | pad to 8 | blob | pad to 8

``blob`` is the concatenation of the canonical label keys (``encode_labels_key``).

Samples payload (type 2)::

    u64 n | refs: n x <i8 | ts: n x <i8 | vals: n x <f8

Values are stored as their raw IEEE-754 bits, so NaN payloads (the staleness marker
``0x7ff0000000000002``) survive exactly.

Combined payload (type 3) is a series payload immediately followed by a samples payload; it
is what :meth:`WAL.log` writes when a request created series, so that one checksum covers both
and the request replays all-or-nothing.

Histograms payload (type 4), native histogram samples::

    u64 n | u64 blob_len | refs: n x <i8 | ts: n x <i8 | lens: n x <u4 | pad to 8 | blob | pad to 8

``blob`` is the concatenation of each sample's ``prometheus.Histogram`` message bytes (as the
remote-write request carried them). :meth:`WAL.log` writes a type-4 frame right after the
request's series/samples frame, in the same ``writev``.

Out-of-order samples payload (type 5), float samples the out-of-order head took (within
``--tsdb.out-of-order.time-window``): the samples payload. Written after the request's series
frame in the same ``writev``, so a series is always defined before its late samples; replay
puts them back into the out-of-order head, never into the in-order one.

Out-of-order histograms payload (type 6): the histograms payload, for late native histogram
samples; written and replayed like type 5.

Exemplars payload (type 7), the exemplars a request added (Prometheus's exemplar record)::

    u64 n | u64 blob_len | refs: n x <i8 | ts: n x <i8 | vals: n x <f8 | lens: n x <u4 | pad |
    blob | pad

``blob`` is the concatenation of each exemplar's canonical label key. Written last, after the
request's series frame, so its series are always defined before it.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import compact
from .compact import Layout, RecordDecodeError

TYPE_SERIES = 1
TYPE_SAMPLES = 2
TYPE_SERIES_SAMPLES = 3
TYPE_HISTOGRAMS = 4
TYPE_OOO_SAMPLES = 5
TYPE_OOO_HISTOGRAMS = 6
TYPE_EXEMPLARS = 7

_I8 = np.dtype("<i8")
_F8 = np.dtype("<f8")
_U4 = np.dtype("<u4")
_U64 = struct.Struct("<Q")
_U64x2 = struct.Struct("<QQ")
_ZERO_PAD = bytes(8)


@dataclass
class SeriesRecord:
    """New series: ``refs[i]`` is the head's id for the series with canonical key ``keys[i]``."""

    refs: np.ndarray
    keys: list[bytes]


@dataclass
class SamplesRecord:
    """Accepted samples of one request, column-wise."""

    refs: np.ndarray
    ts: np.ndarray
    vals: np.ndarray


@dataclass
class OOOSamplesRecord:
    """Accepted out-of-order float samples of one request, column-wise."""

    refs: np.ndarray
    ts: np.ndarray
    vals: np.ndarray


def _pad8(n: int) -> int:
    return -n & 7


def _columns_and_blobs(columns: list[np.ndarray], blobs: list[bytes]) -> list:
    """The layout series and histogram records share: ``n, len(blob)`` (2 x u64), each int64
    column, the u32 length of each blob (padded to 8), then the blobs joined (padded to 8)."""
    n = len(blobs)
    lens = np.fromiter(map(len, blobs), dtype=_U4, count=n)
    blob = b"".join(blobs)
    parts: list = [_U64x2.pack(n, len(blob)), *columns, lens]
    if p := _pad8(4 * n):
        parts.append(_ZERO_PAD[:p])
    parts.append(blob)
    if p := _pad8(len(blob)):
        parts.append(_ZERO_PAD[:p])
    return parts


def _decode_columns_and_blobs(buf: memoryview, off: int, end: int, k: int, what: str
                              ) -> tuple[np.ndarray, list[bytes], int]:
    """Inverse of :func:`_columns_and_blobs` for ``k`` columns: (columns stacked in one int64
    array, blobs, offset after the payload)."""
    if end - off < 16:
        raise RecordDecodeError(f"{what} payload too short")
    n, blob_len = _U64x2.unpack_from(buf, off)
    p = off + 16
    lens_off = p + 8 * k * n
    blob_off = lens_off + 4 * n + _pad8(4 * n)
    stop = blob_off + blob_len + _pad8(blob_len)
    if stop > end:
        raise RecordDecodeError(f"{what} payload sizes exceed record")
    # One copy of the columns; views then share it (and not the whole segment buffer).
    cols = np.frombuffer(buf, dtype=_I8, count=k * n, offset=p).copy()
    lens = np.frombuffer(buf, dtype=_U4, count=n, offset=lens_off)
    ends = np.cumsum(lens, dtype=np.int64)
    if (int(ends[-1]) if n else 0) != blob_len:
        raise RecordDecodeError(f"{what} lengths do not match blob")
    blob = bytes(buf[blob_off:blob_off + blob_len])
    blobs = [blob[s:e] for s, e in zip((ends - lens).tolist(), ends.tolist())]
    return cols, blobs, stop


def series_parts(rec: SeriesRecord) -> list:
    """Buffers whose concatenation is the series payload (ready for ``os.writev``)."""
    refs = np.ascontiguousarray(rec.refs, dtype=_I8)
    if len(rec.keys) != len(refs):
        raise ValueError(f"series record: {len(refs)} refs but {len(rec.keys)} keys")
    return _columns_and_blobs([refs], rec.keys)


def samples_parts(rec: SamplesRecord | OOOSamplesRecord) -> list:
    """Buffers whose concatenation is the samples payload."""
    refs = np.ascontiguousarray(rec.refs, dtype=_I8)
    ts = np.ascontiguousarray(rec.ts, dtype=_I8)
    vals = np.ascontiguousarray(rec.vals, dtype=_F8)
    n = len(refs)
    if len(ts) != n or len(vals) != n:
        raise ValueError(f"samples record: lengths differ (refs={n}, ts={len(ts)}, vals={len(vals)})")
    return [_U64.pack(n), refs, ts, vals]


def decode_series(buf: memoryview, off: int, end: int) -> tuple[SeriesRecord, int]:
    """Decode a series payload starting at ``off``; returns the record and the offset after it."""
    refs, keys, stop = _decode_columns_and_blobs(buf, off, end, 1, "series")
    return SeriesRecord(refs, keys), stop


def decode_samples(buf: memoryview, off: int, end: int) -> tuple[SamplesRecord, int]:
    """Decode a samples payload starting at ``off``; returns the record and the offset after it."""
    if end - off < 8:
        raise RecordDecodeError("samples payload too short")
    (n,) = _U64.unpack_from(buf, off)
    p = off + 8
    stop = p + 24 * n
    if stop > end:
        raise RecordDecodeError("samples payload sizes exceed record")
    # One copy of the three columns; views then share it (and not the whole segment buffer).
    cols = np.frombuffer(buf, dtype=_I8, count=3 * n, offset=p).copy()
    return SamplesRecord(cols[:n], cols[n:2 * n], cols[2 * n:].view(_F8)), stop


@dataclass
class HistogramsRecord:
    """Accepted native histogram samples of one request: ``raw[i]`` is a prometheus.Histogram."""

    refs: np.ndarray
    ts: np.ndarray
    raw: list[bytes]


def histograms_parts(rec: HistogramsRecord | OOOHistogramsRecord) -> list:
    """Buffers whose concatenation is the histograms payload."""
    refs = np.ascontiguousarray(rec.refs, dtype=_I8)
    ts = np.ascontiguousarray(rec.ts, dtype=_I8)
    n = len(refs)
    if len(ts) != n or len(rec.raw) != n:
        raise ValueError(f"histograms record: lengths differ (refs={n}, ts={len(ts)}, raw={len(rec.raw)})")
    return _columns_and_blobs([refs, ts], rec.raw)


def decode_ooo_samples(buf: memoryview, off: int, end: int) -> tuple[OOOSamplesRecord, int]:
    """Decode an out-of-order samples payload (the samples layout)."""
    rec, stop = decode_samples(buf, off, end)
    return OOOSamplesRecord(rec.refs, rec.ts, rec.vals), stop


@dataclass
class OOOHistogramsRecord:
    """Accepted out-of-order native histogram samples: ``raw[i]`` is a prometheus.Histogram."""

    refs: np.ndarray
    ts: np.ndarray
    raw: list[bytes]


def decode_ooo_histograms(buf: memoryview, off: int, end: int) -> tuple[OOOHistogramsRecord, int]:
    rec, stop = decode_histograms(buf, off, end)
    return OOOHistogramsRecord(rec.refs, rec.ts, rec.raw), stop


def decode_histograms(buf: memoryview, off: int, end: int) -> tuple[HistogramsRecord, int]:
    """Decode a histograms payload starting at ``off``; returns the record and the offset after it."""
    cols, raw, stop = _decode_columns_and_blobs(buf, off, end, 2, "histograms")
    n = len(raw)
    return HistogramsRecord(cols[:n], cols[n:], raw), stop


@dataclass
class ExemplarsRecord:
    """Exemplars a request added: ``labels[i]`` is the canonical label key of exemplar ``i``."""

    refs: np.ndarray
    ts: np.ndarray
    vals: np.ndarray
    labels: list[bytes]


# ---- record codecs: each type's columns, for the compact (version 2) encoding ----------------

@dataclass(frozen=True)
class RecordCodec:
    """What the frame layer needs to know of one record type: its compact layout, how to
    split a record into columns (+ blobs) and build it back, and its version-1 decoder.
    A new record type is one entry in :data:`CODECS` (its frame type follows by itself)."""

    layout: Layout
    columns: Callable[[Any], tuple[list[np.ndarray], list[bytes] | None]]
    build: Callable[[list[np.ndarray], list[bytes] | None], Any]
    # Types older than the compact encoding only; a type added since has no version-1 frames.
    decode_v1: Callable[[memoryview, int, int], tuple[Any, int]] | None = None


_SAMPLE_LAYOUT = Layout(("delta", "delta", "xor"))  # refs, timestamps, values
_HISTOGRAM_LAYOUT = Layout(("delta", "delta"), blobs=True)  # refs, timestamps; messages

CODECS: dict[int, RecordCodec] = {
    TYPE_SERIES: RecordCodec(Layout(("delta",), blobs=True), lambda r: ([r.refs], r.keys),
                             lambda c, b: SeriesRecord(c[0], b), decode_series),
    TYPE_SAMPLES: RecordCodec(_SAMPLE_LAYOUT, lambda r: ([r.refs, r.ts, r.vals], None),
                              lambda c, _: SamplesRecord(*c), decode_samples),
    TYPE_HISTOGRAMS: RecordCodec(_HISTOGRAM_LAYOUT, lambda r: ([r.refs, r.ts], r.raw),
                                 lambda c, b: HistogramsRecord(c[0], c[1], b), decode_histograms),
    TYPE_OOO_SAMPLES: RecordCodec(_SAMPLE_LAYOUT, lambda r: ([r.refs, r.ts, r.vals], None),
                                  lambda c, _: OOOSamplesRecord(*c), decode_ooo_samples),
    TYPE_OOO_HISTOGRAMS: RecordCodec(_HISTOGRAM_LAYOUT, lambda r: ([r.refs, r.ts], r.raw),
                                     lambda c, b: OOOHistogramsRecord(c[0], c[1], b),
                                     decode_ooo_histograms),
    TYPE_EXEMPLARS: RecordCodec(Layout(("delta", "delta", "xor"), blobs=True),
                                lambda r: ([r.refs, r.ts, r.vals], r.labels),
                                lambda c, b: ExemplarsRecord(c[0], c[1], c[2], b)),
}

# Record types a frame of each type holds, in order (a request's series and samples share one).
FRAME_RECORDS: dict[int, tuple[int, ...]] = {
    **{t: (t,) for t in CODECS}, TYPE_SERIES_SAMPLES: (TYPE_SERIES, TYPE_SAMPLES)}


def record_parts(typ: int, rec: Any) -> list:
    """Buffers whose concatenation is the compact payload of ``rec`` (of record type ``typ``)."""
    codec = CODECS[typ]
    cols, blobs = codec.columns(rec)
    return compact.encode(codec.layout, cols, blobs)


def decode_record(typ: int, version: int, buf: memoryview, off: int, end: int) -> tuple[Any, int]:
    """One record of type ``typ`` in encoding ``version`` (1 raw columns, 2 compact) at ``off``."""
    codec = CODECS[typ]
    if version == 1:
        if codec.decode_v1 is None:
            raise RecordDecodeError(f"record type {typ} has no version-1 encoding")
        return codec.decode_v1(buf, off, end)
    cols, blobs, stop = compact.decode(codec.layout, buf, off, end)
    return codec.build(cols, blobs), stop
