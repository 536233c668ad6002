/*
 * The C interface of receiver.tsdb._refcache.RefCache for other extensions (the remote-write
 * decoder), published as a capsule: they look up a series' ref by the raw bytes of its labels
 * without building a Python object per series.
 */
#ifndef PROMRING_REFCACHE_API_H
#define PROMRING_REFCACHE_API_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#define REFCACHE_CAPSULE "receiver.tsdb._refcache._C_API"

typedef struct {
    PyTypeObject *type;
    /* The ref stored for exactly these bytes, or -1. ``cache`` must be of ``type``. */
    int64_t (*lookup)(PyObject *cache, const uint8_t *span, size_t len);
    /* The same for the n spans of one request, in order (each series' entry is first looked
       for right after the previous one's). A span of length 0 gets -1. Returns 0, or -1 with
       a Python exception set. */
    int (*lookup_many)(PyObject *cache, Py_ssize_t n, const uint8_t *const *spans,
                       const size_t *lens, int64_t *refs);
    /* Bumped whenever an entry is removed: refs looked up before may name dropped series. */
    uint64_t (*generation)(PyObject *cache);
} RefCacheAPI;

#endif
