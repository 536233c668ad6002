"""The sidecar's configuration (kept free of heavy imports: the CLI parser loads it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.tls import ServerTLS


@dataclass
class ReloaderConfig:
    config_file: str = ""              # --reloader.config-file
    config_envsubst_file: str = ""     # --reloader.config-envsubst-file
    rule_dirs: list[str] = field(default_factory=list)  # --reloader.rule-dir
    watch_interval_s: float = 180.0    # --reloader.watch-interval
    retry_interval_s: float = 5.0      # --reloader.retry-interval

    @property
    def enabled(self) -> bool:
        return bool(self.config_file or self.rule_dirs)


@dataclass
class SidecarConfig:
    prometheus_url: str = "http://localhost:9090"
    tsdb_path: Path = Path("./data")
    objstore_config: str | None = None  # None: no uploads (as Thanos without a bucket)
    grpc_address: str = "0.0.0.0:10901"
    http_address: str = "0.0.0.0:10902"
    ready_timeout_s: float = 600.0        # --prometheus.ready_timeout
    get_config_interval_s: float = 30.0   # --prometheus.get_config_interval
    get_config_timeout_s: float = 30.0    # --prometheus.get_config_timeout
    upload_compacted: bool = False        # --shipper.upload-compacted
    ignore_unequal_block_size: bool = False  # --shipper.ignore-unequal-block-size
    min_time: str = "0000-01-01T00:00:00Z"   # --min-time
    reloader: ReloaderConfig = field(default_factory=ReloaderConfig)
    grpc_server_tls: ServerTLS | None = None
    http_config: str = ""
