/* Cutting the items (postings lists, series entries, chunks) out of one coalesced ranged read
 * of a block's index or chunk segment (store/block.py).
 *
 * Why C: a cold query reads thousands of items per block in a few large ranges; framing each
 * one (a length prefix to decode) and copying it out in a Python loop cost more than reading
 * the bytes. One call per range does all of it.
 *
 * Only the CPython C API and the buffer protocol are used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { KIND_POSTINGS = 0, KIND_SERIES = 1, KIND_CHUNK = 2 };

/* 0 and the value at *i (advanced past it); 1 when the buffer ends inside it; -1 when it
 * overflows 64 bits. */
static inline int get_uvarint(const uint8_t *p, size_t n, size_t *i, uint64_t *out) {
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*i >= n) return 1;
        uint8_t c = p[(*i)++];
        x |= (uint64_t)(c & 0x7F) << shift;
        if (c < 0x80) { *out = x; return 0; }
    }
    return -1;
}

/* Total length of the item of `kind` at p[at], -1 when its length prefix is cut off by the
 * end of the buffer, -2 on an overflowing length. */
static inline int64_t item_len(const uint8_t *p, size_t n, size_t at, int kind) {
    if (kind == KIND_POSTINGS) {
        if (at + 4 > n) return -1;
        uint32_t ln = ((uint32_t)p[at] << 24) | ((uint32_t)p[at + 1] << 16)
                      | ((uint32_t)p[at + 2] << 8) | (uint32_t)p[at + 3];
        return 8 + (int64_t)ln;
    }
    size_t i = at;
    uint64_t ln;
    int r = get_uvarint(p, n, &i, &ln);
    if (r > 0) return -1;
    if (r < 0 || ln > ((uint64_t)1 << 40)) return -2;
    return (int64_t)(i - at) + (int64_t)ln + (kind == KIND_CHUNK ? 5 : 4);
}

/* split_items(buf, rels, kind) -> (items, lengths)
 * rels: native int64 offsets into buf of the items' starts. items: list with each item's
 * bytes, or None when it does not lie wholly inside buf; lengths: int64 per item, its total
 * length (-1 when even its length prefix is cut off), so the caller can read the rest. */
static PyObject *py_split_items(PyObject *self, PyObject *args) {
    Py_buffer b, r;
    int kind;
    if (!PyArg_ParseTuple(args, "y*y*i", &b, &r, &kind)) return NULL;
    PyObject *items = NULL, *lens = NULL, *out = NULL;
    const uint8_t *p = b.buf;
    size_t n = (size_t)b.len;
    Py_ssize_t count = r.len / (Py_ssize_t)sizeof(int64_t);
    if (kind < KIND_POSTINGS || kind > KIND_CHUNK || r.len % (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "split_items: bad kind or offsets");
        goto done;
    }
    items = PyList_New(count);
    lens = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int64_t));
    if (!items || !lens) goto done;
    int64_t *lo = (int64_t *)PyBytes_AS_STRING(lens);
    const int64_t *rel = r.buf;
    for (Py_ssize_t k = 0; k < count; k++) {
        int64_t at = rel[k], ln = -1;
        PyObject *item = NULL;
        if (at < 0) {
            PyErr_SetString(PyExc_ValueError, "split_items: negative offset");
            goto done;
        }
        if ((uint64_t)at < n) {
            ln = item_len(p, n, (size_t)at, kind);
            if (ln == -2) {
                PyErr_SetString(PyExc_ValueError, "item length overflows");
                goto done;
            }
        }
        lo[k] = ln;
        if (ln >= 0 && (uint64_t)at + (uint64_t)ln <= n) {
            item = PyBytes_FromStringAndSize((const char *)p + at, (Py_ssize_t)ln);
            if (!item) goto done;
        } else {
            item = Py_NewRef(Py_None);
        }
        PyList_SET_ITEM(items, k, item);
    }
    out = PyTuple_Pack(2, items, lens);
done:
    Py_XDECREF(items);
    Py_XDECREF(lens);
    PyBuffer_Release(&b);
    PyBuffer_Release(&r);
    return out;
}

/* chunk_tuples(mints, maxts, datas) -> [(mint, maxt, data), ...] of three equally long lists,
 * like list(zip(...)), except that a tuple whose data is exact bytes (its times are ints) is
 * untracked by the garbage collector at once: it can never be part of a cycle, and a large
 * Series answer holds tens of thousands of them, which every young collection would otherwise
 * walk, touching each chunk's bytes (as CPython does only at their first collection). */
static PyObject *py_chunk_tuples(PyObject *self, PyObject *args) {
    PyObject *mints, *maxts, *datas;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &mints, &PyList_Type, &maxts,
                          &PyList_Type, &datas))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(mints);
    if (PyList_GET_SIZE(maxts) != n || PyList_GET_SIZE(datas) != n) {
        PyErr_SetString(PyExc_ValueError, "chunk_tuples: lists of different lengths");
        return NULL;
    }
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyList_GET_ITEM(mints, i), *z = PyList_GET_ITEM(maxts, i),
                 *d = PyList_GET_ITEM(datas, i);
        PyObject *t = PyTuple_Pack(3, a, z, d);
        if (!t) { Py_DECREF(out); return NULL; }
        if (PyBytes_CheckExact(d) && PyLong_CheckExact(a) && PyLong_CheckExact(z))
            PyObject_GC_UnTrack(t);
        PyList_SET_ITEM(out, i, t);
    }
    return out;
}

/* Count of a raw postings list (4-byte length, 4-byte count, big-endian uint32 refs,
 * checksum), or -1 (ValueError set) when the list is too short for it. */
static int64_t postings_count(const Py_buffer *b, const char *who) {
    const uint8_t *p = b->buf;
    if (b->len < 12) {
        PyErr_Format(PyExc_ValueError, "%s: bad postings list", who);
        return -1;
    }
    uint32_t count = ((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) | ((uint32_t)p[6] << 8)
                     | (uint32_t)p[7];
    if ((uint64_t)count * 4 > (uint64_t)b->len - 12) {
        PyErr_Format(PyExc_ValueError, "%s: count exceeds the list", who);
        return -1;
    }
    return count;
}

static inline uint32_t be32(const uint8_t *q) {
    return ((uint32_t)q[0] << 24) | ((uint32_t)q[1] << 16) | ((uint32_t)q[2] << 8) | (uint32_t)q[3];
}

/* Whether the big-endian uint32 refs v[*lo..count) hold want; *lo moves to where the search
 * ended (wants ascend, so the next search starts there). */
static inline int holds_ref(const uint8_t *v, size_t count, size_t *lo, int64_t want) {
    if (want < 0 || want > 0xFFFFFFFFLL) return 0;
    size_t a = *lo, z = count;
    while (a < z) {
        size_t m = a + (z - a) / 2;
        if ((int64_t)be32(v + 4 * m) < want) a = m + 1; else z = m;
    }
    *lo = a;
    return a < count && (int64_t)be32(v + 4 * a) == want;
}

/* in_postings(refs, raw) -> bytes: the native int64 refs (sorted ascending) that the postings
 * list raw (one whole list, as checked when read) holds, in order, as native int64s. A
 * selective matcher's few refs are looked up by binary search in a long list (a metric
 * name's) where they lie, instead of decoding all of it to intersect: that decode was most of
 * a cold one-series block read. */
static PyObject *py_in_postings(PyObject *self, PyObject *args) {
    Py_buffer r, b;
    if (!PyArg_ParseTuple(args, "y*y*", &r, &b)) return NULL;
    PyObject *out = NULL;
    if (r.len % (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "in_postings: bad refs or postings list");
        goto done;
    }
    int64_t count = postings_count(&b, "in_postings");
    if (count < 0) goto done;
    const uint8_t *v = (const uint8_t *)b.buf + 8;
    Py_ssize_t n = r.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *refs = r.buf;
    out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (!out) goto done;
    int64_t *o = (int64_t *)PyBytes_AS_STRING(out);
    Py_ssize_t kept = 0;
    size_t lo = 0;
    for (Py_ssize_t k = 0; k < n; k++)
        if (holds_ref(v, (size_t)count, &lo, refs[k])) o[kept++] = refs[k];
    if (kept < n && _PyBytes_Resize(&out, kept * (Py_ssize_t)sizeof(int64_t)) < 0) out = NULL;
done:
    PyBuffer_Release(&r);
    PyBuffer_Release(&b);
    return out;
}

/* both_postings(short, long) -> bytes: the refs of raw postings list short that raw list long
 * also holds, as native int64s, ascending: a cold one-series selection's two lists (instance,
 * metric name) intersected without decoding either into an array first. */
static PyObject *py_both_postings(PyObject *self, PyObject *args) {
    Py_buffer s, b;
    if (!PyArg_ParseTuple(args, "y*y*", &s, &b)) return NULL;
    PyObject *out = NULL;
    int64_t ns = postings_count(&s, "both_postings");
    int64_t nb = ns < 0 ? -1 : postings_count(&b, "both_postings");
    if (nb < 0) goto done;
    const uint8_t *vs = (const uint8_t *)s.buf + 8, *vb = (const uint8_t *)b.buf + 8;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)ns * (Py_ssize_t)sizeof(int64_t));
    if (!out) goto done;
    int64_t *o = (int64_t *)PyBytes_AS_STRING(out);
    Py_ssize_t kept = 0;
    size_t lo = 0;
    for (int64_t k = 0; k < ns; k++) {
        int64_t want = (int64_t)be32(vs + 4 * k);
        if (holds_ref(vb, (size_t)nb, &lo, want)) o[kept++] = want;
    }
    if (kept < ns && _PyBytes_Resize(&out, kept * (Py_ssize_t)sizeof(int64_t)) < 0) out = NULL;
done:
    PyBuffer_Release(&s);
    PyBuffer_Release(&b);
    return out;
}

/* The refs of one selection whose matchers each read one postings list, as the stable
 * shortest-first pass of combine_single finds them: those of the shortest list that the
 * next shortest holds, then the next, ...; as native int64s in *out (room for the shortest
 * list's count). Their number, or -1 with ValueError set. */
static Py_ssize_t single_refs(PyObject *lists, int64_t **out) {
    Py_ssize_t n = PyList_GET_SIZE(lists);
    if (n < 1 || n > 64) {
        PyErr_SetString(PyExc_ValueError, "single_selections: 1 to 64 lists per selection");
        return -1;
    }
    Py_buffer bufs[64];
    int64_t counts[64];
    Py_ssize_t got = 0, kept = -1;
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(lists, got), &bufs[got], PyBUF_SIMPLE) < 0)
            goto done;
        counts[got] = postings_count(&bufs[got], "single_selections");
        if (counts[got] < 0) { got++; goto done; }
    }
    Py_ssize_t order[64];  /* list indexes by length, ties in their order (a stable sort) */
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_ssize_t at = j;
        while (at > 0 && bufs[order[at - 1]].len > bufs[j].len) { order[at] = order[at - 1]; at--; }
        order[at] = j;
    }
    Py_ssize_t best = order[0];
    *out = PyMem_Malloc((size_t)(counts[best] ? counts[best] : 1) * sizeof(int64_t));
    if (!*out) { PyErr_NoMemory(); goto done; }
    const uint8_t *vs = (const uint8_t *)bufs[best].buf + 8;
    size_t los[64] = {0};
    kept = 0;
    for (int64_t k = 0; k < counts[best]; k++) {
        int64_t want = (int64_t)be32(vs + 4 * k);
        int all = 1;
        for (Py_ssize_t o = 1; o < n && all; o++) {
            Py_ssize_t j = order[o];
            all = holds_ref((const uint8_t *)bufs[j].buf + 8, (size_t)counts[j], &los[j], want);
        }
        if (all) (*out)[kept++] = want;
    }
done:
    for (Py_ssize_t j = 0; j < got; j++) PyBuffer_Release(&bufs[j]);
    return kept;
}

/* single_selections(groups) -> [(refs, kept), ...]: for each selection (a list of its raw
 * postings lists, each checked when read, one per matcher) the refs every list holds as
 * native int64 bytes and as uint32 bytes (what the expanded-postings cache keeps; None when
 * a ref does not fit). A cold one-series request's selections over all its blocks in one
 * call, not two Python calls and a handful of C ones per block. */
static PyObject *py_single_selections(PyObject *self, PyObject *args) {
    PyObject *groups, *out;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &groups)
            || !(out = PyList_New(PyList_GET_SIZE(groups))))
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(out); i++) {
        PyObject *lists = PyList_GET_ITEM(groups, i);
        int64_t *refs = NULL;
        if (!PyList_Check(lists)) {
            PyErr_SetString(PyExc_TypeError, "single_selections: a list of lists");
            goto fail;
        }
        Py_ssize_t k = single_refs(lists, &refs);
        if (k < 0) { PyMem_Free(refs); goto fail; }
        PyObject *r = PyBytes_FromStringAndSize((const char *)refs, k * (Py_ssize_t)sizeof(int64_t));
        PyObject *u = PyBytes_FromStringAndSize(NULL, k * (Py_ssize_t)sizeof(uint32_t));
        if (r && u) {
            uint32_t *q = (uint32_t *)PyBytes_AS_STRING(u);
            for (Py_ssize_t j = 0; j < k; j++) q[j] = (uint32_t)refs[j];  /* (be32: fits) */
        }
        PyMem_Free(refs);
        PyObject *t = (r && u) ? PyTuple_Pack(2, r, u) : NULL;
        Py_XDECREF(r);
        Py_XDECREF(u);
        if (!t) goto fail;
        PyList_SET_ITEM(out, i, t);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* item_reads(ids, mask, mul, estimate, lo, hi, max_gap, max_size) -> [(start, end, a, z, rels)]
 * or None. The ranged reads of a few items (a one-series selection's series entries or chunks)
 * at the sorted refs `ids` (a list of ints): item k starts at (ids[k] & mask) * mul and is
 * assumed to end `estimate` bytes on, or at the next item, or at `hi`, whichever comes first;
 * items whose ranges are at most `max_gap` apart share a read, which is also cut about every
 * `max_size` bytes (store.block._small_spans and store.ranges.coalesce, in one call). Each
 * read: [start, end) of the object, its items ids[a:z], and their offsets in it as native
 * int64 bytes (split_items's `rels`). None when an item starts outside [lo, hi) (the caller's
 * own path then raises the block's error).
 * With `keep` (ascending indices into ids: the items not cached), only those are read, each
 * still assumed to end at the next of all items (as a block's own read works out the spans of
 * all its refs, then coalesces those it misses); a and z then index `keep`. */
#define MAX_SMALL_ITEMS 4096
static PyObject *py_item_reads(PyObject *self, PyObject *args) {
    PyObject *ids, *keep = NULL;
    unsigned long long mask;
    long long mul, est, lo, hi, max_gap, max_size;
    if (!PyArg_ParseTuple(args, "O!KLLLLLL|O!", &PyList_Type, &ids, &mask, &mul, &est, &lo, &hi,
                          &max_gap, &max_size, &PyList_Type, &keep))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(ids);
    if (n == 0 || n > MAX_SMALL_ITEMS || mul <= 0 || est < 0 || max_size <= 0) {
        PyErr_SetString(PyExc_ValueError, "item_reads: bad arguments");
        return NULL;
    }
    int64_t starts[MAX_SMALL_ITEMS], reach[MAX_SMALL_ITEMS];
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned long long id = PyLong_AsUnsignedLongLongMask(PyList_GET_ITEM(ids, k));
        if (id == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
        unsigned long long off = id & mask;
        if (off > (unsigned long long)(INT64_MAX / mul)) Py_RETURN_NONE;
        starts[k] = (int64_t)off * mul;
    }
    if (starts[0] < lo || starts[n - 1] >= hi) Py_RETURN_NONE;
    for (Py_ssize_t k = 0; k < n; k++) {  /* (reach: each item's end, for now) */
        int64_t e = starts[k] > hi - est ? hi : starts[k] + est;
        if (k + 1 < n && starts[k + 1] < e) e = starts[k + 1];
        reach[k] = e;
    }
    if (keep != NULL) {  /* only the kept items, in place */
        Py_ssize_t m = PyList_GET_SIZE(keep), prev = -1;
        if (m == 0 || m > n) {
            PyErr_SetString(PyExc_ValueError, "item_reads: bad keep");
            return NULL;
        }
        for (Py_ssize_t j = 0; j < m; j++) {
            Py_ssize_t k = PyLong_AsSsize_t(PyList_GET_ITEM(keep, j));
            if (k == -1 && PyErr_Occurred()) return NULL;
            if (k <= prev || k >= n) {
                PyErr_SetString(PyExc_ValueError, "item_reads: bad keep");
                return NULL;
            }
            starts[j] = starts[k];
            reach[j] = reach[k];
            prev = k;
        }
        n = m;
    }
    for (Py_ssize_t k = 1; k < n; k++)
        if (reach[k - 1] > reach[k]) reach[k] = reach[k - 1];
    int split = reach[n - 1] - starts[0] > max_size;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    Py_ssize_t a = 0;
    for (Py_ssize_t k = 1; k <= n; k++) {
        if (k < n && !(starts[k] - reach[k - 1] > max_gap ||
                       (split && (starts[k] - starts[0]) / max_size !=
                                 (starts[k - 1] - starts[0]) / max_size)))
            continue;
        PyObject *rels = PyBytes_FromStringAndSize(NULL, (k - a) * (Py_ssize_t)sizeof(int64_t));
        if (!rels) goto fail;
        int64_t *r = (int64_t *)PyBytes_AS_STRING(rels);
        for (Py_ssize_t j = a; j < k; j++) r[j - a] = starts[j] - starts[a];
        PyObject *g = Py_BuildValue("(LLnnN)", (long long)starts[a], (long long)reach[k - 1],
                                    a, k, rels);
        if (!g || PyList_Append(out, g)) { Py_XDECREF(g); goto fail; }
        Py_DECREF(g);
        a = k;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* The chunk list of `series`, a (labels, [(mint, maxt, data), ...]) tuple of an answer
 * (borrowed), or NULL when it is not of that shape. */
static PyObject *series_chunks(PyObject *series) {
    if (!PyTuple_Check(series) || PyTuple_GET_SIZE(series) != 2 ||
        !PyList_Check(PyTuple_GET_ITEM(series, 1)))
        return NULL;
    return PyTuple_GET_ITEM(series, 1);
}

/* Whether `chunk` is a (mint, maxt, data, ...) tuple. */
static inline int is_chunk(PyObject *chunk) {
    return PyTuple_Check(chunk) && PyTuple_GET_SIZE(chunk) >= 3;
}

/* answer_sizes(answers, entry_overhead, chunk_overhead) -> (chunks, sizes): for each answer
 * (a list of (labels, [(mint, maxt, data), ...]) series, a block's whole answer to a
 * selection), its count of chunks and the bytes store.warmmemo counts for keeping it:
 * entry_overhead per answer and per series, chunk_overhead per chunk, plus the chunks' data.
 * One call for all the blocks of a request (a Python pass cost a call per block). TypeError
 * for anything not of that shape. */
static PyObject *py_answer_sizes(PyObject *self, PyObject *args) {
    PyObject *answers;
    long long entry, per_chunk;
    if (!PyArg_ParseTuple(args, "O!LL", &PyList_Type, &answers, &entry, &per_chunk))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(answers);
    PyObject *chunks = PyList_New(n), *sizes = PyList_New(n);
    if (!chunks || !sizes) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ans = PyList_GET_ITEM(answers, i);
        if (!PyList_Check(ans)) goto bad;
        Py_ssize_t ns = PyList_GET_SIZE(ans);
        long long nc = 0, data = 0;
        for (Py_ssize_t s = 0; s < ns; s++) {
            PyObject *cs = series_chunks(PyList_GET_ITEM(ans, s));
            if (!cs) goto bad;
            Py_ssize_t k = PyList_GET_SIZE(cs);
            for (Py_ssize_t c = 0; c < k; c++) {
                PyObject *chunk = PyList_GET_ITEM(cs, c);
                if (!is_chunk(chunk)) goto bad;
                Py_ssize_t len = PyObject_Length(PyTuple_GET_ITEM(chunk, 2));
                if (len < 0) goto fail;
                data += len;
            }
            nc += k;
        }
        PyObject *a = PyLong_FromLongLong(nc);
        if (!a) goto fail;
        PyList_SET_ITEM(chunks, i, a);
        PyObject *z = PyLong_FromLongLong(entry * (1 + (long long)ns) + per_chunk * nc + data);
        if (!z) goto fail;
        PyList_SET_ITEM(sizes, i, z);
    }
    PyObject *out = PyTuple_Pack(2, chunks, sizes);
    Py_DECREF(chunks);
    Py_DECREF(sizes);
    return out;
bad:
    PyErr_SetString(PyExc_TypeError, "answer_sizes: not a list of (labels, chunks) answers");
fail:
    Py_XDECREF(chunks);
    Py_XDECREF(sizes);
    return NULL;
}

/* chunks_in_range(series, mint, maxt) -> (series, n): each (labels, [(mint, maxt, data), ...])
 * of `series` with only its chunks overlapping [mint, maxt] (every chunk checked: a block's
 * chunks of a series may overlap), series left with none dropped, and the count of chunks
 * kept: a kept answer cut to a query's range (store.warmmemo) without a Python step per series
 * or chunk. TypeError for anything not of that shape. */
static PyObject *py_chunks_in_range(PyObject *self, PyObject *args) {
    PyObject *series;
    long long mint, maxt;
    if (!PyArg_ParseTuple(args, "O!LL", &PyList_Type, &series, &mint, &maxt))
        return NULL;
    Py_ssize_t ns = PyList_GET_SIZE(series);
    long long kept = 0;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (Py_ssize_t s = 0; s < ns; s++) {
        PyObject *one = PyList_GET_ITEM(series, s);
        PyObject *cs = series_chunks(one);
        if (!cs) goto bad;
        PyObject *in = PyList_New(0);
        if (!in) goto fail;
        for (Py_ssize_t c = 0; c < PyList_GET_SIZE(cs); c++) {
            PyObject *chunk = PyList_GET_ITEM(cs, c);
            if (!is_chunk(chunk)) {
                Py_DECREF(in);
                goto bad;
            }
            long long lo = PyLong_AsLongLong(PyTuple_GET_ITEM(chunk, 0));
            long long hi = PyLong_AsLongLong(PyTuple_GET_ITEM(chunk, 1));
            if ((lo == -1 || hi == -1) && PyErr_Occurred()) {
                Py_DECREF(in);
                goto fail;
            }
            if (hi >= mint && lo <= maxt && PyList_Append(in, chunk) < 0) {
                Py_DECREF(in);
                goto fail;
            }
        }
        if (PyList_GET_SIZE(in) == 0) {
            Py_DECREF(in);
            continue;
        }
        kept += PyList_GET_SIZE(in);
        PyObject *t = PyTuple_Pack(2, PyTuple_GET_ITEM(one, 0), in);
        Py_DECREF(in);
        if (!t) goto fail;
        int r = PyList_Append(out, t);
        Py_DECREF(t);
        if (r < 0) goto fail;
    }
    PyObject *res = Py_BuildValue("(NL)", out, kept);
    return res;
bad:
    PyErr_SetString(PyExc_TypeError, "chunks_in_range: not a list of (labels, chunks) series");
fail:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"split_items", py_split_items, METH_VARARGS, "Items at offsets of one ranged read."},
    {"chunk_tuples", py_chunk_tuples, METH_VARARGS, "(mint, maxt, data) tuples of three lists."},
    {"in_postings", py_in_postings, METH_VARARGS, "Sorted refs found in a raw postings list."},
    {"both_postings", py_both_postings, METH_VARARGS, "Refs of one raw list found in another."},
    {"single_selections", py_single_selections, METH_VARARGS,
     "Refs of one-list-per-matcher selections, as int64 and uint32 bytes."},
    {"item_reads", py_item_reads, METH_VARARGS,
     "Coalesced ranged reads of a few items (or of those of them at `keep`)."},
    {"answer_sizes", py_answer_sizes, METH_VARARGS, "Chunk counts and memo sizes of answers."},
    {"chunks_in_range", py_chunks_in_range, METH_VARARGS, "Series cut to a time range."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_items", NULL, -1, methods, NULL,
                                       NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__items(void) { return PyModule_Create(&moduledef); }
