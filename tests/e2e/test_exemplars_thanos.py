"""Exemplars over the wire with the real Thanos (reference peer): a Thanos querier reads a
promring ingestor's Exemplars API and a promring querier reads a Thanos ingestor's; given the
same remote-write requests, both /api/v1/query_exemplars answer the same."""
from __future__ import annotations

import time

import requests

from harness import query_process, receive_process
from receiver.remotewrite import snappy_compress
from test_thanos_interop import STARTUP_S, rw_url, thanos
from tests.unit.test_exemplars import exemplar, series
from tests.unit.test_remotewrite import ld, sample

HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


def _bodies(now_ms: int) -> list[bytes]:
    out = []
    for k in range(3):
        t = now_ms - 60_000 + k * 15_000
        out.append(
            series(b"rpc_total", ld(1, ld(1, b"code") + ld(2, b"200")), ld(2, sample(k, t)),
                   exemplar([(b"trace_id", f"a{k}".encode())], 0.25 * k, t))
            + series(b"rpc_total", ld(1, ld(1, b"code") + ld(2, b"500")), ld(2, sample(k, t)),
                     exemplar([(b"trace_id", f"b{k}".encode()), (b"span", b"s")], k, t),
                     exemplar([(b"t", b"x" * 200)], 1.0, t + 1))  # too long: dropped by both
            + series(b"other", ld(2, sample(k, t)), exemplar([], 7.0, t)))
    return out


def test_thanos_and_promring_serve_the_same_exemplars_to_each_other(tmp_path):
    now = int(time.time() * 1000)
    procs: list = []
    try:
        p_ing = receive_process(tmp_path, "p-ing", "--tsdb.max-exemplars=100",
                                "--label", 'store="head"').start(STARTUP_S)
        procs.append(p_ing)
        t_ing = thanos(tmp_path, "t-ing", "receive", "--tsdb.max-exemplars=100",
                       '--label=store="head"').start(STARTUP_S)
        procs.append(t_ing)
        for body in _bodies(now):
            r = requests.post(p_ing.url("remote_write", "/api/v1/receive"),
                              data=snappy_compress(body), headers=HEADERS, timeout=30)
            assert r.status_code == 200, r.text  # as Prometheus: a bad exemplar is only dropped
            r = requests.post(rw_url(t_ing), data=snappy_compress(body), headers=HEADERS, timeout=30)
            # Thanos appends the samples too but answers 409 naming the dropped exemplar.
            assert r.status_code == 409 and "label length for exemplar" in r.text, r.text
        t_query = thanos(tmp_path, "t-query", "query", f"--endpoint={p_ing.grpc}").start(STARTUP_S)
        procs.append(t_query)
        p_query = query_process(tmp_path, "p-query", [t_ing.grpc]).start(STARTUP_S)
        procs.append(p_query)
        params = {"query": 'rpc_total{code=~"2..|5.."} or other', "start": str((now - 3_600_000) / 1000),
                  "end": str(now / 1000 + 60)}
        deadline = time.monotonic() + 60
        while True:  # until both queriers have found their endpoint
            theirs = requests.get(t_query.url("http", "/api/v1/query_exemplars"), params=params).json()
            ours = requests.get(p_query.url("http", "/api/v1/query_exemplars"), params=params).json()
            if (len(theirs.get("data") or []) == 3 and len(ours.get("data") or []) == 3) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        key = lambda s: sorted(s["seriesLabels"].items())  # noqa: E731
        assert sorted(theirs["data"], key=key) == sorted(ours["data"], key=key), (theirs, ours)
        assert sum(len(s["exemplars"]) for s in ours["data"]) == 9
    finally:
        for p in procs:
            p.stop()
