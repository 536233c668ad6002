"""A write whose samples are all refused must not leave anything behind: its series are not
created in the head (as Prometheus, which checks a sample's bounds before creating its series),
so a client sending hostile bodies cannot grow an ingestor's memory (issue 10, 100k-body fuzz)."""
from __future__ import annotations

import gc
import time
import tracemalloc

import numpy as np

from receiver.multitsdb import TenantTSDB, TSDBOptions
from receiver.remotewrite import decode, encode_write_request
from receiver.tsdb.head import HeadOptions
from rwbytes import byte_series

N_BODIES = 300
LABEL_BYTES = 1024  # each refused series' label value: what a leak would retain per body


def _series(i: int, t: int) -> bytes:
    return byte_series([(b"__name__", b"m"), (b"junk", b"%06d" % i + b"x" * LABEL_BYTES)], t, 1.0)


def test_refused_series_are_not_retained(tmp_path):
    now = int(time.time() * 1000)
    db = TenantTSDB("t", TSDBOptions(path=tmp_path, head=HeadOptions(chunk_range_ms=60_000)))
    try:
        ok = encode_write_request([((("__name__", "ok"),), np.array([now]), np.array([1.0]))])
        assert db.write(decode(ok)).appended == 1
        refused_at = [now + 86_400_000, (1 << 63) - 1, now - 3_600_000]  # future, absurd, too old
        bodies = [_series(i, refused_at[i % 3]) for i in range(N_BODIES)]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for data in bodies:
                out = db.write(decode(data))
                assert out.appended == 0 and out.http_status == 409, out
                assert out.too_far_in_future + out.out_of_bounds + out.too_old == 1 and not out.dropped_samples, out
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        retained = sum(s.size_diff for s in after.compare_to(before, "filename"))
        assert retained / N_BODIES < LABEL_BYTES // 4, f"{retained / N_BODIES:.0f} bytes per body"
        assert db.head.num_series == 1, db.head.num_series
        # A series with one in-bounds sample beside refused ones is created and keeps it.
        mixed = _series(0, now + 86_400_000) + _series(0, now)
        out = db.write(decode(mixed))
        assert out.appended == 1 and db.head.num_series == 2, out
    finally:
        db.close()


def test_out_of_order_window_still_creates_late_series(tmp_path):
    now = int(time.time() * 1000)
    db = TenantTSDB("t", TSDBOptions(path=tmp_path, head=HeadOptions(
        chunk_range_ms=60_000, ooo_window_ms=600_000)))
    try:
        assert db.write(decode(_series(0, now))).appended == 1
        late = db.write(decode(_series(1, now - 300_000)))  # within the window: a new late series
        assert late.appended == 1 and late.out_of_order_appended == 1, late
        gone = db.write(decode(_series(2, now - 3_600_000)))  # outside it: refused, not created
        assert gone.appended == 0 and gone.too_old == 1, gone
        assert db.head.num_series == 2
    finally:
        db.close()
