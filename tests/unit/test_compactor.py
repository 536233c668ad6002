"""Compactor: aggregate chunks, downsampling maths, planning, compaction/dedup/downsampling
passes over a filesystem bucket, crash recovery at every step, halting, retention, marks,
bucket verify, and serving downsampled data through the store gateway and the StoreAPI."""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from compactor import CompactConfig, Compactor, add_compact_flags, cli_config, verify
from receiver.tsdb.aggr import ENCODING_AGGR, AggrChunk, RES_1H, RES_5M
from compactor.downsample import downsample_aggr, downsample_raw
from receiver.tsdb.aggr import apply_counter_resets
from querier.downsampled import (
    COUNT, COUNTER, MAX, MIN, SUM, aggrs_from_func, lookback_delta_for, max_resolution_for,
    parse_max_source_resolution, series_samples)
from compactor.marks import NO_COMPACT_MARK, NO_DOWNSAMPLE_MARK, no_compact_mark, no_downsample_mark
from compactor.planner import plan, split_by_range
from compactor.state import BlockInfo
from objstore import FilesystemBucket
from receiver.tsdb.block import BlockMeta, BlockReader, read_meta, write_block_from_samples
from receiver.tsdb.chunkenc import decode, encode
from receiver.tsdb.labels import Matcher, MatchType
from storeapi.server import AggrData

H = 3_600_000
STEP = 60_000
N_SERIES = 6


# ----------------------------------------------------------------------------- helpers

def series_data(t0: int, t1: int, n: int = N_SERIES, seed: int = 1, gaps: bool = False):
    """Half counters (with a reset), half gauges, one sample a minute."""
    rng = np.random.default_rng(seed)
    ts = np.arange(t0, t1, STEP, dtype=np.int64)
    out = []
    for i in range(n):
        if i % 2 == 0:
            v = np.cumsum(rng.integers(0, 10, len(ts))).astype(np.float64)
            v[len(v) // 2:] -= v[len(v) // 2]  # one counter reset in the middle
        else:
            v = np.round(rng.normal(50, 10, len(ts)), 2)
        keep = np.ones(len(ts), bool)
        if gaps:
            keep &= rng.random(len(ts)) > 0.2
        out.append(((("__name__", "m"), ("i", f"{i:02d}"), ("kind", "c" if i % 2 == 0 else "g")),
                    ts[keep], v[keep]))
    return out


def make_blocks(bucket_dir: Path, t0: int, n_blocks: int, ext: dict[str, str], seed: int = 1,
                gaps: bool = False, span: int = 2 * H):
    """2h blocks straight into a filesystem bucket (its layout is the block layout)."""
    data = series_data(t0, t0 + n_blocks * span, seed=seed, gaps=gaps)
    for k in range(n_blocks):
        lo, hi = t0 + k * span, t0 + (k + 1) * span
        write_block_from_samples(bucket_dir, [(l, ts, v) for l, ts, v in data], lo, hi,
                                 thanos_meta={"labels": ext, "source": "receive"})
    return data


def live_blocks(bucket_dir: Path) -> list[BlockMeta]:
    out = []
    for p in sorted(bucket_dir.iterdir()):
        if (p / "meta.json").exists() and not (p / "deletion-mark.json").exists():
            out.append(read_meta(p))
    return out


def raw_samples(bucket_dir: Path, allow_covered: bool = False) -> dict:
    """labels -> (ts, vals) over all live raw blocks; asserts blocks never repeat a sample
    (unless ``allow_covered``: then repeats must agree, as a result and its unmarked
    sources do right after a crash)."""
    acc: dict = {}
    for m in live_blocks(bucket_dir):
        if (m.thanos or {}).get("downsample", {}).get("resolution", 0):
            continue
        with BlockReader(bucket_dir / m.ulid) as r:
            for lbls, chunks in r.iter_series():
                for _, _, enc, data in chunks:
                    t, v = decode(data)
                    acc.setdefault(lbls, []).append((t.copy(), v.copy()))
    out = {}
    for lbls, parts in acc.items():
        t = np.concatenate([p[0] for p in parts])
        v = np.concatenate([p[1] for p in parts])
        o = np.argsort(t, kind="stable")
        t, v = t[o], v[o]
        if allow_covered:
            dup = np.r_[False, t[1:] == t[:-1]]
            assert np.array_equal(v[dup], v[np.flatnonzero(dup) - 1])
            t, v = t[~dup], v[~dup]
        assert np.all(t[1:] > t[:-1]), f"{lbls}: a sample is held by two blocks"
        out[lbls] = (t, v)
    return out


def expected_samples(data) -> dict:
    return {l: (np.asarray(t), np.asarray(v)) for l, t, v in data}


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k][0], want[k][0])
        np.testing.assert_array_equal(got[k][1], want[k][1])


def cfg_for(tmp: Path, **kw) -> CompactConfig:
    base = dict(data_dir=tmp / "work", objstore_config="", consistency_delay_s=0,
                delete_delay_s=0, partial_upload_age_s=0)
    base.update(kw)
    return CompactConfig(**base)


def run_pass(tmp: Path, bucket_dir: Path, **kw):
    async def go():
        c = Compactor(cfg_for(tmp, **kw), bucket=FilesystemBucket(str(bucket_dir)))
        res = await c.run_once()
        return c, res
    return asyncio.run(go())


def t_aligned(days_back: int = 6) -> int:
    """A start aligned to 2d (so 24 2h blocks fill one 2d range) a few days ago."""
    now = int(time.time() * 1000)
    return (now // (48 * H)) * 48 * H - (days_back + days_back % 2) * 24 * H


# ----------------------------------------------------------------------------- aggr chunks

def test_aggr_chunk_layout_matches_thanos():
    c = encode(np.array([1, 2]), np.array([1.0, 2.0]))
    ac = AggrChunk(count=c, sum=c, min=None, max=c, counter=c)
    raw = ac.encode()
    # uvarint(len) | encoding byte (XOR=1) | bytes ... ; an absent aggregate is one 0 byte.
    assert raw[0] == len(c) and raw[1] == 1 and raw[2:2 + len(c)] == c
    off = 2 * (2 + len(c))
    assert raw[off] == 0
    assert AggrChunk.decode(raw) == ac
    with pytest.raises(ValueError):
        AggrChunk.decode(raw[:5])


# ----------------------------------------------------------------------------- downsampling

def _reference_windows(ts, vs, res):
    """Straight per-sample loop of the window maths, to check the numpy version."""
    out = {}
    for t, v in zip(ts.tolist(), vs.tolist()):
        w = t - t % res + res - 1
        out.setdefault(w, []).append(v)
    return out


def test_downsample_raw_windows_and_counter():
    t0 = 10 * H
    ts = np.arange(t0, t0 + 50 * H, 15_000, dtype=np.int64)
    vs = np.cumsum(np.full(len(ts), 2.0))
    vs[1000:] -= vs[1000]  # reset
    vs[5] = np.nan  # dropped like Thanos does
    chunks = downsample_raw(ts, vs, RES_5M)
    assert len(chunks) > 1
    ref = _reference_windows(ts[~np.isnan(vs)], vs[~np.isnan(vs)], RES_5M)
    got_t, cnt, sm, mn, mx = [], [], [], [], []
    for mint, maxt, ac in chunks:
        t, c = decode(ac.count)
        assert t[0] == mint and t[-1] == maxt
        got_t += t.tolist()
        cnt += c.tolist()
        sm += decode(ac.sum)[1].tolist()
        mn += decode(ac.min)[1].tolist()
        mx += decode(ac.max)[1].tolist()
    wins = sorted(ref)
    assert len(got_t) == len(wins)
    # window timestamps are window ends, except each chunk's last window: its last sample's
    got = np.array(got_t)
    assert (got - got % RES_5M + RES_5M - 1).tolist() == wins
    assert sum(got != np.array(wins)) == len(chunks) and got_t[-1] == int(ts[-1])
    assert cnt == [len(ref[w]) for w in wins]
    np.testing.assert_allclose(sm, [sum(ref[w]) for w in wins])
    assert mn == [min(ref[w]) for w in wins] and mx == [max(ref[w]) for w in wins]
    # counter: resets compensated, so the total increase is what a raw rate would see
    ct, cv, last = apply_counter_resets([decode(ac.counter) for _, _, ac in chunks])
    raw_inc = np.sum(np.where(np.diff(vs[~np.isnan(vs)]) < 0, vs[~np.isnan(vs)][1:],
                              np.diff(vs[~np.isnan(vs)])))
    assert cv[-1] - cv[0] == pytest.approx(raw_inc)
    assert last == vs[-1]


def _sequential(xs) -> float:
    """A window's sum the way Thanos's aggregator adds it: from 0.0, sample by sample."""
    acc = 0.0
    for x in xs:
        acc += x
    return acc


@pytest.mark.parametrize("step", [60_000, 15_000, 1_000, 100])
def test_downsampled_sums_are_bit_identical_to_thanos(step):
    """Thanos adds each window's samples one by one; another order (numpy's reduceat) can
    differ in the last bit, so the same raw data gave other sum chunks than Thanos's
    (seen against thanos compact v0.42.4: 103.97200000000001 vs 103.972). Windows of 5 to
    3,000 samples."""
    t0 = 10 * H
    ts = np.arange(t0, t0 + 3 * H, step, dtype=np.int64)
    vs = np.round(np.random.default_rng(3).normal(20, 3, len(ts)), 3)
    vs[7] = -0.0
    five = downsample_raw(ts, vs, RES_5M)
    got = np.concatenate([decode(c.sum)[1] for _, _, c in five])
    w = ts - ts % RES_5M
    want = [_sequential(vs[w == x].tolist()) for x in np.unique(w)]
    assert got.tolist() == want
    hour = downsample_aggr(five, RES_5M, RES_1H)
    got_h = np.concatenate([decode(c.sum)[1] for _, _, c in hour])
    wt = np.concatenate([decode(c.sum)[0] for _, _, c in five])
    wh = wt - wt % RES_1H
    assert got_h.tolist() == [_sequential(got[wh == x].tolist()) for x in np.unique(wh)]


def test_window_sums_refuses_bad_offsets():
    from receiver.tsdb._chunkenc import window_sums
    vals = np.arange(5, dtype=np.float64)
    assert np.frombuffer(window_sums(vals, np.array([0, 2], dtype=np.int64))).tolist() == [1, 9]
    assert window_sums(vals, np.zeros(0, dtype=np.int64)) == b""
    for bad in ([-1], [3, 2], [0, 6], [9]):
        with pytest.raises(ValueError):
            window_sums(vals, np.array(bad, dtype=np.int64))
    with pytest.raises(TypeError):
        window_sums(vals, np.array([0], dtype=np.int32))


def test_downsample_aggr_to_1h_keeps_totals():
    t0 = 0
    ts = np.arange(t0, t0 + 11 * 24 * H, 60_000, dtype=np.int64)
    vs = np.sin(np.arange(len(ts)) / 100.0) * 10 + 20
    five = downsample_raw(ts, vs, RES_5M)
    hour = downsample_aggr(five, RES_5M, RES_1H)
    tot = lambda cs, f: sum(decode(getattr(c, f))[1].sum() for _, _, c in cs)  # noqa: E731
    assert tot(hour, "count") == len(ts)
    assert tot(hour, "sum") == pytest.approx(vs.sum())
    assert min(decode(c.min)[1].min() for _, _, c in hour) == pytest.approx(vs.min())
    # one sample per hour window (a window cut by a chunk boundary shows up in both chunks)
    wt = np.concatenate([decode(c.count)[0] for _, _, c in hour])
    assert len(np.unique(wt - wt % RES_1H)) == 11 * 24 and len(wt) <= 11 * 24 + len(hour)


# ----------------------------------------------------------------------------- query side

def test_aggrs_from_func_and_resolution_helpers():
    assert aggrs_from_func("rate") == [COUNTER]
    assert aggrs_from_func("max_over_time") == [MAX]
    assert aggrs_from_func("min") == [MIN]
    assert aggrs_from_func("count_over_time") == [COUNT]
    assert aggrs_from_func("sum_over_time") == [SUM]
    assert aggrs_from_func("sum") == [COUNT, SUM]
    assert aggrs_from_func("") == [COUNT, SUM]
    assert max_resolution_for(RES_1H, "rate", 20 * 60_000) == 10 * 60_000
    assert max_resolution_for(RES_1H, "avg_over_time", 20 * 60_000) == RES_1H
    assert parse_max_source_resolution("auto", step_ms=3_600_000) == 720_000
    assert parse_max_source_resolution("5m") == RES_5M
    assert parse_max_source_resolution(None) == 0
    assert lookback_delta_for(300_000, 0) == 300_000
    assert lookback_delta_for(300_000, RES_1H) == RES_1H


def test_series_samples_avg_and_counter():
    ts = np.arange(0, 10 * H, 15_000, dtype=np.int64)
    vs = np.cumsum(np.ones(len(ts)))
    five = downsample_raw(ts, vs, RES_5M)
    chunks = [(a, z, AggrData(c.count, c.sum, c.min, c.max, c.counter)) for a, z, c in five]
    t, v = series_samples(chunks, [COUNT, SUM], 0, 10 * H)
    assert len(t) == 10 * 12
    np.testing.assert_allclose(v[0], vs[:20].mean())
    t, v = series_samples(chunks, [COUNTER], 0, 10 * H)
    assert v[-1] - v[0] == pytest.approx(vs[-1] - vs[0])
    # raw chunks pass through unchanged
    raw = [(0, int(ts[-1]), encode(ts[:100], vs[:100]))]
    t, v = series_samples(raw, [COUNT, SUM], 0, 10 * H)
    np.testing.assert_array_equal(t, ts[:100])


# ----------------------------------------------------------------------------- planner

def _bi(ulid_n: int, lo: int, hi: int, **kw) -> BlockInfo:
    ulid = f"01{ulid_n:024d}"
    return BlockInfo(BlockMeta(ulid=ulid, min_time=lo, max_time=hi, sources=[ulid]), **kw)


def test_planner_levels_overlaps_and_no_compact():
    bs = [_bi(i, i * 2 * H, (i + 1) * 2 * H) for i in range(9)]
    kind, picked = plan(bs)
    assert kind == "range" and [b.min_time for b in picked] == [0, 2 * H, 4 * H, 6 * H]
    # the newest block is never planned, an incomplete range before it is not either
    kind, picked = plan(bs[4:8])
    assert picked == []
    assert [len(p) for p in split_by_range(bs, 8 * H)] == [4, 4, 1]
    ov = bs[:3] + [_bi(99, H, 3 * H)]
    ov.sort(key=lambda b: b.min_time)
    kind, picked = plan(ov)
    assert kind == "vertical" and len(picked) == 3
    nc = [_bi(i, i * 2 * H, (i + 1) * 2 * H, no_compact=(i == 1)) for i in range(9)]
    kind, picked = plan(nc)
    assert [b.min_time for b in picked] == [4 * H, 6 * H]  # block 1 splits the first range


# ----------------------------------------------------------------------------- passes

def test_compaction_levels_samples_unchanged_and_downsampling(tmp_path):
    bdir = tmp_path / "bucket"
    bdir.mkdir()
    t0 = t_aligned()
    data = make_blocks(bdir, t0, 36, {"cluster": "x"})
    before = raw_samples(bdir)
    assert_same(before, expected_samples(data))
    c, res = run_pass(tmp_path, bdir)
    assert not res.halted and res.compactions >= 5 and res.downsamples == 1
    metas = live_blocks(bdir)
    spans = sorted((m.max_time - m.min_time) // H for m in metas
                   if m.thanos["downsample"]["resolution"] == 0)
    assert 48 in spans and len(metas) <= 8
    assert_same(raw_samples(bdir), before)
    big = next(m for m in metas if m.max_time - m.min_time == 48 * H
               and m.thanos["downsample"]["resolution"] == 0)
    assert big.level == 3 and len(big.sources) == 24 and big.thanos["source"] == "compactor"
    assert big.thanos["labels"] == {"cluster": "x"}
    ds = [m for m in metas if m.thanos["downsample"]["resolution"] == RES_5M]
    assert len(ds) == 1 and set(ds[0].sources) == set(big.sources)
    with BlockReader(bdir / ds[0].ulid) as r:
        encs = {enc for _, cs in r.iter_series() for _, _, enc, _ in cs}
    assert encs == {ENCODING_AGGR}
    # everything compacted away was deleted (delete delay 0), and a rerun has nothing to do
    assert len([p for p in bdir.iterdir()]) == len(metas)
    _, res2 = run_pass(tmp_path, bdir)
    assert res2.compactions == 0 and res2.downsamples == 0
    assert asyncio.run(verify(FilesystemBucket(str(bdir)), deep=True)) == []


def test_offline_dedup_of_replicas(tmp_path):
    bdir = tmp_path / "bucket"
    bdir.mkdir()
    t0 = t_aligned()
    union: dict = {}
    for seed, rep in ((1, "a"), (2, "b"), (3, "c")):
        # same values (seed 1 for all) but different gaps per replica
        data = series_data(t0, t0 + 8 * H, seed=1)
        rng = np.random.default_rng(seed)
        for k in range(4):
            lo, hi = t0 + k * 2 * H, t0 + (k + 1) * 2 * H
            sel = []
            for l, ts, v in data:
                keep = rng.random(len(ts)) > 0.3
                sel.append((l, ts[keep], v[keep]))
                for t, x in zip(ts[keep & (ts >= lo) & (ts < hi)], v[keep & (ts >= lo) & (ts < hi)]):
                    union.setdefault(l, {})[int(t)] = float(x)
            write_block_from_samples(bdir, sel, lo, hi, thanos_meta={
                "labels": {"cluster": "x", "replica": rep}, "source": "receive"})
    # a later block keeps the last range complete for the planner
    write_block_from_samples(bdir, [(l, ts, v) for l, ts, v in series_data(
        t0 + 8 * H, t0 + 10 * H)], t0 + 8 * H, t0 + 10 * H,
        thanos_meta={"labels": {"cluster": "x", "replica": "a"}, "source": "receive"})
    c, res = run_pass(tmp_path, bdir, dedup_replica_labels=["replica"])
    assert not res.halted
    assert c.metrics.vertical._value.get() >= 1
    assert c.metrics.conflicting._value.get() == 0  # replicas agree: duplicates, no conflicts
    metas = live_blocks(bdir)
    deduped = [m for m in metas if "replica" not in m.thanos["labels"]]
    assert deduped and all(m.thanos["labels"] == {"cluster": "x"} for m in deduped)
    got = raw_samples(bdir)
    for l, pts in union.items():
        t, v = got[l]
        sel = (t >= t0) & (t < t0 + 8 * H)
        assert t[sel].tolist() == sorted(pts)
        assert v[sel].tolist() == [pts[k] for k in sorted(pts)]
    assert asyncio.run(verify(FilesystemBucket(str(bdir)))) == []


# (step, occurrence) crashes, applied one per run; then clean reruns.
CRASHES = [
    [("compact:downloaded", 2)], [("compact:uploaded-chunks", 2)],
    [("compact:uploaded-index", 1)], [("compact:uploaded-meta", 2)],
    [("compact:marked-source", 3)], [("downsample:uploaded-chunks", 1)],
    [("downsample:uploaded-meta", 1)], [("clean:deleted-first", 1)],
    [("compact:uploaded-meta", 1), ("gc:marked", 2)],
]


class Crash(BaseException):  # like a kill: nothing may catch it
    pass


@pytest.mark.parametrize("crashes", CRASHES, ids=lambda c: "+".join(s for s, _ in c))
def test_crash_at_every_step_then_rerun_is_consistent(tmp_path, crashes):
    bdir = tmp_path / "bucket"
    bdir.mkdir()
    t0 = t_aligned()
    data = make_blocks(bdir, t0, 26, {"cluster": "x"})
    want = expected_samples(data)

    def crash_at(step: str, nth: int):
        seen = {"n": 0}

        def hook(s: str) -> None:
            if s == step:
                seen["n"] += 1
                if seen["n"] == nth:
                    raise Crash(step)
        return hook

    async def go(hook_fn):
        c = Compactor(cfg_for(tmp_path), bucket=FilesystemBucket(str(bdir)), hook=hook_fn)
        return await c.run_once()

    for step, nth in crashes:
        with pytest.raises(Crash):  # noqa: PT012
            asyncio.run(go(crash_at(step, nth)))
    # whatever state the crash left, nothing is lost
    assert_same(raw_samples(bdir, allow_covered=True), want)
    for _ in range(3):
        res = asyncio.run(go(None))
        assert not res.halted
    assert_same(raw_samples(bdir), want)
    assert asyncio.run(verify(FilesystemBucket(str(bdir)), deep=True)) == []
    # all sources eventually deleted: only live blocks remain, none is covered by another
    dirs = [p for p in bdir.iterdir()]
    assert all((p / "meta.json").exists() and not (p / "deletion-mark.json").exists()
               for p in dirs)
    raw = [m for m in live_blocks(bdir) if m.thanos["downsample"]["resolution"] == 0]
    srcs = [set(m.sources) for m in raw]
    assert all(not (a < b) for a in srcs for b in srcs)
    assert sum(len(s) for s in srcs) == 26


def test_overlapping_downsampled_blocks_halt_and_nothing_is_deleted(tmp_path):
    bdir = tmp_path / "bucket"
    bdir.mkdir()
    t0 = t_aligned()
    data = series_data(t0, t0 + 4 * H)
    for lo, hi in ((t0, t0 + 3 * H), (t0 + 2 * H, t0 + 4 * H)):
        five = [(l, [(a, z, c.encode()) for a, z, c in downsample_raw(ts, v, RES_5M)
                     if a >= lo and z < hi]) for l, ts, v in data]
        from receiver.tsdb.block import write_block
        from receiver.tsdb.aggr import count_samples
        write_block(bdir, five, lo, hi, thanos_meta={"labels": {"c": "1"},
                                                     "downsample": {"resolution": RES_5M}},
                    encoding=ENCODING_AGGR, count_samples=count_samples)
    before = sorted(p.name for p in bdir.iterdir())
    c, res = run_pass(tmp_path, bdir)
    assert res.halted and "overlapping" in next(iter(res.halted.values()))
    assert c.metrics.halted._value.get() == 1
    assert sorted(p.name for p in bdir.iterdir()) == before
    assert not any((bdir / u / "deletion-mark.json").exists() for u in before)
    issues = asyncio.run(verify(FilesystemBucket(str(bdir))))
    assert [i.kind for i in issues] == ["overlap"]


def test_overlap_with_vertical_compaction_disabled_halts(tmp_path):
    bdir = tmp_path / "bucket"
    bdir.mkdir()
    t0 = t_aligned()
    make_blocks(bdir, t0, 2, {"c": "1"})
    write_block_from_samples(bdir, [(l, ts, v) for l, ts, v in series_data(t0, t0 + 4 * H)],
                             t0 + H, t0 + 3 * H, thanos_meta={"labels": {"c": "1"}})
    c, res = run_pass(tmp_path, bdir, enable_vertical_compaction=False)
    assert res.halted and c.metrics.halted._value.get() == 1
    assert len(live_blocks(bdir)) == 3
    # with vertical compaction (the default) the same bucket is merged
    c, res = run_pass(tmp_path, bdir)
    assert not res.halted and len(live_blocks(bdir)) == 1


def test_vertical_compaction_counts_conflicting_samples_and_keeps_the_earliest_block(
        tmp_path, caplog):
    """8 blocks of 2h each starting an hour apart, every one with its own values for the same
    10 series (15 s apart): 38,400 samples in, 21,600 timestamps out. The 16,800 dropped ones
    all disagree with the kept one: counted, logged for the group, exported; the sample of the
    earliest block holding a timestamp is the one kept."""
    bdir = tmp_path / "bucket"
    bdir.mkdir()
    t0 = t_aligned()
    step = 15_000
    for k in range(8):
        ts = np.arange(t0 + k * H, t0 + k * H + 2 * H, step, dtype=np.int64)
        write_block_from_samples(
            bdir, [((("__name__", "m"), ("i", f"{i}")), ts, np.full(len(ts), 1000.0 * k + i))
                   for i in range(10)],
            t0 + k * H, t0 + k * H + 2 * H, thanos_meta={"labels": {"c": "1"}})
    assert sum(m.num_samples for m in live_blocks(bdir)) == 38_400
    caplog.set_level("INFO")
    c, res = run_pass(tmp_path, bdir)
    assert not res.halted
    assert c.metrics.vertical._value.get() >= 1
    assert c.metrics.conflicting._value.get() == 16_800
    warned = [r for r in caplog.records if r.levelname == "WARNING"
              and getattr(r, "conflicting_samples", 0) == 16_800]
    assert len(warned) == 1 and warned[0].group
    got = raw_samples(bdir)
    assert sum(len(t) for t, _ in got.values()) == 21_600
    for (_, (_, i)), (t, v) in ((l, tv) for l, tv in got.items()):
        want_t = np.arange(t0, t0 + 9 * H, step, dtype=np.int64)
        earliest_block = np.maximum((want_t - t0) // H - 1, 0)  # block k covers [k, k+2) h
        np.testing.assert_array_equal(t, want_t)
        np.testing.assert_array_equal(v, 1000.0 * earliest_block + int(i))


def test_corrupt_block_halts_its_group_only(tmp_path):
    bdir = tmp_path / "bucket"
    bdir.mkdir()
    t0 = t_aligned()
    make_blocks(bdir, t0, 5, {"c": "bad"})
    good = make_blocks(bdir, t0, 5, {"c": "good"})
    victim = next(m for m in live_blocks(bdir) if m.thanos["labels"] == {"c": "bad"}
                  and m.min_time == t0)
    seg = bdir / victim.ulid / "chunks" / "000001"
    raw = bytearray(seg.read_bytes())
    raw[40] ^= 0xFF
    seg.write_bytes(bytes(raw))
    c, res = run_pass(tmp_path, bdir)
    assert list(res.halted) and all("bad" in k for k in res.halted)
    assert c.metrics.halted._value.get() == 1
    bad = [m for m in live_blocks(bdir) if m.thanos["labels"] == {"c": "bad"}]
    assert len(bad) == 5  # untouched
    goods = [m for m in live_blocks(bdir) if m.thanos["labels"] == {"c": "good"}]
    assert len(goods) == 2  # 4 compacted into 8h + the newest
    issues = asyncio.run(verify(FilesystemBucket(str(bdir)), deep=True))
    assert [(i.kind, i.blocks) for i in issues] == [("broken-block", [victim.ulid])]
    del good


def test_retention_and_marks(tmp_path):
    bdir = tmp_path / "bucket"
    bdir.mkdir()
    t0 = t_aligned(days_back=10)
    make_blocks(bdir, t0, 5, {"c": "1"})
    old = live_blocks(bdir)
    # no-compact on the second block splits the 8h range; no-downsample is recorded too
    (bdir / old[1].ulid / NO_COMPACT_MARK).write_bytes(no_compact_mark(old[1].ulid, "manual", "t"))
    c, res = run_pass(tmp_path, bdir)
    assert len(live_blocks(bdir)) == 4  # blocks 3+4 merged (2 of the 8h range), 1, 2, 5 kept
    assert (bdir / old[1].ulid).exists()
    # raw retention of 1 day: everything (10 days old) is marked, then deleted
    c, res = run_pass(tmp_path, bdir, retention_raw_ms=24 * H, delete_delay_s=3600)
    assert res.marked == 4 and live_blocks(bdir) == []
    assert all((p / "deletion-mark.json").exists() for p in bdir.iterdir())
    mark = json.loads((next(bdir.iterdir()) / "deletion-mark.json").read_text())
    assert mark["version"] == 1 and set(mark) >= {"id", "deletion_time", "details"}
    c, res = run_pass(tmp_path, bdir, delete_delay_s=0)
    assert list(bdir.iterdir()) == []


def test_selector_relabel_config_shards_what_a_compactor_acts_on(tmp_path):
    """Thanos's compactor --selector.relabel-config: blocks its rules drop (by external labels
    and __block_id) are not compacted, downsampled or expired by this compactor."""
    bdir = tmp_path / "bucket"
    bdir.mkdir()
    t0 = t_aligned(days_back=10)
    make_blocks(bdir, t0, 4, {"c": "mine"})
    make_blocks(bdir, t0, 4, {"c": "theirs"}, seed=2)
    p = argparse.ArgumentParser()
    add_compact_flags(p)
    a = p.parse_args(["--objstore.config", "x", "--selector.relabel-config",
                      "- {action: keep, source_labels: [c], regex: mine}"])
    selector = cli_config(a).selector
    _, res = run_pass(tmp_path, bdir, selector=selector, retention_raw_ms=24 * H,
                      delete_delay_s=3600)
    by = {c: [m for m in live_blocks(bdir) if m.thanos["labels"]["c"] == c]
          for c in ("mine", "theirs")}
    assert by["mine"] == [] and len(by["theirs"]) == 4  # only its shard expired
    assert all(m.level == 1 for m in by["theirs"])  # and nothing of the other compacted
    with pytest.raises(ValueError, match="--selector.relabel-config"):
        cli_config(p.parse_args(["--objstore.config", "x", "--selector.relabel-config",
                                 "- {action: replace, source_labels: [c]}"]))


def test_no_downsample_mark_is_honoured(tmp_path):
    bdir = tmp_path / "bucket"
    bdir.mkdir()
    t0 = t_aligned()
    make_blocks(bdir, t0, 1, {"c": "1"}, span=48 * H)
    make_blocks(bdir, t0 + 48 * H, 1, {"c": "1"}, span=2 * H)
    first = live_blocks(bdir)[0]
    (bdir / first.ulid / NO_DOWNSAMPLE_MARK).write_bytes(no_downsample_mark(first.ulid, "m", "t"))
    _, res = run_pass(tmp_path, bdir)
    assert res.downsamples == 0
    (bdir / first.ulid / NO_DOWNSAMPLE_MARK).unlink()
    _, res = run_pass(tmp_path, bdir)
    assert res.downsamples == 1


def test_cli_config_mapping(tmp_path):
    p = argparse.ArgumentParser()
    add_compact_flags(p)
    (tmp_path / "b.yml").write_text("type: FILESYSTEM\nconfig:\n  directory: /tmp\n")
    a = p.parse_args(["--objstore.config-file", str(tmp_path / "b.yml"), "--wait", "--wait-interval", "1m",
                      "--delete-delay", "2h", "--retention.resolution-raw", "30d",
                      "--retention.resolution-5m", "90d", "--downsampling.disable",
                      "--deduplication.replica-label", "replica",
                      "--deduplication.replica-label", "rule_replica",
                      "--compact.concurrency", "3", "--http-address", "127.0.0.1:0"])
    c = cli_config(a)
    assert c.wait and c.wait_interval_s == 60 and c.delete_delay_s == 7200
    assert c.retention_raw_ms == 30 * 24 * H and c.retention_5m_ms == 90 * 24 * H
    assert c.retention_1h_ms == 0 and c.downsampling_disable and c.concurrency == 3
    assert c.dedup_replica_labels == ["replica", "rule_replica"]


# ----------------------------------------------------------------------------- serving

def test_store_gateway_serves_resolution_asked(tmp_path):
    from storeapi.client import AGGR_COUNT, AGGR_SUM, StoreClient
    from storeapi.server import serve
    from store.bucketstore import BucketStore
    from store.cache import CacheMetrics, LRUCache

    bdir = tmp_path / "bucket"
    bdir.mkdir()
    t0 = t_aligned()
    data = make_blocks(bdir, t0, 26, {"cluster": "x"})
    run_pass(tmp_path, bdir)
    assert any(m.thanos["downsample"]["resolution"] for m in live_blocks(bdir))
    ms = [Matcher(MatchType.EQ, "__name__", "m")]
    lo, hi = t0, t0 + 52 * H

    async def go():
        reg = CollectorRegistry()
        bs = BucketStore(FilesystemBucket(str(bdir)), tmp_path / "store",
                         LRUCache(64 << 20, CacheMetrics(reg)), reg)
        await bs.sync_once()
        # BucketStore.series is a lazy merge (an iterator): keep what it yields
        raw = list(await bs.series(lo, hi, ms, False))
        five = list(await bs.series(lo, hi, ms, False, max_resolution_ms=RES_5M,
                                    aggregates=[AGGR_COUNT, AGGR_SUM]))
        server, port = await serve(bs, "127.0.0.1:0", component_type="store")
        cl = StoreClient(f"127.0.0.1:{port}")
        try:
            via_grpc, warns = await cl.series_aggr(lo, hi, ms, RES_5M, [AGGR_COUNT, AGGR_SUM])
            plain = await cl.series(lo, hi, ms)
        finally:
            await cl.close()
            await server.stop(None)
        return raw, five, via_grpc, plain

    raw, five, via_grpc, plain = asyncio.run(go())
    assert all(isinstance(c[2], bytes) for _, cs in raw for c in cs)
    # 5m for the 2d block's range, raw XOR for the newer 2h blocks
    kinds = {type(c[2]).__name__ for _, cs in five for c in cs}
    assert kinds == {"AggrData", "bytes"}
    ad = next(c[2] for _, cs in five for c in cs if isinstance(c[2], AggrData))
    assert ad.count and ad.sum and ad.min is None and ad.counter is None
    assert [s.labels for s in via_grpc] == [l for l, _ in five]
    assert len(plain) == len(raw)
    # avg over 4h from 5m sum/count vs. the raw answer
    want = expected_samples(data)
    for s in via_grpc:
        lbls = tuple(p for p in s.labels if p[0] != "cluster")
        t, v = series_samples(s.chunks, [COUNT, SUM], t0 + 4 * H, t0 + 8 * H - 1)
        rt, rv = want[lbls]
        sel = (rt >= t0 + 4 * H) & (rt < t0 + 8 * H)
        assert np.mean(v) == pytest.approx(np.mean(rv[sel]), rel=1e-3)
