/* Python's small-object heap (obmalloc arenas) carved out of 2 MiB-aligned regions marked
   MADV_HUGEPAGE, so a big heap (a head with a million series is mostly small objects) sits in
   transparent huge pages: the kernel tears such a process down several times faster at exit
   (a 2 MiB page is freed as one, not as 512), and big dicts miss the TLB less.

   Arenas are handed out by bumping a pointer through a region; freed ones are reused first.
   A huge page goes back to the kernel (MADV_DONTNEED) once every arena in it is free -- never a
   part of one, which would split it into 4 KiB pages for good. Calls come from obmalloc under
   the GIL. Arenas made before enable() (or of another size) stay with the previous allocator.

   keep(True) (query-serving processes, common/gcheap.py) keeps free huge pages resident instead:
   a big query frees hundreds of MiB of small objects, and giving them back made the next one
   fault them in and have the kernel zero them again; release(keep) gives them back once idle,
   all but a reserve of `keep` bytes, whose arenas are then handed out first. */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)
#define REGION ((size_t)64 << 20)
#define MAX_REGIONS 4096 /* 256 GiB of arenas; past that the previous allocator serves */

static PyObjectArenaAllocator prev;
#define PAGES_PER_REGION (REGION / HUGE_PAGE)
static char *regions[MAX_REGIONS];
static uint8_t free_in_page[MAX_REGIONS][PAGES_PER_REGION]; /* free arenas per huge page */
static int n_regions;
static char *bump, *bump_end;
static void **free_arenas; /* a stack kept outside the arenas (writing into one would fault it in) */
static size_t n_free, cap_free;
static size_t arena_size;
static int installed;
static int keep_free_pages; /* free huge pages stay resident until release() */

static uint8_t dropped[MAX_REGIONS][PAGES_PER_REGION]; /* given back by the last release() */

/* The region and the huge page in it that hold `p`: 1, or 0 if `p` is not ours. */
static int page_of(const char *p, int *region, size_t *page) {
    for (int i = n_regions - 1; i >= 0; i--)
        if (p >= regions[i] && p < regions[i] + REGION) {
            *region = i;
            *page = (size_t)(p - regions[i]) / HUGE_PAGE;
            return 1;
        }
    return 0;
}

/* The free-arena counter of the huge page holding `p`, or NULL if `p` is not ours. */
static uint8_t *page_counter(const char *p) {
    int i;
    size_t j;
    return page_of(p, &i, &j) ? &free_in_page[i][j] : NULL;
}

/* Whether the last release() gave back the huge page holding free arena `p`. */
static int was_dropped(const char *p) {
    int i;
    size_t j;
    return page_of(p, &i, &j) && dropped[i][j];
}

static int new_region(void) {
    if (n_regions == MAX_REGIONS) return -1;
    char *raw = mmap(NULL, REGION + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return -1;
    char *base = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (base > raw) munmap(raw, (size_t)(base - raw));
    size_t tail = (size_t)(raw + REGION + HUGE_PAGE - (base + REGION));
    if (tail) munmap(base + REGION, tail);
#ifdef MADV_HUGEPAGE
    madvise(base, REGION, MADV_HUGEPAGE); /* best effort: "never" or no THP leaves 4 KiB pages */
#endif
    regions[n_regions++] = base;
    bump = base;
    bump_end = base + REGION;
    return 0;
}

static void *arena_alloc(void *ctx, size_t size) {
    if (arena_size == 0 && size && HUGE_PAGE % size == 0) arena_size = size;
    if (size != arena_size) return prev.alloc(prev.ctx, size);
    if (n_free) {
        void *p = free_arenas[--n_free];
        (*page_counter(p))--;
        return p;
    }
    if (bump + size > bump_end && new_region() < 0) return prev.alloc(prev.ctx, size);
    void *p = bump;
    bump += size;
    return p;
}

static void arena_free(void *ctx, void *p, size_t size) {
    uint8_t *counter = size == arena_size ? page_counter(p) : NULL;
    if (!counter) {
        prev.free(prev.ctx, p, size);
        return;
    }
    if (n_free == cap_free) {
        size_t cap = cap_free ? 2 * cap_free : 256;
        void **grown = realloc(free_arenas, cap * sizeof *grown);
        if (!grown) return; /* keep the arena mapped but unused: only memory is lost */
        free_arenas = grown;
        cap_free = cap;
    }
    free_arenas[n_free++] = p;
    if (++*counter == HUGE_PAGE / arena_size && !keep_free_pages) /* the whole huge page is free */
        madvise((void *)((uintptr_t)p & ~(uintptr_t)(HUGE_PAGE - 1)), HUGE_PAGE, MADV_DONTNEED);
}

static PyObject *py_enable(PyObject *self, PyObject *unused) {
    if (!installed) {
        PyObjectArenaAllocator mine = {NULL, arena_alloc, arena_free};
        PyObject_GetArenaAllocator(&prev);
        PyObject_SetArenaAllocator(&mine);
        installed = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *py_keep(PyObject *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    keep_free_pages = on;
    Py_RETURN_NONE;
}

/* Every huge page whose arenas are all free goes back to the kernel, except the first
   `keep` bytes of them (a reserve the next query reuses without faulting it in again); the
   bytes given back. The free-arena stack is then reordered so that arenas of resident pages
   are handed out before those of pages just given back. Called with the GIL held, so no arena
   is handed out or freed meanwhile. */
static PyObject *py_release(PyObject *self, PyObject *args) {
    Py_ssize_t keep = 0;
    if (!PyArg_ParseTuple(args, "|n:release", &keep)) return NULL;
    size_t released = 0, kept = 0;
    for (int i = 0; arena_size && i < n_regions; i++)
        for (size_t j = 0; j < PAGES_PER_REGION; j++) {
            dropped[i][j] = 0;
            if (free_in_page[i][j] != HUGE_PAGE / arena_size) continue;
            if (kept + HUGE_PAGE <= (size_t)(keep > 0 ? keep : 0)) {
                kept += HUGE_PAGE;
            } else if (madvise(regions[i] + j * HUGE_PAGE, HUGE_PAGE, MADV_DONTNEED) == 0) {
                released += HUGE_PAGE;
                dropped[i][j] = 1;
            }
        }
    void **order = n_free ? malloc(n_free * sizeof *order) : NULL;
    if (order) { /* a stable partition: arenas of given-back pages at the bottom of the stack */
        size_t bottom = 0;
        for (size_t k = 0; k < n_free; k++)
            if (was_dropped(free_arenas[k])) order[bottom++] = free_arenas[k];
        for (size_t k = 0, top = bottom; k < n_free; k++)
            if (!was_dropped(free_arenas[k])) order[top++] = free_arenas[k];
        memcpy(free_arenas, order, n_free * sizeof *order);
        free(order);
    }
    return PyLong_FromSize_t(released);
}

static PyObject *py_stats(PyObject *self, PyObject *unused) {
    return Py_BuildValue("{s:i,s:n,s:n}", "regions", n_regions, "arena_bytes", (Py_ssize_t)arena_size,
                         "free_arenas", (Py_ssize_t)n_free);
}

static PyMethodDef methods[] = {
    {"enable", py_enable, METH_NOARGS, "enable(): new obmalloc arenas come from huge-page regions (idempotent)."},
    {"keep", py_keep, METH_O, "keep(on): free huge pages stay resident (True) or go back at once."},
    {"release", py_release, METH_VARARGS, "release(keep=0) -> bytes of free huge pages given back (all but keep bytes of them)."},
    {"stats", py_stats, METH_NOARGS, "stats() -> {regions, arena_bytes, free_arenas}."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_hugearena", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__hugearena(void) { return PyModule_Create(&moduledef); }
