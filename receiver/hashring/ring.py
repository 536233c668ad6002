"""Placing series on ingestors: ketama and hashmod rings over xxhash64(tenant + labels).

Routing runs per request over every series at once: the C module hashes the decoder's canonical
label keys, then a ring turns the hash array into an ``(n_series, replication_factor)`` array of
endpoint indices. For ketama the replica set of every ring section is computed when the ring is
built, so a lookup is one ``searchsorted`` plus a gather.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from . import _ringc
from .config import Endpoint, HashringConfigError, HashringSpec

SECTIONS_PER_NODE = 1000


def hash_series(tenant: str, keys: Sequence[bytes]) -> np.ndarray:
    """xxhash64(tenant + 0xff + canonical label key) per series, as uint64."""
    return np.frombuffer(_ringc.hash_keys(tenant.encode(), keys), dtype=np.uint64)


class Ring(Protocol):
    endpoints: tuple[Endpoint, ...]
    replication_factor: int

    def assign(self, hashes: np.ndarray) -> np.ndarray:
        """Endpoint indices, shape (len(hashes), replication_factor), distinct per row."""
        ...


class HashmodRing:
    """Thanos's hashmod: replica i of a series lives on node (hash + i) mod n."""

    def __init__(self, endpoints: Sequence[Endpoint], replication_factor: int) -> None:
        if replication_factor > len(endpoints):
            raise HashringConfigError(
                f"replication factor {replication_factor} exceeds the {len(endpoints)} endpoints")
        self.endpoints = tuple(endpoints)
        self.replication_factor = replication_factor

    def assign(self, hashes: np.ndarray) -> np.ndarray:
        n = np.uint64(len(self.endpoints))
        offs = np.arange(self.replication_factor, dtype=np.uint64)
        return ((hashes[:, None] + offs[None, :]) % n).astype(np.int32)


class KetamaRing:
    """Consistent hashing with SECTIONS_PER_NODE points per endpoint.

    A series belongs to the first section clockwise from its hash; its replicas are the next
    distinct endpoints clockwise, preferring availability zones not yet used. Adding or removing
    one of n endpoints therefore moves only about 1/n of the primaries.
    """

    def __init__(self, endpoints: Sequence[Endpoint], replication_factor: int,
                 sections_per_node: int = SECTIONS_PER_NODE) -> None:
        if replication_factor > len(endpoints):
            raise HashringConfigError(
                f"replication factor {replication_factor} exceeds the {len(endpoints)} endpoints")
        self.endpoints = tuple(endpoints)
        self.replication_factor = replication_factor
        idx = [str(i).encode() for i in range(sections_per_node)]
        hashes = np.concatenate([np.frombuffer(_ringc.hash_keys(e.address.encode(), idx), np.uint64)
                                 for e in self.endpoints])
        owners = np.repeat(np.arange(len(self.endpoints), dtype=np.int32), sections_per_node)
        order = np.lexsort((owners, hashes))
        self.points = hashes[order]
        self.owners = owners[order]
        self.table = self._replica_table()

    def _replica_table(self) -> np.ndarray:
        """Replica endpoints of every section (built once per ring, so a Python walk is fine)."""
        rf = self.replication_factor
        owners = self.owners.tolist()
        azs = [e.az for e in self.endpoints]
        n_azs = len(set(azs))
        n = len(owners)
        table = np.empty((n, rf), dtype=np.int32)
        for p in range(n):
            chosen: list[int] = []
            used_az: set[str] = set()
            j = p
            while len(chosen) < rf:
                o = owners[j]
                if o not in chosen and (azs[o] not in used_az or len(used_az) >= n_azs):
                    chosen.append(o)
                    used_az.add(azs[o])
                j += 1
                if j == n:
                    j = 0
                if j == p and len(chosen) < rf:  # zones exhausted: fill with any distinct node
                    used_az = set(azs)
            table[p] = chosen
        return table

    def assign(self, hashes: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.points, hashes, side="left")
        pos[pos == len(self.points)] = 0
        return self.table[pos]


def build_ring(spec: HashringSpec, default_algorithm: str, replication_factor: int) -> Ring:
    algo = spec.algorithm or default_algorithm
    if algo == "ketama":
        return KetamaRing(spec.endpoints, replication_factor)
    if algo == "hashmod":
        return HashmodRing(spec.endpoints, replication_factor)
    raise HashringConfigError(f"unknown hashring algorithm {algo!r}")


class Hashrings:
    """Every configured hashring and the tenant-to-hashring choice (Thanos's multi-hashring).

    Tenants listed by a hashring (exactly, or by glob pattern) go to it; every other tenant goes
    to the first hashring that lists none. A tenant matching nothing cannot be written.
    """

    def __init__(self, specs: Sequence[HashringSpec], default_algorithm: str,
                 replication_factor: int) -> None:
        self.specs = tuple(specs)
        self.rings = [build_ring(s, default_algorithm, replication_factor) for s in self.specs]
        self.replication_factor = replication_factor
        self._cache: dict[str, int] = {}

    def index_for(self, tenant: str) -> int:
        i = self._cache.get(tenant)
        if i is None:
            i = self._match(tenant)
            if len(self._cache) < 100_000:
                self._cache[tenant] = i
        return i

    def _match(self, tenant: str) -> int:
        default = -1
        for i, s in enumerate(self.specs):
            if not s.tenants:
                if default < 0:
                    default = i
                continue
            if s.tenant_matcher_type == "glob":
                if any(fnmatch.fnmatchcase(tenant, pat) for pat in s.tenants):
                    return i
            elif tenant in s.tenants:
                return i
        return default

    def for_tenant(self, tenant: str) -> tuple[HashringSpec, Ring] | None:
        i = self.index_for(tenant)
        return None if i < 0 else (self.specs[i], self.rings[i])

    def all_endpoints(self) -> set[str]:
        return {e.address for s in self.specs for e in s.endpoints}
