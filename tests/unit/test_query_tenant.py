"""The querier forwards the query's tenant to its stores as Thanos's querier does: the
``thanos-tenant`` gRPC metadata on Series, LabelNames and LabelValues calls."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest

from certs import PKI
from promring.cli import build_parser, query_config

from querier.api import QueryAPI
from querier.config import QueryConfig
from querier.fanout import StoreSet
from querier.params import BadParam
from querier.server import Querier
from querier.storesource import FanoutSource
from receiver.tsdb.labels import Matcher, MatchType
from storeapi.client import StoreClient, tenant_metadata
from storeapi.server import serve
from tests.unit.test_storeapi import SERIES, FakeSource

UP_MATCHERS = [Matcher(MatchType.EQ, "__name__", "up")]


class TenantSource(FakeSource):
    """A source that records the tenant the store server read from each call's metadata."""

    def __init__(self) -> None:
        super().__init__(SERIES)
        self.tenants: list[tuple[str, str]] = []

    def series(self, mint, maxt, matchers, skip_chunks, tenant: str = "?"):
        self.tenants.append(("series", tenant))
        return super().series(mint, maxt, matchers, skip_chunks)

    def label_names(self, mint, maxt, matchers, tenant: str = "?"):
        self.tenants.append(("label_names", tenant))
        return super().label_names(mint, maxt, matchers)

    def label_values(self, name, mint, maxt, matchers, tenant: str = "?"):
        self.tenants.append(("label_values", tenant))
        return super().label_values(name, mint, maxt, matchers)


def test_store_client_sends_thanos_tenant_metadata_on_the_wire() -> None:
    async def scenario() -> list[tuple[str, str]]:
        source = TenantSource()
        server, port = await serve(source, "127.0.0.1:0")
        client = StoreClient(f"127.0.0.1:{port}", timeout_s=30)
        try:
            got = await client.series_with_warnings(0, 10_000, UP_MATCHERS, tenant="team-a")
            assert got.series
            await client.label_names(0, 10_000, UP_MATCHERS, tenant="team-b")
            await client.label_values("job", 0, 10_000, UP_MATCHERS, tenant="team-c")
            async for _ in client.iter_series(0, 10_000, UP_MATCHERS, tenant="team-d"):
                pass
            await client.series_aggr(0, 10_000, UP_MATCHERS, 0, tenant="team-e")
            await client.series_with_warnings(0, 10_000, UP_MATCHERS)  # no tenant: none sent
        finally:
            await client.close()
            await server.stop(None)
        return source.tenants

    assert asyncio.run(scenario()) == [
        ("series", "team-a"), ("label_names", "team-b"), ("label_values", "team-c"),
        ("series", "team-d"), ("series", "team-e"), ("series", "default-tenant")]


def test_tenant_header_field_is_encoded_once_per_tenant_and_only_if_grpc_can_carry_it() -> None:
    block = tenant_metadata("team-a")
    assert block == b"\x00\x0dthanos-tenant\x06team-a"  # HPACK literal, not indexed
    assert tenant_metadata("team-a") is block
    assert tenant_metadata("") == b""
    for bad in ("caf\u00e9", "a\r\nb", "tab\there"):
        with pytest.raises(ValueError):
            tenant_metadata(bad)


class _Head:
    def __init__(self, **headers: str) -> None:
        self.headers = headers


def test_query_tenant_is_read_as_thanos_reads_it() -> None:
    """GetTenantFromHTTP: the configured header, else THANOS-TENANT, else the default tenant;
    a name with a slash is refused (bad_data), as is one gRPC metadata cannot carry."""
    api = QueryAPI.__new__(QueryAPI)  # only cfg is read by _tenant / _options
    api.cfg = QueryConfig(tenant_header="X-Scope", default_tenant="anon")
    assert api._tenant(_Head(**{"X-Scope": "team-a", "THANOS-TENANT": "team-b"})) == "team-a"
    assert api._tenant(_Head(**{"THANOS-TENANT": "team-b"})) == "team-b"
    assert api._tenant(_Head()) == "anon"
    assert api._tenant(_Head(**{"X-Scope": "/"})) == "/"  # Go's path.Base("/") is "/"
    assert api._options(_Head(**{"X-Scope": "team-a"}), {}).tenant == "team-a"
    for bad in ("a/b", "team/", "caf\u00e9", "a\tb"):
        with pytest.raises(BadParam, match="Tenant name not valid"):
            api._tenant(_Head(**{"X-Scope": bad}))


def test_a_tenants_default_read_options_are_worked_out_once_and_follow_every_parameter():
    """A request that sets no option parameter gets its tenant's default read options, kept
    per tenant; any option parameter, a refused tenant or auto-downsampling is read as
    before."""
    from common.ops import new_registry
    cfg = QueryConfig(tenant_header="X-Scope", default_tenant="anon", enforce_tenancy=True,
                      replica_labels=("replica",))
    api = QueryAPI(cfg, StoreSet([], timeout_s=5), new_registry())
    try:
        a1, _ = api._read_options(_Head(**{"X-Scope": "a"}), {"query": ["x"]}, 15_000)
        a2, eopts = api._read_options(_Head(**{"X-Scope": "a"}), {}, None)
        b, _ = api._read_options(_Head(**{"X-Scope": "b"}), {}, 15_000)
        assert a1 is a2 and eopts is api.engine_opts
        assert (a1.tenant, a1.extra_matchers, a1.replica_labels) == (
            "a", (Matcher(MatchType.EQ, cfg.tenant_label_name, "a"),), ("replica",))
        assert b.tenant == "b" and b.extra_matchers[0].value == "b"
        assert api._read_options(_Head(**{"X-Scope": "a"}), {"dedup": ["false"]},
                                 None)[0].replica_labels == ()
        assert api._read_options(_Head(**{"X-Scope": "a"}), {"partial_response": ["1"]},
                                 None)[0].partial_response is True
        coarse, ceopts = api._read_options(_Head(), {"max_source_resolution": ["1h"]}, 15_000)
        assert coarse.max_resolution_ms == 3_600_000 and ceopts is not api.engine_opts
        with pytest.raises(BadParam, match="Tenant name not valid"):
            api._read_options(_Head(**{"X-Scope": "a/b"}), {}, None)
        auto = QueryAPI(QueryConfig(auto_downsampling=True), StoreSet([], timeout_s=5),
                        new_registry())
        assert auto._read_options(_Head(), {}, 50_000)[0].max_resolution_ms == 10_000
        assert auto._read_options(_Head(), {}, 5_000)[0].max_resolution_ms == 1_000
        auto.close()
    finally:
        api.close()


def test_stacked_querier_passes_the_callers_tenant_on_as_thanos_proxy_does() -> None:
    """A querier's own StoreAPI (FanoutSource) forwards the tenant it was called with (or
    default-tenant, the store server's reading of a call without one) to its endpoints."""
    async def scenario() -> list[tuple[str, str]]:
        leaf = TenantSource()
        leaf_server, leaf_port = await serve(leaf, "127.0.0.1:0")
        stores = StoreSet([f"127.0.0.1:{leaf_port}"], timeout_s=30)
        top_server, top_port = await serve(FanoutSource(stores, partial_response=False),
                                           "127.0.0.1:0")
        client = StoreClient(f"127.0.0.1:{top_port}", timeout_s=30)
        try:
            assert (await client.series_with_warnings(0, 10_000, UP_MATCHERS,
                                                      tenant="team-a")).series
            await client.label_names(0, 10_000, UP_MATCHERS, tenant="team-b")
            await client.label_values("job", 0, 10_000, UP_MATCHERS)
        finally:
            await client.close()
            await top_server.stop(None)
            await stores.close()
            await leaf_server.stop(None)
        return leaf.tenants

    assert asyncio.run(scenario()) == [
        ("series", "team-a"), ("label_names", "team-b"), ("label_values", "default-tenant")]


def test_tenant_from_the_client_certificate_field_as_thanos_query_reads_it(tmp_path) -> None:
    """--query.tenant-certificate-field: the tenant is the verified client certificate's
    organization / organizationalUnit / commonName, whatever the tenant headers say; a
    request without a certificate or without the field is refused with Thanos's bad_data
    message (tenancy.getTenantFromCertificate), before any store is called."""
    pki = PKI.make(tmp_path / "pki")
    web = pki.optional_client_web_config(tmp_path / "web.yml")
    no_fields = pki.ca.issue("bare", "nobody")  # a common name only

    async def scenario(field: str) -> tuple[list, list]:
        source = TenantSource()
        server, port = await serve(source, "127.0.0.1:0")
        q = Querier(QueryConfig(http_address="127.0.0.1:0", endpoints=[f"127.0.0.1:{port}"],
                                http_config=str(web), tenant_certificate_field=field))
        await q.start()
        answers = []
        try:
            async with aiohttp.ClientSession() as http:
                for cert in (pki.client, None, no_fields):
                    async with http.get(f"https://127.0.0.1:{q.port}/api/v1/series",
                                        params={"match[]": "up", "start": "0", "end": "10"}, ssl=pki.client_context(cert),
                                        headers={"THANOS-TENANT": "other"}) as r:
                        answers.append((r.status, await r.json(content_type=None)))
        finally:
            await q.stop()
            await server.stop(None)
        return answers, source.tenants

    for field, tenant in (("organization", "team-a"), ("organizationalUnit", "unit-a"),
                          ("commonName", "writer-1")):
        answers, tenants = asyncio.run(asyncio.wait_for(scenario(field), 60))
        assert answers[0][0] == 200 and answers[0][1]["data"], answers
        bare = [("series", "nobody")] if field == "commonName" else []  # its one field
        assert tenants == [("series", tenant), *bare]
        assert answers[1] == (400, {"status": "error", "errorType": "bad_data", "error":
                                    "could not get required certificate field from client cert"})
        if field != "commonName":
            assert answers[2] == (400, {"status": "error", "errorType": "bad_data",
                                        "error": f"could not get {field} field from client cert"})


def test_tenant_certificate_field_without_client_certificates_is_a_flag_error(tmp_path) -> None:
    pki = PKI.make(tmp_path / "pki")
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {pki.server.cert}\n"
                   f"  key_file: {pki.server.key}\n")
    for extra in ([], ["--http.config", str(web)]):
        a = build_parser().parse_args(["query", "--query.tenant-certificate-field=commonName",
                                       *extra])
        with pytest.raises(ValueError, match="--query.tenant-certificate-field needs"):
            query_config(a, [])
    web.write_text(web.read_text() + f"  client_ca_file: {pki.ca.cert_path}\n"
                                     "  client_auth_type: RequireAndVerifyClientCert\n")
    a = build_parser().parse_args(["query", "--query.tenant-certificate-field=commonName",
                                   "--http.config", str(web)])
    assert query_config(a, []).tenant_certificate_field == "commonName"
    with pytest.raises(SystemExit):  # Thanos's enum: anything else is refused
        build_parser().parse_args(["query", "--query.tenant-certificate-field=email"])


def test_a_refused_tenant_stays_refused_after_valid_tenants_defaults_are_kept():
    """_read_options looks a tenant's kept defaults up by its name before checking it: only a
    name that passed the check is ever kept, so a refused one is refused every time."""
    from common.ops import new_registry
    api = QueryAPI(QueryConfig(tenant_header="X-Scope"), StoreSet([], timeout_s=5),
                   new_registry())
    try:
        for _ in range(2):
            assert api._read_options(_Head(**{"X-Scope": "ok"}), {}, None)[0].tenant == "ok"
            for bad in ("a/b", "caf\u00e9"):
                with pytest.raises(BadParam, match="Tenant name not valid"):
                    api._read_options(_Head(**{"X-Scope": bad}), {}, None)
        assert list(api._tenant_defaults) == ["ok"]
    finally:
        api.close()
