"""``promring tools bucket web``: Thanos's bucket UI -- the blocks of a bucket on a timeline,
grouped by external labels and resolution, refreshed every ``--refresh``."""
from __future__ import annotations

from aiohttp import web

from common.ops import add_ops_routes, new_registry, start_site
from objstore import bucket_from_config
from objstore.blocks import block_metas
from ui.blocks import BlockViewer


class BucketWeb:
    """The block viewer (ui/blocks.py) over one bucket, on its own HTTP server."""

    def __init__(self, objstore_yaml: str, http_address: str, refresh_s: float,
                 label: str = "", prefix: str = "") -> None:
        if refresh_s <= 0:
            raise ValueError("--refresh must be greater than 0")
        self.bucket = bucket_from_config(objstore_yaml)
        self.viewer = BlockViewer(lambda: block_metas(self.bucket), refresh_s, label, prefix)
        self.http_address = http_address
        self.registry = new_registry()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()
        self.viewer.register(app)
        add_ops_routes(app, self.registry, lambda: self.viewer.refreshed_at > 0)
        return app

    async def start(self) -> None:
        await self.viewer.refresh()
        self.viewer.start()
        self._runner, self.port = await start_site(self.app(), self.http_address)

    async def stop(self) -> None:
        await self.viewer.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.bucket.close()
