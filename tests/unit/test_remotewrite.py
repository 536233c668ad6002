"""Remote-write 1.0 decoding (C) and encoding (Python), checked against the real protobuf library."""
from __future__ import annotations

import random
import struct
from functools import lru_cache

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from receiver import _rwdecode
from receiver.remotewrite import (
    DecodedWrite,
    RemoteWriteError,
    decode,
    decode_body,
    encode_write_request,
    snappy_compress,
)
from receiver.tsdb.labels import STALE_NAN_BITS, encode_labels_key

STALE_NAN = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]

# ---------------------------------------------------------------- the real protobuf, built at test time

F = descriptor_pb2.FieldDescriptorProto


@lru_cache(maxsize=None)
def pb_classes(label_type: str, opaque: bool = False) -> dict[str, type]:
    """prometheus.WriteRequest & friends as dynamic protobuf classes, in a private pool.

    ``label_type`` is "string" (the real schema) or "bytes" (same wire format, but lets the
    library accept the invalid UTF-8 our decoder tolerates, for fuzz cross-checks). ``opaque``
    makes exemplars, histograms and metadata plain bytes: our decoder only counts those and
    does not look inside, so that variant models it exactly.
    """
    ltype = F.TYPE_STRING if label_type == "string" else F.TYPE_BYTES
    fd = descriptor_pb2.FileDescriptorProto(name=f"rw_{label_type}_{opaque}.proto", package="prometheus",
                                            syntax="proto3")
    sub = {"Exemplar": "Exemplar", "Histogram": "Histogram", "MetricMetadata": "MetricMetadata"}
    stype = F.TYPE_BYTES if opaque else F.TYPE_MESSAGE
    if opaque:
        sub = {k: None for k in sub}

    def msg(name: str, *fields: tuple[str, int, int, bool, str | None]) -> None:
        m = fd.message_type.add(name=name)
        for fname, num, ftype, repeated, type_name in fields:
            f = m.field.add(name=fname, number=num, type=ftype,
                            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = f".prometheus.{type_name}"

    msg("Sample", ("value", 1, F.TYPE_DOUBLE, False, None), ("timestamp", 2, F.TYPE_INT64, False, None))
    msg("Label", ("name", 1, ltype, False, None), ("value", 2, ltype, False, None))
    msg("Exemplar", ("labels", 1, F.TYPE_MESSAGE, True, "Label"), ("value", 2, F.TYPE_DOUBLE, False, None),
        ("timestamp", 3, F.TYPE_INT64, False, None))
    msg("Histogram", ("count_int", 1, F.TYPE_UINT64, False, None), ("sum", 3, F.TYPE_DOUBLE, False, None),
        ("schema", 4, F.TYPE_SINT32, False, None), ("timestamp", 15, F.TYPE_INT64, False, None))
    msg("TimeSeries", ("labels", 1, F.TYPE_MESSAGE, True, "Label"), ("samples", 2, F.TYPE_MESSAGE, True, "Sample"),
        ("exemplars", 3, stype, True, sub["Exemplar"]),
        ("histograms", 4, stype, True, sub["Histogram"]))
    msg("MetricMetadata", ("type", 1, F.TYPE_INT32, False, None),
        ("metric_family_name", 2, F.TYPE_STRING, False, None), ("help", 4, F.TYPE_STRING, False, None),
        ("unit", 5, F.TYPE_STRING, False, None))
    msg("WriteRequest", ("timeseries", 1, F.TYPE_MESSAGE, True, "TimeSeries"),
        ("metadata", 3, stype, True, sub["MetricMetadata"]))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{m.name}"))
            for m in fd.message_type}


def thanos_status(pairs: list[tuple[bytes, bytes]]) -> int:
    """Reference for labelpb.ValidateLabels, written straight from its description, then UTF-8."""
    if not pairs or not pairs[0][0] or not pairs[0][1]:
        return 1
    for (pn, _), (n, v) in zip(pairs, pairs[1:]):
        if not n or not v:
            return 1
        if n == pn:
            return 2
        if n < pn:
            return 3
    try:
        for n, v in pairs:
            n.decode("utf-8"), v.decode("utf-8")
    except UnicodeDecodeError:
        return 4  # then our own rule: Prometheus refuses labels that are not UTF-8
    return 0


def expected_from_pb(data: bytes, label_type: str = "bytes", opaque: bool = False) -> dict:
    """What our decoder must return, computed by parsing with the protobuf library."""
    req = pb_classes(label_type, opaque)["WriteRequest"].FromString(data)
    keys, status, series, ts, vals = [], [], [], [], []
    n_hist = n_ex = 0
    for i, s in enumerate(req.timeseries):
        pairs = [(lbl.name if isinstance(lbl.name, bytes) else lbl.name.encode(),
                  lbl.value if isinstance(lbl.value, bytes) else lbl.value.encode()) for lbl in s.labels]
        key = bytearray()
        for n, v in pairs:
            key += _uvarint(len(n)) + n + _uvarint(len(v)) + v
        keys.append(bytes(key))
        status.append(thanos_status(pairs))
        for smp in s.samples:
            series.append(i)
            ts.append(smp.timestamp)
            vals.append(struct.unpack("<Q", struct.pack("<d", smp.value))[0])
        n_hist += len(s.histograms)
        n_ex += len(s.exemplars)
    return dict(keys=keys, status=status, series=series, ts=ts, val_bits=vals, n_hist=n_hist, n_ex=n_ex)


def as_comparable(d: DecodedWrite) -> dict:
    return dict(keys=d.keys, status=d.series_status.tolist(), series=d.sample_series.tolist(),
                ts=d.ts.tolist(), val_bits=d.vals.view(np.uint64).tolist(), n_hist=d.n_histograms,
                n_ex=d.n_exemplars)


# ---------------------------------------------------------------- a tiny hand-rolled wire writer


def _uvarint(x: int) -> bytes:
    x &= (1 << 64) - 1
    out = bytearray()
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80)
        x >>= 7
    out.append(x)
    return bytes(out)


def tag(num: int, wt: int) -> bytes:
    return _uvarint(num << 3 | wt)


def ld(num: int, payload: bytes) -> bytes:
    return tag(num, 2) + _uvarint(len(payload)) + payload


def vint(num: int, x: int) -> bytes:
    return tag(num, 0) + _uvarint(x)


def f64(num: int, x: float) -> bytes:
    return tag(num, 1) + struct.pack("<d", x)


def f32(num: int, x: int) -> bytes:
    return tag(num, 5) + struct.pack("<I", x)


def label(n: bytes, v: bytes) -> bytes:
    return ld(1, n) + ld(2, v)


def sample(v: float, t: int) -> bytes:
    return f64(1, v) + vint(2, t)


UNKNOWNS = [vint(99, 123456789), f64(98, 1.5), ld(97, b"junk\x00\xff"), f32(96, 7), vint(2**29 - 1, 1),
            ld(15, ld(1, b"nested"))]


# ---------------------------------------------------------------- round trips


def random_series(rng: random.Random, n_series: int, max_samples: int) -> list:
    special = [float("nan"), STALE_NAN, float("inf"), float("-inf"), -0.0, 0.0, 5e-324, 1.7976931348623157e308]
    out = []
    for i in range(n_series):
        names = sorted(rng.sample(["__name__", "job", "instance", "le", "code", "zone", "ü", "path"],
                                  rng.randint(0, 6)))
        lbls = tuple((n, rng.choice(["", "x", "api-server", f"v{i}", "ü€𝄞", "a" * 200])) for n in names)
        k = rng.randint(0, max_samples)
        ts = [rng.choice([0, -1, 1, -(2**63), 2**63 - 1, rng.randint(-2**40, 2**45), 1_700_000_000_000 + j])
              for j in range(k)]
        vals = [rng.choice(special) if rng.random() < 0.3 else
                struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(k)]
        out.append((lbls, ts, vals))
    return out


def test_round_trip_many_series_and_special_values():
    rng = random.Random(1)
    series = random_series(rng, 400, 30)
    series.append(((("__name__", "stale"),), [1000, 2000], [STALE_NAN, float("nan")]))
    data = encode_write_request(series)
    d = decode(data)
    assert len(d.keys) == len(series)
    assert d.series_status.dtype == np.uint8 and d.sample_series.dtype == np.int32
    assert d.ts.dtype == np.int64 and d.vals.dtype == np.float64
    exp_series, exp_ts, exp_bits = [], [], []
    for i, (lbls, ts, vals) in enumerate(series):
        assert d.keys[i] == encode_labels_key(lbls)
        exp_series += [i] * len(ts)
        exp_ts += ts
        exp_bits += np.array(vals, dtype=np.float64).view(np.uint64).tolist()
    assert d.sample_series.tolist() == exp_series
    assert d.ts.tolist() == exp_ts
    assert d.vals.view(np.uint64).tolist() == exp_bits  # NaN payloads, -0.0, subnormals exact
    assert d.vals.view(np.uint64)[-2] == STALE_NAN_BITS
    assert (d.n_histograms, d.n_exemplars) == (0, 0)


def test_label_keys_for_every_short_length():
    # The key builder has separate copy paths for <4, 4-7, 8-16 and longer strings.
    series = [((("n" * k, "v" * (40 - k)),), [k], [float(k)]) for k in range(41)]
    series += [((("a" * 300, "b" * 70000),), [1], [1.0])]  # multi-byte uvarint lengths
    d = decode(encode_write_request(series))
    assert d.keys == [encode_labels_key(lbls) for lbls, _, _ in series]
    assert d.series_status.tolist() == [1] + [0] * 39 + [1, 0]


def test_decode_body_round_trip_through_snappy():
    series = [((("__name__", "up"), ("job", "node")), np.arange(100, dtype=np.int64) * 15000,
               np.linspace(0, 1, 100))]
    body = snappy_compress(encode_write_request(series))
    d = decode_body(body, "snappy", "application/x-protobuf")
    assert d.keys == [encode_labels_key(series[0][0])]
    assert np.array_equal(d.ts, series[0][1]) and np.array_equal(d.vals, series[0][2])
    assert d.n_samples == 100


def test_empty_request_and_empty_series():
    d = decode(b"")
    assert d.keys == [] and len(d.ts) == 0 and len(d.series_status) == 0
    d = decode(ld(1, b"") + ld(1, b""))
    assert d.keys == [b"", b""] and d.series_status.tolist() == [1, 1] and len(d.ts) == 0
    assert encode_write_request([]) == b""


def test_accepts_any_bytes_like():
    data = encode_write_request([((("a", "b"),), [1], [2.0])])
    for obj in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert decode(obj).ts.tolist() == [1]


def test_arrays_are_views_not_copies():
    d = decode(encode_write_request([((("a", "b"),), [1, 2], [2.0, 3.0])]))
    for arr in (d.series_status, d.sample_series, d.ts, d.vals):
        assert not arr.flags.owndata


def test_sample_defaults_and_missing_label_fields():
    # Sample with neither field, only ts, only value; Label with no value.
    ts_body = ld(1, label(b"__name__", b"m")) + ld(2, b"") + ld(2, vint(2, 5)) + ld(2, f64(1, 2.5))
    d = decode(ld(1, ts_body) + ld(1, ld(1, ld(1, b"job"))))
    assert d.ts.tolist() == [0, 5, 0] and d.vals.tolist() == [0.0, 0.0, 2.5]
    assert d.keys[1] == b"\x03job\x00" and d.series_status.tolist() == [0, 1]


# ---------------------------------------------------------------- validation statuses


@pytest.mark.parametrize("pairs,status", [
    ([("__name__", "up"), ("job", "a")], 0),
    ([("a", "1")], 0),
    ([], 1),
    ([("", "x")], 1),
    ([("a", "")], 1),
    ([("a", "1"), ("b", "")], 1),
    ([("a", "1"), ("", "2")], 1),
    ([("a", "1"), ("a", "2")], 2),
    ([("b", "1"), ("a", "2")], 3),
    ([("a", "1"), ("c", "1"), ("b", "1")], 3),
    # first failure wins, walking pairs in order:
    ([("b", "1"), ("a", "1"), ("a", "")], 3),
    ([("a", "1"), ("a", "1"), ("", "1")], 2),
    ([("b", "1"), ("a", "")], 1),
    ([("a", "1"), ("ab", "1"), ("b", "1")], 0),  # byte-wise order: "a" < "ab" < "b"
    ([("Z", "1"), ("a", "1")], 0),
    ([("é", "1"), ("z", "1")], 3),  # 0xC3 > 'z' byte-wise
])
def test_validation_status(pairs, status):
    data = encode_write_request([(tuple(pairs), [1], [1.0])])
    d = decode(data)
    assert d.series_status.tolist() == [status]
    assert d.keys == [encode_labels_key(tuple(pairs))]  # key keeps request order, even if invalid
    assert expected_from_pb(data)["status"] == [status]


# ---------------------------------------------------------------- protobuf rules


def test_unknown_fields_of_every_wire_type_are_skipped_at_every_level():
    def noisy(*parts: bytes) -> bytes:
        out = b"".join(UNKNOWNS)
        for p in parts:
            out += p + b"".join(UNKNOWNS)
        return out

    lbl = ld(1, noisy(ld(1, b"__name__"), ld(2, b"up")))
    smp = ld(2, noisy(f64(1, 3.0), vint(2, 77)))
    ex = ld(3, ld(1, label(b"trace_id", b"abc")) + f64(2, 1.0))
    hist = ld(4, vint(1, 3) + f64(3, 1.5) + vint(15, 9))
    ts = ld(1, noisy(lbl, smp, ex, hist, smp))
    meta = ld(3, vint(1, 1) + ld(2, b"up") + ld(4, b"help"))
    data = noisy(ts, meta, ld(2, b"reserved-field-2"), ts)
    d = decode(data)
    assert d.keys == [b"\x08__name__\x02up"] * 2
    assert d.ts.tolist() == [77] * 4 and d.vals.tolist() == [3.0] * 4
    assert d.sample_series.tolist() == [0, 0, 1, 1]
    assert (d.n_histograms, d.n_exemplars) == (2, 2)
    assert as_comparable(d) == expected_from_pb(data)


def test_field_order_shuffled_and_repeated_scalars():
    lbl_rev = ld(1, ld(2, b"up") + ld(1, b"__name__"))
    lbl_rep = ld(1, ld(1, b"ignored") + ld(2, b"ignored") + ld(2, b"b") + ld(1, b"job"))
    smp_rev = ld(2, vint(2, 10) + f64(1, 1.0))
    smp_rep = ld(2, vint(2, 1) + f64(1, 9.0) + vint(2, 20) + f64(1, 2.0))
    series = ld(1, smp_rev + lbl_rev + smp_rep + lbl_rep)
    data = ld(3, ld(2, b"meta")) + series
    d = decode(data)
    assert d.keys == [encode_labels_key((("__name__", "up"), ("job", "b")))]
    assert d.ts.tolist() == [10, 20] and d.vals.tolist() == [1.0, 2.0]
    assert as_comparable(d) == expected_from_pb(data)


def test_non_minimal_varints_are_accepted():
    # Lengths and tags padded with continuation bytes are legal protobuf.
    padded_len = b"\x83\x80\x80\x00"  # 3
    lbl = b"\x0a" + padded_len + b"job" + b"\x92\x00" + b"\x01" + b"x"
    data = ld(1, ld(1, lbl) + ld(2, f64(1, 1.0) + b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))
    d = decode(data)
    assert d.keys == [b"\x03job\x01x"] and d.ts.tolist() == [-1]
    assert as_comparable(d) == expected_from_pb(data)


@pytest.mark.parametrize("data,msg", [
    (b"\x0a", "truncated varint"),
    (b"\x0a\x80", "truncated varint"),
    (b"\x0a\x05\x0a\x03", "past the end"),
    (b"\x0a\x05abc", "past the end"),
    (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "longer than 10 bytes"),
    (b"\x0b", "group"),
    (b"\x0c", "group"),
    (b"\x0e", "wire type (6/7)"),
    (b"\x0f", "wire type (6/7)"),
    (b"\x02\x00", "invalid field number"),
    (b"\x08\x01", "wrong wire type"),  # timeseries as varint
    (b"\x1d\x00\x00\x00\x00", "wrong wire type"),  # metadata as fixed32
    (ld(1, vint(1, 1)), "wrong wire type"),  # labels as varint
    (ld(1, ld(1, vint(1, 1))), "wrong wire type"),  # label name as varint
    (ld(1, ld(2, vint(1, 1))), "wrong wire type"),  # sample value as varint
    (ld(1, ld(2, f64(2, 1.0))), "wrong wire type"),  # sample timestamp as fixed64
    (ld(1, ld(2, b"\x09\x00\x00")), "truncated fixed64"),
    (ld(1, ld(2, b"\x10")), "truncated varint"),
    (ld(1, b"\x2d\x00"), "truncated fixed32"),
    (ld(1, b"\x29\x00"), "truncated fixed64"),
    (ld(1, ld(1, b"\x0a\x09abc")), "past the end"),
    (ld(1, ld(1, b"\x13")), "group"),
    (ld(1, ld(2, b"\x0f")), "wire type (6/7)"),
    (ld(1, ld(4, b"\x0a\x09abc")) + b"", None),  # histogram bodies are not parsed: accepted
])
def test_malformed_input_raises_value_error(data, msg):
    if msg is None:
        assert decode(data).n_histograms == 1
        return
    with pytest.raises(ValueError, match="malformed remote-write protobuf") as ei:
        _rwdecode.decode(data)
    assert msg in str(ei.value)


def test_invalid_utf8_is_decoded_verbatim_and_flagged():
    data = ld(1, ld(1, label(b"\xff\xfe", b"\xc3")))
    d = decode(data)
    assert d.keys == [b"\x02\xff\xfe\x01\xc3"]
    assert d.series_status.tolist() == [4]


@pytest.mark.parametrize("value", [
    b"\xff", b"\xc3", b"a\xc3(", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80", b"\xf0\x8f\xbf\xbf", b"\xf8\x88\x80\x80\x80", b"abcdefgh\x80",
    "é".encode(), "€uro".encode(), "𝄞".encode(), "ascii-only-longer-than-8".encode(),
    b"\xef\xbf\xbf", b"\xf4\x8f\xbf\xbf", b"\xed\x9f\xbf",
    # 128+ bytes: the key's length prefix has its high bit set, so the whole-key ASCII shortcut
    # cannot decide and every name and value is checked one by one.
    b"x" * 200, b"x" * 200 + b"\xff", "é".encode() * 100, b"x" * 127 + b"\xc3",
])
def test_utf8_validation_agrees_with_python(value):
    """Status 4 exactly when Python (and Go's utf8.ValidString) refuse the bytes, in names too."""
    try:
        value.decode("utf-8")
        want = 0
    except UnicodeDecodeError:
        want = 4
    for pairs in ([(b"__name__", b"m"), (b"k", value)], [(b"__name__", value)], [(b"a" + value, b"v")]):
        data = ld(1, b"".join(ld(1, label(n, v)) for n, v in pairs))
        assert decode(data).series_status.tolist() == [want], (value, pairs)


def test_random_mutations_never_crash():
    """Fuzz: every mutation of a valid request either decodes or raises ValueError, and when
    it decodes, the protobuf library (bytes-typed labels) agrees exactly."""
    rng = random.Random(12345)
    series = random_series(rng, 6, 4)
    series.append(((("__name__", "x"),), [1, -5], [1.0, STALE_NAN]))
    base = bytearray(encode_write_request(series))
    base += ld(1, ld(3, ld(1, label(b"e", b"1"))) + ld(4, vint(1, 2)) + ld(1, label(b"a", b"b")))
    WR = pb_classes("bytes", opaque=True)["WriteRequest"]
    ok = 0
    for _ in range(4000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(6)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[pos % len(data)] ^= 1 << rng.randrange(8)
            elif op == 1 and data:
                data[pos % len(data)] = rng.randrange(256)
            elif op == 2:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            elif op == 3:
                del data[pos:pos + rng.randint(1, 8)]
            elif op == 4:
                data = data[:pos]
            else:
                data[pos:pos] = rng.choice([b"\x80" * 11, b"\xff", b"\x0b", b"\x0f", b"\x0a\xff\xff\xff\xff\x0f"])
        raw = bytes(data)
        try:
            got = decode(raw)
        except ValueError as e:
            assert "malformed remote-write protobuf" in str(e)
            continue
        ok += 1
        WR.FromString(raw)  # we are never more lenient than the reference parser
        assert as_comparable(got) == expected_from_pb(raw, opaque=True)
    assert ok > 100  # the fuzz exercised the success path too


def test_random_garbage_never_crashes():
    rng = random.Random(7)
    for _ in range(3000):
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        try:
            decode(raw)
        except ValueError:
            pass


# ---------------------------------------------------------------- cross-checks with google.protobuf


def test_decoder_agrees_with_protobuf_library():
    cls = pb_classes("string")
    req = cls["WriteRequest"]()
    rng = random.Random(3)
    for i in range(200):
        ts = req.timeseries.add()
        for n in sorted(rng.sample(["__name__", "a", "b", "job", "instance"], rng.randint(0, 5))):
            ts.labels.add(name=n, value=rng.choice(["", "v", f"s{i}", "ü"]))
        for j in range(rng.randint(0, 5)):
            ts.samples.add(value=rng.choice([0.0, -0.0, 1.5, float("nan"), STALE_NAN, -1e300]),
                           timestamp=rng.choice([0, -1, j, 2**63 - 1, -(2**63)]))
        if rng.random() < 0.2:
            ts.exemplars.add(value=1.0, timestamp=5).labels.add(name="trace_id", value="x")
        if rng.random() < 0.2:
            ts.histograms.add(count_int=3, sum=1.0, schema=-1, timestamp=7)
    req.metadata.add(type=1, metric_family_name="up", help="h")
    data = req.SerializeToString()
    d = decode(data)
    assert as_comparable(d) == expected_from_pb(data, "string")
    assert d.n_exemplars > 0 and d.n_histograms > 0


def test_encoder_output_is_canonical_protobuf():
    rng = random.Random(4)
    series = random_series(rng, 150, 12)
    data = encode_write_request(series)
    cls = pb_classes("string")
    parsed = cls["WriteRequest"].FromString(data)
    assert len(parsed.timeseries) == len(series)
    for s, (lbls, ts, vals) in zip(parsed.timeseries, series):
        assert tuple((lbl.name, lbl.value) for lbl in s.labels) == lbls
        assert [x.timestamp for x in s.samples] == ts
        got_bits = [struct.unpack("<Q", struct.pack("<d", x.value))[0] for x in s.samples]
        assert got_bits == np.array(vals, dtype=np.float64).view(np.uint64).tolist()
    # Byte-identical to the library's own serialisation of the same message.
    assert parsed.SerializeToString(deterministic=True) == data


def test_encoder_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="timestamps"):
        encode_write_request([((("a", "b"),), [1, 2], [1.0])])


# ---------------------------------------------------------------- HTTP-level handling


def _body() -> bytes:
    return snappy_compress(encode_write_request([((("a", "b"),), [1], [1.0])]))


@pytest.mark.parametrize("enc", [None, "", "snappy", "SNAPPY", " snappy "])
def test_content_encoding_snappy_or_missing_is_accepted(enc):
    assert decode_body(_body(), enc, "application/x-protobuf").ts.tolist() == [1]


@pytest.mark.parametrize("enc", ["gzip", "identity", "zstd", "snappy, gzip"])
def test_other_content_encodings_are_415(enc):
    with pytest.raises(RemoteWriteError, match="Content-Encoding") as ei:
        decode_body(_body(), enc, "application/x-protobuf")
    assert ei.value.status == 415


@pytest.mark.parametrize("ctype", [None, "", "application/x-protobuf", "Application/X-Protobuf",
                                   "application/x-protobuf; proto=prometheus.WriteRequest"])
def test_content_type_v1_or_missing_is_accepted(ctype):
    assert decode_body(_body(), "snappy", ctype).ts.tolist() == [1]


@pytest.mark.parametrize("ctype", ["application/json", "text/plain",
                                   "application/x-protobuf;proto=io.prometheus.write.v2.Request"])
def test_other_content_types_are_415(ctype):
    with pytest.raises(RemoteWriteError) as ei:
        decode_body(_body(), "snappy", ctype)
    assert ei.value.status == 415


def test_snappy_errors_are_400():
    good = _body()
    bad_inputs = [
        b"",  # no length header
        b"\xff\xff",  # truncated length header
        good[:-3],  # truncated block
        good[:1] + b"\xff" * 10,  # garbage literal/copy tags
        _uvarint(len(good) + 5) + good[1:],  # header disagrees with content
    ]
    for body in bad_inputs:
        with pytest.raises(RemoteWriteError) as ei:
            decode_body(body, "snappy", None)
        assert ei.value.status == 400 and str(ei.value)
        assert isinstance(ei.value, ValueError)


def test_bad_protobuf_inside_good_snappy_is_400():
    with pytest.raises(RemoteWriteError, match="malformed remote-write protobuf") as ei:
        decode_body(snappy_compress(b"\x0a\x05abc"), "snappy", None)
    assert ei.value.status == 400


def test_decompression_bomb_is_refused_before_decompressing():
    raw = encode_write_request([((("a", "b" * 1000),), np.arange(5000), np.zeros(5000))])
    body = snappy_compress(raw)
    assert decode_body(body, "snappy", None, max_decompressed_bytes=len(raw)).n_samples == 5000
    with pytest.raises(RemoteWriteError, match="limit") as ei:
        decode_body(body, "snappy", None, max_decompressed_bytes=len(raw) - 1)
    assert ei.value.status == 413  # too large, like an oversized body
    # A header claiming 4 GiB with no data behind it is corrupt, refused from the header alone.
    with pytest.raises(RemoteWriteError, match="corrupt") as ei:
        decode_body(_uvarint(1 << 32) + b"\x00", "snappy", None)
    assert ei.value.status == 400
