"""``promring sidecar``'s flags (Thanos's names and defaults) and the configuration they make."""
from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlsplit

from common.tls import add_server_tls_flags, server_tls_from_flags
from common.units import parse_duration_ms, parse_time_or_duration
from objstore.flags import add_objstore_flags, objstore_yaml

from .config import ReloaderConfig, SidecarConfig


def add_sidecar_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http-address", default="0.0.0.0:10902",
                   help="Listen host:port for HTTP endpoints (/metrics, /-/healthy, /-/ready).")
    p.add_argument("--grpc-address", default="0.0.0.0:10901",
                   help="Listen ip:port address for gRPC endpoints (StoreAPI).")
    add_server_tls_flags(p)
    p.add_argument("--prometheus.url", dest="prometheus_url", default="http://localhost:9090",
                   help="URL at which to reach Prometheus's API.")
    p.add_argument("--prometheus.ready_timeout", dest="prometheus_ready_timeout", default="10m",
                   help="Maximum time to wait for the Prometheus instance to start up.")
    p.add_argument("--prometheus.get_config_interval", dest="prometheus_get_config_interval",
                   default="30s", help="How often to get Prometheus config.")
    p.add_argument("--prometheus.get_config_timeout", dest="prometheus_get_config_timeout",
                   default="30s", help="Timeout for getting Prometheus config.")
    p.add_argument("--tsdb.path", dest="tsdb_path", default="./data",
                   help="Data directory of TSDB.")
    p.add_argument("--reloader.config-file", dest="reloader_config_file", default="",
                   help="Config file watched by the reloader.")
    p.add_argument("--reloader.config-envsubst-file", dest="reloader_config_envsubst_file",
                   default="", help="Output file for environment variable substituted config "
                                    "file.")
    p.add_argument("--reloader.rule-dir", dest="reloader_rule_dirs", action="append",
                   default=[], help="Rule directories for the reloader to refresh (repeated "
                                    "field).")
    p.add_argument("--reloader.watch-interval", dest="reloader_watch_interval", default="3m",
                   help="Controls how often reloader re-reads config and rules.")
    p.add_argument("--reloader.retry-interval", dest="reloader_retry_interval", default="5s",
                   help="Controls how often reloader retries config reload in case of error.")
    add_objstore_flags(p, required=False)  # no bucket: no uploads, as Thanos
    p.add_argument("--shipper.upload-compacted", dest="shipper_upload_compacted",
                   action=argparse.BooleanOptionalAction, default=False,
                   help="Also upload compacted blocks (migration; Prometheus's compaction "
                        "must be disabled).")
    p.add_argument("--shipper.ignore-unequal-block-size", dest="shipper_ignore_unequal",
                   action=argparse.BooleanOptionalAction, default=False,
                   help="Do not require Prometheus's min and max block durations to be equal.")
    p.add_argument("--min-time", dest="min_time", default="0000-01-01T00:00:00Z",
                   help="Serve only data after this: an RFC3339 time or a duration relative "
                        "to now such as -1d.")


def _seconds(a: argparse.Namespace, dest: str, flag: str, positive: bool = True) -> float:
    try:
        ms = parse_duration_ms(getattr(a, dest))
    except ValueError as e:
        raise ValueError(f"{flag}: {e}") from None
    if ms < 0 or (positive and ms == 0):
        raise ValueError(f"{flag}: must be greater than 0")
    return ms / 1000


def sidecar_config(a: argparse.Namespace) -> SidecarConfig:
    """The sidecar's configuration; ValueError naming the flag on a value it cannot run with
    (``--http.config`` is the CLI's common flag, checked there)."""
    url = urlsplit(a.prometheus_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"--prometheus.url: not an http(s) URL: {a.prometheus_url!r}")
    try:
        parse_time_or_duration(a.min_time)
    except ValueError:
        raise ValueError(f"--min-time: not an RFC3339 time or a duration: {a.min_time!r}") \
            from None
    if a.reloader_config_envsubst_file and not a.reloader_config_file:
        raise ValueError("--reloader.config-envsubst-file needs --reloader.config-file")
    return SidecarConfig(
        prometheus_url=a.prometheus_url, tsdb_path=Path(a.tsdb_path),
        objstore_config=objstore_yaml(a), grpc_address=a.grpc_address,
        http_address=a.http_address,
        ready_timeout_s=_seconds(a, "prometheus_ready_timeout", "--prometheus.ready_timeout"),
        get_config_interval_s=_seconds(a, "prometheus_get_config_interval",
                                       "--prometheus.get_config_interval"),
        get_config_timeout_s=_seconds(a, "prometheus_get_config_timeout",
                                      "--prometheus.get_config_timeout"),
        upload_compacted=a.shipper_upload_compacted,
        ignore_unequal_block_size=a.shipper_ignore_unequal, min_time=a.min_time,
        reloader=ReloaderConfig(
            config_file=a.reloader_config_file,
            config_envsubst_file=a.reloader_config_envsubst_file,
            rule_dirs=list(a.reloader_rule_dirs),
            watch_interval_s=_seconds(a, "reloader_watch_interval", "--reloader.watch-interval"),
            retry_interval_s=_seconds(a, "reloader_retry_interval",
                                      "--reloader.retry-interval")),
        grpc_server_tls=server_tls_from_flags(a), http_config=getattr(a, "http_config", ""))
