"""``promring tools bucket web``: Thanos's bucket UI -- the blocks of a bucket on a timeline,
grouped by external labels and resolution, refreshed every ``--refresh``."""
from __future__ import annotations

import asyncio
import logging
import time

import orjson
from aiohttp import web

from common.ops import add_ops_routes, new_registry, start_site
from objstore import bucket_from_config
from ui import WebUI
from ui.web import rfc3339

from .tools import block_metas

log = logging.getLogger(__name__)


class BucketWeb:
    """Serves ``/blocks`` and Thanos's ``/api/v1/blocks`` ({blocks, label, refreshedAt})."""

    def __init__(self, objstore_yaml: str, http_address: str, refresh_s: float,
                 label: str = "", prefix: str = "") -> None:
        if refresh_s <= 0:
            raise ValueError("--refresh must be greater than 0")
        self.bucket = bucket_from_config(objstore_yaml)
        self.http_address, self.refresh_s, self.label = http_address, refresh_s, label
        self.ui = WebUI(prefix=prefix, pages=(("blocks", "Blocks"),))
        self.registry = new_registry()
        self.blocks: list[dict] = []
        self.refreshed_at = 0.0
        self.error = ""
        self._task: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def refresh(self) -> None:
        try:
            self.blocks, self.error = await block_metas(self.bucket), ""
        except Exception as e:  # noqa: BLE001 -- shown on the page, the old list stays
            self.error = str(e) or type(e).__name__
            log.warning("bucket listing failed", extra={"err": self.error})
        self.refreshed_at = time.time()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def blocks_api(self, _: web.Request) -> web.Response:
        data = {"blocks": self.blocks, "label": self.label,
                "refreshedAt": rfc3339(self.refreshed_at), "err": self.error or None}
        return web.Response(body=orjson.dumps({"status": "success", "data": data}),
                            content_type="application/json")

    def app(self) -> web.Application:
        app = web.Application()
        self.ui.register(app)
        app.router.add_get("/api/v1/blocks", self.blocks_api)
        add_ops_routes(app, self.registry, lambda: self.refreshed_at > 0)
        return app

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._loop())
        self._runner, self.port = await start_site(self.app(), self.http_address)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.bucket.close()
