"""``--store.grpc.downloaded-bytes-limit`` next to Thanos v0.42.4's store on one bucket: a
call whose postings alone cross the limit fails with the same status and message, for
Series and LabelNames, and counts in dropped{reason="bytes"} the same."""
from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests

from harness import store_process
from receiver.tsdb.block import write_block_from_samples
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


def _got(details: str) -> int:
    """The byte count of a refusal's "limit L violated (got N)"."""
    return int(details.rsplit("(got ", 1)[1].rstrip(")"))


async def _limited_series(client: StoreClient) -> None:
    """A Series call with the request's own limit of 2 series (SeriesRequest.limit)."""
    async for _ in client.iter_series(T0, T0 + H2, UP, limit=2):
        pass


CALLS = {"series": lambda c: c.series(T0, T0 + H2, UP),
         "label_names": lambda c: c.label_names(T0, T0 + H2, UP),
         "series_limit_2": _limited_series}


async def _refusal(address: str, call: str) -> tuple[grpc.StatusCode, str]:
    client = StoreClient(address, timeout_s=30)
    try:
        await CALLS[call](client)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()
    finally:
        await client.close()


def _refusal_at(tmp_path: Path, conf: Path, limit: int, run: int, call: str
                ) -> tuple[tuple, tuple]:
    """One ``call`` to a fresh Thanos store and a fresh one of ours (a second call would
    find postings or series in Thanos's index cache and reserve other sizes) at ``limit``."""
    flag = f"--store.grpc.downloaded-bytes-limit={limit}B"
    ours = store_process(tmp_path, f"ours{run}", conf, flag).start()
    try:
        theirs = thanos(tmp_path, f"theirs{run}", "store", f"--objstore.config-file={conf}",
                        f"--data-dir={tmp_path / f'theirs{run}-data'}", flag).start(STARTUP_S)
        try:
            return (asyncio.run(_refusal(theirs.grpc, call)),
                    asyncio.run(_refusal(ours.grpc, call)))
        finally:
            theirs.stop()
    finally:
        ours.stop()


def _compacted_block_bucket(tmp: Path) -> Path:
    """A bucket of one compactor-made block (its meta.json has Thanos's index_stats) of
    series of unequal sizes: 30 short ones and 3 with long label values and more chunks."""
    ts = T0 + np.arange(480, dtype=np.int64) * 15_000
    series = [((("__name__", "up"), ("instance", f"h{i:02d}")), ts[:120], np.full(120, float(i)))
              for i in range(30)]
    # The block's last series is its largest entry and its last two chunks (which index_stats
    # leave out) are noise, far larger than the others: Thanos's estimates fall short of
    # them and it fetches each again.
    noise = np.random.default_rng(1).random(80)
    series += [((("__name__", "up"), ("instance", "zz"), ("note", "x" * 300)), ts,
                np.concatenate([np.ones(400), noise]))]
    meta = write_block_from_samples(tmp / "bucket", series, T0, T0 + H2, samples_per_chunk=40,
                                    thanos_meta={"labels": {"cluster": "a"}, "source": "compactor",
                                                 "downsample": {"resolution": 0}})
    assert meta.thanos["index_stats"]["series_max_size"] < 64 << 10
    conf = tmp / "objstore.yml"
    conf.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
    return conf


@pytest.mark.parametrize("bucket,call", [("plain", "series"), ("compacted", "series"),
                                         ("compacted", "label_names"),
                                         ("compacted", "series_limit_2")])
def test_series_and_chunk_bytes_count_as_thanos_store_counts_them(tmp_path: Path, bucket,
                                                                  call) -> None:
    """Thanos reserves its read plan, not the bytes it reads: postings, each gap-merged range
    of series entries (a series estimated at the block's series_max_size, at most 64 KiB),
    the entry it fetches again when longer, the ranges of chunks (chunk_max_size, at most
    16000 B) per segment, the chunks it fetches again. Limit by limit, from 1 B to each
    refusal's own total, both stores refuse at the same step with the same "got N", until
    both answer."""
    conf = _one_block_bucket(tmp_path)[0] if bucket == "plain" else _compacted_block_bucket(tmp_path)
    limit, steps = 1, []
    for run in range(8):
        want, got = _refusal_at(tmp_path, conf, limit, run, call)
        assert got == want, (limit, steps)
        if want[0] is grpc.StatusCode.OK:
            break
        assert want[0] is grpc.StatusCode.RESOURCE_EXHAUSTED, want
        steps.append(want[1].split("while fetching ")[1].split(":")[0])
        limit = _got(want[1])
    else:
        raise AssertionError(f"Thanos never answered: {steps}")
    # compacted: the long last series is fetched again, then its two long chunks
    assert steps == {("plain", "series"): ["postings", "series", "chunks"],
                     ("compacted", "series"): ["postings", "series", "series", "chunks",
                                               "chunks", "chunks"],
                     ("compacted", "label_names"): ["postings", "series", "series"],
                     # two short series read: neither the long one nor its chunks
                     ("compacted", "series_limit_2"): ["postings", "series", "chunks"],
                     }[bucket, call]
