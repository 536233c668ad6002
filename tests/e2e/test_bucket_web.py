"""``promring tools bucket web`` (Thanos's bucket UI) over a filesystem bucket holding raw,
compacted, downsampled, deletion-marked and partially uploaded blocks, checked in headless
chromium."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import requests

from cdp import CHROMIUM, Browser
from harness import ServerProcess, free_port, promring_cmd

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/test.sh installs it)")

H = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (2 * H)
LABELS = {"cluster": "eu", "replica": "a"}


def _block(bucket: Path, i: int, lo: int, hi: int, level: int = 1, resolution: int = 0,
           marked: bool = False) -> str:
    ulid = f"01JB{i:022d}"
    (bucket / ulid).mkdir(parents=True)
    meta = {"ulid": ulid, "minTime": lo, "maxTime": hi, "version": 1,
            "stats": {"numSamples": 1000 * i, "numSeries": 10 * i, "numChunks": 20 * i},
            "compaction": {"level": level, "sources": [ulid]},
            "thanos": {"labels": LABELS, "downsample": {"resolution": resolution}, "source": "receive",
                       "files": [{"rel_path": "index", "size_bytes": 4096 * i}]}}
    (bucket / ulid / "meta.json").write_text(json.dumps(meta))
    if marked:
        (bucket / ulid / "deletion-mark.json").write_text(json.dumps({"id": ulid, "version": 1}))
    return ulid


def test_bucket_web_shows_blocks_by_labels_and_resolution(tmp_path, procs):
    bucket = tmp_path / "bucket"
    raw = [_block(bucket, i + 1, T0 + i * 2 * H, T0 + (i + 1) * 2 * H) for i in range(3)]
    compacted = _block(bucket, 4, T0, T0 + 6 * H, level=2, marked=True)
    _block(bucket, 5, T0, T0 + 6 * H, level=2, resolution=300_000)
    _block(bucket, 6, T0, T0 + 6 * H, level=2, resolution=3_600_000)
    partial = f"01JB{7:022d}"
    (bucket / partial).mkdir()
    (bucket / partial / "index").write_bytes(b"x")
    port = free_port()
    objstore = f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n"
    p = ServerProcess(promring_cmd() + ["tools", "bucket", "web", f"--objstore.config={objstore}",
                                        f"--http-address=127.0.0.1:{port}", "--label=cluster"],
                      tmp_path, "bucket-web", {"http": port},
                      [f"http://127.0.0.1:{port}/-/ready"]).start()
    procs.append(p)
    base = f"http://127.0.0.1:{port}"
    body = requests.get(f"{base}/api/v1/blocks", timeout=10).json()
    assert body["status"] == "success" and body["data"]["label"] == "cluster"
    assert sorted(b["ulid"] for b in body["data"]["blocks"]) == sorted(
        [*raw, compacted, f"01JB{5:022d}", f"01JB{6:022d}", partial])
    assert requests.get(base + "/", allow_redirects=False, timeout=10).headers["Location"] == "/blocks"

    async def go():
        async with Browser() as page:
            await page.goto(f"{base}/blocks")
            await page.wait_for("document.querySelectorAll('svg.timeline rect.block').length === 6")
            groups = await page.eval("[...document.querySelectorAll('.block-group')].map(g => g.dataset.group)")
            assert groups == ["cluster=eu · 1h", "cluster=eu · 5m", "cluster=eu · raw"]
            raw_card = "document.querySelector('.block-group[data-group=\"cluster=eu · raw\"]')"
            assert await page.eval(f"{raw_card}.querySelectorAll('rect.block').length") == 4
            assert await page.eval(f"{raw_card}.querySelectorAll('text').length") == 2  # levels 1, 2
            assert await page.eval("document.querySelectorAll('rect.block.marked').length") == 1
            assert partial in await page.eval("document.querySelector('.alert.warning').textContent")
            await page.click(f'rect[data-ulid="{raw[1]}"]')
            text = await page.wait_for("document.querySelector('table.block-details')?.textContent")
            assert raw[1] in text and "Series20" in text and "Level1" in text and "Size8.0 KiB" in text
            shots = Path(os.environ.get("PROMRING_SCREENSHOTS") or tmp_path)  # README's picture
            shots.mkdir(parents=True, exist_ok=True)
            await page.screenshot(shots / "blocks.png")
    asyncio.run(go())


def test_compactor_http_port_serves_the_bucket_viewer(tmp_path, procs):
    """As Thanos's compactor: ``compact --wait`` shows its bucket's blocks on --http-address."""
    bucket = tmp_path / "bucket"
    # one block per group (raw, 5m, 1h), too short to compact or downsample: the bucket stays put
    ulids = [_block(bucket, 1, T0, T0 + 2 * H), _block(bucket, 2, T0, T0 + 6 * H, 2, 300_000),
             _block(bucket, 3, T0, T0 + 6 * H, 2, 3_600_000)]
    port = free_port()
    objstore = f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n"
    p = ServerProcess(promring_cmd() + ["compact", "--wait", "--wait-interval=1h",
                                        f"--data-dir={tmp_path / 'work'}", f"--objstore.config={objstore}",
                                        f"--http-address=127.0.0.1:{port}", "--bucket-web-label=cluster"],
                      tmp_path, "compact", {"http": port}, [f"http://127.0.0.1:{port}/-/ready"]).start()
    procs.append(p)
    base = f"http://127.0.0.1:{port}"
    body = requests.get(f"{base}/api/v1/blocks", timeout=10).json()
    assert body["status"] == "success" and body["data"]["label"] == "cluster"
    assert sorted(b["ulid"] for b in body["data"]["blocks"]) == ulids
    assert "thanos_compact_halted 0.0" in requests.get(f"{base}/metrics", timeout=10).text

    async def go():
        async with Browser() as page:
            await page.goto(f"{base}/blocks")
            await page.wait_for("document.querySelectorAll('svg.timeline rect.block').length === 3")
            groups = await page.eval("[...document.querySelectorAll('.block-group')].map(g => g.dataset.group)")
            assert groups == ["cluster=eu · 1h", "cluster=eu · 5m", "cluster=eu · raw"]
    asyncio.run(go())
