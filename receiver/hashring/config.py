"""The hashrings file: Thanos's JSON list of hashrings.

``[{"hashring": "a", "tenants": ["t1", "team-*"], "tenant_matcher_type": "glob",
"algorithm": "ketama", "endpoints": ["host:10901", {"address": "h2:10901", "az": "z1"}],
"external_labels": {"k": "v"}}]``. A hashring without tenants takes every tenant that reaches
it (hashrings are tried in file order); ``algorithm`` overrides ``--receive.hashrings-algorithm``
for that hashring.

Validation accepts what Thanos accepts, except where Thanos would run with an ill-defined or
silently dead configuration; those are refused with a clear message instead: an endpoint listed
twice in one hashring (Thanos's placement then depends on an unstable sort), an unknown
``tenant_matcher_type`` (Thanos never matches it), a malformed glob pattern (Thanos fails every
write that reaches it) and ``shuffle_sharding_config`` (not implemented here; ignoring it would
place series differently from Thanos).
"""
from __future__ import annotations

import json
import re

import re2
from dataclasses import dataclass, field
from pathlib import Path

ALGORITHMS = ("hashmod", "ketama")
MATCHER_TYPES = ("exact", "glob")
CAPNPROTO_PORT = "19391"  # Thanos's default Cap'n Proto replication port


class HashringConfigError(ValueError):
    """The file is not a valid hashrings configuration (the previous ring stays in force)."""


@dataclass(frozen=True)
class Endpoint:
    address: str
    az: str = ""
    capnproto_address: str = ""  # empty: host of ``address`` with Thanos's default port


@dataclass(frozen=True)
class HashringSpec:
    name: str
    endpoints: tuple[Endpoint, ...]
    tenants: tuple[str, ...] = ()
    tenant_matcher_type: str = "exact"
    algorithm: str = ""  # empty: the --receive.hashrings-algorithm default
    external_labels: tuple[tuple[str, str], ...] = field(default=())


def glob_regex(pattern: str) -> re2._Regexp:
    """Go's ``filepath.Match`` pattern (on Linux) as a regex; HashringConfigError if malformed.

    ``*`` and ``?`` do not cross ``/``; ``[^a-z]`` negates; ``\\`` escapes; ``-`` and ``]`` must
    be escaped inside a class. Python's fnmatch differs (``[!...]``, ``*`` crossing ``/``).
    Compiled with RE2: tenants come from clients, and a pattern like ``*a*a*a*a*b`` would make
    a backtracking engine run for hours on a long tenant ID.
    """
    out, i, n = [], 0, len(pattern)

    def esc(i: int) -> tuple[str, int]:
        if i >= n or pattern[i] in "-]":
            raise HashringConfigError(f"malformed tenant glob pattern {pattern!r}")
        if pattern[i] == "\\":
            i += 1
            if i >= n:
                raise HashringConfigError(f"malformed tenant glob pattern {pattern!r}")
        return pattern[i], i + 1

    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            i += 1
            neg = i < n and pattern[i] == "^"
            i += neg
            ranges = []
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = esc(i)
                hi = lo
                if i < n and pattern[i] == "-":
                    hi, i = esc(i + 1)
                ranges.append(re.escape(lo) + ("-" + re.escape(hi) if hi != lo else ""))
            out.append("[" + ("^" if neg else "") + "".join(ranges) + "]")
        elif c == "\\":
            if i + 1 >= n:
                raise HashringConfigError(f"malformed tenant glob pattern {pattern!r}")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    options = re2.Options()
    options.dot_nl, options.log_errors = True, False
    try:
        return re2.compile("".join(out), options)
    except re2.error:  # e.g. a reversed range [z-a]
        raise HashringConfigError(f"malformed tenant glob pattern {pattern!r}") from None


def _endpoint(raw, where: str) -> Endpoint:
    capnp = ""
    if isinstance(raw, str):
        addr, az = raw, ""
    elif isinstance(raw, dict):
        addr, az, capnp = raw.get("address"), raw.get("az", "") or "", \
            raw.get("capnproto_address", "") or ""
        if not isinstance(az, str) or not isinstance(capnp, str):
            raise HashringConfigError(f"{where}: endpoint az and capnproto_address must be strings")
    else:
        raise HashringConfigError(f"{where}: endpoint must be a string or {{address, az}}")
    if not isinstance(addr, str) or not addr:
        raise HashringConfigError(f"{where}: endpoint address must be set")
    return Endpoint(addr, az, capnp or addr.split(":", 1)[0] + ":" + CAPNPROTO_PORT)


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
        name = h.get("hashring", "") or ""
        if not isinstance(name, str):
            raise HashringConfigError(f"hashring {i}: name must be a string")
        where = f"hashring {name or i!r}"
        eps = h.get("endpoints") or []
        if not isinstance(eps, list):
            raise HashringConfigError(f"{where}: endpoints must be a list")
        endpoints = tuple(_endpoint(e, where) for e in eps)
        if len({e.address for e in endpoints}) != len(endpoints):
            raise HashringConfigError(f"{where}: an endpoint address is listed twice")
        tenants = h.get("tenants") or []
        if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
            raise HashringConfigError(f"{where}: tenants must be a list of strings")
        mtype = h.get("tenant_matcher_type", "") or "exact"
        if mtype not in MATCHER_TYPES:
            raise HashringConfigError(f"{where}: unknown tenant_matcher_type {mtype!r}")
        if mtype == "glob":
            for t in tenants:
                glob_regex(t)
        algo = h.get("algorithm", "") or ""
        if not isinstance(algo, str):
            raise HashringConfigError(f"{where}: algorithm must be a string")
        ext = h.get("external_labels") or {}
        if not isinstance(ext, dict):
            raise HashringConfigError(f"{where}: external_labels must be an object")
        shuffle = h.get("shuffle_sharding_config") or {}
        if isinstance(shuffle, dict) and shuffle.get("shard_size"):
            raise HashringConfigError(f"{where}: shuffle_sharding_config is not supported")
        out.append(HashringSpec(name, endpoints, tuple(tenants), mtype, algo,
                                tuple(sorted((str(k), str(v)) for k, v in ext.items()))))
    return out


def load_hashrings(path: Path) -> list[HashringSpec]:
    return parse_hashrings(Path(path).read_text())
