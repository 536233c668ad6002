"""Thanos-compatible hashrings: which ingestors own a series of a tenant.

``config`` parses the hashrings JSON file, ``ring`` places hashes on ketama or hashmod rings
(vectorised: one ``searchsorted`` per request, replica sets precomputed per ring section), and
``watch`` reloads the file while the router runs.
"""
from .config import Endpoint, HashringSpec, HashringConfigError, load_hashrings, parse_hashrings
from .ring import (Hashrings, HashmodRing, InsufficientNodesError, KetamaRing, Ring, build_ring,
                   hash_series)
from .watch import HashringsFile

__all__ = ["Endpoint", "HashringSpec", "HashringConfigError", "load_hashrings", "parse_hashrings",
           "Hashrings", "HashringsFile", "HashmodRing", "InsufficientNodesError", "KetamaRing", "Ring",
           "build_ring", "hash_series"]
