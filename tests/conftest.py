"""Shared fixtures: free ports, and real processes (promring, Prometheus) that tests start and stop."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import PromringProcess, free_port  # noqa: E402


@pytest.fixture
def promring_up(tmp_path):
    """A running ``promring up`` on free loopback ports; stopped (SIGTERM) after the test."""
    procs: list[PromringProcess] = []

    def start(data_dir: Path | None = None, *extra: str) -> PromringProcess:
        p = PromringProcess.up(data_dir or tmp_path / "data", *extra)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def port():
    return free_port()


@pytest.fixture
def procs():
    """Processes a test started (harness ServerProcess and the like): stopped after it."""
    started: list = []
    yield started
    for p in started:
        p.stop()
