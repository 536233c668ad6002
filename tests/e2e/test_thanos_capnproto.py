"""Cap'n Proto replication between promring and the real Thanos (``--receive.replication-protocol
=capnproto``), both ways, and hostile bytes on promring's ``--receive.capnproto-address``.

In every ring the endpoints' gRPC ``address`` is a port nobody listens on: a sample can only land
if it travelled over the endpoint's ``capnproto_address``.
"""
from __future__ import annotations

import asyncio
import json
import socket
import struct
import time

import numpy as np
import requests

from harness import free_port, query_process, receive_process
from receiver.capnproto.rpc import NONE, WriterClient
from receiver.hashring import Hashrings, hash_series, parse_hashrings
from receiver.remotewrite import encode_histogram_write_request, encode_write_request, snappy_compress
from receiver.tsdb.histogram import Hist, to_proto_bytes
from receiver.tsdb.labels import encode_labels_key
from rw import HEADERS, push, query, raw_samples
from test_thanos_interop import STARTUP_S, _wait_equal, rw_url, thanos

N_SERIES, N_SAMPLES = 120, 5


def _data(now_ms: int):
    t0 = now_ms - 60_000
    return [((("__name__", "capnp_test"), ("i", str(i)), ("job", "demo")),
             [t0 + k * 10_000 for k in range(N_SAMPLES)], [float(i * 10 + k) for k in range(N_SAMPLES)])
            for i in range(N_SERIES)]


def _expected(data) -> dict:
    return {tuple(sorted(lbls)): [(t / 1000, v) for t, v in zip(ts, vs)] for lbls, ts, vs in data}


def _landed(api: str, t_s: float) -> dict:
    got = raw_samples(api, '{job="demo"}', t_s, "5m")
    return {k: [(float(t), float(v)) for t, v in pts] for k, pts in got.items()}


def _push_histograms(url: str, now_ms: int, tenant: str) -> dict:
    """An integer and a float native histogram series; returns {name: (count, sum)}."""
    t = now_ms - 30_000
    hists = {"capnp_int_hist": Hist(False, 0, 0.001, 7, 1, 10.5, ((0, 2), (3, 1)), [2, 1, -2], (), []),
             "capnp_float_hist": Hist(True, 1, 0.001, 5.0, 0.5, 3.5, ((-1, 2),), [1.5, 3.0],
                                      ((0, 1),), [0.0])}
    body = encode_histogram_write_request(
        [((("__name__", name), ("job", "hist")), [to_proto_bytes(t, h)]) for name, h in hists.items()])
    r = requests.post(url, data=snappy_compress(body), timeout=30,
                      headers={**HEADERS, "THANOS-TENANT": tenant})
    assert r.status_code == 200, r.text
    return {name: (float(h.count), h.sum) for name, h in hists.items()}


def _histograms_landed(api: str, t_s: float, want: dict) -> None:
    def got() -> dict:
        out = {}
        for name in want:
            pair = [query(api, f"max({fn}({name}))", t_s)  # max: one value over the replicas
                    for fn in ("histogram_count", "histogram_sum")]
            out[name] = tuple(float(r[0]["value"][1]) if len(r) == 1 else None for r in pair)
        return out
    assert _wait_equal(got, want) == want


def test_thanos_router_replicates_over_capnproto_into_promring_ingestors(tmp_path):
    """Replication factor 2 over 3 ingestors (ketama): every sample lands exactly once on each
    of the two ingestors Thanos's placement names for its series, and nowhere else."""
    now = int(time.time() * 1000)
    data = _data(now)
    ings = [receive_process(tmp_path, f"ing{i}", f'--label=ingestor="{i}"').start(STARTUP_S)
            for i in range(3)]
    procs: list = list(ings)
    try:
        ring = tmp_path / "hashrings.json"
        dead = [f"127.0.0.1:{free_port()}" for _ in ings]  # gRPC addresses: never reached
        ring.write_text(json.dumps([{"hashring": "default", "endpoints": [
            {"address": dead[i], "capnproto_address": f"127.0.0.1:{ing.ports['capnproto']}"}
            for i, ing in enumerate(ings)]}]))
        router = thanos(tmp_path, "thanos-router", "receive", f"--receive.hashrings-file={ring}",
                        "--receive.replication-protocol=capnproto",
                        "--receive.replication-factor=2", "--receive.hashrings-algorithm=ketama",
                        '--label=receive="router"').start(STARTUP_S)
        procs.append(router)
        r = push(rw_url(router), data)
        assert r.status_code == 200, r.text
        hists = _push_histograms(rw_url(router), now, "default-tenant")
        querier = query_process(tmp_path, "query", [i.grpc for i in ings]).start(STARTUP_S)
        procs.append(querier)
        rings = Hashrings(parse_hashrings(ring.read_text()), "ketama", 2)
        _, placement = rings.for_tenant("default-tenant")
        keys = [encode_labels_key(tuple(sorted(lbls))) for lbls, _, _ in data]
        owners = placement.assign(hash_series("default-tenant", keys))  # (series, replica)
        want = {}
        for j, (lbls, ts, vs) in enumerate(data):
            for node in owners[j]:
                ingestor = dead.index(placement.endpoints[node].address)
                key = lbls + (("ingestor", str(ingestor)), ("tenant_id", "default-tenant"))
                want[tuple(sorted(key))] = [(t / 1000, v) for t, v in zip(ts, vs)]
        got = _wait_equal(lambda: _landed(querier.url("http", "/api/v1"), now / 1000 + 1), want)
        assert set(got) == set(want), "series missing, extra or on the wrong ingestor"
        assert got == want  # every sample once
        _histograms_landed(querier.url("http", "/api/v1"), now / 1000, hists)
        assert len(want) == 2 * N_SERIES and len(set(owners.ravel().tolist())) == 3
    finally:
        for p in reversed(procs):
            p.stop()


def test_promring_router_replicates_over_capnproto_into_a_thanos_ingestor(tmp_path):
    now = int(time.time() * 1000)
    data = _data(now)
    ing = thanos(tmp_path, "thanos-ing", "receive", '--label=receive_replica="0"').start(STARTUP_S)
    procs: list = [ing]
    try:
        ring = tmp_path / "hashrings.json"
        ring.write_text(json.dumps([{"hashring": "default", "endpoints": [
            {"address": f"127.0.0.1:{free_port()}",
             "capnproto_address": f"127.0.0.1:{ing.ports['capnproto']}"}]}]))
        router = receive_process(tmp_path, "router", "--receive.hashrings-file", str(ring),
                                 "--receive.replication-protocol=capnproto",
                                 router_only=True).start(STARTUP_S)
        procs.append(router)
        r = push(router.url("remote_write", "/api/v1/receive"), data, tenant="team-a")
        assert r.status_code == 200, r.text
        hists = _push_histograms(router.url("remote_write", "/api/v1/receive"), now, "team-a")
        # A conflict (samples older than what the ingestor has) comes back as Thanos's 409.
        r = push(router.url("remote_write", "/api/v1/receive"),
                 [(data[0][0], [data[0][1][0]], [99.0])], tenant="team-a")
        assert r.status_code == 409, r.text
        tq = thanos(tmp_path, "thanos-query", "query",
                    f"--endpoint=127.0.0.1:{ing.ports['grpc']}").start(STARTUP_S)
        procs.append(tq)
        want = {tuple(sorted(k + (("receive_replica", "0"), ("tenant_id", "team-a")))): pts
                for k, pts in _expected(data).items()}
        got = _wait_equal(lambda: _landed(tq.url("http", "/api/v1"), now / 1000 + 1), want)
        assert set(got) == set(want), "series missing or extra"
        assert got == want
        _histograms_landed(tq.url("http", "/api/v1"), now / 1000, hists)
    finally:
        for p in reversed(procs):
            p.stop()


def _hostile_payloads() -> list[bytes]:
    def packed_frame(words: bytes, header: bytes | None = None) -> bytes:
        from receiver.capnproto import _capnpc
        return _capnpc.pack((header or struct.pack("<II", 0, len(words) // 8)) + words)
    return [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes(range(256)) * 8,
        b"\xff" * 4096,                                      # raw-word runs of garbage
        b"\x00\xff" * 4096,                                  # zero-run bomb, no valid header
        packed_frame(b"", struct.pack("<II", 10_000, 1)),     # 10,001 segments
        packed_frame(b"", struct.pack("<II", 0, 0x1FFFFFFF)),  # a 4 GiB message announced
        packed_frame(struct.pack("<Q", 0x7FFFFFFC | 1 << 32)),  # root pointer far out of bounds
        packed_frame(struct.pack("<QQ", 1 << 48 | 2 << 32, 2 << 0)),  # Message{abort} root, junk
        packed_frame(struct.pack("<QQQQ", 1 << 32 | 1 << 48, 2, 0x0000000100000003, 0))[:-3],  # cut
    ]


def test_hostile_bytes_on_the_capnproto_port_leave_the_ingestor_ready(tmp_path):
    ing = receive_process(tmp_path, "ing").start(STARTUP_S)
    try:
        port = ing.ports["capnproto"]
        for payload in _hostile_payloads():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(10)
                while s.recv(65536):  # the server answers (abort) and closes, or just closes
                    pass
        # A client that stops halfway through a message holds nothing for long either.
        half = socket.create_connection(("127.0.0.1", port), timeout=10)
        half.sendall(b"\x10\x64")  # a segment table announcing 100 words, then nothing
        assert requests.get(ing.url("remote_write", "/-/ready"), timeout=10).status_code == 200

        async def write() -> tuple[int, str]:
            c = WriterClient(f"127.0.0.1:{port}")
            try:
                body = encode_write_request([((("__name__", "after"), ("job", "demo")),
                                              np.array([int(time.time() * 1000)]), np.array([1.0]))])
                return await c.write("t", body, 10)
            finally:
                await c.close()
        assert asyncio.run(write()) == (NONE, "")
        half.close()
        assert ing.proc.poll() is None, ing.log_text()[-2000:]
    finally:
        ing.stop()
