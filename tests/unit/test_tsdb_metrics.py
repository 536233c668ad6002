"""Per-tenant TSDB metrics under Prometheus's names (labelled ``tenant`` as Thanos's multitsdb):
they exist for every tenant and move with writes, fsyncs, truncation and replay."""
from __future__ import annotations

import asyncio

import numpy as np
from prometheus_client import CollectorRegistry

from receiver.multitsdb import MultiTSDB, TSDBOptions
from receiver.remotewrite import decode, encode_write_request
from receiver.tsdb.head import HeadOptions
from receiver.tsdbmetrics import registry_add_tsdb_metrics

RANGE = 60_000


def _write(db: MultiTSDB, tenant: str, t: int, names: list[str]) -> None:
    t_db = db.tenant(tenant)
    t_db.write(decode(encode_write_request(
        [((("__name__", n),), np.array([t]), np.array([1.0])) for n in names])))
    asyncio.run(t_db.sync())


def _opts(tmp_path) -> TSDBOptions:
    return TSDBOptions(path=tmp_path, head=HeadOptions(chunk_range_ms=RANGE), wal_fsync="batch")


def test_head_and_wal_metrics_per_tenant(tmp_path):
    db = MultiTSDB(_opts(tmp_path))
    reg = CollectorRegistry()
    registry_add_tsdb_metrics(reg, db)

    def v(name: str, tenant: str) -> float | None:
        return reg.get_sample_value(name, {"tenant": tenant})

    _write(db, "a", 1000, ["x", "y"])
    _write(db, "a", 5000, ["x"])
    _write(db, "b", 2000, ["z"])
    assert v("prometheus_tsdb_head_series", "a") == 2 and v("prometheus_tsdb_head_series", "b") == 1
    assert v("prometheus_tsdb_head_min_time", "a") == 1000
    assert v("prometheus_tsdb_head_max_time", "a") == 5000
    assert v("prometheus_tsdb_head_series_created_total", "a") == 2
    assert v("prometheus_tsdb_head_series_removed_total", "a") == 0
    assert v("prometheus_tsdb_wal_fsync_duration_seconds_count", "a") >= 2
    assert v("prometheus_tsdb_wal_fsync_duration_seconds_sum", "a") > 0
    assert v("prometheus_tsdb_wal_writes_failed_total", "a") == 0
    assert v("prometheus_tsdb_wal_record_part_writes_total", "a") == 2
    assert v("prometheus_tsdb_wal_record_parts_bytes_written_total", "a") > 0
    assert v("prometheus_tsdb_wal_corruptions_total", "a") == 0
    assert v("prometheus_tsdb_wal_segment_current", "a") >= 0
    # "y" has no samples left once the head is truncated past them: removed.
    _write(db, "a", 3 * RANGE, ["x"])
    db.tenants["a"].head.truncate(2 * RANGE)
    assert v("prometheus_tsdb_head_series_removed_total", "a") == 1
    assert v("prometheus_tsdb_head_series", "a") == 1
    db.close()

    # Restart: the replay is timed, a corrupt segment counted.
    seg = sorted((tmp_path / "b" / "wal").iterdir())[-1]
    seg.write_bytes(seg.read_bytes()[:5] + b"\xff" * 40)
    db2 = MultiTSDB(_opts(tmp_path))
    reg2 = CollectorRegistry()
    registry_add_tsdb_metrics(reg2, db2)
    db2.open_existing()
    assert reg2.get_sample_value("prometheus_tsdb_data_replay_duration_seconds", {"tenant": "a"}) > 0
    assert reg2.get_sample_value("prometheus_tsdb_wal_corruptions_total", {"tenant": "b"}) == 1
    assert reg2.get_sample_value("prometheus_tsdb_head_series_created_total", {"tenant": "a"}) >= 1
    db2.close()
