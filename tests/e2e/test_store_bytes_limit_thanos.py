"""``--store.grpc.downloaded-bytes-limit`` next to Thanos v0.42.4's store on one bucket: a
call whose postings alone cross the limit fails with the same status and message, for
Series and LabelNames, and counts in dropped{reason="bytes"} the same."""
from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import requests

from harness import store_process
from receiver.tsdb.labels import Matcher
from storeapi.client import StoreClient
from test_store_limits_process import H2, T0, _one_block_bucket
from test_thanos_interop import STARTUP_S, thanos

UP = [Matcher("=", "__name__", "up")]


async def _refusals(address: str) -> list[tuple[grpc.StatusCode, str]]:
    client = StoreClient(address, timeout_s=30)
    out = []
    try:
        for call in (lambda: client.series(T0, T0 + H2, UP),
                     lambda: client.series(T0, T0 + H2, UP, skip_chunks=True),
                     lambda: client.label_names(T0, T0 + H2, UP)):
            try:
                await call()
                out.append((grpc.StatusCode.OK, ""))
            except grpc.RpcError as e:
                out.append((e.code(), e.details()))
    finally:
        await client.close()
    return out


def _dropped_bytes(metrics_url: str) -> float:
    for line in requests.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith('thanos_bucket_store_queries_dropped_total{reason="bytes"'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no dropped-queries counter for bytes")


def test_downloaded_bytes_limit_refuses_as_thanos_store(tmp_path: Path) -> None:
    conf, ulid = _one_block_bucket(tmp_path)
    flag = "--store.grpc.downloaded-bytes-limit=1B"
    ours = store_process(tmp_path, "ours", conf, flag).start()
    try:
        theirs = thanos(tmp_path, "theirs", "store", f"--objstore.config-file={conf}",
                        f"--data-dir={tmp_path / 'theirs-data'}", flag).start(STARTUP_S)
        try:
            want = asyncio.run(_refusals(theirs.grpc))
            got = asyncio.run(_refusals(ours.grpc))
            dropped = (_dropped_bytes(theirs.url("http", "/metrics")),
                       _dropped_bytes(ours.url("http", "/metrics")))
        finally:
            theirs.stop()
    finally:
        ours.stop()
    assert want[0][0] is grpc.StatusCode.RESOURCE_EXHAUSTED and ulid in want[0][1]
    assert got == want
    assert dropped == (3.0, 3.0)
