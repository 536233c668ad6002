"""Crashers the write-path fuzzer found, kept as explicit regression cases.

The first three are the write-core issues of issue 10 the fuzzer hit at once (invalid UTF-8
label values, an int64-max timestamp, float/native-histogram type changes on one series):
each broke a restart or a shutdown, and each is fixed (branch write-core)."""
from __future__ import annotations

import subprocess

import cramjam
import requests

from harness import receive_process
from storeapi import prompb_pb2

from .bodies import ld

NOW_MS = 1_700_000_000_000
HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


def _series(labels: list[tuple[bytes, bytes]], samples=(), hists=()) -> bytes:
    body = b"".join(ld(1, ld(1, n) + ld(2, v)) for n, v in labels)
    body += b"".join(ld(2, prompb_pb2.Sample(value=v, timestamp=t).SerializeToString()) for t, v in samples)
    body += b"".join(ld(4, h) for h in hists)
    return ld(1, body)


def _post(proc, msg: bytes) -> int:
    return requests.post(proc.url("remote_write", "/api/v1/receive"),
                         data=bytes(cramjam.snappy.compress_raw(msg)), headers=HEADERS, timeout=30).status_code


def _stop_within(proc, seconds: float) -> int | None:
    proc.proc.terminate()
    try:
        return proc.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.proc.kill()
        proc.proc.wait(10)
        return None


def _hist(t: int) -> bytes:
    return prompb_pb2.Histogram(count_int=1, sum=1.0, schema=0, zero_count_int=1,
                                timestamp=t).SerializeToString()


def test_invalid_utf8_label_value_is_4xx_and_restart_works(tmp_path, procs):
    ing = receive_process(tmp_path, "ing").start()
    procs.append(ing)
    msg = _series([(b"__name__", b"m"), (b"k", b"\xff")], [(NOW_MS, 1.0)])
    codes = [_post(ing, msg), _post(ing, msg)]
    ing.kill9()
    ing.start()
    assert all(400 <= c < 500 for c in codes), codes


def test_int64_max_timestamp_does_not_hang_shutdown(tmp_path, procs):
    ing = receive_process(tmp_path, "ing").start()
    procs.append(ing)
    _post(ing, _series([(b"__name__", b"m")], [(NOW_MS, 1.0)]))
    _post(ing, _series([(b"__name__", b"m")], [((1 << 63) - 1, 2.0)]))
    assert _stop_within(ing, 20) == 0


def test_float_histogram_float_on_one_series_still_stops_and_restarts(tmp_path, procs):
    """The head is kept in the WAL on SIGTERM (no shutdown flush, as Prometheus): a clean stop
    and a restart that takes the next sample are what the type changes once broke.
    Blocks cut from such a series are checked in tests/unit/test_ingest_core.py."""
    ing = receive_process(tmp_path, "ing").start()
    procs.append(ing)
    lbls = [(b"__name__", b"m")]
    assert _post(ing, _series(lbls, [(NOW_MS, 1.0)])) == 200
    assert _post(ing, _series(lbls, hists=[_hist(NOW_MS + 1000)])) == 200
    assert _post(ing, _series(lbls, [(NOW_MS + 2000, 2.0)])) == 200
    assert _stop_within(ing, 20) == 0
    ing.start()
    assert _post(ing, _series(lbls, [(NOW_MS + 3000, 3.0)])) == 200


