"""``promring rule``: rule groups over the queriers, results stored (own TSDB or remote write),
alerts to Alertmanagers, the HTTP API, and in stateful mode the StoreAPI (+ Rules API) on gRPC.

Rule files are read completely before anything changes: at start a bad file stops the ruler
with one line naming it; on a change (checked every second) or ``POST /-/reload`` a bad file
keeps the running rules and is reported (500 for /-/reload, the log and
``prometheus_rule_config_last_reload_successful`` otherwise).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time

import grpc.aio
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from common.ops import add_ops_routes, new_registry, start_site
from common.tls import server_ssl_context
from common.tasks import cancel_and_wait
from common.webconfig import WebConfigFile
from querier.filesd import FileSD, file_stamps
from querier.status import promring_version
from ui import WebUI

from .api import RulerAPI
from .config import RulerConfig
from .group import Group, GroupContext
from .notifier import Notifier
from .queryclient import QueryClient
from .rulefile import GroupSpec, RuleFileError, expand_rule_files, load_rule_files
from .rules import AlertContext
from .storage import (RemoteWriteStore, ResultStore, TSDBStore, TSDBStoreConfig,
                      parse_remote_write_config)

log = logging.getLogger(__name__)

RULER_PAGES = (("alerts", "Alerts"), ("rules", "Rules"))  # the ruler's own UI, as Thanos's


class Ruler:
    def __init__(self, cfg: RulerConfig, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or new_registry()
        targets = parse_remote_write_config(cfg.remote_write_config)
        self.stateless = bool(targets)
        self.store: ResultStore = (
            RemoteWriteStore(targets, cfg.external_labels, self.registry) if targets else
            TSDBStore(TSDBStoreConfig(
                data_dir=cfg.data_dir, external_labels=cfg.external_labels,
                block_duration_ms=cfg.block_duration_ms, retention_ms=cfg.retention_ms,
                objstore_config=cfg.objstore_config,
                lifecycle_interval_s=cfg.lifecycle_interval_s), self.registry))
        self.sd = FileSD(cfg.query_sd_files, cfg.query_sd_interval_s) if cfg.query_sd_files else None
        self.query = QueryClient(self._query_addresses, cfg.query_timeout_s, cfg.query_http_method)
        ext = dict(cfg.external_labels)
        self.notifier = Notifier(cfg.alertmanager_urls, cfg.alert_query_url, ext,
                                 cfg.alert_label_drop, cfg.alertmanager_timeout_s, self.registry)
        self.ctx = GroupContext(query=self.query, store=self.store, notify=self.notifier.send,
                                alert_ctx=AlertContext(ext, cfg.alert_query_url),
                                resend_delay_ms=cfg.resend_delay_ms,
                                for_state=(self.store.last_sample
                                           if isinstance(self.store, TSDBStore) else None),
                                for_grace_period_ms=cfg.for_grace_period_ms,
                                outage_tolerance_ms=cfg.for_outage_tolerance_ms)
        self.groups: dict[tuple[str, str], Group] = {}
        self._reload_lock = asyncio.Lock()
        self._files_stamp: tuple = ()
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self.ports: dict[str, int] = {}
        self.ready = False
        self.reload_ok = Gauge("prometheus_rule_config_last_reload_successful",
                               "Whether the last rule reload succeeded.", registry=self.registry)
        self.reload_time = Gauge("prometheus_rule_config_last_reload_success_timestamp_seconds",
                                 "Time of the last successful rule reload.", registry=self.registry)
        Gauge("prometheus_rule_group_rules", "Rules loaded.", registry=self.registry
              ).set_function(lambda: sum(len(g.rules) for g in self.groups.values()))

    def _query_addresses(self) -> list[str]:
        found = self.sd.targets() if self.sd is not None else []
        return list(dict.fromkeys([*self.cfg.queries, *found]))

    def sorted_groups(self) -> list[Group]:
        return sorted(self.groups.values(), key=lambda g: (g.file, g.name))

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        specs = await self._load()  # a bad rule file stops the start (RuleFileError)
        if self.sd is not None:
            self.sd.read()
            self._tasks.append(asyncio.get_running_loop().create_task(self.sd.run(self._noop)))
        await self.store.start()
        await self.notifier.start()
        if self.cfg.grpc_address:
            await self._serve_grpc()
        app = web.Application()
        RulerAPI(self.sorted_groups, self.reload).register(app)
        WebUI(pages=RULER_PAGES, version=promring_version()).register(app)
        add_ops_routes(app, self.registry, lambda: self.ready)
        web_config = WebConfigFile(self.cfg.http_config) if self.cfg.http_config else None
        self._runner, self.ports["http"] = await start_site(app, self.cfg.http_address,
                                                            web_config=web_config)
        await self._apply(specs)
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch()))
        self._on_sighup()
        self.ready = True
        log.info("ruler started", extra={"groups": len(self.groups), "stateless": self.stateless,
                                         "http": self.ports["http"],
                                         "grpc": self.ports.get("grpc")})

    def _on_sighup(self) -> None:
        """SIGHUP re-reads the rule files, as for Thanos and Prometheus."""
        loop = asyncio.get_running_loop()

        def reload() -> None:
            self._tasks.append(loop.create_task(self.reload()))
        try:
            loop.add_signal_handler(signal.SIGHUP, reload)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (an embedding test): /-/reload still works

    @staticmethod
    async def _noop(_: list[str]) -> None:
        return None

    async def _serve_grpc(self) -> None:
        """Rules + Info always; the StoreAPI over the own TSDB in stateful mode."""
        from storeapi.h2server import H2GrpcServer
        from storeapi.server import MAX_MESSAGE_BYTES, StoreServer

        from .rulesgrpc import RulesServer
        store = StoreServer(self.store.source, "rule") if isinstance(self.store, TSDBStore) else None
        # our HTTP/2 gRPC server, as the other components: Python's ssl enforces
        # --grpc-server-tls-min-version (grpcio cannot raise it above TLS 1.2)
        server = H2GrpcServer(max_message_bytes=MAX_MESSAGE_BYTES)
        server.add_generic_rpc_handlers(RulesServer(
            self.sorted_groups, store, lambda: [self.cfg.external_labels]).handlers())
        try:
            port = await server.bind(self.cfg.grpc_address,
                                     server_ssl_context(self.cfg.grpc_server_tls))
        except OSError as e:
            raise OSError(f"cannot bind gRPC server to {self.cfg.grpc_address}: {e}") from e
        await server.start()
        self._grpc, self.ports["grpc"] = server, port

    async def stop(self) -> None:
        self.ready = False
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        await cancel_and_wait(more=self._tasks)
        for g in self.groups.values():
            await g.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        await self.notifier.stop()
        await self.store.stop()
        await self.query.close()

    # -- rule files -----------------------------------------------------------------------------

    def _stamp(self) -> tuple:
        return file_stamps(expand_rule_files(self.cfg.rule_files))

    async def _load(self) -> list[GroupSpec]:
        stamp = self._stamp()
        specs = await asyncio.to_thread(load_rule_files, self.cfg.rule_files)
        self._files_stamp = stamp
        return specs

    async def reload(self) -> str:
        """Re-read the rule files; returns "" or the error (the running rules then stay)."""
        async with self._reload_lock:
            try:
                specs = await self._load()
            except RuleFileError as e:
                self.reload_ok.set(0)
                log.error("reloading rules failed, keeping the current ones", extra={"err": str(e)})
                return str(e)
            await self._apply(specs)
            return ""

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.reload_poll_s)
            if self._stamp() != self._files_stamp:
                log.info("rule files changed, reloading")
                await self.reload()

    async def _apply(self, specs: list[GroupSpec]) -> None:
        """Prometheus's Manager.Update: unchanged groups keep running; changed ones start anew
        with the old one's state; removed ones stop and their series go stale."""
        new: dict[tuple[str, str], Group] = {}
        for spec in specs:
            key = (spec.file, spec.name)
            old = self.groups.get(key)
            if old is not None and old.spec == spec:
                new[key] = old
                continue
            g = Group(spec, self.cfg.eval_interval_ms, self.ctx)
            if old is not None:
                g.copy_state_from(old)
            new[key] = g
        now_ms = int(time.time() * 1000)
        for key, old in self.groups.items():
            if new.get(key) is not old:
                await old.stop()
                if key not in new:
                    await old.stale_all(now_ms)
        for key, g in new.items():
            if self.groups.get(key) is not g:
                g.start()
        self.groups = new
        self.ctx.restored = True  # groups added by later reloads have nothing to restore
        self.reload_ok.set(1)
        self.reload_time.set(time.time())
        log.info("rules loaded", extra={"groups": len(new),
                                        "rules": sum(len(g.rules) for g in new.values())})
