"""The head's series-ref cache keyed by raw remote-write label bytes (receiver/tsdb/_refcache.c)
and its use by the decoder and TenantTSDB.write: a hit must give exactly the ref and outcome
the validating path gives, and never a ref of a series the head dropped."""
from __future__ import annotations

import numpy as np
import pytest

from common.varint import uvarint
from receiver.multitsdb import TenantTSDB, TSDBOptions
from receiver.remotewrite import _encode_labels, decode, encode_write_request
from receiver.tsdb._refcache import RefCache
from receiver.tsdb.head import HeadOptions
from receiver.tsdb.labels import Matcher, encode_labels_key
from receiver.wal import SeriesRecord

T0 = 1_700_000_000_000
RANGE = 60_000


def lbls(i: int) -> tuple[tuple[str, str], ...]:
    return (("__name__", "m"), ("i", str(i)), ("job", "j"))


def body(t: int, n: int = 5, first: int = 0) -> bytes:
    return encode_write_request((lbls(i), np.array([t]), np.array([float(i)]))
                                for i in range(first, first + n))


def tsdb(tmp_path, name: str = "t") -> TenantTSDB:
    return TenantTSDB(name, TSDBOptions(path=tmp_path, too_far_in_future_ms=0,
                                        head=HeadOptions(chunk_range_ms=RANGE)))


def put(db: TenantTSDB, raw: bytes, cached: bool = True):
    return db.write(decode(raw, db.head.refcache if cached else None))


def field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + uvarint(len(payload)) + payload


def series_body(label_fields: bytes, t: int, v: float = 1.0, tail: bytes = b"") -> bytes:
    """One TimeSeries with the given raw label fields, one sample, then ``tail``."""
    sample = b"\x09" + np.float64(v).tobytes() + b"\x10" + uvarint(t)
    return field(0x0A, label_fields + field(0x12, sample) + tail)


def label_field(name: bytes, value: bytes, reverse: bool = False) -> bytes:
    parts = [field(0x0A, name), field(0x12, value)]
    return field(0x0A, b"".join(reversed(parts) if reverse else parts))


# -- the table --------------------------------------------------------------------------------


def test_span_of_is_the_canonical_protobuf_encoding_of_the_labels():
    for ls in (lbls(1), (("a", "x" * 300),), (("é", "ü"),)):
        assert RefCache.span_of(encode_labels_key(ls)) == _encode_labels(ls)
    assert RefCache.span_of(encode_labels_key((("a", ""),))) is None  # never valid: not cached


def test_hit_needs_exactly_equal_bytes_and_one_entry_per_series():
    c = RefCache(seed=7)
    key = encode_labels_key(lbls(1))
    assert c.insert([key, key], np.array([3, 3], dtype=np.int64)) == 1
    span = RefCache.span_of(key)
    assert c.get(span) == 3 and len(c) == 1
    assert c.get(span[:-1] + b"X") == -1 and c.get(span + b"\x00") == -1 and c.get(span[:-1]) == -1
    assert c.insert([encode_labels_key(lbls(2))], np.array([-1], dtype=np.int64)) == 0


def test_remove_only_the_given_ref_and_bump_the_generation():
    c = RefCache(seed=1)
    keys = [encode_labels_key(lbls(i)) for i in range(3000)]  # several resizes
    c.insert(keys, np.arange(3000, dtype=np.int64))
    g = c.generation
    assert c.remove([keys[5]], np.array([99], dtype=np.int64)) == 0 and c.generation == g
    assert c.remove(keys[:1500], np.arange(1500, dtype=np.int64)) == 1500
    assert c.generation == g + 1 and len(c) == 1500
    assert all(c.get(RefCache.span_of(k)) == -1 for k in keys[:1500])
    assert [c.get(RefCache.span_of(k)) for k in keys[1500:]] == list(range(1500, 3000))


# -- decoding with a cache --------------------------------------------------------------------


def test_known_series_decode_without_keys_and_keys_are_built_on_demand(tmp_path):
    db = tsdb(tmp_path)
    cold = put(db, body(T0))
    assert cold.appended == 5 and len(db.head.refcache) == 5
    raw = body(T0 + 1000, n=7)  # 5 known series, 2 new
    req = decode(raw, db.head.refcache)
    assert req.series_keys[:5] == [None] * 5 and None not in req.series_keys[5:]
    assert req.cached_refs.tolist() == [db.head.ref(encode_labels_key(lbls(i))) for i in range(5)] + [-1, -1]
    assert req.series_status.tolist() == [0] * 7
    assert req.n_series == 7 and req.n_samples == 7  # what the request limits count
    assert req.keys == decode(raw).keys  # built from the request's bytes
    out = db.write(decode(raw, db.head.refcache))
    assert out.appended == 7 and not out.conflicts and len(db.head.refcache) == 7
    assert db.head.num_series == 7


def test_another_encoding_of_known_labels_misses_and_finds_the_same_series(tmp_path):
    db = tsdb(tmp_path)
    put(db, body(T0, n=1))
    ref = db.head.ref(encode_labels_key(lbls(0)))
    fields = [label_field(n.encode(), v.encode()) for n, v in lbls(0)]
    reordered = [label_field(n.encode(), v.encode(), reverse=True) for n, v in lbls(0)]
    unknown = fields[:1] + [field(0x0A, field(0x0A, b"i") + field(0x12, b"0") + b"\x18\x01")] + fields[2:]
    for i, variant in enumerate((reordered, unknown)):
        raw = series_body(b"".join(variant), T0 + 1000 * (i + 1))
        req = decode(raw, db.head.refcache)
        assert req.cached_refs.tolist() == [-1]  # not these bytes
        out = db.write(req)
        assert out.appended == 1 and db.head.num_series == 1
        assert db.head.ref(encode_labels_key(lbls(0))) == ref
    assert len(db.head.refcache) == 1  # no alias entries


def test_cached_labels_followed_by_more_labels_are_validated_as_any_other(tmp_path):
    """The cached byte run, then an extra Label after the sample: another label list (here
    unsorted), refused as without a cache."""
    warm, cold = tsdb(tmp_path / "w"), tsdb(tmp_path / "c")
    put(warm, body(T0, n=1))
    canonical = _encode_labels(lbls(0))
    raw = series_body(canonical, T0 + 1000, tail=label_field(b"a", b"b"))
    req = decode(raw, warm.head.refcache)
    assert req.cached_refs.tolist() == [-1] and req.series_status.tolist() == [3]
    got_warm, got_cold = warm.write(req), put(cold, raw, cached=False)
    assert got_warm == got_cold and got_warm.unsorted_labels == 1 and got_warm.appended == 0
    assert warm.head.num_series == 1


BAD_LABELS = [
    (("__name__", "m"), ("i", "")),  # empty value
    (("__name__", "m"), ("i", "1"), ("i", "2")),  # duplicate
    (("i", "1"), ("__name__", "m")),  # unsorted
]


def test_invalid_labels_are_refused_identically_with_and_without_a_warm_cache(tmp_path):
    warm, cold = tsdb(tmp_path / "w"), tsdb(tmp_path / "c")
    put(warm, body(T0, n=3))
    bad_utf8 = series_body(label_field(b"__name__", b"m") + label_field(b"i", b"\xff"), T0 + 1000)
    bad = encode_write_request((ls, np.array([T0 + 1000]), np.array([1.0])) for ls in BAD_LABELS)
    raw = body(T0 + 1000, n=3) + bad + bad_utf8
    got_warm, got_cold = put(warm, raw), put(cold, raw, cached=False)
    assert got_warm == got_cold
    assert (got_warm.appended, got_warm.empty_labels, got_warm.duplicate_labels,
            got_warm.unsorted_labels, got_warm.invalid_utf8_labels) == (3, 1, 1, 1, 1)
    assert warm.head.num_series == 3 and len(warm.head.refcache) == 3


def wal_series(db: TenantTSDB) -> dict[int, bytes]:
    return {r: k for rec in db.wal.replay() if isinstance(rec, SeriesRecord)
            for r, k in zip(rec.refs.tolist(), rec.keys)}


def test_a_collected_series_sent_again_gets_a_fresh_ref_and_wal_record(tmp_path):
    db = tsdb(tmp_path)
    put(db, body(T0, n=2))
    key = encode_labels_key(lbls(0))
    old = db.head.ref(key)
    stale = decode(body(T0 + 1000, n=2), db.head.refcache)  # decoded while the series lived
    assert (stale.cached_refs >= 0).all()
    generation = db.head.refcache.generation
    assert db.head.truncate(T0 + 1) == 2  # both series empty: garbage-collected
    assert len(db.head.refcache) == 0 and db.head.refcache.generation > generation
    out = db.write(stale)  # its refs name dropped series: not used
    assert out.appended == 2
    new = db.head.ref(key)
    assert new is not None and new != old and db.head.key(old) is None
    assert wal_series(db)[new] == key
    again = decode(body(T0 + 2000, n=2), db.head.refcache)
    assert again.cached_refs.tolist()[0] == new
    assert db.write(again).appended == 2
    ts, _ = db.head.samples(new, 0, 1 << 62)
    assert ts.tolist() == [T0 + 1000, T0 + 2000]


def test_replay_after_cached_writes_restores_every_sample(tmp_path):
    db = tsdb(tmp_path)
    for k in range(4):
        assert put(db, body(T0 + 1000 * k, n=10)).appended == 10
    refs = [db.head.ref(encode_labels_key(lbls(i))) for i in range(10)]
    db.close()
    back = tsdb(tmp_path)
    back.replay()
    assert [back.head.ref(encode_labels_key(lbls(i))) for i in range(10)] == refs
    assert len(back.head.refcache) == 0  # only validated writes fill it
    assert put(back, body(T0 + 4000, n=10)).appended == 10
    assert put(back, body(T0 + 5000, n=10)).appended == 10  # now through the cache
    got = back.series([Matcher("=", "__name__", "m")], 0, 1 << 62)
    assert len(got) == 10 and back.head.num_series == 10
    for ref in refs:
        assert back.head.samples(ref, 0, 1 << 62)[0].tolist() == [T0 + 1000 * k for k in range(6)]


def test_refs_from_another_tenants_cache_are_never_used(tmp_path):
    a, b = tsdb(tmp_path, "a"), tsdb(tmp_path, "b")
    put(a, body(T0, n=3, first=10))  # a's refs 0..2 are other series than b's
    put(b, body(T0, n=3))
    req = decode(body(T0 + 1000, n=3, first=10), a.head.refcache)
    assert (req.cached_refs >= 0).all()
    out = b.write(req)
    assert out.appended == 3 and b.head.num_series == 6
    for i in range(10, 13):
        ref = b.head.ref(encode_labels_key(lbls(i)))
        assert b.head.samples(ref, 0, 1 << 62)[0].tolist() == [T0 + 1000]
    for i in range(3):
        assert b.head.samples(b.head.ref(encode_labels_key(lbls(i))), 0, 1 << 62)[0].tolist() == [T0]


def test_exemplars_of_cached_series_keep_their_series_key(tmp_path):
    db = TenantTSDB("t", TSDBOptions(path=tmp_path, too_far_in_future_ms=0, max_exemplars=10))
    put(db, body(T0, n=1))
    ex = field(0x0A, field(0x0A, b"trace_id") + field(0x12, b"abc")) + b"\x11" + np.float64(2).tobytes() \
        + b"\x18" + uvarint(T0 + 1000)
    raw = series_body(_encode_labels(lbls(0)), T0 + 1000, tail=field(0x1A, ex))
    req = decode(raw, db.head.refcache)
    assert req.cached_refs.tolist() == [0]
    out = db.write(req)
    assert out.appended == 1 and out.exemplars_appended == 1
    (res,) = db.exemplars.select(0, 1 << 62, [[Matcher("=", "__name__", "m")]])
    assert res.series_labels == lbls(0)


@pytest.mark.parametrize("cut", [1, 5, 17])
def test_truncated_bodies_fail_the_same_with_a_warm_cache(tmp_path, cut):
    db = tsdb(tmp_path)
    put(db, body(T0, n=2))
    raw = body(T0 + 1000, n=2)[:-cut]
    with pytest.raises(ValueError) as cold:
        decode(raw)
    with pytest.raises(ValueError) as warm:
        decode(raw, db.head.refcache)
    assert str(cold.value) == str(warm.value)


@pytest.mark.parametrize("order", ["sent", "reversed", "shuffled"])
def test_lookups_in_any_order_after_removals_and_compaction(order):
    """Each series' entry is first looked for after the previous one's: whatever the order and
    the removed entries between them (then compacted away), hits are exactly the live ones."""
    c = RefCache(seed=3)
    n = 3000
    keys = [encode_labels_key(lbls(i)) for i in range(n)]
    c.insert(keys, np.arange(n, dtype=np.int64))
    gone = np.arange(0, n, 3)
    c.remove([keys[i] for i in gone.tolist()], gone)
    idx = list(range(n))
    if order == "reversed":
        idx.reverse()
    elif order == "shuffled":
        np.random.default_rng(5).shuffle(idx)
    req = decode(encode_write_request((lbls(i), np.array([T0]), np.array([1.0])) for i in idx), c)
    want = [-1 if i % 3 == 0 else i for i in idx]
    assert req.cached_refs.tolist() == want
    c.remove([keys[i] for i in range(n) if i % 3], np.array([i for i in range(n) if i % 3]))
    assert len(c) == 0 and c.memory_bytes() < 200_000
    assert (decode(encode_write_request((lbls(i), np.array([T0]), np.array([1.0])) for i in idx),
                   c).cached_refs == -1).all()
