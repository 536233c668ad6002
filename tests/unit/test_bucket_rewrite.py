"""promring.rewrite.rewrite_block on its own: series deleted through the index's postings,
untouched series keep their chunks byte for byte (also downsampled aggregate chunks), time
ranges cut out of float series, and the cases it refuses."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from compactor.downsample import downsample_block
from promring.rewrite import parse_deletion_requests, rewrite_block
from receiver.tsdb.aggr import RES_5M
from receiver.tsdb.block import BlockReader, new_ulid, write_block_from_samples

HOUR = 3_600_000
T0 = 1_700_000_000_000 // HOUR * HOUR


def raw_block(tmp: Path) -> Path:
    ts = T0 + np.arange(0, 2 * HOUR, 15_000)
    series = [((("__name__", "m"), ("i", str(i)), ("team", "x" if i % 2 else "y")), ts,
               np.arange(len(ts), dtype=float) * i) for i in range(6)]
    meta = write_block_from_samples(tmp, sorted(series, key=lambda s: s[0]), T0, T0 + 2 * HOUR,
                                    thanos_meta={"labels": {"c": "1"}, "source": "receive"})
    return tmp / meta.ulid


def chunks_by_series(block: Path) -> dict:
    with BlockReader(block) as r:
        return {lbls: [(a, z, e, bytes(d)) for a, z, e, d in chunks]
                for lbls, chunks in r.iter_series()}


def test_whole_series_deleted_and_the_rest_copied_byte_for_byte(tmp_path: Path) -> None:
    src = raw_block(tmp_path / "in")
    reqs = parse_deletion_requests("- matchers: '{team=\"x\"}'\n")
    new = new_ulid()
    log = io.StringIO()
    stats = rewrite_block(src, tmp_path / "out", reqs, new, log, dry_run=False)
    before, after = chunks_by_series(src), chunks_by_series(tmp_path / "out" / new)
    assert stats.series_deleted == 3 and log.getvalue().count("Deleted") == 3
    assert after == {k: v for k, v in before.items() if dict(k)["team"] == "y"}


def test_downsampled_block_keeps_its_aggregate_chunks(tmp_path: Path) -> None:
    src = raw_block(tmp_path / "in")
    ds, _ = downsample_block(src, tmp_path / "ds", RES_5M)
    ds_dir = tmp_path / "ds" / ds.ulid
    new = new_ulid()
    rewrite_block(ds_dir, tmp_path / "out", parse_deletion_requests("- matchers: '{i=\"3\"}'\n"),
                  new, io.StringIO(), dry_run=False)
    before, after = chunks_by_series(ds_dir), chunks_by_series(tmp_path / "out" / new)
    assert after == {k: v for k, v in before.items() if dict(k)["i"] != "3"} and len(after) == 5
    with BlockReader(tmp_path / "out" / new) as r:
        assert r.meta.thanos["downsample"]["resolution"] == RES_5M
        assert r.meta.num_samples == ds.num_samples * 5 // 6  # every series has as many


def test_intervals_cut_samples_and_downsampled_intervals_are_refused(tmp_path: Path) -> None:
    src = raw_block(tmp_path / "in")
    lo, hi = T0 + HOUR, T0 + HOUR + 60_000  # 5 samples at 15 s, both ends inclusive
    reqs = parse_deletion_requests(f"- matchers: '{{i=\"2\"}}'\n  intervals: [{{mint: {lo}, maxt: {hi}}}]\n")
    new = new_ulid()
    stats = rewrite_block(src, tmp_path / "out", reqs, new, io.StringIO(), dry_run=False)
    assert (stats.series_changed, stats.samples_deleted) == (1, 5)
    with BlockReader(tmp_path / "out" / new) as r:
        assert r.meta.num_samples == 6 * 480 - 5
    ds, _ = downsample_block(src, tmp_path / "ds", RES_5M)
    with pytest.raises(ValueError, match="downsampled"):
        rewrite_block(tmp_path / "ds" / ds.ulid, tmp_path / "out2", reqs, new_ulid(), io.StringIO(),
                      dry_run=True)
