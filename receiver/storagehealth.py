"""Whether an ingestor's data dir takes writes, and getting back to work when it does again.

A full, read-only, vanished or failing disk must not look like a healthy ingestor that answers
500 to every write (Prometheus retries those forever without anyone noticing): while storage
fails the ingestor is not ready and answers writes 503, and the cause is logged once. A periodic
probe (write, fsync and delete a small file) notices both a failure no write has hit yet and
the recovery; on recovery the WALs of tenants whose writes failed are reopened.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_FILE = ".storage-probe"
# Space a recovering data dir must offer before writes resume (a full disk must not flap
# between "works" and "full" on every write); a healthy one is probed with one page.
RECOVERY_PROBE_BYTES = 1 << 20
HEALTHY_PROBE_BYTES = 4096


class StorageHealth:
    """Failure state of one data dir; all methods but ``probe_once`` run on the event loop."""

    def __init__(self, path: Path, interval_s: float = 5.0) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self.cause: str | None = None
        self.failed_tenants: set[str] = set()

    @property
    def ok(self) -> bool:
        return self.cause is None

    def failed(self, what: str, err: BaseException, tenant: str | None = None) -> None:
        """Record a storage failure; only the first one of an outage is logged."""
        if tenant is not None:
            self.failed_tenants.add(tenant)
        if self.cause is None:
            self.cause = f"{what}: {err}"
            log.error("storage failed: not ready, refusing writes (503) until it works again",
                      extra={"cause": self.cause, "path": str(self.path)})

    def probe_once(self, nbytes: int) -> None:
        """Write, fsync and delete a probe file (in a worker thread: it may block on the disk)."""
        p = self.path / PROBE_FILE
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            buf = memoryview(bytes(min(nbytes, 1 << 16)))
            left = nbytes
            while left:
                left -= os.write(fd, buf[:left])
            os.fsync(fd)
        finally:
            os.close(fd)
            try:
                os.unlink(p)
            except OSError:
                pass

    async def check(self, reopen: Callable[[str], None]) -> bool:
        """Probe the data dir; when it works, reopen failed tenants' WALs and clear the failure."""
        try:
            await asyncio.to_thread(self.probe_once,
                                    HEALTHY_PROBE_BYTES if self.ok else RECOVERY_PROBE_BYTES)
            for tenant in sorted(self.failed_tenants):
                reopen(tenant)
                self.failed_tenants.discard(tenant)
        except OSError as e:
            self.failed("storage probe", e)
            return False
        if self.cause is not None:
            log.info("storage works again: ready", extra={"was": self.cause})
            self.cause = None
        return True

    async def run(self, reopen: Callable[[str], None]) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check(reopen)
            except Exception:  # noqa: BLE001 -- the prober must outlive any one bad round
                log.exception("storage probe round failed; will retry")


def is_storage_error(e: BaseException) -> bool:
    """An OSError, or the WAL refusing writes after one (a RuntimeError caused by an OSError)."""
    return isinstance(e, OSError) or (isinstance(e, RuntimeError) and isinstance(e.__cause__, OSError))
