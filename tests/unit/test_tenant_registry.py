"""The tenant registry of an ingestor: one lock for the whole TSDB path, and only the most
recently written tenants keep a WAL segment open. A tenant whose segment was closed reopens it
on its next write, and everything replays after a restart."""
from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from receiver.multitsdb import MultiTSDB, TSDBOptions
from receiver.remotewrite import decode, encode_write_request

T = 1_700_000_000_000


def _open_files_under(path) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(path)):
                n += 1
        except OSError:
            pass
    return n


def _write(db: MultiTSDB, tenant: str, t: int) -> None:
    req = decode(encode_write_request([((("__name__", "m"),), np.array([t]), np.array([1.0]))]))
    tsdb = db.tenant(tenant)
    assert tsdb.write(req).appended == 1
    asyncio.run(tsdb.sync())


@pytest.mark.parametrize("fsync", ["none", "batch"])
def test_descriptors_stay_bounded_and_data_replays(tmp_path, fsync):
    opts = TSDBOptions(path=tmp_path, wal_fsync=fsync, max_open_wals=3)
    db = MultiTSDB(opts)
    for round_ in range(2):
        for i in range(20):
            _write(db, f"t{i}", T + round_ * 1000)
            assert _open_files_under(tmp_path) <= 1 + 3  # the path's LOCK + 3 segments
    db.close()
    assert _open_files_under(tmp_path) == 0

    again = MultiTSDB(opts)
    assert again.open_existing() == 40
    assert sorted(again.tenants) == sorted(f"t{i}" for i in range(20))
    again.close()


def test_the_tsdb_path_is_locked_against_a_second_ingestor(tmp_path):
    db = MultiTSDB(TSDBOptions(path=tmp_path))
    with pytest.raises(RuntimeError, match="in use by another process"):
        MultiTSDB(TSDBOptions(path=tmp_path))
    db.close()
    MultiTSDB(TSDBOptions(path=tmp_path)).close()
