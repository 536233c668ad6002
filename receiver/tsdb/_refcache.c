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
 * Layout: the entries (ref, hash, bytes) sit in one arena in insertion order; a lookup first
 * tries the entry after the previous series' (senders repeat their order, so this is usually
 * it, and the walk is sequential in memory), then the hash table: open addressing, linear
 * probing, at most half full, backward-shift deletion, slots of (hash, arena offset). Removed
 * entries stay in the arena as garbage until they are half of it, then it is compacted. The
 * hash mixes 16 bytes per step with a 64x64->128 multiply, seeded per table (a random seed
 * from the caller) so a client cannot aim collisions at a known table. The GIL guards all
 * state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "refcache_api.h"

/* One cached label set in the arena: this header, then its bytes, padded to 8. */
typedef struct {
    int64_t ref;   /* -1: removed (garbage until the next compaction) */
    uint64_t hash;
    uint32_t len;  /* label bytes */
    uint32_t size; /* the whole entry */
} Entry;

typedef struct {
    uint64_t hash;
    uint64_t at;   /* arena offset of the entry + 1; 0: empty slot */
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    size_t cap;    /* 0 or a power of two */
    size_t count;
    /* Entries in insertion order: the series of a sender's requests usually come in the same
       order every time, so the entry after the last hit is the next series' first guess, and
       walking the arena in order is what the memory system fetches ahead best. */
    uint8_t *arena;
    size_t arena_len, arena_cap, garbage;
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

static inline Entry *entry_at(const RefCache *c, size_t off)
{
    return (Entry *)(c->arena + off);
}

static inline int entry_is(const Entry *e, const uint8_t *p, size_t n)
{
    return e->len == n && memcmp(e + 1, p, n) == 0;
}

/* Index of the slot holding exactly these bytes, or of the empty slot ending the probe. */
static size_t find_slot(const RefCache *c, uint64_t h, const uint8_t *p, size_t n)
{
    size_t mask = c->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const Slot *s = &c->slots[i];
        if (!s->at || (s->hash == h && entry_is(entry_at(c, s->at - 1), p, n)))
            return i;
    }
}

/* Arena offset of the live entry holding exactly these bytes, or -1. */
static int64_t find_entry(const RefCache *c, const uint8_t *p, size_t n)
{
    if (!c->count)
        return -1;
    const Slot *s = &c->slots[find_slot(c, span_hash(p, n, c->seed), p, n)];
    return s->at ? (int64_t)(s->at - 1) : -1;
}

static int64_t cache_lookup(PyObject *self, const uint8_t *p, size_t n)
{
    RefCache *c = (RefCache *)self;
    int64_t off = find_entry(c, p, n);
    return off < 0 ? -1 : entry_at(c, (size_t)off)->ref;
}

/* Entries removed since they were written are skipped when guessing; a few at most. */
#define GUESS_SKIP 4

static int cache_lookup_many(PyObject *self, Py_ssize_t n, const uint8_t *const *spans,
                             const size_t *lens, int64_t *refs)
{
    RefCache *c = (RefCache *)self;
    size_t next = SIZE_MAX;  /* arena offset after the previous series' entry */
    for (Py_ssize_t i = 0; i < n; i++) {
        refs[i] = -1;
        if (!c->count || !lens[i]) {
            next = SIZE_MAX;
            continue;
        }
        int64_t found = -1;
        for (int k = 0; k < GUESS_SKIP && next < c->arena_len; k++) {
            Entry *e = entry_at(c, next);
            if (e->ref >= 0) {
                if (entry_is(e, spans[i], lens[i]))
                    found = (int64_t)next;
                break;
            }
            next += e->size;
        }
        if (found < 0)
            found = find_entry(c, spans[i], lens[i]);
        if (found < 0) {
            next = SIZE_MAX;
            continue;
        }
        Entry *e = entry_at(c, (size_t)found);
        refs[i] = e->ref;
        next = (size_t)found + e->size;
    }
    return 0;
}

static uint64_t cache_generation(PyObject *self)
{
    return ((RefCache *)self)->generation;
}

/* Puts the entry at arena offset `off` into its slot (the table has room). */
static void place(RefCache *c, uint64_t h, size_t off)
{
    size_t mask = c->cap - 1, j = (size_t)h & mask;
    while (c->slots[j].at)
        j = (j + 1) & mask;
    c->slots[j].hash = h;
    c->slots[j].at = off + 1;
}

/* Takes `ns` (zeroed, `cap` slots) as the table and puts every live entry in it. */
static void fill_slots(RefCache *c, Slot *ns, size_t cap)
{
    PyMem_Free(c->slots);
    c->slots = ns;
    c->cap = cap;
    for (size_t off = 0; off < c->arena_len; off += entry_at(c, off)->size) {
        if (entry_at(c, off)->ref >= 0)
            place(c, entry_at(c, off)->hash, off);
    }
}

/* A table of `cap` slots holding every live entry (unchanged when memory runs out). */
static int rebuild_slots(RefCache *c, size_t cap)
{
    Slot *ns = PyMem_Calloc(cap, sizeof(Slot));
    if (!ns) {
        PyErr_NoMemory();
        return -1;
    }
    fill_slots(c, ns, cap);
    return 0;
}

/* Drops removed entries from the arena once they are half of it (order kept). */
static int compact(RefCache *c)
{
    if (c->garbage * 2 < c->arena_len || c->garbage < (64u << 10))
        return 0;
    size_t live = c->arena_len - c->garbage, cap = live + live / 2 + 1024;
    uint8_t *na = PyMem_Malloc(cap);
    Slot *ns = PyMem_Calloc(c->cap, sizeof(Slot));
    if (!na || !ns) {  /* nothing changed */
        PyMem_Free(na);
        PyMem_Free(ns);
        PyErr_NoMemory();
        return -1;
    }
    size_t len = 0;
    for (size_t off = 0; off < c->arena_len; off += entry_at(c, off)->size) {
        Entry *e = entry_at(c, off);
        if (e->ref >= 0) {
            memcpy(na + len, e, e->size);
            len += e->size;
        }
    }
    PyMem_Free(c->arena);
    c->arena = na;
    c->arena_len = len;
    c->arena_cap = cap;
    c->garbage = 0;
    fill_slots(c, ns, c->cap);
    return 0;
}

/* Empties slot i (its entry becomes garbage) and moves later members of its probe run back
   (no tombstones). */
static void delete_slot(RefCache *c, size_t i)
{
    size_t mask = c->cap - 1;
    Entry *e = entry_at(c, c->slots[i].at - 1);
    e->ref = -1;
    c->garbage += e->size;
    c->count--;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!c->slots[j].at)
            break;
        size_t home = (size_t)c->slots[j].hash & mask;
        /* Slot j may move to i when its home is not cyclically inside (i, j]. */
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            c->slots[i] = c->slots[j];
            i = j;
        }
    }
    c->slots[i].at = 0;
    c->slots[i].hash = 0;
}

/* Appends an entry for these bytes and puts it in the table. */
static int add_entry(RefCache *c, uint64_t h, const uint8_t *p, size_t n, int64_t ref)
{
    if ((c->count + 1) * 2 > c->cap && rebuild_slots(c, c->cap ? c->cap * 2 : 1024) < 0)
        return -1;
    size_t size = (sizeof(Entry) + n + 7) & ~(size_t)7;
    if (c->arena_len + size > c->arena_cap) {
        size_t cap = c->arena_cap ? c->arena_cap * 2 : (64u << 10);
        while (cap < c->arena_len + size)
            cap *= 2;
        uint8_t *na = PyMem_Realloc(c->arena, cap);
        if (!na) {
            PyErr_NoMemory();
            return -1;
        }
        c->arena = na;
        c->arena_cap = cap;
    }
    Entry *e = entry_at(c, c->arena_len);
    e->ref = ref;
    e->hash = h;
    e->len = (uint32_t)n;
    e->size = (uint32_t)size;
    memcpy(e + 1, p, n);
    place(c, h, c->arena_len);
    c->arena_len += size;
    c->count++;
    return 0;
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

static void clear_all(RefCache *c)
{
    PyMem_Free(c->slots);
    PyMem_Free(c->arena);
    c->slots = NULL;
    c->arena = NULL;
    c->cap = c->count = c->arena_len = c->arena_cap = c->garbage = 0;
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
        uint64_t h = span_hash(buf, (size_t)size, c->seed);
        const Slot *s = c->cap ? &c->slots[find_slot(c, h, buf, (size_t)size)] : NULL;
        if (s && s->at) {  /* known already: one label list, one ref */
            entry_at(c, s->at - 1)->ref = refs[i];
            continue;
        }
        if (add_entry(c, h, buf, (size_t)size, refs[i]) < 0)
            goto fail;
        added++;
    }
    PyMem_Free(buf);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(added);
fail:  /* out of memory: the cache is only a shortcut, the write that fills it must not fail */
    PyErr_Clear();
    PyMem_Free(buf);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(added);
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
            /* Out of memory: forget everything rather than keep an entry of a removed series. */
            PyErr_Clear();
            clear_all(c);
            removed = 1;
            break;
        }
        if (size < 0)
            continue;
        size_t at = find_slot(c, span_hash(buf, (size_t)size, c->seed), buf, (size_t)size);
        if (c->slots[at].at && entry_at(c, c->slots[at].at - 1)->ref == refs[i]) {
            delete_slot(c, at);
            removed++;
        }
    }
    if (removed)
        c->generation++;
    PyMem_Free(buf);
    PyBuffer_Release(&view);
    if (compact(c) < 0)
        PyErr_Clear();  /* the garbage stays until a later removal compacts */
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
    return PyLong_FromSize_t(c->cap * sizeof(Slot) + c->arena_cap);
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
     "skipped); returns how many entries were added. Out of memory, it stops early (never "
     "raises: the cache is a shortcut)."},
    {"remove", (PyCFunction)rc_remove, METH_VARARGS,
     "remove(keys, refs) -> int: forget the entries of these removed series (only where the "
     "entry holds that ref); bumps generation when any went. Out of memory, it forgets "
     "everything instead (never raises)."},
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
    "A head's series refs keyed by the raw remote-write bytes of their labels.", -1, NULL, NULL, NULL, NULL, NULL,
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
