"""A real Thanos router and promring's hashrings place every series identically.

The Thanos router (built by scripts/peers.sh) forwards remote writes to small gRPC servers that
record what they receive (endpoint, replica number, tenant, series); every recorded series must be
exactly where promring's ring puts that replica -- ketama and hashmod, 3 and 5 endpoints, with
availability zones and tenant matching.
"""
from __future__ import annotations

import asyncio
import glob
import json
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests

from harness import free_port, query_process, receive_process, wait_ready
from receiver.hashring import Hashrings, hash_series, parse_hashrings
from receiver.router import REMOTE_WRITE_METHOD
from receiver.tsdb.labels import encode_labels_key
from rw import push
from storeapi import rpc_pb2

REPO = Path(__file__).resolve().parents[2]


def thanos_binary() -> str:
    """The pinned Thanos built by scripts/peers.sh with its release tags (slicelabels: without
    them Thanos's own label conversions panic)."""
    found = sorted(glob.glob(str(REPO / ".peers" / "bin" / "thanos-v*slicelabels*")))
    if found:
        return found[-1]
    out = subprocess.run(["bash", str(REPO / "scripts" / "peers.sh")], capture_output=True,
                         text=True, timeout=3600)
    paths = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert out.returncode == 0 and "thanos" in paths, (
        f"the Thanos reference peer is not built: {out.stderr[-300:]}; run `bash scripts/peers.sh`")
    return paths["thanos"]


class Recorders:
    """gRPC servers answering thanos.WriteableStore/RemoteWrite, recording every request."""

    def __init__(self, n: int) -> None:
        self.got: list[tuple[str, int, str, tuple]] = []
        self.addrs: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._servers = asyncio.run_coroutine_threadsafe(self._start(n), self._loop).result(30)

    def _handler(self, addr: str):
        async def remote_write(req: rpc_pb2.WriteRequest, context) -> rpc_pb2.WriteResponse:
            parts = [(req.tenant, req.timeseries)] + [(t.tenant, t.timeseries)
                                                      for t in req.timeseriesTenantData]
            for tenant, series in parts:
                for ts in series:
                    self.got.append((addr, req.replica, tenant,
                                     tuple((lb.name, lb.value) for lb in ts.labels)))
            return rpc_pb2.WriteResponse()
        service, method = REMOTE_WRITE_METHOD.strip("/").split("/")
        return grpc.method_handlers_generic_handler(service, {method: grpc.unary_unary_rpc_method_handler(
            remote_write, rpc_pb2.WriteRequest.FromString, rpc_pb2.WriteResponse.SerializeToString)})

    async def _start(self, n: int):
        servers = []
        for _ in range(n):
            srv = grpc.aio.server()
            addr = f"127.0.0.1:{srv.add_insecure_port('127.0.0.1:0')}"
            srv.add_generic_rpc_handlers((self._handler(addr),))
            await srv.start()
            servers.append(srv)
            self.addrs.append(addr)
        return servers

    def close(self) -> None:
        async def stop():
            for s in self._servers:
                await s.stop(None)
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _endpoints(addrs, azs):
    return [{"address": a, "az": azs[i]} if azs else a for i, a in enumerate(addrs)]


CASES = {
    "ketama-3": ("ketama", 3, 3, None, None),
    "ketama-5-azs": ("ketama", 5, 3, "aabbc", None),
    "ketama-5-azs-rf2": ("ketama", 5, 2, "abcab", None),
    "hashmod-3": ("hashmod", 3, 1, None, None),
    "hashmod-5-rf2": ("hashmod", 5, 2, None, None),
    "tenants-glob": ("ketama", 5, 2, None, 3),  # team-* on the first 3, the rest on 2
}


@pytest.mark.parametrize("case", list(CASES))
def test_thanos_router_places_series_where_promring_does(case, tmp_path):
    algo, n, rf, azs, split = CASES[case]
    thanos = thanos_binary()
    rec = Recorders(n)
    if split:
        cfg = [{"hashring": "teams", "tenants": ["team-*"], "tenant_matcher_type": "glob",
                "endpoints": rec.addrs[:split]},
               {"hashring": "rest", "endpoints": rec.addrs[split:]}]
    else:
        cfg = [{"hashring": "default", "endpoints": _endpoints(rec.addrs, azs)}]
    ring_file = tmp_path / "hashrings.json"
    ring_file.write_text(json.dumps(cfg))
    rw, http, grpc_port, capnp = free_port(), free_port(), free_port(), free_port()
    log = open(tmp_path / "thanos.log", "wb")
    proc = subprocess.Popen([
        thanos, "receive", f"--receive.hashrings-file={ring_file}",
        f"--receive.hashrings-algorithm={algo}", f"--receive.replication-factor={rf}",
        f"--remote-write.address=127.0.0.1:{rw}", f"--http-address=127.0.0.1:{http}",
        f"--grpc-address=127.0.0.1:{grpc_port}", f"--receive.capnproto-address=127.0.0.1:{capnp}",
        "--receive.grpc-compression=none",
        "--label=receive=\"router\"", f"--tsdb.path={tmp_path / 'tsdb'}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{http}/-/ready", timeout=60, proc=proc)
        tenants = ["team-a", "other"] if split else ["default-tenant", "t2"]
        series = {t: [((("__name__", "placed"), ("i", str(i)), ("pod", f"p-{i * 7919 % 1000}")),
                       [1_000_000], [1.0]) for i in range(300)] for t in tenants}
        for t in tenants:
            r = push(f"http://127.0.0.1:{rw}/api/v1/receive", series[t], tenant=t)
            assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        rec.close()

    rings = Hashrings(parse_hashrings(ring_file.read_text()), algo, rf)
    by_tenant: dict[str, list] = {}
    for addr, replica, tenant, lbls in rec.got:
        by_tenant.setdefault(tenant, []).append((addr, replica, lbls))
    assert sorted(by_tenant) == sorted(tenants)
    for tenant, got in by_tenant.items():
        _, ring = rings.for_tenant(tenant)
        assert len(got) == 300 * rf  # every replica of every series, once
        assign = ring.assign(hash_series(tenant, [encode_labels_key(l) for _, _, l in got]))
        ours = [ring.endpoints[int(assign[i, rep - 1])].address for i, (_, rep, _) in enumerate(got)]
        assert [a for a, _, _ in got] == ours


def test_thanos_querier_over_a_promring_querier(tmp_path):
    """promring query --grpc-address is a StoreAPI a real Thanos querier can sit on top of."""
    thanos = thanos_binary()
    ing = receive_process(tmp_path, "ing", "--label", 'region="eu"').start()
    regional = None
    proc = None
    try:
        regional = query_process(tmp_path, "regional", [ing.grpc]).start()
        now = int(time.time() * 1000)
        r = push(ing.url("remote_write", "/api/v1/receive"),
                 [((("__name__", "stacked"), ("i", str(i))), [now], [float(i)]) for i in range(4)])
        assert r.status_code == 200, r.text
        http, grpc_port = free_port(), free_port()
        log = open(tmp_path / "thanos-query.log", "wb")
        proc = subprocess.Popen([thanos, "query", f"--http-address=127.0.0.1:{http}",
                                 f"--grpc-address=127.0.0.1:{grpc_port}",
                                 f"--endpoint={regional.grpc}"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_ready(f"http://127.0.0.1:{http}/-/ready", timeout=60, proc=proc)
        result: list = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            resp = requests.get(f"http://127.0.0.1:{http}/api/v1/query",
                                params={"query": "stacked", "time": now / 1000}, timeout=30)
            assert resp.status_code == 200, resp.text
            result = resp.json()["data"]["result"]
            if result:
                break
            time.sleep(0.5)
        got = sorted((s["metric"]["i"], s["metric"]["region"], s["value"][1]) for s in result)
        assert got == [(str(i), "eu", str(i)) for i in range(4)]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if regional is not None:
            regional.stop()
        ing.stop()
