"""``promring store`` as a real process over a filesystem bucket: ready after the first sync,
serves uploaded blocks over gRPC, picks up new ones on its sync interval, exits cleanly."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import requests

from harness import REPO, free_port, promring_cmd, wait_ready
from receiver.tsdb.block import write_block_from_samples
from receiver.tsdb.chunkenc import decode_many
from receiver.tsdb.labels import Matcher
from storeapi.client import StoreClient

H2 = 2 * 3600 * 1000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H2


def _block(tmp: Path, bucket: Path, cluster: str, n: int) -> list[tuple]:
    series = []
    for i in range(n):
        ts = T0 + np.arange(480, dtype=np.int64) * 15_000
        series.append(((("__name__", "up"), ("instance", f"h{i:03d}")), ts, ts / 1000.0 + i))
    meta = write_block_from_samples(tmp / "src", series, T0, T0 + H2,
                                    thanos_meta={"labels": {"cluster": cluster}})
    shutil.copytree(tmp / "src" / meta.ulid, bucket / (meta.ulid + ".tmp"))
    (bucket / (meta.ulid + ".tmp")).rename(bucket / meta.ulid)  # appear complete at once
    return series


async def _query(port: int, cluster: str):
    c = StoreClient(f"127.0.0.1:{port}", timeout_s=30)
    try:
        return await c.series(T0, T0 + H2, [Matcher("=", "cluster", cluster),
                                            Matcher("=", "__name__", "up")])
    finally:
        await c.close()


def test_store_process_serves_bucket_and_resyncs(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    conf = tmp_path / "objstore.yml"
    conf.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    first = _block(tmp_path, bucket, "one", 30)
    grpc, http = free_port(), free_port()
    log = open(tmp_path / "store.log", "wb")
    proc = subprocess.Popen(promring_cmd() + [
        "store", "--data-dir", str(tmp_path / "data"), "--objstore.config-file", str(conf),
        "--grpc-address", f"127.0.0.1:{grpc}", "--http-address", f"127.0.0.1:{http}",
        "--sync-block-duration", "1s"], stdout=log, stderr=subprocess.STDOUT,
        # The checkout first: an editable install made before store/ existed cannot see it.
        env={**os.environ, "PYTHONPATH": str(REPO)})
    log.close()
    try:
        wait_ready(f"http://127.0.0.1:{http}/-/ready", proc=proc)
        got = asyncio.run(_query(grpc, "one"))
        assert len(got) == len(first)
        for s, (lbls, ts, vals) in zip(got, first):
            assert s.labels == tuple(sorted(lbls + (("cluster", "one"),)))
            t, v = decode_many([c[2] for c in s.chunks], T0, T0 + H2)
            assert np.array_equal(t, ts) and np.array_equal(v, vals)

        _block(tmp_path, bucket, "two", 5)
        deadline = time.monotonic() + 30
        while not asyncio.run(_query(grpc, "two")):
            assert time.monotonic() < deadline, "new block not picked up by the periodic sync"
            time.sleep(0.2)
        metrics = requests.get(f"http://127.0.0.1:{http}/metrics", timeout=5).text
        assert "thanos_bucket_store_blocks_loaded 2.0" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert rc == 0, (tmp_path / "store.log").read_text()


def test_store_and_query_processes_serve_intact_blocks_past_corrupt_ones(tmp_path: Path) -> None:
    """``promring store`` + ``promring query``: a block with garbage in its index and one with a
    truncated chunks file (no sizes in its meta.json, so only a read can tell) neither fail the
    query nor the process; the query answers exactly from the intact block, twice."""
    from harness import stop_process, store_and_query
    from receiver.tsdb.index import IndexReader

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    intact = _block(tmp_path, bucket, "a", 20)
    _block(tmp_path, bucket, "b", 20)
    _block(tmp_path, bucket, "c", 20)
    by_cluster = {json.loads((d / "meta.json").read_text())["thanos"]["labels"]["cluster"]: d
                  for d in bucket.iterdir()}
    index = by_cluster["b"] / "index"
    toc = IndexReader(index.read_bytes()).toc
    data = bytearray(index.read_bytes())
    mid = (toc.series + toc.label_indices) // 2
    data[mid:mid + 64] = b"\xab" * 64
    index.write_bytes(bytes(data))
    seg = by_cluster["c"] / "chunks" / "000001"
    seg.write_bytes(seg.read_bytes()[: seg.stat().st_size // 2])
    meta = json.loads((by_cluster["c"] / "meta.json").read_text())
    del meta["thanos"]["files"]
    (by_cluster["c"] / "meta.json").write_text(json.dumps(meta))

    procs, api = store_and_query(tmp_path, f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    try:
        for _ in range(2):
            r = requests.get(f"{api}/query", params={"query": "count_over_time(up[3h])",
                                                     "time": (T0 + H2) / 1000}, timeout=30)
            assert r.status_code == 200, r.text
            got = {(s["metric"]["cluster"], s["metric"]["instance"]): s["value"][1]
                   for s in r.json()["data"]["result"]}
            assert got == {("a", dict(lbls)["instance"]): "480" for lbls, _, _ in intact}
        store_log = (tmp_path / "store.log").read_text()
        for d in (by_cluster["b"], by_cluster["c"]):
            assert d.name in store_log and "corrupt block taken out of service" in store_log
    finally:
        for p in procs:
            stop_process(p)
    assert all(p.returncode == 0 for p in procs)
