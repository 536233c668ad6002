"""The pieces bench_scale.py --thanos adds (a whole run is minutes, too slow for the suite):
promring's and the reference peer Thanos's store + query started over one filesystem bucket of
bench_scale's blocks, then compare_sides querying both in turn, answers compared."""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import bench_scale  # noqa: E402
from sidebyside import HOUR_MS, compare_sides, start_promring, start_thanos, stop_all  # noqa: E402


def test_promring_and_thanos_over_one_bucket_answer_the_dashboard_queries_alike(tmp_path: Path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    t0 = (int(time.time() * 1000) // bench_scale.BLOCK_MS - 3) * bench_scale.BLOCK_MS
    series, _ = bench_scale.write_blocks(bucket, 0.005, 2, t0)
    cfg = tmp_path / "objstore.yml"
    cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    end_ms = t0 + 2 * HOUR_MS - bench_scale.STEP_MS
    queries = bench_scale.dashboard_queries(0.005)
    procs = {}
    with open(tmp_path / "servers.log", "ab") as log:
        try:
            started, ours = start_promring(tmp_path, cfg, log)
            procs.update(started)
            started, theirs = start_thanos(tmp_path, cfg, log, end_ms)
            procs.update(started)
            timings, mismatches = compare_sides({"Thanos": theirs, "promring": ours}, "promring",
                                                queries, [1], end_ms, warm=1)
        finally:
            stop_all(procs.values())
    assert series == 11 + 2 * 12
    assert set(procs) == {"promring store", "promring query", "thanos store", "thanos query"}
    assert mismatches == []
    assert [t.name for t in timings] == [name for name, _ in queries]
    assert all(set(t.cold) == set(t.warm) == {"Thanos", "promring"} for t in timings)
