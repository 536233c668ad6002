/*
 * _refcache: a head's series refs keyed by the raw remote-write bytes of a series' labels.
 *
 * Why: looking a series up by its canonical label key costs a Python bytes object, a UTF-8
 * check and a dict lookup per series and request. Senders encode a series' labels the same way
 * every time, so the decoder (receiver/_rwdecode.c, through the capsule in refcache_api.h)
 * hashes the bytes of a TimeSeries' leading run of Label fields and asks this table; a hit
 * gives the ref with no per-series Python work.
 *
 * What is stored: for each series a write resolved after the decoder validated its labels, the
 * canonical protobuf encoding of those labels (each Label as field 1 of TimeSeries: tag 0x0A,
 * minimal length, then name as field 1 and value as field 2, both non-empty), built from the
 * series' label key. That encoding is unique per label list, so there is one entry per live
 * series at most: memory is bounded by the head's series, not by what clients send. Another
 * encoding of the same labels (fields reordered, unknown fields, long varints) never hits and
 * takes the validating path, which finds the same ref by key. A hit compares the whole bytes,
 * never the hash alone, and only bytes that once passed validation are in the table.
 *
 * The head removes a series' entry when it garbage-collects the series and every removal bumps
 * ``generation``: refs a decoder looked up before a removal are not used (see Head).
 *
 * Table: open addressing, linear probing, at most half full, backward-shift deletion. The hash
 * mixes 16 bytes per step with a 64x64->128 multiply, seeded per table (a random seed from the
 * caller) so a client cannot aim collisions at a known table. The GIL guards all state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "refcache_api.h"

typedef struct {
    uint64_t hash;
    int64_t ref;   /* -1: empty slot */
    uint8_t *span; /* PyMem copy of the encoded labels */
    size_t len;
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    size_t cap;   /* 0 or a power of two */
    size_t count;
    size_t span_bytes;
    uint64_t seed;
    uint64_t generation;
} RefCache;

static PyTypeObject RefCacheType;

/* ------------------------------------------------------------------------------------------ */
/* Hashing                                                                                     */

static inline uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t mum(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

#define K0 0xa0761d6478bd642full
#define K1 0xe7037ed1a0b428dbull
#define K2 0x8ebc6af09c88c6e3ull
#define K3 0x589965cc75374cc3ull

static uint64_t span_hash(const uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t h = mum(seed ^ K0, (uint64_t)n ^ K1);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        h = mum(rd64(p + i) ^ K1, rd64(p + i + 8) ^ h);
    uint64_t a = 0, b = 0;
    size_t rest = n - i;
    if (rest >= 8) {
        a = rd64(p + i);
        memcpy(&b, p + i + 8, rest - 8);
    } else {
        memcpy(&a, p + i, rest);
    }
    return mum(mum(a ^ K2, b ^ h), (uint64_t)n ^ K3);
}

/* ------------------------------------------------------------------------------------------ */
/* Table                                                                                       */

/* Index of the slot holding exactly these bytes, or of the empty slot ending the probe. */
static size_t find_slot(const RefCache *c, uint64_t h, const uint8_t *p, size_t n)
{
    size_t mask = c->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const Slot *s = &c->slots[i];
        if (s->ref < 0 || (s->hash == h && s->len == n && memcmp(s->span, p, n) == 0))
            return i;
    }
}

static int64_t cache_lookup(PyObject *self, const uint8_t *p, size_t n)
{
    RefCache *c = (RefCache *)self;
    if (!c->count)
        return -1;
    return c->slots[find_slot(c, span_hash(p, n, c->seed), p, n)].ref;
}

static int cache_lookup_many(PyObject *self, Py_ssize_t n, const uint8_t *const *spans,
                             const size_t *lens, int64_t *refs)
{
    RefCache *c = (RefCache *)self;
    for (Py_ssize_t i = 0; i < n; i++)
        refs[i] = -1;
    if (!c->count || n <= 0)
        return 0;
    uint64_t *hashes = PyMem_Malloc((size_t)n * sizeof(uint64_t));
    if (!hashes) {
        PyErr_NoMemory();
        return -1;
    }
    size_t mask = c->cap - 1;
    /* 1: hash every span, fetch its home slot. */
    for (Py_ssize_t i = 0; i < n; i++) {
        hashes[i] = span_hash(spans[i], lens[i], c->seed);
        __builtin_prefetch(&c->slots[(size_t)hashes[i] & mask]);
    }
    /* 2: the first slot with the same hash (refs[i] holds its index meanwhile): fetch its bytes. */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!lens[i])
            continue;
        for (size_t j = (size_t)hashes[i] & mask;; j = (j + 1) & mask) {
            const Slot *s = &c->slots[j];
            if (s->ref < 0)
                break;
            if (s->hash == hashes[i]) {
                __builtin_prefetch(s->span);
                refs[i] = (int64_t)j;
                break;
            }
        }
    }
    /* 3: compare whole bytes (a hash match alone is never trusted); probe on if they differ. */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (refs[i] < 0)
            continue;
        const Slot *s = &c->slots[refs[i]];
        if (s->len == lens[i] && memcmp(s->span, spans[i], lens[i]) == 0)
            refs[i] = s->ref;
        else
            refs[i] = c->slots[find_slot(c, hashes[i], spans[i], lens[i])].ref;
    }
    PyMem_Free(hashes);
    return 0;
}

static uint64_t cache_generation(PyObject *self)
{
    return ((RefCache *)self)->generation;
}

static Slot *new_slots(size_t cap)
{
    Slot *s = PyMem_Malloc(cap * sizeof(Slot));
    if (!s) {
        PyErr_NoMemory();
        return NULL;
    }
    for (size_t i = 0; i < cap; i++) {
        s[i].ref = -1;
        s[i].span = NULL;
        s[i].len = 0;
        s[i].hash = 0;
    }
    return s;
}

static int resize(RefCache *c, size_t cap)
{
    Slot *ns = new_slots(cap);
    if (!ns)
        return -1;
    size_t mask = cap - 1;
    for (size_t i = 0; i < c->cap; i++) {
        Slot *s = &c->slots[i];
        if (s->ref < 0)
            continue;
        size_t j = (size_t)s->hash & mask;
        while (ns[j].ref >= 0)
            j = (j + 1) & mask;
        ns[j] = *s;
    }
    PyMem_Free(c->slots);
    c->slots = ns;
    c->cap = cap;
    return 0;
}

/* Empties slot i and moves later members of its probe run back (no tombstones). */
static void delete_slot(RefCache *c, size_t i)
{
    size_t mask = c->cap - 1;
    c->span_bytes -= c->slots[i].len;
    PyMem_Free(c->slots[i].span);
    c->count--;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (c->slots[j].ref < 0)
            break;
        size_t home = (size_t)c->slots[j].hash & mask;
        /* Slot j may move to i when its home is not cyclically inside (i, j]. */
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            c->slots[i] = c->slots[j];
            i = j;
        }
    }
    c->slots[i].ref = -1;
    c->slots[i].span = NULL;
    c->slots[i].len = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Canonical label bytes from a label key                                                      */

static int read_uvarint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    uint64_t x = 0;
    const uint8_t *p = *pp;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (p >= end)
            return -1;
        uint8_t b = *p++;
        x |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *out = x;
            *pp = p;
            return 0;
        }
    }
    return -1;
}

static inline size_t uvarint_size(uint64_t x)
{
    size_t n = 1;
    while (x >= 0x80) {
        x >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *put_uvarint(uint8_t *o, uint64_t x)
{
    while (x >= 0x80) {
        *o++ = (uint8_t)(x | 0x80);
        x >>= 7;
    }
    *o++ = (uint8_t)x;
    return o;
}

/* Walks a label key (uvarint name length, name, uvarint value length, value, ...): with
   out == NULL returns the size of its canonical TimeSeries.labels encoding, else writes it.
   -1 when the key is malformed or a name or value is empty (such labels are never valid). */
static Py_ssize_t encode_span(const uint8_t *k, size_t kn, uint8_t *out)
{
    const uint8_t *p = k, *end = k + kn;
    size_t size = 0;
    if (kn == 0)
        return -1;
    while (p < end) {
        uint64_t nl, vl;
        if (read_uvarint(&p, end, &nl) < 0 || nl == 0 || nl > (uint64_t)(end - p))
            return -1;
        const uint8_t *name = p;
        p += nl;
        if (read_uvarint(&p, end, &vl) < 0 || vl == 0 || vl > (uint64_t)(end - p))
            return -1;
        const uint8_t *value = p;
        p += vl;
        uint64_t inner = 1 + uvarint_size(nl) + nl + 1 + uvarint_size(vl) + vl;
        size += 1 + uvarint_size(inner) + inner;
        if (out) {
            *out++ = 0x0A;
            out = put_uvarint(out, inner);
            *out++ = 0x0A;
            out = put_uvarint(out, nl);
            memcpy(out, name, nl);
            out += nl;
            *out++ = 0x12;
            out = put_uvarint(out, vl);
            memcpy(out, value, vl);
            out += vl;
        }
    }
    return (Py_ssize_t)size;
}

/* Label sets longer than this are not cached (they take the validating path every time): a
   few huge label sets must not hold much memory. */
#define MAX_SPAN (16 << 10)

/* The canonical label bytes of `key` into the growable scratch *buf: their length, -1 when
   the key has none (not bytes, malformed, an empty name or value), -2 with MemoryError set. */
static Py_ssize_t span_into(PyObject *key, uint8_t **buf, size_t *cap)
{
    if (!PyBytes_Check(key))
        return -1;
    const uint8_t *k = (const uint8_t *)PyBytes_AS_STRING(key);
    size_t kn = (size_t)PyBytes_GET_SIZE(key);
    Py_ssize_t size = encode_span(k, kn, NULL);
    if (size < 0 || size > MAX_SPAN)
        return -1;
    if ((size_t)size > *cap) {
        uint8_t *nb = PyMem_Realloc(*buf, (size_t)size);
        if (!nb) {
            PyErr_NoMemory();
            return -2;
        }
        *buf = nb;
        *cap = (size_t)size;
    }
    encode_span(k, kn, *buf);
    return size;
}

/* ------------------------------------------------------------------------------------------ */
/* Python methods                                                                              */

/* Checks (keys list, int64 refs buffer) of equal length; fills *view. */
static int keys_and_refs(PyObject *args, const char *fmt, PyObject **keys, Py_buffer *view)
{
    if (!PyArg_ParseTuple(args, fmt, &PyList_Type, keys, view))
        return -1;
    if (view->len != PyList_GET_SIZE(*keys) * (Py_ssize_t)sizeof(int64_t)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "need one int64 ref per key");
        return -1;
    }
    return 0;
}

static PyObject *rc_insert(RefCache *c, PyObject *args)
{
    PyObject *keys;
    Py_buffer view;
    if (keys_and_refs(args, "O!y*:insert", &keys, &view) < 0)
        return NULL;
    const int64_t *refs = view.buf;
    Py_ssize_t n = PyList_GET_SIZE(keys), added = 0;
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (refs[i] < 0)
            continue;
        Py_ssize_t size = span_into(PyList_GET_ITEM(keys, i), &buf, &buf_cap);
        if (size == -2)
            goto fail;
        if (size < 0)
            continue;
        if ((c->count + 1) * 2 > c->cap && resize(c, c->cap ? c->cap * 2 : 1024) < 0)
            goto fail;
        uint64_t h = span_hash(buf, (size_t)size, c->seed);
        Slot *s = &c->slots[find_slot(c, h, buf, (size_t)size)];
        if (s->ref >= 0) {  /* known already: one label list, one ref */
            s->ref = refs[i];
            continue;
        }
        uint8_t *copy = PyMem_Malloc((size_t)size);
        if (!copy) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(copy, buf, (size_t)size);
        s->hash = h;
        s->ref = refs[i];
        s->span = copy;
        s->len = (size_t)size;
        c->count++;
        c->span_bytes += (size_t)size;
        added++;
    }
    PyMem_Free(buf);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(added);
fail:
    PyMem_Free(buf);
    PyBuffer_Release(&view);
    return NULL;
}

static PyObject *rc_remove(RefCache *c, PyObject *args)
{
    PyObject *keys;
    Py_buffer view;
    if (keys_and_refs(args, "O!y*:remove", &keys, &view) < 0)
        return NULL;
    const int64_t *refs = view.buf;
    Py_ssize_t n = PyList_GET_SIZE(keys), removed = 0;
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    for (Py_ssize_t i = 0; i < n && c->count; i++) {
        Py_ssize_t size = span_into(PyList_GET_ITEM(keys, i), &buf, &buf_cap);
        if (size == -2) {
            if (removed)
                c->generation++;
            PyMem_Free(buf);
            PyBuffer_Release(&view);
            return NULL;
        }
        if (size < 0)
            continue;
        size_t at = find_slot(c, span_hash(buf, (size_t)size, c->seed), buf, (size_t)size);
        if (c->slots[at].ref >= 0 && c->slots[at].ref == refs[i]) {
            delete_slot(c, at);
            removed++;
        }
    }
    if (removed)
        c->generation++;
    PyMem_Free(buf);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(removed);
}

static PyObject *rc_get(RefCache *c, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int64_t ref = cache_lookup((PyObject *)c, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromLongLong(ref);
}

static PyObject *rc_span_of(PyObject *cls, PyObject *arg)
{
    (void)cls;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "span_of() needs a bytes label key");
        return NULL;
    }
    const uint8_t *k = (const uint8_t *)PyBytes_AS_STRING(arg);
    size_t kn = (size_t)PyBytes_GET_SIZE(arg);
    Py_ssize_t size = encode_span(k, kn, NULL);
    if (size < 0)
        Py_RETURN_NONE;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out)
        encode_span(k, kn, (uint8_t *)PyBytes_AS_STRING(out));
    return out;
}

static void clear_all(RefCache *c)
{
    for (size_t i = 0; i < c->cap; i++)
        PyMem_Free(c->slots[i].span);
    PyMem_Free(c->slots);
    c->slots = NULL;
    c->cap = c->count = c->span_bytes = 0;
}

static PyObject *rc_clear(RefCache *c, PyObject *unused)
{
    (void)unused;
    clear_all(c);
    c->generation++;
    Py_RETURN_NONE;
}

static PyObject *rc_memory_bytes(RefCache *c, PyObject *unused)
{
    (void)unused;
    return PyLong_FromSize_t(c->cap * sizeof(Slot) + c->span_bytes);
}

static PyObject *rc_get_generation(RefCache *c, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(c->generation);
}

static Py_ssize_t rc_len(RefCache *c)
{
    return (Py_ssize_t)c->count;
}

static int rc_init(RefCache *c, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"seed", NULL};
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|K:RefCache", kwlist, &seed))
        return -1;
    clear_all(c);
    c->seed = seed;
    return 0;
}

static void rc_dealloc(RefCache *c)
{
    clear_all(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyMethodDef rc_methods[] = {
    {"insert", (PyCFunction)rc_insert, METH_VARARGS,
     "insert(keys, refs) -> int: remember each validated label key's canonical remote-write "
     "label bytes under its int64 ref (refs < 0 and keys with empty names or values are "
     "skipped); returns how many entries were added."},
    {"remove", (PyCFunction)rc_remove, METH_VARARGS,
     "remove(keys, refs) -> int: forget the entries of these removed series (only where the "
     "entry holds that ref); bumps generation when any went."},
    {"get", (PyCFunction)rc_get, METH_O, "get(span) -> int: the ref stored for exactly these bytes, or -1."},
    {"span_of", (PyCFunction)rc_span_of, METH_O | METH_CLASS,
     "span_of(key) -> bytes | None: the canonical TimeSeries.labels bytes of a label key."},
    {"clear", (PyCFunction)rc_clear, METH_NOARGS, "clear(): forget everything (bumps generation)."},
    {"memory_bytes", (PyCFunction)rc_memory_bytes, METH_NOARGS, "memory_bytes() -> int"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef rc_getset[] = {
    {"generation", (getter)rc_get_generation, NULL,
     "bumped by every removal: refs looked up under an older generation may be stale", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods rc_as_seq = {.sq_length = (lenfunc)rc_len};

static PyTypeObject RefCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "receiver.tsdb._refcache.RefCache",
    .tp_basicsize = sizeof(RefCache),
    .tp_dealloc = (destructor)rc_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RefCache(seed=0): series refs by the canonical remote-write bytes of their labels.",
    .tp_methods = rc_methods,
    .tp_getset = rc_getset,
    .tp_as_sequence = &rc_as_seq,
    .tp_init = (initproc)rc_init,
    .tp_new = PyType_GenericNew,
};

static RefCacheAPI api = {&RefCacheType, cache_lookup, cache_lookup_many, cache_generation};

static struct PyModuleDef refcache_module = {
    PyModuleDef_HEAD_INIT, "_refcache",
    "A head's series refs keyed by the raw remote-write bytes of their labels.", -1, NULL,
};

PyMODINIT_FUNC PyInit__refcache(void)
{
    if (PyType_Ready(&RefCacheType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&refcache_module);
    if (!m)
        return NULL;
    Py_INCREF(&RefCacheType);
    if (PyModule_AddObject(m, "RefCache", (PyObject *)&RefCacheType) < 0) {
        Py_DECREF(&RefCacheType);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *cap = PyCapsule_New(&api, REFCACHE_CAPSULE, NULL);
    if (!cap || PyModule_AddObject(m, "_C_API", cap) < 0) {
        Py_XDECREF(cap);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
