"""Garbage-collector settings for query-serving processes (``promring query`` / ``store``).

A query builds tens of thousands of short-lived tuples and lists (label sets, chunk lists,
frames). With CPython's default thresholds that triggers young collections every 700
allocations and, every hundred of them, a full collection that walks every object the
process holds -- ~60,000 from the imported modules alone, 50-100 ms of CPU at random points
of random queries (measured on the scale benchmark's store: a third of a 24 h query).

After start-up, everything alive is long-lived (modules, configuration, loaded blocks'
index-headers): it is collected once and moved to the permanent generation (``gc.freeze``),
so collections never walk it again, and the young generation is made large enough that a
query's objects mostly die by reference counting before a collection sees them. Cyclic
garbage is still collected, just in fewer, larger batches (bounded by ``YOUNG_THRESHOLD``
container allocations).

The same goes for memory: a large query allocates and frees hundreds of MB (chunk bytes, frames,
[series x steps] arrays). With glibc's defaults, blocks above its (adaptive) mmap threshold are
mapped and unmapped per allocation and a heap top over 128 KiB is given back at once, so every
query faults all of it in again, page by page (measured: ~20,000 page faults and 15 % of a
scale-4 query's CPU in the kernel). Blocks of any size now come from the heap (glibc would
still map every block past 32 MiB, its largest threshold, on its own: at scale 4 a query's
decoded columns are 45 MiB and more each, and faulting them in again cost ~200 ms of system
time per `histogram_quantile` query), and freed heap is kept for the next query however large
its top grows (glibc's own trimming is off). So the heap keeps what the biggest query needed;
a free block in it is reused by the next query. A cap of 1 GiB was not enough: a scale-4 24 h
`histogram_quantile` decodes 62 M samples into two 497 MiB columns, so the heap top went back
to the kernel after every such query and the next one faulted 1.1 GiB in again -- on this
benchmark's VM at ~140 MiB/s (its fresh guest pages are zeroed slowly), 7.4 s of the querier's
9 s of CPU per query.

Those thresholds only hold in glibc's main arena, though: a thread's own arena (the querier
evaluates in worker threads) grows in 64 MiB sub-heaps that are unmapped as soon as they are
empty, so at scale 4 every query mapped a fresh sub-heap and faulted it in again (~7,000 page
faults, 15 % of the querier's CPU in the kernel, for `sum by (job) (rate(x[5m]))`). Every
thread therefore allocates from the main arena (``ARENA_MAX``); the GIL already serializes
nearly all allocations, so the arenas' lock is not contended.

Python's own small-object heap (obmalloc arenas, every tuple, list, int and str a query
makes) is outside glibc's heap: its arenas come from common._hugearena, which gave a huge page
back as soon as all arenas in it were free. A big query frees hundreds of MiB of small objects
at its end, so the next one faulted them in and had the kernel zero them again (a query
building a million small tuples: ~75 huge-page faults, 150 MiB zeroed, each time). Free huge
pages are now kept resident too (``_hugearena.keep``) until the idle trim.

What is kept is given back once the process goes idle (``trim_when_idle``: a whole interval
with next to no CPU after it worked), as Go's scavenger returns a quiet Prometheus's heap: a
burst of big queries does not leave the process at its peak size for good -- all but a
reserve (``HEAP_RESERVE`` of glibc's heap, ``OBJECT_RESERVE`` of small-object arenas), which
is also faulted in once at start-up (``reserve_memory``). Go's runtime likewise keeps its heap
goal resident (twice the live heap by default) and reuses it. Without a reserve the first
queries after a start or an idle spell paid for every page they touched: on the benchmark's
VM (its free guest pages are reported back to the host, so a fresh page costs a host fault
too) the first `sum by (job) (rate(x[5m]))` over 1 h at scale 1 took 250 ms instead of 40,
more than half of it the kernel faulting in ~9,000 pages in store and querier.

The settings must be made before the process starts any thread (``keep_freed_memory`` first
thing): a thread that allocated before them keeps an arena of its own, which gives its freed
memory back at once -- the store's block-loading threads had eight.
"""
from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import time
from typing import Awaitable, Callable

from common import _hugearena

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 50_000  # container allocations between young collections (CPython: 700)
OLDER_THRESHOLDS = (20, 20)
# glibc mallopt parameters (malloc.h) and the values set for query-serving processes.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -3, -4, -8
MMAP_THRESHOLD = 32 << 20  # glibc's maximum: bigger blocks would be mapped (and unmapped) alone
MMAP_MAX = 0  # ... so no block is: all come from the heap (glibc still maps if the heap cannot grow)
# freed memory at the heap top is never given back by free() (glibc: -1 turns trimming off;
# trim_when_idle gives it back): a scale-4 24 h histogram_quantile frees 1.1 GiB at its end
TRIM_THRESHOLD = -1
ARENA_MAX = 1  # threads started later share the main arena, whose freed top is kept
# freed memory kept resident through an idle trim, and faulted in at start-up: what the first
# queries of a dashboard at the scale benchmark's scale 1 need without faulting
HEAP_RESERVE = 96 << 20
OBJECT_RESERVE = 32 << 20
OBJECT_SIZE = 200  # the objects faulting the small-object reserve in: fresh, under 512 bytes
IDLE_TRIM_INTERVAL_S = 30.0  # a whole interval with less CPU than this fraction of it is idle
IDLE_CPU_FRACTION = 0.01


def freeze_startup_heap() -> bool:
    """Collect what start-up left behind, freeze the rest, and widen the young generation.
    Call once, when a long-running process has finished starting. True when freed memory is
    now kept (glibc), so ``trim_when_idle`` should run."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    _hugearena.keep(True)
    if not keep_freed_memory():
        return False
    release_freed_memory()  # what start-up freed, past the reserve
    reserve_memory()
    return True


def reserve_memory() -> None:
    """Fault in HEAP_RESERVE bytes of glibc's heap and OBJECT_RESERVE bytes of small-object
    arenas and free them again: kept (the settings above), the first queries reuse them
    instead of faulting pages in one by one."""
    malloc = _libc_function("malloc", [ctypes.c_size_t], ctypes.c_void_p)
    free = _libc_function("free", [ctypes.c_void_p], None)
    block = malloc(HEAP_RESERVE) if malloc is not None and free is not None else None
    if block:
        ctypes.memset(block, 0, HEAP_RESERVE)
        free(block)
    held = [bytes(OBJECT_SIZE) for _ in range(OBJECT_RESERVE // (OBJECT_SIZE + 40))]  # +headers
    del held


def _libc_function(name: str, argtypes: list, restype=ctypes.c_int):
    """The C library's ``name`` (returning an int unless ``restype`` says otherwise), or None
    where it has none (not glibc)."""
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = argtypes, restype
    return fn


def release_freed_memory() -> bool:
    """Give the free pages of the heap back to the kernel but for the reserve (glibc's
    malloc_trim: the top past HEAP_RESERVE and whole free pages inside; Python's free
    small-object arenas by huge page past OBJECT_RESERVE); False where nothing was released."""
    arenas = _hugearena.release(OBJECT_RESERVE)
    malloc_trim = _libc_function("malloc_trim", [ctypes.c_size_t])
    return (malloc_trim is not None and malloc_trim(HEAP_RESERVE) == 1) or arenas > 0


async def trim_when_idle(interval_s: float = IDLE_TRIM_INTERVAL_S,
                         cpu: Callable[[], float] = time.process_time,
                         trim: Callable[[], object] = release_freed_memory,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Run until cancelled: after an interval with work, the first whole interval of idleness
    (less than IDLE_CPU_FRACTION of it in CPU, all threads) releases the kept memory, once, in
    a worker thread (the trim walks the heap; the loop goes on). Busy processes keep reusing
    their freed memory; an idle one shrinks back."""
    last = cpu()
    trimmed = True  # nothing to give back before the first work
    while True:
        await sleep(interval_s)
        now = cpu()
        if now - last > interval_s * IDLE_CPU_FRACTION:
            trimmed = False
        elif not trimmed:
            await asyncio.to_thread(trim)
            trimmed = True
            now = cpu()  # the trim's own CPU is not work
        last = now


def keep_freed_memory() -> bool:
    """Make glibc malloc reuse freed memory instead of returning it to the kernel after every
    query (see the module docstring); False where the C library has no mallopt (not glibc)."""
    mallopt = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int])
    if mallopt is None:
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and \
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and mallopt(M_ARENA_MAX, ARENA_MAX) == 1 \
        and mallopt(M_MMAP_MAX, MMAP_MAX) == 1
    if not ok:
        log.warning("mallopt refused the malloc thresholds; freed memory goes back to the kernel")
    return ok
