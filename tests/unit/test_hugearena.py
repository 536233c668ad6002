"""common._hugearena: Python's small-object arenas from huge-page regions (fast exit of a big
heap). Run in a child interpreter: the allocator is process-wide once enabled."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import gc, sys
from common._hugearena import enable, stats
enable(); enable()  # idempotent
# Churn: build a big heap of small objects, free it, build it again; every value must survive.
for round_ in range(3):
    d = {f"k{i}-{round_}".encode(): (i, str(i)) for i in range(600_000)}
    assert all(v == (i, str(i)) for i, v in zip(range(600_000), d.values()))
    if round_ < 2:
        del d
        gc.collect()
s = stats()
assert s["regions"] >= 1 and s["arena_bytes"] > 0, s
huge = 0
for line in open("/proc/self/smaps_rollup"):
    if line.startswith("AnonHugePages:"):
        huge = int(line.split()[1])
print(s["regions"], s["free_arenas"], huge)
"""


def _thp_enabled() -> bool:
    p = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return p.exists() and "[never]" not in p.read_text()


def test_arenas_come_from_huge_pages_and_are_reused_after_frees():
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    regions, _free, huge_kib = map(int, out.stdout.split())
    # Each round needs ~2 regions (64 MiB each); the later rounds reuse the freed arenas
    # instead of reserving ever more.
    assert 1 <= regions <= 3
    if _thp_enabled():
        assert huge_kib >= 2048  # the heap really is in transparent huge pages
