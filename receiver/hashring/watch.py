"""The hashrings file in force, re-read when it changes so a ring change needs no restart."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from .config import HashringConfigError, parse_hashrings
from .ring import Hashrings

log = logging.getLogger(__name__)


class HashringsFile:
    """Polls the file's (mtime, size, inode); a broken edit keeps the previous rings."""

    def __init__(self, path: Path | None, default_algorithm: str, replication_factor: int,
                 on_change: Callable[[Hashrings], None] | None = None,
                 content: str | None = None) -> None:
        """Without ``path``, ``content`` (``--receive.hashrings``) is the fixed configuration."""
        self.path = Path(path) if path is not None else None
        self.content = content
        self.default_algorithm = default_algorithm
        self.replication_factor = replication_factor
        self.on_change = on_change
        self._stamp: tuple | None = None
        self.rings: Hashrings = self._load()  # at startup a bad file is fatal
        self._stamp = self._stat()

    def _stat(self) -> tuple | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> Hashrings:
        text = self.path.read_text() if self.path is not None else self.content or ""
        specs = parse_hashrings(text)
        return Hashrings(specs, self.default_algorithm, self.replication_factor)

    def refresh(self, force: bool = False) -> bool:
        """Reload if the file changed (``force``: re-read it anyway, Thanos's periodic
        fallback); returns whether a new configuration took effect."""
        stamp = self._stat()
        if stamp is None or (stamp == self._stamp and not force):
            return False
        try:
            rings = self._load()
        except (OSError, HashringConfigError) as e:
            log.error("hashrings file rejected, keeping the previous rings", extra={"err": str(e)})
            self._stamp = stamp
            return False
        if [s for s in rings.specs] == [s for s in self.rings.specs]:
            self._stamp = stamp
            return False
        self._stamp = stamp
        self.rings = rings
        log.info("hashrings reloaded", extra={"endpoints": sorted(rings.all_endpoints())})
        if self.on_change is not None:
            self.on_change(rings)
        return True
