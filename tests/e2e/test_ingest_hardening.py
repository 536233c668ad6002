"""Issue 10 reproducers against a real ``promring up``: requests that used to brick an ingestor
now get a clear 4xx, the process stays ready, and restarts serve every acknowledged sample."""
from __future__ import annotations

import time

import requests

from rw import HEADERS, push, raw_samples
from rwbytes import byte_series
from receiver.remotewrite import snappy_compress

M = "__name__"


def good_series(t: int) -> bytes:
    return byte_series([(b"__name__", b"ok_metric"), (b"job", b"t")], t, float(t))


def post(url: str, raw: bytes) -> requests.Response:
    return requests.post(url, data=snappy_compress(raw), headers=HEADERS, timeout=30)


def test_non_utf8_label_value_is_400_and_restarts_keep_everything(promring_up, tmp_path):
    data = tmp_path / "data"
    pr = promring_up(data)
    t0 = int(time.time() * 1000) - 60_000
    bad = byte_series([(b"__name__", b"m"), (b"k", b"\xff")], t0, 1.0)
    for i in range(2):  # was: 500, then 200, then the WAL could not be replayed
        r = post(pr.write_url, good_series(t0 + i * 1000) + bad)
        assert r.status_code == 400 and "UTF-8" in r.text, (r.status_code, r.text)
    for restart in ("kill9", "stop"):
        getattr(pr, restart)()
        pr.start()  # waits for /-/ready: the ingestor starts again
        got = raw_samples(pr.api, '{__name__="ok_metric"}', (t0 + 2_000) / 1000, "5m")
        assert [len(v) for v in got.values()] == [2], (restart, got)
    assert push(pr.write_url, [(((M, "after"), ("job", "t")), [t0 + 5_000], [1.0])]).status_code == 200


def test_future_and_extreme_timestamps_are_409_and_the_tenant_keeps_writing(promring_up):
    pr = promring_up()
    now = int(time.time() * 1000)
    for t in (now + 86_400_000, 2**63 - 1, now * 1000):  # +1 day, int64 max, microseconds
        r = post(pr.write_url, good_series(now) + byte_series([(b"__name__", b"f")], t, 1.0))
        assert r.status_code == 409 and "out of bounds" in r.text, (t, r.status_code, r.text)
        now += 1_000
    r = post(pr.write_url, good_series(now) + byte_series([(b"__name__", b"f")], now, 1.0))
    assert r.status_code == 200, r.text
    got = raw_samples(pr.api, '{__name__=~"ok_metric|f"}', now / 1000, "5m")
    assert sorted(len(v) for v in got.values()) == [1, 4], got


def test_a_corrupt_wal_segment_is_skipped_counted_and_the_ingestor_starts(promring_up, tmp_path):
    data = tmp_path / "data"
    pr = promring_up(data)
    t0 = int(time.time() * 1000) - 60_000
    for i in range(3):
        assert post(pr.write_url, good_series(t0 + i * 1000)).status_code == 200
    pr.kill9()
    wal = data / "receive" / "default-tenant" / "wal"
    (seg,) = [p for p in wal.iterdir() if p.name.isdigit()]
    raw = bytearray(seg.read_bytes())
    # A valid copy as the next segment (replaying a sample twice is harmless), so that the
    # corrupt one is not the last segment, whose damage is a torn tail and simply cut.
    (wal / f"{int(seg.name) + 1:08d}").write_bytes(bytes(raw))
    raw[40] ^= 0xFF  # inside the first record
    seg.write_bytes(bytes(raw))
    pr.start()
    metrics = requests.get(f"http://127.0.0.1:{pr.http_port}/metrics", timeout=10).text
    assert 'promring_tsdb_wal_replay_skipped{kind="corrupt_segments"} 1.0' in metrics
    got = raw_samples(pr.api, '{__name__="ok_metric"}', (t0 + 2_000) / 1000, "5m")
    assert [len(v) for v in got.values()] == [3], got
    assert post(pr.write_url, good_series(t0 + 5_000)).status_code == 200
