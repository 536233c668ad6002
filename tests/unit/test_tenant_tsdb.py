"""A tenant's TSDB over time: head -> blocks, WAL checkpoints, replay, flush on shutdown."""
from __future__ import annotations

import asyncio
import shutil
import subprocess

import numpy as np
import pytest

from receiver.multitsdb import TenantTSDB, TSDBOptions
from receiver.remotewrite import decode, encode_write_request
from receiver.tsdb.chunkenc import decode_many
from receiver.tsdb.head import HeadOptions
from receiver.tsdb.labels import Matcher

RANGE = 60_000  # one-minute blocks keep the test small


def opts(tmp_path) -> TSDBOptions:
    return TSDBOptions(path=tmp_path, external_labels=(("region", "eu"),),
                       head=HeadOptions(chunk_range_ms=RANGE))


def push(db: TenantTSDB, t: int, n_series: int = 20) -> None:
    req = decode(encode_write_request(
        ((("__name__", "m"), ("i", str(i))), np.array([t]), np.array([float(t + i)]))
        for i in range(n_series)))
    out = db.write(req)
    assert out.appended == n_series, out
    asyncio.run(db.sync())


def all_samples(db: TenantTSDB) -> dict[str, list[int]]:
    got = {}
    for lbls, chunks in db.series([Matcher("=", "__name__", "m")], 0, 1 << 60):
        ts, vals = decode_many([c[2] for c in chunks], 0, 1 << 60)
        got[dict(lbls)["i"]] = ts.tolist()
        assert (vals == ts + int(dict(lbls)["i"])).all()
    return got


def test_head_cut_into_blocks_checkpointed_and_replayed(tmp_path):
    db = TenantTSDB("t1", opts(tmp_path))
    stamps = list(range(0, 5 * RANGE, 5_000))
    for t in stamps:
        push(db, t)
        db.compact()
    assert len(db.blocks) >= 2
    metas = [b.meta for b in db.blocks.values()]
    assert all(m.max_time - m.min_time == RANGE and m.min_time % RANGE == 0 for m in metas)
    assert all(m.thanos["labels"] == {"region": "eu", "tenant_id": "t1"} for m in metas)
    # Everything older than the newest block is out of the head but still served, once.
    assert db.head.min_time >= db.blocks_max_time
    assert all(v == stamps for v in all_samples(db).values())
    # A sample older than the persisted blocks is refused as too old.
    req = decode(encode_write_request([((("__name__", "m"), ("i", "0")), np.array([10]), np.array([1.0]))]))
    assert db.write(req).too_old == 1
    wal_dir = db.wal.cfg.dir
    assert [p.name for p in wal_dir.iterdir() if p.name.startswith("checkpoint.")]
    db.close()

    again = TenantTSDB("t1", opts(tmp_path))
    again.replay()
    assert all(v == stamps for v in all_samples(again).values())
    assert again.head.min_time >= again.blocks_max_time
    again.close()


def test_flush_persists_everything_and_promtool_reads_it(tmp_path):
    db = TenantTSDB("t2", opts(tmp_path))
    stamps = list(range(1_000, 2 * RANGE, 7_000))
    for t in stamps:
        push(db, t, n_series=5)
    metas = db.flush()
    assert len(metas) == 2 and db.head.num_series == 0
    db.close()
    reopened = TenantTSDB("t2", opts(tmp_path))
    assert reopened.replay() == 0  # nothing left in the WAL: all of it is in blocks
    assert all(v == stamps for v in all_samples(reopened).values())
    reopened.close()
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    dump = subprocess.run(["promtool", "tsdb", "dump", str(tmp_path / "t2")],
                          capture_output=True, text=True, check=True).stdout
    lines = [l for l in dump.splitlines() if l.startswith("{")]
    assert len(lines) == 5 * len(stamps)
    for m in metas:
        subprocess.run(["promtool", "tsdb", "analyze", str(tmp_path / "t2"), m.ulid],
                       capture_output=True, check=True)


def test_after_a_shutdown_flush_the_same_range_still_accepts_new_samples(tmp_path):
    """The flushed block ends at the newest sample, not at its range's end: a restart in the
    middle of a block range must not turn the rest of that range into 'too old'."""
    db = TenantTSDB("t3", opts(tmp_path))
    for t in range(0, 30_000, 5_000):
        push(db, t, n_series=3)
    (flushed,) = db.flush()
    assert (flushed.min_time, flushed.max_time) == (0, 25_001)
    db.close()
    again = TenantTSDB("t3", opts(tmp_path))
    again.replay()
    stamps = list(range(30_000, 4 * RANGE, 5_000))
    for t in stamps:
        push(again, t, n_series=3)  # asserts every sample is appended
        again.compact()
    ranges = sorted((b.meta.min_time, b.meta.max_time) for b in again.blocks.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:])), ranges  # no overlaps
    assert ranges[0] == (0, 25_001) and ranges[1] == (25_001, RANGE)
    assert all(v == list(range(0, 30_000, 5_000)) + stamps for v in all_samples(again).values())
    again.close()


def test_label_names_and_values_with_matchers_come_from_blocks_too(tmp_path):
    db = TenantTSDB("t4", opts(tmp_path))
    for t in range(0, 20_000, 5_000):
        push(db, t, n_series=4)
    db.flush()  # everything now lives in blocks, nothing in the head
    assert db.head.num_series == 0 and db.blocks
    assert db.label_names([Matcher("=", "i", "2")]) == {"__name__", "i"}
    assert db.label_values("i", [Matcher("=~", "i", "[13]")]) == {"1", "3"}
    assert db.label_values("i", [Matcher("=", "i", "nope")]) == set()
    db.close()
