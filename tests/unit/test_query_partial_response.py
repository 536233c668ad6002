"""Partial responses, as Thanos's querier gives them by default: with one of several endpoints
down, answers come from the rest with a warning naming the failed endpoint; the endpoint is
checked again with backoff, its state changes are logged once each and counted in
``thanos_store_nodes_grpc_connections``; ``partial_response=false`` and
``--no-query.partial-response`` make a failed endpoint an error again."""
from __future__ import annotations

import asyncio
import logging
import time

from promring.cli import build_parser, query_config
from querier.config import QueryConfig
from querier.endpoints import EndpointHealth, HealthOptions
from querier_cluster import cluster, dead_address, run
from receiver.config import ReceiveConfig
from receiver.server import Receiver
from storeapi.client import StoreClient

Q = "/api/v1/query"
FAST = HealthOptions(backoff_min_s=0.1, backoff_max_s=0.4, healthy_interval_s=1.0, tick_s=0.05)


def test_partial_response_is_on_by_default_and_the_flag_pair_works():
    def cfg(*args):
        return query_config(build_parser().parse_args(["query", *args]), [])
    assert QueryConfig().partial_response is True
    assert cfg().partial_response is True
    assert cfg("--query.partial-response").partial_response is True
    assert cfg("--no-query.partial-response").partial_response is False
    assert cfg("--no-query.auto-downsampling").auto_downsampling is False
    assert cfg("--query.enforce-tenancy").enforce_tenancy is True


async def _metric(c, name: str) -> dict[str, float]:
    async with c.http.get(c.base + "/metrics") as r:
        text = await r.text()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(name)}


async def _until(check, limit_s: float = 20.0):
    """Poll ``check()`` until it returns a truthy value (bounded wait)."""
    deadline = time.monotonic() + limit_s
    while True:
        got = await check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


def test_one_dead_endpoint_gives_answers_from_the_rest_with_a_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="querier.endpoints")
    dead = dead_address()

    async def go():
        cfg = QueryConfig(replica_labels=["replica"], dedup_func="chain")
        async with cluster(tmp_path, cfg, n_receivers=2, extra_endpoints=(dead,), health=FAST) as c:
            now = int(time.time()) * 1000
            for i in range(2):  # two replicas of the same samples
                await c.push([((("__name__", "up"), ("job", "a")), [now - 1000, now], [1.0, 2.0])], i)
            for _ in range(5):
                status, body = await c.get(Q, query="up[1m]", time=str(now / 1000))
                assert status == 200, body
                assert body["data"]["result"] == [
                    {"metric": {"__name__": "up", "job": "a", "tenant_id": "default-tenant"},
                     "values": [[now / 1000 - 1, "1"], [now / 1000, "2"]]}]
                assert len(body["warnings"]) == 1 and body["warnings"][0].startswith(
                    f"endpoint {dead}: UNAVAILABLE"), body
            for path, params in (("/api/v1/series", {"match[]": "up"}), ("/api/v1/labels", {}),
                                 ("/api/v1/label/job/values", {})):
                status, body = await c.get(path, **params)
                assert status == 200 and any(dead in w for w in body["warnings"]), (path, body)
            # Without partial responses the dead endpoint is an error, naming it.
            status, body = await c.get(Q, query="up", time=str(now / 1000), partial_response="0")
            assert status == 422 and body["errorType"] == "execution" and dead in body["error"], body
            # The endpoint was checked again and again (backoff), but logged as down once.
            await asyncio.sleep(1.0)
            st = c.querier.stores.health.status[dead]
            assert st.up is False and st.failures >= 2
            downs = [r for r in caplog.records if r.getMessage().startswith("endpoint unhealthy")]
            # (on a loaded machine a live receiver may miss one early check too: that is a
            # separate, equally single, log line; the dead one must be logged exactly once)
            assert [r.address for r in downs].count(dead) == 1, [r.address for r in downs]
            # A live receiver whose first check raced its start is re-checked within the
            # backoff (0.4 s at most here): wait for both before reading the listing.
            for _ in range(100):
                if all(c.querier.stores.health.status[c.grpc(i)].up for i in range(2)):
                    break
                await asyncio.sleep(0.1)
            status, stores = await c.get("/api/v1/stores")
            assert [e["name"] for e in stores["data"]["unknown"]] == [dead]
            assert stores["data"]["unknown"][0]["lastError"].startswith("UNAVAILABLE")
            assert sorted(e["name"] for e in stores["data"]["receive"]) == sorted([c.grpc(0), c.grpc(1)])
            assert all(e["lastError"] is None for e in stores["data"]["receive"])
            # Label sets come with each healthy check (every second here): one check may
            # still predate the receivers' first tenant, so wait for the next one.
            async def both_replicas():
                got = await _metric(c, "thanos_store_nodes_grpc_connections{")
                return got if all(any(f'replica=\\"{i}\\"' in k for k in got)
                                  for i in range(2)) else None
            conns = await _until(both_replicas) or await _metric(
                c, "thanos_store_nodes_grpc_connections{")
            assert sorted(conns.values()) == [1.0, 1.0], conns
            for i in range(2):
                assert sum(1 for k in conns if f'replica=\\"{i}\\"' in k and 'store_type="receive"' in k) == 1

            # The endpoint comes back: it is found by the next check, and the warning goes.
            back = Receiver(ReceiveConfig(remote_write_address="127.0.0.1:0", grpc_address=dead,
                                          http_address="", tsdb_path=tmp_path / "back",
                                          external_labels=(("replica", "2"),)))
            await back.start()
            try:
                async def clean():
                    status, body = await c.get(Q, query="up", time=str(now / 1000))
                    return status == 200 and "warnings" not in body
                assert await _until(clean), "the endpoint did not come back"
                ups = [r for r in caplog.records if r.getMessage() == "endpoint healthy"
                       and r.address == dead]
                assert len(ups) == 1
                conns = await _metric(c, "thanos_store_nodes_grpc_connections{")
                assert sum(conns.values()) == 3
            finally:
                await back.stop()
    run(go())


def test_checks_of_a_failing_endpoint_back_off_exponentially():
    async def go():
        h = EndpointHealth([StoreClient("127.0.0.1:1")], HealthOptions(backoff_min_s=0.5,
                                                                       backoff_max_s=4.0))
        loop = asyncio.get_running_loop()
        waits = []
        for _ in range(6):
            h.mark_down("127.0.0.1:1", ConnectionRefusedError("refused"))
            waits.append(round(h.status["127.0.0.1:1"].next_check - loop.time(), 1))
        assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
        h.mark_up("127.0.0.1:1")
        assert h.status["127.0.0.1:1"].failures == 0 and not h.is_down("127.0.0.1:1")
    run(go())
