"""What a sidecar knows about its Prometheus: external labels and the time range it holds."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from receiver.tsdb.labels import Labels

from .promclient import MAX_INT64, PrometheusClient


@dataclass
class PromMetadata:
    """Refreshed by the heartbeat; read by the StoreAPI, the shipper and the ready probe."""

    limit_min_time: Callable[[], int]  # --min-time
    labels: Labels = ()
    mint: int = 0
    maxt: int = MAX_INT64
    known: bool = field(default=False)  # labels and time range read at least once

    def timestamps(self) -> tuple[int, int]:
        return self.mint, self.maxt

    async def update(self, client: PrometheusClient) -> None:
        """Time range first, then labels (as Thanos); raises PrometheusError if either fails."""
        lowest = await client.lowest_timestamp_ms()
        labels = await client.external_labels()
        self.mint = max(self.limit_min_time(), lowest)
        self.maxt = MAX_INT64
        self.labels = labels
        self.known = True
