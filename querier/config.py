"""Configuration of ``promring query`` (flag names are Thanos's)."""
from __future__ import annotations

from dataclasses import dataclass, field

import re2
from common.tls import ClientTLS, ServerTLS

DEFAULT_TENANT_HEADER = "THANOS-TENANT"  # Thanos's tenancy header, also read when another is set


@dataclass
class QueryConfig:
    http_address: str = "0.0.0.0:10902"
    endpoints: list[str] = field(default_factory=list)
    lookback_delta_ms: int = 300_000
    timeout_s: float = 120.0
    max_samples: int = 50_000_000
    max_concurrent: int = 20
    slow_query_s: float = 10.0  # --query.log-queries-longer-than: 0 off, < 0 every query
    promql_features: frozenset[str] = frozenset()  # --enable-feature (Prometheus's names)
    store_timeout_s: float = 120.0
    # Deduplication: series differing only in these labels are replicas of one series.
    replica_labels: list[str] = field(default_factory=list)
    auto_downsampling: bool = False   # Thanos --query.auto-downsampling: max_source_resolution=auto
    dedup_func: str = "chain"                  # chain (receive replicas) | penalty (HA Prometheus)
    partial_response: bool = True              # default of the partial_response parameter (Thanos: on)
    # Tenancy of reads: with enforcement a query sees only its tenant's series.
    tenant_header: str = DEFAULT_TENANT_HEADER
    default_tenant: str = "default-tenant"
    tenant_label_name: str = "tenant_id"
    enforce_tenancy: bool = False
    tenant_certificate_field: str = ""  # organization | organizationalUnit | commonName: tenant from the client cert
    # Endpoint discovery and serving (Thanos's querier flags).
    strict_endpoints: list[str] = field(default_factory=list)  # --endpoint-strict
    sd_files: list[str] = field(default_factory=list)          # --store.sd-files (globs)
    sd_interval_s: float = 300.0                               # --store.sd-interval
    endpoint_config_file: str = ""                             # --endpoint.sd-config-file
    endpoint_config: str = ""                                  # --endpoint.sd-config (inline)
    endpoint_config_interval_s: float = 300.0   # --endpoint.sd-config-reload-interval
    store_response_timeout_s: float = 0.0                      # 0: no per-store timeout
    external_prefix: str = ""                                  # --web.external-prefix
    route_prefix: str = ""                                     # --web.route-prefix (API root)
    grpc_address: str = ""                                     # StoreAPI over the fan-out
    cors_origin: str = ".*"                                    # --web.cors.origin (regex)
    # The process's flags by name, for /api/v1/status/flags (set by the CLI).
    flags: dict[str, str] = field(default_factory=dict)
    storage_retention: str = ""                                # for status/runtimeinfo
    # Security: --grpc-server-tls-*, --grpc-client-tls-* and --http.config.
    grpc_server_tls: ServerTLS | None = None
    grpc_client_tls: ClientTLS | None = None
    http_config: str = ""
    # Not a flag: the hot query routes answered by querier.fasthttp (tests turn it off to
    # compare with aiohttp's answers).
    http_fast_path: bool = True

    def validate(self) -> None:
        """Refuse values that would make the querier useless (e.g. no query slot at all), with
        the flag's name in the message; raises ValueError."""
        checks = ((self.max_concurrent >= 1, "--query.max-concurrent must be at least 1"),
                  (self.timeout_s > 0, "--query.timeout must be greater than 0"),
                  (self.lookback_delta_ms > 0, "--query.lookback-delta must be greater than 0"),
                  (self.max_samples >= 0, "--query.max-samples must not be negative"))
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        for e in [*self.endpoints, *self.strict_endpoints]:
            check_endpoint(e)
        try:
            re2.compile(f"^(?:{self.cors_origin})$")
        except re2.error as e:
            raise ValueError(f"--web.cors.origin {self.cors_origin!r}: {e}") from None


def check_endpoint(address: str) -> None:
    """``host:port`` (IPv6 as ``[::1]:port``), as gRPC dials it; raises ValueError."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or host in ("[", "[]"):
        raise ValueError(f"--endpoint {address!r}: want host:port")
    if host.startswith("[") != host.endswith("]") or ("[" in host[1:-1] or "]" in host[1:-1]):
        raise ValueError(f"--endpoint {address!r}: bad brackets around the host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--endpoint {address!r}: port must be a number from 1 to 65535")
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"--endpoint {address!r}: not a host name or address")

