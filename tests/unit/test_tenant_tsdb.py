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


def test_cut_blocks_and_the_head_replay_serve_everything_and_promtool_reads_them(tmp_path):
    db = TenantTSDB("t2", opts(tmp_path))
    stamps = list(range(1_000, 2 * RANGE, 7_000))
    for t in stamps:
        push(db, t, n_series=5)
    last = 3 * RANGE + RANGE // 2  # makes both earlier ranges old enough to cut
    push(db, last, n_series=5)
    metas = db.compact()
    assert len(metas) == 2 and db.head.num_series == 5
    db.close()
    reopened = TenantTSDB("t2", opts(tmp_path))
    assert reopened.replay() == 5  # only what is not in blocks comes back from the WAL
    assert all(v == stamps + [last] for v in all_samples(reopened).values())
    reopened.close()
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    blocks_only = tmp_path / "blocks"  # promtool would also read our WAL, not Prometheus's
    for m in metas:
        shutil.copytree(tmp_path / "t2" / m.ulid, blocks_only / m.ulid)
    (blocks_only / "wal").mkdir()
    dump = subprocess.run(["promtool", "tsdb", "dump", str(blocks_only)],
                          capture_output=True, text=True, check=True).stdout
    lines = [l for l in dump.splitlines() if l.startswith("{")]
    assert len(lines) == 5 * len(stamps)
    for m in metas:
        subprocess.run(["promtool", "tsdb", "analyze", str(blocks_only), m.ulid],
                       capture_output=True, check=True)


def test_a_restart_mid_range_keeps_accepting_that_range_and_cuts_aligned_blocks(tmp_path):
    """No flush on close: the head comes back from the WAL, so a restart in the middle of a
    block range turns nothing into 'too old' and blocks stay aligned and disjoint."""
    db = TenantTSDB("t3", opts(tmp_path))
    for t in range(0, 30_000, 5_000):
        push(db, t, n_series=3)
    assert db.compact() == []
    db.close()
    again = TenantTSDB("t3", opts(tmp_path))
    again.replay()
    push(again, 25_000 + 1, n_series=3)  # later in the same range: accepted
    stamps = list(range(30_000, 4 * RANGE, 5_000))
    for t in stamps:
        push(again, t, n_series=3)  # asserts every sample is appended
        again.compact()
    ranges = sorted((b.meta.min_time, b.meta.max_time) for b in again.blocks.values())
    assert ranges == [(i * RANGE, (i + 1) * RANGE) for i in range(3)], ranges
    want = list(range(0, 30_000, 5_000)) + [25_001] + stamps
    assert all(v == sorted(want) for v in all_samples(again).values())
    again.close()


def test_label_names_and_values_with_matchers_come_from_blocks_too(tmp_path):
    db = TenantTSDB("t4", opts(tmp_path))
    for t in range(0, 20_000, 5_000):
        push(db, t, n_series=4)
    push(db, 2 * RANGE, n_series=1)  # series i=1..3 now live in blocks only
    db.compact()
    assert db.head.num_series == 1 and db.blocks
    assert db.label_names([Matcher("=", "i", "2")]) == {"__name__", "i"}
    assert db.label_values("i", [Matcher("=~", "i", "[13]")]) == {"1", "3"}
    assert db.label_values("i", [Matcher("=", "i", "nope")]) == set()
    db.close()


def test_external_labels_merged_in_one_call_as_per_series():
    """with_external_labels (the ingestor's Series answer) equals the per-series merge: the
    external labels replace same-named series labels; unsorted labels fall back (None)."""
    import random

    from receiver.tsdb._blockio import with_external_labels
    rnd = random.Random(5)
    names = ["__name__", "a", "job", "tenant_id", "zé", "receive"]
    ext = (("receive", "r1"), ("tenant_id", "t"))
    items = [(tuple(sorted((n, rnd.choice(["", "v", "é"])) for n in rnd.sample(names, rnd.randint(0, 6)))),
              [(1, 2, b"x")]) for _ in range(200)]
    want = [(tuple(sorted([p for p in ls if p[0] not in ("receive", "tenant_id")] + list(ext))), c)
            for ls, c in items]
    assert with_external_labels(items, ext) == want
    assert with_external_labels(items, ()) == items
    assert with_external_labels([((("b", "1"), ("a", "2")), [])], ext) is None
    assert with_external_labels([((("a", "1"), ("a", "2")), [])], ext) is None
