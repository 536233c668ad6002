"""The query frontend's configuration, and Thanos's response-cache YAML parsed into it."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import yaml

from common.memcache import (MemcachedClientConfig, duration_field_s, int_field,
                             parse_memcached_config, size_field)


class CacheConfigError(ValueError):
    """The response-cache YAML cannot be used; the message says which field."""


@dataclass(frozen=True)
class InMemoryCacheConfig:
    """Thanos's IN-MEMORY response cache: bounded by bytes and items, entries expire."""
    max_size_bytes: int = 0          # 0: no byte bound
    max_size_items: int = 0          # 0: no item bound (neither bound: no cache, as Thanos)
    validity_s: float = 0.0          # 0: entries never expire


@dataclass
class MemcachedConfig(MemcachedClientConfig):
    """Thanos's MEMCACHED results-cache settings: the shared client's, plus how long entries
    live."""
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
    # Thanos's hidden --query-frontend.tenant-certificate-field: "" (the headers name the
    # tenant), organization, organizationalUnit or commonName of the verified client certificate
    tenant_certificate_field: str = ""
    http_config: str = ""


_ENV = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


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
    try:
        if kind == "IN-MEMORY":
            unknown = set(conf) - {"max_size", "max_size_items", "validity"}
            if unknown:
                raise CacheConfigError(
                    f"unknown IN-MEMORY field(s): {', '.join(sorted(unknown))}")
            return InMemoryCacheConfig(
                max_size_bytes=size_field(conf.get("max_size", 0) or 0, "max_size"),
                max_size_items=int_field(conf.get("max_size_items", 0) or 0, "max_size_items"),
                validity_s=duration_field_s(conf.get("validity", 0) or 0, "validity"))
        if kind == "MEMCACHED":
            return _memcached(conf)
    except CacheConfigError:
        raise
    except ValueError as e:
        raise CacheConfigError(str(e)) from None
    raise CacheConfigError(f"response cache with type {doc.get('type')} is not supported")


def _memcached(conf: dict) -> MemcachedConfig:
    client = parse_memcached_config(conf, extra_fields={"expiration"})
    expiration = duration_field_s(conf.get("expiration", 0) or 0, "expiration") or 24 * 3600
    return MemcachedConfig(**vars(client), expiration_s=max(1, int(expiration)))
