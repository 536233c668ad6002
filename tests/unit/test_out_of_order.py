"""--tsdb.out-of-order.time-window: late float samples within the window of the tenant's newest
sample go to the out-of-order head (Prometheus's OutOfOrderTimeWindow), survive the WAL, are
cut into blocks marked ``from-out-of-order`` and are read back merged, one sample per timestamp."""
from __future__ import annotations

import json

import numpy as np
import pytest

from receiver.multitsdb import TenantTSDB, TSDBOptions
from receiver.remotewrite import decode as decode_write, encode_write_request
from receiver.tsdb.chunkenc import decode, encode
from receiver.tsdb.head import DUPLICATE, OK, OUT_OF_ORDER, SAME_DUPLICATE, TOO_OLD, Head, HeadOptions
from receiver.tsdb.labels import Matcher, encode_labels_key
from receiver.tsdb.ooohead import OOOHead, merge_overlapping

RANGE = 60_000  # one-minute blocks
WINDOW = 5 * RANGE


def new_head(window: int = WINDOW) -> tuple[Head, int]:
    h = Head(HeadOptions(chunk_range_ms=RANGE, ooo_window_ms=window))
    refs, _, _ = h.refs_for([encode_labels_key((("__name__", "m"),))])
    return h, int(refs[0])


def append(h: Head, ref: int, ts: list[int], vals: list[float]) -> list[int]:
    refs = np.full(len(ts), ref, dtype=np.int64)
    t = np.array(ts, dtype=np.int64)
    v = np.array(vals, dtype=np.float64)
    maxt = h.max_time
    st = h.append(refs, t, v, h.min_valid_time())
    return h.append_late(refs, t, v, st, maxt).tolist()


def head_samples(h: Head, ref: int) -> list[tuple[int, float]]:
    chunks = [c for _, cs in h.series([Matcher("=", "__name__", "m")], 0, 1 << 60) for c in cs]
    chunks += [c for _, cs in h.ooo_series([Matcher("=", "__name__", "m")], 0, 1 << 60) for c in cs]
    merged = merge_overlapping(chunks)
    out = []
    for c in merged:
        ts, vs = decode(c[2])
        out += list(zip(ts.tolist(), vs.tolist()))
    return out


def test_late_samples_within_the_window_are_accepted_outside_too_old():
    h, ref = new_head()
    assert append(h, ref, [10 * RANGE, 10 * RANGE + 1000], [1.0, 2.0]) == [OK, OK]
    maxt = 10 * RANGE + 1000
    # Older than the series' newest, in the in-order window and before it, within W: accepted.
    assert append(h, ref, [10 * RANGE + 500, 9 * RANGE, maxt - WINDOW], [3.0, 4.0, 5.0]) == [OK] * 3
    # One millisecond past the window: too old, as Prometheus's ErrTooOldSample.
    assert append(h, ref, [maxt - WINDOW - 1], [6.0]) == [TOO_OLD]
    assert head_samples(h, ref) == [(maxt - WINDOW, 5.0), (9 * RANGE, 4.0), (10 * RANGE, 1.0),
                                    (10 * RANGE + 500, 3.0), (maxt, 2.0)]


def test_without_a_window_late_samples_are_refused_as_before():
    h, ref = new_head(window=0)
    append(h, ref, [10 * RANGE], [1.0])
    assert append(h, ref, [10 * RANGE - 1000, 9 * RANGE], [2.0, 3.0]) == [OUT_OF_ORDER, TOO_OLD]
    assert h.ooo.num_samples == 0


def test_window_is_measured_from_the_tenants_newest_sample_not_the_series():
    h, ref = new_head()
    other, _, _ = h.refs_for([encode_labels_key((("__name__", "other"),))])
    h.append(other, np.array([100 * RANGE]), np.array([1.0]), h.min_valid_time())
    # The series' own newest is old, but the head's is 100 ranges ahead: too old.
    assert append(h, ref, [50 * RANGE], [1.0]) == [TOO_OLD]
    assert append(h, ref, [100 * RANGE - WINDOW + 1], [1.0]) == [OK]


def test_duplicates_refused_with_another_value_accepted_with_the_same():
    h, ref = new_head()
    append(h, ref, [10 * RANGE, 10 * RANGE + 2000], [1.0, 2.0])
    assert append(h, ref, [10 * RANGE + 1000], [7.0]) == [OK]
    # The same timestamp again in the out-of-order head, in the in-order head (not its newest),
    # and twice within one batch: the first value wins, another value is a conflict.
    assert append(h, ref, [10 * RANGE + 1000, 10 * RANGE + 1000], [7.0, 8.0]) == [SAME_DUPLICATE, DUPLICATE]
    assert append(h, ref, [10 * RANGE, 10 * RANGE], [1.0, 9.0]) == [SAME_DUPLICATE, DUPLICATE]
    assert append(h, ref, [9 * RANGE, 9 * RANGE, 9 * RANGE], [3.0, 3.0, 4.0]) == [OK, SAME_DUPLICATE, DUPLICATE]
    # The newest in-order sample keeps its rule (Prometheus's in-order duplicate check).
    assert append(h, ref, [10 * RANGE + 2000], [5.0]) == [DUPLICATE]
    assert head_samples(h, ref) == [(9 * RANGE, 3.0), (10 * RANGE, 1.0), (10 * RANGE + 1000, 7.0),
                                    (10 * RANGE + 2000, 2.0)]


def test_duplicate_check_reaches_completed_in_order_chunks():
    h, ref = new_head()
    ts = list(range(10 * RANGE, 10 * RANGE + 300 * 100, 100))  # three chunks, two completed
    assert append(h, ref, ts, [float(t) for t in ts]) == [OK] * 300
    probe = [ts[0], ts[119], ts[120], ts[250], ts[0] + 50, ts[299] - 50]
    assert append(h, ref, probe, [float(t) for t in probe]) == [SAME_DUPLICATE] * 4 + [OK, OK]
    assert append(h, ref, probe[:4], [-1.0] * 4) == [DUPLICATE] * 4


def test_nan_values_compare_by_bits():
    o = OOOHead()
    stale = np.array([0x7FF0000000000002], dtype=np.uint64).view(np.float64)
    assert o.insert(np.array([1]), np.array([5]), stale).tolist() == [OK]
    assert o.insert(np.array([1]), np.array([5]), stale.copy()).tolist() == [SAME_DUPLICATE]
    assert o.insert(np.array([1]), np.array([5]), np.array([np.nan])).tolist() == [DUPLICATE]


def test_merge_keeps_the_first_listed_sample_per_timestamp():
    a = (0, 20, encode(np.array([0, 10, 20]), np.array([1.0, 1.0, 1.0])))
    b = (5, 25, encode(np.array([5, 10, 25]), np.array([2.0, 2.0, 2.0])))
    got = merge_overlapping([a, b])
    assert [(c[0], c[1]) for c in got] == [(0, 25)]
    ts, vs = decode(got[0][2])
    assert ts.tolist() == [0, 5, 10, 20, 25] and vs.tolist() == [1.0, 2.0, 1.0, 1.0, 2.0]


# -- a tenant: WAL, replay, block cut -------------------------------------------------------


def tenant(tmp_path, window: int = WINDOW) -> TenantTSDB:
    return TenantTSDB("t", TSDBOptions(path=tmp_path, head=HeadOptions(chunk_range_ms=RANGE,
                                                                      ooo_window_ms=window),
                                       too_far_in_future_ms=0))


def write(db: TenantTSDB, ts: list[int], vals: list[float], name: str = "m"):
    return db.write(decode_write(encode_write_request(
        [((("__name__", name),), np.array(ts), np.array(vals, dtype=np.float64))])))


def served(db: TenantTSDB, name: str = "m") -> list[tuple[int, float]]:
    got = db.series([Matcher("=", "__name__", name)], -(1 << 60), 1 << 60)
    assert len(got) <= 1
    out = []
    for _, chunks in got:
        starts = [c[0] for c in chunks]
        assert starts == sorted(starts)
        for c in chunks:
            ts, vs = decode(c[2])
            out += list(zip(ts.tolist(), vs.tolist()))
    return out


def test_write_outcome_counts_and_replay_after_a_crash(tmp_path):
    db = tenant(tmp_path)
    assert write(db, [10 * RANGE, 10 * RANGE + 1000], [1.0, 2.0]).appended == 2
    out = write(db, [10 * RANGE + 500, 7 * RANGE, 4 * RANGE], [3.0, 4.0, 5.0])
    assert (out.appended, out.too_old, out.conflicts) == (2, 1, ["1 out of bounds samples (too old)"])
    assert write(db, [10 * RANGE + 500], [9.0]).duplicate == 1
    # A late sample of a brand-new series: its series record is logged before it.
    assert write(db, [8 * RANGE], [6.0], name="fresh").appended == 1
    want = [(7 * RANGE, 4.0), (10 * RANGE, 1.0), (10 * RANGE + 500, 3.0), (10 * RANGE + 1000, 2.0)]
    assert served(db) == want
    db.wal.close()  # no flush, no cut: what a kill -9 leaves
    db2 = tenant(tmp_path)
    assert db2.replay() == 5
    assert db2.replay_stats.skipped == 0
    assert served(db2) == want and served(db2, "fresh") == [(8 * RANGE, 6.0)]
    # Replayed late samples keep their duplicate rule.
    assert write(db2, [7 * RANGE], [0.5]).duplicate == 1
    db2.close()


def test_block_cut_writes_out_of_order_blocks_and_checkpoints_them_away(tmp_path):
    db = tenant(tmp_path)
    write(db, list(range(10 * RANGE, 12 * RANGE, 10_000)), [1.0] * 12)
    late = [10 * RANGE + 5_000, 10 * RANGE + 15_000, 11 * RANGE + 5_000, 9 * RANGE]
    assert write(db, late, [2.0] * 4).appended == 4
    want = served(db)
    assert len(want) == 16
    write(db, [12 * RANGE], [1.0])  # the head now spans more than 1.5 ranges: a cut is due
    want.append((12 * RANGE, 1.0))
    metas = db.compact()
    ooo = [m for m in metas if m.extra.get("compaction", {}).get("hints") == ["from-out-of-order"]]
    assert sorted((m.min_time, m.max_time, m.num_samples) for m in ooo) == [
        (9 * RANGE, 10 * RANGE, 1), (10 * RANGE, 11 * RANGE, 2), (11 * RANGE, 12 * RANGE, 1)]
    meta = json.loads((tmp_path / "t" / ooo[0].ulid / "meta.json").read_text())
    assert meta["compaction"]["hints"] == ["from-out-of-order"] and meta["compaction"]["level"] == 1
    assert db.head.ooo.num_samples == 0 and db.head.ooo_frozen is None
    assert served(db) == want  # in-order block, out-of-order blocks, head: each sample once
    # An out-of-order block reaching past the head's newest must not fence later in-order
    # samples off, and late samples may still land in cut ranges.
    assert write(db, [12 * RANGE + 1000], [1.0]).appended == 1
    assert write(db, [10 * RANGE + 25_000], [3.0]).appended == 1
    want += [(12 * RANGE + 1000, 1.0)]
    want = sorted(want + [(10 * RANGE + 25_000, 3.0)])
    assert served(db) == want
    db.wal.close()
    db2 = tenant(tmp_path)  # the checkpoint dropped the cut late samples: no second copy
    db2.replay()
    assert db2.head.ooo.num_samples == 1
    assert served(db2) == want
    db2.close()


def append_hists(h: Head, ref: int, ts: list[int], hists: list) -> list[int]:
    maxt = h.max_time
    st = h.append_histograms([ref] * len(ts), ts, hists, h.min_valid_time())
    return h.append_histograms_late([ref] * len(ts), ts, hists, st, maxt).tolist()


@pytest.mark.parametrize("window", [0, WINDOW])
def test_late_native_histograms_follow_the_same_rules(window):
    """Prometheus 3 takes late native histograms too; a series takes late samples of one kind
    (a float behind a histogram series' samples keeps its 409)."""
    h, ref = new_head(window)
    assert append_hists(h, ref, [10 * RANGE], [_hist(1)]) == [OK]
    assert append(h, ref, [10 * RANGE - 1000], [1.0]) == [OUT_OF_ORDER]
    late = append_hists(h, ref, [10 * RANGE - 1000, 10 * RANGE - 2000, 10 * RANGE - 1000,
                                 10 * RANGE - 2000, 10 * RANGE - WINDOW - 1],
                        [_hist(2), _hist(3), _hist(2), _hist(4), _hist(5)])
    if not window:
        assert late == [OUT_OF_ORDER, OUT_OF_ORDER, OUT_OF_ORDER, OUT_OF_ORDER, TOO_OLD]
        assert h.ooo.num_samples == 0
        return
    assert late == [OK, OK, SAME_DUPLICATE, DUPLICATE, TOO_OLD]
    assert append_hists(h, ref, [10 * RANGE], [_hist(9)]) == [DUPLICATE]  # the in-order newest
    got = [c for _, cs in h.ooo_series([Matcher("=", "__name__", "m")], 0, 1 << 60) for c in cs]
    from receiver.tsdb.histogram import decode_chunk
    assert [(t, x.count) for c in got for t, x in decode_chunk(c[2])] == [
        (10 * RANGE - 2000, 3), (10 * RANGE - 1000, 2)]


def write_hists(db: TenantTSDB, ts: list[int], counts: list[int], name: str = "h"):
    """Native histogram samples ``_hist(count)`` of series ``name`` through the write path."""
    from receiver.tsdb.histogram import to_proto_bytes
    from storeapi import prompb_pb2, remote_pb2
    req = remote_pb2.WriteRequest()
    s = req.timeseries.add()
    s.labels.add(name="__name__", value=name)
    s.histograms.extend(prompb_pb2.Histogram.FromString(to_proto_bytes(t, _hist(c)))
                        for t, c in zip(ts, counts))
    return db.write(decode_write(req.SerializeToString()))


def test_late_histograms_replay_and_cut_into_an_out_of_order_block(tmp_path):
    from receiver.tsdb.histogram import decode_chunk
    db = tenant(tmp_path)

    def send(ts: list[int], counts: list[int]):
        return write_hists(db, ts, counts)

    assert send([10 * RANGE, 10 * RANGE + 1000], [1, 2]).appended == 2
    out = send([9 * RANGE, 10 * RANGE + 500], [3, 4])
    assert (out.appended, out.out_of_order_histograms_appended) == (2, 2)
    assert send([9 * RANGE], [5]).duplicate == 1

    def samples(db_: TenantTSDB) -> list[tuple[int, int]]:
        (got,) = db_.series([Matcher("=", "__name__", "h")], 0, 1 << 60)
        starts = [c[0] for c in got[1]]
        assert starts == sorted(starts)
        return [(t, x.count) for c in got[1] for t, x in decode_chunk(c[2])]
    want = [(9 * RANGE, 3), (10 * RANGE, 1), (10 * RANGE + 500, 4), (10 * RANGE + 1000, 2)]
    assert samples(db) == want
    db.wal.close()
    db = tenant(tmp_path)
    db.replay()
    assert samples(db) == want
    assert send([12 * RANGE], [6]).appended == 1  # a cut is due
    metas = [m for m in db.compact() if m.extra.get("compaction")]
    assert [(m.min_time, m.num_samples, m.num_histogram_samples) for m in sorted(
        metas, key=lambda m: m.min_time)] == [(9 * RANGE, 1, 1), (10 * RANGE, 1, 1)]
    assert db.head.ooo.num_samples == 0
    assert samples(db) == want + [(12 * RANGE, 6)]
    db.close()


def _hist(count: int = 1):
    from receiver.tsdb.histogram import from_proto_bytes
    from storeapi import prompb_pb2
    m = prompb_pb2.Histogram(count_int=count, sum=1.0, schema=0, zero_threshold=0.0,
                             zero_count_int=0, timestamp=0)
    m.positive_spans.add(offset=0, length=1)
    m.positive_deltas.append(count)
    return from_proto_bytes(m.SerializeToString())[1]


def test_compactor_merges_out_of_order_blocks_vertically(tmp_path):
    """An ingestor's in-order and out-of-order blocks of one 2h range, shipped to a bucket,
    become one block holding every sample once."""
    import shutil

    from test_compactor import live_blocks, run_pass, t_aligned
    h2 = 2 * 3_600_000
    db = TenantTSDB("t", TSDBOptions(path=tmp_path / "ingest", too_far_in_future_ms=0,
                                     head=HeadOptions(chunk_range_ms=h2, ooo_window_ms=2 * h2)))
    t0 = t_aligned()
    ts = list(range(t0, t0 + h2 + h2 // 2 + 120_000, 60_000))
    write(db, ts, [1.0] * len(ts))
    late = [t0 + 30_000, t0 + h2 - 30_000, t0 + 90_000]
    assert write(db, late, [2.0] * 3).appended == 3
    h_ts = list(range(t0 + 5 * 60_000, t0 + h2 + h2 // 2, 600_000))  # histograms every 10m
    assert write_hists(db, h_ts, list(range(1, len(h_ts) + 1))).appended == len(h_ts)
    assert write_hists(db, [t0 + 60_000, t0 + 600_000], [50, 60]).appended == 2
    metas = db.compact()
    assert len(metas) == 2 and sum(m.num_samples for m in metas) == 120 + 3 + 12 + 2
    bucket = tmp_path / "bucket"
    for m in metas:
        shutil.copytree(db.dir / m.ulid, bucket / m.ulid)
    db.close()
    c, res = run_pass(tmp_path, bucket)
    assert not res.halted and c.metrics.vertical._value.get() == 1
    (merged,) = live_blocks(bucket)
    assert (merged.min_time, merged.max_time, merged.num_samples) == (t0, t0 + h2, 137)
    from receiver.tsdb.block import BlockReader
    from receiver.tsdb.histogram import decode_chunk
    got: dict[str, list] = {}
    with BlockReader(bucket / merged.ulid) as r:
        for lbls, cs in r.iter_series():
            pts = got.setdefault(dict(lbls)["__name__"], [])
            for _, _, enc, data in cs:
                if enc == 1:
                    t, v = decode(data)
                    pts += zip(t.tolist(), v.tolist())
                else:
                    pts += [(t, x.count) for t, x in decode_chunk(data, enc)]
    assert got["m"] == sorted([(t, 1.0) for t in ts if t < t0 + h2] + [(t, 2.0) for t in late])
    assert got["h"] == sorted([(t, i + 1) for i, t in enumerate(h_ts) if t < t0 + h2]
                              + [(t0 + 60_000, 50), (t0 + 600_000, 60)])


def test_search_matches_a_lexicographic_sort():
    from receiver.tsdb.ooohead import search
    rng = np.random.default_rng(5)
    refs = rng.integers(0, 30, 2000)
    ts = rng.integers(-50, 50, 2000)
    o = np.lexsort((ts, refs))
    cr, ct = refs[o], ts[o]
    qr, qt = rng.integers(-1, 32, 500), rng.integers(-60, 60, 500)
    pairs = list(zip(cr.tolist(), ct.tolist()))
    import bisect
    for side, find in (("left", bisect.bisect_left), ("right", bisect.bisect_right)):
        want = [find(pairs, (r, t)) for r, t in zip(qr.tolist(), qt.tolist())]
        assert search(cr, ct, qr, qt, side).tolist() == want


def test_reopened_wal_checkpoints_late_samples(tmp_path):
    """After a storage failure the WAL restarts from a checkpoint of the whole head: the late
    samples are in it."""
    db = tenant(tmp_path)
    write(db, [10 * RANGE, 10 * RANGE + 1000], [1.0, 2.0])
    write(db, [8 * RANGE, 10 * RANGE + 500], [3.0, 4.0])
    want = served(db)
    db.reopen_wal()
    assert [p.name for p in db.wal.cfg.dir.iterdir() if p.name.startswith("checkpoint.")]
    db.wal.close()
    db2 = tenant(tmp_path)
    db2.replay()
    assert served(db2) == want and db2.head.ooo.num_samples == 2
    db2.close()


def test_a_failed_out_of_order_block_write_loses_nothing(tmp_path, monkeypatch):
    db = tenant(tmp_path)
    write(db, list(range(10 * RANGE, 12 * RANGE + 1, 10_000)), [1.0] * 13)
    write(db, [10 * RANGE + 5_000], [2.0])
    want = served(db)

    def broken_disk(ooo):
        raise OSError("no space left on device")
    monkeypatch.setattr(db, "_write_ooo_blocks", broken_disk)
    with pytest.raises(OSError):
        db.compact()
    assert served(db) == want  # still read from the frozen out-of-order head
    assert write(db, [11 * RANGE + 5_000], [3.0]).appended == 1  # a late sample meanwhile
    want = sorted(want + [(11 * RANGE + 5_000, 3.0)])
    monkeypatch.undo()
    write(db, [13 * RANGE], [1.0])
    want.append((13 * RANGE, 1.0))
    metas = db.compact()
    assert sum(m.num_samples for m in metas if m.extra.get("compaction")) == 2
    assert served(db) == want
    db.wal.close()
    db2 = tenant(tmp_path)
    db2.replay()
    assert served(db2) == want
    db2.close()
