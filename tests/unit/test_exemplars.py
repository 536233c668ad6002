"""Exemplars from remote write: the decoder's arrays (hostile ones dropped, never the
samples), the per-tenant ring (bounds, order, duplicates) and its WAL replay/checkpoint."""
from __future__ import annotations

import asyncio

import numpy as np

from receiver.multitsdb import MultiTSDB, MultiTSDBSource, TenantTSDB, TSDBOptions
from receiver.remotewrite import (EX_INVALID_UTF8, EX_LABELS_TOO_LONG, EX_MALFORMED, EX_OK,
                                  decode)
from receiver.tsdb.exemplars import ADDED, DUPLICATE, OUT_OF_ORDER, CircularExemplarStorage
from receiver.tsdb.histogram import to_proto_bytes
from receiver.tsdb.labels import Matcher, encode_labels_key
from tests.unit.test_native_histograms import ih
from tests.unit.test_remotewrite import f64, label, ld, sample, vint


def exemplar(labels: list[tuple[bytes, bytes]], v: float, t: int) -> bytes:
    return ld(3, b"".join(ld(1, label(n, x)) for n, x in labels) + f64(2, v) + vint(3, t))


def series(name: bytes, *parts: bytes) -> bytes:
    return ld(1, ld(1, label(b"__name__", name)) + b"".join(parts))


def key(**kv: str) -> bytes:
    return encode_labels_key(tuple(sorted(kv.items())))


def test_decoder_returns_exemplars_and_flags_hostile_ones_without_failing_samples():
    body = (series(b"a", ld(2, sample(1.0, 10)), exemplar([(b"trace_id", b"abc")], 1.5, 9))
            + series(b"b", ld(2, sample(2.0, 10)),
                     exemplar([(b"t", b"x" * 127)], 2.0, 8),            # 128 runes: fine
                     exemplar([(b"t", b"x" * 128)], 2.0, 8),            # 129: too long
                     exemplar([(b"t", "é".encode() * 127)], 2.0, 8),   # 128 runes, 254 bytes
                     exemplar([(b"t", b"\xff")], 2.0, 8),              # not UTF-8
                     ld(3, b"\x0a\x05\x0a"),                           # malformed body
                     exemplar([], 3.0, 7)))                            # no labels: valid
    d = decode(body)
    assert d.ts.tolist() == [10, 10] and d.vals.tolist() == [1.0, 2.0]
    assert d.ex_series.tolist() == [0, 1, 1, 1, 1, 1, 1]
    assert d.ex_status.tolist() == [EX_OK, EX_OK, EX_LABELS_TOO_LONG, EX_OK, EX_INVALID_UTF8,
                                    EX_MALFORMED, EX_OK]
    assert d.ex_keys[0] == key(trace_id="abc") and d.ex_keys[6] == b""
    # Labels sent out of order are sorted, as Prometheus builds them.
    unsorted = decode(series(b"a", exemplar([(b"z", b"1"), (b"a", b"2"), (b"m", b"3")], 1.0, 1)))
    assert unsorted.ex_keys == [key(a="2", m="3", z="1")]
    assert d.ex_ts.tolist()[:2] == [9, 8] and d.ex_vals.tolist()[0] == 1.5
    assert d.n_exemplars == 7


def test_decoder_arrays_grow_past_their_first_capacity_without_losing_an_entry():
    """Exemplar and histogram columns start small and grow together (one grow helper in the
    C decoder): 300 series x 3 exemplars x 2 histograms cross several growth steps."""
    body = b"".join(
        series(f"m{i}".encode(), ld(2, sample(float(i), 100 + i)),
               *(exemplar([(b"trace_id", f"{i}-{j}".encode())], i + j / 10, 50 + j)
                 for j in range(3)),
               *(ld(4, to_proto_bytes(200 + i + j, ih(i + j))) for j in range(2)))
        for i in range(300))
    d = decode(body)
    assert d.ex_series.tolist() == [i for i in range(300) for _ in range(3)]
    assert d.ex_ts.tolist() == [50 + j for _ in range(300) for j in range(3)]
    assert d.ex_vals.tolist() == [i + j / 10 for i in range(300) for j in range(3)]
    assert d.ex_keys == [key(trace_id=f"{i}-{j}") for i in range(300) for j in range(3)]
    assert set(d.ex_status.tolist()) == {EX_OK}
    assert d.hist_series.tolist() == [i for i in range(300) for _ in range(2)]
    assert d.hist_ts.tolist() == [200 + i + j for i in range(300) for j in range(2)]
    assert d.series_status.tolist() == [0] * 300 and d.n_samples == 300


def test_ring_is_bounded_keeps_newest_and_refuses_out_of_order_per_series():
    ring = CircularExemplarStorage(3)
    a, b = key(__name__="a"), key(__name__="b")
    lk = key(trace_id="1")
    st = ring.add([a, a, a, b, a, a], [lk] * 6, [1.0, 1.0, 2.0, 5.0, 0.5, 3.0],
                  [10, 10, 20, 10, 15, 30])
    assert st.tolist() == [ADDED, DUPLICATE, ADDED, ADDED, OUT_OF_ORDER, ADDED]
    assert ring.count == 3  # a@10 was overwritten by a@30
    got = {r.series_labels: [(v, t) for _, v, t in r.exemplars]
           for r in ring.select(0, 100, [[Matcher("=~", "__name__", ".+")]])}
    assert got == {(("__name__", "a"),): [(2.0, 20), (3.0, 30)], (("__name__", "b"),): [(5.0, 10)]}
    # b's only exemplar goes next, then a's: the index never points at a stolen slot.
    ring.add([a, a, a], [lk] * 3, [4.0, 5.0, 6.0], [40, 50, 60])
    got = ring.select(0, 100, [[Matcher("=", "__name__", "a")], [Matcher("=", "__name__", "b")]])
    assert [(r.series_labels, [t for _, _, t in r.exemplars]) for r in got] == \
        [((("__name__", "a"),), [40, 50, 60])]
    assert ring.select(45, 55, [[Matcher("=", "__name__", "a")]])[0].exemplars == \
        [((("trace_id", "1"),), 5.0, 50)]


def test_slots_grow_with_use_up_to_the_flag():
    ring = CircularExemplarStorage(1_000_000)
    ring.add([key(a="1"), key(a="2")], [b"", b""], [1.0, 2.0], [1, 1])
    assert len(ring._sid) == 1024  # not a million slots for a tenant that sent two
    ring = CircularExemplarStorage(3000)
    for k in range(4):
        ring.add([key(a=str(i)) for i in range(1000)], [b""] * 1000, [1.0] * 1000, [k] * 1000)
    assert len(ring._sid) == 3000 and ring.count == 3000
    assert sorted({t for r in ring.select(0, 10, [[]]) for _, _, t in r.exemplars}) == [1, 2, 3]


def test_disabled_ring_keeps_nothing():
    ring = CircularExemplarStorage(0)
    assert ring.add([key(a="1")], [b""], [1.0], [1]).tolist() == [0]
    assert ring.select(0, 10, [[]]) == []


def _write(db: TenantTSDB, body: bytes):
    out = db.write(decode(body))
    asyncio.run(db.sync())
    return out


def test_exemplars_survive_restart_and_checkpoint(tmp_path):
    opts = TSDBOptions(path=tmp_path, max_exemplars=10)
    mdb = MultiTSDB(opts)
    db = mdb.tenant("t1")
    out = _write(db, series(b"a", ld(2, sample(1.0, 100)),
                            exemplar([(b"trace_id", b"x")], 1.0, 100),
                            exemplar([(b"t", b"y" * 200)], 1.0, 101)))
    assert (out.appended, out.exemplars_appended, out.exemplars_invalid) == (1, 1, 1)
    assert out.http_status == 409 and not out.conflicts  # exemplars never make a conflict
    out = _write(db, series(b"a", ld(2, sample(2.0, 200)), exemplar([(b"trace_id", b"z")], 2.0, 50)))
    assert (out.appended, out.exemplars_out_of_order) == (1, 1)
    _write(db, series(b"b", ld(2, sample(2.0, 200)), exemplar([(b"trace_id", b"w")], 3.0, 200)))
    want = MultiTSDBSource(mdb).exemplars(0, 1000, [[Matcher("=~", "__name__", "a|b")]])
    assert [r.series_labels for r in want] == [(("__name__", "a"), ("tenant_id", "t1")),
                                               (("__name__", "b"), ("tenant_id", "t1"))]
    mdb.close()

    mdb = MultiTSDB(opts)
    mdb.open_existing()
    assert MultiTSDBSource(mdb).exemplars(0, 1000, [[Matcher("=~", "__name__", "a|b")]]) == want
    # A checkpoint replaces the segments and still carries the exemplars.
    t = mdb.tenants["t1"]
    t._write_checkpoint(t.wal.rotate(), 0)
    mdb.close()
    mdb = MultiTSDB(opts)
    mdb.open_existing()
    assert MultiTSDBSource(mdb).exemplars(0, 1000, [[Matcher("=~", "__name__", "a|b")]]) == want
    # Tenant matchers pick tenants as for series.
    assert MultiTSDBSource(mdb).exemplars(0, 1000, [[Matcher("=", "tenant_id", "other")]]) == []
    mdb.close()


def test_ring_memory_is_bounded_by_max_exemplars(tmp_path):
    db = TenantTSDB("t", TSDBOptions(path=tmp_path, max_exemplars=5))
    body = b"".join(series(f"m{i}".encode(), ld(2, sample(1.0, 10)),
                           exemplar([(b"i", str(i).encode())], 1.0, 10)) for i in range(50))
    out = _write(db, body)
    assert out.exemplars_appended == 50 and db.exemplars.count == 5
    got = db.exemplars.select(0, 100, [[Matcher("=~", "__name__", ".+")]])
    assert sorted(r.series_labels[0][1] for r in got) == [f"m{i}" for i in range(45, 50)]
    assert db.exemplars.num_series == 5
    assert np.all(np.array([len(r.exemplars) for r in got]) == 1)
    db.close()


def _reference_add(state: dict, size: int, batch: list) -> list[int]:
    """Prometheus's ring, one exemplar at a time: a global FIFO of ``size``, per series the
    newest must be exceeded, an exact repeat of the newest ignored."""
    fifo, per = state.setdefault("fifo", []), state.setdefault("per", {})
    out = []
    for s, lab, v, t in batch:
        mine = per.get(s, [])
        if mine and (mine[-1][2] == t and mine[-1][1] == v and mine[-1][0] == lab):
            out.append(DUPLICATE)
            continue
        if mine and t <= mine[-1][2]:
            out.append(OUT_OF_ORDER)
            continue
        per.setdefault(s, []).append((lab, v, t))
        fifo.append(s)
        if len(fifo) > size:
            gone = fifo.pop(0)
            per[gone].pop(0)
            if not per[gone]:
                del per[gone]
        out.append(ADDED)
    return out


def test_ring_matches_a_one_at_a_time_model_on_random_batches():
    rng = np.random.default_rng(7)
    for size in (1, 3, 16):
        ring, state = CircularExemplarStorage(size), {}
        names = [key(__name__=f"s{i}") for i in range(6)]
        for _ in range(60):
            n = int(rng.integers(1, 12))
            batch = [(names[int(rng.integers(0, 6))], key(t=str(int(rng.integers(0, 2)))),
                      float(rng.integers(0, 2)), int(rng.integers(0, 40))) for _ in range(n)]
            # The ring takes a request's n-th exemplar of every series in round n.
            seen: dict = {}
            rounds = []
            for i, b in enumerate(batch):
                seen[b[0]] = seen.get(b[0], -1) + 1
                rounds.append((seen[b[0]], i))
            order = [i for _, i in sorted(rounds)]
            want = dict(zip(order, _reference_add(state, size, [batch[i] for i in order])))
            got = ring.add(*map(list, zip(*batch)))
            assert got.tolist() == [want[i] for i in range(n)]
            held = {encode_labels_key(r.series_labels):
                    [(encode_labels_key(lb), v, t) for lb, v, t in r.exemplars]
                    for r in ring.select(-1, 1 << 40, [[]])}
            assert held == state["per"]
            assert ring.count == len(state["fifo"]) and ring.num_series == len(state["per"])



def test_hostile_exemplar_bodies_never_fail_the_request_or_its_samples():
    rng = np.random.default_rng(11)
    for _ in range(500):
        junk = rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
        body = series(b"a", ld(2, sample(1.0, 10)), ld(3, junk), exemplar([(b"k", b"v")], 2.0, 11),
                      ld(2, sample(2.0, 20)))
        d = decode(body)
        assert d.ts.tolist() == [10, 20] and d.vals.tolist() == [1.0, 2.0]
        assert len(d.ex_status) == 2 and d.ex_status[1] == EX_OK
        assert d.ex_status[0] in (EX_OK, EX_LABELS_TOO_LONG, EX_INVALID_UTF8, EX_MALFORMED)
        if d.ex_status[0] != EX_OK:
            assert d.ex_keys[0] == b""
    # Thousands of tiny labels: over 128 runes, refused without building a key.
    many = exemplar([(b"a", b"b")] * 5000, 1.0, 1)
    d = decode(series(b"a", ld(2, sample(1.0, 10)), many))
    assert d.ex_status.tolist() == [EX_LABELS_TOO_LONG] and d.ex_keys == [b""]


def test_exemplars_survive_the_capnproto_replication_path():
    """A router replicating with Cap'n Proto hands the ingestor a converted remote-write body:
    its exemplars must come out as the original's."""
    import struct

    from receiver.capnproto import _capnpc
    from receiver.capnproto.wire import PackedFrames

    body = series(b"a", ld(2, sample(1.0, 10)),
                  exemplar([(b"trace_id", b"x"), (b"span", b"y")], 2.5, 9))
    image = _capnpc.from_remote_write(body, b"tenant")
    frames = PackedFrames(1 << 30)
    frames.feed(_capnpc.pack(struct.pack("<IIQ", 0, len(image) // 8 + 1, 3 << 48) + image))
    _, converted = _capnpc.to_remote_write(frames.next(), 0, 0, 1 << 30)
    got, want = decode(converted), decode(body)
    assert got.ex_keys == want.ex_keys == [key(trace_id="x", span="y")]  # sorted by name
    assert (got.ex_ts.tolist(), got.ex_vals.tolist(), got.ex_status.tolist()) == ([9], [2.5], [EX_OK])


def test_exemplar_only_entries_reach_a_series_already_in_the_head(tmp_path):
    """Prometheus sends a series' exemplars in a TimeSeries entry of their own, without its
    samples: they must reach the series the head holds (a write whose entry has no sample in
    bounds creates no series, but keeps an existing one's ref). For a series the head does not
    hold they are refused, as Prometheus's AppendExemplar on an unknown series."""
    mdb = MultiTSDB(TSDBOptions(path=tmp_path, max_exemplars=10))
    db = mdb.tenant("t1")
    try:
        assert _write(db, series(b"a", ld(2, sample(1.0, 100)))).appended == 1
        out = _write(db, series(b"a", exemplar([(b"trace_id", b"x")], 1.0, 100))
                     + series(b"new", exemplar([(b"trace_id", b"y")], 1.0, 100)))
        assert (out.exemplars_appended, out.exemplars_invalid) == (1, 1), out
        assert db.head.num_series == 1
        got = MultiTSDBSource(mdb).exemplars(0, 1000, [[Matcher("=~", "__name__", "a|new")]])
        assert [r.series_labels for r in got] == [(("__name__", "a"), ("tenant_id", "t1"))]
    finally:
        mdb.close()


def test_exemplar_entry_beside_the_samples_that_create_its_series(tmp_path):
    """The first request for a series: its samples create it, and the exemplar-only entry of
    the same series in that request is kept too."""
    mdb = MultiTSDB(TSDBOptions(path=tmp_path, max_exemplars=10))
    db = mdb.tenant("t1")
    try:
        out = _write(db, series(b"a", ld(2, sample(1.0, 100)))
                     + series(b"a", exemplar([(b"trace_id", b"x")], 1.0, 100)))
        assert (out.appended, out.exemplars_appended, out.exemplars_invalid) == (1, 1, 0), out
    finally:
        mdb.close()
