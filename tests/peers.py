"""Paths of the reference peers (pinned Thanos, Prometheus 3, promtool) that scripts/peers.sh
builds into .peers/. A test that needs a peer fails with a clear message when it is missing:
``bash scripts/test.sh`` (the README's test command) always builds them first."""
from __future__ import annotations

import functools
import subprocess

from harness import REPO

PEERS_SCRIPT = REPO / "scripts" / "peers.sh"


@functools.cache
def _paths() -> tuple[dict[str, str], str]:
    r = subprocess.run(["bash", str(PEERS_SCRIPT), "--print"], capture_output=True, text=True,
                       timeout=60)
    paths = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    return paths, (r.stderr.strip() if r.returncode else "")


def peer(name: str) -> str:
    """Path of peer binary ``name`` (thanos, prometheus, promtool); fails the test if absent."""
    paths, problem = _paths()
    path = paths.get(name)
    if path is None or problem and path in problem:
        raise AssertionError(
            f"reference peer {name!r} is not built ({problem or 'unknown peer'}); "
            f"build it with `bash scripts/peers.sh` (scripts/test.sh does this)")
    return path
