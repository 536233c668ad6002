"""The query frontend's HTTP server: range queries split and cached, everything else proxied."""
from __future__ import annotations

import logging
import time

import orjson
from aiohttp import web
from multidict import CIMultiDict, MultiDict
from prometheus_client import CollectorRegistry, Counter, Histogram

from common.httpgzip import compress_response
from common.ops import add_ops_routes, new_registry, start_site
from common.tls import certificate_field, peer_certificate, valid_query_tenant
from common.webconfig import WebConfigFile

from .cache import new_results_cache
from .config import FrontendConfig
from .downstream import HOP_BY_HOP, Answer, Downstream, DownstreamError
from .rangequery import PartFailed, RangeQuerier, parse_range_request

log = logging.getLogger("promring.frontend")

MAX_BODY_BYTES = 10 << 20  # Thanos's frontend: 10 MiB
# Prometheus API paths counted by thanos_query_frontend_queries_total{op}.
_OPS = {"/api/v1/query_range": "query_range", "/api/v1/query": "query",
        "/api/v1/labels": "label_names", "/api/v1/series": "series"}


def _op(path: str) -> str | None:
    if path in _OPS:
        return _OPS[path]
    if path.startswith("/api/v1/label/") and path.endswith("/values"):
        return "label_values"
    return None


class FrontendMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter("thanos_query_frontend_queries", "Total queries passing through "
                               "query frontend", ["op"], registry=registry)
        for op in ("query_range", "query", "label_names", "label_values", "series"):
            self.queries.labels(op)
        self.duration = Histogram("cortex_frontend_query_range_duration_seconds",
                                  "Total time spent in seconds doing query range requests.",
                                  ["method", "status_code"], registry=registry)


def _error(status: int, kind: str, msg: str) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        body=orjson.dumps({"status": "error", "errorType": kind, "error": msg}))


class QueryFrontend:
    def __init__(self, cfg: FrontendConfig, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or new_registry()
        self.m = FrontendMetrics(self.registry)
        self.downstream = Downstream(cfg.downstream_url, self.registry)
        self.cache = new_results_cache(cfg.cache, cfg.cache_compression, self.registry)
        self.ranges = RangeQuerier(cfg, self.downstream, self.cache, self.registry)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        await self.downstream.start()
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        add_ops_routes(app, self.registry, lambda: True)
        app.router.add_route("GET", "/api/v1/query_range", self._query_range)
        app.router.add_route("POST", "/api/v1/query_range", self._query_range)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        self._runner, self.port = await start_site(
            app, self.cfg.http_address,
            web_config=WebConfigFile(self.cfg.http_config) if self.cfg.http_config else None)
        log.info("query frontend listening", extra={"http": self.port,
                                                    "downstream": self.cfg.downstream_url})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.downstream.stop()
        if self.cache is not None:
            await self.cache.close()

    def _tenant(self, request: web.Request) -> str:
        """The request's tenant: with --query-frontend.tenant-certificate-field, that field of
        the verified client certificate (ValueError with Thanos's message when there is none,
        or a name Thanos refuses: the request is answered 400 then); else the first
        --query-frontend.org-id-header present, the tenant header, or the default tenant."""
        field = self.cfg.tenant_certificate_field
        if field:
            tenant = certificate_field(peer_certificate(request.transport), field)
            if not valid_query_tenant(tenant):
                raise ValueError("Tenant name not valid")
            return tenant
        for h in (*self.cfg.org_id_headers, self.cfg.tenant_header):
            if request.headers.get(h):
                return request.headers[h]
        return self.cfg.default_tenant

    def _with_certificate_tenant(self, headers: CIMultiDict, tenant: str) -> CIMultiDict:
        """As Thanos's frontend (tenancy.InternalTenancyConversionTripper) with a certificate
        field: the tenant goes downstream in THANOS-TENANT, the tenant header the client sent
        (when another) does not."""
        if self.cfg.tenant_certificate_field:
            if self.cfg.tenant_header.lower() != THANOS_TENANT.lower():
                headers.popall(self.cfg.tenant_header, None)
            headers[THANOS_TENANT] = tenant
        return headers

    def _forwarded(self, request: web.Request, tenant: str) -> CIMultiDict:
        """Headers a split part carries downstream: the tenant and --query-frontend.forward-header."""
        out = CIMultiDict()
        for h in (self.cfg.tenant_header, *self.cfg.org_id_headers, *self.cfg.forward_headers):
            for v in request.headers.getall(h, []):
                out.add(h, v)
        return self._with_certificate_tenant(out, tenant)

    async def _query_range(self, request: web.Request) -> web.StreamResponse:
        began = time.monotonic()
        self.m.queries.labels("query_range").inc()
        params = MultiDict(request.query)
        body = await request.read()
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            params.extend(await request.post())
        no_store = "no-store" in request.headers.get("Cache-Control", "").lower()
        try:
            tenant = request[_TENANT] = self._tenant(request)
        except ValueError as e:
            resp = _error(400, "bad_data", str(e))
            await self._finish(request, resp, params, began)
            return resp
        req = parse_range_request(params, self.cfg, tenant, self._forwarded(request, tenant),
                                  no_store)
        if req is None:
            resp = await self._proxy_answer(request, body, self.cfg.max_retries)
        elif (self.cfg.max_query_length_ms and
              req.end_ms - req.start_ms > self.cfg.max_query_length_ms):
            resp = _error(400, "bad_data", "the query time range exceeds the limit (query length: "
                          f"{_dur(req.end_ms - req.start_ms)}, limit: "
                          f"{_dur(self.cfg.max_query_length_ms)})")
        else:
            try:
                resp = web.Response(body=orjson.dumps(await self.ranges.answer(req)),
                                    content_type="application/json")
            except PartFailed as e:
                resp = _response_of(e.answer)
            except DownstreamError as e:
                resp = _error(502, "unavailable", str(e))
        await self._finish(request, resp, params, began)
        return resp

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        began = time.monotonic()
        op = _op(request.path)
        if op is not None:
            self.m.queries.labels(op).inc()
        try:
            request[_TENANT] = self._tenant(request)
        except ValueError as e:
            resp = _error(400, "bad_data", str(e))
        else:
            resp = await self._proxy_answer(request, await request.read(),
                                            self.cfg.instant_max_retries)
        await self._finish(request, resp, MultiDict(request.query), began)
        return resp

    async def _proxy_answer(self, request: web.Request, body: bytes, tries: int) -> web.Response:
        headers = CIMultiDict((k, v) for k, v in request.headers.items()
                              if k.lower() not in HOP_BY_HOP)
        headers.setdefault("Accept-Encoding", "identity")
        self._with_certificate_tenant(headers, request[_TENANT])
        try:
            answer = await self.downstream.request(request.method, request.rel_url.raw_path,
                                                   query=request.rel_url.raw_query_string,
                                                   body=body or None,
                                                   headers=headers, max_tries=tries)
        except DownstreamError as e:
            return _error(502, "unavailable", str(e))
        return _response_of(answer)

    async def _finish(self, request: web.Request, resp: web.Response, params: MultiDict,
                      began: float) -> None:
        took = time.monotonic() - began
        if request.path == "/api/v1/query_range":
            self.m.duration.labels(request.method, str(resp.status)).observe(took)
        if self.cfg.compress_responses and "Content-Encoding" not in resp.headers:
            await compress_response(request, resp)  # as Thanos's gzip handler (gzhttp)
        limit = self.cfg.log_queries_longer_than_ms
        if limit and (limit < 0 or took * 1000 > limit):
            log.info("slow query detected", extra={
                "method": request.method, "path": request.path, "time_taken": f"{took:.3f}s",
                "status": resp.status, "org_id": request.get(_TENANT, ""),
                **{f"param_{k}": v for k, v in params.items()}})


# The request's tenant, worked out once by QueryFrontend._tenant.
_TENANT = web.RequestKey("promring_tenant", str)
THANOS_TENANT = "THANOS-TENANT"  # the header Thanos's frontend sends the tenant downstream in


def _response_of(answer: Answer) -> web.Response:
    headers = CIMultiDict((k, v) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP)
    return web.Response(status=answer.status, body=answer.body, headers=headers)


def _dur(ms: int) -> str:
    """Go's time.Duration text of whole hours/minutes/seconds (as Cortex's message shows)."""
    h, rest = divmod(ms // 1000, 3600)
    m, s = divmod(rest, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{s}s"
