"""A periodic log summary of rejected writes by tenant and reason: an operator sees that (and
why) a tenant's samples are refused without one line per sample or per request."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter

log = logging.getLogger(__name__)

MAX_TENANTS = 100  # per summary; further tenants are summed under "(other tenants)"
OTHER = "(other tenants)"


class RejectedWritesLog:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s  # <= 0: no summaries
        self._counts: dict[str, Counter[str]] = {}

    def add(self, tenant: str, reason: str, n: int = 1) -> None:
        if self.interval_s <= 0 or n <= 0:
            return
        if tenant not in self._counts and len(self._counts) >= MAX_TENANTS:
            tenant = OTHER
        self._counts.setdefault(tenant, Counter())[reason] += n

    def flush(self) -> None:
        """One warning per tenant with rejections since the last flush; then start over."""
        counts, self._counts = self._counts, {}
        for tenant, reasons in sorted(counts.items()):
            log.warning("rejected writes", extra={
                "tenant": tenant, "interval": f"{self.interval_s:g}s",
                "total": sum(reasons.values()), **dict(sorted(reasons.items()))})

    async def run(self) -> None:
        if self.interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self.interval_s)
            self.flush()
