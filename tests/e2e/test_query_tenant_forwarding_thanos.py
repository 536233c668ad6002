"""Which StoreAPI-family calls carry the query's tenant (``thanos-tenant`` gRPC metadata),
side by side: the real ``thanos query`` and ``promring query`` over one recording endpoint
that advertises the Store, Metadata, Exemplars and Rules APIs. Thanos v0.42 forwards the tenant
on Series, LabelNames and LabelValues only (pkg/store/proxy.go); its Metadata, Exemplars and
Rules proxies send none, and neither do we. With --query.tenant-certificate-field the tenant
sent is the client certificate's."""
from __future__ import annotations

import contextlib
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import orjson

from certs import PKI
from harness import query_process
from storeapi import exemplars_pb2, info_pb2, metadata_pb2, rpc_pb2, rules_pb2
from test_thanos_interop import STARTUP_S, thanos

T_MAX = 2 ** 62
CALLS = {  # method -> the (empty) answer: a stream of one message, or a unary one
    "/thanos.info.Info/Info": info_pb2.InfoResponse(
        label_sets=[], ComponentType="sidecar",
        store=info_pb2.StoreInfo(min_time=-T_MAX, max_time=T_MAX),
        rules=info_pb2.RulesInfo(), metric_metadata=info_pb2.MetricMetadataInfo(),
        exemplars=info_pb2.ExemplarsInfo(min_time=-T_MAX, max_time=T_MAX)),
    "/thanos.Store/LabelNames": rpc_pb2.LabelNamesResponse(names=["job"]),
    "/thanos.Store/LabelValues": rpc_pb2.LabelValuesResponse(values=["api"]),
    "/thanos.Store/Series": None,
    "/thanos.Metadata/MetricMetadata": None,
    "/thanos.Exemplars/Exemplars": None,
    "/thanos.Rules/Rules": None,
}
API = [("/api/v1/series", {"match[]": "up"}), ("/api/v1/labels", {}),
       ("/api/v1/label/job/values", {}), ("/api/v1/metadata", {}),
       ("/api/v1/query_exemplars", {"query": "up", "start": "0", "end": "100"}),
       ("/api/v1/rules", {})]


class Recorder(grpc.GenericRpcHandler):
    """Records the thanos-tenant metadata ("" for none) of every call, by method."""

    def __init__(self) -> None:
        self.seen: dict[str, set[str]] = {}
        self.lock = threading.Lock()

    def service(self, details):
        if details.method not in CALLS:
            return None
        answer = CALLS[details.method]
        tenant = dict(details.invocation_metadata).get("thanos-tenant", "")
        with self.lock:
            self.seen.setdefault(details.method.rsplit("/", 1)[1], set()).add(tenant)
        if answer is None:
            return grpc.unary_stream_rpc_method_handler(lambda req, ctx: iter(()),
                                                        request_deserializer=None,
                                                        response_serializer=None)
        return grpc.unary_unary_rpc_method_handler(lambda req, ctx: answer.SerializeToString(),
                                                   request_deserializer=None,
                                                   response_serializer=None)


@contextlib.contextmanager
def _recording_endpoint():
    """A Recorder serving on a free loopback port: yields it and its address."""
    rec = Recorder()
    server = grpc.server(ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((rec,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield rec, f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def _get(base: str, path: str, params: dict) -> int:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, headers={"THANOS-TENANT": "team-a"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _seen_through(base: str, rec: Recorder) -> dict[str, set[str]]:
    deadline = time.monotonic() + STARTUP_S
    while "Series" not in rec.seen:  # until the querier has found the endpoint (bounded)
        assert time.monotonic() < deadline, "the querier never called the endpoint"
        _get(base, *API[0])
        time.sleep(0.3)
    with rec.lock:
        rec.seen.clear()
    for path, params in API:
        assert _get(base, path, params) == 200, path
    with rec.lock:
        return {k: v for k, v in rec.seen.items() if k != "Info"}


def test_tenant_reaches_the_same_storeapi_calls_as_from_thanos_query(tmp_path: Path) -> None:
    with _recording_endpoint() as (rec, endpoint):
        theirs = thanos(tmp_path, "thanos-query", "query", f"--endpoint={endpoint}").start(STARTUP_S)
        try:
            want = _seen_through(f"http://127.0.0.1:{theirs.ports['http']}", rec)
        finally:
            theirs.stop()
        rec.seen.clear()
        ours = query_process(tmp_path, "promring-query", [endpoint]).start(STARTUP_S)
        try:
            got = _seen_through(f"http://127.0.0.1:{ours.ports['http']}", rec)
        finally:
            ours.stop()
    assert want == {"Series": {"team-a"}, "LabelNames": {"team-a"}, "LabelValues": {"team-a"},
                    "MetricMetadata": {""}, "Exemplars": {""}, "Rules": {""}}
    assert got == want


def _tls_get(base: str, ctx: ssl.SSLContext) -> tuple[int, dict]:
    """/api/v1/series over HTTPS, the tenant header naming another tenant."""
    url = f"{base}/api/v1/series?match[]=up"
    req = urllib.request.Request(url, headers={"THANOS-TENANT": "other"})
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def _cert_answers(proc, rec: Recorder, ctxs: dict[str, ssl.SSLContext]) -> tuple[dict, set]:
    """Each client's answer, and the tenants the endpoint saw on Series, once the querier
    has found the endpoint (bounded wait)."""
    proc.ready_urls = []  # its HTTP port speaks TLS only
    proc.start(STARTUP_S)
    base = f"https://127.0.0.1:{proc.ports['http']}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while "Series" not in rec.seen:
            assert time.monotonic() < deadline, "the querier never called the endpoint"
            with contextlib.suppress(OSError):
                _tls_get(base, ctxs["organization"])
            time.sleep(0.3)
        with rec.lock:
            rec.seen.clear()
        answers = {name: _tls_get(base, ctx) for name, ctx in ctxs.items()}
        with rec.lock:
            return answers, rec.seen.get("Series", set())
    finally:
        proc.stop()


def test_tenant_from_the_client_certificate_as_thanos_query(tmp_path: Path) -> None:
    """--query.tenant-certificate-field=organization over --http.config mutual TLS: the
    certificate's organization is the tenant sent to the stores (the header is ignored); no
    certificate, or one without an organization, gets the same 400 from both."""
    pki = PKI.make(tmp_path / "pki")
    web = pki.optional_client_web_config(tmp_path / "web.yml")
    certs = {"organization": pki.client, "none": None, "no-org": pki.ca.issue("no-org", "nobody")}
    ctxs = {name: pki.client_context(cert) for name, cert in certs.items()}
    flags = (f"--http.config={web}", "--query.tenant-certificate-field=organization")
    with _recording_endpoint() as (rec, endpoint):
        want = _cert_answers(thanos(tmp_path, "thanos-query", "query", f"--endpoint={endpoint}",
                                    *flags), rec, ctxs)
        rec.seen.clear()
        got = _cert_answers(query_process(tmp_path, "promring-query", [endpoint], *flags),
                            rec, ctxs)
    assert want[1] == {"team-a"} and want[0]["organization"][0] == 200
    assert want[0]["none"] == (400, {"status": "error", "errorType": "bad_data", "error":
                                     "could not get required certificate field from client cert"})
    assert want[0]["no-org"] == (400, {"status": "error", "errorType": "bad_data",
                                       "error": "could not get organization field from client cert"})
    assert got == want
