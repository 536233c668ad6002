"""``promring rule``'s configuration (Thanos's ``thanos rule`` flags)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.tls import ServerTLS

from .rules import Labels


@dataclass
class RulerConfig:
    rule_files: list[str] = field(default_factory=lambda: ["rules/"])
    eval_interval_ms: int = 60_000
    queries: list[str] = field(default_factory=list)  # querier HTTP addresses
    query_sd_files: list[str] = field(default_factory=list)
    query_sd_interval_s: float = 300.0
    query_http_method: str = "POST"
    query_timeout_s: float = 120.0
    external_labels: Labels = ()
    data_dir: Path = Path("data")
    objstore_config: str | None = None  # blocks shipped to the bucket (stateful mode)
    remote_write_config: str = ""  # non-empty: stateless mode
    alertmanager_urls: list[str] = field(default_factory=list)
    alertmanager_timeout_s: float = 10.0
    alert_query_url: str = ""
    alert_label_drop: list[str] = field(default_factory=list)
    for_grace_period_ms: int = 600_000
    for_outage_tolerance_ms: int = 3_600_000
    resend_delay_ms: int = 60_000
    http_address: str = "0.0.0.0:10902"
    grpc_address: str = "0.0.0.0:10901"
    block_duration_ms: int = 2 * 3_600_000
    retention_ms: int = 48 * 3_600_000
    reload_poll_s: float = 1.0  # rule files are checked for changes this often
    lifecycle_interval_s: float = 30.0
    grpc_server_tls: ServerTLS | None = None  # --grpc-server-tls-*
    http_config: str = ""  # --http.config: TLS, basic auth, headers of the HTTP server
    flags: dict[str, str] = field(default_factory=dict)
