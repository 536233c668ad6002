"""The shipper: Thanos's bucket layout, meta.json last, never twice, survives an outage."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from moto import MotoNotInstalled, MotoServer  # tests/moto.py: a real moto_server
from objstore import FilesystemBucket, bucket_from_config
from receiver.multitsdb import TenantTSDB, TSDBOptions
from receiver.remotewrite import decode, encode_write_request
from receiver.tsdb.head import HeadOptions
from shipper import Shipper

RANGE = 60_000


class RecordingBucket:
    """The real filesystem bucket, noting the order of uploads."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.uploaded: list[str] = []

    async def upload(self, name, data):
        self.uploaded.append(name)
        await self.inner.upload(name, data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def make_blocks(tmp_path, n_ranges: int = 2) -> TenantTSDB:
    db = TenantTSDB("team", TSDBOptions(path=tmp_path / "tsdb", head=HeadOptions(chunk_range_ms=RANGE)))
    for t in range(0, n_ranges * RANGE, 10_000):
        db.write(decode(encode_write_request(
            [((("__name__", "m"), ("i", str(i))), np.array([t]), np.array([1.0])) for i in range(3)])))
    # One later sample makes the head span past 1.5 ranges after each of them: all get cut.
    db.write(decode(encode_write_request(
        [((("__name__", "later"),), np.array([(n_ranges + 1) * RANGE + RANGE // 2]), np.array([1.0]))])))
    db.compact()
    return db


def test_ships_each_block_once_meta_last(tmp_path):
    db = make_blocks(tmp_path)
    bucket = RecordingBucket(FilesystemBucket(tmp_path / "bucket"))
    s = Shipper(bucket, db.dir)
    assert asyncio.run(s.sync()) == 2
    ulids = sorted(db.blocks)
    for u in ulids:
        names = [n for n in bucket.uploaded if n.startswith(u)]
        assert names[-1] == f"{u}/meta.json" and f"{u}/index" in names and f"{u}/chunks/000001" in names
        meta = json.loads((tmp_path / "bucket" / u / "meta.json").read_text())
        assert meta["thanos"]["source"] == "receive" and meta["thanos"]["labels"] == {"tenant_id": "team"}
    state = json.loads((db.dir / "thanos.shipper.json").read_text())
    assert state == {"version": 1, "uploaded": ulids}
    # A new shipper (a restart) finds nothing to do.
    bucket.uploaded.clear()
    assert asyncio.run(Shipper(bucket, db.dir).sync()) == 0 and bucket.uploaded == []
    db.close()


def test_bucket_outage_delays_but_loses_nothing(tmp_path):
    try:
        server = MotoServer().start()
    except MotoNotInstalled as e:
        pytest.skip(f"moto_server is not installed: {e}")
    try:
        server.create_bucket("blocks")
        conf = {"type": "S3", "config": {"bucket": "blocks", "endpoint": server.endpoint, "insecure": True,
                                         "access_key": "x", "secret_key": "y", "max_retries": 1}}
        db = make_blocks(tmp_path)
        server.stop()
        bucket = bucket_from_config(conf)
        s = Shipper(bucket, db.dir)
        assert asyncio.run(s.sync()) == 0 and s.failures == 1
        assert not (db.dir / "thanos.shipper.json").exists()
        server.start()
        server.create_bucket("blocks")
        bucket = bucket_from_config(conf)
        assert asyncio.run(Shipper(bucket, db.dir).sync()) == 2
        listed = asyncio.run(bucket.iter(""))
        assert sorted(listed) == sorted(f"{u}/" for u in db.blocks)
        db.close()
    finally:
        server.stop()
