"""/api/v1/query_exemplars over ingestors' Thanos Exemplars API: selectors of the query pick
series, replicas merge, tenancy is enforced, errors in Prometheus's words."""
from __future__ import annotations

import grpc
import pytest

from querier.config import QueryConfig
from querier_cluster import RW_HEADERS, cluster, run
from receiver.exemplars import extract_selectors
from receiver.remotewrite import snappy_compress
from storeapi import exemplars_pb2, info_pb2
from tests.unit.test_exemplars import exemplar, series
from tests.unit.test_remotewrite import ld, sample


async def send(c, body: bytes, i: int = 0, tenant: str | None = None) -> int:
    url = f"http://127.0.0.1:{c.receivers[i].ports['remote_write']}/api/v1/receive"
    headers = dict(RW_HEADERS, **({"THANOS-TENANT": tenant} if tenant else {}))
    async with c.http.post(url, data=snappy_compress(body), headers=headers) as r:
        return r.status


BODY = (series(b"rpc", ld(2, sample(1.0, 1000)), exemplar([(b"trace_id", b"a")], 0.5, 1000))
        + series(b"rpc", ld(1, ld(1, b"code") + ld(2, b"500")), ld(2, sample(1.0, 1000)),
                 exemplar([(b"trace_id", b"b")], 2.0, 1500))
        + series(b"other", ld(2, sample(1.0, 1000)), exemplar([(b"trace_id", b"c")], 3.0, 1000)))


def test_exemplars_of_the_query_selectors_merged_over_replicas(tmp_path):
    async def go():
        async with cluster(tmp_path, QueryConfig(replica_labels=("replica",)), n_receivers=2,
                           max_exemplars=10) as c:
            assert await send(c, BODY, 0) == 200 and await send(c, BODY, 1) == 200
            status, body = await c.get("/api/v1/query_exemplars",
                                       query='sum(rate(rpc{code=""}[5m])) / other', start="0", end="2")
            assert status == 200 and body == {"status": "success", "data": [
                {"seriesLabels": {"__name__": "other", "tenant_id": "default-tenant"},
                 "exemplars": [{"labels": {"trace_id": "c"}, "value": "3", "timestamp": 1}]},
                {"seriesLabels": {"__name__": "rpc", "tenant_id": "default-tenant"},
                 "exemplars": [{"labels": {"trace_id": "a"}, "value": "0.5", "timestamp": 1}]}]}
            _, body = await c.get("/api/v1/query_exemplars", query="rpc", start="1.2", end="2")
            assert [s["exemplars"][0]["timestamp"] for s in body["data"]] == [1.5]
            assert await c.get("/api/v1/query_exemplars", query="1 + 1") == (
                200, {"status": "success", "data": None})
            status, body = await c.get("/api/v1/query_exemplars", query="rpc", start="5", end="1")
            assert status == 400 and body["error"] == "end timestamp must not be before start timestamp"
            status, body = await c.get("/api/v1/query_exemplars", query="rpc{")
            assert status == 400 and body["errorType"] == "bad_data"
            # The ingestor's Info advertises the API; Thanos's wire names.
            async with grpc.aio.insecure_channel(c.grpc(0)) as ch:
                info = await ch.unary_unary(
                    "/thanos.info.Info/Info", info_pb2.InfoRequest.SerializeToString,
                    info_pb2.InfoResponse.FromString)(info_pb2.InfoRequest())
                assert info.HasField("exemplars")
                call = ch.unary_stream("/thanos.Exemplars/Exemplars",
                                       exemplars_pb2.ExemplarsRequest.SerializeToString,
                                       exemplars_pb2.ExemplarsResponse.FromString)
                got = [r async for r in call(exemplars_pb2.ExemplarsRequest(
                    query="other", start=0, end=5000))]
                assert [(lb.name, lb.value) for lb in got[0].data.seriesLabels.labels] == [
                    ("__name__", "other"), ("replica", "0"), ("tenant_id", "default-tenant")]
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    _ = [r async for r in call(exemplars_pb2.ExemplarsRequest(query="sum("))]
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    run(go())


def test_tenancy_is_enforced(tmp_path):
    async def go():
        async with cluster(tmp_path, QueryConfig(enforce_tenancy=True), max_exemplars=10) as c:
            assert await send(c, BODY, tenant="t1") == 200
            async with c.http.get(c.base + "/api/v1/query_exemplars", params={"query": "other"},
                                  headers={"THANOS-TENANT": "t2"}) as r:
                assert (await r.json())["data"] == []
            async with c.http.get(c.base + "/api/v1/query_exemplars", params={"query": "other"},
                                  headers={"THANOS-TENANT": "t1"}) as r:
                data = (await r.json())["data"]
            assert [s["seriesLabels"] for s in data] == [{"__name__": "other", "tenant_id": "t1"}]
    run(go())


def test_selectors_extracted_as_prometheus_does():
    got = extract_selectors('rate(a{x="1"}[5m]) + on() b offset 1m or max_over_time({"c", y=~"z"}[1m:1m])')
    assert [sorted((m.name, m.type.value, m.value) for m in ms) for ms in got] == [
        [("__name__", "=", "a"), ("x", "=", "1")], [("__name__", "=", "b")],
        [("__name__", "=", "c"), ("y", "=~", "z")]]
    assert extract_selectors("1 + 2") == []
    with pytest.raises(ValueError, match="unexpected end of input inside braces"):
        extract_selectors("a{")
    with pytest.raises(ValueError, match='unexpected identifier "or" in label matching'):
        extract_selectors('c{y=~"z" or w!="v"}')  # not PromQL (promql-parser had it)


def test_a_querier_stacked_on_a_querier_sees_the_exemplars(tmp_path):
    """The querier's own gRPC serves the Exemplars API over its fan-out (and says so in Info),
    so a global querier above regional ones answers the same."""
    import aiohttp

    from common.ops import new_registry
    from querier.fanout import StoreSet
    from querier.server import Querier

    async def go():
        async with cluster(tmp_path, QueryConfig(grpc_address="127.0.0.1:0"),
                           max_exemplars=10) as c:
            assert await send(c, BODY) == 200
            below = f"127.0.0.1:{c.querier.grpc_port}"
            cfg = QueryConfig(http_address="127.0.0.1:0", endpoints=[below])
            registry = new_registry()
            top = Querier(cfg, registry=registry,
                          stores=StoreSet([below], registry=registry))
            await top.start()
            try:
                want = await c.get("/api/v1/query_exemplars", query="rpc or other")
                assert len(want[1]["data"]) == 3
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{top.port}/api/v1/query_exemplars",
                                        params={"query": "rpc or other"}) as r:
                        assert (r.status, await r.json()) == want
            finally:
                await top.stop()
    run(go())
