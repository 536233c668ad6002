"""What a Thanos router sends to an ingestor over gRPC lands: snappy-compressed messages (its
default ``--receive.grpc-compression``) and multi-tenant ``timeseriesTenantData`` requests."""
from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import numpy as np
import pytest

from harness import receive_process
from receiver.remotewrite import encode_write_request
from receiver.thanoswrite import split_thanos_write
from receiver.tsdb.labels import Matcher, MatchType
from storeapi import rpc_pb2
from storeapi.client import StoreClient
from storeapi.h2client import H2Channel, RpcError

METHOD = "/thanos.WriteableStore/RemoteWrite"
T0 = 1_700_000_000_000


def series_body(name: str, n: int, t0: int = T0) -> bytes:
    """A prometheus.WriteRequest body (field 1 only) of ``n`` series with one sample each."""
    return encode_write_request(
        (((("__name__", name), ("s", str(k)))), np.array([t0]), np.array([float(k)]))
        for k in range(n))


def tuple_bytes(tenant: str, body: bytes) -> bytes:
    """A TimeSeriesTenantTuple: its field 1 has the layout of WriteRequest.timeseries."""
    msg = rpc_pb2.TimeSeriesTenantTuple.FromString(body)
    msg.tenant = tenant
    return msg.SerializeToString()


def thanos_request(tuples: list[tuple[str, bytes]], replica: int = 1) -> bytes:
    req = rpc_pb2.WriteRequest(replica=replica)
    for tenant, body in tuples:
        req.timeseriesTenantData.add().ParseFromString(tuple_bytes(tenant, body))
    return req.SerializeToString()


def test_split_thanos_write_both_forms_and_malformed():
    a, b = series_body("a", 3), series_body("b", 2)
    legacy = a + rpc_pb2.WriteRequest(tenant="t0", replica=2).SerializeToString()
    writes, replica = split_thanos_write(legacy)
    assert replica == 2 and [(w.tenant, w.body) for w in writes] == [("t0", a)]
    writes, replica = split_thanos_write(thanos_request([("t1", a), ("t2", b)]))
    assert replica == 1 and [(w.tenant, w.body) for w in writes] == [("t1", a), ("t2", b)]
    writes, _ = split_thanos_write(b"")
    assert [(w.tenant, w.body) for w in writes] == [("", b"")]
    for bad in (b"\x22\x05ab", b"\x22\x03\x0a\x09x"):
        with pytest.raises(ValueError):
            split_thanos_write(bad)


async def _series_by_tenant(grpc_addr: str, name: str) -> dict[str, int]:
    client = StoreClient(grpc_addr)
    out: dict[str, int] = {}
    try:
        async for s in client.iter_series(T0 - 1, T0 + 1, [Matcher(MatchType.EQ, "__name__", name)]):
            if isinstance(s, str):
                continue
            tenant = dict(s.labels)["tenant_id"]
            out[tenant] = out.get(tenant, 0) + 1
    finally:
        await client.close()
    return out


def test_snappy_and_tenant_data_writes_land_on_an_ingestor(tmp_path):
    ing = receive_process(tmp_path, "ing").start()
    try:
        async def main():
            snappy = H2Channel(ing.grpc, "snappy")
            try:
                # Legacy form, compressed as a default Thanos router does.
                legacy = series_body("legacy", 4) + rpc_pb2.WriteRequest(
                    tenant="t0", replica=1).SerializeToString()
                await snappy.unary(METHOD, legacy, timeout=10)
                # Current Thanos routers: several tenants per request in field 4.
                await snappy.unary(METHOD, thanos_request(
                    [("t1", series_body("multi", 3)), ("t2", series_body("multi", 5))]),
                    timeout=10)
                # The same without compression through grpcio (our own querier's library).
                async with grpc.aio.insecure_channel(ing.grpc) as ch:
                    await ch.unary_unary(METHOD)(
                        thanos_request([("t3", series_body("plain", 2))]), timeout=10)
                # A malformed tuple is refused as a whole, not half-applied.
                with pytest.raises(RpcError) as ei:
                    await snappy.unary(METHOD, thanos_request(
                        [("t4", series_body("half", 2))]) + b"\x22\x03\x0a\x09x", timeout=10)
                assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            finally:
                await snappy.close()
            return (await _series_by_tenant(ing.grpc, "legacy"),
                    await _series_by_tenant(ing.grpc, "multi"),
                    await _series_by_tenant(ing.grpc, "plain"),
                    await _series_by_tenant(ing.grpc, "half"))

        legacy, multi, plain, half = asyncio.run(asyncio.wait_for(main(), 120))
        assert legacy == {"t0": 4}
        assert multi == {"t1": 3, "t2": 5}
        assert plain == {"t3": 2}
        assert half == {}
    finally:
        ing.stop()


def test_conflicting_tenant_in_tuples_reports_conflict_and_keeps_the_rest(tmp_path):
    ing = receive_process(tmp_path, "ing").start()
    try:
        async def main():
            ch = H2Channel(ing.grpc, "snappy")
            try:
                await ch.unary(METHOD, thanos_request([("t1", series_body("c", 2, T0))]), timeout=10)
                # t1's samples are now out of order (older); t2's are new and must be kept.
                with pytest.raises(RpcError) as ei:
                    await ch.unary(METHOD, thanos_request(
                        [("t1", series_body("c", 2, T0 - 10_000)), ("t2", series_body("c", 3))]),
                        timeout=10)
            finally:
                await ch.close()
            return ei.value.code(), await _series_by_tenant(ing.grpc, "c")

        code, by_tenant = asyncio.run(asyncio.wait_for(main(), 120))
        assert code == grpc.StatusCode.ALREADY_EXISTS
        assert by_tenant == {"t1": 2, "t2": 3}
    finally:
        ing.stop()
