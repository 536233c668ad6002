"""``promring query``: the Prometheus HTTP API over a set of StoreAPI endpoints."""
from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from common.ops import add_ops_routes, new_registry, start_site

from .api import QueryAPI
from .config import QueryConfig
from .fanout import StoreSet


class Querier:
    def __init__(self, cfg: QueryConfig, registry: CollectorRegistry | None = None,
                 stores: StoreSet | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.registry = registry or new_registry()
        self.stores = stores or StoreSet(cfg.endpoints, timeout_s=cfg.store_timeout_s,
                                         registry=self.registry)
        self.api = QueryAPI(cfg, self.stores, self.registry)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 << 20)
        self.api.register(app)
        add_ops_routes(app, self.registry, lambda: True)
        return app

    async def start(self) -> None:
        await self.stores.start()
        self._runner, self.port = await start_site(self.app(), self.cfg.http_address)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.api.close()
        await self.stores.close()
