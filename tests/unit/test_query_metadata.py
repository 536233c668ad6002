"""Metric metadata from remote write: kept per tenant by the ingestor (latest wins, bounded,
persisted across restarts), served over Thanos's Metadata gRPC API and by the querier at
/api/v1/metadata in Prometheus's shape."""
from __future__ import annotations

import asyncio
from dataclasses import replace

from querier_cluster import RW_HEADERS, cluster, run
from receiver.metadata import MetadataStore
from receiver.remotewrite import snappy_compress
from receiver.server import Receiver
from storeapi import remote_pb2

COUNTER, GAUGE = 1, 2


def metadata_body(*entries: tuple[int, str, str, str]) -> bytes:
    req = remote_pb2.WriteRequest()
    for kind, name, help_, unit in entries:
        req.metadata.add(type=kind, metric_family_name=name, help=help_, unit=unit)
    return snappy_compress(req.SerializeToString())


async def send(c, body: bytes, tenant: str | None = None) -> int:
    url = f"http://127.0.0.1:{c.receivers[0].ports['remote_write']}/api/v1/receive"
    headers = dict(RW_HEADERS, **({"THANOS-TENANT": tenant} if tenant else {}))
    async with c.http.post(url, data=body, headers=headers) as r:
        return r.status


def test_metadata_from_remote_write_is_served_and_survives_a_restart(tmp_path):
    async def go():
        async with cluster(tmp_path) as c:
            assert await send(c, metadata_body(
                (COUNTER, "http_requests_total", "Requests.", ""),
                (GAUGE, "temp_celsius", "Temperature.", "celsius"))) == 200
            assert await send(c, metadata_body(
                (GAUGE, "temp_celsius", "Temperature now.", "celsius")), tenant="t2") == 200
            assert await c.get("/api/v1/metadata") == (200, {"status": "success", "data": {
                "http_requests_total": [{"type": "counter", "help": "Requests.", "unit": ""}],
                "temp_celsius": [{"type": "gauge", "help": "Temperature.", "unit": "celsius"},
                                 {"type": "gauge", "help": "Temperature now.", "unit": "celsius"}]}})
            # The latest wins within a tenant.
            assert await send(c, metadata_body(
                (GAUGE, "http_requests_total", "Changed.", ""))) == 200
            status, body = await c.get("/api/v1/metadata", metric="http_requests_total")
            assert body["data"] == {"http_requests_total": [
                {"type": "gauge", "help": "Changed.", "unit": ""}]}
            status, body = await c.get("/api/v1/metadata", limit="1")
            assert list(body["data"]) == ["http_requests_total"]
            status, body = await c.get("/api/v1/metadata", limit_per_metric="1")
            assert len(body["data"]["temp_celsius"]) == 1
            assert await c.get("/api/v1/metadata", limit="x") == (400, {
                "status": "error", "errorType": "bad_data", "error": "limit must be a number"})
            assert await send(c, snappy_compress(b"\x1a\x05\x12\x09abc")) == 400  # truncated
            r = c.receivers[0]
            await r.stop()  # a new process on the same data dir and port
            c.receivers[0] = Receiver(replace(r.cfg, grpc_address=f"127.0.0.1:{r.ports['grpc']}"))
            await c.receivers[0].start()
            # The querier may have marked the endpoint down meanwhile; it retries with backoff.
            for _ in range(100):
                status, body = await c.get("/api/v1/metadata", metric="temp_celsius")
                if status == 200 and body["data"]:
                    break
                await asyncio.sleep(0.1)
            assert len(body["data"]["temp_celsius"]) == 2, body
    run(go())


def test_metadata_store_is_bounded_per_tenant(tmp_path):
    store = MetadataStore(tmp_path, max_per_tenant=2)
    assert store.update("a", [(f"m{i}", ("gauge", "", "")) for i in range(5)])
    assert len(store.tenants["a"].families) == 2 and store.tenants["a"].dropped == 3
    assert store.update("a", [("m0", ("counter", "x", ""))])  # existing ones still update
    assert not store.update("a", [("m0", ("counter", "x", ""))])  # unchanged: nothing to save
    small = MetadataStore(tmp_path, max_bytes_per_tenant=100)
    assert small.update("b", [("m0", ("gauge", "h" * 80, ""))])
    assert not small.update("b", [("m1", ("gauge", "h" * 80, ""))])  # over the byte budget
    assert list(small.tenants["b"].families) == ["m0"]
    (tmp_path / ".metadata").mkdir()
    (tmp_path / ".metadata" / "broken.json").write_text("{not json")
    store.load()  # a broken file is skipped, never fatal
    assert "broken" not in store.tenants
