"""The compactor as a process over Prometheus-made blocks (promtool), end to end:
compaction + 5m downsampling keep every raw sample and give close averages, promtool reads
the results, three replicas dedup into one stream, and SIGKILL at arbitrary points followed
by reruns leaves a consistent bucket."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import requests

from harness import promring_cmd, stop_process, store_and_query

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry

from harness import REPO, free_port, wait_ready

from compactor import verify
from receiver.tsdb.aggr import RES_5M
from querier.downsampled import COUNT, SUM, series_samples
from objstore import FilesystemBucket
from receiver.tsdb.chunkenc import decode_many
from receiver.tsdb.labels import Matcher, MatchType
from store.bucketstore import BucketStore
from store.cache import CacheMetrics, LRUCache

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="Debian's prometheus package is not installed")

H = 3_600_000
STEP = 60_000
N = 10  # counters; as many gauges


def start_ms(days_back: int = 6) -> int:
    now = int(time.time() * 1000)
    return (now // (48 * H)) * 48 * H - days_back * 24 * H


def gen_series(t0: int, hours: int, drop: float = 0.0, seed: int = 0) -> dict:
    """{labels: (ts, vals)}: N counters (with a reset) and N gauges, one sample a minute."""
    ts = np.arange(t0, t0 + hours * H, STEP, dtype=np.int64)
    vals_rng = np.random.default_rng(42)  # same values for every replica
    drop_rng = np.random.default_rng(seed)
    out = {}
    for i in range(N):
        c = np.cumsum(vals_rng.integers(0, 9, len(ts))).astype(np.float64)
        c[len(c) // 3:] -= c[len(c) // 3]
        g = np.round(vals_rng.normal(20, 3, len(ts)), 3)
        for name, v in (("e2e_requests_total", c), ("e2e_temperature", g)):
            keep = drop_rng.random(len(ts)) >= drop
            out[(("__name__", name), ("i", f"{i:02d}"))] = (ts[keep], v[keep])
    return out


def write_openmetrics(path: Path, series: dict) -> None:
    fams: dict[str, list] = {}
    for lbls, (ts, vs) in series.items():
        fams.setdefault(lbls[0][1], []).append((lbls[1][1], ts, vs))
    lines = []
    for name, members in fams.items():
        fam = name[:-len("_total")] if name.endswith("_total") else name
        lines.append(f"# TYPE {fam} {'counter' if name.endswith('_total') else 'gauge'}")
        rows = []
        for i, ts, vs in members:
            rows += [(t, f'{name}{{i="{i}"}} {v!r} {t / 1000:.3f}')
                     for t, v in zip(ts.tolist(), vs.tolist())]
        rows.sort(key=lambda r: r[0])
        lines += [r[1] for r in rows]
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n")


def promtool_blocks(tmp: Path, series: dict, bucket: Path, ext: dict[str, str] | None) -> int:
    """promtool's 2h blocks, put into the bucket as a sidecar would (thanos meta added)."""
    om = tmp / f"in-{len(list(tmp.iterdir()))}.om"
    out = tmp / (om.stem + "-blocks")
    write_openmetrics(om, series)
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(om),
                    str(out)], check=True, capture_output=True)
    n = 0
    for d in sorted(out.iterdir()):
        meta = json.loads((d / "meta.json").read_text())
        if ext is not None:
            meta["thanos"] = {"version": 1, "labels": ext, "downsample": {"resolution": 0},
                              "source": "sidecar"}
        (d / "meta.json").write_text(json.dumps(meta))
        shutil.copytree(d, bucket / d.name)
        n += 1
    return n


def objstore_file(tmp: Path, bucket: Path) -> Path:
    p = tmp / "bucket.yml"
    p.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    return p


def compact_cmd(tmp: Path, bucket: Path, *extra: str) -> list[str]:
    return promring_cmd() + ["compact", "--data-dir", str(tmp / "work"),
            "--objstore.config-file", str(objstore_file(tmp, bucket)),
            "--consistency-delay", "0s", "--delete-delay", "0s",
            "--compact.partial-upload-age", "0s", "--http-address", "", *extra]


def run_compactor(tmp: Path, bucket: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(compact_cmd(tmp, bucket, *extra), env=env, capture_output=True,
                          text=True, timeout=120)


def bucket_objects_without_meta(bucket: Path) -> list[list[str]]:
    async def go():
        b = FilesystemBucket(str(bucket))
        out = []
        for e in await b.iter(""):
            objs = await b.iter(e, recursive=True)
            if objs and not any(o.endswith("/meta.json") for o in objs):
                out.append(objs)
        return out
    return asyncio.run(go())


def res_of(meta: dict) -> int:
    return int(meta.get("thanos", {}).get("downsample", {}).get("resolution", 0))


def live_metas(bucket: Path) -> list[dict]:
    return [json.loads((p / "meta.json").read_text()) for p in sorted(bucket.iterdir())
            if (p / "meta.json").exists() and not (p / "deletion-mark.json").exists()]


async def _store_series(bucket: Path, tmp: Path, mint: int, maxt: int, **kw):
    reg = CollectorRegistry()
    bs = BucketStore(FilesystemBucket(str(bucket)), tmp / "store",
                     LRUCache(128 << 20, CacheMetrics(reg)), reg)
    await bs.sync_once()
    return await bs.series(mint, maxt, [Matcher(MatchType.RE, "__name__", "e2e_.*")], False,
                           **kw)


def served_raw(bucket: Path, tmp: Path, mint: int, maxt: int, drop: set[str] = frozenset()
               ) -> dict:
    out = {}
    for lbls, chunks in asyncio.run(_store_series(bucket, tmp, mint, maxt)):
        key = tuple(p for p in lbls if p[0] not in drop)
        t, v = decode_many([c[2] for c in chunks], mint, maxt)
        assert np.all(t[1:] > t[:-1]), f"{key}: overlapping data served"
        assert key not in out
        out[key] = (t, v)
    return out


def with_ext(lbls: tuple, ext: tuple) -> tuple:
    return tuple(sorted(lbls + ext))


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, (t, v) in want.items():
        np.testing.assert_array_equal(got[k][0], t)
        np.testing.assert_array_equal(got[k][1], v)


def test_promtool_blocks_compact_downsample_and_stay_exact(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    t0 = start_ms()
    series = gen_series(t0, 72)
    assert promtool_blocks(tmp_path, series, bucket, None) == 36
    lo, hi = t0, t0 + 72 * H
    before = served_raw(bucket, tmp_path, lo, hi)
    assert_same(before, series)

    r = run_compactor(tmp_path, bucket)
    assert r.returncode == 0, r.stderr
    metas = live_metas(bucket)
    raw = [m for m in metas if res_of(m) == 0]
    five = [m for m in metas if res_of(m) == RES_5M]
    assert len(raw) <= 8 and len(five) == 1
    v = subprocess.run(promring_cmd() + ["tools", "bucket", "verify", "--objstore.config-file",
                                         str(objstore_file(tmp_path, bucket))],
                       capture_output=True, text=True, timeout=120)
    assert v.returncode == 0 and "no issues found" in v.stdout, (v.stdout, v.stderr)
    assert all(m["thanos"]["source"] == "compactor" for m in five)
    assert_same(served_raw(bucket, tmp_path, lo, hi), series)

    # promtool reads the compacted raw blocks
    pdir = tmp_path / "promtool"
    pdir.mkdir()
    for m in raw:
        if m["compaction"]["level"] > 1:
            shutil.copytree(bucket / m["ulid"], pdir / m["ulid"])
    listed = subprocess.run(["promtool", "tsdb", "list", str(pdir)], capture_output=True,
                            text=True, check=True).stdout
    assert all(m["ulid"] in listed for m in raw if m["compaction"]["level"] > 1)
    big = next(m for m in raw if m["compaction"]["level"] == 3)
    an = subprocess.run(["promtool", "tsdb", "analyze", str(pdir), big["ulid"]],
                        capture_output=True, text=True)
    assert an.returncode == 0 and f"Series: {2 * N}" in an.stdout, an.stderr

    # a 5m-resolution average over 6 hours vs the raw average
    res = asyncio.run(_store_series(bucket, tmp_path, lo, hi, max_resolution_ms=RES_5M,
                                    aggregates=[COUNT, SUM]))
    a, z = t0 + 10 * H, t0 + 16 * H - 1
    for lbls, chunks in res:
        t, v = series_samples(chunks, [COUNT, SUM], a, z)
        rt, rv = series[lbls]
        sel = (rt >= a) & (rt <= z)
        assert len(t) == 6 * 12
        assert np.mean(v) == pytest.approx(np.mean(rv[sel]), rel=1e-6, abs=1e-9)
    assert asyncio.run(verify(FilesystemBucket(str(bucket)), deep=True)) == []

    # The same through `promring store` + `promring query` and max_source_resolution.
    procs, api = store_and_query(tmp_path, objstore_file(tmp_path, bucket).read_text())
    try:
        # 1 ms before the hour: the 6h window then holds exactly 72 whole 5m windows, so the
        # average of window averages equals the raw average (Thanos feeds sum/count per window).
        t = (t0 + 16 * H - 1) / 1000

        def ask(q: str, res: str) -> dict:
            r = requests.get(f"{api}/query", params={"query": q, "time": t, "max_source_resolution": res},
                             timeout=60).json()
            assert r["status"] == "success", r
            return {s["metric"]["i"]: float(s["value"][1]) for s in r["data"]["result"]}

        for q, rel in (("avg_over_time(e2e_temperature[6h])", 1e-6),
                       ("max_over_time(e2e_temperature[6h])", 0.0),
                       ("min_over_time(e2e_temperature[6h])", 0.0),
                       ("increase(e2e_requests_total[6h])", 0.02)):
            raw, five = ask(q, "0s"), ask(q, "5m")
            assert set(raw) == set(five) and len(raw) == N, q
            for i in raw:
                assert five[i] == pytest.approx(raw[i], rel=rel, abs=1e-9), (q, i)
        # Proof the 5m blocks were read: like Thanos, count_over_time counts 5m windows there.
        assert set(ask("count_over_time(e2e_temperature[6h])", "0s").values()) == {360.0}
        assert set(ask("count_over_time(e2e_temperature[6h])", "5m").values()) == {72.0}
        bad = requests.get(f"{api}/query", params={"query": "up", "max_source_resolution": "-5m"}).json()
        assert bad["errorType"] == "bad_data"
    finally:
        for p in procs:
            stop_process(p)


def test_three_replicas_dedup_into_one_stream(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    t0 = start_ms()
    union: dict = {}
    for seed, rep in ((1, "a"), (2, "b"), (3, "c")):
        s = gen_series(t0, 10, drop=0.25, seed=seed)
        promtool_blocks(tmp_path, s, bucket, {"cluster": "eu", "replica": rep})
        for k, (ts, vs) in s.items():
            union.setdefault(k, {}).update(zip(ts.tolist(), vs.tolist()))
    r = run_compactor(tmp_path, bucket, "--deduplication.replica-label", "replica")
    assert r.returncode == 0, r.stderr
    metas = live_metas(bucket)
    assert all("replica" not in m["thanos"]["labels"] for m in metas)
    got = served_raw(bucket, tmp_path, t0, t0 + 10 * H)
    ext = (("cluster", "eu"),)
    assert set(got) == {with_ext(k, ext) for k in union}
    for k, pts in union.items():
        t, v = got[with_ext(k, ext)]
        assert t.tolist() == sorted(pts) and v.tolist() == [pts[x] for x in sorted(pts)]
    assert asyncio.run(verify(FilesystemBucket(str(bucket)), deep=True)) == []


def test_sigkill_mid_run_then_rerun_leaves_consistent_bucket(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    t0 = start_ms()
    series = gen_series(t0, 72)
    promtool_blocks(tmp_path, series, bucket, {"cluster": "eu"})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    killed = 0
    for delay in (0.35, 0.45, 0.55, 0.4, 0.6, 0.5, 0.7):
        p = subprocess.Popen(compact_cmd(tmp_path, bucket), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        p.wait()
    assert killed >= 2
    for _ in range(2):
        r = run_compactor(tmp_path, bucket)
        assert r.returncode == 0, r.stderr
    ext = (("cluster", "eu"),)
    got = served_raw(bucket, tmp_path, t0, t0 + 72 * H)
    assert_same(got, {with_ext(k, ext): v for k, v in series.items()})
    assert asyncio.run(verify(FilesystemBucket(str(bucket)), deep=True)) == []
    # every original block is gone; what is left covers each source exactly once
    metas = live_metas(bucket)
    # (as objects: a killed upload can leave an empty directory or a temp file behind on
    # a filesystem bucket, which object storage would not have)
    assert bucket_objects_without_meta(bucket) == []
    raw_sources = [s for m in metas if res_of(m) == 0
                   for s in m["compaction"]["sources"]]
    assert len(raw_sources) == len(set(raw_sources)) == 36


def test_wait_mode_serves_metrics(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = compact_cmd(tmp_path, bucket, "--wait", "--wait-interval", "1s")
    cmd[cmd.index("--http-address") + 1] = f"127.0.0.1:{port}"
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}/-/ready", proc=p)
        assert requests.get(f"http://127.0.0.1:{port}/-/healthy", timeout=5).status_code == 200
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "thanos_compact_halted 0.0" in body
        assert "thanos_compact_iterations_total" in body
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
