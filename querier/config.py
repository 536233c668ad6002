"""Configuration of ``promring query`` (flag names are Thanos's)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class QueryConfig:
    http_address: str = "0.0.0.0:10902"
    endpoints: list[str] = field(default_factory=list)
    lookback_delta_ms: int = 300_000
    timeout_s: float = 120.0
    max_samples: int = 50_000_000
    max_concurrent: int = 20
    store_timeout_s: float = 120.0
