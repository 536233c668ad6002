"""File service discovery of StoreAPI endpoints: ``--store.sd-files`` and Thanos's
``--endpoint.sd-config-file``.

A file_sd file (``*.json``, ``*.yml``/``*.yaml``; paths may be globs) holds a list of
``{targets: ["host:port", ...], labels: {...}}`` groups, as Prometheus and Thanos read it.
Files are checked for changes every second (Thanos watches them) and re-read in full every
interval; a file that cannot be read or parsed keeps its previous targets.
"""
from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 16 << 20
POLL_S = 1.0


class FileSDError(ValueError):
    """A file SD file that is not a list of target groups."""


def parse_file_sd(text: str, path: str) -> list[str]:
    """The targets of one file, in order."""
    try:
        groups = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise FileSDError(f"{path}: {e}") from None
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise FileSDError(f"{path}: expected a list of target groups")
    out: list[str] = []
    for g in groups:
        if not isinstance(g, dict):
            raise FileSDError(f"{path}: a target group must be a mapping")
        targets = g.get("targets") or []
        if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
            raise FileSDError(f"{path}: targets must be a list of host:port strings")
        out.extend(targets)
    return out


def parse_endpoint_config(text: str, path: str) -> list[str]:
    """Thanos's ``--endpoint.sd-config`` YAML: ``endpoints: [{address, strict, group}, ...]``
    (every endpoint here is asked whatever its health, so ``strict`` and ``group`` need no
    special handling; TLS client settings are not supported)."""
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise FileSDError(f"{path}: {e}") from None
    if cfg is None:
        return []
    eps = cfg.get("endpoints") if isinstance(cfg, dict) else None
    if eps is None:
        eps = []
    if not isinstance(eps, list):
        raise FileSDError(f"{path}: endpoints must be a list")
    out = []
    for e in eps:
        addr = e.get("address") if isinstance(e, dict) else None
        if not isinstance(addr, str) or not addr:
            raise FileSDError(f"{path}: every endpoint needs an address")
        if ((e.get("client_config") or {}).get("tls_config") or {}).get("enabled"):
            raise FileSDError(f"{path}: {addr}: TLS client settings are not supported")
        out.append(addr)
    return out


def file_stamps(files: Sequence[str]) -> tuple:
    """What changes when a file is edited, replaced or removed (cheap change detection)."""
    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((f, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((f, None))
    return tuple(out)


class FileSD:
    """The union of targets of every file the patterns match."""

    def __init__(self, patterns: Sequence[str], interval_s: float = 300.0,
                 parse: Callable[[str, str], list[str]] = parse_file_sd,
                 any_extension: bool = False) -> None:
        self.patterns = list(patterns)
        self.interval_s = interval_s
        self.parse = parse
        self.any_extension = any_extension
        self._by_file: dict[str, list[str]] = {}
        self._stamp: tuple = ()

    def _files(self) -> list[str]:
        return sorted({p for pat in self.patterns for p in glob.glob(pat)
                       if self.any_extension
                       or os.path.splitext(p)[1] in (".json", ".yml", ".yaml")})

    def _stat(self, files: list[str]) -> tuple:
        return file_stamps(files)

    def changed(self) -> bool:
        return self._stat(self._files()) != self._stamp

    def read(self) -> list[str]:
        """Re-read every file; returns all targets (deduplicated, in file order)."""
        files = self._files()
        self._stamp = self._stat(files)
        by_file: dict[str, list[str]] = {}
        for f in files:
            try:
                if os.path.getsize(f) > MAX_FILE_BYTES:
                    raise FileSDError(f"{f}: larger than {MAX_FILE_BYTES} bytes")
                by_file[f] = self.parse(Path(f).read_text(), f)
            except (OSError, UnicodeDecodeError, FileSDError) as e:
                log.error("file SD: keeping previous targets", extra={"file": f, "err": str(e)})
                by_file[f] = self._by_file.get(f, [])
        self._by_file = by_file
        return list(dict.fromkeys(t for ts in by_file.values() for t in ts))

    async def run(self, on_change: Callable[[list[str]], Awaitable[None]]) -> None:
        """Until cancelled: on a file change or every interval, re-read and report new targets."""
        last = self.targets()
        since = 0.0
        while True:
            await asyncio.sleep(POLL_S)
            since += POLL_S
            if since < self.interval_s and not self.changed():
                continue
            since = 0.0
            now = self.read()
            if now != last:
                last = now
                log.info("file SD targets changed", extra={"targets": now})
                await on_change(now)

    def targets(self) -> list[str]:
        return list(dict.fromkeys(t for ts in self._by_file.values() for t in ts))
