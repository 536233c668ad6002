"""Compaction and downsampling across promring and the real Thanos (v0.42.4), both ways:

- a bucket of promring-written blocks, compacted and downsampled by ``thanos compact``, served by
  ``promring store`` + ``promring query``;
- a bucket compacted and downsampled by ``promring compact``, served by ``thanos store`` +
  ``thanos query``, and passed by ``thanos tools bucket verify`` (every issue kind it checks).

Either way the raw answers equal the written samples exactly, and the 5m answers
(``max_source_resolution=5m``) of avg/min/max_over_time equal the raw data's. From the same
raw blocks both compactors write byte-identical compacted raw blocks and 5m/1h aggregate
chunks, and each honours the other's no-compact and deletion marks.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from harness import stop_process, store_and_query
from peers import peer
from test_compactor_process import live_metas, objstore_file, res_of, run_compactor
from test_thanos_interop import STARTUP_S, thanos

from receiver.tsdb.aggr import RES_1H, RES_5M
from receiver.tsdb.block import BlockReader, write_block_from_samples

H = 3_600_000
STEP = 60_000
N = 100  # gauges, and as many counters
HOURS = 52  # one whole 2d block (>= 40h: downsampled to 5m) plus the newest 2h blocks
EXT = {"cluster": "eu"}
VERIFY_ISSUES = ("overlapped_blocks", "index_known_issues", "duplicated_compaction")


def gen_series(t0: int, hours: int = HOURS, n: int = N) -> dict:
    """{sorted labels: (ts, values)}: n gauges and n counters (with a reset), one a minute."""
    ts = np.arange(t0, t0 + hours * H, STEP, dtype=np.int64)
    rng = np.random.default_rng(7)
    out = {}
    for i in range(n):
        g = np.round(rng.normal(20, 3, len(ts)), 3)
        c = np.cumsum(rng.integers(0, 9, len(ts))).astype(np.float64)
        c[len(c) // 3:] -= c[len(c) // 3]
        for name, v in (("x_temperature", g), ("x_requests_total", c)):
            out[(("__name__", name), ("i", f"{i:03d}"))] = (ts, v)
    return out


def write_bucket(bucket: Path, series: dict, t0: int, hours: int = HOURS,
                 block_h: int = 2) -> list[str]:
    """``block_h`` blocks (2h: as a shipper's) from promring's block writer, with its thanos
    meta section; returns their ULIDs in time order."""
    bucket.mkdir()
    return [write_block_from_samples(bucket, ((k, ts, v) for k, (ts, v) in sorted(series.items())),
                                 lo, lo + block_h * H,
                                 thanos_meta={"labels": EXT, "source": "receive"}).ulid
            for lo in range(t0, t0 + hours * H, block_h * H)]


def start_ms() -> int:
    """48h-aligned, 8 days back: old enough for any consistency delay."""
    now = int(time.time() * 1000)
    return (now // (48 * H) - 4) * 48 * H


def assert_compacted_and_downsampled(bucket: Path, t0: int) -> None:
    metas = live_metas(bucket)
    raw = [m for m in metas if res_of(m) == 0]
    five = [m for m in metas if res_of(m) == RES_5M]
    assert any(m["minTime"] == t0 and m["maxTime"] == t0 + 48 * H for m in raw), \
        [(m["minTime"], m["maxTime"]) for m in raw]
    assert [(m["minTime"], m["maxTime"]) for m in five] == [(t0, t0 + 48 * H)]
    assert all(m["thanos"]["labels"] == EXT for m in metas)


# -- asking a querier

def instant(api: str, q: str, t_ms: int, res: str) -> dict:
    r = requests.get(f"{api}/query", params={"query": q, "time": t_ms / 1000,
                                             "max_source_resolution": res}, timeout=120).json()
    assert r["status"] == "success", r
    return r["data"]["result"]


def assert_answers_equal_raw(api: str, series: dict, t0: int) -> None:
    """Raw: every sample exactly; 5m: avg/min/max_over_time over whole 5m windows as raw."""
    want = {tuple(sorted(k + tuple(EXT.items()))): v for k, v in series.items()}
    end = t0 + HOURS * H - 1
    got = {tuple(sorted(s["metric"].items())): s["values"]
           for s in instant(api, f'{{__name__=~"x_.+"}}[{HOURS}h]', end, "0s")}
    assert set(got) == set(want)
    for k, (ts, vs) in want.items():
        pts = np.array(got[k], dtype=np.float64)
        np.testing.assert_array_equal(pts[:, 0], ts / 1000, err_msg=str(k))
        np.testing.assert_array_equal(pts[:, 1], vs, err_msg=str(k))
    # Windows ending 1 ms before a whole hour hold whole 5m windows of the 2d block only.
    for a, z in ((t0, t0 + 48 * H), (t0 + 13 * H, t0 + 19 * H), (t0 + 40 * H, t0 + 47 * H)):
        span = f"{(z - a) // H}h"
        sel = {k: (ts >= a) & (ts < z) for k, (ts, _) in want.items()}
        for fn, agg, rel in (("avg_over_time", np.mean, 1e-9), ("min_over_time", np.min, 0),
                             ("max_over_time", np.max, 0)):
            for res in ("0s", "5m"):
                got = {tuple(sorted(s["metric"].items())): float(s["value"][1])
                       for s in instant(api, f"{fn}(x_temperature[{span}])", z - 1, res)}
                exp = {k[1:]: float(agg(v[sel[k]])) for k, (_, v) in want.items()
                       if k[0] == ("__name__", "x_temperature")}
                assert set(got) == set(exp), (fn, res)
                for k, e in exp.items():
                    assert got[k] == pytest.approx(e, rel=rel, abs=1e-9), (fn, res, span, k)
        # Proof the 5m blocks were read: count_over_time counts 5m windows there.
        counts = {float(s["value"][1]) for s in
                  instant(api, f"count_over_time(x_temperature[{span}])", z - 1, "5m")}
        assert counts == {(z - a) / 300_000}, (span, counts)


# -- the bucket promring's compactor made (shared by the Thanos-side tests)

@pytest.fixture(scope="module")
def promring_compacted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("promring-compacted")
    t0 = start_ms()
    series = gen_series(t0)
    bucket = tmp / "bucket"
    write_bucket(bucket, series, t0)
    r = run_compactor(tmp, bucket)
    assert r.returncode == 0, r.stderr
    assert_compacted_and_downsampled(bucket, t0)
    return tmp, bucket, series, t0


def downsampled_chunks(bucket: Path, res: int = RES_5M) -> dict:
    """{labels: [(mint, maxt, encoding, bytes)]} of the bucket's one block at ``res``."""
    (m,) = [m for m in live_metas(bucket) if res_of(m) == res]
    with BlockReader(bucket / m["ulid"]) as br:
        return {lbls: [(a, z, e, bytes(d)) for a, z, e, d in chunks]
                for lbls, chunks in br.iter_series()}


def test_thanos_compacted_promring_bucket_is_served_by_promring(promring_compacted, tmp_path,
                                                                 procs):
    _, ours, series, t0 = promring_compacted
    bucket = tmp_path / "bucket"
    write_bucket(bucket, series, t0)
    cfg = objstore_file(tmp_path, bucket)
    thanos_compact(tmp_path, cfg)
    assert_compacted_and_downsampled(bucket, t0)
    assert all(m["thanos"]["source"] == "compactor" for m in live_metas(bucket)
               if m["compaction"]["level"] > 1 or res_of(m))
    # From the same raw data promring's downsampler wrote the very chunks Thanos's did.
    theirs, mine = downsampled_chunks(bucket), downsampled_chunks(ours)
    assert set(theirs) == set(mine)
    differ = [k for k in theirs if theirs[k] != mine[k]]
    assert not differ, f"{len(differ)} of {len(theirs)} series differ, e.g. {differ[:3]}"
    # ... and the 2d raw block and its 5m copy are byte for byte Thanos's (index and chunks).
    for res in (0, RES_5M):
        (a, b) = ([bucket_dir / m["ulid"] for m in live_metas(bucket_dir) if res_of(m) == res
                   and m["maxTime"] - m["minTime"] == 48 * H] for bucket_dir in (bucket, ours))
        assert len(a) == len(b) == 1
        for name in ("index", "chunks/000001"):
            assert (a[0] / name).read_bytes() == (b[0] / name).read_bytes(), (res, name)
        # meta.json: the same Thanos section but for the upload time Thanos adds
        ta, tb = (json.loads((d[0] / "meta.json").read_text())["thanos"] for d in (a, b))
        for t in (ta, tb):
            t.pop("upload_time", None)
            t.pop("version", None)  # Thanos's compactor leaves it out (read as 1)
        assert ta == tb
    started, api = store_and_query(tmp_path, cfg.read_text())
    try:
        assert_answers_equal_raw(api, series, t0)
    finally:
        for p in started:
            stop_process(p)


def thanos_compact(tmp: Path, cfg: Path) -> None:
    r = subprocess.run([peer("thanos"), "compact", "--no-wait", f"--objstore.config-file={cfg}",
                        f"--data-dir={tmp / 't-compact'}", "--consistency-delay=0s",
                        "--delete-delay=0s", "--http-address=127.0.0.1:0", "--log.level=warn"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_one_hour_downsampling_writes_the_chunks_thanos_writes(tmp_path):
    """14 days (+ the newest blocks, never compacted) of 8h blocks: both compactors make one
    14d block and its 5m and 1h copies; those hold byte-identical aggregate chunks."""
    span = 14 * 24
    t0 = (int(time.time() * 1000) // (span * H) - 2) * span * H
    series = gen_series(t0, span + 16, n=10)
    buckets = {who: tmp_path / who for who in ("promring", "thanos")}
    for b in buckets.values():
        write_bucket(b, series, t0, span + 16, block_h=8)
    r = run_compactor(tmp_path, buckets["promring"])
    assert r.returncode == 0, r.stderr
    thanos_compact(tmp_path, objstore_file(tmp_path, buckets["thanos"]))
    for res in (RES_5M, RES_1H):
        mine, theirs = (downsampled_chunks(b, res) for b in buckets.values())
        assert set(mine) == set(theirs) and len(mine) == 20
        differ = [k for k in theirs if theirs[k] != mine[k]]
        assert not differ, f"{res}: {len(differ)} of {len(theirs)} series differ: {differ[:3]}"
    for b in buckets.values():
        assert sorted((m["maxTime"] - m["minTime"], res_of(m)) for m in live_metas(b)
                      if m["minTime"] < t0 + span * H) == [(span * H, 0), (span * H, RES_5M),
                                                           (span * H, RES_1H)]


def test_promring_compacted_bucket_is_served_by_thanos(promring_compacted, tmp_path, procs):
    _, bucket, series, t0 = promring_compacted
    cfg = objstore_file(tmp_path, bucket)
    store = thanos(tmp_path, "t-store", "store", f"--objstore.config-file={cfg}",
                   f"--data-dir={tmp_path / 't-store'}")
    procs.append(store.start(STARTUP_S))
    query = thanos(tmp_path, "t-query", "query", f"--endpoint={store.grpc}")
    procs.append(query.start(STARTUP_S))
    api = query.url("http", "/api/v1")
    deadline = time.monotonic() + 60  # the querier's first endpoint check
    while not instant(api, "count(x_temperature)", t0 + 10 * H, "0s"):
        assert time.monotonic() < deadline, "thanos query sees no store"
        time.sleep(0.5)
    assert_answers_equal_raw(api, series, t0)


def test_thanos_bucket_verify_finds_no_issue_in_a_promring_compacted_bucket(promring_compacted):
    tmp, bucket, _, _ = promring_compacted
    cfg = objstore_file(tmp, bucket)
    r = subprocess.run([peer("thanos"), "tools", "bucket", "verify",
                        f"--objstore.config-file={cfg}", "--delete-delay=0s",
                        "--log.level=debug", *[f"--issues={i}" for i in VERIFY_ISSUES]],
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    lines = out.splitlines()
    for issue in VERIFY_ISSUES:
        assert any(f"verifier={issue}" in ln and 'msg="started verifying issue"' in ln
                   for ln in lines), (issue, out[-3000:])
    assert any('msg="verify task completed"' in ln for ln in lines), out[-3000:]
    # The index check reads every block and logs each verdict (at debug level).
    clean = {ln.rsplit("id=", 1)[1].split()[0] for ln in lines
             if "verifier=index_known_issues" in ln and 'msg="no issue"' in ln}
    assert clean == {m["ulid"] for m in live_metas(bucket)}
    bad = [ln for ln in lines if "level=warn" in ln or "level=error" in ln]
    assert not bad, "\n".join(bad)


def test_marks_are_honoured_across_promring_and_thanos(tmp_path):
    """A Thanos no-compact mark keeps a block out of promring's compaction; the deletion marks
    promring's compactor leaves (with a delete delay) are what Thanos's compactor deletes by."""
    t0 = start_ms()
    bucket = tmp_path / "bucket"
    ids = write_bucket(bucket, gen_series(t0, 10), t0, 10)
    cfg = objstore_file(tmp_path, bucket)
    held = ids[1]
    r = subprocess.run([peer("thanos"), "tools", "bucket", "mark", f"--objstore.config-file={cfg}",
                        f"--id={held}", "--marker=no-compact-mark.json", "--details=cross test"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = run_compactor(tmp_path, bucket, "--delete-delay", "1h")
    assert r.returncode == 0, r.stderr
    metas = live_metas(bucket)
    assert held in {m["ulid"] for m in metas}
    merged = [m for m in metas if m["compaction"]["level"] > 1]
    assert merged and all(held not in m["compaction"]["sources"] for m in merged)
    marked = {p.parent.name for p in bucket.glob("*/deletion-mark.json")}
    assert marked and held not in marked
    assert marked == {s for m in merged for s in m["compaction"]["sources"]}

    thanos_compact(tmp_path, cfg)
    assert not any((bucket / u).exists() for u in marked)
    assert (bucket / held / "meta.json").exists() and (bucket / held / "no-compact-mark.json").exists()
