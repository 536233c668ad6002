/* Kernels of the store gateway's lazy index-header (store/indexheader.py).
 *
 * Why C: the index-header's symbol table and postings offset table hold about one entry per
 * distinct label value -- millions in a large block. Keeping a Python str per entry costs
 * ~60-100 bytes each; instead the header file stays on disk (mmapped) and only a uint32
 * position per string is kept in a numpy array. These functions build those position arrays
 * in one pass and decode just the strings a query needs, in batches.
 *
 * Position arrays are native-endian uint32 arrays of offsets relative to a section base.
 * Only the CPython C API and the buffer protocol are used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static inline int get_uvarint(const uint8_t *p, size_t n, size_t *i, uint64_t *out) {
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*i >= n) return -1;
        uint8_t c = p[(*i)++];
        x |= (uint64_t)(c & 0x7F) << shift;
        if (c < 0x80) { *out = x; return 0; }
    }
    return -1;
}

/* string_positions(buf, off, count, end) -> bytes: uint32[count], the position (relative to
 * off) of each of `count` uvarint-prefixed strings starting at off, none reaching past end. */
static PyObject *py_string_positions(PyObject *self, PyObject *args) {
    Py_buffer v; long long off, end; Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*LnL", &v, &off, &count, &end)) return NULL;
    const uint8_t *p = v.buf;
    size_t n = (size_t)(end < v.len ? end : v.len), i = (size_t)off;
    PyObject *out = NULL;
    if (off < 0 || count < 0 || (size_t)off > n || (size_t)count > n - (size_t)off
            || n - (size_t)off > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "string count exceeds its section");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, count * 4);
    if (!out) goto done;
    uint32_t *o = (uint32_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t k = 0; k < count; k++) {
        uint64_t l;
        o[k] = (uint32_t)(i - (size_t)off);
        if (get_uvarint(p, n, &i, &l) || l > n - i) {
            PyErr_SetString(PyExc_ValueError, "string table runs past its section");
            Py_CLEAR(out); goto done;
        }
        i += l;
    }
done:
    PyBuffer_Release(&v);
    return out;
}

/* offset_table_positions(buf, off, count, end) -> (names, runs, value_pos, postings)
 * Postings offset table entries (2 keys: name, value; then the postings offset) from off:
 * names: list[str], one per run of equal consecutive names; runs: int64[len(names) + 1],
 * entry index where each run starts (and count); value_pos: uint32[count], position of each
 * value's uvarint prefix relative to off; postings: int64[count], postings list offsets, or
 * uint32[count] with `narrow` (an index under 4 GiB: half the memory, no wider copy made). */
static PyObject *py_offset_table_positions(PyObject *self, PyObject *args) {
    Py_buffer v; long long off, end; Py_ssize_t count; int narrow = 0;
    if (!PyArg_ParseTuple(args, "y*LnL|p", &v, &off, &count, &end, &narrow)) return NULL;
    const uint8_t *p = v.buf;
    size_t n = (size_t)(end < v.len ? end : v.len), i = (size_t)off;
    PyObject *names = NULL, *runs = NULL, *vpos = NULL, *post = NULL;
    int64_t *r = NULL; size_t nruns = 0, cap = 16;
    if (off < 0 || count < 0 || (size_t)off > n || (size_t)count > (n - (size_t)off) / 4
            || n - (size_t)off > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "postings offset table count exceeds its section");
        goto fail;
    }
    names = PyList_New(0);
    vpos = PyBytes_FromStringAndSize(NULL, count * 4);
    post = PyBytes_FromStringAndSize(NULL, count * (narrow ? 4 : 8));
    r = PyMem_Malloc(cap * sizeof(int64_t));
    if (!names || !vpos || !post || !r) { if (!r) PyErr_NoMemory(); goto fail; }
    uint32_t *vp = (uint32_t *)PyBytes_AS_STRING(vpos);
    int64_t *po = (int64_t *)PyBytes_AS_STRING(post);
    uint32_t *po32 = (uint32_t *)PyBytes_AS_STRING(post);
    const uint8_t *last_p = NULL; uint64_t last_l = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        uint64_t keys, l1, l2, at;
        if (get_uvarint(p, n, &i, &keys)) goto corrupt;
        if (keys != 2) {
            PyErr_Format(PyExc_ValueError, "postings offset table: unexpected key count %llu",
                         (unsigned long long)keys);
            goto fail;
        }
        if (get_uvarint(p, n, &i, &l1) || l1 > n - i) goto corrupt;
        const uint8_t *np_ = p + i; i += l1;
        vp[k] = (uint32_t)(i - (size_t)off);
        if (get_uvarint(p, n, &i, &l2) || l2 > n - i) goto corrupt;
        i += l2;
        if (get_uvarint(p, n, &i, &at) || at > INT64_MAX) goto corrupt;
        if (narrow) {
            if (at > UINT32_MAX) {
                PyErr_SetString(PyExc_ValueError,
                                "postings offset outside the postings section");
                goto fail;
            }
            po32[k] = (uint32_t)at;
        } else {
            po[k] = (int64_t)at;
        }
        if (!(last_p && l1 == last_l && memcmp(np_, last_p, l1) == 0)) {
            PyObject *s = PyUnicode_DecodeUTF8((const char *)np_, (Py_ssize_t)l1, "strict");
            if (!s) goto fail;
            int bad = PyList_Append(names, s);
            Py_DECREF(s);
            if (bad) goto fail;
            if (nruns + 2 > cap) {
                cap *= 2;
                int64_t *nr = PyMem_Realloc(r, cap * sizeof(int64_t));
                if (!nr) { PyErr_NoMemory(); goto fail; }
                r = nr;
            }
            r[nruns++] = k;
            last_p = np_; last_l = l1;
        }
    }
    r[nruns] = count;
    runs = PyBytes_FromStringAndSize((const char *)r, (Py_ssize_t)((nruns + 1) * 8));
    if (!runs) goto fail;
    PyMem_Free(r);
    PyBuffer_Release(&v);
    return Py_BuildValue("(NNNN)", names, runs, vpos, post);
corrupt:
    PyErr_SetString(PyExc_ValueError, "postings offset table runs past its section");
fail:
    PyMem_Free(r);
    PyBuffer_Release(&v);
    Py_XDECREF(names); Py_XDECREF(vpos); Py_XDECREF(post);
    return NULL;
}

/* Decode the uvarint-prefixed UTF-8 string at p[base + pos], bounded by n. */
static PyObject *string_at(const uint8_t *p, size_t n, size_t base, uint32_t pos) {
    size_t i = base + pos;
    uint64_t l;
    if (get_uvarint(p, n, &i, &l) || l > n - i) {
        PyErr_SetString(PyExc_ValueError, "string runs past its section");
        return NULL;
    }
    return PyUnicode_DecodeUTF8((const char *)p + i, (Py_ssize_t)l, "strict");
}

typedef struct { Py_buffer buf, pos; size_t n, npos, base; } Table;

static int table_open(Table *t, PyObject *buf, long long base, PyObject *pos) {
    if (PyObject_GetBuffer(buf, &t->buf, PyBUF_SIMPLE)) return -1;
    if (PyObject_GetBuffer(pos, &t->pos, PyBUF_SIMPLE)) { PyBuffer_Release(&t->buf); return -1; }
    t->n = (size_t)t->buf.len; t->npos = (size_t)t->pos.len / 4;
    if (base < 0 || (size_t)base > t->n) {
        PyBuffer_Release(&t->buf); PyBuffer_Release(&t->pos);
        PyErr_SetString(PyExc_ValueError, "string table base outside the buffer");
        return -1;
    }
    t->base = (size_t)base;
    return 0;
}

static void table_close(Table *t) { PyBuffer_Release(&t->buf); PyBuffer_Release(&t->pos); }

static inline PyObject *table_get(Table *t, uint64_t k) {
    if (k >= t->npos) {
        PyErr_SetString(PyExc_IndexError, "unknown string id");
        return NULL;
    }
    return string_at(t->buf.buf, t->n, t->base, ((const uint32_t *)t->pos.buf)[k]);
}

/* strings_range(buf, base, positions, lo, hi) -> list[str]: strings lo..hi-1 of a table. */
static PyObject *py_strings_range(PyObject *self, PyObject *args) {
    PyObject *b, *pos; long long base; Py_ssize_t lo, hi;
    if (!PyArg_ParseTuple(args, "OLOnn", &b, &base, &pos, &lo, &hi)) return NULL;
    Table t;
    if (table_open(&t, b, base, pos)) return NULL;
    PyObject *out = NULL;
    if (lo < 0 || hi < lo || (size_t)hi > t.npos) {
        PyErr_SetString(PyExc_IndexError, "string range outside the table");
        goto done;
    }
    out = PyList_New(hi - lo);
    if (!out) goto done;
    for (Py_ssize_t k = lo; k < hi; k++) {
        PyObject *s = table_get(&t, (uint64_t)k);
        if (!s) { Py_CLEAR(out); goto done; }
        PyList_SET_ITEM(out, k - lo, s);
    }
done:
    table_close(&t);
    return out;
}

/* Position of the first string >= (v, vn) among strings lo..hi-1 of table t (sorted by UTF-8
 * bytes, which is code point order); *found whether it is equal. -1 (ValueError set) for a
 * string running past its section. Nothing is decoded: a lookup costs no Python object. */
static Py_ssize_t search_table(Table *t, Py_ssize_t lo, Py_ssize_t hi, const uint8_t *v,
                               size_t vn, int *found) {
    const uint8_t *p = t->buf.buf;
    const uint32_t *ps = t->pos.buf;
    *found = 0;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        size_t i = t->base + ps[mid];
        uint64_t l;
        if (get_uvarint(p, t->n, &i, &l) || l > t->n - i) {
            PyErr_SetString(PyExc_ValueError, "string runs past its section");
            return -1;
        }
        size_t m = (size_t)l < vn ? (size_t)l : vn;
        int c = memcmp(p + i, v, m);
        if (c == 0) c = (size_t)l < vn ? -1 : ((size_t)l > vn);
        if (c < 0) lo = mid + 1;
        else { hi = mid; if (c == 0) *found = 1; }
    }
    return lo;
}

/* label_sets(buf, base, positions, label_counts, sym_ids) -> list[tuple[tuple[str, str], ...]]
 * The label set of each series from decode_series_batch's flat arrays (int64 buffers): series
 * i has label_counts[i] (name id, value id) pairs in sym_ids. Decoded strings are shared
 * through a small direct-mapped cache, so names and common values are decoded once a call.
 * A pair with the same symbol ids as the previous series' pair at its position is that very
 * tuple (sorted series share most pairs: a query allocates only the ones that change). */
#define CACHE_SIZE 4096
static PyObject *py_label_sets(PyObject *self, PyObject *args) {
    PyObject *b, *pos, *lcb, *syb; long long base;
    if (!PyArg_ParseTuple(args, "OLOOO", &b, &base, &pos, &lcb, &syb)) return NULL;
    Table t;
    if (table_open(&t, b, base, pos)) return NULL;
    Py_buffer lc, sy;
    if (PyObject_GetBuffer(lcb, &lc, PyBUF_SIMPLE)) { table_close(&t); return NULL; }
    if (PyObject_GetBuffer(syb, &sy, PyBUF_SIMPLE)) { PyBuffer_Release(&lc); table_close(&t); return NULL; }
    const int64_t *counts = lc.buf, *ids = sy.buf;
    size_t ns = (size_t)lc.len / 8, nids = (size_t)sy.len / 8, at = 0;
    /* No bigger than the ids: a few series (a selective query) clear no 32 KiB table. */
    size_t cache_size = nids < CACHE_SIZE ? (nids ? nids : 1) : CACHE_SIZE;
    PyObject **cache = PyMem_Calloc(cache_size, sizeof(PyObject *));
    uint64_t *keys = PyMem_Malloc(cache_size * sizeof(uint64_t));
    PyObject *out = (cache && keys) ? PyList_New((Py_ssize_t)ns) : NULL;
    if (!cache || !keys) PyErr_NoMemory();
    int64_t prev_m = 0;  /* the previous series' label count and first symbol id */
    size_t prev_at = 0;
    for (size_t s = 0; out && s < ns; s++) {
        int64_t m = counts[s];
        size_t start = at;
        if (m < 0 || (size_t)m > (nids - at) / 2) {
            PyErr_SetString(PyExc_ValueError, "label counts disagree with the symbol ids");
            Py_CLEAR(out); break;
        }
        PyObject *tup = PyTuple_New((Py_ssize_t)m);
        if (!tup) { Py_CLEAR(out); break; }
        PyList_SET_ITEM(out, (Py_ssize_t)s, tup);
        for (int64_t k = 0; k < m; k++) {
            if (k < prev_m && ids[at] == ids[prev_at + 2 * k] && ids[at + 1] == ids[prev_at + 2 * k + 1]) {
                /* the same pair as the previous series' at this position: that tuple */
                PyObject *same = PyTuple_GET_ITEM(PyList_GET_ITEM(out, (Py_ssize_t)s - 1), k);
                PyTuple_SET_ITEM(tup, (Py_ssize_t)k, Py_NewRef(same));
                at += 2;
                continue;
            }
            PyObject *pair[2];
            for (int j = 0; j < 2; j++) {
                uint64_t id = (uint64_t)ids[at++];
                size_t h = (size_t)(id % cache_size);
                if (cache[h] && keys[h] == id) {
                    pair[j] = cache[h];
                } else {
                    PyObject *str = table_get(&t, id);
                    if (!str) { if (j) Py_DECREF(pair[0]); Py_CLEAR(out); goto done; }
                    Py_XSETREF(cache[h], str);
                    keys[h] = id;
                    pair[j] = str;
                }
                Py_INCREF(pair[j]);
            }
            PyObject *pt = PyTuple_New(2);
            if (!pt) { Py_DECREF(pair[0]); Py_DECREF(pair[1]); Py_CLEAR(out); goto done; }
            PyTuple_SET_ITEM(pt, 0, pair[0]);
            PyTuple_SET_ITEM(pt, 1, pair[1]);
            PyObject_GC_UnTrack(pt);  /* strings only: never part of a cycle */
            PyTuple_SET_ITEM(tup, (Py_ssize_t)k, pt);
        }
        PyObject_GC_UnTrack(tup);  /* tuples of such tuples: likewise; keeps GC passes short */
        prev_m = m;
        prev_at = start;
    }
done:
    if (cache) for (size_t h = 0; h < cache_size; h++) Py_XDECREF(cache[h]);
    PyMem_Free(cache); PyMem_Free(keys);
    PyBuffer_Release(&lc); PyBuffer_Release(&sy);
    table_close(&t);
    return out;
}

static inline long long offset_at(const Py_buffer *b, Py_ssize_t k) {
    return b->itemsize == 4 ? (long long)((const uint32_t *)b->buf)[k]
                            : (long long)((const int64_t *)b->buf)[k];
}

/* eq_postings_ranges(buf, base, positions, starts, ends, postings_end, runs, values)
 *   -> [(start, end), ...] | None
 * The postings list range of each name=value of a selection's equality matchers, in one call
 * (IndexHeader.postings_range for each): runs[k] is the (lo, hi) run of the name's values in
 * the offset table, values[k] the value as UTF-8 bytes; starts (uint32 or int64) the lists'
 * offsets by table position; ends (uint32 or int64) their ends, or None when each list ends
 * where the next starts (the last at postings_end). None when any value has no list. */
/* The ranges of one header's name=value pairs (see py_eq_postings_ranges): a new list, None
 * when a value has no list, or NULL with an error set. */
static PyObject *eq_ranges(PyObject *b, long long base, PyObject *pos, PyObject *starts_o,
                           PyObject *ends_o, long long pend, PyObject *runs, PyObject *values) {
    Py_ssize_t n = PyList_GET_SIZE(runs);
    if (PyList_GET_SIZE(values) != n) {
        PyErr_SetString(PyExc_ValueError, "eq_postings_ranges: runs and values differ in length");
        return NULL;
    }
    Table t;
    if (table_open(&t, b, base, pos)) return NULL;
    Py_buffer st = {0}, en = {0};
    int have_ends = ends_o != Py_None;
    PyObject *out = NULL;
    if (PyObject_GetBuffer(starts_o, &st, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS)) goto done;
    if (have_ends && PyObject_GetBuffer(ends_o, &en, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS)) {
        have_ends = 0; goto done;
    }
    Py_ssize_t count = st.itemsize ? st.len / st.itemsize : 0;
    if ((st.itemsize != 4 && st.itemsize != 8) || count != (Py_ssize_t)t.npos ||
        (have_ends && ((en.itemsize != 4 && en.itemsize != 8) ||
                       en.len / en.itemsize != count))) {
        PyErr_SetString(PyExc_ValueError, "eq_postings_ranges: offsets disagree with the table");
        goto done;
    }
    out = PyList_New(n);
    if (!out) goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t lo, hi;
        PyObject *run = PyList_GET_ITEM(runs, k), *v = PyList_GET_ITEM(values, k);
        if (!PyTuple_Check(run) || !PyArg_ParseTuple(run, "nn", &lo, &hi) || !PyBytes_Check(v)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "eq_postings_ranges: runs of (lo, hi), bytes values");
            Py_CLEAR(out); goto done;
        }
        if (lo < 0 || hi < lo || hi > count) {
            PyErr_SetString(PyExc_IndexError, "string range outside the table");
            Py_CLEAR(out); goto done;
        }
        int found;
        Py_ssize_t at = search_table(&t, lo, hi, (const uint8_t *)PyBytes_AS_STRING(v),
                                     (size_t)PyBytes_GET_SIZE(v), &found);
        if (at < 0) { Py_CLEAR(out); goto done; }
        if (!found) { Py_DECREF(out); out = Py_NewRef(Py_None); goto done; }
        long long s0 = offset_at(&st, at);
        long long e0 = have_ends ? offset_at(&en, at) : at + 1 < count ? offset_at(&st, at + 1) : pend;
        PyObject *r = Py_BuildValue("(LL)", s0, e0);
        if (!r) { Py_CLEAR(out); goto done; }
        PyList_SET_ITEM(out, k, r);
    }
done:
    if (st.obj) PyBuffer_Release(&st);
    if (have_ends && en.obj) PyBuffer_Release(&en);
    table_close(&t);
    return out;
}

static PyObject *py_eq_postings_ranges(PyObject *self, PyObject *args) {
    PyObject *b, *pos, *starts_o, *ends_o, *runs, *values; long long base, pend;
    if (!PyArg_ParseTuple(args, "OLOOOLO!O!", &b, &base, &pos, &starts_o, &ends_o, &pend,
                          &PyList_Type, &runs, &PyList_Type, &values))
        return NULL;
    return eq_ranges(b, base, pos, starts_o, ends_o, pend, runs, values);
}

/* One block's PostingsPlan of equality matchers from its ranges ``rs`` (one per matcher):
 * plan_type((list(zip(matchers, narrowing)), None, ranges, narrowing, True, in_order)) with
 * narrowing[k] = [rs[k]], ranges rs itself when strictly ascending (in_order), else its
 * distinct ranges sorted. A new reference, or NULL with an error set. */
static PyObject *eq_plan_of(PyObject *rs, PyObject *matchers, PyTypeObject *plan_type) {
    Py_ssize_t n = PyList_GET_SIZE(rs);
    PyObject *narrowing = PyList_New(n), *pairs = PyList_New(n), *ranges = NULL, *plan = NULL;
    if (!narrowing || !pairs) goto fail;
    int in_order = 1;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *r = PyList_GET_ITEM(rs, k);
        PyObject *one = PyList_New(1);
        if (!one) goto fail;
        PyList_SET_ITEM(one, 0, Py_NewRef(r));
        PyList_SET_ITEM(narrowing, k, one);
        PyObject *pair = PyTuple_Pack(2, PyList_GET_ITEM(matchers, k), one);
        if (!pair) goto fail;
        PyList_SET_ITEM(pairs, k, pair);
        if (k && in_order) {
            int lt = PyObject_RichCompareBool(PyList_GET_ITEM(rs, k - 1), r, Py_LT);
            if (lt < 0) goto fail;
            in_order = lt;
        }
    }
    if (in_order) {
        ranges = Py_NewRef(rs);
    } else {
        PyObject *set = PySet_New(rs);
        if (!set) goto fail;
        ranges = PySequence_List(set);
        Py_DECREF(set);
        if (!ranges || PyList_Sort(ranges)) goto fail;
    }
    plan = PyTuple_New(6);
    if (!plan) goto fail;
    PyTuple_SET_ITEM(plan, 0, pairs);
    PyTuple_SET_ITEM(plan, 1, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(plan, 2, ranges);
    PyTuple_SET_ITEM(plan, 3, narrowing);
    PyTuple_SET_ITEM(plan, 4, Py_NewRef(Py_True));
    PyTuple_SET_ITEM(plan, 5, Py_NewRef(in_order ? Py_True : Py_False));
    PyObject *typed = PyObject_CallMethod((PyObject *)&PyTuple_Type, "__new__", "OO",
                                          plan_type, plan);
    Py_DECREF(plan);
    return typed;
fail:
    Py_XDECREF(narrowing); Py_XDECREF(pairs); Py_XDECREF(ranges);
    return NULL;
}

/* eq_plans(states, names, values, matchers, plan_type) -> [plan | None | False, ...]
 * BucketBlock.eq_plan of one selection of equality matchers (``names[k]="values[k]"``, values
 * as UTF-8, ``matchers`` the Matchers) for many blocks in one call: states[i] is block i's
 * IndexHeader.eq_state, (buf, base, positions, starts, ends, postings_end, runs by name).
 * Each block gets its PostingsPlan, None when a name or value has no list (nothing to read),
 * or False when its index-header fails in any way (the error is dropped: that block's own
 * select runs and fails as it always has). */
static PyObject *py_eq_plans(PyObject *self, PyObject *args) {
    PyObject *states, *names, *values, *matchers; PyTypeObject *plan_type;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!", &PyList_Type, &states, &PyList_Type, &names,
                          &PyList_Type, &values, &PyList_Type, &matchers, &PyType_Type, &plan_type))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(names);
    if (PyList_GET_SIZE(values) != n || PyList_GET_SIZE(matchers) != n) {
        PyErr_SetString(PyExc_ValueError, "eq_plans: names, values and matchers differ in length");
        return NULL;
    }
    Py_ssize_t nb = PyList_GET_SIZE(states);
    PyObject *out = PyList_New(nb);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < nb; i++) {
        PyObject *st = PyList_GET_ITEM(states, i), *b, *pos, *starts_o, *ends_o, *by_name;
        long long base, pend;
        PyObject *got = NULL;
        if (!PyTuple_Check(st) || !PyArg_ParseTuple(st, "OLOOOLO!", &b, &base, &pos, &starts_o,
                                                    &ends_o, &pend, &PyDict_Type, &by_name)) {
            PyErr_Clear();
            PyList_SET_ITEM(out, i, Py_NewRef(Py_False));
            continue;
        }
        PyObject *runs = PyList_New(n);
        if (!runs) { Py_DECREF(out); return NULL; }
        int missing = 0;
        for (Py_ssize_t k = 0; k < n; k++) {
            PyObject *run = PyDict_GetItemWithError(by_name, PyList_GET_ITEM(names, k));
            if (!run) {
                if (PyErr_Occurred()) { Py_DECREF(runs); Py_DECREF(out); return NULL; }
                missing = 1;
                run = Py_None;
            }
            PyList_SET_ITEM(runs, k, Py_NewRef(run));
        }
        if (missing) {
            got = Py_NewRef(Py_None);
        } else {
            PyObject *rs = eq_ranges(b, base, pos, starts_o, ends_o, pend, runs, values);
            if (rs == Py_None) {
                got = rs;
            } else if (rs) {
                got = eq_plan_of(rs, matchers, plan_type);
                Py_DECREF(rs);
            }
        }
        Py_DECREF(runs);
        if (!got) {  /* a broken index-header (or out of memory): that block alone */
            if (PyErr_ExceptionMatches(PyExc_MemoryError)) { Py_DECREF(out); return NULL; }
            PyErr_Clear();
            got = Py_NewRef(Py_False);
        }
        PyList_SET_ITEM(out, i, got);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"string_positions", py_string_positions, METH_VARARGS, "Positions (uint32) of uvarint-prefixed strings."},
    {"offset_table_positions", py_offset_table_positions, METH_VARARGS, "Index a postings offset table without decoding its values."},
    {"strings_range", py_strings_range, METH_VARARGS, "Decode strings lo..hi-1 of a position table."},
    {"eq_postings_ranges", py_eq_postings_ranges, METH_VARARGS, "Postings ranges of name=value pairs."},
    {"eq_plans", py_eq_plans, METH_VARARGS, "Equality matchers' postings plans of many blocks."},
    {"label_sets", py_label_sets, METH_VARARGS, "Label sets of many series from flat symbol id arrays."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_indexheader", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__indexheader(void) { return PyModule_Create(&moduledef); }
