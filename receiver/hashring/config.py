"""The hashrings file: Thanos's JSON list of hashrings.

``[{"hashring": "a", "tenants": ["t1", "team-*"], "tenant_matcher_type": "glob",
"algorithm": "ketama", "endpoints": ["host:10901", {"address": "h2:10901", "az": "z1"}],
"external_labels": {"k": "v"}}]``. A hashring without tenants takes every tenant not claimed
by another; ``algorithm`` overrides ``--receive.hashrings-algorithm`` for that hashring.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

ALGORITHMS = ("hashmod", "ketama")
MATCHER_TYPES = ("exact", "glob", "")


class HashringConfigError(ValueError):
    """The file is not a valid hashrings configuration (the previous ring stays in force)."""


@dataclass(frozen=True)
class Endpoint:
    address: str
    az: str = ""


@dataclass(frozen=True)
class HashringSpec:
    name: str
    endpoints: tuple[Endpoint, ...]
    tenants: tuple[str, ...] = ()
    tenant_matcher_type: str = "exact"
    algorithm: str = ""  # empty: the --receive.hashrings-algorithm default
    external_labels: tuple[tuple[str, str], ...] = field(default=())


def _endpoint(raw, where: str) -> Endpoint:
    if isinstance(raw, str):
        addr, az = raw, ""
    elif isinstance(raw, dict):
        addr, az = raw.get("address"), raw.get("az", "") or ""
        if not isinstance(az, str):
            raise HashringConfigError(f"{where}: endpoint az must be a string")
    else:
        raise HashringConfigError(f"{where}: endpoint must be a string or {{address, az}}")
    if not isinstance(addr, str) or ":" not in addr:
        raise HashringConfigError(f"{where}: endpoint address must be host:port, got {addr!r}")
    return Endpoint(addr, az)


def parse_hashrings(text: str) -> list[HashringSpec]:
    """Parse and validate the file's content; raises HashringConfigError."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise HashringConfigError(f"hashrings file is not JSON: {e}") from None
    if not isinstance(data, list) or not data:
        raise HashringConfigError("hashrings file must be a non-empty JSON list")
    out = []
    for i, h in enumerate(data):
        if not isinstance(h, dict):
            raise HashringConfigError(f"hashring {i}: must be an object")
        name = str(h.get("hashring", "") or f"hashring-{i}")
        where = f"hashring {name!r}"
        eps = h.get("endpoints") or []
        if not isinstance(eps, list) or not eps:
            raise HashringConfigError(f"{where}: needs at least one endpoint")
        endpoints = tuple(_endpoint(e, where) for e in eps)
        if len({e.address for e in endpoints}) != len(endpoints):
            raise HashringConfigError(f"{where}: duplicate endpoint addresses")
        tenants = h.get("tenants") or []
        if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
            raise HashringConfigError(f"{where}: tenants must be a list of strings")
        mtype = h.get("tenant_matcher_type", "") or "exact"
        if mtype not in MATCHER_TYPES:
            raise HashringConfigError(f"{where}: unknown tenant_matcher_type {mtype!r}")
        algo = h.get("algorithm", "") or ""
        if algo and algo not in ALGORITHMS:
            raise HashringConfigError(f"{where}: unknown algorithm {algo!r}")
        ext = h.get("external_labels") or {}
        if not isinstance(ext, dict):
            raise HashringConfigError(f"{where}: external_labels must be an object")
        out.append(HashringSpec(name, endpoints, tuple(tenants), mtype, algo,
                                tuple(sorted((str(k), str(v)) for k, v in ext.items()))))
    return out


def load_hashrings(path: Path) -> list[HashringSpec]:
    return parse_hashrings(Path(path).read_text())
