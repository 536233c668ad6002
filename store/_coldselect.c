/* The cold one-series selection's fast path (store/coldselect.py's select_many) in two calls.
 *
 * Why C: a selection never asked before (a dashboard's new instance) misses every block's
 * expanded-postings entry and reads one postings list per block. The C steps it takes (LRU
 * lookups and inserts, eq_plans, checked_postings, single_selections) were under half of its
 * CPU after idle; the rest was the Python glue between them (lists, zips, tuples, attribute
 * lookups), slow when nothing is in the CPU caches. These two calls do that glue and call the
 * same C functions (bound once by store/coldselect.py) on the same objects in the same order,
 * so results, cache contents, LRU order and counts are what the Python path leaves.
 *
 *   plan(blocks, matchers, cache) -> None | (reads, state)
 *     None (the Python path runs; nothing was looked up, counted or moved) unless: every
 *     block shares one list of equality matchers with non-empty values, no block has the
 *     selection cached, every block gets a plan of lists in matcher order (at most 64) and
 *     exactly one of each block's lists is not cached. Then the postings lookup is made
 *     (counted, hits moved) and each block's one read request is returned, as read_batch
 *     takes them, with the state finish needs.
 *   finish(state, bufs, cache) -> None | [refs of each block]
 *     The reads' lists checked and cached, every selection combined and cached; None
 *     (nothing done) when a read failed or a list is broken: the Python path then goes on
 *     from the state as _read_lists does.
 *
 * Only the CPython C API is used; every object handed in is checked before use.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_SINGLE_LISTS 64  /* store._items.single_selections's bound per selection */
#define STATE_LEN 6          /* (plans, postings keys, raws, miss, selection keys, short) */

/* bound by bind(): the C callables and types the Python path uses */
static PyObject *f_lookup, *f_put_many, *f_eq_plans, *f_checked, *f_singles, *f_frombuffer;
static PyObject *t_plan, *t_lru, *o_eq, *o_int64, *o_empty, *o_overhead;
static Py_ssize_t max_key_chars;  /* store.block.MAX_KEY_MATCHER_CHARS */
static PyObject *s_postings, *s_expanded, *s_every, *s_d, *s_requests, *s_hits, *s_types,
    *s_size, *s_max_bytes, *s_m, *s_added, *s_evicted, *s_counts, *s_ulid, *s_header,
    *s_eq_state, *s_bucket, *s_index_name, *s_type, *s_name, *s_value, *s_colon;

static int bound(void) {
    if (f_lookup == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "store._coldselect: bind() first");
        return 0;
    }
    return 1;
}

/* A new (a, b, c) tuple; the references are borrowed. */
static PyObject *triple(PyObject *a, PyObject *b, PyObject *c) {
    return PyTuple_Pack(3, a, b, c);
}

/* The attribute chain obj.a.b (new reference). */
static PyObject *attr2(PyObject *obj, PyObject *a, PyObject *b) {
    PyObject *x = PyObject_GetAttr(obj, a);
    if (x == NULL) return NULL;
    PyObject *y = PyObject_GetAttr(x, b);
    Py_DECREF(x);
    return y;
}

/* 1 when a key is in the LRU's dict (nothing moved or counted), 0 when not, -1 on error. */
static int has_key(PyObject *d, PyObject *key) {
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v == NULL) return PyErr_Occurred() ? -1 : 0;
    return 1;
}

/* ``str(n)`` of a length, written here: PyUnicode_FromFormat's %zd runs glibc's printf,
 * whose code is cold on every query of an idle store (about 10 us a call then). */
static PyObject *decimal_str(Py_ssize_t n) {
    char buf[24];
    int k = (int)sizeof buf;
    size_t u = (size_t)n;
    do {
        buf[--k] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    return PyUnicode_FromStringAndSize(buf + k, (Py_ssize_t)sizeof buf - k);
}

/* The selection's equality matchers: names, values as UTF-8, its selection_id and whether
 * it is short enough to be kept (matcher_chars <= MAX_KEY_MATCHER_CHARS). 0 when they are
 * not all ``name="non-empty"`` of plain str (the Python path), 1 when found, -1 on error. */
static int equalities(PyObject *ms, PyObject **names, PyObject **values, PyObject **sid,
                      int *short_enough) {
    Py_ssize_t n = PyList_GET_SIZE(ms), chars = 0;
    if (n < 1) return 0;
    PyObject *parts = PyList_New(7 * n);  /* selection_id's pieces, joined at the end */
    *names = PyList_New(n);
    *values = PyList_New(n);
    if (parts == NULL || *names == NULL || *values == NULL) goto fail;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *m = PyList_GET_ITEM(ms, k);
        PyObject *type = PyObject_GetAttr(m, s_type);
        if (type == NULL) goto fail;
        Py_DECREF(type);  /* (only its identity is used: the enum member lives on) */
        if (type != o_eq) goto not_fast;
        PyObject *name = PyObject_GetAttr(m, s_name);
        if (name == NULL) goto fail;
        PyList_SET_ITEM(*names, k, name);
        PyObject *value = PyObject_GetAttr(m, s_value);
        if (value == NULL) goto fail;
        if (!PyUnicode_CheckExact(name) || !PyUnicode_CheckExact(value)
                || PyUnicode_GET_LENGTH(value) == 0 || !PyUnicode_Check(type)) {
            Py_DECREF(value);
            goto not_fast;
        }
        PyObject *raw = PyUnicode_AsEncodedString(value, "utf-8", "surrogatepass");
        if (raw == NULL) { Py_DECREF(value); goto fail; }
        PyList_SET_ITEM(*values, k, raw);
        /* selection_id's part: f"{type}{len(name)}:{name}{len(value)}:{value}" */
        PyObject *name_len = decimal_str(PyUnicode_GET_LENGTH(name));
        PyObject *value_len = decimal_str(PyUnicode_GET_LENGTH(value));
        PyObject *piece[7] = {type, name_len, s_colon, name, value_len, s_colon, value};
        chars += PyUnicode_GET_LENGTH(name) + PyUnicode_GET_LENGTH(value);
        for (int j = 0; j < 7; j++) {
            if (piece[j] != name_len && piece[j] != value_len && piece[j] != value)
                Py_INCREF(piece[j]);  /* (the lengths' and value's references move in) */
            PyList_SET_ITEM(parts, 7 * k + j, piece[j]);
        }
        if (name_len == NULL || value_len == NULL) goto fail;
    }
    *sid = PyUnicode_Join(s_every, parts);
    Py_DECREF(parts);
    if (*sid == NULL) goto fail_lists;
    *short_enough = chars <= max_key_chars;
    return 1;
not_fast:
    Py_XDECREF(parts);
    Py_CLEAR(*names);
    Py_CLEAR(*values);
    return 0;
fail:
    Py_XDECREF(parts);
fail_lists:
    Py_CLEAR(*names);
    Py_CLEAR(*values);
    return -1;
}

/* Each block's plan of eq_plans when every one is a PostingsPlan whose lists are in matcher
 * order (at most MAX_SINGLE_LISTS, each range a (start, end) tuple): 1, with the postings
 * keys of all of them in *pkeys and each block's first key's position in bounds; 0 (the
 * Python path) otherwise; -1 on error. */
static int checked_plans(PyObject *plans, PyObject *ulids, PyObject **pkeys, Py_ssize_t *bounds) {
    Py_ssize_t n = PyList_GET_SIZE(plans);
    *pkeys = PyList_New(0);
    if (*pkeys == NULL) return -1;
    bounds[0] = 0;
    for (Py_ssize_t t = 0; t < n; t++) {
        PyObject *p = PyList_GET_ITEM(plans, t);
        if (Py_TYPE(p) != (PyTypeObject *)t_plan || PyTuple_GET_SIZE(p) != 6) goto not_fast;
        PyObject *ranges = PyTuple_GET_ITEM(p, 2);
        int in_order = PyObject_IsTrue(PyTuple_GET_ITEM(p, 5));
        if (in_order < 0) goto fail;
        if (!in_order || !PyList_Check(ranges) || PyList_GET_SIZE(ranges) < 1
                || PyList_GET_SIZE(ranges) > MAX_SINGLE_LISTS)
            goto not_fast;
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(ranges); j++) {
            PyObject *r = PyList_GET_ITEM(ranges, j);
            if (!PyTuple_CheckExact(r) || PyTuple_GET_SIZE(r) != 2) goto not_fast;
            PyObject *key = triple(PyList_GET_ITEM(ulids, t), s_postings, PyTuple_GET_ITEM(r, 0));
            if (key == NULL) goto fail;
            int e = PyList_Append(*pkeys, key);
            Py_DECREF(key);
            if (e < 0) goto fail;
        }
        bounds[t + 1] = PyList_GET_SIZE(*pkeys);
    }
    return 1;
not_fast:
    Py_CLEAR(*pkeys);
    return 0;
fail:
    Py_CLEAR(*pkeys);
    return -1;
}

/* The position in pkeys of each block's one list not cached (a pure look: nothing moved or
 * counted), or 0 when some block has none or several (the Python path); -1 on error. */
static int one_missing_each(PyObject *d, PyObject *pkeys, const Py_ssize_t *bounds, Py_ssize_t n,
                            Py_ssize_t *miss) {
    for (Py_ssize_t t = 0; t < n; t++) {
        Py_ssize_t found = 0;
        for (Py_ssize_t j = bounds[t]; j < bounds[t + 1]; j++) {
            int has = has_key(d, PyList_GET_ITEM(pkeys, j));
            if (has < 0) return -1;
            if (!has) { miss[t] = j; found++; }
        }
        if (found != 1) return 0;
    }
    return 1;
}

/* cache._requests, cache._hits, ... as LRUCache keeps them: the same objects its methods
 * pass store._lru. */
static PyObject *lookup_postings(PyObject *cache, PyObject *d, PyObject *pkeys) {
    PyObject *req = PyObject_GetAttr(cache, s_requests), *hits = NULL, *mode = NULL, *out = NULL;
    if (req == NULL || (hits = PyObject_GetAttr(cache, s_hits)) == NULL
            || (mode = PyLong_FromLong(0)) == NULL)  /* store.cache._EVERY: get_many */
        goto done;
    PyObject *args[6] = {d, pkeys, s_postings, req, hits, mode};
    out = PyObject_Vectorcall(f_lookup, args, 6, NULL);
done:
    Py_XDECREF(req);
    Py_XDECREF(hits);
    Py_XDECREF(mode);
    return out;
}

/* LRUCache.put_many(keys, values, item_type): store._lru.put_many on its dicts, its size
 * updated. 0, or -1 on error. */
static int put(PyObject *cache, PyObject *keys, PyObject *values, PyObject *item_type) {
    PyObject *d = NULL, *types = NULL, *size = NULL, *max_bytes = NULL, *m = NULL;
    PyObject *added = NULL, *evicted = NULL, *got = NULL;
    int r = -1;
    if ((d = PyObject_GetAttr(cache, s_d)) == NULL
            || (types = PyObject_GetAttr(cache, s_types)) == NULL
            || (size = PyObject_GetAttr(cache, s_size)) == NULL
            || (max_bytes = PyObject_GetAttr(cache, s_max_bytes)) == NULL
            || (m = PyObject_GetAttr(cache, s_m)) == NULL)
        goto done;
    if (m == Py_None) {
        added = Py_NewRef(Py_None);
        evicted = Py_NewRef(Py_None);
    } else if ((added = attr2(m, s_added, s_counts)) == NULL
               || (evicted = attr2(m, s_evicted, s_counts)) == NULL) {
        goto done;
    }
    PyObject *args[10] = {d, types, keys, values, item_type, size, max_bytes, o_overhead,
                          added, evicted};
    got = PyObject_Vectorcall(f_put_many, args, 10, NULL);
    if (got != NULL && PyObject_SetAttr(cache, s_size, got) == 0) r = 0;
done:
    Py_XDECREF(d); Py_XDECREF(types); Py_XDECREF(size); Py_XDECREF(max_bytes); Py_XDECREF(m);
    Py_XDECREF(added); Py_XDECREF(evicted); Py_XDECREF(got);
    return r;
}

/* The read requests (bucket, (index name, start, length)) of each block's missing list. */
static PyObject *read_requests(PyObject *blocks, PyObject *plans, const Py_ssize_t *bounds,
                               const Py_ssize_t *miss) {
    Py_ssize_t n = PyList_GET_SIZE(blocks);
    PyObject *reqs = PyList_New(n);
    if (reqs == NULL) return NULL;
    for (Py_ssize_t t = 0; t < n; t++) {
        /* (looked up again, checked and held: attribute lookups may run Python code) */
        PyObject *b = PyList_GetItem(blocks, t), *p = PyList_GetItem(plans, t), *r = NULL;
        if (b == NULL || p == NULL) goto fail;
        PyObject *ranges = PyTuple_GET_ITEM(p, 2);
        if (!PyList_Check(ranges) || (r = PyList_GetItem(ranges, miss[t] - bounds[t])) == NULL)
            goto fail;
        if (!PyTuple_CheckExact(r) || PyTuple_GET_SIZE(r) != 2) {
            PyErr_SetString(PyExc_TypeError, "plan: a range is a (start, end) tuple");
            goto fail;
        }
        Py_INCREF(b);
        Py_INCREF(r);
        PyObject *start = PyTuple_GET_ITEM(r, 0);
        PyObject *bucket = PyObject_GetAttr(b, s_bucket), *name = NULL, *len = NULL, *rng = NULL;
        PyObject *req = NULL;
        if (bucket != NULL && (name = PyObject_GetAttr(b, s_index_name)) != NULL
                && (len = PyNumber_Subtract(PyTuple_GET_ITEM(r, 1), start)) != NULL
                && (rng = triple(name, start, len)) != NULL)
            req = PyTuple_Pack(2, bucket, rng);
        Py_XDECREF(bucket); Py_XDECREF(name); Py_XDECREF(len); Py_XDECREF(rng);
        Py_DECREF(b);
        Py_DECREF(r);
        if (req == NULL) goto fail;
        PyList_SET_ITEM(reqs, t, req);
    }
    return reqs;
fail:
    Py_DECREF(reqs);
    return NULL;
}

static PyObject *py_plan(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "plan(blocks, matchers, cache)");
        return NULL;
    }
    if (!bound()) return NULL;
    PyObject *cache = args[2];
    if (!PyList_Check(args[0]) || Py_TYPE(cache) != (PyTypeObject *)t_lru) Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(args[0]);
    PyObject *matchers = PySequence_Fast(args[1], "plan: matchers must be a sequence");
    if (matchers == NULL) return NULL;
    if (n < 1 || PySequence_Fast_GET_SIZE(matchers) != n) { Py_DECREF(matchers); Py_RETURN_NONE; }
    PyObject *first = PySequence_Fast_GET_ITEM(matchers, 0);
    for (Py_ssize_t i = 1; i < n; i++)
        if (PySequence_Fast_GET_ITEM(matchers, i) != first) { Py_DECREF(matchers); Py_RETURN_NONE; }
    Py_INCREF(first);
    Py_DECREF(matchers);
    /* copies of the block and matcher lists: attribute lookups may run Python code */
    PyObject *blocks = PyList_GetSlice(args[0], 0, n);
    if (blocks == NULL) { Py_DECREF(first); return NULL; }

    PyObject *ms = NULL, *names = NULL, *values = NULL, *sid = NULL, *d = NULL, *ulids = NULL;
    PyObject *skeys = NULL, *states = NULL, *plans = NULL, *pkeys = NULL, *raws = NULL;
    PyObject *missl = NULL, *reqs = NULL, *out = NULL;
    Py_ssize_t *bounds = NULL, *miss = NULL;
    int short_enough = 0, r;
    if (!PyList_Check(first) && !PyTuple_Check(first)) { out = Py_NewRef(Py_None); goto done; }
    if ((ms = PySequence_List(first)) == NULL) goto done;  /* (eq_plans's list(matchers)) */
    r = equalities(ms, &names, &values, &sid, &short_enough);
    if (r <= 0) { if (r == 0) out = Py_NewRef(Py_None); goto done; }
    if ((d = PyObject_GetAttr(cache, s_d)) == NULL) goto done;
    if (!PyDict_Check(d)) { out = Py_NewRef(Py_None); goto done; }
    if ((ulids = PyList_New(n)) == NULL || (skeys = PyList_New(n)) == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *u = PyObject_GetAttr(PyList_GET_ITEM(blocks, i), s_ulid);
        if (u == NULL) goto done;
        PyList_SET_ITEM(ulids, i, u);
        PyObject *key = triple(u, s_expanded, sid);
        if (key == NULL) goto done;
        PyList_SET_ITEM(skeys, i, key);
        int has = has_key(d, key);
        if (has < 0) goto done;
        if (has) { out = Py_NewRef(Py_None); goto done; }  /* a cached selection */
    }
    if ((states = PyList_New(n)) == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *st = attr2(PyList_GET_ITEM(blocks, i), s_header, s_eq_state);
        if (st == NULL) goto done;
        PyList_SET_ITEM(states, i, st);
    }
    plans = PyObject_CallFunctionObjArgs(f_eq_plans, states, names, values, ms, t_plan, NULL);
    if (plans == NULL) goto done;
    if (!PyList_CheckExact(plans) || PyList_GET_SIZE(plans) != n) {
        PyErr_SetString(PyExc_TypeError, "eq_plans: one plan per block");
        goto done;
    }
    bounds = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1));
    miss = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)n);
    if (bounds == NULL || miss == NULL) { PyErr_NoMemory(); goto done; }
    r = checked_plans(plans, ulids, &pkeys, bounds);
    if (r <= 0) { if (r == 0) out = Py_NewRef(Py_None); goto done; }
    r = one_missing_each(d, pkeys, bounds, n, miss);
    if (r <= 0) { if (r == 0) out = Py_NewRef(Py_None); goto done; }
    /* the fast case: from here on, as the Python path does */
    if ((raws = lookup_postings(cache, d, pkeys)) == NULL) goto done;
    if (!PyList_CheckExact(raws) || PyList_GET_SIZE(raws) != bounds[n]) {
        PyErr_SetString(PyExc_TypeError, "lookup: one value per key");
        goto done;
    }
    if ((missl = PyList_New(n)) == NULL) goto done;
    for (Py_ssize_t t = 0; t < n; t++) {
        if (PyList_GET_ITEM(raws, miss[t]) != Py_None) {  /* (no step between: cannot be) */
            PyErr_SetString(PyExc_RuntimeError, "plan: the postings cache changed under it");
            goto done;
        }
        PyObject *j = PyLong_FromSsize_t(miss[t]);
        if (j == NULL) goto done;
        PyList_SET_ITEM(missl, t, j);
    }
    if ((reqs = read_requests(blocks, plans, bounds, miss)) == NULL) goto done;
    out = Py_BuildValue("(O(OOOOON))", reqs, plans, pkeys, raws, missl, skeys,
                        PyBool_FromLong(short_enough));
done:
    PyMem_Free(bounds); PyMem_Free(miss);
    Py_DECREF(first); Py_XDECREF(ms); Py_XDECREF(names); Py_XDECREF(values); Py_XDECREF(sid);
    Py_XDECREF(d); Py_XDECREF(ulids); Py_XDECREF(skeys); Py_XDECREF(states); Py_XDECREF(plans);
    Py_XDECREF(pkeys); Py_XDECREF(raws); Py_XDECREF(missl); Py_XDECREF(reqs); Py_DECREF(blocks);
    return out;
}

/* state's parts, checked: plan made it, but it is a Python tuple anyone could hand in. */
static int unpack_state(PyObject *state, Py_ssize_t nbufs, PyObject **plans, PyObject **pkeys,
                        PyObject **raws, PyObject **miss, PyObject **skeys, int *short_enough,
                        Py_ssize_t *bounds) {
    if (!PyTuple_Check(state) || PyTuple_GET_SIZE(state) != STATE_LEN) goto bad;
    *plans = PyTuple_GET_ITEM(state, 0);
    *pkeys = PyTuple_GET_ITEM(state, 1);
    *raws = PyTuple_GET_ITEM(state, 2);
    *miss = PyTuple_GET_ITEM(state, 3);
    *skeys = PyTuple_GET_ITEM(state, 4);
    *short_enough = PyTuple_GET_ITEM(state, 5) == Py_True;
    if (!PyList_Check(*plans) || !PyList_Check(*pkeys) || !PyList_Check(*raws)
            || !PyList_Check(*miss) || !PyList_Check(*skeys))
        goto bad;
    Py_ssize_t n = PyList_GET_SIZE(*plans);
    if (n < 1 || PyList_GET_SIZE(*miss) != n || PyList_GET_SIZE(*skeys) != n || nbufs != n
            || PyList_GET_SIZE(*pkeys) != PyList_GET_SIZE(*raws))
        goto bad;
    bounds[0] = 0;
    for (Py_ssize_t t = 0; t < n; t++) {
        PyObject *p = PyList_GET_ITEM(*plans, t);
        if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 6 || !PyList_Check(PyTuple_GET_ITEM(p, 2)))
            goto bad;
        Py_ssize_t k = PyList_GET_SIZE(PyTuple_GET_ITEM(p, 2));
        if (k < 1 || k > MAX_SINGLE_LISTS) goto bad;
        bounds[t + 1] = bounds[t] + k;
        Py_ssize_t j = PyLong_AsSsize_t(PyList_GET_ITEM(*miss, t));
        if (j == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
            PyErr_Clear();
            goto bad;
        }
        if (j < bounds[t] || j >= bounds[t + 1] || j >= PyList_GET_SIZE(*raws)) goto bad;
    }
    if (bounds[n] != PyList_GET_SIZE(*raws)) goto bad;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "finish: not a state plan made for these reads");
    return -1;
}

/* The refs of each block from single_selections's (refs, uint32 refs) pairs, and the
 * expanded-postings entries kept of them (select_many's insert). */
static PyObject *selections(PyObject *cache, PyObject *pairs, PyObject *skeys, int short_enough) {
    Py_ssize_t n = PyList_GET_SIZE(skeys);
    if (!PyList_CheckExact(pairs) || PyList_GET_SIZE(pairs) != n) {
        PyErr_SetString(PyExc_TypeError, "single_selections: one pair per selection");
        return NULL;
    }
    PyObject *out = PyList_New(n), *kkeys = PyList_New(0), *kvals = PyList_New(0), *mb = NULL;
    if (out == NULL || kkeys == NULL || kvals == NULL) goto fail;
    for (Py_ssize_t t = 0; t < n; t++) {
        PyObject *pair = PyList_GET_ITEM(pairs, t);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "single_selections: (refs, kept) pairs");
            goto fail;
        }
        PyObject *refs = PyTuple_GET_ITEM(pair, 0);
        int any = PyObject_IsTrue(refs);
        if (any < 0) goto fail;
        PyObject *arr = any ? PyObject_CallFunctionObjArgs(f_frombuffer, refs, o_int64, NULL)
                            : Py_NewRef(o_empty);
        if (arr == NULL) goto fail;
        PyList_SET_ITEM(out, t, arr);
    }
    /* select_many: kept[i] if shorts[i] and len(kept[i]) <= cache.max_bytes // 64 */
    if (short_enough) {
        if ((mb = PyObject_GetAttr(cache, s_max_bytes)) == NULL) goto fail;
        PyObject *sixty_four = PyLong_FromLong(64);
        if (sixty_four == NULL) goto fail;
        PyObject *cap = PyNumber_FloorDivide(mb, sixty_four);
        Py_DECREF(sixty_four);
        if (cap == NULL) goto fail;
        for (Py_ssize_t t = 0; t < n; t++) {
            PyObject *u32 = PyTuple_GET_ITEM(PyList_GET_ITEM(pairs, t), 1);
            Py_ssize_t len = PyObject_Length(u32);
            PyObject *lo = len < 0 ? NULL : PyLong_FromSsize_t(len);
            int fits = lo == NULL ? -1 : PyObject_RichCompareBool(lo, cap, Py_LE);
            Py_XDECREF(lo);
            if (fits < 0) { Py_DECREF(cap); goto fail; }
            if (fits && (PyList_Append(kkeys, PyList_GET_ITEM(skeys, t)) < 0
                         || PyList_Append(kvals, u32) < 0)) {
                Py_DECREF(cap);
                goto fail;
            }
        }
        Py_DECREF(cap);
    }
    if (PyList_GET_SIZE(kkeys) && put(cache, kkeys, kvals, s_expanded) < 0) goto fail;
    Py_XDECREF(mb); Py_DECREF(kkeys); Py_DECREF(kvals);
    return out;
fail:
    Py_XDECREF(mb); Py_XDECREF(out); Py_XDECREF(kkeys); Py_XDECREF(kvals);
    return NULL;
}

static PyObject *py_finish(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "finish(state, bufs: list, cache)");
        return NULL;
    }
    if (!bound()) return NULL;
    PyObject *bufs = args[1], *cache = args[2];
    PyObject *plans, *pkeys, *raws, *miss, *skeys;
    int short_enough;
    Py_ssize_t n = PyList_GET_SIZE(bufs);
    Py_ssize_t *bounds = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1));
    if (bounds == NULL) return PyErr_NoMemory();
    PyObject *lists = NULL, *mkeys = NULL, *groups = NULL, *pairs = NULL, *out = NULL;
    if (unpack_state(args[0], n, &plans, &pkeys, &raws, &miss, &skeys, &short_enough, bounds) < 0)
        goto done;
    for (Py_ssize_t t = 0; t < n; t++)
        if (!PyBytes_Check(PyList_GET_ITEM(bufs, t))) { out = Py_NewRef(Py_None); goto done; }
    lists = PyObject_CallOneArg(f_checked, bufs);
    if (lists == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) { PyErr_Clear(); out = Py_NewRef(Py_None); }
        goto done;
    }
    if (!PyList_CheckExact(lists) || PyList_GET_SIZE(lists) != n) {
        PyErr_SetString(PyExc_TypeError, "checked_postings: one list per read");
        goto done;
    }
    if ((mkeys = PyList_New(n)) == NULL) goto done;
    for (Py_ssize_t t = 0; t < n; t++) {  /* (positions checked by unpack_state) */
        Py_ssize_t j = PyLong_AsSsize_t(PyList_GET_ITEM(miss, t));
        PyObject *key = PyList_GetItem(pkeys, j);  /* (checked again: a replaced value's */
        if (key == NULL) goto done;                /* release may run Python code) */
        PyList_SET_ITEM(mkeys, t, Py_NewRef(key));
        if (PyList_SetItem(raws, j, Py_NewRef(PyList_GET_ITEM(lists, t))) < 0) goto done;
    }
    if (put(cache, mkeys, lists, s_postings) < 0) goto done;
    if (PyList_GET_SIZE(raws) != bounds[n]) {  /* (a put cannot change it; checked anyway) */
        PyErr_SetString(PyExc_ValueError, "finish: raws changed size");
        goto done;
    }
    if ((groups = PyList_New(n)) == NULL) goto done;
    for (Py_ssize_t t = 0; t < n; t++) {
        PyObject *g = PyList_GetSlice(raws, bounds[t], bounds[t + 1]);
        if (g == NULL) goto done;
        PyList_SET_ITEM(groups, t, g);
    }
    if ((pairs = PyObject_CallOneArg(f_singles, groups)) == NULL) goto done;
    out = selections(cache, pairs, skeys, short_enough);
done:
    PyMem_Free(bounds);
    Py_XDECREF(lists); Py_XDECREF(mkeys); Py_XDECREF(groups); Py_XDECREF(pairs);
    return out;
}

/* bind(lookup, put_many, eq_plans, checked_postings, single_selections, PostingsPlan,
 *      LRUCache, MatchType.EQ, np.frombuffer, np.int64, EMPTY, ENTRY_OVERHEAD,
 *      MAX_KEY_MATCHER_CHARS) */
static PyObject *py_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 13 || !PyType_Check(args[5]) || !PyType_Check(args[6])
            || !PyType_IsSubtype((PyTypeObject *)args[5], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "bind(lookup, put_many, eq_plans, checked_postings, "
                        "single_selections, plan_type (a tuple type), lru_type, eq, frombuffer, "
                        "int64, empty, overhead, max_key_chars)");
        return NULL;
    }
    Py_ssize_t max_chars = PyLong_AsSsize_t(args[12]);
    if (max_chars == -1 && PyErr_Occurred()) return NULL;
    max_key_chars = max_chars;
    PyObject **slots[12] = {&f_lookup, &f_put_many, &f_eq_plans, &f_checked, &f_singles, &t_plan,
                            &t_lru, &o_eq, &f_frombuffer, &o_int64, &o_empty, &o_overhead};
    for (int i = 0; i < 12; i++) Py_XSETREF(*slots[i], Py_NewRef(args[i]));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"plan", (PyCFunction)(void (*)(void))py_plan, METH_FASTCALL,
     "plan(blocks, matchers, cache) -> None or (read requests, state): the cold one-series "
     "selection up to its reads, or None (nothing done) when it is not that case."},
    {"finish", (PyCFunction)(void (*)(void))py_finish, METH_FASTCALL,
     "finish(state, bufs, cache) -> each block's refs, or None (nothing done) when a read "
     "failed or is broken."},
    {"bind", (PyCFunction)(void (*)(void))py_bind, METH_FASTCALL,
     "bind(...): the callables and types plan and finish use (store/coldselect.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_coldselect", NULL, -1, methods};

PyMODINIT_FUNC PyInit__coldselect(void) {
    struct { PyObject **slot; const char *s; } strs[] = {
        {&s_postings, "postings"}, {&s_expanded, "expanded_postings"}, {&s_every, ""},
        {&s_d, "_d"}, {&s_requests, "_requests"}, {&s_hits, "_hits"}, {&s_types, "_types"},
        {&s_size, "size"}, {&s_max_bytes, "max_bytes"}, {&s_m, "_m"}, {&s_added, "added"},
        {&s_evicted, "evicted"}, {&s_counts, "counts"}, {&s_ulid, "ulid"},
        {&s_header, "header"}, {&s_eq_state, "eq_state"}, {&s_bucket, "bucket"},
        {&s_index_name, "index_name"}, {&s_type, "type"}, {&s_name, "name"}, {&s_colon, ":"},
        {&s_value, "value"},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if ((*strs[i].slot = PyUnicode_InternFromString(strs[i].s)) == NULL) return NULL;
    return PyModule_Create(&moduledef);
}
