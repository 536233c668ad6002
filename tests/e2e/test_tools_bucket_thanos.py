"""``tools bucket mark|rewrite|upload-blocks`` side by side with Thanos v0.42.4's: the same
command line (``thanos`` replaced by ``promring``) on twin buckets leaves the same objects,
marks and meta sections, and rewritten blocks whose samples promtool reads identically."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from harness import promring_cmd
from peers import peer
from test_blocks import HOUR, _openmetrics, needs_promtool, om_series, parse_dump
from test_tools_bucket import make_block, sample_series


def twins(tmp_path: Path, fill) -> dict[str, Path]:
    """Two identical buckets, one for each tool, made by ``fill(bucket)``."""
    ours, theirs = tmp_path / "ours" / "bucket", tmp_path / "thanos" / "bucket"
    ours.mkdir(parents=True)
    fill(ours)
    shutil.copytree(ours, theirs)
    return {"promring": ours, "thanos": theirs}


def run_both(buckets: dict[str, Path], command: str) -> None:
    """``command`` (after ``tools bucket``, with ``{bucket}``/``{dir}`` placeholders) run by
    both tools, each on its own bucket and working directory."""
    for tool, bucket in buckets.items():
        (bucket.parent / "objstore.yml").write_text(
            f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
        argv = shlex.split(command.format(bucket=bucket.parent / "objstore.yml", dir=bucket.parent))
        exe = promring_cmd() if tool == "promring" else [peer("thanos")]
        r = subprocess.run(exe + ["tools", "bucket", *argv], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, (tool, r.stderr)


def objects(bucket: Path) -> set[str]:
    return {str(p.relative_to(bucket)) for p in bucket.rglob("*") if p.is_file()}


def _seconds(rfc3339: str) -> float:
    """Go's RFC 3339 (nanoseconds) as Unix seconds."""
    from datetime import datetime
    whole, _, frac = rfc3339.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (frac or "0"))


def without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def test_mark_writes_thanos_marks(tmp_path: Path) -> None:
    t0 = (int(time.time() * 1000) // HOUR - 4) * HOUR
    ulid = []
    buckets = twins(tmp_path, lambda b: ulid.append(make_block(b, t0, sample_series(t0)[:1])))
    for marker in ("deletion-mark.json", "no-compact-mark.json", "no-downsample-mark.json"):
        run_both(buckets, f"mark --objstore.config-file {{bucket}} --id {ulid[0]} "
                          f"--marker {marker} --details 'ticket 7'")
        ours, theirs = (json.loads((b / ulid[0] / marker).read_text()) for b in buckets.values())
        time_key = next(k for k in theirs if k.endswith("_time"))
        assert without(ours, time_key) == without(theirs, time_key)
        assert abs(ours[time_key] - theirs[time_key]) < 120
    run_both(buckets, f"mark --objstore.config-file {{bucket}} --id {ulid[0]} "
                      "--marker no-compact-mark.json --remove")
    assert objects(buckets["promring"]) == objects(buckets["thanos"])


@needs_promtool
def test_rewrite_matches_thanos(tmp_path: Path) -> None:
    t0 = (int(time.time() * 1000) // HOUR - 4) * HOUR
    ulid = []
    buckets = twins(tmp_path, lambda b: ulid.append(make_block(b, t0, sample_series(t0))))
    (tmp_path / "delete.yml").write_text(
        "- matchers: '{__name__=\"secret_metric\", team=\"x\"}'\n"
        f"- matchers: '{{__name__=\"windowed_metric\"}}'\n"
        f"  intervals: [{{mint: {t0 + HOUR}, maxt: {t0 + HOUR + 600_000}}}]\n"
        "- matchers: '{__name__=\"kept_metric\", absent_label!=\"x\"}'\n")
    run_both(buckets, f"rewrite --objstore.config-file {{bucket}} --id {ulid[0]} "
                      f"--rewrite.to-delete-config-file {tmp_path / 'delete.yml'} "
                      "--no-dry-run --delete-blocks --tmp.dir {dir}/tmp")
    dumps, metas = {}, {}
    for tool, bucket in buckets.items():
        (new,) = [p for p in bucket.iterdir() if p.name != ulid[0]]
        metas[tool] = json.loads((new / "meta.json").read_text())
        assert (bucket / ulid[0] / "deletion-mark.json").exists(), tool
        scratch = tmp_path / f"dump-{tool}"
        shutil.copytree(new, scratch / new.name)
        (scratch / "wal").mkdir()
        dumps[tool] = parse_dump(subprocess.run(["promtool", "tsdb", "dump", str(scratch)],
                                                check=True, capture_output=True, text=True).stdout)
    assert dumps["promring"] == dumps["thanos"]
    assert len(dumps["promring"]) == 4
    ours, theirs = metas["promring"], metas["thanos"]
    assert ours["stats"]["numSeries"] == theirs["stats"]["numSeries"]
    assert ours["stats"]["numSamples"] == theirs["stats"]["numSamples"]
    for key in ("source", "labels", "downsample"):
        assert ours["thanos"][key] == theirs["thanos"][key], key
    assert "upload_time" in ours["thanos"] and ours["thanos"]["segment_files"]
    assert ours["thanos"]["rewrites"][0]["sources"] == theirs["thanos"]["rewrites"][0]["sources"]
    assert (ours["minTime"], ours["maxTime"]) == (theirs["minTime"], theirs["maxTime"])


@needs_promtool
def test_upload_blocks_matches_thanos(tmp_path: Path) -> None:
    t0 = (int(time.time() * 1000) // HOUR - 6) * HOUR
    om = tmp_path / "data.om"
    om.write_text(_openmetrics(om_series(t0, 3, seed=9, job="j")))
    dirs = {}
    for tool in ("promring", "thanos"):
        dirs[tool] = tmp_path / tool / "prom"
        dirs[tool].parent.mkdir()
        (tmp_path / tool / "bucket").mkdir()
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om),
                    str(dirs["promring"])], check=True, capture_output=True)
    shutil.copytree(dirs["promring"], dirs["thanos"])
    buckets = {tool: tmp_path / tool / "bucket" for tool in dirs}
    run_both(buckets, "upload-blocks --objstore.config-file {bucket} --path {dir}/prom "
                      "--label 'cluster=\"eu1\"'")
    assert objects(buckets["promring"]) == objects(buckets["thanos"])
    for meta in sorted(buckets["thanos"].glob("*/meta.json")):
        theirs = json.loads(meta.read_text())
        ours = json.loads((buckets["promring"] / meta.parent.name / "meta.json").read_text())
        assert without(ours, "thanos") == without(theirs, "thanos")
        for key in ("labels", "source", "downsample", "files", "segment_files"):
            assert ours["thanos"].get(key) == theirs["thanos"].get(key), key
        assert abs(_seconds(ours["thanos"]["upload_time"]) - _seconds(theirs["thanos"]["upload_time"])) < 120
    shipped = [json.loads((d / "thanos.shipper.json").read_text()) for d in dirs.values()]
    assert sorted(shipped[0]["uploaded"]) == sorted(shipped[1]["uploaded"])
