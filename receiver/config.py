"""Configuration of ``promring receive`` (flag names are Thanos's)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.tls import ClientTLS, ServerTLS
from common.ops import IDLE_OR_HEADER_TIMEOUT_S

from .tsdb.labels import Labels


@dataclass
class ReceiveConfig:
    remote_write_address: str = "0.0.0.0:19291"
    grpc_address: str = "0.0.0.0:10901"
    http_address: str = "0.0.0.0:10902"
    tsdb_path: Path = Path("./data")
    external_labels: Labels = ()
    tenant_header: str = "THANOS-TENANT"
    default_tenant: str = "default-tenant"
    tenant_label_name: str = "tenant_id"
    max_request_bytes: int = 32 << 20          # compressed body; over it: 413
    max_decompressed_bytes: int = 256 << 20    # snappy bomb guard; over it: 413
    # A connection that is idle, or has not finished sending a request's headers, this long is
    # closed; a request body not fully received this long after its headers gets 408.
    http_header_timeout_s: float = IDLE_OR_HEADER_TIMEOUT_S
    http_read_timeout_s: float = 120.0
    wal_fsync: str = "none"                    # "none": write() before ack; "batch": group fsync
    wal_compression: bool = True               # --tsdb.wal-compression: snappy per WAL record
    chunk_range_ms: int = 2 * 3600 * 1000
    too_far_in_future_ms: int = 10 * 60_000    # --tsdb.too-far-in-future.time-window; 0 = off
    rejected_log_interval_s: float = 30.0      # --receive.rejected-log-interval; 0 = off
    max_exemplars: int = 0                     # --tsdb.max-exemplars per tenant; 0 = not stored
    ooo_window_ms: int = 0                     # --tsdb.out-of-order.time-window; 0 = off
    # Routing (a hashrings file makes this receiver a router; with a local endpoint in the ring,
    # a router+ingestor).
    hashrings_file: Path | None = None
    hashrings_content: str | None = None        # --receive.hashrings (used without a file)
    replica_header: str = "THANOS-REPLICA"
    hashrings_algorithm: str = "hashmod"
    hashrings_refresh_s: float = 1.0
    replication_factor: int = 1
    local_endpoint: str = ""
    forward_timeout_s: float = 5.0
    forward_retries: int = 2
    grpc_compression: str = "snappy"           # of forwarded writes: snappy | none
    replication_protocol: str = "protobuf"     # of forwarded writes: protobuf (gRPC) | capnproto
    # Thanos's Cap'n Proto Writer of an ingestor ("" = none; the CLI's default is 0.0.0.0:19391).
    capnproto_address: str = ""
    limits_file: Path | None = None
    objstore_config: str | None = None          # Thanos objstore YAML; None: no shipping
    retention_ms: int = 15 * 86_400_000          # local blocks (shipped ones) older than this go
    lifecycle_interval_s: float = 30.0           # how often heads are cut and blocks shipped
    # Security: TLS of the gRPC and remote-write servers, of forwarded writes, the web config
    # (--http.config) and where a client certificate names the tenant.
    grpc_server_tls: ServerTLS | None = None
    remote_write_tls: ServerTLS | None = None
    forward_tls: ClientTLS | None = None
    http_config: str = ""
    tenant_certificate_field: str = ""           # organization | organizationalUnit | commonName
    storage_probe_interval_s: float = 5.0        # how often the data dir is checked for writes
    extra: dict = field(default_factory=dict)

    @property
    def is_router(self) -> bool:
        return self.hashrings_file is not None or bool(self.hashrings_content)

    @property
    def is_ingestor(self) -> bool:
        return not self.is_router or bool(self.local_endpoint)
