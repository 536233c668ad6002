"""The querier's endpoints: file SD (``--store.sd-files``), ``--store.response-timeout``, the
route prefix, and its own StoreAPI (stacked queriers) -- in process, on loopback."""
from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from querier.config import QueryConfig
from querier.fanout import SelectOptions, StoreSet, StoreUnavailable
from querier.filesd import FileSD, FileSDError, parse_file_sd
from querier.server import Querier, normalize_prefix
from receiver.tsdb.labels import Matcher
from storeapi.client import StoreClient
from storeapi.server import serve

# StoreAPI servers refuse a Series call without matchers (as Thanos): ask for one metric.
UP = [Matcher("=", "__name__", "up")]


def test_parse_file_sd_json_and_yaml():
    assert parse_file_sd('[{"targets": ["a:1", "b:2"], "labels": {"x": "y"}}, {"targets": ["c:3"]}]',
                         "f.json") == ["a:1", "b:2", "c:3"]
    assert parse_file_sd("- targets: ['a:1']\n- targets:\n  - b:2\n", "f.yml") == ["a:1", "b:2"]
    assert parse_file_sd("", "f.yaml") == []


@pytest.mark.parametrize("text,name", [("{", "f.json"), ('{"targets": ["a:1"]}', "f.json"),
                                       ("- targets: a:1", "f.yml"), ("- [1]", "f.yml"),
                                       ('[{"targets": [""]}]', "f.json")])
def test_parse_file_sd_rejects(text, name):
    with pytest.raises(FileSDError):
        parse_file_sd(text, name)


def test_file_sd_globs_changes_and_bad_edits(tmp_path):
    (tmp_path / "a.json").write_text('[{"targets": ["a:1"]}]')
    (tmp_path / "b.yml").write_text("- targets: ['b:1', 'a:1']\n")
    (tmp_path / "ignored.txt").write_text("- targets: ['z:1']\n")
    sd = FileSD([str(tmp_path / "*")], interval_s=300)
    assert sd.read() == ["a:1", "b:1"]
    assert not sd.changed()
    (tmp_path / "a.json").write_text('[{"targets": ["a:2"]}]')
    os.utime(tmp_path / "a.json", ns=(1, 1))
    assert sd.changed() and sd.read() == ["a:2", "b:1", "a:1"]
    (tmp_path / "a.json").write_text("[broken")
    os.utime(tmp_path / "a.json", ns=(2, 2))
    assert sd.read() == ["a:2", "b:1", "a:1"]  # the broken file keeps its previous targets
    (tmp_path / "b.yml").unlink()
    assert sd.changed() and sd.read() == ["a:2"]


class _Source:
    """A StoreAPI source with one series; ``delay`` seconds before answering Series."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def label_sets(self):
        return [(("site", "x"),)]

    def time_range(self):
        return 0, 10_000

    async def series(self, mint, maxt, matchers, skip_chunks):
        await asyncio.sleep(self.delay)
        return [((("__name__", "up"), ("site", "x")), [])]

    def label_names(self, mint, maxt, matchers):
        return ["__name__", "site"]

    def label_values(self, name, mint, maxt, matchers):
        return {"__name__": ["up"], "site": ["x"]}.get(name, [])


def test_store_response_timeout_drops_a_silent_store():
    async def go():
        slow, slow_port = await serve(_Source(30.0), "127.0.0.1:0", "store")
        fast, fast_port = await serve(_Source(0.0), "127.0.0.1:0", "store")
        stores = StoreSet([f"127.0.0.1:{fast_port}", f"127.0.0.1:{slow_port}"],
                          response_timeout_s=0.5)
        try:
            warnings: list[str] = []
            got = await asyncio.wait_for(stores.series(
                0, 10_000, UP, skip_chunks=True, opts=SelectOptions(partial_response=True),
                warnings=warnings), 20)
            assert len(got) == 1 and len(warnings) == 1 and str(slow_port) in warnings[0]
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(stores.series(0, 10_000, UP, skip_chunks=True,
                                                     opts=SelectOptions(partial_response=False)), 20)
        finally:
            await stores.close()
            await slow.stop(None)
            await fast.stop(None)
    asyncio.run(go())


@pytest.mark.parametrize("raw,want", [("", ""), ("/", ""), ("/thanos/", "/thanos"), ("x/y", "/x/y")])
def test_normalize_prefix(raw, want):
    assert normalize_prefix(raw) == want


def test_stacked_querier_serves_its_stores_and_the_api_under_the_route_prefix():
    """A querier's --grpc-address is a StoreAPI over its fan-out: a second querier on top sees
    the first one's store (with its label sets and time range) and answers under its prefix."""
    async def go():
        leaf, leaf_port = await serve(_Source(0.0), "127.0.0.1:0", "store")
        regional = Querier(QueryConfig(http_address="127.0.0.1:0", grpc_address="127.0.0.1:0",
                                       endpoints=[f"127.0.0.1:{leaf_port}"]))
        await regional.start()
        top = Querier(QueryConfig(http_address="127.0.0.1:0", route_prefix="/global",
                                  endpoints=[f"127.0.0.1:{regional.grpc_port}"]))
        await top.start()
        client = StoreClient(f"127.0.0.1:{regional.grpc_port}")
        try:
            for _ in range(100):  # the regional querier learns its store's Info
                info = await client.info()
                if info.label_sets:
                    break
                await asyncio.sleep(0.1)
            assert [tuple(ls) for ls in info.label_sets] == [(("site", "x"),)]
            assert (info.min_time, info.max_time) == (0, 10_000)
            async with aiohttp.ClientSession() as s:
                base = f"http://127.0.0.1:{top.port}"
                async with s.get(f"{base}/global/api/v1/series",
                                 params={"match[]": "up", "start": "0", "end": "10"}) as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["data"] == [{"__name__": "up", "site": "x"}]
                async with s.get(f"{base}/global/api/v1/label/site/values") as r:
                    assert (await r.json())["data"] == ["x"]
                async with s.get(f"{base}/api/v1/labels") as r:
                    assert r.status == 404
                async with s.get(f"{base}/-/ready") as r:
                    assert r.status == 200
        finally:
            await client.close()
            await top.stop()
            await regional.stop()
            await leaf.stop(None)
    asyncio.run(go())


class _EmptyReceive(_Source):
    def time_range(self):
        return (1 << 63) - 1, -(1 << 63)  # an ingestor without samples yet


def test_an_empty_ingestor_is_still_asked():
    """Its Info (cached for seconds) must not hide samples written right after it was read."""
    async def go():
        srv, port = await serve(_EmptyReceive(0.0), "127.0.0.1:0", "receive")
        stores = StoreSet([f"127.0.0.1:{port}"])
        try:
            assert len(await stores.select_clients(1000, 2000, [])) == 1
        finally:
            await stores.close()
            await srv.stop(None)
    asyncio.run(go())


def test_strict_endpoint_down_at_start_is_used_once_it_is_up():
    async def go():
        from harness import free_port
        port = free_port()
        q = Querier(QueryConfig(http_address="127.0.0.1:0", partial_response=True,
                                strict_endpoints=[f"127.0.0.1:{port}"]))
        await q.start()
        srv = None
        try:
            warnings: list[str] = []
            opts = SelectOptions(partial_response=True)
            assert await q.stores.series(0, 10_000, UP, skip_chunks=True, opts=opts,
                                         warnings=warnings) == []
            assert warnings
            srv, _ = await serve(_Source(0.0), f"127.0.0.1:{port}", "store")
            got: list = []
            for _ in range(100):
                got = await q.stores.series(0, 10_000, UP, skip_chunks=True, opts=opts)
                if got:
                    break
                await asyncio.sleep(0.1)
            assert [s.labels for s in got] == [(("__name__", "up"), ("site", "x"))]
        finally:
            await q.stop()
            if srv is not None:
                await srv.stop(None)
    asyncio.run(go())


def test_stacked_querier_passes_a_down_stores_warning_up():
    async def go():
        from harness import free_port
        leaf, leaf_port = await serve(_Source(0.0), "127.0.0.1:0", "store")
        regional = Querier(QueryConfig(http_address="127.0.0.1:0", grpc_address="127.0.0.1:0",
                                       partial_response=True,
                                       endpoints=[f"127.0.0.1:{leaf_port}", f"127.0.0.1:{free_port()}"]))
        await regional.start()
        client = StoreClient(f"127.0.0.1:{regional.grpc_port}")
        try:
            got = await client.series_with_warnings(0, 10_000, UP, skip_chunks=True)
            assert [s.labels for s in got.series] == [(("__name__", "up"), ("site", "x"))]
            assert len(got.warnings) == 1 and "endpoint 127.0.0.1:" in got.warnings[0]
        finally:
            await client.close()
            await regional.stop()
            await leaf.stop(None)
    asyncio.run(go())


def test_thanos_endpoint_config_file_and_inline():
    from querier.filesd import parse_endpoint_config
    text = "endpoints:\n  - address: a:1\n    strict: true\n  - address: b:2\n    group: true\n"
    assert parse_endpoint_config(text, "e.yml") == ["a:1", "b:2"]
    assert parse_endpoint_config("", "e.yml") == [] == parse_endpoint_config("endpoints: []", "e")
    for bad in ("endpoints: a:1", "endpoints: [{strict: true}]",
                "endpoints: [{address: a:1, client_config: {tls_config: {enabled: true}}}]"):
        with pytest.raises(FileSDError):
            parse_endpoint_config(bad, "e.yml")


def test_endpoint_config_file_is_reloaded(tmp_path):
    """--endpoint.sd-config-file: a store added to the file is used without a restart."""
    async def go():
        srv, port = await serve(_Source(0.0), "127.0.0.1:0", "store")
        f = tmp_path / "endpoints.conf"
        f.write_text("endpoints: []\n")
        q = Querier(QueryConfig(http_address="127.0.0.1:0", endpoint_config_file=str(f),
                                endpoint_config="endpoints: [{address: '127.0.0.1:1'}]"))
        await q.start()
        try:
            assert [c.address for c in q.stores.clients] == ["127.0.0.1:1"]
            f.write_text(f"endpoints:\n  - address: 127.0.0.1:{port}\n")
            for _ in range(100):
                if len(q.stores.clients) == 2:
                    break
                await asyncio.sleep(0.1)
            assert [c.address for c in q.stores.clients] == ["127.0.0.1:1", f"127.0.0.1:{port}"]
        finally:
            await q.stop()
            await srv.stop(None)
    asyncio.run(go())


def test_the_health_loop_sleeps_until_a_check_is_due_not_every_tick(monkeypatch):
    """Between checks the health loop is not woken each ``tick_s`` (an idle querier's wake-ups
    cost the next query cold caches): a down endpoint is still checked at each backoff, a
    healthy one at each interval, and a new endpoint at once."""
    from querier.endpoints import EndpointHealth, HealthOptions
    from querier_cluster import dead_address
    scans = []
    real = EndpointHealth._start_due

    def counted(self, *a):
        scans.append(1)
        return real(self, *a)
    monkeypatch.setattr(EndpointHealth, "_start_due", counted)

    async def go():
        src, port = await serve(_Source(0.0), "127.0.0.1:0", "store")
        down, up = StoreClient(dead_address()), StoreClient(f"127.0.0.1:{port}")
        h = EndpointHealth([down], HealthOptions(backoff_min_s=0.3, backoff_max_s=0.3,
                                                 healthy_interval_s=0.3, tick_s=0.01))
        try:
            h.start()
            await asyncio.sleep(1.05)  # checks near 0, 0.3, 0.6 and 0.9 s
            assert 3 <= h.status[down.address].failures <= 5
            assert len(scans) < 30  # a scan per tick would be ~100
            h.set_clients([down, up])
            for _ in range(100):
                await asyncio.sleep(0.01)
                if h.status[up.address].up:
                    break
            assert h.status[up.address].up is True  # checked at once, not at the next due
            first = h.status[up.address].last_check
            await asyncio.sleep(0.5)
            assert h.status[up.address].last_check > first  # and again after its interval
        finally:
            await h.stop()
            await down.close()
            await up.close()
            await src.stop(None)
    asyncio.run(go())
