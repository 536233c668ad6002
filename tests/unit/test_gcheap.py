"""GC settings of query-serving processes (common.gcheap), checked in fresh interpreters so
this test process's own heap is left alone."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common.gcheap import YOUNG_THRESHOLD

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_frozen_startup_heap_still_collects_cyclic_garbage() -> None:
    """After the freeze the start-up objects are out of every collection, and garbage cycles
    made later are still freed (within a bounded number of allocations, no explicit
    gc.collect)."""
    got = _run("""
import gc, weakref
import store.server, querier.server  # a serving process's imports
from common.gcheap import YOUNG_THRESHOLD, freeze_startup_heap
freeze_startup_heap()
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
assert gc.get_threshold()[0] == YOUNG_THRESHOLD
freed = []
class Node: pass
for _ in range(100):
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    weakref.finalize(a, freed.append, 1)
    del a, b
junk = [[i] for i in range(3 * YOUNG_THRESHOLD)]  # allocations that trigger collections
print(len(freed))
""")
    assert got == "100"


def test_cli_freezes_the_heap_of_query_serving_components_only() -> None:
    """promring's run loop freezes the heap once every component has started, if they are
    all query servers (store, query); other components keep CPython's defaults."""
    code = """
import asyncio, gc, os, signal
from promring.cli import _run_until_signal

class Comp:
    FREEZE_HEAP_AFTER_START = %s
    async def start(self):
        asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
    async def stop(self):
        print(gc.get_freeze_count() > 0, gc.get_threshold()[0])

asyncio.run(_run_until_signal([Comp()]))
"""
    assert _run(code % "True").splitlines()[-1] == f"True {YOUNG_THRESHOLD}"
    assert _run(code % "False").splitlines()[-1] == "False 700"


def test_freed_query_memory_is_reused_without_page_faults() -> None:
    """After the start-up settings the memory a query freed is reused by the next one:
    "queries" that each hold six 16 MiB arrays and many chunk-sized bytes at once, then free
    them, fault in (almost) no new pages after the first. With glibc's defaults the freed heap
    top is given back each time and faulted in again (4,096 page faults per array)."""
    code = """
import resource, numpy as np
from common.gcheap import freeze_startup_heap
%s
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def query():
    held = [np.ones(16 << 17) for _ in range(6)]  # 16 MiB each, written all over
    held.append([bytes(800) for _ in range(20_000)])
query()  # the first one is faulted in either way
before = faults()
for _ in range(5):
    query()
print(faults() - before)
"""
    assert int(_run(code % "freeze_startup_heap()")) < 1_000
    assert int(_run(code % "")) > 15_000  # the defaults: what the settings avoid


# Page faults of queries run in a worker thread (as the querier evaluates) after the first
# one; each "query" holds `count` numpy arrays of `mib` MiB, written all over, then frees them.
THREAD_QUERIES = """
import resource, numpy as np
from concurrent.futures import ThreadPoolExecutor
from common.gcheap import freeze_startup_heap
np._core.multiarray._set_madvise_hugepage(False)  # every fault a 4 KiB page
if {settings}:
    freeze_startup_heap()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def query():
    held = [np.ones({mib} << 17) for _ in range({count})]
with ThreadPoolExecutor(1) as pool:
    pool.submit(query).result()  # the first one is faulted in either way
    before = faults()
    for _ in range(3):
        pool.submit(query).result()
    print(faults() - before)
"""


def _thread_query_faults(settings: bool, mib: int, count: int) -> int:
    return int(_run(THREAD_QUERIES.format(settings=settings, mib=mib, count=count)))


def test_freed_query_memory_of_a_worker_thread_is_reused_without_page_faults() -> None:
    """The querier evaluates in worker threads: their memory is reused too. A thread's own
    glibc arena grows in 64 MiB sub-heaps and unmaps each one as soon as it is empty, so a
    query holding more than that at once (forty 2 MiB arrays: below numpy's huge-page size,
    as most per-batch arrays are) mapped and faulted in a fresh sub-heap every time."""
    assert _thread_query_faults(True, 2, 40) < 1_000
    assert _thread_query_faults(False, 2, 40) > 5_000  # the defaults: what the settings avoid


def test_freed_blocks_past_glibcs_largest_mmap_threshold_are_reused_too() -> None:
    """A query's biggest arrays (decoded columns of 45 MiB and more at scale 4) are past the
    largest mmap threshold glibc accepts (32 MiB): they come from the heap too, so the next
    query reuses them instead of mapping them afresh and faulting them in (the kernel zeroing
    them was ~200 ms of system time per scale-4 histogram_quantile query)."""
    assert _thread_query_faults(True, 48, 2) < 1_000
    assert _thread_query_faults(False, 48, 2) > 50_000  # the defaults: 24,576 faults per query


def test_freed_memory_past_a_gibibyte_is_kept_for_the_next_query_too() -> None:
    """A scale-4 24 h histogram_quantile holds 1.1 GiB of decoded columns at once. With the
    freed heap top capped at 1 GiB it went back to the kernel after every such query and the
    next one faulted it in again (7.4 s of system time per query on the benchmark's VM); now
    all of it is kept until the idle trim."""
    assert _thread_query_faults(True, 640, 2) < 1_000


def test_kept_memory_is_given_back_when_released() -> None:
    """What the settings keep after a big query (resident, reused by the next one) is given
    back to the kernel by release_freed_memory, which the serving processes call once idle."""
    got = _run("""
import numpy as np
from common.gcheap import freeze_startup_heap, release_freed_memory
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
assert freeze_startup_heap()
base = rss_mib()
held = [np.ones(16 << 17) for _ in range(20)]  # 320 MiB, written all over (a third in the reserve)
del held
kept = rss_mib() - base
assert release_freed_memory()
print(kept, rss_mib() - base)
""").split()
    kept, after = map(int, got)
    assert kept > 200 and after < 30, (kept, after)


# "Queries" of a million small Python objects (obmalloc arenas from common._hugearena, as in
# every promring process), then the huge-page faults per query after the first and the
# resident MiB before and after release_freed_memory.
SMALL_OBJECT_QUERIES = """
import resource
from common._hugearena import enable
enable()
from common.gcheap import freeze_startup_heap, release_freed_memory
if {settings}:
    freeze_startup_heap()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
def query():
    held = [(i, str(i)) for i in range(1_000_000)]
query()  # the first one is faulted in either way
before = faults()
for _ in range(3):
    query()
kept = rss_mib()
release_freed_memory()
print(faults() - before, kept, rss_mib())
"""


def test_freed_small_objects_are_kept_for_the_next_query_until_released() -> None:
    """A big query's small objects (tuples, str, int: ~150 MiB of obmalloc arenas for a
    million) freed at its end stay resident for the next query instead of being given back
    per huge page and faulted in (and zeroed by the kernel) again; release_freed_memory, which
    the serving processes call once idle, gives them back."""
    faults, kept, released = map(int, _run(SMALL_OBJECT_QUERIES.format(settings=True)).split())
    assert faults < 30, faults
    assert kept > 100 and released < kept - 100, (kept, released)
    default_faults = int(_run(SMALL_OBJECT_QUERIES.format(settings=False)).split()[0])
    assert default_faults > 150, default_faults  # without the settings: given back each time


def _trims(cpu_per_interval: list[float]) -> list[int]:
    """Intervals (1-based) after which trim_when_idle trimmed, for a process using the given
    CPU seconds in each of its intervals (on a fake clock)."""
    import asyncio

    from common.gcheap import trim_when_idle
    clock = [0.0]
    done = [0]  # intervals passed
    trims: list[int] = []

    class Done(Exception):
        pass

    async def fake_sleep(_s: float) -> None:
        if done[0] == len(cpu_per_interval):
            raise Done
        clock[0] += cpu_per_interval[done[0]]
        done[0] += 1

    async def main() -> None:
        try:
            await trim_when_idle(1.0, cpu=lambda: clock[0], sleep=fake_sleep,
                                 trim=lambda: trims.append(done[0]))
        except Done:
            pass
    asyncio.run(main())
    return trims


def test_trimmed_once_per_idle_spell_after_work() -> None:
    """Idle from the start: no trim (nothing was freed). Work, then idle: one trim, not one per
    idle interval. Work again: the next idle interval trims again. Busy intervals never trim."""
    assert _trims([0.0, 0.0, 0.0]) == []
    assert _trims([0.5, 0.0, 0.0, 0.0, 0.5, 0.5, 0.001, 0.0]) == [2, 7]
    assert _trims([0.5] * 6) == []


FIRST_QUERY = """
import numpy as np
from concurrent.futures import ThreadPoolExecutor
from common._hugearena import enable
enable()
from common import gcheap
gcheap.HEAP_RESERVE, gcheap.OBJECT_RESERVE = {heap}, {objects}
gcheap.freeze_startup_heap()
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
def query():
    held = [np.ones(4 << 17) for _ in range(12)]  # 48 MiB of 4 MiB arrays, written all over
    held.append([bytes(200) for _ in range(60_000)])  # ~14 MiB of small objects
with ThreadPoolExecutor(1) as pool:
    before = rss_mib()
    pool.submit(query).result()
    print(rss_mib() - before)
"""


def test_the_first_query_after_start_up_reuses_the_reserve() -> None:
    """Start-up faults in a reserve of heap and small-object arenas and keeps it, so the first
    queries do not fault their pages in one by one (on the benchmark's VM the first dashboard
    query after a start took 250 ms instead of 40, mostly the kernel faulting pages in). A
    query within the reserve grows the process by (almost) nothing; without one, by its size."""
    assert int(_run(FIRST_QUERY.format(heap=96 << 20, objects=32 << 20))) < 8
    assert int(_run(FIRST_QUERY.format(heap=0, objects=0))) > 50


def test_release_keeps_the_reserve() -> None:
    """The idle trim gives back what a big query left, but not the reserve: the first query
    after an idle spell reuses it too."""
    got = _run("""
import numpy as np
from common.gcheap import HEAP_RESERVE, freeze_startup_heap, release_freed_memory
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
freeze_startup_heap()
held = [np.ones(16 << 17) for _ in range(16)]  # 256 MiB
del held
release_freed_memory()
base = rss_mib()
held = [np.ones(4 << 17) for _ in range(HEAP_RESERVE // (5 << 20))]  # 4 MiB arrays, in the reserve
print(rss_mib() - base)
""")
    assert int(got) < 8, got


def test_a_thread_started_before_the_freeze_shares_the_kept_heap() -> None:
    """The CLI makes the malloc settings first (keep_freed_memory), before start-up starts any
    thread: a thread that allocated before them kept a glibc arena of its own, whose freed
    memory went back to the kernel at once (the store's block-loading threads had eight)."""
    code = THREAD_QUERIES.replace("if {settings}:\n    freeze_startup_heap()", "")
    code = code.replace("with ThreadPoolExecutor(1) as pool:\n",
                        "with ThreadPoolExecutor(1) as pool:\n"
                        "    pool.submit(np.ones, 1000).result()  # start-up's thread\n"
                        "    freeze_startup_heap()\n")
    assert "start-up's thread" in code and "if True" not in code
    first = "from common.gcheap import keep_freed_memory\nkeep_freed_memory()\n"
    assert int(_run(first + code.format(mib=2, count=40))) < 1_000
    assert int(_run(code.format(mib=2, count=40))) > 5_000  # settings after the thread's start


def _thread_arenas(pid: int) -> int:
    """glibc arenas of process ``pid`` besides the main one: each is a 64 MiB-aligned mapping of
    64 MiB, its used part read-write and the rest reserved (---p)."""
    heap = 64 << 20
    count, used = 0, None
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        anonymous = len(fields) == 5
        if anonymous and fields[1] == "rw-p" and start % heap == 0:
            used = start
        elif anonymous and fields[1] == "---p" and used is not None and end - used == heap:
            count += 1
            used = None
        else:
            used = None
    return count


def test_query_serving_processes_have_one_malloc_arena(tmp_path: Path) -> None:
    """``promring store`` and ``promring query`` make the malloc settings before start-up
    starts a thread, so every thread allocates from the main arena, whose freed memory is kept
    for the next query (before, the store's start-up threads had eight arenas of their own and
    the querier two, all giving freed memory back at once)."""
    from harness import query_process, store_process
    conf = tmp_path / "objstore.yml"
    conf.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path / 'bucket'}\n")
    (tmp_path / "bucket").mkdir()
    store = store_process(tmp_path, "store", conf).start()
    try:
        query = query_process(tmp_path, "query", [store.grpc]).start()
        try:
            import requests
            requests.get(query.url("http", "/api/v1/query"), params={"query": "up"}, timeout=30)
            assert [_thread_arenas(p.proc.pid) for p in (store, query)] == [0, 0]
        finally:
            query.stop()
    finally:
        store.stop()
