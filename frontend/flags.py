"""``promring query-frontend``'s flags (Thanos v0.42's names and defaults) and its config."""
from __future__ import annotations

import argparse
from pathlib import Path

from common.units import parse_duration_ms
from common.webconfig import WebConfigError, verifies_clients

from .config import CacheConfigError, FrontendConfig, parse_cache_config


def add_frontend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http-address", default="0.0.0.0:10902",
                   help="Listen host:port for HTTP endpoints.")
    p.add_argument("--query-frontend.downstream-url", dest="downstream_url",
                   default="http://localhost:9090",
                   help="URL of downstream Prometheus Query compatible API.")
    p.add_argument("--query-range.split-interval", dest="split_interval", default="24h",
                   help="Split query range requests by an interval and execute in parallel; 0 "
                        "disables splitting.")
    p.add_argument("--query-range.align-range-with-step", dest="align_range_with_step",
                   default=True, action=argparse.BooleanOptionalAction,
                   help="Mutate incoming queries to align their start and end with their step "
                        "for better cache-ability.")
    p.add_argument("--query-range.max-retries-per-request", dest="max_retries", type=int,
                   default=5, help="Maximum number of attempts of a query range request part; "
                                   "beyond this, the downstream error is returned.")
    p.add_argument("--query.max-retries-per-request", dest="instant_max_retries", type=int,
                   default=5, help="Maximum number of attempts of any other request.")
    p.add_argument("--query-range.max-query-length", dest="max_query_length", default="0",
                   help="Limit the query time range (end - start time); 0 disables it.")
    p.add_argument("--query-range.max-query-parallelism", dest="max_query_parallelism", type=int,
                   default=14, help="Maximum number of query range parts run in parallel.")
    p.add_argument("--query-range.response-cache-max-freshness", dest="max_freshness",
                   default="1m", help="Most recent allowed cacheable result, to prevent caching "
                                      "very recent results that might still be in flux.")
    p.add_argument("--query-range.partial-response", dest="partial_response", default=True,
                   action=argparse.BooleanOptionalAction,
                   help="partial_response of range queries that do not give it.")
    p.add_argument("--query-range.response-cache-config-file", dest="cache_config_file",
                   default="", help="YAML file of the response cache (IN-MEMORY or MEMCACHED).")
    p.add_argument("--query-range.response-cache-config", dest="cache_config", default="",
                   help="Alternative to --query-range.response-cache-config-file: the YAML itself.")
    p.add_argument("--cache-compression-type", dest="cache_compression", default="",
                   choices=["", "snappy"], help="Compression of results cache entries.")
    p.add_argument("--query-frontend.compress-responses", dest="compress_responses",
                   default=False, action=argparse.BooleanOptionalAction,
                   help="Compress HTTP responses (gzip) for clients that accept it.")
    p.add_argument("--query-frontend.log-queries-longer-than", dest="log_queries_longer_than",
                   default="0", help="Log queries slower than this; 0 disables, < 0 logs all.")
    p.add_argument("--query-frontend.forward-header", dest="forward_headers", action="append",
                   default=[], help="Header forwarded to the downstream with each range query "
                                    "part (repeatable).")
    p.add_argument("--query-frontend.org-id-header", dest="org_id_headers", action="append",
                   default=[], help="Headers naming the tenant for cache keys and logs, first "
                                    "present wins (repeatable).")
    p.add_argument("--query-frontend.tenant-header", dest="fe_tenant_header",
                   default="THANOS-TENANT", help="HTTP header naming the tenant.")
    p.add_argument("--query-frontend.default-tenant-id", dest="fe_default_tenant",
                   default="default-tenant", help="Tenant of requests without a tenant header.")
    p.add_argument("--query-frontend.tenant-certificate-field", dest="fe_tenant_certificate_field",
                   default="", choices=["", "organization", "organizationalUnit", "commonName"],
                   help="Take a request's tenant from this field of the verified client "
                        "certificate (needs client certificates in --http.config); the tenant "
                        "headers are ignored, and the tenant goes downstream in THANOS-TENANT.")
    p.add_argument("--labels.split-interval", dest="labels_split_interval", default="24h",
                   help="Accepted for Thanos compatibility; label and series calls are proxied "
                        "unsplit.")
    p.add_argument("--labels.max-retries-per-request", dest="labels_max_retries", type=int,
                   default=5, help="Accepted for Thanos compatibility (see "
                                   "--query.max-retries-per-request).")
    p.add_argument("--labels.partial-response", dest="labels_partial_response", default=True,
                   action=argparse.BooleanOptionalAction,
                   help="Accepted for Thanos compatibility; passed through as given.")
    p.add_argument("--labels.default-time-range", dest="labels_default_time_range",
                   default="24h", help="Accepted for Thanos compatibility.")
    for flag, default in _IGNORED_VALUE_FLAGS:
        p.add_argument(flag, dest=_dest(flag), default=default,
                       help="Accepted for Thanos compatibility; no effect.")
    for flag, default in _IGNORED_BOOL_FLAGS:
        p.add_argument(flag, dest=_dest(flag), default=default,
                       action=argparse.BooleanOptionalAction,
                       help="Accepted for Thanos compatibility; no effect.")


# Thanos query-frontend flags a command line may carry that change nothing here: label/series
# calls are passed through unsplit and uncached, the downstream transport is aiohttp's.
_IGNORED_VALUE_FLAGS = (("--labels.max-query-parallelism", "14"),
                        ("--labels.response-cache-max-freshness", "1m"),
                        ("--labels.response-cache-config-file", ""),
                        ("--labels.response-cache-config", ""),
                        ("--query-frontend.downstream-tripper-config-file", ""),
                        ("--query-frontend.downstream-tripper-config", ""),
                        ("--http-grace-period", "2m"))
_IGNORED_BOOL_FLAGS = (("--query-range.request-downsampled", True),
                       ("--web.disable-cors", False))


def _dest(flag: str) -> str:
    return "ignored_" + flag.lstrip("-").replace(".", "_").replace("-", "_")


def _duration_ms(value: str, flag: str, signed: bool = False) -> int:
    neg = signed and value.startswith("-")
    try:
        ms = parse_duration_ms(value[1:] if neg else value)
    except ValueError:
        raise ValueError(f"{flag}: not a duration: {value!r}") from None
    return -ms if neg else ms


def frontend_config(a: argparse.Namespace) -> FrontendConfig:
    """The frontend's configuration; ValueError naming the flag on a value it cannot run with."""
    if a.cache_config_file and a.cache_config:
        raise ValueError("both --query-range.response-cache-config-file and "
                         "--query-range.response-cache-config flags set")
    text, flag = a.cache_config, "--query-range.response-cache-config"
    if a.cache_config_file:
        flag = "--query-range.response-cache-config-file"
        try:
            text = Path(a.cache_config_file).read_text()
        except OSError as e:
            raise ValueError(f"{flag}: {e}") from None
    try:
        cache = parse_cache_config(text) if text.strip() else None
    except CacheConfigError as e:
        raise ValueError(f"{flag}: {e}") from None
    split = _duration_ms(a.split_interval, "--query-range.split-interval")
    if cache is not None and split <= 0:
        raise ValueError("--query-range.split-interval must be greater than 0 when "
                         "--query-range.response-cache-config is configured")
    for name, v in (("--query-range.max-retries-per-request", a.max_retries),
                    ("--query.max-retries-per-request", a.instant_max_retries),
                    ("--query-range.max-query-parallelism", a.max_query_parallelism)):
        if v < 1:
            raise ValueError(f"{name} must be at least 1")
    if not a.downstream_url.startswith(("http://", "https://")):
        raise ValueError("--query-frontend.downstream-url: must be an http:// or https:// URL")
    return FrontendConfig(
        http_address=a.http_address, downstream_url=a.downstream_url, split_interval_ms=split,
        align_range_with_step=a.align_range_with_step, max_retries=a.max_retries,
        instant_max_retries=a.instant_max_retries,
        max_query_length_ms=_duration_ms(a.max_query_length, "--query-range.max-query-length"),
        max_query_parallelism=a.max_query_parallelism,
        max_freshness_ms=_duration_ms(a.max_freshness,
                                      "--query-range.response-cache-max-freshness"),
        partial_response=a.partial_response, cache=cache, cache_compression=a.cache_compression,
        compress_responses=a.compress_responses,
        log_queries_longer_than_ms=_duration_ms(a.log_queries_longer_than,
                                                "--query-frontend.log-queries-longer-than",
                                                signed=True),
        forward_headers=tuple(a.forward_headers), org_id_headers=tuple(a.org_id_headers),
        tenant_header=a.fe_tenant_header, default_tenant=a.fe_default_tenant,
        tenant_certificate_field=_tenant_certificate_field(a),
        http_config=getattr(a, "http_config", ""))


def _tenant_certificate_field(a: argparse.Namespace) -> str:
    """--query-frontend.tenant-certificate-field, refused without client certificates to read
    it from (Thanos would fail every request then)."""
    field = getattr(a, "fe_tenant_certificate_field", "")
    if not field:
        return ""
    try:
        verified = verifies_clients(getattr(a, "http_config", ""))
    except WebConfigError as e:
        raise ValueError(f"--http.config: {e}") from None
    if not verified:
        raise ValueError("--query-frontend.tenant-certificate-field needs verified client "
                         "certificates: set client_ca_file in --http.config's tls_server_config")
    return field
