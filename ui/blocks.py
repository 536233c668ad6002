"""Thanos's bucket UI: the ``/blocks`` page and ``/api/v1/blocks`` ({blocks, label, refreshedAt,
err}), the listing refreshed every ``refresh_s``. Served by ``tools bucket web`` and by the
compactor's HTTP port; each hands in how it lists its bucket, so this package imports none."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from .web import WebUI, rfc3339
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

BLOCK_PAGES = (("blocks", "Blocks"),)


class BlockViewer:
    """The last listing of a bucket's blocks, kept fresh by a background task between
    ``start`` and ``stop``; a failed listing keeps the old one and shows the error."""

    def __init__(self, list_blocks: Callable[[], Awaitable[list[dict]]], refresh_s: float,
                 label: str = "", prefix: str = "") -> None:
        if refresh_s <= 0:
            raise ValueError("the block viewer's refresh interval must be greater than 0")
        self.list_blocks, self.refresh_s, self.label = list_blocks, refresh_s, label
        self.ui = WebUI(prefix=prefix, pages=BLOCK_PAGES)
        self.blocks: list[dict] = []
        self.refreshed_at = 0.0
        self.error = ""
        self._task: asyncio.Task | None = None

    async def refresh(self) -> None:
        try:
            self.blocks, self.error = await self.list_blocks(), ""
        except Exception as e:  # noqa: BLE001 -- shown on the page, the old list stays
            self.error = str(e) or type(e).__name__
            log.warning("bucket listing failed", extra={"err": self.error})
        self.refreshed_at = time.time()

    async def _loop(self) -> None:
        if not self.refreshed_at:
            await self.refresh()
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def blocks_api(self, _: web.Request) -> web.Response:
        data = {"blocks": self.blocks, "label": self.label,
                "refreshedAt": rfc3339(self.refreshed_at), "err": self.error or None}
        return web.Response(body=orjson.dumps({"status": "success", "data": data}),
                            content_type="application/json")

    def register(self, app: web.Application) -> None:
        self.ui.register(app)
        app.router.add_get("/api/v1/blocks", self.blocks_api)

    def start(self) -> None:
        """Refresh (now unless already done) and every ``refresh_s`` in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
