/* The cold one-series Series call's fast path (store/coldseries.py's series_many) in two C
 * steps around its one batch of ranged reads.
 *
 * Why C: a selection never asked before (one series in each block, its series entries cached
 * by the dashboard's broad query, its chunks not) cost ~129 us of CPU per call after idle, of
 * which ~55 us were the Python glue between the C steps (lists, maps, zips, slices and tuples
 * built to hand one step's result to the next), expensive when the CPU caches are cold. Here
 * the same C steps run in the same order on the same objects, called through the Python
 * callables the Python path uses (the functions looked up in coldseries's namespace at each
 * call, so a test's monkeypatch reaches both paths); only the glue is gone.
 *
 * plan_one_each(blocks, refs, cache, opts[, read]) -> None | (reads, state)
 *   Every check first, with nothing observable done: every block selects at most one series
 *   (some one), its series entry cached, its entry decoded with one or more chunks in
 *   ascending order, its label set decoded, all of its chunks in one real segment and those
 *   not cached in one read (a block whose chunks are all cached reads nothing: a range that
 *   covers the oldest block in part leaves a broad query's chunks of it cached in part).
 *   Anything else -- or any error on the way -- is None: the Python path runs as it always
 *   has. Then the two lookups are made as the Python path makes them (store._lru.lookup,
 *   every key counted, the entries found moved to the newest end), and the read requests
 *   (bucket, (object, start, length)) are returned with the state for finish_one_each:
 *   (todo, raws, chunk keys, chunk values, private part). With `read` true the series entries
 *   were just looked up (and missed), read and kept by the Python path: only the chunks are
 *   looked up here.
 *
 * finish_one_each(state, bufs) -> answers | 1 | 2
 *   After the reads: each read split into its chunk records, those put in the cache in one
 *   insert, all of them checked in one read_chunks call, and each block's answer built, as
 *   the Python path builds it. 1: a read failed or did not hold all its records whole (nothing done: the
 *   Python path takes the reads from there); 2: the records are cached but one is broken or of
 *   another encoding (the Python path goes on block by block from them).
 *
 * Every length and offset of what the decoders hand back is checked before it is used. Only
 * the CPython C API is used. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static const char *const NAMES[] = {
    "ulid", "header", "ext_labels", "bucket", "_segs", "_segment", "_buf", "_sym_base",
    "_sym_pos", "_d", "_requests", "_hits", "_types", "_m", "size", "max_bytes", "added",
    "evicted", "counts", "max_gap", "max_range", "series", "chunks", "LRUCache",
    "ENCODING_XOR", "decode_series_batch", "read_chunks", "item_reads", "split_items",
    "merge_external",
};
enum {
    ULID, HEADER, EXT_LABELS, BUCKET, SEGS, SEGMENT, BUF, SYM_BASE, SYM_POS, D, REQUESTS, HITS,
    TYPES, M, SIZE, MAX_BYTES, ADDED, EVICTED, COUNTS, MAX_GAP, MAX_RANGE, SERIES, CHUNKS,
    LRU_CACHE, ENCODING_XOR, DECODE_SERIES_BATCH, READ_CHUNKS, ITEM_READS, SPLIT_ITEMS,
    MERGE_EXTERNAL, N_NAMES
};
static PyObject *str[N_NAMES];

/* bind()'s: coldseries's namespace, store._lru's two steps, the index header's label-set
 * decoder, the cache's per-entry overhead and store.block.SMALL_ITEMS. */
static PyObject *ns, *lru_lookup, *lru_put_many, *label_sets, *entry_overhead;
static Py_ssize_t small_items;
/* lookup's "every key" mode (LRUCache.get_many's); split_items's chunk framing
 * (store.block._ITEM_KINDS["chunks"]) */
static PyObject *zero, *kind_chunks;

/* coldseries's current value of a name (borrowed), or NULL with an error set. */
static PyObject *from_ns(int name) {
    PyObject *v = PyDict_GetItemWithError(ns, str[name]);
    if (v == NULL && !PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, str[name]);
    return v;
}

static PyObject *call(PyObject *f, PyObject *const *args, size_t n) {
    return PyObject_Vectorcall(f, args, n, NULL);
}

/* coldseries's function `name` called (new reference), or NULL with an error set. */
static PyObject *call_ns(int name, PyObject *const *args, size_t n) {
    PyObject *f = from_ns(name);
    return f ? PyObject_Vectorcall(f, args, n, NULL) : NULL;
}

/* A little-endian host's native int64 or int32 array format ("l", "q", "=q", "i", ...):
 * the refs numpy arrays of a selection; 0 for anything else. */
static int int_format(const char *f, Py_ssize_t itemsize) {
    if (f == NULL) return 0;
    if (*f == '@' || *f == '=' || (PY_LITTLE_ENDIAN && *f == '<')) f++;
    if (f[0] == '\0' || f[1] != '\0') return 0;
    if (itemsize == 8) return f[0] == 'l' || f[0] == 'q';
    if (itemsize == 4) return f[0] == 'i' || f[0] == 'I';
    return 0;
}

/* The one ref of a selection array: 1 (*ref set), 0 none, -1 not a small int array. */
static int one_ref(PyObject *arr, int64_t *ref) {
    Py_buffer v;
    if (PyObject_GetBuffer(arr, &v, PyBUF_FORMAT | PyBUF_ND) < 0) {
        PyErr_Clear();
        return -1;
    }
    int r = -1;
    if (v.ndim == 1 && v.shape != NULL && int_format(v.format, v.itemsize) && v.shape[0] <= 1
        && v.len == v.shape[0] * v.itemsize) {
        r = (int)v.shape[0];
        if (r && v.itemsize == 8) memcpy(ref, v.buf, 8);
        else if (r && v.format[strlen(v.format) - 1] == 'I') *ref = *(const uint32_t *)v.buf;
        else if (r) *ref = *(const int32_t *)v.buf;
    }
    PyBuffer_Release(&v);
    return r;
}

static inline int64_t at64(const char *p, Py_ssize_t i) {
    int64_t x;
    memcpy(&x, p + 8 * i, 8);
    return x;
}

/* The key (ulid, kind, ref) of a cache entry (new reference). */
static PyObject *cache_key(PyObject *ulid, PyObject *kind, PyObject *ref) {
    return PyTuple_Pack(3, ulid, kind, ref);
}

typedef struct {
    PyObject *blocks, *d, *todo, *ulids, *raws, *skeys, *dec, *labels, *exts, *ckeys, *reads,
        *rels, *poss;  /* (poss: each read's records' positions among the chunk keys) */
} Plan;

static void plan_clear(Plan *p) {
    Py_CLEAR(p->blocks); Py_CLEAR(p->d); Py_CLEAR(p->todo); Py_CLEAR(p->ulids);
    Py_CLEAR(p->raws); Py_CLEAR(p->skeys); Py_CLEAR(p->dec); Py_CLEAR(p->labels);
    Py_CLEAR(p->exts); Py_CLEAR(p->ckeys); Py_CLEAR(p->reads); Py_CLEAR(p->rels);
    Py_CLEAR(p->poss);
}

/* Append a new reference to a list, consuming it; -1 on error. */
static int append_new(PyObject *list, PyObject *item) {
    if (item == NULL) return -1;
    int r = PyList_Append(list, item);
    Py_DECREF(item);
    return r;
}

/* Steps 1-2: the blocks that select a series, and their cached series entries (peeked: not
 * moved or counted). 1 all found, 0 not the fast case, -1 error. */
static int plan_entries(Plan *p, PyObject *refs_arg) {
    PyObject *refs = PySequence_Fast(refs_arg, "refs");
    if (refs == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(p->blocks);
    int r = 0;
    if (n == 0 || PySequence_Fast_GET_SIZE(refs) != n) goto done;
    r = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t ref = 0;
        int got = one_ref(PySequence_Fast_GET_ITEM(refs, i), &ref);
        if (got <= 0) {
            if (got < 0) { r = 0; goto done; }
            continue;
        }
        PyObject *ulid = PyObject_GetAttr(PySequence_Fast_GET_ITEM(p->blocks, i), str[ULID]);
        if (ulid == NULL || append_new(p->ulids, ulid) < 0
            || append_new(p->todo, PyLong_FromSsize_t(i)) < 0)
            goto done;
        PyObject *id = PyLong_FromLongLong(ref);
        PyObject *key = id ? cache_key(ulid, str[SERIES], id) : NULL;
        Py_XDECREF(id);
        if (key == NULL) goto done;
        PyObject *raw = PyDict_GetItemWithError(p->d, key);
        if (raw == NULL || append_new(p->skeys, key) < 0) {
            if (raw == NULL) Py_DECREF(key);
            if (raw == NULL && !PyErr_Occurred()) r = 0;
            goto done;
        }
        if (PyList_Append(p->raws, raw) < 0) goto done;
    }
    r = PyList_GET_SIZE(p->todo) > 0;
done:
    Py_DECREF(refs);
    return r;
}

/* Step 3: the entries decoded (decode_series_batch), their counts and chunk metas checked
 * against each other, each block's chunk refs ascending. 1 ok (p->dec), 0 not the fast case,
 * -1 error. */
static int plan_decode(Plan *p) {
    p->dec = call_ns(DECODE_SERIES_BATCH, &p->raws, 1);
    if (p->dec == NULL) return -1;
    if (!PyTuple_CheckExact(p->dec) || PyTuple_GET_SIZE(p->dec) != 6) return 0;
    for (int j = 0; j < 6; j++)
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(p->dec, j))) return 0;
    Py_ssize_t k = PyList_GET_SIZE(p->todo);
    PyObject *lc = PyTuple_GET_ITEM(p->dec, 0), *sy = PyTuple_GET_ITEM(p->dec, 1),
             *cc = PyTuple_GET_ITEM(p->dec, 2), *rf = PyTuple_GET_ITEM(p->dec, 5);
    if (PyBytes_GET_SIZE(lc) != 8 * k || PyBytes_GET_SIZE(cc) != 8 * k) return 0;
    Py_ssize_t nsym = PyBytes_GET_SIZE(sy) / 16, nref = PyBytes_GET_SIZE(rf) / 8, syms = 0, m = 0;
    for (Py_ssize_t j = 0; j < k; j++) {
        int64_t nl = at64(PyBytes_AS_STRING(lc), j), nc = at64(PyBytes_AS_STRING(cc), j);
        if (nl < 0 || nl > nsym - syms || nc < 1 || nc > nref - m) return 0;
        syms += (Py_ssize_t)nl;
        const char *refs = PyBytes_AS_STRING(rf);
        for (Py_ssize_t c = m; c < m + nc; c++)  /* (non-negative: a segment number) */
            if (at64(refs, c) < 0 || (c > m && at64(refs, c) <= at64(refs, c - 1))) return 0;
        m += (Py_ssize_t)nc;
    }
    return PyBytes_GET_SIZE(rf) == 8 * m && PyBytes_GET_SIZE(PyTuple_GET_ITEM(p->dec, 3)) == 8 * m
           && PyBytes_GET_SIZE(PyTuple_GET_ITEM(p->dec, 4)) == 8 * m;
}

/* Step 4: each block's label set (the index header's C decoder, as IndexHeader.label_sets
 * calls it) and external labels. 1 ok, 0 not the fast case, -1 error. */
static int plan_labels(Plan *p) {
    const char *lc = PyBytes_AS_STRING(PyTuple_GET_ITEM(p->dec, 0));
    const char *sy = PyBytes_AS_STRING(PyTuple_GET_ITEM(p->dec, 1));
    Py_ssize_t syms = 0;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(p->todo); j++) {
        PyObject *b = PySequence_Fast_GET_ITEM(p->blocks, PyLong_AsSsize_t(PyList_GET_ITEM(p->todo, j)));
        Py_ssize_t nl = (Py_ssize_t)at64(lc, j);  /* (checked by plan_decode) */
        PyObject *h = PyObject_GetAttr(b, str[HEADER]);
        if (h == NULL) return -1;
        PyObject *args[5] = {NULL}, *got = NULL;
        if ((args[0] = PyObject_GetAttr(h, str[BUF])) && (args[1] = PyObject_GetAttr(h, str[SYM_BASE]))
            && (args[2] = PyObject_GetAttr(h, str[SYM_POS]))
            && (args[3] = PyBytes_FromStringAndSize(lc + 8 * j, 8))
            && (args[4] = PyBytes_FromStringAndSize(sy + 16 * syms, 16 * nl)))
            got = call(label_sets, args, 5);
        Py_DECREF(h);
        for (int a = 0; a < 5; a++) Py_XDECREF(args[a]);
        if (got == NULL) return -1;
        int ok = PyList_CheckExact(got) && PyList_GET_SIZE(got) == 1;
        int r = ok ? PyList_Append(p->labels, PyList_GET_ITEM(got, 0)) : 0;
        Py_DECREF(got);
        if (!ok || r < 0) return ok ? -1 : 0;
        if (append_new(p->exts, PyObject_GetAttr(b, str[EXT_LABELS])) < 0) return -1;
        syms += nl;
    }
    return 1;
}

/* The read of block b's chunk refs `ids` at `keep` (their one real segment's object, as
 * BucketBlock.one_segment finds it, and item_reads's one read of them), appended to p->reads
 * and p->rels. 1 ok, 0 not the fast case, -1 error. */
static int plan_read(Plan *p, PyObject *b, PyObject *ids, PyObject *keep, int64_t seq,
                     PyObject *opts) {
    PyObject *segs = PyObject_GetAttr(b, str[SEGS]), *key = PyLong_FromLongLong(seq), *seg = NULL;
    int r = -1;
    if (segs == NULL || key == NULL) goto done;
    if (!PyDict_Check(segs)) { r = 0; goto done; }
    PyObject *known = PyDict_GetItemWithError(segs, key);  /* segs.get(seq) or _segment(seq) */
    int truthy = known ? PyObject_IsTrue(known) : 0;
    if (truthy < 0 || (known == NULL && PyErr_Occurred())) goto done;
    seg = truthy ? Py_NewRef(known) : PyObject_CallMethodOneArg(b, str[SEGMENT], key);
    if (seg == NULL) goto done;
    r = 0;
    if (!PyTuple_Check(seg) || PyTuple_GET_SIZE(seg) != 3) goto done;
    PyObject *sargs = PyTuple_GET_ITEM(seg, 2);
    if (!PyTuple_Check(sargs) || PyTuple_GET_SIZE(sargs) != 5) goto done;
    r = -1;
    PyObject *args[9] = {ids, NULL, NULL, NULL, NULL, NULL, NULL, NULL, keep};
    for (int a = 0; a < 5; a++) args[a + 1] = PyTuple_GET_ITEM(sargs, a);
    PyObject *groups = NULL;
    if ((args[6] = PyObject_GetAttr(opts, str[MAX_GAP]))
        && (args[7] = PyObject_GetAttr(opts, str[MAX_RANGE])))
        groups = call_ns(ITEM_READS, args, 9);
    Py_XDECREF(args[6]);
    Py_XDECREF(args[7]);
    if (groups == NULL) goto done;
    PyObject *g = PyList_CheckExact(groups) && PyList_GET_SIZE(groups) == 1
                  ? PyList_GET_ITEM(groups, 0) : NULL;
    if (g == NULL || !PyTuple_Check(g) || PyTuple_GET_SIZE(g) != 5) {
        Py_DECREF(groups);
        r = 0;
        goto done;
    }
    PyObject *bucket = PyObject_GetAttr(b, str[BUCKET]);
    PyObject *len = PyNumber_Subtract(PyTuple_GET_ITEM(g, 1), PyTuple_GET_ITEM(g, 0));
    PyObject *req = bucket && len ? Py_BuildValue("(O(OOO))", bucket, PyTuple_GET_ITEM(seg, 1),
                                                  PyTuple_GET_ITEM(g, 0), len) : NULL;
    Py_XDECREF(bucket);
    Py_XDECREF(len);
    if (append_new(p->reads, req) == 0 && PyList_Append(p->rels, PyTuple_GET_ITEM(g, 4)) == 0)
        r = 1;
    Py_DECREF(groups);
done:
    Py_XDECREF(segs);
    Py_XDECREF(key);
    Py_XDECREF(seg);
    return r;
}

/* Step 5: each block's chunk refs (peeked in the cache) and the one read of those not
 * cached, if any. 1 ok, 0 not the fast case, -1 error. */
static int plan_chunks(Plan *p, PyObject *opts) {
    const char *cc = PyBytes_AS_STRING(PyTuple_GET_ITEM(p->dec, 2));
    const char *rf = PyBytes_AS_STRING(PyTuple_GET_ITEM(p->dec, 5));
    Py_ssize_t at = 0;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(p->todo); j++) {
        PyObject *b = PySequence_Fast_GET_ITEM(p->blocks, PyLong_AsSsize_t(PyList_GET_ITEM(p->todo, j)));
        PyObject *ulid = PyList_GET_ITEM(p->ulids, j);
        Py_ssize_t nc = (Py_ssize_t)at64(cc, j);  /* (checked by plan_decode: >= 1) */
        int64_t seq = at64(rf, at) >> 32;
        if (nc > small_items || at64(rf, at + nc - 1) >> 32 != seq) return 0;
        /* all the block's refs; the indices among them and positions among the chunk keys of
         * those not cached */
        PyObject *ids = PyList_New(0), *keep = PyList_New(0), *pos = PyList_New(0);
        int r = ids && keep && pos ? 1 : -1;
        for (Py_ssize_t c = 0; r > 0 && c < nc; c++) {
            PyObject *id = PyLong_FromLongLong(at64(rf, at + c));
            PyObject *key = id ? cache_key(ulid, str[CHUNKS], id) : NULL;
            PyObject *v = key ? PyDict_GetItemWithError(p->d, key) : NULL;
            if (key == NULL || (v == NULL && PyErr_Occurred()) || PyList_Append(ids, id) < 0) {
                Py_XDECREF(key);
                r = -1;
            } else if (append_new(p->ckeys, key) < 0) {
                r = -1;
            } else if (v == NULL && (append_new(keep, PyLong_FromSsize_t(c)) < 0
                                     || append_new(pos, PyLong_FromSsize_t(at + c)) < 0)) {
                r = -1;
            }
            Py_XDECREF(id);
        }
        if (r > 0 && PyList_GET_SIZE(keep)) {
            r = plan_read(p, b, ids, keep, seq, opts);
            if (r > 0 && PyList_Append(p->poss, pos) < 0) r = -1;
        }
        Py_XDECREF(ids);
        Py_XDECREF(keep);
        Py_XDECREF(pos);
        if (r <= 0) return r;
        at += nc;
    }
    return 1;
}

static int plan_checks(Plan *p, PyObject *const *args) {
    PyObject *lru = from_ns(LRU_CACHE);
    if (lru == NULL) return -1;
    if ((PyObject *)Py_TYPE(args[2]) != lru) return 0;
    p->blocks = PySequence_Fast(args[0], "blocks");
    p->d = PyObject_GetAttr(args[2], str[D]);
    if (p->blocks == NULL || p->d == NULL) return -1;
    if (!PyDict_Check(p->d)) return 0;
    if (!(p->todo = PyList_New(0)) || !(p->ulids = PyList_New(0)) || !(p->raws = PyList_New(0))
        || !(p->skeys = PyList_New(0)) || !(p->labels = PyList_New(0))
        || !(p->exts = PyList_New(0)) || !(p->ckeys = PyList_New(0))
        || !(p->reads = PyList_New(0)) || !(p->rels = PyList_New(0))
        || !(p->poss = PyList_New(0)))
        return -1;
    int r = plan_entries(p, args[1]);
    if (r > 0) r = plan_decode(p);
    if (r > 0) r = plan_labels(p);
    if (r > 0) r = plan_chunks(p, args[3]);
    return r;
}

/* lookup(cache._d, keys, kind, cache._requests, cache._hits, 0): LRUCache.get_many. */
static PyObject *get_many(PyObject *cache, PyObject *d, PyObject *keys, PyObject *kind) {
    PyObject *args[6] = {d, keys, kind, NULL, NULL, zero}, *got = NULL;
    if ((args[3] = PyObject_GetAttr(cache, str[REQUESTS])) && (args[4] = PyObject_GetAttr(cache, str[HITS])))
        got = call(lru_lookup, args, 6);
    Py_XDECREF(args[3]);
    Py_XDECREF(args[4]);
    return got;
}

static PyObject *py_plan_one_each(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "plan_one_each(blocks, refs, cache, opts[, read])");
        return NULL;
    }
    int read = nargs == 5 ? PyObject_IsTrue(args[4]) : 0;
    if (read < 0) return NULL;
    if (ns == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "plan_one_each: bind() first");
        return NULL;
    }
    Plan p = {0};
    int r = plan_checks(&p, args);
    if (r < 0 && PyErr_ExceptionMatches(PyExc_Exception)) {  /* the Python path decides */
        PyErr_Clear();
        r = 0;
    }
    PyObject *out = NULL;
    if (r == 0) {
        out = Py_NewRef(Py_None);
    } else if (r > 0) {  /* the fast case: the lookups made, as the Python path makes them */
        PyObject *seen = read ? Py_NewRef(Py_None) : get_many(args[2], p.d, p.skeys, str[SERIES]);
        PyObject *vals = seen ? get_many(args[2], p.d, p.ckeys, str[CHUNKS]) : NULL;
        Py_XDECREF(seen);
        PyObject *n = PyLong_FromSsize_t(PySequence_Fast_GET_SIZE(p.blocks));
        if (vals && n)
            out = Py_BuildValue("(O(OOOO(OOOOOOOOO)))", p.reads, p.todo, p.raws, p.ckeys, vals,
                                n, args[2], p.labels, p.exts, PyTuple_GET_ITEM(p.dec, 2),
                                PyTuple_GET_ITEM(p.dec, 3), PyTuple_GET_ITEM(p.dec, 4), p.rels,
                                p.poss);
        Py_XDECREF(vals);
        Py_XDECREF(n);
    }
    plan_clear(&p);
    return out;
}

/* finish_one_each's state, unpacked (borrowed) and checked against itself. */
typedef struct {
    PyObject *todo, *raws, *keys, *vals, *cache, *labels, *exts, *rels, *poss;
    const char *cc, *mint, *maxt;
    Py_ssize_t n, k, m;
} State;

static int state_of(PyObject *st, State *s) {
    PyObject *priv;
    if (!PyTuple_Check(st) || PyTuple_GET_SIZE(st) != 5
        || !PyTuple_Check(priv = PyTuple_GET_ITEM(st, 4)) || PyTuple_GET_SIZE(priv) != 9)
        goto bad;
    s->todo = PyTuple_GET_ITEM(st, 0); s->raws = PyTuple_GET_ITEM(st, 1);
    s->keys = PyTuple_GET_ITEM(st, 2); s->vals = PyTuple_GET_ITEM(st, 3);
    s->cache = PyTuple_GET_ITEM(priv, 1); s->labels = PyTuple_GET_ITEM(priv, 2);
    s->exts = PyTuple_GET_ITEM(priv, 3); s->rels = PyTuple_GET_ITEM(priv, 7);
    s->poss = PyTuple_GET_ITEM(priv, 8);
    PyObject *cc = PyTuple_GET_ITEM(priv, 4), *mi = PyTuple_GET_ITEM(priv, 5),
             *ma = PyTuple_GET_ITEM(priv, 6);
    if (!PyList_CheckExact(s->todo) || !PyList_CheckExact(s->keys) || !PyList_CheckExact(s->vals)
        || !PyList_CheckExact(s->labels) || !PyList_CheckExact(s->exts)
        || !PyList_CheckExact(s->rels) || !PyList_CheckExact(s->poss)
        || PyList_GET_SIZE(s->poss) != PyList_GET_SIZE(s->rels) || !PyBytes_CheckExact(cc)
        || !PyBytes_CheckExact(mi) || !PyBytes_CheckExact(ma))
        goto bad;
    s->n = PyLong_AsSsize_t(PyTuple_GET_ITEM(priv, 0));
    if (s->n == -1 && PyErr_Occurred()) return -1;
    s->k = PyList_GET_SIZE(s->todo);
    s->cc = PyBytes_AS_STRING(cc); s->mint = PyBytes_AS_STRING(mi); s->maxt = PyBytes_AS_STRING(ma);
    if (s->k < 1 || s->k > s->n || PyBytes_GET_SIZE(cc) != 8 * s->k
        || PyList_GET_SIZE(s->labels) != s->k || PyList_GET_SIZE(s->exts) != s->k
        || PyList_GET_SIZE(s->rels) > s->k)
        goto bad;
    s->m = PyList_GET_SIZE(s->keys);
    Py_ssize_t m = 0;
    for (Py_ssize_t j = 0; j < s->k; j++) {
        int64_t nc = at64(s->cc, j);
        if (nc < 1 || nc > s->m - m) goto bad;
        m += (Py_ssize_t)nc;
    }
    for (Py_ssize_t j = 0; j < s->k; j++) {
        Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(s->todo, j));
        if (i < 0 || i >= s->n || (j && i <= PyLong_AsSsize_t(PyList_GET_ITEM(s->todo, j - 1))))
            goto bad;
    }
    if (m == s->m && PyList_GET_SIZE(s->vals) == m && PyBytes_GET_SIZE(mi) == 8 * m
        && PyBytes_GET_SIZE(ma) == 8 * m)
        return 0;
bad:
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "finish_one_each: not a plan's state");
    return -1;
}

/* The records of the reads (a new list of (position among the chunk keys, record)), when
 * every read came back and holds its records whole, at ascending positions whose values are
 * missing; None when not (the Python path takes the reads); NULL on an error. */
static PyObject *records(State *s, PyObject *bufs) {
    Py_ssize_t nr = PyList_GET_SIZE(s->rels);
    if (PySequence_Fast_GET_SIZE(bufs) != nr) Py_RETURN_NONE;
    for (Py_ssize_t t = 0; t < nr; t++)
        if (!PyBytes_Check(PySequence_Fast_GET_ITEM(bufs, t))) Py_RETURN_NONE;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    Py_ssize_t last = -1;
    for (Py_ssize_t t = 0; t < nr; t++) {
        PyObject *args[3] = {PySequence_Fast_GET_ITEM(bufs, t), PyList_GET_ITEM(s->rels, t),
                             kind_chunks};
        PyObject *got = call_ns(SPLIT_ITEMS, args, 3);
        if (got == NULL) {
            Py_DECREF(out);
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) return NULL;
            PyErr_Clear();  /* an overflowing length prefix */
            Py_RETURN_NONE;
        }
        PyObject *part = PyTuple_Check(got) && PyTuple_GET_SIZE(got) == 2
                         ? PyTuple_GET_ITEM(got, 0) : NULL;
        PyObject *pos = PyList_GET_ITEM(s->poss, t);
        if (part == NULL || !PyList_Check(part) || !PyList_Check(pos)) {
            Py_DECREF(got);
            Py_DECREF(out);
            PyErr_SetString(PyExc_TypeError, part == NULL || !PyList_Check(part)
                            ? "split_items: not (items, lengths)"
                            : "finish_one_each: not a plan's state");
            return NULL;
        }
        int whole = PyList_GET_SIZE(part) == PyList_GET_SIZE(pos);
        for (Py_ssize_t c = 0; whole && c < PyList_GET_SIZE(part); c++) {
            PyObject *item = PyList_GET_ITEM(part, c), *at = PyList_GET_ITEM(pos, c);
            Py_ssize_t i = PyLong_Check(at) ? PyLong_AsSsize_t(at) : -1;
            if (i <= last || i >= s->m || PyList_GET_ITEM(s->vals, i) != Py_None) {
                PyErr_Clear();
                Py_DECREF(got);
                Py_DECREF(out);
                PyErr_SetString(PyExc_ValueError, "finish_one_each: not a plan's state");
                return NULL;
            }
            last = i;
            whole = item != Py_None && append_new(out, PyTuple_Pack(2, at, item)) == 0;
            if (PyErr_Occurred()) { Py_DECREF(got); Py_DECREF(out); return NULL; }
        }
        Py_DECREF(got);
        if (!whole) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
    }
    return out;
}

/* LRUCache.put_many(keys, vals, "chunks"), as store/cache.py makes it. */
static int put_chunks(State *s, PyObject *keys, PyObject *vals) {
    PyObject *c = s->cache, *mt = PyObject_GetAttr(c, str[M]), *added = NULL, *evicted = NULL;
    if (mt == NULL) return -1;
    if (mt != Py_None) {
        PyObject *a = PyObject_GetAttr(mt, str[ADDED]);
        added = a ? PyObject_GetAttr(a, str[COUNTS]) : NULL;
        Py_XDECREF(a);
        PyObject *e = added ? PyObject_GetAttr(mt, str[EVICTED]) : NULL;
        evicted = e ? PyObject_GetAttr(e, str[COUNTS]) : NULL;
        Py_XDECREF(e);
    } else {
        added = Py_NewRef(Py_None);
        evicted = Py_NewRef(Py_None);
    }
    Py_DECREF(mt);
    PyObject *args[10] = {NULL, NULL, keys, vals, str[CHUNKS], NULL, NULL, entry_overhead,
                          added, evicted}, *size = NULL;
    if (added && evicted && (args[0] = PyObject_GetAttr(c, str[D]))
        && (args[1] = PyObject_GetAttr(c, str[TYPES])) && (args[5] = PyObject_GetAttr(c, str[SIZE]))
        && (args[6] = PyObject_GetAttr(c, str[MAX_BYTES])))
        size = call(lru_put_many, args, 10);
    int r = size ? PyObject_SetAttr(c, str[SIZE], size) : -1;
    Py_XDECREF(size);
    Py_XDECREF(args[0]); Py_XDECREF(args[1]); Py_XDECREF(args[5]); Py_XDECREF(args[6]);
    Py_XDECREF(added); Py_XDECREF(evicted);
    return r;
}

/* The records read put in the chunk values at their positions and in the cache (one insert
 * of those only, in the order of the keys, as _read_jobs puts them). 0 ok, -1 error. */
static int keep_records(State *s, PyObject *got) {
    Py_ssize_t n = PyList_GET_SIZE(got);
    if (n == 0) return 0;  /* (every chunk was cached: nothing read, nothing put) */
    PyObject *keys = PyList_New(n), *vals = PyList_New(n);
    int r = keys && vals ? 0 : -1;
    for (Py_ssize_t c = 0; r == 0 && c < n; c++) {
        PyObject *pair = PyList_GET_ITEM(got, c);
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));  /* (checked by records) */
        PyObject *item = PyTuple_GET_ITEM(pair, 1);
        PyList_SET_ITEM(keys, c, Py_NewRef(PyList_GET_ITEM(s->keys, i)));
        PyList_SET_ITEM(vals, c, Py_NewRef(item));
        r = PyList_SetItem(s->vals, i, Py_NewRef(item));
    }
    if (r == 0) r = put_chunks(s, keys, vals);
    Py_XDECREF(keys);
    Py_XDECREF(vals);
    return r;
}

/* A block's chunks (mint, maxt, data) j0..j0+nc, each tuple untracked as chunk_tuples does. */
static PyObject *chunk_list(State *s, PyObject *datas, Py_ssize_t j0, Py_ssize_t nc) {
    PyObject *out = PyList_New(nc);
    for (Py_ssize_t c = 0; out && c < nc; c++) {
        PyObject *a = PyLong_FromLongLong(at64(s->mint, j0 + c));
        PyObject *z = a ? PyLong_FromLongLong(at64(s->maxt, j0 + c)) : NULL;
        PyObject *d = PyList_GET_ITEM(datas, j0 + c);
        PyObject *t = z ? PyTuple_Pack(3, a, z, d) : NULL;
        Py_XDECREF(a);
        Py_XDECREF(z);
        if (t == NULL) { Py_CLEAR(out); break; }
        if (PyBytes_CheckExact(d)) PyObject_GC_UnTrack(t);
        PyList_SET_ITEM(out, c, t);
    }
    return out;
}

/* merge_external(labels, ext) if ext else labels (new reference). */
static PyObject *with_ext(PyObject *labels, PyObject *ext) {
    int has = PyObject_IsTrue(ext);
    if (has <= 0) return has < 0 ? NULL : Py_NewRef(labels);
    PyObject *args[2] = {labels, ext};
    return call_ns(MERGE_EXTERNAL, args, 2);
}

/* Whether every item of a list equals its first (as list.count(l[0]) == len(l)); -1 error. */
static int all_equal(PyObject *l) {
    for (Py_ssize_t j = 1; j < PyList_GET_SIZE(l); j++) {
        int eq = PyObject_RichCompareBool(PyList_GET_ITEM(l, j), PyList_GET_ITEM(l, 0), Py_EQ);
        if (eq <= 0) return eq;
    }
    return 1;
}

/* Each block's answer [(labels, chunks)] from the checked records, the blocks that select
 * nothing answered [] (as _one_each_chunks builds them). */
static PyObject *answers(State *s, PyObject *datas) {
    int same = all_equal(s->labels);
    if (same > 0) same = all_equal(s->exts);
    if (same < 0) return NULL;
    PyObject *series = same ? with_ext(PyList_GET_ITEM(s->labels, 0),
                                       PyList_GET_ITEM(s->exts, 0)) : NULL;
    PyObject *out = same && series == NULL ? NULL : PyList_New(s->n);
    for (Py_ssize_t i = 0; out && i < s->n; i++) {
        PyObject *none = PyList_New(0);
        if (none == NULL) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, none);
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t j = 0; out && j < s->k; j++) {
        Py_ssize_t nc = (Py_ssize_t)at64(s->cc, j);
        PyObject *lbls = same ? Py_NewRef(series)
                              : with_ext(PyList_GET_ITEM(s->labels, j), PyList_GET_ITEM(s->exts, j));
        PyObject *cs = lbls ? chunk_list(s, datas, at, nc) : NULL;
        PyObject *one = cs ? PyTuple_Pack(2, lbls, cs) : NULL;
        PyObject *ans = one ? PyList_New(1) : NULL;
        Py_XDECREF(lbls);
        Py_XDECREF(cs);
        if (ans == NULL) { Py_XDECREF(one); Py_CLEAR(out); break; }
        PyList_SET_ITEM(ans, 0, one);
        PyList_SetItem(out, PyLong_AsSsize_t(PyList_GET_ITEM(s->todo, j)), ans);  /* (checked) */
        at += nc;
    }
    Py_XDECREF(series);
    return out;
}

static PyObject *py_finish_one_each(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    State s;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "finish_one_each(state, bufs)");
        return NULL;
    }
    if (ns == NULL || state_of(args[0], &s) < 0) {
        if (ns == NULL) PyErr_SetString(PyExc_RuntimeError, "finish_one_each: bind() first");
        return NULL;
    }
    PyObject *bufs = PySequence_Fast(args[1], "finish_one_each: bufs must be a sequence");
    if (bufs == NULL) return NULL;
    PyObject *items = records(&s, bufs);
    Py_DECREF(bufs);
    if (items == NULL) return NULL;
    if (items == Py_None) { Py_DECREF(items); return PyLong_FromLong(1); }
    Py_ssize_t missing = 0;  /* (records checked their positions: each missing, ascending) */
    for (Py_ssize_t i = 0; i < s.m; i++)
        missing += PyList_GET_ITEM(s.vals, i) == Py_None;
    if (missing != PyList_GET_SIZE(items)) {  /* a state whose reads miss some: nothing done */
        Py_DECREF(items);
        PyErr_SetString(PyExc_ValueError, "finish_one_each: not a plan's state");
        return NULL;
    }
    int r = keep_records(&s, items);
    Py_DECREF(items);
    if (r < 0) return NULL;
    PyObject *got = call_ns(READ_CHUNKS, &s.vals, 1);
    if (got == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) return NULL;
        PyErr_Clear();  /* a broken record: block by block */
        return PyLong_FromLong(2);
    }
    PyObject *encs = PyTuple_Check(got) && PyTuple_GET_SIZE(got) == 2 ? PyTuple_GET_ITEM(got, 0) : NULL;
    PyObject *datas = encs ? PyTuple_GET_ITEM(got, 1) : NULL;
    PyObject *xor_obj = from_ns(ENCODING_XOR);
    long xor = xor_obj ? PyLong_AsLong(xor_obj) : -1;
    int plain = encs && PyBytes_Check(encs) && PyBytes_GET_SIZE(encs) == s.m && PyList_Check(datas)
                && PyList_GET_SIZE(datas) == s.m && !(xor == -1 && PyErr_Occurred());
    for (Py_ssize_t c = 0; plain && c < s.m; c++)
        plain = (unsigned char)PyBytes_AS_STRING(encs)[c] == xor;
    PyObject *out = PyErr_Occurred() ? NULL : plain ? answers(&s, datas) : PyLong_FromLong(2);
    Py_DECREF(got);
    return out;
}

/* bind(namespace, lookup, put_many, label_sets, entry_overhead, small_items) */
static PyObject *py_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "bind(namespace, lookup, put_many, label_sets, "
                        "entry_overhead, small_items)");
        return NULL;
    }
    Py_ssize_t small = PyLong_AsSsize_t(args[5]);
    if (small == -1 && PyErr_Occurred()) return NULL;
    Py_XSETREF(ns, Py_NewRef(args[0]));
    Py_XSETREF(lru_lookup, Py_NewRef(args[1]));
    Py_XSETREF(lru_put_many, Py_NewRef(args[2]));
    Py_XSETREF(label_sets, Py_NewRef(args[3]));
    Py_XSETREF(entry_overhead, Py_NewRef(args[4]));
    small_items = small;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))py_bind, METH_FASTCALL,
     "bind(namespace, lookup, put_many, label_sets, entry_overhead, small_items): what the "
     "steps call (coldseries's functions looked up in namespace at each call)."},
    {"plan_one_each", (PyCFunction)(void (*)(void))py_plan_one_each, METH_FASTCALL,
     "plan_one_each(blocks, refs, cache, opts[, read]) -> None | (reads, state): the cold "
     "one-series call's lookups and reads (read: its series entries were just looked up, read "
     "and kept)."},
    {"finish_one_each", (PyCFunction)(void (*)(void))py_finish_one_each, METH_FASTCALL,
     "finish_one_each(state, bufs) -> answers | 1 | 2: the rest after the reads, or which "
     "Python path goes on."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_coldseries", NULL, -1, methods};

PyMODINIT_FUNC PyInit__coldseries(void) {
    for (int i = 0; i < N_NAMES; i++)
        if ((str[i] = PyUnicode_InternFromString(NAMES[i])) == NULL) return NULL;
    if ((zero = PyLong_FromLong(0)) == NULL || (kind_chunks = PyLong_FromLong(2)) == NULL)
        return NULL;
    return PyModule_Create(&moduledef);
}
