"""``promring query``: the Prometheus HTTP API over a set of StoreAPI endpoints.

Endpoints come from ``--endpoint``/``--store``, ``--endpoint-strict`` and file SD; the HTTP API
is served under ``--web.route-prefix`` (ops routes stay at the root, as in Thanos) and, with a
gRPC address, the fan-out is itself served as a StoreAPI so queriers can be stacked.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CollectorRegistry

from common.ops import add_ops_routes, new_registry, start_site
from common.webconfig import WebConfigFile
from storeapi.h2server import H2GrpcServer
from receiver.exemplars import exemplars_handler
from storeapi.server import serve
from ui import WebUI

from .api import QueryAPI
from .fasthttp import QueryFront
from .status import promring_version
from .config import QueryConfig
from .fanout import StoreSet
from .filesd import FileSD, parse_endpoint_config
from .storesource import FanoutSource
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)


def normalize_prefix(prefix: str) -> str:
    """'' or '/x/y' (leading slash, no trailing one), as Thanos's route prefix."""
    prefix = prefix.strip().rstrip("/")
    return "" if not prefix else prefix if prefix.startswith("/") else "/" + prefix


class Querier:
    FREEZE_HEAP_AFTER_START = True  # the CLI freezes start-up objects (common.gcheap)

    def __init__(self, cfg: QueryConfig, registry: CollectorRegistry | None = None,
                 stores: StoreSet | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.registry = registry or new_registry()
        self.discovery = [FileSD(cfg.sd_files, cfg.sd_interval_s)] if cfg.sd_files else []
        if cfg.endpoint_config_file:
            self.discovery.append(FileSD([cfg.endpoint_config_file], cfg.endpoint_config_interval_s,
                                         parse=parse_endpoint_config, any_extension=True))
        self.stores = stores or StoreSet(self._static_endpoints(), timeout_s=cfg.store_timeout_s,
                                         registry=self.registry,
                                         response_timeout_s=cfg.store_response_timeout_s,
                                         strict=cfg.strict_endpoints, tls=cfg.grpc_client_tls)
        self.api = QueryAPI(cfg, self.stores, self.registry)
        self._runner: web.AppRunner | None = None
        self.front: QueryFront | None = None
        self._grpc: H2GrpcServer | None = None
        self._tasks: list[asyncio.Task] = []
        self.port = 0
        self.grpc_port = 0

    def _static_endpoints(self) -> list[str]:
        inline = parse_endpoint_config(self.cfg.endpoint_config, "--endpoint.sd-config") \
            if self.cfg.endpoint_config else []
        return list(dict.fromkeys([*self.cfg.endpoints, *self.cfg.strict_endpoints, *inline]))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 << 20)
        prefix = normalize_prefix(self.cfg.route_prefix)
        if prefix:
            api_app = web.Application(client_max_size=16 << 20)
            self.api.register(api_app)
            web_ui = self._web_ui()
            web_ui.register(api_app)
            web_ui.register_redirects(app, prefix)
            app.add_subapp(prefix, api_app)
        else:
            self.api.register(app)
            self._web_ui().register(app)
        add_ops_routes(app, self.registry, lambda: True)
        return app

    def _web_ui(self) -> WebUI:
        """The pages at ``/`` (under the route prefix); links use the prefix the browser sees."""
        return WebUI(prefix=normalize_prefix(self.cfg.external_prefix or self.cfg.route_prefix),
                     version=promring_version())

    async def _discovered(self, _: list[str] | None = None) -> None:
        found = [t for sd in self.discovery for t in sd.targets()]
        await self.stores.set_addresses(self._static_endpoints() + found)

    async def start(self) -> None:
        self.api.loop = asyncio.get_running_loop()
        await self.stores.start()
        for sd in self.discovery:
            sd.read()
            self._tasks.append(asyncio.get_running_loop().create_task(sd.run(self._discovered)))
        if self.discovery:
            await self._discovered()
        web_config = WebConfigFile(self.cfg.http_config) if self.cfg.http_config else None
        # The hot query routes skip aiohttp unless --http.config's auth/TLS must see them.
        self.front = QueryFront(self.api, normalize_prefix(self.cfg.route_prefix)) \
            if self.cfg.http_fast_path and web_config is None else None
        self._runner, self.port = await start_site(self.app(), self.cfg.http_address,
                                                   web_config=web_config, front=self.front,
                                                   handler_cancellation=True)
        if self.cfg.grpc_address:
            source = FanoutSource(self.stores, partial_response=self.cfg.partial_response)
            self._grpc, self.grpc_port = await serve(source, self.cfg.grpc_address, "query",
                                                     tls=self.cfg.grpc_server_tls,
                                                     registry=self.registry,
                                                     exemplars=exemplars_handler(source))

    async def stop(self) -> None:
        await cancel_and_wait(more=self._tasks)
        self._tasks.clear()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.api.close()
        await self.stores.close()
