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


RELEASE_KEEPING = r"""
from common._hugearena import enable, keep, release
enable()
keep(True)
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
held = [bytes(200) for _ in range(600_000)]  # ~140 MiB of arenas
held.reverse()  # freed from the first made: the last arenas freed are those made last
del held
before = rss_mib()
given = release(%d)
after = rss_mib()
held = [bytes(200) for _ in range(100_000)]  # ~24 MiB: fits in a 48 MiB reserve
print(given >> 20, before - after, rss_mib() - after)
"""


def test_release_keeps_a_reserve_that_the_next_allocations_use_first():
    """release(keep) gives back all free huge pages but ``keep`` bytes of them, and the arenas
    of the pages it kept are handed out first, whichever were freed last: the next ~24 MiB of
    small objects need (almost) no new resident memory. release() keeps nothing, so the same
    objects fault their pages in again."""
    def run(keep: int) -> list[int]:
        out = subprocess.run([sys.executable, "-c", RELEASE_KEEPING % keep], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return list(map(int, out.stdout.split()))
    given, dropped, grown = run(48 << 20)
    assert given > 60 and dropped > 60, (given, dropped)
    assert grown < 8, grown
    assert run(0)[2] > 20  # nothing kept: the objects' pages are faulted in again
