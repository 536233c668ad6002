"""What happens to an ingestor's data after it is appended: head -> local block -> bucket -> gone.

Every ``interval`` the heads are cut into blocks (Prometheus's 1.5-range rule), new blocks are
shipped, and shipped blocks past local retention are deleted. On shutdown every head is flushed
into blocks and shipped before the process exits. All of it runs on the event loop thread: the
head is not thread-safe, and a block cut is short next to the range it covers.
"""
from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry

from objstore import Bucket
from shipper import Shipper, ShipperMetrics, ShipperOptions

from .multitsdb import MultiTSDB

log = logging.getLogger(__name__)


class BlockLifecycle:
    def __init__(self, db: MultiTSDB, bucket: Bucket | None, interval_s: float = 30.0,
                 registry: CollectorRegistry | None = None,
                 shipper_opts: ShipperOptions | None = None) -> None:
        self.db = db
        self.bucket = bucket
        self.interval_s = interval_s
        self._shipper_metrics = ShipperMetrics(registry) if registry is not None else None
        self._shipper_opts = shipper_opts or ShipperOptions()
        self._shippers: dict[str, Shipper] = {}
        self._task: asyncio.Task | None = None

    def _shipper(self, tenant: str) -> Shipper | None:
        if self.bucket is None:
            return None
        s = self._shippers.get(tenant)
        if s is None:
            s = self._shippers[tenant] = Shipper(
                self.bucket, self.db.tenants[tenant].dir, opts=self._shipper_opts,
                metrics=self._shipper_metrics, tenant=tenant)
        return s

    async def ship(self) -> int:
        shipped = 0
        for name in list(self.db.tenants):
            s = self._shipper(name)
            if s is not None:
                shipped += await s.sync()
        return shipped

    async def _apply_retention(self, now_ms: int) -> None:
        """Delete expired local blocks; with a bucket, only those it is seen to hold now."""
        for name, t in list(self.db.tenants.items()):
            s = self._shipper(name)
            for ulid in t.expired_blocks(now_ms):
                if s is None or await s.confirm_uploaded(ulid):
                    log.info("deleting local block past retention", extra={"tenant": name, "ulid": ulid})
                    t.delete_block(ulid)

    async def run_once(self, now_ms: int | None = None) -> None:
        for t in list(self.db.tenants.values()):
            try:
                t.compact()
            except Exception:  # one tenant's broken head or disk must not stop the others
                log.exception("block cut failed; other tenants go on", extra={"tenant": t.tenant})
        await self.ship()
        await self._apply_retention(int(time.time() * 1000) if now_ms is None else now_ms)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("block lifecycle round failed; will retry")
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def shutdown(self) -> None:
        """Flush every head into blocks and ship them (Thanos receive does the same on exit)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for t in list(self.db.tenants.values()):
            t.flush()
            await t.sync()
        if self.bucket is not None:
            try:
                await self.ship()
            except Exception:
                log.exception("shipping on shutdown failed; blocks stay local and ship next start")
