"""The shipper: Thanos's bucket layout, meta.json last, never twice, survives an outage."""
from __future__ import annotations

import asyncio
import json
import shutil

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


@pytest.fixture
def moto_s3():
    """A moto S3 server with bucket "blocks", and the objstore config pointing at it."""
    try:
        server = MotoServer().start()
    except MotoNotInstalled as e:
        pytest.skip(f"moto_server is not installed: {e}")
    try:
        server.create_bucket("blocks")
        yield server, {"type": "S3", "config": {"bucket": "blocks", "endpoint": server.endpoint,
                                                "insecure": True, "access_key": "x", "secret_key": "y",
                                                "max_retries": 1}}
    finally:
        server.stop()


def test_bucket_outage_delays_but_loses_nothing(tmp_path, moto_s3):
    server, conf = moto_s3
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


class ProbingBucket(RecordingBucket):
    """RecordingBucket that also counts existence probes."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.probes = 0

    async def exists(self, name):
        self.probes += 1
        return await self.inner.exists(name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _counter(registry, name: str, tenant: str = "team") -> float:
    v = registry.get_sample_value(name, {"tenant": tenant})
    return 0.0 if v is None else v


def test_block_lost_by_the_bucket_is_uploaded_again(tmp_path):
    from prometheus_client import CollectorRegistry
    from shipper import ShipperMetrics, ShipperOptions

    db = make_blocks(tmp_path)
    reg = CollectorRegistry()
    clock = Clock()
    bucket = ProbingBucket(FilesystemBucket(tmp_path / "bucket"))
    s = Shipper(bucket, db.dir, opts=ShipperOptions(verify_interval_s=600, verify_per_sync=1),
                metrics=ShipperMetrics(reg), tenant="team", clock=clock)
    assert asyncio.run(s.sync()) == 2
    assert _counter(reg, "thanos_shipper_uploads_total") == 2
    # The bucket loses everything (an outage that ends with an empty bucket).
    for p in (tmp_path / "bucket").iterdir():
        shutil.rmtree(p)
    # Within the verify interval a sync costs no bucket requests at all...
    bucket.probes = 0
    bucket.uploaded.clear()
    assert asyncio.run(s.sync()) == 0 and bucket.probes == 0
    # ...once it is due, the shipped blocks are checked (one per sync here) and the lost ones
    # uploaded again.
    clock.now += 600
    assert asyncio.run(s.sync()) == 1 and bucket.probes == 1
    assert asyncio.run(s.sync()) == 1 and bucket.probes == 2
    assert asyncio.run(s.sync()) == 0 and bucket.probes == 2
    assert sum(n.endswith("meta.json") for n in bucket.uploaded) == 2
    for u in db.blocks:
        assert (tmp_path / "bucket" / u / "meta.json").is_file()
        assert (tmp_path / "bucket" / u / "index").is_file()
    assert s.reuploads == 2 and _counter(reg, "promring_shipper_reuploads_total") == 2
    assert _counter(reg, "thanos_shipper_uploads_total") == 4
    assert json.loads((db.dir / "thanos.shipper.json").read_text())["uploaded"] == sorted(db.blocks)
    # A restarted shipper checks its record once at its first sync, even with a fresh bucket gone.
    for p in (tmp_path / "bucket").iterdir():
        shutil.rmtree(p)
    assert asyncio.run(Shipper(bucket, db.dir).sync()) == 2
    db.close()


def test_retention_keeps_local_blocks_the_bucket_lacks(tmp_path):
    from receiver.lifecycle import BlockLifecycle
    from receiver.multitsdb import MultiTSDB

    opts = TSDBOptions(path=tmp_path / "tsdb", head=HeadOptions(chunk_range_ms=RANGE), retention_ms=1)
    mdb = MultiTSDB(opts)
    t = mdb.tenant("team")
    for ts in range(0, 2 * RANGE, 10_000):
        t.write(decode(encode_write_request([((("__name__", "m"),), np.array([ts]), np.array([1.0]))])))
    # A later sample makes both ranges old enough to be cut into blocks.
    t.write(decode(encode_write_request([((("__name__", "m"),), np.array([3 * RANGE + RANGE // 2]),
                                          np.array([1.0]))])))
    t.compact()
    blocks = sorted(t.blocks)
    assert len(blocks) == 2
    bucket = FilesystemBucket(tmp_path / "bucket")
    lc = BlockLifecycle(mdb, bucket)
    far_future = 10 * RANGE

    async def main():
        await lc.ship()
        # The bucket loses one block and keeps a truncated chunks file of the other (meta.json
        # still there); retention must keep both locally...
        shutil.rmtree(tmp_path / "bucket" / blocks[0])
        seg = tmp_path / "bucket" / blocks[1] / "chunks" / "000001"
        seg.write_bytes(seg.read_bytes()[:20])
        await lc._apply_retention(far_future)
        assert sorted(t.blocks) == blocks
        assert not (tmp_path / "bucket" / blocks[0]).exists()
        # ...the next round puts them back in the bucket, and only then deletes them locally.
        await lc.run_once(now_ms=far_future)
        assert (tmp_path / "bucket" / blocks[0] / "meta.json").is_file()
        assert seg.stat().st_size > 20
        await lc.run_once(now_ms=far_future)
        assert t.blocks == {}

    asyncio.run(main())
    t.close()


def test_s3_bucket_emptied_by_an_outage_gets_its_blocks_back(tmp_path, moto_s3):
    server, conf = moto_s3
    db = make_blocks(tmp_path)

    async def main():
        bucket = bucket_from_config(conf)
        s = Shipper(bucket, db.dir)
        assert await s.sync() == 2
        server.restart()  # moto keeps state in memory: the bucket is gone
        server.create_bucket("blocks")
        assert await bucket.iter("") == []
        assert not await s.confirm_uploaded(sorted(db.blocks)[0])
        assert await Shipper(bucket, db.dir).sync() == 2
        assert sorted(await bucket.iter("")) == sorted(f"{u}/" for u in db.blocks)
        assert await s.confirm_uploaded(sorted(db.blocks)[0])
        await bucket.close()

    asyncio.run(main())
    db.close()


def test_last_successful_upload_time_is_set_by_an_upload(tmp_path):
    """thanos_shipper_last_successful_upload_time: absent before any upload, then the time of
    the last one (what "no upload for N hours" alerts compare with time())."""
    import time

    from prometheus_client import CollectorRegistry
    from shipper import ShipperMetrics

    db = make_blocks(tmp_path)
    reg = CollectorRegistry()
    s = Shipper(FilesystemBucket(tmp_path / "bucket"), db.dir, metrics=ShipperMetrics(reg),
                tenant="team")
    assert reg.get_sample_value("thanos_shipper_last_successful_upload_time", {"tenant": "team"}) is None
    before = time.time()
    assert asyncio.run(s.sync()) == 2
    got = reg.get_sample_value("thanos_shipper_last_successful_upload_time", {"tenant": "team"})
    assert got is not None and before <= got <= time.time()
    db.close()
