"""Native histograms: chunk codec, remote-write decode, head, WAL, blocks, fan-out, JSON."""
from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from querier.fanout import merge_raw_series
from querier.histjson import histogram_point, matrix_entry
from querier.promql import nhist
from receiver.multitsdb import TenantTSDB, TSDBOptions
from receiver.remotewrite import decode, encode_histogram_write_request, encode_write_request
from receiver.tsdb.block import BlockReader
from receiver.tsdb.head import HeadOptions
from receiver.tsdb.histogram import (ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, HEADER_GAUGE,
                                     HEADER_RESET, HEADER_UNKNOWN, HINT_GAUGE,
                                     HINT_NOT_RESET, HINT_RESET, HINT_UNKNOWN, EncodedChunk, Hist,
                                     _BitReader, _BitWriter, _put_varbit_int, _put_varbit_uint,
                                     _read_varbit_int, _read_varbit_uint, chunk_header,
                                     cut_chunks, decode_chunk, encode_chunk, from_proto_bytes,
                                     stale_hist, to_engine, to_proto_bytes)
from receiver.tsdb.labels import Matcher, MatchType
from receiver.wal import WAL, HistogramsRecord, WALConfig
from storeapi.client import RawSeries


def _deltas(xs):
    return [x - (xs[k - 1] if k else 0) for k, x in enumerate(xs)]


def ih(i: int, hint: int = 0) -> Hist:
    p = [1 + i, 2 * i, 3 + i, i // 2]
    n = [i, 1]
    zc = i // 3
    return Hist(False, 0, 2.0 ** -128, sum(p) + sum(n) + zc, zc, 1.25 * i + 0.5,
                ((-1, 2), (1, 2)), _deltas(p), ((0, 2),), _deltas(n), hint)


def fh(i: int) -> Hist:
    p = [0.5 * i, 1.5 * i + 1, 0.25]
    return Hist(True, 1, 0.001, sum(p) + 0.5, 0.5, 3.5 * i, ((0, 3),), p, (), [])


def bits_of(data: bytes, start: int = 3) -> str:
    return "".join(f"{b:08b}" for b in data[start:])


# ------------------------------------------------------------------ bit-level vectors


@pytest.mark.parametrize("v,bits", [
    (0, "0"), (1, "10" "001"), (-3, "10" "101"), (4, "10" "100"), (5, "110" "000101"),
    (-31, "110" "100001"), (32, "110" "100000"), (256, "1110" "100000000"),
    (2048, "11110" "100000000000"), (131072, "111110" + format(131072, "018b")),
    (-(1 << 40), "11111110" + format((-(1 << 40)) & ((1 << 56) - 1), "056b")),
    (1 << 60, "11111111" + format(1 << 60, "064b")),
])
def test_varbit_int_matches_prometheus_buckets(v, bits):
    """Bucket boundaries from Prometheus's varbit.go comments (e.g. -3 <= v <= 4 in 3 bits)."""
    w = _BitWriter()
    _put_varbit_int(w, v)
    out = w.getvalue()
    assert bits_of(out, 0)[:len(bits)] == bits
    assert _read_varbit_int(_BitReader(out, 0)) == v


@pytest.mark.parametrize("v,bits", [(0, "0"), (7, "10111"), (8, "110001000"),
                                    (4095, "11110" + "1" * 12), (1 << 60, "11111111" + format(1 << 60, "064b"))])
def test_varbit_uint(v, bits):
    w = _BitWriter()
    _put_varbit_uint(w, v)
    out = w.getvalue()
    assert bits_of(out, 0)[:len(bits)] == bits
    assert _read_varbit_uint(_BitReader(out, 0)) == v


def test_hand_derived_chunk_bytes():
    """Layout and first sample exactly as histogram.go writes them, derived by hand."""
    empty = encode_chunk([(0, Hist())])
    # 2-byte count, header, zero threshold byte 0, then schema/pos/neg spans/t/count/zc = six
    # zero bits and a 64-bit zero sum: 70 bits -> 9 bytes.
    assert bytes(empty) == bytes([0, 1, 0, 0]) + bytes(9)
    h = Hist(False, 3, 2.0 ** -128, 5, 1, 2.0, ((2, 1),), [4], (), [])
    c = encode_chunk([(1, h)], HEADER_RESET)
    want = ("01110100"                # zero threshold 2^-128: exponent -127 + 243 = 116
            + "10011"                 # schema 3
            + "10001" + "10001" + "10010"  # 1 positive span: length 1, offset 2
            + "0"                     # 0 negative spans
            + "10001"                 # t = 1
            + "10101" + "10001"       # count 5, zero count 1
            + format(0x4000000000000000, "064b")  # sum 2.0
            + "10100")                # bucket delta 4
    assert c[:3] == bytes([0, 1, 0x80]) and bits_of(c).rstrip("0") == want.rstrip("0")
    assert c.encoding == ENCODING_HISTOGRAM and chunk_header(c) == HEADER_RESET


# ------------------------------------------------------------------ chunk round trips


def test_int_and_float_chunks_round_trip():
    ints = [(1000 * i + (i % 3), ih(i)) for i in range(50)]
    floats = [(1000 * i, fh(i)) for i in range(50)]
    for samples, enc in ((ints, ENCODING_HISTOGRAM), (floats, ENCODING_FLOAT_HISTOGRAM)):
        c = encode_chunk(samples)
        assert c.encoding == enc and c[:2] == (50).to_bytes(2, "big")
        got = decode_chunk(bytes(c), enc)
        assert [t for t, _ in got] == [t for t, _ in samples]
        for (_, a), (_, b) in zip(samples, got):
            assert (a.count, a.zc, a.sum, a.pbuckets, a.nbuckets, a.pspans, a.nspans, a.zt, a.schema) == \
                   (b.count, b.zc, b.sum, b.pbuckets, b.nbuckets, b.pspans, b.nspans, b.zt, b.schema)
        assert [h.hint for _, h in got] == [HINT_UNKNOWN] + [HINT_NOT_RESET] * 49


def test_custom_buckets_and_odd_zero_threshold_round_trip():
    h = Hist(False, -53, 0.0, 6, 0, 3.0, ((0, 3),), [1, 1, 0], (), [], 0, (0.1, 0.25, 1e9 + 0.5))
    h2 = Hist(True, 2, 0.3, 2.0, 2.0, -1.5, (), [], (), [])
    for x in (h, h2):
        (_, y), = decode_chunk(encode_chunk([(5, x)]))
        assert (y.cv, y.zt, y.schema, y.pbuckets, y.count) == (x.cv, x.zt, x.schema, x.pbuckets, x.count)


def test_cut_chunks_headers():
    s = [(i * 1000, ih(i)) for i in range(10)]
    s[6] = (6000, ih(0))  # counts drop: a counter reset
    s += [(10_000 + i * 1000, Hist(**{**_fields(ih(20 + i)), "hint": HINT_GAUGE})) for i in range(3)]
    s += [(20_000, stale_hist()), (21_000, ih(30))]
    s += [(22_000 + i, ih(31 + i)) for i in range(125)]
    chunks = cut_chunks(s, chunk_range_ms=7200_000)
    headers = [chunk_header(c) for _, _, c in chunks]
    sizes = [int.from_bytes(c[:2], "big") for _, _, c in chunks]
    assert headers[:3] == [HEADER_UNKNOWN, HEADER_RESET, HEADER_GAUGE]
    assert sizes[:3] == [6, 4, 3]
    assert sizes[3] == 1 and decode_chunk(chunks[3][2])[0][1].is_stale
    # a size cut is 'unknown' as in Prometheus's heads, never 'not a reset'
    assert sizes[4:] == [120, 6] and headers[5] == HEADER_UNKNOWN
    got = [decode_chunk(c)[0][1].hint for _, _, c in chunks]
    assert got[1] == HINT_RESET and got[2] == HINT_GAUGE
    # a chunk-range boundary cuts too
    assert len(cut_chunks([(7199_999, ih(1)), (7200_000, ih(2))])) == 2


def _fields(h: Hist) -> dict:
    return {k: getattr(h, k) for k in Hist.__slots__}


def test_proto_round_trip_and_engine_value():
    t, back = from_proto_bytes(to_proto_bytes(123, ih(4)))
    assert t == 123 and back == ih(4)
    t, backf = from_proto_bytes(to_proto_bytes(7, fh(2)))
    assert backf == fh(2)
    e = to_engine(ih(4))
    assert e.pos == {-1: 5.0, 0: 8.0, 2: 7.0, 3: 2.0} and e.neg == {0: 4.0, 1: 1.0}
    assert e.count == ih(4).count and e.zc == 1 and e.schema == 0
    with pytest.raises(ValueError):
        from_proto_bytes(to_proto_bytes(1, Hist(False, 0, 0, 1, 0, 0, ((0, 2),), [1], (), [])))


# ------------------------------------------------------------------ write path


def hreq(series: dict[str, list[tuple[int, Hist]]]) -> bytes:
    return encode_histogram_write_request(
        ((("__name__", name),), [to_proto_bytes(t, h) for t, h in samples])
        for name, samples in series.items())


def test_decoder_yields_histogram_samples():
    raw = hreq({"a": [(10, ih(1)), (20, ih(2))], "b": [(30, fh(3))]})
    mixed = raw + encode_write_request([((("__name__", "c"),), np.array([5]), np.array([1.5]))])
    d = decode(mixed)
    assert d.n_histograms == 3 and d.n_samples == 1
    assert d.hist_series.tolist() == [0, 0, 1] and d.hist_ts.tolist() == [10, 20, 30]
    assert [from_proto_bytes(r)[1] for r in d.hist_raw] == [ih(1), ih(2), fh(3)]


def _db(tmp_path) -> TenantTSDB:
    return TenantTSDB("t", TSDBOptions(path=tmp_path, head=HeadOptions(chunk_range_ms=7200_000)))


def _hist_samples(db: TenantTSDB, name: str) -> list[tuple[int, Hist]]:
    out = []
    for _, chunks in db.series([Matcher(MatchType.EQ, "__name__", name)], 0, 1 << 60):
        for _, _, c in chunks:
            if isinstance(c, EncodedChunk):
                out += decode_chunk(c)
    return out


def test_tenant_write_replay_checkpoint_and_block(tmp_path):
    db = _db(tmp_path)
    h_samples = [(i * 15_000, ih(i)) for i in range(30)]
    out = db.write(decode(hreq({"h": h_samples[:20], "f": [(i * 15_000, fh(i)) for i in range(5)]})))
    assert (out.appended, out.conflicts) == (25, [])
    out = db.write(decode(hreq({"h": [(0, ih(0)), (19 * 15_000, ih(7))] + h_samples[20:]})))
    assert out.out_of_order == 1 and out.duplicate == 1 and out.appended == 10
    # floats may not go behind a histogram of the same series, nor histograms behind floats
    out = db.write(decode(encode_write_request([((("__name__", "h"),), np.array([1, 29 * 15_000 + 1]),
                                                 np.array([1.0, 2.0]))])))
    assert out.out_of_order == 1 and out.appended == 1
    out = db.write(decode(hreq({"h": [(29 * 15_000 + 1, ih(40))]})))
    assert out.duplicate == 1
    got = _hist_samples(db, "h")
    assert [(t, h.count) for t, h in got] == [(t, h.count) for t, h in h_samples]
    db.close()

    db = _db(tmp_path)  # WAL replay
    assert db.replay() == 36
    assert [(t, h.count) for t, h in _hist_samples(db, "h")] == [(t, h.count) for t, h in h_samples]
    db.write(decode(hreq({"h": [(3 * 3600_000 + i, ih(50 + i)) for i in range(3)]})))
    metas = db.compact()  # 0..2h into a block, checkpoint keeps the rest
    assert len(metas) == 1 and metas[0].num_samples == 36
    blk = BlockReader(tmp_path / "t" / metas[0].ulid)
    (lbls, chunks), = blk.series(0, 1 << 60, [Matcher(MatchType.EQ, "__name__", "h")])
    assert {c[2].encoding for c in chunks if isinstance(c[2], EncodedChunk)} == {ENCODING_HISTOGRAM}
    assert [t for c in chunks if isinstance(c[2], EncodedChunk) for t, _ in decode_chunk(c[2])] == \
           [t for t, _ in h_samples]
    blk.close()
    db.close()
    db = _db(tmp_path)  # checkpoint + WAL replay
    db.replay()
    assert [t for t, _ in _hist_samples(db, "h") if t >= 2 * 3600_000] == \
           [3 * 3600_000 + i for i in range(3)]
    assert len(db.head.hists.refs()) == 1  # the checkpoint kept only what is newer than the block
    db.close()


def test_invalid_histogram_is_refused_not_dropped(tmp_path):
    db = _db(tmp_path)
    bad = Hist(False, 0, 0, 1, 0, 0, ((0, 2),), [1], (), [])  # spans promise 2 buckets, 1 sent
    out = db.write(decode(hreq({"h": [(1, bad)]})))
    assert out.appended == 0 and out.conflicts == ["1 invalid native histogram samples"]
    db.close()


def test_wal_histograms_record_round_trip(tmp_path):
    raws = [to_proto_bytes(1, ih(1)), to_proto_bytes(2, fh(2)), b"x" * 13]
    with WAL(WALConfig(dir=tmp_path, fsync="none")) as w:
        w.log(None, None, HistogramsRecord(np.array([3, 4, 5]), np.array([1, 2, 3]), raws))
    with WAL(WALConfig(dir=tmp_path, fsync="none")) as w:
        (rec,) = list(w.replay())
    assert rec.refs.tolist() == [3, 4, 5] and rec.ts.tolist() == [1, 2, 3] and rec.raw == raws


# ------------------------------------------------------------------ query side


def test_merge_raw_series_decodes_histograms_and_replicas():
    samples = [(i * 1000, ih(i)) for i in range(10)]
    chunks = cut_chunks(samples)
    lb = (("__name__", "h"),)
    xor_later = encode_write_request([])  # noqa: F841 -- floats of other series stay XOR below
    raw = [RawSeries(lb, chunks), RawSeries(lb, cut_chunks(samples[5:]))]
    (s,) = merge_raw_series(raw, 2000, 8000)
    assert s.ts.tolist() == list(range(2000, 9000, 1000)) and np.isnan(s.vals).all()
    assert [h.count for h in s.hists] == [ih(i).count for i in range(2, 9)]
    assert isinstance(s.hists[0], nhist.H)


def test_histogram_json_shape():
    h = to_engine(Hist(False, 0, 0.5, 6, 1, 4.0, ((1, 1),), [2], ((1, 1),), [3]))
    assert orjson.loads(histogram_point(1500, h)) == [1.5, {
        "count": "6", "sum": "4",
        "buckets": [[1, "-2", "-1", "3"], [3, "-0.5", "0.5", "1"], [0, "1", "2", "2"]]}]
    row = matrix_entry({"a": "b"}, np.array([1000, 2000]), np.array([1.0, h], dtype=object))
    assert orjson.loads(orjson.dumps(row)) == {
        "metric": {"a": "b"}, "values": [[1, "1"]], "histograms": [orjson.loads(histogram_point(2000, h))]}
    assert math.isclose(h.count, 6)
