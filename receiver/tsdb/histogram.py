"""Native histograms: remote-write messages, Prometheus histogram chunks, engine values.

Three forms of one histogram sample meet here:

* ``prometheus.Histogram`` protobuf bytes, as remote write sends them and as our WAL stores
  them (so the write path logs the request's bytes untouched);
* :class:`Hist`, a compact parsed form the head keeps (spans + buckets exactly as sent:
  integer histograms keep the per-bucket deltas, float histograms absolute counts);
* Prometheus TSDB chunks: encoding 2 (``HistogramChunk``: integer histograms) and encoding 3
  (``FloatHistogramChunk``), bit for bit the format of Prometheus's tsdb/chunkenc, so blocks we
  write open in Prometheus and chunks travel the StoreAPI as Chunk.HISTOGRAM/FLOAT_HISTOGRAM.

Histogram samples are rare next to float samples and each carries many buckets, so this codec
is plain Python per sample (the float hot path never comes here).
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Sequence

from .labels import STALE_NAN_BITS

# Chunk encodings (the byte in block chunk segments; Prometheus chunkenc.Encoding).
ENCODING_XOR = 1
ENCODING_HISTOGRAM = 2
ENCODING_FLOAT_HISTOGRAM = 3

# Counter-reset header: top two bits of the chunk's third byte.
HEADER_UNKNOWN, HEADER_NOT_RESET, HEADER_RESET, HEADER_GAUGE = 0x00, 0x40, 0x80, 0xC0

# Reset hints; the numbers of prometheus.Histogram.ResetHint and of querier.promql.nhist.
HINT_UNKNOWN, HINT_RESET, HINT_NOT_RESET, HINT_GAUGE = 0, 1, 2, 3

CUSTOM_BUCKETS_SCHEMA = -53
MAX_CHUNK_SAMPLES = 120

_F64 = struct.Struct("<d")
_U64 = (1 << 64) - 1
Span = tuple[int, int]  # (offset, length)


class EncodedChunk(bytes):
    """Chunk bytes that know their encoding; plain ``bytes`` chunks are XOR.

    A bytes subclass lets histogram chunks flow through every path that already carries
    ``(mint, maxt, data)`` triples; encoding-aware code asks :func:`chunk_encoding`.
    """

    encoding: int

    def __new__(cls, data: bytes, encoding: int) -> "EncodedChunk":
        obj = super().__new__(cls, data)
        obj.encoding = encoding
        return obj

    def __reduce__(self):  # keep the encoding across pickling (process pools)
        return (EncodedChunk, (bytes(self), self.encoding))


def chunk_encoding(data: object) -> int:
    """The chunk encoding of chunk data as carried around: XOR unless it says otherwise."""
    return getattr(data, "encoding", ENCODING_XOR)


@dataclass(slots=True)
class Hist:
    """One histogram sample's value as sent (not normalised)."""

    is_float: bool = False
    schema: int = 0
    zt: float = 0.0
    count: float = 0  # int for integer histograms
    zc: float = 0
    sum: float = 0.0
    pspans: tuple = ()
    pbuckets: list = field(default_factory=list)  # int deltas, or float absolute counts
    nspans: tuple = ()
    nbuckets: list = field(default_factory=list)
    hint: int = HINT_UNKNOWN
    cv: tuple = ()  # custom bucket bounds (schema -53)

    def layout(self) -> tuple:
        return (self.is_float, self.schema, self.zt, self.pspans, self.nspans, self.cv)

    @property
    def is_stale(self) -> bool:
        return _F64.pack(self.sum) == _F64.pack(_STALE)

    def abs_buckets(self) -> tuple[list, list]:
        """Absolute bucket counts (integer deltas accumulated)."""
        if self.is_float:
            return list(self.pbuckets), list(self.nbuckets)
        return _cumsum(self.pbuckets), _cumsum(self.nbuckets)


_STALE = _F64.unpack(STALE_NAN_BITS.to_bytes(8, "little"))[0]


def _cumsum(deltas: Sequence[int]) -> list[int]:
    out, c = [], 0
    for d in deltas:
        c += d
        out.append(c)
    return out


def stale_hist(is_float: bool = False) -> Hist:
    return Hist(is_float=is_float, sum=_STALE)


# ------------------------------------------------------------------ protobuf (remote write)


def from_proto_bytes(raw: bytes) -> tuple[int, Hist]:
    """Parse ``prometheus.Histogram`` bytes into (timestamp, Hist); ValueError if malformed."""
    from storeapi.prompb_pb2 import Histogram  # same field numbers as prometheus.Histogram

    try:
        pb = Histogram.FromString(raw)
    except Exception as e:  # noqa: BLE001 -- protobuf's DecodeError
        raise ValueError(f"malformed histogram: {e}") from None
    return pb.timestamp, from_proto(pb)


def from_proto(pb) -> Hist:
    is_float = pb.WhichOneof("count") == "count_float"
    ps = tuple((s.offset, s.length) for s in pb.positive_spans)
    ns = tuple((s.offset, s.length) for s in pb.negative_spans)
    if is_float:
        h = Hist(True, pb.schema, pb.zero_threshold, pb.count_float, pb.zero_count_float, pb.sum,
                 ps, list(pb.positive_counts), ns, list(pb.negative_counts), int(pb.reset_hint),
                 tuple(pb.custom_values))
    else:
        h = Hist(False, pb.schema, pb.zero_threshold, pb.count_int, pb.zero_count_int, pb.sum,
                 ps, list(pb.positive_deltas), ns, list(pb.negative_deltas), int(pb.reset_hint),
                 tuple(pb.custom_values))
    _check(h)
    return h


def _check(h: Hist) -> None:
    """Refuse what Prometheus's validation refuses before it can poison a chunk."""
    if h.is_stale:
        return
    if not (-4 <= h.schema <= 8 or h.schema == CUSTOM_BUCKETS_SCHEMA):
        raise ValueError(f"histogram has unsupported schema {h.schema}")
    for spans, buckets in ((h.pspans, h.pbuckets), (h.nspans, h.nbuckets)):
        if sum(n for _, n in spans) != len(buckets):
            raise ValueError("histogram spans do not match the number of buckets")
    if h.schema == CUSTOM_BUCKETS_SCHEMA and (h.nspans or h.zc or h.zt):
        raise ValueError("custom-bucket histogram with negative or zero buckets")


def to_proto(t: int, h: Hist):
    """The ``prometheus_copy.Histogram`` message (same wire format as prometheus.Histogram)."""
    from storeapi.prompb_pb2 import BucketSpan, Histogram

    kw: dict = dict(sum=h.sum, schema=h.schema, zero_threshold=h.zt, timestamp=t,
                    reset_hint=h.hint, custom_values=list(h.cv),
                    positive_spans=[BucketSpan(offset=o, length=n) for o, n in h.pspans],
                    negative_spans=[BucketSpan(offset=o, length=n) for o, n in h.nspans])
    if h.is_float:
        kw.update(count_float=h.count, zero_count_float=h.zc,
                  positive_counts=h.pbuckets, negative_counts=h.nbuckets)
    else:
        kw.update(count_int=h.count, zero_count_int=h.zc,
                  positive_deltas=h.pbuckets, negative_deltas=h.nbuckets)
    return Histogram(**kw)


def to_proto_bytes(t: int, h: Hist) -> bytes:
    return to_proto(t, h).SerializeToString()


# ------------------------------------------------------------------ bit streams


class _BitWriter:
    """MSB-first bit stream like Prometheus's bstream (last byte zero-padded)."""

    __slots__ = ("buf", "acc", "n")

    def __init__(self, prefix: bytes = b"") -> None:
        self.buf = bytearray(prefix)
        self.acc = 0
        self.n = 0

    def bits(self, v: int, n: int) -> None:
        self.acc = (self.acc << n) | (v & ((1 << n) - 1))
        self.n += n
        if self.n >= 64:
            rem = self.n & 7
            self.buf += (self.acc >> rem).to_bytes(self.n >> 3, "big")
            self.acc &= (1 << rem) - 1
            self.n = rem

    def getvalue(self) -> bytes:
        out = bytes(self.buf)
        if self.n:
            nb = (self.n + 7) >> 3
            out += (self.acc << (nb * 8 - self.n)).to_bytes(nb, "big")
        return out


class _BitReader:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, start_byte: int) -> None:
        self.data = data
        self.pos = start_byte * 8
        self.end = len(data) * 8

    def bits(self, n: int) -> int:
        if self.pos + n > self.end:
            raise ValueError("histogram chunk: truncated bit stream")
        i = self.pos >> 3
        off = self.pos & 7
        nb = (off + n + 7) >> 3
        x = int.from_bytes(self.data[i:i + nb], "big")
        self.pos += n
        return (x >> (nb * 8 - off - n)) & ((1 << n) - 1)

    def bit(self) -> int:
        return self.bits(1)


# Varbit classes: (payload bits, prefix value, prefix bits). Prometheus tsdb/chunkenc/varbit.go.
_VARBIT = ((3, 0b10, 2), (6, 0b110, 3), (9, 0b1110, 4), (12, 0b11110, 5), (18, 0b111110, 6),
           (25, 0b1111110, 7), (56, 0b11111110, 8))
_VARBIT_SIZE = {0b10: 3, 0b110: 6, 0b1110: 9, 0b11110: 12, 0b111110: 18, 0b1111110: 25,
                0b11111110: 56}


def _put_varbit_int(w: _BitWriter, v: int) -> None:
    if v == 0:
        w.bits(0, 1)
        return
    for nb, pre, pb in _VARBIT:
        if -((1 << (nb - 1)) - 1) <= v <= (1 << (nb - 1)):
            w.bits(pre, pb)
            w.bits(v & _U64, nb)
            return
    w.bits(0b11111111, 8)
    w.bits(v & _U64, 64)


def _put_varbit_uint(w: _BitWriter, v: int) -> None:
    if v == 0:
        w.bits(0, 1)
        return
    for nb, pre, pb in _VARBIT:
        if v < (1 << nb):
            w.bits(pre, pb)
            w.bits(v, nb)
            return
    w.bits(0b11111111, 8)
    w.bits(v & _U64, 64)


def _read_prefix(r: _BitReader) -> int:
    d = 0
    for _ in range(8):
        b = r.bit()
        d = (d << 1) | b
        if not b:
            break
    return d


def _read_varbit_int(r: _BitReader) -> int:
    d = _read_prefix(r)
    if d == 0:
        return 0
    if d == 0xFF:
        v = r.bits(64)
        return v - (1 << 64) if v >> 63 else v
    sz = _VARBIT_SIZE.get(d)
    if sz is None:
        raise ValueError(f"histogram chunk: invalid varbit pattern {d:b}")
    v = r.bits(sz)
    return v - (1 << sz) if v > (1 << (sz - 1)) else v


def _read_varbit_uint(r: _BitReader) -> int:
    d = _read_prefix(r)
    if d == 0:
        return 0
    if d == 0xFF:
        return r.bits(64)
    sz = _VARBIT_SIZE.get(d)
    if sz is None:
        raise ValueError(f"histogram chunk: invalid varbit pattern {d:b}")
    return r.bits(sz)


def _fbits(f: float) -> int:
    return int.from_bytes(_F64.pack(f), "little")


def _bitsf(b: int) -> float:
    return _F64.unpack(b.to_bytes(8, "little"))[0]


class _Xor:
    """Gorilla XOR state of one float field (Prometheus xorWrite/xorRead)."""

    __slots__ = ("v", "leading", "trailing")

    def __init__(self, v: int = 0) -> None:
        self.v = v  # raw bits
        self.leading = 0xFF
        self.trailing = 0

    def write(self, w: _BitWriter, new: int) -> None:
        delta = new ^ self.v
        self.v = new
        if delta == 0:
            w.bits(0, 1)
            return
        w.bits(1, 1)
        lead = min(64 - delta.bit_length(), 31)
        trail = (delta & -delta).bit_length() - 1
        if self.leading != 0xFF and lead >= self.leading and trail >= self.trailing:
            w.bits(0, 1)
            w.bits(delta >> self.trailing, 64 - self.leading - self.trailing)
            return
        self.leading, self.trailing = lead, trail
        w.bits(1, 1)
        w.bits(lead, 5)
        sig = 64 - lead - trail
        w.bits(sig & 63, 6)
        w.bits(delta >> trail, sig)

    def read(self, r: _BitReader) -> int:
        if not r.bit():
            return self.v
        if r.bit():
            self.leading = r.bits(5)
            sig = r.bits(6) or 64
            self.trailing = 64 - self.leading - sig
        sig = 64 - self.leading - self.trailing
        self.v ^= r.bits(sig) << self.trailing
        return self.v


# ------------------------------------------------------------------ chunk layout


def _put_zero_threshold(w: _BitWriter, zt: float) -> None:
    if zt == 0:
        w.bits(0, 8)
        return
    frac, exp = math.frexp(zt)
    if frac != 0.5 or exp < -242 or exp > 11:
        w.bits(255, 8)
        w.bits(_fbits(zt), 64)
        return
    w.bits(exp + 243, 8)


def _read_zero_threshold(r: _BitReader) -> float:
    b = r.bits(8)
    if b == 0:
        return 0.0
    if b == 255:
        return _bitsf(r.bits(64))
    return math.ldexp(0.5, b - 243)


def _put_custom_bound(w: _BitWriter, f: float) -> None:
    tf = f * 1000
    whole = f >= 0 and float(round(tf)) / 1000 == f
    if tf < 0 or tf > 33554430 or not whole:
        w.bits(0, 1)
        w.bits(_fbits(f), 64)
        return
    _put_varbit_uint(w, int(round(tf)) + 1)


def _read_custom_bound(r: _BitReader) -> float:
    b = _read_varbit_uint(r)
    if b == 0:
        return _bitsf(r.bits(64))
    return (b - 1) / 1000


def _put_layout(w: _BitWriter, h: Hist) -> None:
    _put_zero_threshold(w, h.zt)
    _put_varbit_int(w, h.schema)
    for spans in (h.pspans, h.nspans):
        _put_varbit_uint(w, len(spans))
        for off, n in spans:
            _put_varbit_uint(w, n)
            _put_varbit_int(w, off)
    if h.schema == CUSTOM_BUCKETS_SCHEMA:
        _put_varbit_uint(w, len(h.cv))
        for b in h.cv:
            _put_custom_bound(w, b)


def _read_layout(r: _BitReader) -> tuple[float, int, tuple, tuple, tuple]:
    zt = _read_zero_threshold(r)
    schema = _read_varbit_int(r)
    spans_pair = []
    for _ in range(2):
        spans = []
        for _ in range(_read_varbit_uint(r)):
            n = _read_varbit_uint(r)
            spans.append((_read_varbit_int(r), n))
        spans_pair.append(tuple(spans))
    cv: tuple = ()
    if schema == CUSTOM_BUCKETS_SCHEMA:
        cv = tuple(_read_custom_bound(r) for _ in range(_read_varbit_uint(r)))
    return zt, schema, spans_pair[0], spans_pair[1], cv


def _nbuckets(spans: tuple) -> int:
    return sum(n for _, n in spans)


# ------------------------------------------------------------------ chunk encoding


def encode_chunk(samples: Sequence[tuple[int, Hist]], header: int = HEADER_UNKNOWN) -> EncodedChunk:
    """One histogram chunk of samples sharing one layout (the first sample's); integer and
    float histograms give encodings 2 and 3. A stale marker carries no buckets."""
    if not samples:
        raise ValueError("empty histogram chunk")
    if len(samples) > 0xFFFF:
        raise ValueError("too many samples for one chunk")
    first = samples[0][1]
    is_float = first.is_float
    w = _BitWriter(len(samples).to_bytes(2, "big") + bytes((header,)))
    lay = Hist(is_float=is_float) if first.is_stale else first
    _put_layout(w, lay)
    npb, nnb = _nbuckets(lay.pspans), _nbuckets(lay.nspans)
    if is_float:
        _encode_float(w, samples, npb, nnb)
    else:
        _encode_int(w, samples, npb, nnb)
    return EncodedChunk(w.getvalue(), ENCODING_FLOAT_HISTOGRAM if is_float else ENCODING_HISTOGRAM)


def _encode_int(w: _BitWriter, samples, npb: int, nnb: int) -> None:
    t0 = cnt = zc = tdelta = cdelta = zdelta = 0
    pb, nb = [0] * npb, [0] * nnb
    pbd, nbd = [0] * npb, [0] * nnb
    sumx = _Xor()
    for i, (t, h) in enumerate(samples):
        if h.is_float:
            raise ValueError("float histogram in an integer histogram chunk")
        stale = h.is_stale
        hc, hz = (0, 0) if stale else (int(h.count), int(h.zc))
        hp, hn = ([], []) if stale else (h.pbuckets, h.nbuckets)
        if not stale and (len(hp) != npb or len(hn) != nnb):
            raise ValueError("histogram layout differs within a chunk")
        if i == 0:
            _put_varbit_int(w, t)
            _put_varbit_uint(w, hc)
            _put_varbit_uint(w, hz)
            sb = _fbits(h.sum)
            w.bits(sb, 64)
            sumx.v = sb
            for b in hp:
                _put_varbit_int(w, b)
            for b in hn:
                _put_varbit_int(w, b)
            td = cd = zd = 0
        else:
            td, cd, zd = t - t0, hc - cnt, hz - zc
            cdod, zdod = (0, 0) if stale else (cd - cdelta, zd - zdelta)
            _put_varbit_int(w, td - tdelta)
            _put_varbit_int(w, cdod)
            _put_varbit_int(w, zdod)
            sumx.write(w, _fbits(h.sum))
            for cur, prev, pd in ((hp, pb, pbd), (hn, nb, nbd)):
                for j, b in enumerate(cur):
                    d = b - prev[j]
                    _put_varbit_int(w, d - pd[j])
                    pd[j] = d
        t0, cnt, zc, tdelta, cdelta, zdelta = t, hc, hz, td, cd, zd
        pb[:len(hp)] = hp
        nb[:len(hn)] = hn


def _encode_float(w: _BitWriter, samples, npb: int, nnb: int) -> None:
    t0 = tdelta = 0
    cx, zx, sx = _Xor(), _Xor(), _Xor()
    px = [_Xor() for _ in range(npb)]
    nx = [_Xor() for _ in range(nnb)]
    for i, (t, h) in enumerate(samples):
        if not h.is_float:
            raise ValueError("integer histogram in a float histogram chunk")
        stale = h.is_stale
        hp, hn = ([], []) if stale else (h.pbuckets, h.nbuckets)
        hc, hz = (0.0, 0.0) if stale else (float(h.count), float(h.zc))
        if not stale and (len(hp) != npb or len(hn) != nnb):
            raise ValueError("histogram layout differs within a chunk")
        if i == 0:
            _put_varbit_int(w, t)
            for x, v in ((cx, hc), (zx, hz), (sx, h.sum)):
                x.v = _fbits(v)
                w.bits(x.v, 64)
            for xs, vs in ((px, hp), (nx, hn)):
                for x, v in zip(xs, vs):
                    x.v = _fbits(float(v))
                    w.bits(x.v, 64)
            td = 0
        else:
            td = t - t0
            _put_varbit_int(w, td - tdelta)
            cx.write(w, _fbits(hc))
            zx.write(w, _fbits(hz))
            sx.write(w, _fbits(h.sum))
            for xs, vs in ((px, hp), (nx, hn)):
                for x, v in zip(xs, vs):
                    x.write(w, _fbits(float(v)))
        t0, tdelta = t, td


def chunk_header(data: bytes) -> int:
    return data[2] & 0xC0 if len(data) >= 3 else HEADER_UNKNOWN


def chunk_num_samples(data: bytes) -> int:
    return int.from_bytes(data[:2], "big") if len(data) >= 2 else 0


def decode_chunk(data: bytes, encoding: int | None = None) -> list[tuple[int, Hist]]:
    """All samples of a histogram chunk; ``hint`` follows Prometheus's chunk iterators (gauge
    chunks say gauge, the first sample says what the header knows, later ones not-reset)."""
    enc = chunk_encoding(data) if encoding is None else encoding
    if enc not in (ENCODING_HISTOGRAM, ENCODING_FLOAT_HISTOGRAM):
        raise ValueError(f"not a histogram chunk encoding: {enc}")
    data = bytes(data)
    if len(data) < 3:
        raise ValueError("histogram chunk shorter than its header")
    n = chunk_num_samples(data)
    hdr = chunk_header(data)
    if n == 0:
        return []
    r = _BitReader(data, 3)
    zt, schema, ps, ns, cv = _read_layout(r)
    npb, nnb = _nbuckets(ps), _nbuckets(ns)
    is_float = enc == ENCODING_FLOAT_HISTOGRAM
    out = (_decode_float if is_float else _decode_int)(r, n, npb, nnb)
    res = []
    for i, (t, cnt, zc, sbits, pbs, nbs) in enumerate(out):
        if hdr == HEADER_GAUGE:
            hint = HINT_GAUGE
        elif i > 0:
            hint = HINT_NOT_RESET
        elif hdr == HEADER_RESET:
            hint = HINT_RESET
        else:
            hint = HINT_UNKNOWN
        s = _bitsf(sbits)
        if sbits == STALE_NAN_BITS:
            res.append((t, Hist(is_float=is_float, sum=s, hint=hint)))
        else:
            res.append((t, Hist(is_float, schema, zt, cnt, zc, s, ps, pbs, ns, nbs, hint, cv)))
    return res


def _decode_int(r: _BitReader, n: int, npb: int, nnb: int) -> list:
    out = []
    pb, nb = [0] * npb, [0] * nnb
    pbd, nbd = [0] * npb, [0] * nnb
    t = cnt = zc = tdelta = cdelta = zdelta = 0
    sumx = _Xor()
    for i in range(n):
        if i == 0:
            t = _read_varbit_int(r)
            cnt = _read_varbit_uint(r)
            zc = _read_varbit_uint(r)
            sumx.v = r.bits(64)
            for arr, k in ((pb, npb), (nb, nnb)):
                for j in range(k):
                    arr[j] = _read_varbit_int(r)
        else:
            tdelta += _read_varbit_int(r)
            t += tdelta
            cdelta += _read_varbit_int(r)
            cnt = (cnt + cdelta) & _U64
            zdelta += _read_varbit_int(r)
            zc = (zc + zdelta) & _U64
            sumx.read(r)
            if sumx.v != STALE_NAN_BITS:
                for arr, d, k in ((pb, pbd, npb), (nb, nbd, nnb)):
                    for j in range(k):
                        d[j] += _read_varbit_int(r)
                        arr[j] += d[j]
        out.append((t, cnt, zc, sumx.v, list(pb), list(nb)))
    return out


def _decode_float(r: _BitReader, n: int, npb: int, nnb: int) -> list:
    out = []
    t = tdelta = 0
    cx, zx, sx = _Xor(), _Xor(), _Xor()
    px = [_Xor() for _ in range(npb)]
    nx = [_Xor() for _ in range(nnb)]
    for i in range(n):
        if i == 0:
            t = _read_varbit_int(r)
            for x in (cx, zx, sx, *px, *nx):
                x.v = r.bits(64)
        else:
            tdelta += _read_varbit_int(r)
            t += tdelta
            for x in (cx, zx, sx):
                x.read(r)
            if sx.v != STALE_NAN_BITS:
                for x in (*px, *nx):
                    x.read(r)
        out.append((t, _bitsf(cx.v), _bitsf(zx.v), sx.v,
                    [_bitsf(x.v) for x in px], [_bitsf(x.v) for x in nx]))
    return out


# ------------------------------------------------------------------ cutting samples into chunks


def is_reset(cur: Hist, prev: Hist) -> bool:
    """Counter reset between two samples of the same layout (Prometheus appendable's rules)."""
    if cur.hint == HINT_RESET:
        return True
    if cur.count < prev.count or cur.zc < prev.zc:
        return True
    cp, cn = cur.abs_buckets()
    pp, pn = prev.abs_buckets()
    return any(a < b for a, b in zip(cp, pp)) or any(a < b for a, b in zip(cn, pn))


def cut_chunks(samples: Sequence[tuple[int, Hist]], prev: Hist | None = None,
               chunk_range_ms: int = 2 * 3600 * 1000,
               samples_per_chunk: int = MAX_CHUNK_SAMPLES,
               breaks: set[int] | frozenset[int] = frozenset()) -> list[tuple[int, int, EncodedChunk]]:
    """Cut one series' histogram samples (time order) into chunks as a Prometheus head would:
    a new chunk at every chunk-range boundary, after ``samples_per_chunk`` samples, on a layout
    or integer/float change, on a counter reset (header "reset"), between gauge and counter
    histograms, and after a stale marker. ``prev`` is the sample before ``samples`` (if any).
    ``breaks``: indexes of samples that follow float samples of the same series -- each starts
    a new chunk with nothing known about the sample before it."""
    out: list[tuple[int, int, EncodedChunk]] = []
    cur: list[tuple[int, Hist]] = []
    header = HEADER_UNKNOWN
    last = prev
    cur_start = None
    for i, (t, h) in enumerate(samples):
        gauge = h.hint == HINT_GAUGE
        cut = not cur
        reset = False
        if breaks and i in breaks:
            cut, last = True, None
        elif cur:
            ch = cur[-1][1]
            if (len(cur) >= samples_per_chunk or t // chunk_range_ms != cur_start // chunk_range_ms
                    or ch.is_stale or (not h.is_stale and h.layout() != cur[0][1].layout())
                    or h.is_float != cur[0][1].is_float or gauge != (header == HEADER_GAUGE)):
                cut = True
            elif not gauge and not h.is_stale and is_reset(h, ch):
                cut = reset = True
        if cut:
            if cur:
                out.append((cur[0][0], cur[-1][0], encode_chunk(cur, header)))
            cur = []
            cur_start = t
            if gauge:
                header = HEADER_GAUGE
            elif h.hint == HINT_RESET or reset:
                header = HEADER_RESET
            elif (last is not None and not last.is_stale and not h.is_stale
                  and last.layout() == h.layout() and last.hint != HINT_GAUGE
                  and is_reset(h, last)):
                header = HEADER_RESET
            else:
                # A chunk cut for size, time range or layout says "unknown", not "not a reset":
                # Prometheus 2.42 and 3.x write exactly that, and readers detect resets anyway.
                header = HEADER_UNKNOWN
        cur.append((t, h))
        last = h
    if cur:
        out.append((cur[0][0], cur[-1][0], encode_chunk(cur, header)))
    return out


# ------------------------------------------------------------------ engine values


def to_engine(h: Hist):
    """A querier.promql.nhist.H (float histogram, zero buckets dropped) for the engine."""
    from querier.promql.nhist import H

    pos, neg = {}, {}
    pa, na = h.abs_buckets()
    for spans, vals, dst in ((h.pspans, pa, pos), (h.nspans, na, neg)):
        idx = 0
        k = 0
        for si, (off, n) in enumerate(spans):
            idx += off if si == 0 else off
            for _ in range(n):
                v = vals[k]
                if v:
                    dst[idx] = float(v)
                idx += 1
                k += 1
    return H(schema=h.schema, zt=h.zt, zc=float(h.zc), count=float(h.count), sum=h.sum,
             pos=pos, neg=neg, cv=tuple(h.cv) if h.schema == CUSTOM_BUCKETS_SCHEMA else None,
             hint=h.hint)
