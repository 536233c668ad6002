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
