"""Hypothesis strategies for remote-write bodies, structure-aware.

A body starts as a valid ``prometheus.WriteRequest`` (samples, histograms, exemplars and
metadata serialised with ``storeapi.prompb_pb2``; labels written on the wire by hand so that
they can hold any bytes) and is then mutated where a hostile or buggy client would: odd, empty,
huge, duplicate or unsorted labels, extreme timestamps, NaN/Inf values, histograms with odd
fields, unknown fields, wrong wire types, overlong or truncated varints, cut or extended
messages, flipped bytes. Some bodies are raw random bytes. Each is snappy-compressed or not.
"""
from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass

import cramjam
from hypothesis import strategies as st

from common.varint import uvarint as varint
from storeapi import prompb_pb2

NOW_MS = 1_700_000_000_000
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1

# True makes the write-path fuzz run avoid the write-core issues of issue 10 (invalid UTF-8
# label values, timestamps far from now, one series switching between float and native
# histogram samples) while they are open; they are fixed and kept in test_known_crashers.py.
EXCLUDE_KNOWN_WRITE_CORE_ISSUES = False


@dataclass(frozen=True)
class Body:
    """One HTTP body and how it was made (``mutated``: the protobuf may be invalid)."""

    data: bytes
    snappy: bool
    mutated: bool
    n_samples: int  # float samples in the message before mutation

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        return (f"Body(data={self.data!r}, snappy={self.snappy}, mutated={self.mutated}, "
                f"n_samples={self.n_samples})")


# -- protobuf wire ------------------------------------------------------------------------------

def tag(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag(field, 2) + varint(len(payload)) + payload


# -- pieces -------------------------------------------------------------------------------------

_NAMES = [b"__name__", b"job", b"instance", b"le", b"a", b"b", b"z", b"__meta", b"_"]
label_bytes = st.one_of(
    st.sampled_from(_NAMES),
    st.binary(max_size=12),                                    # any bytes, invalid UTF-8 too
    st.text(max_size=12).map(lambda s: s.encode()),            # valid UTF-8, any code points
    st.just(b""),
    st.integers(256, 40_000).map(lambda n: b"v" * n),          # huge
    st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"a\x00b", b"\xf4\x90\x80\x80"]),
)
timestamps = st.one_of(
    st.integers(NOW_MS - 3_600_000, NOW_MS + 3_600_000),
    st.sampled_from([0, -1, 1, I64_MIN, I64_MAX, I64_MIN + 1, I64_MAX - 1,
                     NOW_MS * 1000, NOW_MS // 1000, NOW_MS + 86_400_000 * 3650]),
    st.integers(I64_MIN, I64_MAX),
)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0,
                     struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]]),  # stale NaN
)


def _utf8(b: bytes) -> bytes:
    return b.decode("utf-8", "replace").encode()


@st.composite
def label_pairs(draw, safe: bool = False, hist: bool = False) -> list[tuple[bytes, bytes]]:
    """``safe``: valid UTF-8 only, and histogram series (``hist``) named apart from float ones."""
    names = [b"h", b"h_seconds"] if safe and hist else [b"m", b"up", b"x_total"]
    pairs = [(b"__name__", draw(st.sampled_from(names)))]
    pairs += draw(st.lists(st.tuples(label_bytes, label_bytes), max_size=4))
    if safe:
        pairs = [(_utf8(n), _utf8(v)) for n, v in pairs if n != b"__name__" or v in names]
    if draw(st.integers(0, 4)) != 0:
        pairs.sort()
    if pairs and draw(st.integers(0, 9)) == 0:
        pairs.append(pairs[0])  # duplicate
    if draw(st.integers(0, 19)) == 0:
        pairs = []
    return pairs


def _label(name: bytes, value: bytes) -> bytes:
    return ld(1, name) + ld(2, value)  # thanos.Label {name=1, value=2}


safe_timestamps = st.integers(NOW_MS - 600_000, NOW_MS + 600_000)


@st.composite
def histogram(draw, safe: bool = False) -> bytes:
    h = prompb_pb2.Histogram()
    if draw(st.booleans()):
        h.count_int = draw(st.integers(0, (1 << 64) - 1))
        h.zero_count_int = draw(st.integers(0, (1 << 64) - 1))
    else:
        h.count_float = draw(values)
        h.zero_count_float = draw(values)
    h.sum = draw(values)
    h.schema = draw(st.one_of(st.integers(-4, 8), st.integers(-(1 << 31), (1 << 31) - 1),
                              st.sampled_from([-53, 9, 52, 127])))
    h.zero_threshold = draw(values)
    for spans in (h.negative_spans, h.positive_spans):
        for off, length in draw(st.lists(st.tuples(st.integers(-(1 << 31), (1 << 31) - 1),
                                                    st.integers(0, 40)), max_size=3)):
            s = spans.add()
            s.offset, s.length = off, length
    int_buckets = draw(st.booleans())
    if int_buckets:
        h.negative_deltas.extend(draw(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=6)))
        h.positive_deltas.extend(draw(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=6)))
    else:
        h.negative_counts.extend(draw(st.lists(values, max_size=6)))
        h.positive_counts.extend(draw(st.lists(values, max_size=6)))
    h.reset_hint = draw(st.integers(0, 3))
    h.timestamp = draw(safe_timestamps if safe else timestamps)
    if draw(st.integers(0, 4)) == 0:
        h.custom_values.extend(draw(st.lists(values, max_size=4)))
    return h.SerializeToString()


@st.composite
def time_series(draw, safe: bool = False) -> tuple[bytes, int]:
    """One TimeSeries's bytes and its number of float samples (``safe``: see label_pairs)."""
    n_hists = draw(st.integers(0, 2))
    hist_only = safe and n_hists > 0
    parts = [ld(1, _label(n, v)) for n, v in draw(label_pairs(safe, hist_only))]
    samples = [] if hist_only else draw(st.lists(
        st.tuples(safe_timestamps if safe else timestamps, values), max_size=5))
    if draw(st.booleans()):
        samples.sort()
    for t, v in samples:
        parts.append(ld(2, prompb_pb2.Sample(value=v, timestamp=t).SerializeToString()))
    for _ in range(draw(st.integers(0, 2))):
        ex = b"".join(ld(1, _label(n, v)) for n, v in draw(label_pairs())[:3])
        ex += tag(2, 1) + struct.pack("<d", draw(values)) + tag(3, 0) + varint(draw(timestamps))
        parts.append(ld(3, ex))
    for _ in range(n_hists):
        parts.append(ld(4, draw(histogram(safe))))
    if draw(st.booleans()):
        parts = draw(st.permutations(parts))
    return b"".join(parts), len(samples)


@st.composite
def write_request(draw, safe: bool = False) -> tuple[bytes, int]:
    out, n = [], 0
    for ts_bytes, k in draw(st.lists(time_series(safe), max_size=4)):
        out.append(ld(1, ts_bytes))
        n += k
    if draw(st.integers(0, 4)) == 0:
        md = prompb_pb2.MetricMetadata(type=draw(st.integers(0, 7)), metric_family_name="m",
                                       help=draw(st.text(max_size=20)), unit="s")
        out.append(ld(3, md.SerializeToString()))
    return b"".join(out), n


# -- mutations ------------------------------------------------------------------------------------

@st.composite
def _mutate(draw, msg: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "extend", "flip", "unknown_field", "wrong_wire",
                                 "bad_varint", "bad_length", "nest_garbage"]))
    pos = draw(st.integers(0, len(msg))) if msg else 0
    if kind == "truncate":
        return msg[:pos]
    if kind == "extend":
        return msg + draw(st.binary(min_size=1, max_size=32))
    if kind == "flip" and msg:
        i = min(pos, len(msg) - 1)
        return msg[:i] + bytes([msg[i] ^ draw(st.integers(1, 255))]) + msg[i + 1:]
    if kind == "unknown_field":
        field = draw(st.sampled_from([2, 4, 5, 15, 16, 2047, (1 << 29) - 1]))
        wire = draw(st.integers(0, 7))
        payload = {0: varint(draw(st.integers(0, (1 << 64) - 1))), 1: bytes(8), 2: varint(3) + b"abc",
                   5: bytes(4)}.get(wire, b"")
        return msg[:0] + tag(field, wire) + payload + msg
    if kind == "wrong_wire":
        # Field 1 (timeseries) with another wire type, then the rest.
        return tag(1, draw(st.sampled_from([0, 1, 3, 4, 5, 6, 7]))) + msg
    if kind == "bad_varint":
        return msg + tag(1, 2) + draw(st.sampled_from([b"\x80" * 10 + b"\x01", b"\xff" * 11, b"\x80",
                                                      b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"]))
    if kind == "bad_length":
        return msg + tag(1, 2) + varint(draw(st.sampled_from([1 << 31, (1 << 64) - 1, 1 << 62, 100])))
    # A TimeSeries whose label is itself garbage.
    return msg + ld(1, ld(1, draw(st.binary(max_size=24))))


@st.composite
def bodies(draw, safe: bool = False) -> Body:
    """A remote-write HTTP body: usually snappy-compressed protobuf, sometimes mutated.
    ``safe`` avoids the known write-core issues (see EXCLUDE_KNOWN_WRITE_CORE_ISSUES); the
    mutations still may produce anything."""
    if draw(st.integers(0, 19)) == 0:
        return Body(draw(st.binary(max_size=256)), snappy=draw(st.booleans()), mutated=True, n_samples=0)
    msg, n = draw(write_request(safe))
    mutated = draw(st.integers(0, 3)) == 0
    if mutated:
        for _ in range(draw(st.integers(1, 3))):
            msg = draw(_mutate(msg))
    snappy = draw(st.integers(0, 19)) != 0
    data = bytes(cramjam.snappy.compress_raw(msg)) if snappy else msg
    return Body(data, snappy=snappy, mutated=mutated, n_samples=n)


def byte_mutants(body: Body, k: int, rng: random.Random) -> list[Body]:
    """``k`` cheap byte-level variants of one generated body (flipped, truncated, inserted,
    duplicated or varint-breaking bytes in the uncompressed protobuf, recompressed as the original
    was), so that a long run is not bound by hypothesis's generation speed."""
    plain, recompress = body.data, False
    if body.snappy:
        try:
            plain, recompress = bytes(cramjam.snappy.decompress_raw(body.data)), True
        except Exception:  # random bytes sent as snappy: mutate them as they are
            pass
    out = []
    for _ in range(k):
        b = bytearray(plain)
        kind = rng.randrange(5)
        pos = rng.randrange(len(b) + 1)
        if kind == 0 and b:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del b[pos:]
        elif kind == 2:
            b[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif kind == 3 and b:
            end = rng.randint(pos, len(b))
            b[pos:pos] = b[pos:end]
        elif b:
            b[min(pos, len(b) - 1)] = rng.choice((0x80, 0xFF, 0x00, 0x7F))
        data = bytes(cramjam.snappy.compress_raw(bytes(b))) if recompress else bytes(b)
        out.append(Body(data, snappy=body.snappy, mutated=True, n_samples=body.n_samples))
    return out


def hits_known_write_core_issue(body: Body) -> bool:
    """Whether a (possibly mutated) body contains one of the known write-core issues: a label
    that is not UTF-8, a sample or histogram far from now, or a float series named like a
    histogram one (or the reverse). Decided by decoding it, as the receiver will."""
    from receiver.remotewrite import RemoteWriteError, decode_body
    from receiver.tsdb.labels import decode_labels_key
    try:
        d = decode_body(body.data, "snappy" if body.snappy else None, "application/x-protobuf")
    except RemoteWriteError:
        return False
    lo, hi = NOW_MS - 600_000, NOW_MS + 600_000
    for ts in (d.ts, d.hist_ts):
        if len(ts) and (int(ts.min()) < lo or int(ts.max()) > hi):
            return True
    try:
        names = [dict(decode_labels_key(k)).get("__name__", "") for k in d.keys]
    except (UnicodeDecodeError, ValueError):
        return True
    hist_names = {"h", "h_seconds"}
    if any(names[i] in hist_names for i in set(d.sample_series.tolist())):
        return True
    return any(names[i] not in hist_names for i in set(d.hist_series.tolist()))
