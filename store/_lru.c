/* The store's LRU cache steps (store/cache.py's LRUCache) over its OrderedDict, in one call each.
 *
 * Why C: a cold one-series query looks up and inserts a few items of a few kinds per block, and
 * the Python bookkeeping around each batch (sizes, replaced items, the budget, eviction counts
 * by item type, lookup counts) was about a tenth of the store's Python lines for it. These do
 * the same steps on the same objects in the same order: the OrderedDict (its own methods, so
 * its order is the one Python would leave), the item-type dict of keys that are not tuples, and
 * the plain count dicts the metrics read. Only the CPython C API is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *s_move_to_end, *s_popitem, *s_pop, *s_empty;

/* counts[key] = counts.get(key, 0) + n */
static int add_count(PyObject *counts, PyObject *key, Py_ssize_t n) {
    PyObject *old = PyDict_GetItemWithError(counts, key);
    if (old == NULL && PyErr_Occurred()) return -1;
    PyObject *nn = PyLong_FromSsize_t(n);
    if (nn == NULL) return -1;
    PyObject *sum = old == NULL ? (Py_INCREF(nn), nn) : PyNumber_Add(old, nn);
    Py_DECREF(nn);
    if (sum == NULL) return -1;
    int r = PyDict_SetItem(counts, key, sum);
    Py_DECREF(sum);
    return r;
}

static int move_to_end(PyObject *d, PyObject *key) {
    PyObject *r = PyObject_CallMethodOneArg(d, s_move_to_end, key);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *lookup_seq(PyObject *d, PyObject *keys, PyObject *item_type, PyObject *requests_counts,
                             PyObject *hits_counts, long mode) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys), nhit = 0;
    PyObject *found = PyList_New(n);
    if (found == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyDict_GetItemWithError(d, PySequence_Fast_GET_ITEM(keys, i));
        if (v == NULL) {
            if (PyErr_Occurred()) goto fail;
            if (mode == 2) { Py_DECREF(found); Py_RETURN_NONE; }
            v = Py_None;
        } else {
            nhit++;
        }
        Py_INCREF(v);
        PyList_SET_ITEM(found, i, v);
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyList_GET_ITEM(found, i) != Py_None
            && move_to_end(d, PySequence_Fast_GET_ITEM(keys, i)) < 0)
            goto fail;
    Py_ssize_t requests = mode == 0 ? n : nhit;
    if (mode == 1 && nhit == 0) return found;
    if (add_count(requests_counts, item_type, requests) < 0
        || add_count(hits_counts, item_type, nhit) < 0)
        goto fail;
    return found;
fail:
    Py_DECREF(found);
    return NULL;
}

/* lookup(d, keys, item_type, requests, hits, mode) -> list | None
 * mode 0 (get_many): every value or None; the hits moved to the end; all counted.
 * mode 1 (get_each): the same, counting (requests and hits) the hits only.
 * mode 2 (get_all): the values when every key is present (moved, counted as hits), else
 *                   None with nothing moved or counted. */
static PyObject *py_lookup(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyDict_Check(args[0]) || !PyDict_Check(args[3]) || !PyDict_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "lookup(d, keys, item_type, requests, hits, mode)");
        return NULL;
    }
    long mode = PyLong_AsLong(args[5]);
    if (mode == -1 && PyErr_Occurred()) return NULL;
    PyObject *keys = PySequence_Fast(args[1], "lookup: keys must be a sequence");
    if (keys == NULL) return NULL;  /* (a list or tuple is used as it is, not copied) */
    PyObject *found = lookup_seq(args[0], keys, args[2], args[3], args[4], mode);
    Py_DECREF(keys);
    return found;
}

static PyObject *put_seq(PyObject *const *args, PyObject *keys, PyObject *values) {
    PyObject *d = args[0], *types = args[1];
    PyObject *item_type = args[4], *added_counts = args[8], *evicted_counts = args[9];
    long long size = PyLong_AsLongLong(args[5]), max_bytes = PyLong_AsLongLong(args[6]);
    long long overhead = PyLong_AsLongLong(args[7]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys);
    if (n == 0) return PyLong_FromLongLong(size);
    long long fits = max_bytes - overhead;
    Py_ssize_t *lens = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)n);
    if (lens == NULL) return PyErr_NoMemory();
    PyObject *evicted = NULL;
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        lens[i] = PyObject_Length(PySequence_Fast_GET_ITEM(values, i));
        if (lens[i] < 0) goto fail;
        if (lens[i] <= fits) kept++;
    }
    if (kept == 0) goto done;
    /* the old values out first (a repeated key: found once) */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (lens[i] > fits) continue;
        PyObject *k = PySequence_Fast_GET_ITEM(keys, i);
        PyObject *old = PyDict_GetItemWithError(d, k);
        if (old == NULL) {
            if (PyErr_Occurred()) goto fail;
            continue;
        }
        Py_ssize_t olen = PyObject_Length(old);
        if (olen < 0 || PyObject_DelItem(d, k) < 0) goto fail;
        size -= olen + overhead;
    }
    Py_ssize_t before = PyDict_GET_SIZE(d);
    long long total = 0;
    int all_tuples = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (lens[i] > fits) continue;
        PyObject *k = PySequence_Fast_GET_ITEM(keys, i);
        if (PyObject_SetItem(d, k, PySequence_Fast_GET_ITEM(values, i)) < 0) goto fail;
        total += lens[i];
        if (!PyTuple_CheckExact(k)) all_tuples = 0;
    }
    if (!all_tuples) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *k = PySequence_Fast_GET_ITEM(keys, i);
            if (lens[i] <= fits && !PyTuple_CheckExact(k) && PyDict_SetItem(types, k, item_type) < 0)
                goto fail;
        }
    }
    if (PyDict_GET_SIZE(d) - before == kept) {
        size += total + (long long)kept * overhead;
    } else {  /* a key repeated within the batch: each counted once, at its last value */
        PyObject *seen = PySet_New(NULL);
        if (seen == NULL) goto fail;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *k = PySequence_Fast_GET_ITEM(keys, i);
            if (lens[i] > fits) continue;
            int has = PySet_Contains(seen, k);
            if (has < 0 || (!has && PySet_Add(seen, k) < 0)) { Py_DECREF(seen); goto fail; }
            if (has) continue;
            PyObject *v = PyDict_GetItemWithError(d, k);
            Py_ssize_t vl = v ? PyObject_Length(v) : -1;
            if (vl < 0) { Py_DECREF(seen); if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, k); goto fail; }
            size += vl + overhead;
        }
        Py_DECREF(seen);
    }
    evicted = PyDict_New();
    if (evicted == NULL) goto fail;
    while (size > max_bytes) {
        PyObject *kv = PyObject_CallMethodOneArg(d, s_popitem, Py_False);
        if (kv == NULL) goto fail;
        if (!PyTuple_Check(kv) || PyTuple_GET_SIZE(kv) != 2) { Py_DECREF(kv); PyErr_SetString(PyExc_TypeError, "popitem"); goto fail; }
        PyObject *k = PyTuple_GET_ITEM(kv, 0);
        Py_ssize_t vl = PyObject_Length(PyTuple_GET_ITEM(kv, 1));
        if (vl < 0) { Py_DECREF(kv); goto fail; }
        size -= vl + overhead;
        PyObject *t;
        if (PyTuple_CheckExact(k)) {
            if (PyTuple_GET_SIZE(k) < 2) { Py_DECREF(kv); PyErr_SetString(PyExc_IndexError, "tuple index out of range"); goto fail; }
            t = PyTuple_GET_ITEM(k, 1);
            Py_INCREF(t);
        } else {
            t = PyObject_CallMethodObjArgs(types, s_pop, k, s_empty, NULL);
            if (t == NULL) { Py_DECREF(kv); goto fail; }
        }
        int r = add_count(evicted, t, 1);
        Py_DECREF(t);
        Py_DECREF(kv);
        if (r < 0) goto fail;
    }
    if (added_counts != Py_None) {
        if (!PyDict_Check(added_counts) || !PyDict_Check(evicted_counts)) {
            PyErr_SetString(PyExc_TypeError, "added and evicted: dicts or None");
            goto fail;
        }
        if (add_count(added_counts, item_type, kept) < 0) goto fail;
        PyObject *t, *c;
        Py_ssize_t pos = 0;
        while (PyDict_Next(evicted, &pos, &t, &c))
            if (add_count(evicted_counts, t, PyLong_AsSsize_t(c)) < 0) goto fail;
    }
done:
    Py_XDECREF(evicted);
    PyMem_Free(lens);
    return PyLong_FromLongLong(size);
fail:
    Py_XDECREF(evicted);
    PyMem_Free(lens);
    return NULL;
}

/* put_many(d, types, keys, values, item_type, size, max_bytes, overhead, added, evicted)
 *   -> size after the batch
 * LRUCache.put_many's steps: items larger than the budget left out; the old values of the
 * keys taken out first, then every item put at the end (a key repeated in the batch keeps its
 * last value); non-tuple keys' item type kept in `types`; the oldest items evicted while over
 * budget, counted by item type (a tuple key's second field, else `types`'s) in `evicted`, and
 * the items put counted in `added` (both None without metrics). */
static PyObject *py_put_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10 || !PyDict_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "put_many(d, types, keys, values, item_type, size, "
                        "max_bytes, overhead, added, evicted)");
        return NULL;
    }
    PyObject *keys = PySequence_Fast(args[2], "put_many: keys must be a sequence");
    if (keys == NULL) return NULL;
    PyObject *values = PySequence_Fast(args[3], "put_many: values must be a sequence");
    if (values == NULL) { Py_DECREF(keys); return NULL; }
    PyObject *out = NULL;
    if (PySequence_Fast_GET_SIZE(keys) != PySequence_Fast_GET_SIZE(values))
        PyErr_SetString(PyExc_ValueError, "put_many: as many values as keys");
    else
        out = put_seq(args, keys, values);
    Py_DECREF(keys);
    Py_DECREF(values);
    return out;
}

static PyMethodDef methods[] = {
    {"lookup", (PyCFunction)(void (*)(void))py_lookup, METH_FASTCALL,
     "lookup(d, keys, item_type, requests, hits, mode): LRUCache.get_many (mode 0), get_each (1) "
     "or get_all (2) over the OrderedDict d, counting into the two dicts."},
    {"put_many", (PyCFunction)(void (*)(void))py_put_many, METH_FASTCALL,
     "put_many(d, types, keys, values, item_type, size, max_bytes, overhead, added, evicted): "
     "LRUCache.put_many's steps; returns the size after them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_lru", NULL, -1, methods};

PyMODINIT_FUNC PyInit__lru(void) {
    if ((s_move_to_end = PyUnicode_InternFromString("move_to_end")) == NULL
        || (s_popitem = PyUnicode_InternFromString("popitem")) == NULL
        || (s_pop = PyUnicode_InternFromString("pop")) == NULL
        || (s_empty = PyUnicode_InternFromString("")) == NULL)
        return NULL;
    return PyModule_Create(&moduledef);
}
