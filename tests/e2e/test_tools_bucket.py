"""``promring tools bucket mark|rewrite|upload-blocks|retention`` as an operator runs them:
the CLI process on a filesystem bucket, checked through ``promring store`` + ``promring
query``, Debian's promtool and Prometheus 2.42."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import requests

from harness import PrometheusProcess, promring_cmd, stop_process, store_and_query

# Marked blocks leave the store at its next sync, not after Thanos's default 24 h.
NO_MARK_DELAY = ("--ignore-deletion-marks-delay=0s",)
from receiver.tsdb.block import new_ulid, write_block_from_samples
from test_blocks import HOUR, _openmetrics, needs_promtool, om_series, parse_dump

LABELS = {"cluster": "eu1"}


def tool(*args: str, ok: bool = True, process: bool = False) -> subprocess.CompletedProcess:
    """``promring tools bucket *args``: as a child process, or (faster: no interpreter start)
    through the same ``main`` in this process, with its exit status, stdout and stderr."""
    if process:
        r = subprocess.run(promring_cmd() + ["tools", "bucket", *args], capture_output=True,
                           text=True, timeout=120)
    else:
        from promring.cli import main
        out, err = io.StringIO(), io.StringIO()
        root = logging.getLogger()
        saved = root.handlers[:], root.level
        code = 0
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(["tools", "bucket", *args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                err.write(e.code + "\n")
        finally:
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
        r = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def objstore(bucket: Path) -> str:
    return f"--objstore.config=type: FILESYSTEM\nconfig:\n  directory: {bucket}\n"


def make_block(bucket: Path, t0: int, series, labels=LABELS, ulid: str | None = None) -> str:
    """A level-1 block of ``series`` [(labels, ts, values)] straight into the bucket dir."""
    meta = write_block_from_samples(bucket, sorted((tuple(sorted(l.items())), np.asarray(ts),
                                                      np.asarray(vs)) for l, ts, vs in series),
                                    t0, t0 + 2 * HOUR, ulid=ulid,
                                    thanos_meta={"labels": dict(labels), "source": "receive"})
    return meta.ulid


def sample_series(t0: int):
    rng = np.random.default_rng(11)
    ts = t0 + np.arange(0, 2 * HOUR, 15_000)
    out = []
    for name, extra in (("secret_metric", {"team": "x"}), ("secret_metric", {"team": "y"}),
                        ("kept_metric", {"team": "x"}), ("kept_metric", {"team": "z"}),
                        ("windowed_metric", {"team": "x"})):
        out.append(({"__name__": name, "job": "j", **extra}, ts,
                    np.round(rng.normal(10, 3, len(ts)), 3)))
    return out


def all_samples(api: str, t_end_ms: int, drop=("cluster",), selector: str = '{job="j"}',
                window: str = "5h", as_text: bool = False) -> dict:
    """Every raw sample the querier serves in ``window`` before ``t_end_ms``, by labels (minus
    ``drop``); values as floats, or ``as_text`` as the API wrote them (NaN compares equal)."""
    r = requests.get(f"{api}/query", params={"query": f"{selector}[{window}]",
                                             "time": t_end_ms / 1000}, timeout=60).json()
    assert r["status"] == "success", r
    return {tuple(sorted((k, v) for k, v in s["metric"].items() if k not in drop)):
            [(int(round(float(t) * 1000)), v if as_text else float(v)) for t, v in s["values"]]
            for s in r["data"]["result"]}


async def _state(bucket, sync_state):
    try:
        return await sync_state(bucket, 4)
    finally:
        await bucket.close()


def key(lbls: dict) -> tuple:
    return tuple(sorted(lbls.items()))


@needs_promtool
def test_rewrite_deletes_series_for_store_gateway_and_promtool(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    t0 = (int(time.time() * 1000) // HOUR - 4) * HOUR
    series = sample_series(t0)
    old = make_block(bucket, t0, series)
    window = (t0 + HOUR, t0 + HOUR + 10 * 60_000)
    deletions = tmp_path / "delete.yml"
    deletions.write_text(
        "- matchers: '{__name__=\"secret_metric\", team=\"x\"}'\n"
        "  request_id: gdpr-1\n"
        f"- matchers: '{{__name__=\"windowed_metric\"}}'\n"
        f"  intervals: [{{mint: {window[0]}, maxt: {window[1]}}}]\n"
        # As in Thanos, a matcher on a label the series lacks never matches: nothing deleted.
        "- matchers: '{__name__=\"kept_metric\", absent_label!=\"x\"}'\n")
    args = ["rewrite", objstore(bucket), "--id", old, "--rewrite.to-delete-config-file",
            str(deletions), "--tmp.dir", str(tmp_path / "rw")]

    before = sorted(p.name for p in bucket.iterdir())
    dry = tool(*args, process=True)
    assert sorted(p.name for p in bucket.iterdir()) == before  # dry run (the default) changes nothing
    assert 'Deleted {__name__="secret_metric", job="j", team="x"}' in dry.stderr
    assert "would delete 1 series" in dry.stdout

    tool(*args, "--no-dry-run", "--delete-blocks", process=True)
    new = [p.name for p in bucket.iterdir() if p.name != old]
    assert len(new) == 1
    meta = json.loads((bucket / new[0] / "meta.json").read_text())
    assert meta["thanos"]["source"] == "bucket.rewrite"
    assert meta["thanos"]["labels"] == LABELS
    assert meta["compaction"]["sources"] == [new[0]]
    assert meta["thanos"]["rewrites"][0]["sources"] == [old]
    assert meta["thanos"]["rewrites"][0]["deletions_applied"][0]["request_id"] == "gdpr-1"
    assert json.loads((bucket / old / "deletion-mark.json").read_text())["details"] == "block rewritten"

    want = {}
    for lbls, ts, vs in series:
        if lbls["__name__"] == "secret_metric" and lbls["team"] == "x":
            continue
        keep = ~((ts >= window[0]) & (ts <= window[1])) if lbls["__name__"] == "windowed_metric" \
            else np.ones(len(ts), bool)
        want[key(lbls)] = list(zip(ts[keep].tolist(), vs[keep].tolist()))
    assert meta["stats"]["numSamples"] == sum(len(v) for v in want.values())

    # promtool reads the rewritten block: the series is gone, every other sample is intact.
    scratch = tmp_path / "dump"
    shutil.copytree(bucket / new[0], scratch / new[0])
    (scratch / "wal").mkdir()
    dump = parse_dump(subprocess.run(["promtool", "tsdb", "dump", str(scratch)], check=True,
                                     capture_output=True, text=True).stdout)
    assert dump == want

    # The store gateway drops the deletion-marked original and serves only the rewrite.
    procs, api = store_and_query(tmp_path, f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n",
                                 store_args=NO_MARK_DELAY)
    try:
        assert all_samples(api, t0 + 2 * HOUR) == want
    finally:
        for p in procs:
            stop_process(p)


def test_rewrite_refuses_bad_requests_before_touching_the_bucket(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    t0 = (int(time.time() * 1000) // HOUR - 4) * HOUR
    old = make_block(bucket, t0, sample_series(t0)[:1])
    before = sorted(str(p) for p in bucket.rglob("*"))
    for extra, needle in (
            ([], "rewrite configuration should be provided"),
            (["--rewrite.to-delete-config", "- matchers: '{__name__=~\"(\"}'"], "entry 0"),
            (["--rewrite.to-delete-config", "matchers: x"], "non-empty YAML list"),
            (["--rewrite.to-delete-config",
              "- matchers: '{a=\"b\"}'\n  intervals: [{mint: 0, maxt: 99999999999999999999999}]"],
             "64-bit"),
            (["--rewrite.to-relabel-config", "- action: labelmap\n  regex: x"], "labelmap"),
            (["--rewrite.to-delete-config", "- matchers: '{a=\"b\"}'", "--id", "nope"], "ULID")):
        r = tool("rewrite", objstore(bucket), "--id", old, "--no-dry-run", *extra, ok=False)
        assert r.returncode == 2, (extra, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # A working directory that cannot be made: one line, exit 1, bucket untouched.
    (tmp_path / "a-file").write_text("")
    r = tool("rewrite", objstore(bucket), "--id", old, "--no-dry-run", "--tmp.dir",
             str(tmp_path / "a-file" / "rw"), "--rewrite.to-delete-config",
             "- matchers: '{job=\"j\"}'", ok=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(str(p) for p in bucket.rglob("*")) == before


def test_rewrite_relabel_drop_removes_series(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    t0 = (int(time.time() * 1000) // HOUR - 4) * HOUR
    series = sample_series(t0)
    old = make_block(bucket, t0, series)
    tool("rewrite", objstore(bucket), "--id", old, "--no-dry-run", "--tmp.dir",
         str(tmp_path / "rw"), "--rewrite.to-relabel-config",
         "- action: drop\n  source_labels: [team]\n  regex: 'x|z'\n")
    new = [p.name for p in bucket.iterdir() if p.name != old]
    assert len(new) == 1 and not (bucket / old / "deletion-mark.json").exists()
    meta = json.loads((bucket / new[0] / "meta.json").read_text())
    assert meta["stats"]["numSeries"] == 1  # only secret_metric{team="y"} is left
    assert (tmp_path / "rw" / new[0] / "change.log").read_text().count("Deleted") == 4
    assert not (tmp_path / "rw" / new[0] / "index").exists()  # uploaded: only the log is kept
    # Deleting every series uploads no (empty) block; --delete-blocks still marks the original.
    r = tool("rewrite", objstore(bucket), "--id", new[0], "--no-dry-run", "--delete-blocks",
             "--tmp.dir", str(tmp_path / "rw"), "--rewrite.to-delete-config",
             "- matchers: '{job=\"j\"}'")
    assert "every series deleted, no block uploaded" in r.stdout
    assert sorted(p.name for p in bucket.iterdir()) == sorted([old, new[0]])
    assert (bucket / new[0] / "deletion-mark.json").exists()


def test_mark_and_remove_marks(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    t0 = (int(time.time() * 1000) // HOUR - 4) * HOUR
    a = make_block(bucket, t0, sample_series(t0)[:1])
    b = make_block(bucket, t0 + 2 * HOUR, [(l, ts + 2 * HOUR, vs) for l, ts, vs in sample_series(t0)[:1]])
    for marker, field in (("no-compact-mark.json", "no_compact_time"),
                          ("no-downsample-mark.json", "no_downsample_time"),
                          ("deletion-mark.json", "deletion_time")):
        tool("mark", objstore(bucket), "--id", a, "--id", b, "--marker", marker,
             "--details", "operator says so")
        for u in (a, b):
            m = json.loads((bucket / u / marker).read_text())
            assert m["id"] == u and m["version"] == 1 and m["details"] == "operator says so"
            assert abs(m[field] - time.time()) < 600
            if marker != "deletion-mark.json":
                assert m["reason"] == "manual"
    # An existing mark keeps its time and details (Thanos: marking twice is a no-op).
    tool("mark", objstore(bucket), "--id", a, "--marker", "deletion-mark.json", "--details", "again")
    assert json.loads((bucket / a / "deletion-mark.json").read_text())["details"] == "operator says so"
    tool("mark", objstore(bucket), "--id", a, "--marker", "no-compact-mark.json", "--remove")
    assert not (bucket / a / "no-compact-mark.json").exists()
    assert (bucket / b / "no-compact-mark.json").exists()
    # The compactor reads them as its own: b is not compacted or downsampled, a is not compacted
    # any more but still not downsampled.
    from compactor.state import sync_state
    from objstore import bucket_from_config
    st = asyncio.run(_state(bucket_from_config(objstore(bucket).split("=", 1)[1]), sync_state))
    assert (st.blocks[b].no_compact, st.blocks[b].no_downsample) == (True, True)
    assert (st.blocks[a].no_compact, st.blocks[a].no_downsample) == (False, True)
    assert st.blocks[a].deletion_mark is not None
    # The marks take effect: the store gateway serves neither deletion-marked block.
    procs, api = store_and_query(tmp_path, f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n",
                                 store_args=NO_MARK_DELAY)
    try:
        assert all_samples(api, t0 + 4 * HOUR) == {}
    finally:
        for p in procs:
            stop_process(p)
    for args, needle in ((["--id", a, "--marker", "deletion-mark.json"], "--details"),
                         (["--id", new_ulid(), "--marker", "deletion-mark.json", "--details", "x"],
                          "no block"),
                         (["--id", "x", "--marker", "deletion-mark.json", "--details", "x"], "ULID"),
                         (["--id", a, "--marker", "bogus.json", "--details", "x"], "invalid choice")):
        r = tool("mark", objstore(bucket), *args, ok=False)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_retention_marks_only_blocks_past_retention(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    now = int(time.time() * 1000)
    t_old = (now // HOUR - 30 * 24) * HOUR
    t_new = (now // HOUR - 4) * HOUR
    # ULIDs dated at their data (older than the consistency delay, as real uploads are).
    old = make_block(bucket, t_old, sample_series(t_old)[:1], ulid=new_ulid(t_old + 2 * HOUR))
    recent = make_block(bucket, t_new, sample_series(t_new)[:1], ulid=new_ulid(t_new + 2 * HOUR))
    r = tool("retention", objstore(bucket), "--retention.resolution-raw", "7d")
    assert "marked 1 block" in r.stdout
    assert json.loads((bucket / old / "deletion-mark.json").read_text())["details"] == "retention policy"
    assert not (bucket / recent / "deletion-mark.json").exists()
    # --selector.relabel-config: only blocks whose external labels it keeps are considered.
    other = make_block(bucket, t_old, sample_series(t_old)[:1], labels={"cluster": "us1"},
                       ulid=new_ulid(t_old + 2 * HOUR))
    r = tool("retention", objstore(bucket), "--retention.resolution-raw", "7d",
             "--selector.relabel-config", "- action: keep\n  source_labels: [cluster]\n"
                                          "  regex: eu.*\n")
    assert "marked 0 block" in r.stdout and not (bucket / other / "deletion-mark.json").exists()
    tool("retention", objstore(bucket), "--retention.resolution-raw", "7d")
    assert (bucket / other / "deletion-mark.json").exists()
    r = tool("retention", objstore(bucket), "--retention.resolution-raw", "7days", ok=False)
    assert r.returncode == 2 and "7days" in r.stderr and "Traceback" not in r.stderr, r.stderr


@needs_promtool
def test_upload_blocks_migrates_a_prometheus_data_dir(tmp_path: Path) -> None:
    t0 = (int(time.time() * 1000) // HOUR - 6) * HOUR
    data = om_series(t0, 6, seed=7, job="j")
    om = tmp_path / "data.om"
    om.write_text(_openmetrics(data))
    prom = PrometheusProcess(tmp_path / "prom", "global: {}\n", "--storage.tsdb.retention.time=10y")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om),
                    str(prom.dir / "tsdb")], check=True, capture_output=True)
    t_end = t0 + 4 * HOUR + 60_000
    prom.start()  # a real Prometheus data dir: its WAL, head chunks, lock and blocks
    try:
        theirs = all_samples(prom.api, t_end, as_text=True)
    finally:
        prom.stop()
    assert sum(len(v) for v in theirs.values()) == 12 * 480

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    args = ["upload-blocks", objstore(bucket), "--path", str(prom.dir / "tsdb"),
            "--label", 'cluster="eu1"', "--shipper.upload-compacted"]
    r = tool(*args, process=True)
    uploaded = [line.split(":")[0] for line in r.stdout.splitlines() if line.endswith("uploaded")]
    assert uploaded and sorted(uploaded) == sorted(p.name for p in bucket.iterdir())
    for u in uploaded:
        meta = json.loads((bucket / u / "meta.json").read_text())
        assert meta["thanos"]["labels"] == LABELS and meta["thanos"]["source"] == "bucket.upload"
        assert {f["rel_path"] for f in meta["thanos"]["files"]} >= {"index", "meta.json"}
        assert "thanos" not in json.loads((prom.dir / "tsdb" / u / "meta.json").read_text())
    assert json.loads((prom.dir / "tsdb" / "thanos.shipper.json").read_text())["uploaded"]
    assert tool(*args).stdout == ""  # nothing new: a second run uploads nothing

    procs, api = store_and_query(tmp_path, f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    try:
        ours = all_samples(api, t_end, drop=(), as_text=True)
    finally:
        for p in procs:
            stop_process(p)
    assert {k: v for k, v in ours.items()} == {tuple(sorted(k + (("cluster", "eu1"),))): v
                                              for k, v in theirs.items()}
    r = tool("upload-blocks", objstore(bucket), "--path", str(prom.dir / "tsdb"), ok=False)
    assert r.returncode == 2 and "external labels" in r.stderr and "Traceback" not in r.stderr

    # A block with tombstones (Prometheus's delete_series) is not uploaded: its chunks still
    # hold the deleted series.
    fresh = tmp_path / "fresh-bucket"
    fresh.mkdir()
    (prom.dir / "tsdb" / "thanos.shipper.json").unlink()
    meta_path = prom.dir / "tsdb" / uploaded[0] / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["stats"]["numTombstones"] = 1
    meta_path.write_text(json.dumps(meta))
    r = tool("upload-blocks", objstore(fresh), "--path", str(prom.dir / "tsdb"), "--label",
             'cluster="eu1"', "--shipper.upload-compacted")
    assert f"{uploaded[0]}: skipped, it has tombstones" in r.stdout
    assert not (fresh / uploaded[0]).exists() and len(list(fresh.iterdir())) == len(uploaded) - 1


@needs_promtool
def test_upload_blocks_of_a_running_prometheus_that_cuts_its_own_blocks(tmp_path: Path) -> None:
    """Blocks Prometheus 2.42 wrote from its head (10s blocks, scraping itself every second),
    uploaded while it runs: every sample in them is served as Prometheus serves it."""
    prom = PrometheusProcess(tmp_path / "prom", "global:\n  scrape_interval: 1s\n"
                             "scrape_configs:\n  - job_name: prometheus\n"
                             "    static_configs: [{targets: ['$SELF']}]\n",
                             "--storage.tsdb.min-block-duration=10s",
                             "--storage.tsdb.max-block-duration=10s").start()
    tsdb = prom.dir / "tsdb"
    try:
        deadline = time.monotonic() + 90
        while len(list(tsdb.glob("*/meta.json"))) < 2:
            assert time.monotonic() < deadline, "Prometheus cut no blocks"
            time.sleep(0.5)
        bucket = tmp_path / "bucket"
        bucket.mkdir()
        tool("upload-blocks", objstore(bucket), "--path", str(tsdb), "--label", 'cluster="eu1"')
        metas = [json.loads(m.read_text()) for m in bucket.glob("*/meta.json")]
        assert len(metas) >= 2
        lo, hi = min(m["minTime"] for m in metas), max(m["maxTime"] for m in metas)
        window = f"{hi - lo}ms"  # (lo - 1, hi - 1]: exactly the uploaded blocks' samples
        theirs = all_samples(prom.api, hi - 1, selector='{__name__=~".+"}', window=window,
                             as_text=True)
    finally:
        prom.stop()
    assert sum(len(v) for v in theirs.values()) == sum(m["stats"]["numSamples"] for m in metas)
    procs, api = store_and_query(tmp_path, f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    try:
        ours = all_samples(api, hi - 1, drop=(), selector='{__name__=~".+"}', window=window,
                           as_text=True)
    finally:
        for p in procs:
            stop_process(p)
    assert ours == {tuple(sorted(k + (("cluster", "eu1"),))): v for k, v in theirs.items()}
