"""Placing series on ingestors exactly as Thanos does (pkg/receive/hashring.go).

The series hash is Thanos's: xxhash64 over ``tenant 0xff name1 0xff value1 0xff ...`` with the
labels as received (before any external label). Routing runs per request over every series at
once: the C module hashes the decoder's canonical label keys, then a ring turns the hash array
into an ``(n_series, replication_factor)`` array of indices into ``ring.endpoints``.

- hashmod: endpoints sorted by address; replica n of a series is ``endpoints[(hash + n) % len]``;
  availability zones are refused.
- ketama: 1000 sections per endpoint, section i (1..1000) of an endpoint at
  ``xxhash64("address:i")``, sorted by hash; a series belongs to the first section whose hash is
  >= its own (wrapping), and that section's replicas (computed once per ring, in C) are the next
  distinct endpoints clockwise, spread evenly over zones.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from . import _ringc
from .config import Endpoint, HashringConfigError, HashringSpec, glob_regex

log = logging.getLogger(__name__)

SECTIONS_PER_NODE = 1000


class InsufficientNodesError(Exception):
    """A hashmod ring with fewer endpoints than replicas (Thanos accepts the file, fails writes)."""

    def __init__(self, have: int, want: int) -> None:
        super().__init__(f"insufficient nodes; have {have}, want {want}")


def hash_series(tenant: str, keys: Sequence[bytes]) -> np.ndarray:
    """Thanos's series hash of every canonical label key, as uint64."""
    return np.frombuffer(_ringc.hash_series(tenant.encode(), keys), dtype=np.uint64)


class Ring(Protocol):
    endpoints: tuple[Endpoint, ...]
    replication_factor: int

    def assign(self, hashes: np.ndarray) -> np.ndarray:
        """Endpoint indices, shape (len(hashes), replication_factor), distinct per row."""
        ...


class HashmodRing:
    """Thanos's hashmod: endpoints sorted by address, replica n on (hash + n) mod len."""

    def __init__(self, endpoints: Sequence[Endpoint], replication_factor: int) -> None:
        if any(e.az for e in endpoints):
            raise HashringConfigError(
                "Hashmod algorithm does not support AZ aware hashring configuration. "
                "Either use Ketama or remove AZ configuration.")
        self.endpoints = tuple(sorted(endpoints, key=lambda e: e.address.encode()))
        self.replication_factor = replication_factor

    def assign(self, hashes: np.ndarray) -> np.ndarray:
        n = len(self.endpoints)
        if self.replication_factor > n:
            raise InsufficientNodesError(n, self.replication_factor)
        offs = np.arange(self.replication_factor, dtype=np.uint64)
        # uint64 wrap-around of hash + n, as Go's.
        return ((hashes[:, None] + offs[None, :]) % np.uint64(n)).astype(np.int32)


class KetamaRing:
    """Thanos's ketama ring; adding or removing one of n endpoints moves about 1/n of series."""

    def __init__(self, endpoints: Sequence[Endpoint], replication_factor: int,
                 sections_per_node: int = SECTIONS_PER_NODE) -> None:
        if len(endpoints) < replication_factor or not endpoints:
            raise HashringConfigError(
                "ketama: amount of endpoints needs to be larger than replication factor")
        self.endpoints = tuple(endpoints)
        self.replication_factor = replication_factor
        names = [f"{e.address}:{i}".encode() for e in self.endpoints
                 for i in range(1, sections_per_node + 1)]
        hashes = np.frombuffer(_ringc.hash_many(names), dtype=np.uint64)
        owners = np.repeat(np.arange(len(self.endpoints), dtype=np.int32), sections_per_node)
        order = np.argsort(hashes, kind="stable")
        self.points = hashes[order]
        self.owners = owners[order]
        zones = {az: i for i, az in enumerate(dict.fromkeys(e.az for e in self.endpoints))}
        zone_of = np.array([zones[e.az] for e in self.endpoints], dtype=np.int32)
        table = _ringc.ketama_replicas(self.owners.tobytes(), zone_of.tobytes(),
                                       replication_factor, len(zones))
        self.table = np.frombuffer(table, dtype=np.int32).reshape(len(self.points),
                                                                  replication_factor)

    def assign(self, hashes: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.points, hashes, side="left")
        pos[pos == len(self.points)] = 0
        return self.table[pos]


def build_ring(spec: HashringSpec, default_algorithm: str, replication_factor: int) -> Ring:
    algo = spec.algorithm or default_algorithm
    if algo == "ketama":
        return KetamaRing(spec.endpoints, replication_factor)
    if algo != "hashmod":
        log.warning("unrecognizable hashring algorithm, falling back to hashmod",
                    extra={"hashring": spec.name, "algorithm": algo})
    return HashmodRing(spec.endpoints, replication_factor)


class Hashrings:
    """Every configured hashring and the tenant-to-hashring choice (Thanos's multi-hashring).

    A tenant is served by the first hashring in file order that either lists no tenants or
    matches it (exactly, or by glob pattern for ``tenant_matcher_type: glob``). A tenant matching
    nothing cannot be written.
    """

    def __init__(self, specs: Sequence[HashringSpec], default_algorithm: str,
                 replication_factor: int) -> None:
        self.specs = tuple(specs)
        self.rings = [build_ring(s, default_algorithm, replication_factor) for s in self.specs]
        self.replication_factor = replication_factor
        self._globs = [[glob_regex(t) for t in s.tenants] if s.tenant_matcher_type == "glob"
                       else [] for s in self.specs]
        self._cache: dict[str, int] = {}

    def index_for(self, tenant: str) -> int:
        i = self._cache.get(tenant)
        if i is None:
            i = self._match(tenant)
            if len(self._cache) < 100_000:
                self._cache[tenant] = i
        return i

    def _match(self, tenant: str) -> int:
        for i, s in enumerate(self.specs):
            if not s.tenants:
                return i
            if s.tenant_matcher_type == "glob":
                if any(g.fullmatch(tenant) for g in self._globs[i]):
                    return i
            elif tenant in s.tenants:
                return i
        return -1

    def for_tenant(self, tenant: str) -> tuple[HashringSpec, Ring] | None:
        i = self.index_for(tenant)
        return None if i < 0 else (self.specs[i], self.rings[i])

    def all_endpoints(self) -> set[str]:
        return {e.address for s in self.specs for e in s.endpoints}

    def all_addresses(self) -> set[str]:
        """Every address a router may forward to: gRPC and Cap'n Proto."""
        return self.all_endpoints() | {e.capnproto_address for s in self.specs for e in s.endpoints}
