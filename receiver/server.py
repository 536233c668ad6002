"""``promring receive``: the remote-write HTTP endpoint, and in ingestor modes the StoreAPI.

Thanos's three modes: without a hashrings file this is an ingestor; with one it is a router
(stateless, no WAL) that spreads series over the ingestors' gRPC endpoints; with a hashrings file
and ``--receive.local-endpoint`` naming itself in the ring, a router+ingestor.

An ingestor answers only after its accepted samples are in the WAL (and fsynced, with
``--tsdb.wal-fsync=batch``). Status codes follow Thanos: 400 undecodable, 409 conflicts
(out-of-order, duplicates, too old, bad label sets), 413 over a size/series/sample limit, 429
tenant over its head-series limit, 503 not ready or replication quorum missed. Valid series
in a request are appended even when others in it are rejected.
"""
from __future__ import annotations

import asyncio
import logging
import time

import grpc
import grpc.aio
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.httpmetrics import http_metrics
from common.ops import add_ops_routes, new_registry, start_site
from common.tls import peer_certificate, server_ssl_context
from common.webconfig import WebConfigFile
from storeapi.grpcmetrics import client_metrics, server_metrics
from storeapi.h2server import H2GrpcServer
from storeapi.server import MAX_MESSAGE_BYTES, WRITEABLE_STORE_SERVICE, StoreServer

from .capnproto.rpc import ServerOptions as CapnpOptions, WriterServer
from .config import ReceiveConfig
from .lifecycle import BlockLifecycle
from .hashring.watch import HashringsFile
from .limits import LimitsFile
from .multitsdb import MultiTSDB, MultiTSDBSource, ReplayStats, TenantTSDB, TSDBOptions
from .exemplars import exemplars_handler
from .metadata import MetadataStore, decode_metadata, metadata_handler
from .storagehealth import StorageHealth, is_storage_error
from .rejectlog import RejectedWritesLog
from .remotewrite import DecodedWrite, RemoteWriteError, decode, decompress_body
from .router import GRPC_FOR_HTTP, Forwarder, Router
from .tenancy import InvalidTenant, tenant_from_certificate, tenant_from_headers
from .thanoswrite import split_thanos_write
from .tsdb._refcache import RefCache
from .tsdb.head import HeadOptions
from .tsdbmetrics import registry_add_tsdb_metrics

log = logging.getLogger(__name__)


async def _answer_and_close(request: web.Request, status: int, text: str) -> web.Response:
    """Send the response, then close the connection at once: the rest of a stalled body is
    not waited for (aiohttp would otherwise linger reading it)."""
    resp = web.Response(status=status, text=f"{text}\n")
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    if request.transport is not None:
        request.transport.close()  # flushes the response first
    return resp


# Which failure a multi-tenant gRPC write reports when its tenants fail differently: the one a
# router must treat most seriously (unavailable/internal before limits, bad input, conflicts).
_SEVERITY = {409: 0, 400: 1, 413: 1, 429: 2, 503: 3}


class ReceiveMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("thanos_receive_http_requests", "Remote-write requests by code.",
                                ["code"], registry=registry)
        self.samples = Counter("prometheus_tsdb_head_samples_appended", "Samples appended.",
                               ["tenant"], registry=registry)
        self.ooo_samples = Counter("prometheus_tsdb_head_out_of_order_samples_appended",
                                   "Late samples appended within --tsdb.out-of-order.time-window.",
                                   ["tenant", "type"], registry=registry)
        self.rejected = Counter("thanos_receive_rejected_samples", "Samples rejected by reason.",
                                ["reason"], registry=registry)
        self.duration = Histogram("thanos_receive_http_request_duration_seconds",
                                  "Remote-write request latency.", registry=registry)
        self.head_bytes = Gauge("promring_head_chunk_bytes", "Bytes held by head chunks.",
                                registry=registry)
        self.exemplars = Counter("prometheus_tsdb_exemplar_exemplars_appended",
                                 "Exemplars stored.", ["tenant"], registry=registry)
        self.exemplars_rejected = Counter(
            "promring_exemplars_rejected", "Exemplars dropped (the samples still count): invalid "
            "(label set over 128 runes, not UTF-8, malformed, series refused) or out of order.",
            ["reason"], registry=registry)
        self.limited = Counter("thanos_receive_limited_requests", "Requests refused by a limit.",
                               ["tenant", "limit"], registry=registry)
        self.http = http_metrics(registry)  # Thanos's http_requests_total{handler="receive"}


class Receiver:
    """One ``promring receive``: ingestor, router, or both."""

    def __init__(self, cfg: ReceiveConfig, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or new_registry()
        self.metrics = ReceiveMetrics(self.registry)
        self.db: MultiTSDB | None = None
        self.source: MultiTSDBSource | None = None
        self.metadata: MetadataStore | None = None
        self.health: StorageHealth | None = None
        if cfg.is_ingestor:
            self.db = MultiTSDB(TSDBOptions(
                path=cfg.tsdb_path, external_labels=cfg.external_labels,
                tenant_label_name=cfg.tenant_label_name,
                head=HeadOptions(chunk_range_ms=cfg.chunk_range_ms, ooo_window_ms=cfg.ooo_window_ms),
                wal_fsync=cfg.wal_fsync, wal_compression=cfg.wal_compression,
                retention_ms=cfg.retention_ms, too_far_in_future_ms=cfg.too_far_in_future_ms,
                max_exemplars=cfg.max_exemplars))
            self.source = MultiTSDBSource(self.db)
            self.metadata = MetadataStore(cfg.tsdb_path)
            self.health = StorageHealth(cfg.tsdb_path, cfg.storage_probe_interval_s)
            registry_add_tsdb_metrics(self.registry, self.db)
            self.metrics.head_bytes.set_function(self.db.memory_bytes)
            skipped = Gauge("promring_tsdb_wal_replay_skipped",
                            "What the last WAL replay skipped to start (corrupt segments, series "
                            "whose labels do not decode, samples of unknown series, bad histograms).",
                            ["kind"], registry=self.registry)
            for kind in ReplayStats.kinds():
                skipped.labels(kind).set_function(lambda k=kind: self.db.replay_skipped(k))
        self.limits = LimitsFile(cfg.limits_file)
        self._gate = self._new_gate()
        self.rings: HashringsFile | None = None
        self.router: Router | None = None
        if cfg.is_router:
            self.rings = HashringsFile(cfg.hashrings_file, cfg.hashrings_algorithm,
                                       cfg.replication_factor, on_change=self._rings_changed,
                                       content=cfg.hashrings_content)
            self.router = Router(
                lambda: self.rings.rings, Forwarder(cfg.forward_timeout_s, cfg.forward_retries,
                                                     cfg.grpc_compression, tls=cfg.forward_tls,
                                                     protocol=cfg.replication_protocol,
                                                     metrics=client_metrics(self.registry)),
                local_endpoint=cfg.local_endpoint if cfg.is_ingestor else "",
                local_writer=self._write_local_body if cfg.is_ingestor else None,
                registry=self.registry)
        self.web_config = WebConfigFile(cfg.http_config) if cfg.http_config else None
        self.ready = False
        self._runners: list[web.AppRunner] = []
        self._grpc: H2GrpcServer | None = None
        self._capnp: WriterServer | None = None
        self._refresher: asyncio.Task | None = None
        self._prober: asyncio.Task | None = None
        self.rejections = RejectedWritesLog(cfg.rejected_log_interval_s)
        self._rejections_task: asyncio.Task | None = None
        self._ext_applied: set[str] = set()
        self.ports: dict[str, int] = {}
        self.bucket = None
        self.lifecycle: BlockLifecycle | None = None

    def _new_gate(self) -> asyncio.Semaphore | None:
        n = self.limits.limits.max_concurrency
        return asyncio.Semaphore(n) if n > 0 else None

    def _rings_changed(self, rings) -> None:
        if self.router is not None:
            asyncio.get_running_loop().create_task(self.router.forwarder.retain(rings.all_addresses()))
        self._ext_applied.clear()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        write_app = web.Application(client_max_size=self.cfg.max_request_bytes)
        write_app.router.add_post("/api/v1/receive", self.handle_write)
        add_ops_routes(write_app, self.registry, self.is_ready)
        # The body is snappy by protocol; aiohttp must not try to gunzip a mislabelled one.
        runner, self.ports["remote_write"] = await start_site(
            write_app, self.cfg.remote_write_address, tls=self.cfg.remote_write_tls,
            web_config=self.web_config, auto_decompress=False,
            keepalive_timeout=self.cfg.http_header_timeout_s)
        self._runners.append(runner)
        if self.cfg.http_address:
            http_app = web.Application()
            add_ops_routes(http_app, self.registry, self.is_ready)
            runner, self.ports["http"] = await start_site(http_app, self.cfg.http_address,
                                                          web_config=self.web_config)
            self._runners.append(runner)
        if self.db is not None:
            t0 = time.monotonic()
            restored = await asyncio.to_thread(self.db.open_existing)
            if self.metadata is not None:
                await asyncio.to_thread(self.metadata.load)
            log.info("WAL replay done", extra={"samples": restored, "series": self.db.num_series(),
                                               "seconds": round(time.monotonic() - t0, 3)})
            if self.cfg.objstore_config is not None:
                from objstore import bucket_from_config
                from objstore.metrics import instrumented
                self.bucket = instrumented(bucket_from_config(self.cfg.objstore_config),
                                           self.registry)
            self.lifecycle = BlockLifecycle(self.db, self.bucket, self.cfg.lifecycle_interval_s,
                                            registry=self.registry)
            self.lifecycle.start()  # its first round ships what a previous run left behind
            if self.cfg.grpc_address:
                await self._serve_grpc()
            if self.cfg.capnproto_address:
                await self._serve_capnp()
            await self.health.check(self.db.reopen_wal)
            self._prober = asyncio.get_running_loop().create_task(self.health.run(self.db.reopen_wal))
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())
        self._rejections_task = asyncio.get_running_loop().create_task(self.rejections.run())
        self.ready = True

    def is_ready(self) -> bool:
        """Started, and (an ingestor) its data dir takes writes."""
        return self.ready and (self.health is None or self.health.ok)

    async def _serve_grpc(self) -> None:
        # Our own HTTP/2 gRPC server, not grpc.aio: Thanos routers compress forwarded writes with
        # snappy, which grpcio's core refuses before any handler runs.
        server = H2GrpcServer(max_message_bytes=MAX_MESSAGE_BYTES,
                              metrics=server_metrics(self.registry))
        with_exemplars = self.cfg.max_exemplars > 0
        server.add_generic_rpc_handlers(
            StoreServer(self.source, "receive", exemplars=with_exemplars).handlers())
        if self.metadata is not None:
            server.add_generic_rpc_handlers((metadata_handler(self.metadata),))
        if with_exemplars:
            server.add_generic_rpc_handlers((exemplars_handler(self.source),))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            WRITEABLE_STORE_SERVICE, {"RemoteWrite": grpc.unary_unary_rpc_method_handler(
                self.grpc_remote_write, request_deserializer=None, response_serializer=None)}),))
        try:
            port = await server.bind(self.cfg.grpc_address,
                                     server_ssl_context(self.cfg.grpc_server_tls))
        except OSError as e:
            raise OSError(f"cannot bind StoreAPI gRPC server to {self.cfg.grpc_address}: {e}") from e
        await server.start()
        self._grpc, self.ports["grpc"] = server, port

    async def _serve_capnp(self) -> None:
        """Thanos's Cap'n Proto Writer (--receive.capnproto-address), for routers replicating
        with --receive.replication-protocol=capnproto."""
        server = WriterServer(self.capnp_write, CapnpOptions(
            max_message_bytes=MAX_MESSAGE_BYTES, message_timeout_s=self.cfg.http_read_timeout_s))
        try:
            port = await server.start(self.cfg.capnproto_address)
        except OSError as e:
            raise OSError(f"cannot bind Cap'n Proto server to {self.cfg.capnproto_address}: {e}") from e
        self._capnp, self.ports["capnproto"] = server, port

    async def _refresh_loop(self) -> None:
        """Re-read the hashrings and limits files when they change (no restart needed)."""
        poll = min(1.0, self.cfg.hashrings_refresh_s)  # change checks (Thanos: fsnotify)
        since = 0.0
        while True:
            await asyncio.sleep(poll)
            since += poll
            full, since = (True, 0.0) if since >= self.cfg.hashrings_refresh_s else (False, since)
            try:
                if self.rings is not None:
                    self.rings.refresh(force=full)
                if self.limits.refresh():
                    self._gate = self._new_gate()
                    log.info("limits reloaded")
            except Exception as e:  # noqa: BLE001 -- a bad edit must not stop the loop
                log.error("config reload failed", extra={"err": str(e)})

    async def stop(self) -> None:
        self.ready = False
        for task in (self._refresher, self._prober, self._rejections_task):
            if task is not None:
                task.cancel()
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()
        if self.router is not None:
            await self.router.close()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
            self._grpc = None
        if self._capnp is not None:
            await self._capnp.stop()
            self._capnp = None
        # No write can arrive any more: sync every WAL (the heads are replayed on start).
        if self.lifecycle is not None:
            await self.lifecycle.shutdown()
        if self.db is not None:
            self.db.close()
        self.rejections.flush()  # the last interval's, not lost at shutdown
        if self.bucket is not None:
            await self.bucket.close()

    # -- write path ---------------------------------------------------------------------------

    async def handle_write(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        if self._gate is not None:
            async with self._gate:
                resp = await self._write(request)
        else:
            resp = await self._write(request)
        took = time.perf_counter() - t0
        self.metrics.requests.labels(str(resp.status)).inc()
        self.metrics.duration.observe(took)
        self.metrics.http.requests.labels("receive", str(resp.status)).inc()
        self.metrics.http.latency.labels("receive").observe(took)
        return resp

    async def _write(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="receiver is not ready\n")
        try:
            if self.cfg.tenant_certificate_field:
                tenant = tenant_from_certificate(peer_certificate(request.transport),
                                                 self.cfg.tenant_certificate_field)
            else:
                tenant = tenant_from_headers(request.headers, self.cfg.tenant_header,
                                             self.cfg.default_tenant)
        except InvalidTenant as e:
            return web.Response(status=400, text=f"{e}\n")
        replica = self._replica(request)
        if isinstance(replica, web.Response):
            return replica
        try:
            async with asyncio.timeout(self.cfg.http_read_timeout_s):  # no extra task, as wait_for
                body = await request.read()
        except asyncio.TimeoutError:
            return await _answer_and_close(request, 408, "request body not received in time")
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text=f"request body exceeds {self.cfg.max_request_bytes} bytes\n")
        except Exception as e:  # a body that cannot even be read is the client's problem
            return web.Response(status=400, text=f"cannot read request body: {e}\n")
        limits = self.limits.limits
        why = limits.check_request(tenant, len(body), 0, 0)
        if why:
            self.metrics.limited.labels(tenant, "size").inc()
            self.rejections.add(tenant, "size_limit")
            return web.Response(status=413, text=f"{why}\n")
        try:
            raw = decompress_body(body, request.headers.get("Content-Encoding"),
                                  request.headers.get("Content-Type"),
                                  max_decompressed_bytes=self.cfg.max_decompressed_bytes)
            req = decode(raw, None if self.router is not None else self._ref_cache(tenant))
        except RemoteWriteError as e:
            return web.Response(status=getattr(e, "status", 400), text=f"{e}\n")
        except ValueError as e:
            return web.Response(status=400, text=f"{e}\n")
        why = limits.check_request(tenant, 0, req.n_series, req.n_samples)
        if why:
            self.metrics.limited.labels(tenant, "request").inc()
            self.rejections.add(tenant, "request_limit")
            return web.Response(status=413, text=f"{why}\n")
        if not req.n_series and raw and self.metadata is not None:
            return await self._write_metadata(tenant, raw)
        if self.router is not None:
            res = await self.router.write(tenant, raw, req, replica)
            status, msg = res.status, res.message
        else:
            status, msg = await self._write_local(tenant, req)
        if status in (200, 204):
            return web.Response(status=200)
        return web.Response(status=status, text=f"{msg}\n")

    async def _write_metadata(self, tenant: str, raw: bytes) -> web.Response:
        """A request without series: Prometheus's metadata send (WriteRequest field 3)."""
        try:
            entries = await asyncio.to_thread(decode_metadata, raw)
        except ValueError as e:
            return web.Response(status=400, text=f"{e}\n")
        assert self.metadata is not None
        if self.metadata.update(tenant, entries):
            await self.metadata.save(tenant)
        return web.Response(status=200)

    def _replica(self, request: web.Request) -> int | web.Response:
        """Thanos's replica header: the 1-based replica of an already replicated write. Only a
        router+ingestor honours it (in the other modes it is ignored, as in Thanos)."""
        raw = request.headers.get(self.cfg.replica_header, "")
        if not raw:
            return 0
        if not raw.isdigit() or not raw.isascii() or len(raw) > 20 or int(raw) >= 1 << 64:
            return web.Response(status=400, text="could not parse replica header\n")
        if not (self.cfg.is_router and self.cfg.is_ingestor):
            return 0
        if int(raw) > self.cfg.replication_factor:
            return web.Response(
                status=400, text="request replica exceeds receiver replication factor\n")
        return int(raw)

    async def grpc_remote_write(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """``thanos.WriteableStore/RemoteWrite``, parsed from the raw bytes: series of the legacy
        form (fields 1, 2) and of each ``timeseriesTenantData`` tuple (field 4) are exactly a
        remote-write body's field 1, so the C decoder of the HTTP path reads them unchanged.
        Every tenant's part is written; the call fails with the most severe failure."""
        try:
            writes, replica = split_thanos_write(data)
            decoded = [(w.tenant or self.cfg.default_tenant, w.body, decode(w.body))
                       for w in writes]
        except (ValueError, UnicodeDecodeError) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed write request: {e}")
        failures: list[tuple[int, str]] = []
        for tenant, body, req in decoded:
            if self.router is not None and replica == 0:
                res = await self.router.write(tenant, body, req)  # not yet replicated: route it
                status, msg = res.status, res.message
            elif self.db is None:
                status, msg = 503, "router without a local TSDB cannot store a replicated write"
            else:
                status, msg = await self._write_local(tenant, req)
            if status not in (200, 204):
                failures.append((status, msg))
        if failures:
            status, msg = max(failures, key=lambda f: _SEVERITY.get(f[0], len(_SEVERITY)))
            await context.abort(GRPC_FOR_HTTP.get(status, grpc.StatusCode.INTERNAL), msg)
        return b""

    async def capnp_write(self, tenant: str, body: bytes) -> tuple[int, str]:
        """``Writer.write`` of the Cap'n Proto server, its request already converted to a
        remote-write body: written locally, never routed (as Thanos), with the gRPC path's
        validation, tenant default and status."""
        return await self._write_local_body(tenant or self.cfg.default_tenant, body)

    def _ref_cache(self, tenant: str) -> RefCache | None:
        """The series-ref cache of the tenant's head, for decoding a write stored here (None
        before the tenant's first write)."""
        db = self.db.tenants.get(tenant) if self.db is not None else None
        return db.head.refcache if db is not None else None

    async def _write_local_body(self, tenant: str, body: bytes) -> tuple[int, str]:
        try:
            req = decode(body, self._ref_cache(tenant))
        except ValueError as e:
            return 400, str(e)
        return await self._write_local(tenant, req)

    def _tenant_db(self, tenant: str) -> TenantTSDB:
        assert self.db is not None
        db = self.db.tenant(tenant)
        if self.rings is not None and tenant not in self._ext_applied:
            # A hashring's external_labels belong to its tenants' blocks and series.
            found = self.rings.rings.for_tenant(tenant)
            if found is not None and found[0].external_labels:
                ext = dict(db.external_labels)
                ext.update(found[0].external_labels)
                ext[self.cfg.tenant_label_name] = tenant
                db.external_labels = tuple(sorted(ext.items()))
            self._ext_applied.add(tenant)
        return db

    async def _write_local(self, tenant: str, req: DecodedWrite) -> tuple[int, str]:
        if not self.ready or self.db is None or self.health is None:
            return 503, "receiver is not ready"
        if not self.health.ok:
            return 503, f"storage unavailable ({self.health.cause}); retry later"
        try:
            db = self._tenant_db(tenant)
        except InvalidTenant as e:
            return 400, str(e)
        except OSError as e:
            self.health.failed(f"creating tenant {tenant!r}", e)
            return 503, f"storage unavailable: {e}"
        why = self.limits.limits.check_head(tenant, db.head.num_series)
        if why:
            self.metrics.limited.labels(tenant, "head_series").inc()
            self.rejections.add(tenant, "head_series_limit")
            return 429, why
        try:
            out = db.write(req)
            await db.sync()
        except Exception as e:
            if not is_storage_error(e):
                raise
            self.health.failed(f"writing the WAL of tenant {tenant!r}", e, tenant)
            return 503, f"storage unavailable: {e}"
        self.metrics.samples.labels(tenant).inc(out.appended)
        if out.exemplars_appended:
            self.metrics.exemplars.labels(tenant).inc(out.exemplars_appended)
        for reason, n in (("invalid", out.exemplars_invalid),
                          ("out_of_order", out.exemplars_out_of_order)):
            if n:
                self.metrics.exemplars_rejected.labels(reason).inc(n)
        if out.out_of_order_appended:
            n_hist = out.out_of_order_histograms_appended
            self.metrics.ooo_samples.labels(tenant, "float").inc(out.out_of_order_appended - n_hist)
            if n_hist:
                self.metrics.ooo_samples.labels(tenant, "histogram").inc(n_hist)
        for reason, n in (("out_of_order", out.out_of_order), ("duplicate", out.duplicate),
                          ("too_old", out.too_old), ("bad_labels", out.dropped_samples),
                          ("too_far_in_future", out.too_far_in_future),
                          ("out_of_bounds", out.out_of_bounds)):
            if n:
                self.metrics.rejected.labels(reason).inc(n)
                self.rejections.add(tenant, reason, n)
        conflicts = out.conflicts
        if conflicts:
            msg = "; ".join(conflicts)
            log.debug("write conflicts", extra={"tenant": tenant, "detail": msg})
            return out.http_status, f"{msg} (appended {out.appended} samples)"
        return 200, ""
