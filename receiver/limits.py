"""Per-tenant write limits from Thanos's limits file (``--receive.limits-config-file``).

::

    write:
      global:
        max_concurrency: 30          # concurrent remote-write requests served (0: unlimited)
      default:
        request: {size_bytes_limit: 0, series_limit: 0, samples_limit: 0}
        head_series_limit: 0
      tenants:
        acme: {request: {series_limit: 100}, head_series_limit: 1000}

0 means unlimited; a tenant's unset field falls back to the default. Request limits answer 413
(Prometheus drops the batch: retrying an oversized request cannot help); an exhausted head-series
budget answers 429 (Prometheus backs off and retries once the budget is raised or series churn).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class LimitsConfigError(ValueError):
    pass


@dataclass(frozen=True)
class TenantLimits:
    size_bytes_limit: int = 0
    series_limit: int = 0
    samples_limit: int = 0
    head_series_limit: int = 0


@dataclass(frozen=True)
class WriteLimits:
    max_concurrency: int = 0
    default: TenantLimits = TenantLimits()
    tenants: dict[str, TenantLimits] = field(default_factory=dict)

    def for_tenant(self, tenant: str) -> TenantLimits:
        return self.tenants.get(tenant, self.default)

    def check_request(self, tenant: str, body_bytes: int, n_series: int, n_samples: int) -> str | None:
        """Why the request is over a request limit (a 413), or None."""
        lim = self.for_tenant(tenant)
        for n, cap, what in ((body_bytes, lim.size_bytes_limit, "request size (bytes)"),
                             (n_series, lim.series_limit, "series in request"),
                             (n_samples, lim.samples_limit, "samples in request")):
            if cap and n > cap:
                return f"tenant {tenant!r}: {what} {n} over the limit of {cap}"
        return None

    def check_head(self, tenant: str, head_series: int) -> str | None:
        """Why the tenant may not write now (a 429), or None."""
        cap = self.for_tenant(tenant).head_series_limit
        if cap and head_series >= cap:
            return f"tenant {tenant!r}: head series {head_series} reached the limit of {cap}"
        return None


def _int(d: dict, key: str, where: str) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise LimitsConfigError(f"{where}.{key} must be a non-negative integer, got {v!r}")
    return v


def _tenant(d: dict | None, where: str, base: TenantLimits) -> TenantLimits:
    d = d or {}
    if not isinstance(d, dict):
        raise LimitsConfigError(f"{where} must be a mapping")
    req = d.get("request") or {}
    if not isinstance(req, dict):
        raise LimitsConfigError(f"{where}.request must be a mapping")
    vals = {
        "size_bytes_limit": _int(req, "size_bytes_limit", f"{where}.request"),
        "series_limit": _int(req, "series_limit", f"{where}.request"),
        "samples_limit": _int(req, "samples_limit", f"{where}.request"),
        "head_series_limit": _int(d, "head_series_limit", where),
    }
    return TenantLimits(**{k: (getattr(base, k) if v is None else v) for k, v in vals.items()})


def parse_limits(text: str) -> WriteLimits:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise LimitsConfigError(f"limits file is not YAML: {e}") from None
    if not isinstance(doc, dict):
        raise LimitsConfigError("limits file must be a mapping")
    w = doc.get("write") or {}
    if not isinstance(w, dict):
        raise LimitsConfigError("write must be a mapping")
    g = w.get("global") or {}
    default = _tenant(w.get("default"), "write.default", TenantLimits())
    tenants = {str(t): _tenant(v, f"write.tenants.{t}", default)
               for t, v in (w.get("tenants") or {}).items()}
    return WriteLimits(max_concurrency=_int(g, "max_concurrency", "write.global") or 0,
                       default=default, tenants=tenants)


class LimitsFile:
    """The limits in force, re-read when the file changes (a bad edit keeps the old limits)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple | None = None
        self.limits = WriteLimits()
        if path is not None:
            self.limits = parse_limits(Path(path).read_text())
            self._stamp = self._stat()

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> bool:
        """Reload if the file changed; returns whether new limits took effect."""
        if self.path is None:
            return False
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        self.limits = parse_limits(Path(self.path).read_text())
        return True
