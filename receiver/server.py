"""``promring receive`` in ingestor mode: the remote-write HTTP endpoint and the StoreAPI.

A request is answered only after its accepted samples are in the WAL (and fsynced, with
``--tsdb.wal-fsync=batch``). Status codes follow Thanos: 400 undecodable, 409 conflicts
(out-of-order, duplicates, too old, bad label sets), 413 too large, 503 not ready. Valid series
in a request are appended even when others in it are rejected.
"""
from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.ops import add_ops_routes, start_site
from storeapi.server import serve as serve_storeapi

from .config import ReceiveConfig
from .multitsdb import InvalidTenant, MultiTSDB, MultiTSDBSource, TSDBOptions
from .remotewrite import RemoteWriteError, decode_body
from .tsdb.head import HeadOptions

log = logging.getLogger(__name__)


class ReceiveMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("thanos_receive_http_requests", "Remote-write requests by code.",
                                ["code"], registry=registry)
        self.samples = Counter("prometheus_tsdb_head_samples_appended", "Samples appended.",
                               ["tenant"], registry=registry)
        self.rejected = Counter("thanos_receive_rejected_samples", "Samples rejected by reason.",
                                ["reason"], registry=registry)
        self.duration = Histogram("thanos_receive_http_request_duration_seconds",
                                  "Remote-write request latency.", registry=registry)
        self.series = Gauge("prometheus_tsdb_head_series", "Series in the heads.", registry=registry)
        self.head_bytes = Gauge("promring_head_chunk_bytes", "Bytes held by head chunks.",
                                registry=registry)


class Receiver:
    """Owns the tenants' TSDBs and the HTTP + gRPC servers of one ingestor."""

    def __init__(self, cfg: ReceiveConfig, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or CollectorRegistry()
        self.metrics = ReceiveMetrics(self.registry)
        self.db = MultiTSDB(TSDBOptions(
            path=cfg.tsdb_path, external_labels=cfg.external_labels,
            tenant_label_name=cfg.tenant_label_name,
            head=HeadOptions(chunk_range_ms=cfg.chunk_range_ms), wal_fsync=cfg.wal_fsync))
        self.source = MultiTSDBSource(self.db)
        self.ready = False
        self._runners: list[web.AppRunner] = []
        self._grpc = None
        self.ports: dict[str, int] = {}
        self.metrics.series.set_function(self.db.num_series)
        self.metrics.head_bytes.set_function(self.db.memory_bytes)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        write_app = web.Application(client_max_size=self.cfg.max_request_bytes)
        write_app.router.add_post("/api/v1/receive", self.handle_write)
        add_ops_routes(write_app, self.registry, lambda: self.ready)
        # The body is snappy by protocol; aiohttp must not try to gunzip a mislabelled one.
        runner, self.ports["remote_write"] = await start_site(
            write_app, self.cfg.remote_write_address, auto_decompress=False)
        self._runners.append(runner)
        if self.cfg.http_address:
            http_app = web.Application()
            add_ops_routes(http_app, self.registry, lambda: self.ready)
            runner, self.ports["http"] = await start_site(http_app, self.cfg.http_address)
            self._runners.append(runner)
        t0 = time.monotonic()
        restored = await asyncio.to_thread(self.db.open_existing)
        log.info("WAL replay done", extra={"samples": restored, "series": self.db.num_series(),
                                           "seconds": round(time.monotonic() - t0, 3)})
        if self.cfg.grpc_address:
            self._grpc, self.ports["grpc"] = await serve_storeapi(self.source, self.cfg.grpc_address)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
            self._grpc = None
        self.db.close()

    # -- write path ---------------------------------------------------------------------------

    async def handle_write(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        resp = await self._write(request)
        self.metrics.requests.labels(str(resp.status)).inc()
        self.metrics.duration.observe(time.perf_counter() - t0)
        return resp

    async def _write(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="receiver is not ready\n")
        tenant = request.headers.get(self.cfg.tenant_header) or self.cfg.default_tenant
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text=f"request body exceeds {self.cfg.max_request_bytes} bytes\n")
        except Exception as e:  # a body that cannot even be read is the client's problem
            return web.Response(status=400, text=f"cannot read request body: {e}\n")
        try:
            req = decode_body(body, request.headers.get("Content-Encoding"),
                              request.headers.get("Content-Type"),
                              max_decompressed_bytes=self.cfg.max_decompressed_bytes)
        except RemoteWriteError as e:
            return web.Response(status=getattr(e, "status", 400), text=f"{e}\n")
        try:
            db = self.db.tenant(tenant)
        except InvalidTenant as e:
            return web.Response(status=400, text=f"{e}\n")
        out = db.write(req)
        await db.sync()
        self.metrics.samples.labels(tenant).inc(out.appended)
        for reason, n in (("out_of_order", out.out_of_order), ("duplicate", out.duplicate),
                          ("too_old", out.too_old), ("bad_labels", out.dropped_samples)):
            if n:
                self.metrics.rejected.labels(reason).inc(n)
        conflicts = out.conflicts
        if conflicts:
            msg = "; ".join(conflicts)
            log.debug("write conflicts", extra={"tenant": tenant, "detail": msg})
            return web.Response(status=409, text=f"{msg} (appended {out.appended} samples)\n")
        return web.Response(status=200)
