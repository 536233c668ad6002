"""The query frontend's configuration, and Thanos's response-cache YAML parsed into it."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import yaml

from common.units import parse_bytes, parse_duration_ms


class CacheConfigError(ValueError):
    """The response-cache YAML cannot be used; the message says which field."""


@dataclass(frozen=True)
class InMemoryCacheConfig:
    """Thanos's IN-MEMORY response cache: bounded by bytes and items, entries expire."""
    max_size_bytes: int = 0          # 0: no byte bound
    max_size_items: int = 0          # 0: no item bound (neither bound: no cache, as Thanos)
    validity_s: float = 0.0          # 0: entries never expire


@dataclass(frozen=True)
class MemcachedConfig:
    """Thanos's MEMCACHED client settings (those a text-protocol client needs)."""
    addresses: tuple[str, ...]
    timeout_s: float = 0.5
    max_idle_connections: int = 100
    max_async_concurrency: int = 20
    max_item_size: int = 1 << 20
    expiration_s: int = 24 * 3600


@dataclass(frozen=True)
class FrontendConfig:
    http_address: str = "0.0.0.0:10902"
    downstream_url: str = "http://localhost:9090"
    split_interval_ms: int = 24 * 3_600_000
    align_range_with_step: bool = True
    max_retries: int = 5
    instant_max_retries: int = 5
    max_query_length_ms: int = 0
    max_query_parallelism: int = 14
    max_freshness_ms: int = 60_000
    partial_response: bool = True
    cache: InMemoryCacheConfig | MemcachedConfig | None = None
    cache_compression: str = ""      # "" or "snappy"
    compress_responses: bool = False
    log_queries_longer_than_ms: int = 0
    forward_headers: tuple[str, ...] = ()
    org_id_headers: tuple[str, ...] = ()
    tenant_header: str = "THANOS-TENANT"
    default_tenant: str = "default-tenant"
    http_config: str = ""


_ENV = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _duration_s(v, name: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v) / 1e9  # a bare number in Go's YAML duration is nanoseconds
    try:
        return parse_duration_ms(str(v)) / 1000
    except ValueError:
        raise CacheConfigError(f"{name}: not a duration: {v!r}") from None


def _size(v, name: str) -> int:
    try:
        return int(v) if isinstance(v, int) else parse_bytes(str(v))
    except ValueError:
        raise CacheConfigError(f"{name}: not a size: {v!r}") from None


def parse_cache_config(text: str) -> InMemoryCacheConfig | MemcachedConfig | None:
    """Thanos's ``--query-range.response-cache-config`` YAML (``$(ENV)`` substituted, as Thanos's
    extflag does); None when empty."""
    text = _ENV.sub(lambda m: os.environ.get(m.group(1), ""), text)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CacheConfigError(f"not valid YAML: {e}") from None
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}) or {}, dict):
        raise CacheConfigError("expected a mapping with 'type' and 'config'")
    kind = str(doc.get("type", "")).upper()
    conf = doc.get("config") or {}
    if kind == "IN-MEMORY":
        unknown = set(conf) - {"max_size", "max_size_items", "validity"}
        if unknown:
            raise CacheConfigError(f"unknown IN-MEMORY field(s): {', '.join(sorted(unknown))}")
        return InMemoryCacheConfig(
            max_size_bytes=_size(conf.get("max_size", 0) or 0, "max_size"),
            max_size_items=int(conf.get("max_size_items", 0) or 0),
            validity_s=_duration_s(conf.get("validity", 0) or 0, "validity"))
    if kind == "MEMCACHED":
        return _memcached(conf)
    raise CacheConfigError(f"response cache with type {doc.get('type')} is not supported")


# Thanos's memcached client fields that a single-process text-protocol client does not need:
# accepted (so a Thanos config works unchanged) and ignored.
_MEMCACHED_IGNORED = {"max_async_buffer_size", "max_get_multi_concurrency",
                      "max_get_multi_batch_size", "dns_provider_update_interval", "auto_discovery",
                      "set_async_circuit_breaker_config"}


def _memcached(conf: dict) -> MemcachedConfig:
    known = {"addresses", "timeout", "max_idle_connections", "max_async_concurrency",
             "max_item_size", "expiration"} | _MEMCACHED_IGNORED
    unknown = set(conf) - known
    if unknown:
        raise CacheConfigError(f"unknown MEMCACHED field(s): {', '.join(sorted(unknown))}")
    addrs = conf.get("addresses") or []
    if not isinstance(addrs, list) or not addrs or not all(isinstance(a, str) and ":" in a
                                                           for a in addrs):
        raise CacheConfigError("addresses: a non-empty list of host:port is required")
    expiration = _duration_s(conf.get("expiration", 0) or 0, "expiration") or 24 * 3600
    timeout = _duration_s(conf.get("timeout", "500ms"), "timeout")
    if timeout <= 0:
        raise CacheConfigError("timeout: must be greater than 0")
    return MemcachedConfig(
        addresses=tuple(a.removeprefix("dns+").removeprefix("dnssrv+") for a in addrs),
        timeout_s=timeout,
        max_idle_connections=max(1, int(conf.get("max_idle_connections", 100))),
        max_async_concurrency=max(1, int(conf.get("max_async_concurrency", 20) or 20)),
        max_item_size=_size(conf.get("max_item_size", "1MiB"), "max_item_size"),
        expiration_s=max(1, int(expiration)))
