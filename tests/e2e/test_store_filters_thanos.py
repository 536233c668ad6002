"""``promring store``'s block filters next to Thanos v0.42.4's store on one bucket with the same
flags (--selector.relabel-config with hashmod over __block_id, --consistency-delay,
--ignore-deletion-marks-delay): the same blocks served and the same sync states."""
from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import requests

from harness import store_process
from receiver.tsdb.block import write_block_from_samples
from storeapi.client import StoreClient
from test_thanos_interop import STARTUP_S, thanos

H2 = 2 * 3600 * 1000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H2
STATES = ("loaded", "label-excluded", "too-fresh", "marked-for-deletion", "duplicate")
# shard "1" of the cluster names' hashes: c1 c2 c3 c7 fresh0 fresh1 (the rest are excluded);
# a block without __block_id would be dropped by the second rule
SELECTOR = ("- {action: hashmod, source_labels: [cluster], target_label: shard, modulus: 2}\n"
            "- {action: drop, source_labels: [__block_id], regex: ''}\n"
            "- {action: keep, source_labels: [shard], regex: '1'}\n"
            "- {action: drop, source_labels: [cluster], regex: c3}\n")


def _bucket(tmp: Path) -> Path:
    """Twelve blocks, one `cluster` label each: most uploaded 2 h ago, two just now; marks
    of an hour ago, of 25 h ago and a partial one, in and out of the shard."""
    bucket = tmp / "bucket"
    ts = T0 + np.arange(120, dtype=np.int64) * 60_000
    series = [((("__name__", "up"), ("i", "0")), ts, np.ones(120))]
    old = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    names = [f"c{i}" for i in range(8)] + ["fresh0", "fresh1", "dropped", "dropped2"]
    for name in names:
        meta = write_block_from_samples(bucket, series, T0, T0 + H2, thanos_meta={
            "labels": {"cluster": name}, "source": "sidecar"})
        d = bucket / meta.ulid
        doc = json.loads((d / "meta.json").read_text())
        if not name.startswith("fresh"):
            doc["thanos"]["upload_time"] = old
        (d / "meta.json").write_text(json.dumps(doc))
        mark = {"c1": 3600, "c2": 25 * 3600, "c3": 3600, "c4": 25 * 3600}.get(name)
        if mark is not None:
            (d / "deletion-mark.json").write_text(json.dumps(
                {"id": meta.ulid, "deletion_time": int(time.time() - mark), "version": 1}))
        if name in ("c5", "c7"):
            (d / "deletion-mark.json").write_text('{"id": "')
    return bucket


def _served(address: str) -> list[str]:
    async def go() -> list[str]:
        client = StoreClient(address, timeout_s=30)
        try:
            return sorted(dict(ls).get("cluster", "") for ls in (await client.info()).label_sets)
        finally:
            await client.close()
    return asyncio.run(go())


def _states(metrics_url: str) -> dict[str, float]:
    out = {}
    for line in requests.get(metrics_url, timeout=10).text.splitlines():
        for s in STATES:
            if line.startswith(f'thanos_blocks_meta_synced{{state="{s}"}}'):
                out[s] = float(line.rsplit(" ", 1)[1])
    return out


def test_block_filters_serve_what_thanos_store_serves(tmp_path: Path) -> None:
    bucket = _bucket(tmp_path)
    conf = tmp_path / "objstore.yml"
    conf.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    sel = tmp_path / "selector.yml"
    sel.write_text(SELECTOR)
    flags = ["--consistency-delay=1h", "--ignore-deletion-marks-delay=24h",
             f"--selector.relabel-config-file={sel}"]
    ours = store_process(tmp_path, "ours", conf, *flags).start()
    try:
        theirs = thanos(tmp_path, "theirs", "store", f"--objstore.config-file={conf}",
                        f"--data-dir={tmp_path / 'theirs-data'}", *flags).start(STARTUP_S)
        try:
            want = (_served(theirs.grpc), _states(theirs.url("http", "/metrics")))
            got = (_served(ours.grpc), _states(ours.url("http", "/metrics")))
        finally:
            theirs.stop()
    finally:
        ours.stop()
    # the check can tell: each filter holds back or keeps something
    assert want == (["c1", "c7"], {"loaded": 2, "label-excluded": 7, "too-fresh": 2,
                                   "marked-for-deletion": 1, "duplicate": 0})
    assert got == want
