"""What happens to an ingestor's data after it is appended: head -> local block -> bucket -> gone.

Every ``interval`` the heads are cut into blocks (Prometheus's 1.5-range rule), new blocks are
shipped, and shipped blocks past local retention are deleted. The slow parts of a cut (writing
the block, truncating the head, writing the WAL checkpoint) run in a worker thread; the short
steps that change what the head holds run on the event loop, between writes, so writes and
queries go on during a cut and ``/-/ready`` answers.

Shutdown does what Prometheus does: no flush. The head stays in the WAL (synced to disk) and is
replayed on the next start, so a restart neither takes long nor turns the samples a client
re-sends after it into "too old" conflicts. Blocks are cut only on the schedule.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from prometheus_client import CollectorRegistry

from objstore import Bucket
from shipper import Shipper, ShipperMetrics, ShipperOptions

from .multitsdb import MultiTSDB
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SHUTDOWN_SHIP_TIMEOUT_S = 10.0


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
        self._inflight: asyncio.Future | None = None  # a cut step running in a worker thread

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

    async def _off_loop(self, step: Callable[[], Any]) -> Any:
        """Run one slow cut step in a worker thread. Shielded: cancelling the lifecycle (on
        shutdown) must not abandon a half-written checkpoint; ``shutdown`` waits for it."""
        self._inflight = asyncio.ensure_future(asyncio.to_thread(step))
        return await asyncio.shield(self._inflight)

    async def run_once(self, now_ms: int | None = None) -> None:
        for t in list(self.db.tenants.values()):
            try:
                await t.compact_async(self._off_loop)
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
        """Stop cutting (after the step in flight), sync every WAL, ship blocks already cut."""
        await cancel_and_wait(self._task)
        if self._inflight is not None:
            try:
                await self._inflight
            except Exception:
                log.exception("block cut step failed during shutdown; the WAL still has it all")
        for t in list(self.db.tenants.values()):
            try:
                await t.sync(to_disk=True)
            except Exception:  # a broken disk of one tenant must not keep the others unsynced
                log.exception("WAL sync on shutdown failed", extra={"tenant": t.tenant})
        if self.bucket is not None:
            try:
                await asyncio.wait_for(self.ship(), SHUTDOWN_SHIP_TIMEOUT_S)
            except Exception:
                log.exception("shipping on shutdown failed; blocks stay local and ship next start")
