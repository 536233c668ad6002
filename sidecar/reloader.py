"""Thanos's reloader: when Prometheus's configuration file (or a rule directory) changes,
write the env-substituted copy if asked and POST ``/-/reload``.

Files are hashed (sha256 over path and content, as Thanos); a cheap stat signature is polled
every second so a change is seen promptly, and everything is re-hashed every watch interval
regardless. A failed reload is retried every retry interval until it succeeds or the files
change again. The first pass reloads once (Thanos does too: nothing is known to be applied).
"""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import os
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from .config import ReloaderConfig
from .promclient import PrometheusClient, PrometheusError

log = logging.getLogger(__name__)

_ENV = re.compile(rb"\$\(([a-zA-Z_0-9]+)\)")
MAX_CONFIG_BYTES = 64 << 20  # a configuration (or rule) file larger than this is refused
POLL_S = 1.0


class ReloaderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads = Counter("thanos_sidecar_reloader_reloads",
                               "Number of reload requests.", registry=registry)
        self.failures = Counter("thanos_sidecar_reloader_reloads_failed",
                                "Number of reload requests that failed.", registry=registry)
        self.last_success = Gauge("thanos_sidecar_reloader_last_reload_successful",
                                  "Whether the last reload attempt was successful",
                                  registry=registry)


def expand_env(text: bytes) -> bytes:
    """``$(NAME)`` replaced by the environment variable; an unset one is an error."""
    def one(m: re.Match[bytes]) -> bytes:
        name = m.group(1).decode()
        if name not in os.environ:
            raise ValueError(f"found reference to unset environment variable {name!r}")
        return os.environ[name].encode()
    return _ENV.sub(one, text)


def _read(path: Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    return data


class Reloader:
    def __init__(self, cfg: ReloaderConfig, client: PrometheusClient,
                 metrics: ReloaderMetrics | None = None) -> None:
        self.cfg = cfg
        self._client = client
        self._m = metrics
        self._applied: bytes | None = None  # hash of what Prometheus last reloaded
        self._stat: tuple | None = None
        self.reloads = 0

    def _files(self) -> list[Path]:
        files = [Path(self.cfg.config_file)] if self.cfg.config_file else []
        for d in self.cfg.rule_dirs:
            try:
                files += sorted(p for p in Path(d).iterdir() if p.is_file())
            except OSError as e:
                log.warning("cannot list rule directory", extra={"dir": d, "err": str(e)})
        return files

    def _signature(self, files: list[Path]) -> tuple:
        out = []
        for p in files:
            try:
                st = p.stat()
                out.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((str(p), None))
        return tuple(out)

    def _hash_and_write(self, files: list[Path]) -> bytes:
        """Hash of every watched file; writes the env-substituted config when configured."""
        h = hashlib.sha256()
        for p in files:
            data = _read(p)
            h.update(b"\xff" + str(p).encode() + b"\xff" + data)
            if self.cfg.config_envsubst_file and str(p) == self.cfg.config_file:
                if p.suffix == ".gz":
                    data = gzip.decompress(data)
                out = Path(self.cfg.config_envsubst_file)
                tmp = out.with_name(out.name + ".tmp")
                tmp.write_bytes(expand_env(data))
                os.replace(tmp, out)
        return h.digest()

    async def apply(self) -> bool:
        """Reload Prometheus if the files differ from what it last reloaded; True if it did."""
        files = self._files()
        self._stat = self._signature(files)
        digest = await asyncio.to_thread(self._hash_and_write, files)
        if digest == self._applied:
            return False
        if self._m is not None:
            self._m.reloads.inc()
        try:
            await self._client.reload()
        except PrometheusError:
            if self._m is not None:
                self._m.failures.inc()
                self._m.last_success.set(0)
            raise
        self._applied = digest
        self.reloads += 1
        if self._m is not None:
            self._m.last_success.set(1)
        log.info("Reload triggered", extra={"cfg_in": self.cfg.config_file,
                                            "cfg_out": self.cfg.config_envsubst_file,
                                            "rule_dirs": ",".join(self.cfg.rule_dirs)})
        return True

    async def run(self) -> None:
        """Watch until cancelled."""
        loop = asyncio.get_running_loop()
        last_full = float("-inf")
        retry_at: float | None = None
        while True:
            now = loop.time()
            changed = self._stat != self._signature(self._files())
            due = now - last_full >= self.cfg.watch_interval_s
            if changed or due or (retry_at is not None and now >= retry_at):
                last_full = now
                try:
                    await self.apply()
                    retry_at = None
                except (PrometheusError, OSError, ValueError) as e:
                    log.error("Failed to trigger reload. Retrying.", extra={"err": str(e)})
                    retry_at = now + self.cfg.retry_interval_s
            await asyncio.sleep(POLL_S)
