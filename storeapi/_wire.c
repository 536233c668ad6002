/* StoreAPI wire formats in C: the chunk fields of a thanos.Series body encoded in one pass
 * (storeapi/wire.py, the store's side), a remote-read ChunkedReadResponse frame decoded (the
 * sidecar's) and a thanos.SeriesResponse frame decoded (the querier's, storeapi/client.py).
 *
 * Why C: Series is the StoreAPI's hot path and a 24 h query sends tens of thousands of chunks;
 * encoding each (mint, maxt, XOR bytes) AggrChunk in Python costs several varint encodes and
 * concatenations per chunk. Output is byte-identical to wire.py's Python encoder (proto3: zero
 * scalars omitted, negative int64 as 10-byte varints). Only the CPython C API is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static inline size_t varint_len(uint64_t v) { size_t n = 1; while (v >= 0x80) { v >>= 7; n++; } return n; }
static inline uint8_t *put_varint(uint8_t *p, uint64_t v) {
    while (v >= 0x80) { *p++ = (uint8_t)(v | 0x80); v >>= 7; }
    *p++ = (uint8_t)v;
    return p;
}

/* xor_chunk_fields(chunks) -> bytes: `Series.chunks` fields (tag 2) for a sequence of
 * (mint, maxt, data) with data any bytes-like object, each an AggrChunk whose raw Chunk is XOR
 * (type 0, omitted). Raises TypeError for anything else (the caller falls back to Python). */
static PyObject *py_xor_chunk_fields(PyObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "chunks must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_buffer *bufs = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Py_buffer));
    int64_t *ts = PyMem_Malloc((n ? (size_t)n : 1) * 2 * sizeof(int64_t));
    Py_ssize_t got = 0;
    PyObject *out = NULL;
    size_t total = 0;
    if (!bufs || !ts) { PyErr_NoMemory(); goto done; }
    for (; got < n; got++) {
        PyObject *c = items[got];
        if (!PyTuple_Check(c) || PyTuple_GET_SIZE(c) != 3) {
            PyErr_SetString(PyExc_TypeError, "chunk must be a (mint, maxt, data) tuple");
            goto done;
        }
        int64_t a = PyLong_AsLongLong(PyTuple_GET_ITEM(c, 0));
        int64_t z = PyLong_AsLongLong(PyTuple_GET_ITEM(c, 1));
        if (PyErr_Occurred()) goto done;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(c, 2), &bufs[got], PyBUF_SIMPLE)) goto done;
        ts[2 * got] = a; ts[2 * got + 1] = z;
        size_t dl = (size_t)bufs[got].len;
        size_t raw = dl ? 1 + varint_len(dl) + dl : 0;
        size_t agg = (a ? 1 + varint_len((uint64_t)a) : 0) + (z ? 1 + varint_len((uint64_t)z) : 0)
                     + 1 + varint_len(raw) + raw;
        total += 1 + varint_len(agg) + agg;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!out) goto done;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t a = ts[2 * k], z = ts[2 * k + 1];
        size_t dl = (size_t)bufs[k].len;
        size_t raw = dl ? 1 + varint_len(dl) + dl : 0;
        size_t agg = (a ? 1 + varint_len((uint64_t)a) : 0) + (z ? 1 + varint_len((uint64_t)z) : 0)
                     + 1 + varint_len(raw) + raw;
        *p++ = 0x12; p = put_varint(p, agg);
        if (a) { *p++ = 0x08; p = put_varint(p, (uint64_t)a); }
        if (z) { *p++ = 0x10; p = put_varint(p, (uint64_t)z); }
        *p++ = 0x1a; p = put_varint(p, raw);
        if (dl) { *p++ = 0x12; p = put_varint(p, dl); memcpy(p, bufs[k].buf, dl); p += dl; }
    }
done:
    if (bufs) for (Py_ssize_t k = 0; k < got; k++) PyBuffer_Release(&bufs[k]);
    PyMem_Free(bufs); PyMem_Free(ts);
    Py_DECREF(seq);
    return out;
}


/* ---- Prometheus's streamed remote read: one ChunkedReadResponse frame decoded at once ----
 * (sidecar/promstore.py). Per frame Python would walk upb wrappers for every label and chunk;
 * here each series comes out as (labels, chunks, other) with labels a tuple of (name, value)
 * str pairs, chunks a list of (mint, maxt, data) and other true when some chunk is not XOR
 * (then its tuple is (mint, maxt, data, type)). Malformed input raises ValueError. */

typedef struct { const uint8_t *p, *end; } rd_t;

static int rd_varint(rd_t *r, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) { *out = v; return 0; }
    }
    return -1;
}

/* The value of a field of wire type wt: scalars in *val, LEN bytes in *sub. */
static int rd_value(rd_t *r, int wt, uint64_t *val, rd_t *sub) {
    switch (wt) {
    case 0: return rd_varint(r, val);
    case 1: if (r->end - r->p < 8) return -1; r->p += 8; return 0;
    case 5: if (r->end - r->p < 4) return -1; r->p += 4; return 0;
    case 2: {
        uint64_t n;
        if (rd_varint(r, &n) || n > (uint64_t)(r->end - r->p)) return -1;
        sub->p = r->p; sub->end = r->p + n; r->p += n; return 0;
    }
    default: return -1;
    }
}

/* The next field: its number, wire type and (for LEN) its bytes; scalars in *val. */
static int rd_field(rd_t *r, uint32_t *num, int *wt, uint64_t *val, rd_t *sub) {
    uint64_t tag;
    if (rd_varint(r, &tag)) return -1;
    *num = (uint32_t)(tag >> 3); *wt = (int)(tag & 7);
    return rd_value(r, *wt, val, sub);
}

static PyObject *bad_frame(void) {
    PyErr_SetString(PyExc_ValueError, "malformed ChunkedReadResponse frame");
    return NULL;
}

static PyObject *decode_label(rd_t lr) {
    rd_t name = {NULL, NULL}, value = {NULL, NULL}, sub;
    uint32_t num; int wt; uint64_t v;
    while (lr.p < lr.end) {
        if (rd_field(&lr, &num, &wt, &v, &sub)) return bad_frame();
        if (wt == 2 && num == 1) name = sub;
        else if (wt == 2 && num == 2) value = sub;
    }
    PyObject *n = PyUnicode_DecodeUTF8((const char *)(name.p ? name.p : (const uint8_t *)""),
                                       name.p ? name.end - name.p : 0, "strict");
    if (!n) return NULL;
    PyObject *val = PyUnicode_DecodeUTF8((const char *)(value.p ? value.p : (const uint8_t *)""),
                                         value.p ? value.end - value.p : 0, "strict");
    if (!val) { Py_DECREF(n); return NULL; }
    PyObject *t = PyTuple_Pack(2, n, val);
    Py_DECREF(n); Py_DECREF(val);
    return t;
}

static PyObject *decode_chunk(rd_t cr, int *other) {
    int64_t mint = 0, maxt = 0; uint64_t type = 0;
    rd_t data = {NULL, NULL}, sub;
    uint32_t num; int wt; uint64_t v;
    while (cr.p < cr.end) {
        if (rd_field(&cr, &num, &wt, &v, &sub)) return bad_frame();
        if (wt == 0 && num == 1) mint = (int64_t)v;
        else if (wt == 0 && num == 2) maxt = (int64_t)v;
        else if (wt == 0 && num == 3) type = v;
        else if (wt == 2 && num == 4) data = sub;
    }
    PyObject *b = PyBytes_FromStringAndSize((const char *)data.p, data.p ? data.end - data.p : 0);
    if (!b) return NULL;
    if (type <= 1) return Py_BuildValue("(LLN)", (long long)mint, (long long)maxt, b);
    *other = 1;
    return Py_BuildValue("(LLNK)", (long long)mint, (long long)maxt, b, (unsigned long long)type);
}

static PyObject *decode_series(rd_t sr) {
    PyObject *labels = PyList_New(0), *chunks = PyList_New(0), *item = NULL, *out = NULL;
    int other = 0;
    rd_t sub; uint32_t num; int wt; uint64_t v;
    if (!labels || !chunks) goto done;
    while (sr.p < sr.end) {
        if (rd_field(&sr, &num, &wt, &v, &sub)) { bad_frame(); goto done; }
        if (wt != 2 || (num != 1 && num != 2)) continue;
        item = num == 1 ? decode_label(sub) : decode_chunk(sub, &other);
        if (!item || PyList_Append(num == 1 ? labels : chunks, item)) goto done;
        Py_CLEAR(item);
    }
    PyObject *lt = PyList_AsTuple(labels);
    if (!lt) goto done;
    out = Py_BuildValue("(NOO)", lt, chunks, other ? Py_True : Py_False);
done:
    Py_XDECREF(item); Py_XDECREF(labels); Py_XDECREF(chunks);
    return out;
}

/* chunked_read_series(frame) -> list of (labels, chunks, other) (see above). */
static PyObject *py_chunked_read_series(PyObject *self, PyObject *arg) {
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE)) return NULL;
    rd_t r = {(const uint8_t *)buf.buf, (const uint8_t *)buf.buf + buf.len}, sub;
    uint32_t num; int wt; uint64_t v;
    PyObject *out = PyList_New(0), *s = NULL;
    if (!out) goto fail;
    while (r.p < r.end) {
        if (rd_field(&r, &num, &wt, &v, &sub)) { bad_frame(); goto fail; }
        if (wt != 2 || num != 1) continue;
        if (!(s = decode_series(sub)) || PyList_Append(out, s)) goto fail;
        Py_CLEAR(s);
    }
    PyBuffer_Release(&buf);
    return out;
fail:
    Py_XDECREF(s); Py_XDECREF(out);
    PyBuffer_Release(&buf);
    return NULL;
}


/* ---- StoreAPI Series stream: one thanos.SeriesResponse frame decoded at once ----
 * (storeapi/client.py). The querier receives tens of thousands of series per query; walking
 * upb wrappers label by label and chunk by chunk in Python was its largest CPU cost. The
 * result equals what rpc_pb2.SeriesResponse.FromString + the client's Python loop gave:
 * protobuf's merge rules (a repeated oneof member merges, a switch of oneof case discards),
 * unknown fields (groups too) skipped, proto3 strings UTF-8 checked, anything malformed a
 * ValueError. tests/unit/test_storeapi_wire.py checks it against protobuf on fuzzed frames. */

#define SR_MAX_DEPTH 100  /* protobuf (upb) nests groups and messages at most this deep */

static PyObject *bad_series_frame(void) {
    PyErr_SetString(PyExc_ValueError, "malformed SeriesResponse frame");
    return NULL;
}

/* The next field as protobuf sees it: group fields (wire types 3/4) are skipped whole and
 * reported as wire type 3; field number 0 and a stray end-group are malformed. */
static int sr_skip_group(rd_t *r, uint32_t start, int depth);

static int sr_next(rd_t *r, uint32_t *num, int *wt, uint64_t *val, rd_t *sub, int depth) {
    uint64_t tag;
    if (rd_varint(r, &tag) || tag > 0xffffffffu) return -1;
    *num = (uint32_t)(tag >> 3); *wt = (int)(tag & 7);
    if (*num == 0) return -1;
    if (*wt == 3) return sr_skip_group(r, *num, depth + 1);
    return rd_value(r, *wt, val, sub);  /* a stray end of group (4) is malformed there */
}

static int sr_skip_group(rd_t *r, uint32_t start, int depth) {
    if (depth > SR_MAX_DEPTH) return -1;
    for (;;) {
        uint64_t tag, v;
        rd_t sub;
        if (rd_varint(r, &tag) || tag > 0xffffffffu) return -1;
        uint32_t num = (uint32_t)(tag >> 3); int wt = (int)(tag & 7);
        if (num == 0) return -1;
        if (wt == 4) return num == start ? 0 : -1;
        if (wt == 3 ? sr_skip_group(r, num, depth + 1) : rd_value(r, wt, &v, &sub)) return -1;
    }
}

/* Every field well-formed (a message whose fields need no further checks, e.g. Chunk). */
static int sr_check(rd_t r, int depth) {
    uint32_t num; int wt; uint64_t v; rd_t sub;
    while (r.p < r.end) if (sr_next(&r, &num, &wt, &v, &sub, depth)) return -1;
    return 0;
}

static int utf8_ok(rd_t s) {
    const uint8_t *p = s.p;
    while (p < s.end && *p < 0x80) p++;
    if (p == s.end) return 1;
    PyObject *u = PyUnicode_DecodeUTF8((const char *)s.p, s.end - s.p, "strict");
    if (!u) { PyErr_Clear(); return 0; }
    Py_DECREF(u);
    return 1;
}

/* google.protobuf.Any (hints): only checked, as protobuf parses it. */
static int sr_check_any(rd_t r, int depth) {
    uint32_t num; int wt; uint64_t v; rd_t sub;
    while (r.p < r.end) {
        if (sr_next(&r, &num, &wt, &v, &sub, depth)) return -1;
        if (num == 1 && wt == 2 && !utf8_ok(sub)) return -1;
    }
    return 0;
}

typedef struct {
    PyObject *hist;        /* hist(data, type) for native histogram chunks; None: drop them */
    PyObject *prev;        /* the previous series' labels: equal names/values reuse its str */
    PyObject *prev_chunks; /* the previous series' chunks: equal times reuse its int */
    PyObject *aggr;        /* aggregate mode: aggr(count, sum, min, max, counter); else NULL */
    Py_ssize_t dropped;    /* chunks that are neither XOR nor (kept) native histograms */
} sr_ctx;

/* The str of a label name/value: the previous series' object at this position when the
 * bytes are the same (sorted series share most labels), else a new, UTF-8 checked str. When
 * both are, sr_label hands out the previous series' (name, value) tuple itself: a series of
 * a sorted answer mostly allocates only the pairs that differ from its predecessor's. */
static PyObject *sr_str(rd_t s, sr_ctx *c, Py_ssize_t pos, int which) {
    Py_ssize_t n = s.p ? s.end - s.p : 0;
    if (c->prev && pos < PyTuple_GET_SIZE(c->prev)) {
        PyObject *pair = PyTuple_GET_ITEM(c->prev, pos);
        if (PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) {
            PyObject *old = PyTuple_GET_ITEM(pair, which);
            Py_ssize_t on;
            const char *ob = PyUnicode_Check(old) ? PyUnicode_AsUTF8AndSize(old, &on) : NULL;
            if (!ob) PyErr_Clear();
            else if (on == n && (n == 0 || memcmp(ob, s.p, (size_t)n) == 0)) {
                Py_INCREF(old);
                return old;
            }
        }
    }
    return PyUnicode_DecodeUTF8(n ? (const char *)s.p : "", n, "strict");
}

static PyObject *sr_label(rd_t lr, sr_ctx *c, Py_ssize_t pos, int depth) {
    rd_t name = {NULL, NULL}, value = {NULL, NULL}, sub;
    uint32_t num; int wt; uint64_t v;
    while (lr.p < lr.end) {
        if (sr_next(&lr, &num, &wt, &v, &sub, depth)) return bad_series_frame();
        if (wt != 2 || (num != 1 && num != 2)) continue;
        rd_t *slot = num == 1 ? &name : &value;
        if (slot->p && !utf8_ok(*slot)) return bad_series_frame();  /* overwritten, still parsed */
        *slot = sub;
    }
    PyObject *n = sr_str(name, c, pos, 0);
    if (!n) return NULL;
    PyObject *val = sr_str(value, c, pos, 1);
    if (!val) { Py_DECREF(n); return NULL; }
    if (c->prev && pos < PyTuple_GET_SIZE(c->prev)) {  /* the previous series' very pair */
        PyObject *old = PyTuple_GET_ITEM(c->prev, pos);
        if (PyTuple_CheckExact(old) && PyTuple_GET_SIZE(old) == 2 &&
            PyTuple_GET_ITEM(old, 0) == n && PyTuple_GET_ITEM(old, 1) == val) {
            Py_DECREF(n); Py_DECREF(val);
            return Py_NewRef(old);
        }
    }
    PyObject *t = PyTuple_New(2);
    if (!t) { Py_DECREF(n); Py_DECREF(val); return NULL; }
    PyTuple_SET_ITEM(t, 0, n); PyTuple_SET_ITEM(t, 1, val);
    if (PyUnicode_CheckExact(n) && PyUnicode_CheckExact(val)) PyObject_GC_UnTrack(t);  /* see sr_pack */
    return t;
}

/* A chunk's min (which 0) or max time: the previous series' int at this chunk position when
 * equal (series scraped together share chunk boundaries), else a new int. */
static PyObject *sr_time(sr_ctx *c, Py_ssize_t pos, int which, int64_t t) {
    if (c->prev_chunks && pos < PyList_GET_SIZE(c->prev_chunks)) {
        PyObject *old = PyList_GET_ITEM(c->prev_chunks, pos);
        if (PyTuple_Check(old) && PyTuple_GET_SIZE(old) == 3) {
            PyObject *v = PyTuple_GET_ITEM(old, which);
            if (PyLong_CheckExact(v)) {
                int overflow;
                long long have = PyLong_AsLongLongAndOverflow(v, &overflow);
                if (!overflow && have == t && !(have == -1 && PyErr_Occurred()))
                    return Py_NewRef(v);
                PyErr_Clear();
            }
        }
    }
    return PyLong_FromLongLong(t);
}

/* The (mint, maxt, data) tuple of a chunk appended to chunks; steals data. */
static int sr_append(sr_ctx *c, PyObject *chunks, int64_t mint, int64_t maxt, PyObject *data) {
    PyObject *a = sr_time(c, PyList_GET_SIZE(chunks), 0, mint);
    PyObject *z = sr_time(c, PyList_GET_SIZE(chunks), 1, maxt);
    PyObject *item = a && z ? PyTuple_New(3) : NULL;
    if (!item) { Py_XDECREF(a); Py_XDECREF(z); Py_DECREF(data); return -1; }
    PyTuple_SET_ITEM(item, 0, a); PyTuple_SET_ITEM(item, 1, z); PyTuple_SET_ITEM(item, 2, data);
    if (PyBytes_CheckExact(data)) PyObject_GC_UnTrack(item);  /* see sr_pack */
    int rc = PyList_Append(chunks, item);
    Py_DECREF(item);
    return rc;
}

/* A thanos.Chunk as protobuf holds it: present once any occurrence was seen; type and data of
 * the last occurrence that set them (repeated occurrences merge). */
typedef struct { int present; int32_t type; rd_t data; } sr_sub;

static inline Py_ssize_t sub_len(const sr_sub *k) { return k->data.p ? k->data.end - k->data.p : 0; }

/* bytes of an XOR sub-chunk with data, else None (an aggregate not sent or not usable). */
static PyObject *sr_xor_or_none(const sr_sub *k) {
    if (k->present && k->type == 0 && sub_len(k))
        return PyBytes_FromStringAndSize((const char *)k->data.p, sub_len(k));
    Py_RETURN_NONE;
}

/* One AggrChunk. Raw mode (c->aggr NULL): appended if its raw chunk is XOR (or a kept native
 * histogram) with data, else counted as dropped. Aggregate mode: a raw chunk as XOR bytes, a
 * downsampled one as c->aggr(count, sum, min, max, counter), each XOR bytes or None. */
static int sr_chunk(rd_t cr, sr_ctx *c, PyObject *chunks, int depth) {
    int64_t mint = 0, maxt = 0;
    sr_sub k[6] = {{0}};  /* raw = 3, count = 4, sum, min, max, counter = 8 */
    rd_t sub, csub;
    uint32_t num, cnum; int wt, cwt; uint64_t v, cv;
    while (cr.p < cr.end) {
        if (sr_next(&cr, &num, &wt, &v, &sub, depth)) { bad_series_frame(); return -1; }
        if (wt == 0 && num == 1) mint = (int64_t)v;
        else if (wt == 0 && num == 2) maxt = (int64_t)v;
        else if (wt == 2 && num >= 3 && num <= 8) {
            sr_sub *kk = &k[num - 3];
            kk->present = 1;
            while (sub.p < sub.end) {
                if (sr_next(&sub, &cnum, &cwt, &cv, &csub, depth + 1)) { bad_series_frame(); return -1; }
                if (cwt == 0 && cnum == 1) kk->type = (int32_t)(uint32_t)cv;
                else if (cwt == 2 && cnum == 2) kk->data = csub;
            }
        }
    }
    Py_ssize_t dl = sub_len(&k[0]);
    int32_t type = k[0].type;
    if (c->aggr) {
        if (k[0].present) {
            if (type != 0 || !dl) return 0;
            PyObject *b = PyBytes_FromStringAndSize((const char *)k[0].data.p, dl);
            return b ? sr_append(c, chunks, mint, maxt, b) : -1;
        }
        PyObject *parts[5];
        int any = 0;
        for (int i = 0; i < 5; i++) {
            if (!(parts[i] = sr_xor_or_none(&k[i + 1]))) {
                while (i--) Py_DECREF(parts[i]);
                return -1;
            }
            any |= parts[i] != Py_None;
        }
        PyObject *ad = any ? PyObject_CallFunctionObjArgs(c->aggr, parts[0], parts[1], parts[2],
                                                           parts[3], parts[4], NULL) : NULL;
        for (int i = 0; i < 5; i++) Py_DECREF(parts[i]);
        if (!any) return 0;
        return ad ? sr_append(c, chunks, mint, maxt, ad) : -1;
    }
    if (dl && (type == 0 || ((type == 1 || type == 2) && c->hist != Py_None))) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)k[0].data.p, dl);
        if (b && type != 0) b = PyObject_CallFunction(c->hist, "Ni", b, (int)type);
        return b ? sr_append(c, chunks, mint, maxt, b) : -1;
    }
    c->dropped++;
    return 0;
}

/* Appends the labels and chunks of one thanos.Series body to the lists (a series split over
 * several occurrences of SeriesResponse.series merges into one, as protobuf merges). */
static int sr_series_into(rd_t sr, sr_ctx *c, PyObject *labels, PyObject *chunks, int depth) {
    uint32_t num; int wt; uint64_t v; rd_t sub;
    while (sr.p < sr.end) {
        if (sr_next(&sr, &num, &wt, &v, &sub, depth)) { bad_series_frame(); return -1; }
        if (wt != 2) continue;
        if (num == 1) {
            PyObject *l = sr_label(sub, c, PyList_GET_SIZE(labels), depth + 1);
            if (!l) return -1;
            int rc = PyList_Append(labels, l);
            Py_DECREF(l);
            if (rc) return -1;
        } else if (num == 2) {
            if (sr_chunk(sub, c, chunks, depth + 1)) return -1;
        }
    }
    return 0;
}

/* (labels tuple, chunks list) of the lists; the labels become the next series' prev.
 * Tuples that hold only strs, ints and bytes -- label pairs, label sets of such pairs, XOR
 * chunk tuples -- can never be part of a reference cycle, so they are taken out of the
 * garbage collector's lists at once (as CPython would at their first collection): a large
 * answer would otherwise fill the young generation and each collection walk tens of
 * thousands of them, touching every chunk's bytes (measured: ~40 ms CPU a collection). */
static PyObject *sr_pack(PyObject *labels, PyObject *chunks, sr_ctx *c, PyObject **prev_own) {
    PyObject *lt = PyList_AsTuple(labels);
    if (!lt) return NULL;
    int atomic = 1;
    for (Py_ssize_t k = 0; atomic && k < PyTuple_GET_SIZE(lt); k++) {
        PyObject *pair = PyTuple_GET_ITEM(lt, k);
        atomic = PyTuple_CheckExact(pair) && !PyObject_GC_IsTracked(pair);
    }
    if (atomic) PyObject_GC_UnTrack(lt);
    Py_XSETREF(*prev_own, Py_BuildValue("(OO)", lt, chunks));
    if (!*prev_own) { Py_DECREF(lt); return NULL; }
    c->prev = lt;
    c->prev_chunks = chunks;
    return Py_BuildValue("(NO)", lt, chunks);
}

/* 1 when labels (a list) equal the labels of the last (labels, chunks) in out, else 0. */
static int sr_same_as_last(PyObject *out, PyObject *labels) {
    Py_ssize_t k = PyList_GET_SIZE(out);
    if (!k) return 0;
    PyObject *last = PyTuple_GET_ITEM(PyList_GET_ITEM(out, k - 1), 0);
    Py_ssize_t n = PyList_GET_SIZE(labels);
    if (PyTuple_GET_SIZE(last) != n) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(last, i), PyList_GET_ITEM(labels, i), Py_EQ);
        if (eq <= 0) return eq;
    }
    return 1;
}

static PyObject *sr_batch_into(rd_t br, sr_ctx *c, PyObject *out, PyObject **prev_own, int depth) {
    uint32_t num; int wt; uint64_t v; rd_t sub;
    while (br.p < br.end) {
        if (sr_next(&br, &num, &wt, &v, &sub, depth)) return bad_series_frame();
        if (wt != 2 || num != 1) continue;
        PyObject *labels = PyList_New(0), *chunks = PyList_New(0), *s = NULL;
        int ok = labels && chunks && !sr_series_into(sub, c, labels, chunks, depth + 1);
        int same = ok ? sr_same_as_last(out, labels) : 0;
        if (same < 0) ok = 0;
        else if (same) {  /* a series the store split into consecutive parts: one series */
            PyObject *have = PyTuple_GET_ITEM(PyList_GET_ITEM(out, PyList_GET_SIZE(out) - 1), 1);
            ok = !PyList_SetSlice(have, PyList_GET_SIZE(have), PyList_GET_SIZE(have), chunks);
        } else if (ok) {
            ok = (s = sr_pack(labels, chunks, c, prev_own)) && !PyList_Append(out, s);
        }
        Py_XDECREF(labels); Py_XDECREF(chunks); Py_XDECREF(s);
        if (!ok) return NULL;
    }
    return out;
}

/* series_response(frame, prev, hist[, aggr]) -> (kind, payload, dropped), kind one of
 *   1: payload a list of (labels, chunks) (SeriesResponse.series or .batch), labels a tuple
 *      of (name, value) str pairs, chunks a list of (mint, maxt, data): XOR data as bytes,
 *      native histogram data as hist(bytes, chunk type) (dropped when hist is None);
 *      dropped counts the chunks left out;
 *   2: payload the warning str;
 *   0: payload None (hints, an empty frame or a result type this client does not know).
 * prev: the labels of the series before this frame (or None), whose strings are reused.
 * aggr (a callable, default None): decode for a downsampling-aware reader instead, see sr_chunk. */
static PyObject *py_series_response(PyObject *self, PyObject *args) {
    PyObject *frame, *prev, *hist, *aggr = Py_None;
    if (!PyArg_ParseTuple(args, "OOO|O", &frame, &prev, &hist, &aggr)) return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(frame, &buf, PyBUF_SIMPLE)) return NULL;
    rd_t r = {(const uint8_t *)buf.buf, (const uint8_t *)buf.buf + buf.len}, sub;
    uint32_t num; int wt; uint64_t v;
    sr_ctx c = {hist, PyTuple_Check(prev) ? prev : NULL, NULL, aggr == Py_None ? NULL : aggr, 0};
    PyObject *prev_own = NULL, *out = NULL, *payload = NULL;
    /* the single series of case 1 accumulates here until the frame ends */
    PyObject *labels = NULL, *chunks = NULL;
    int kind = 0;  /* protobuf field number of the oneof case set so far */
    rd_t warning = {NULL, NULL};
    while (r.p < r.end) {
        if (sr_next(&r, &num, &wt, &v, &sub, 0)) { bad_series_frame(); goto done; }
        if (wt != 2 || num < 1 || num > 4) continue;
        if ((int)num != kind) {  /* a new oneof case discards the previous one */
            Py_CLEAR(labels); Py_CLEAR(chunks); Py_CLEAR(payload);
            c.dropped = 0;
            c.prev = PyTuple_Check(prev) ? prev : NULL;
            c.prev_chunks = NULL;
            kind = (int)num;
        }
        if (num == 1) {
            if (!labels && (!(labels = PyList_New(0)) || !(chunks = PyList_New(0)))) goto done;
            if (sr_series_into(sub, &c, labels, chunks, 1)) goto done;
        } else if (num == 2) {
            if (!utf8_ok(sub)) { bad_series_frame(); goto done; }
            warning = sub;
        } else if (num == 3) {
            if (sr_check_any(sub, 1)) { bad_series_frame(); goto done; }
        } else {
            if (!payload && !(payload = PyList_New(0))) goto done;
            if (!sr_batch_into(sub, &c, payload, &prev_own, 1)) goto done;
        }
    }
    if (kind == 1) {
        PyObject *s = sr_pack(labels, chunks, &c, &prev_own);
        if (!s) goto done;
        out = Py_BuildValue("(i[N]n)", 1, s, c.dropped);
    } else if (kind == 4) {
        out = Py_BuildValue("(iOn)", 1, payload, c.dropped);
    } else if (kind == 2) {
        Py_ssize_t n = warning.end - warning.p;
        out = Py_BuildValue("(iNn)", 2,
                            PyUnicode_DecodeUTF8(n ? (const char *)warning.p : "", n, "strict"),
                            (Py_ssize_t)0);
    } else {
        out = Py_BuildValue("(iOn)", 0, Py_None, (Py_ssize_t)0);
    }
done:
    if (!out && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {  /* a label not UTF-8 */
        PyErr_Clear();
        bad_series_frame();
    }
    Py_XDECREF(labels); Py_XDECREF(chunks); Py_XDECREF(payload); Py_XDECREF(prev_own);
    PyBuffer_Release(&buf);
    return out;
}


/* ---- Series bodies of many series at once (the StoreAPI server's hot path) ----
 * series_frames(items, label_cache, mint, maxt, framed) -> list, one entry per (labels, chunks)
 * item: the thanos.Series body (framed: the SeriesResponse frame holding it), False when range
 * trimming leaves no chunk (the series is not sent), None when the item is not plain -- labels
 * not a tuple of (str, str), a chunk not a (int, int, bytes) triple (histograms, aggregates),
 * a label that does not encode -- so the caller encodes it in Python. Chunks are trimmed to
 * [mint, maxt] only when the first ends before mint or the last starts after maxt, as the
 * Python path does. label_cache maps (name, value) to its encoded Series.labels field; it is
 * shared with wire.SeriesEncoder and cleared when it reaches LABEL_CACHE_MAX entries. */

#define LABEL_CACHE_MAX (1 << 18)

static PyObject *encode_label(PyObject *pair, PyObject *cache) {
    PyObject *enc = PyDict_GetItemWithError(cache, pair);
    if (enc || PyErr_Occurred()) { Py_XINCREF(enc); return enc; }
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2
        || !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 0))
        || !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
        PyErr_SetString(PyExc_TypeError, "label must be a (str, str) tuple");
        return NULL;
    }
    Py_ssize_t nl, vl;
    const char *n = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &nl);
    if (!n) return NULL;
    const char *v = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &vl);
    if (!v) return NULL;
    size_t body = (nl ? 1 + varint_len((uint64_t)nl) + (size_t)nl : 0)
                  + (vl ? 1 + varint_len((uint64_t)vl) + (size_t)vl : 0);
    enc = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(1 + varint_len(body) + body));
    if (!enc) return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(enc);
    *p++ = 0x0a; p = put_varint(p, body);
    if (nl) { *p++ = 0x0a; p = put_varint(p, (uint64_t)nl); memcpy(p, n, (size_t)nl); p += nl; }
    if (vl) { *p++ = 0x12; p = put_varint(p, (uint64_t)vl); memcpy(p, v, (size_t)vl); }
    if (PyDict_GET_SIZE(cache) >= LABEL_CACHE_MAX) PyDict_Clear(cache);  /* e.g. a unique id per series */
    if (PyDict_SetItem(cache, pair, enc) < 0) { Py_DECREF(enc); return NULL; }
    return enc;
}

static inline size_t chunk_field_len(int64_t a, int64_t z, size_t dl) {
    size_t raw = dl ? 1 + varint_len(dl) + dl : 0;
    size_t agg = (a ? 1 + varint_len((uint64_t)a) : 0) + (z ? 1 + varint_len((uint64_t)z) : 0)
                 + 1 + varint_len(raw) + raw;
    return 1 + varint_len(agg) + agg;
}

/* One item's body (or frame); Py_False to skip, NULL with an exception for "not plain". */
static PyObject *series_item(PyObject *item, PyObject *cache, int64_t mint, int64_t maxt, int framed) {
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2) {
        PyErr_SetString(PyExc_TypeError, "series must be a (labels, chunks) tuple");
        return NULL;
    }
    PyObject *labels = PyTuple_GET_ITEM(item, 0), *chunks = PyTuple_GET_ITEM(item, 1);
    if (!PyTuple_CheckExact(labels) || !(PyList_CheckExact(chunks) || PyTuple_CheckExact(chunks))) {
        PyErr_SetString(PyExc_TypeError, "labels must be a tuple, chunks a list");
        return NULL;
    }
    Py_ssize_t nlab = PyTuple_GET_SIZE(labels);
    Py_ssize_t nch = PySequence_Fast_GET_SIZE(chunks);
    PyObject **cs = PySequence_Fast_ITEMS(chunks);
    for (Py_ssize_t k = 0; k < nch; k++) {
        PyObject *c = cs[k];
        if (!PyTuple_CheckExact(c) || PyTuple_GET_SIZE(c) != 3 || !PyBytes_CheckExact(PyTuple_GET_ITEM(c, 2))
            || !PyLong_CheckExact(PyTuple_GET_ITEM(c, 0)) || !PyLong_CheckExact(PyTuple_GET_ITEM(c, 1))) {
            PyErr_SetString(PyExc_TypeError, "chunk must be a (int, int, bytes) tuple");
            return NULL;
        }
    }
    int trim = 0;
    if (nch) {
        int64_t first_max = PyLong_AsLongLong(PyTuple_GET_ITEM(cs[0], 1));
        int64_t last_min = PyLong_AsLongLong(PyTuple_GET_ITEM(cs[nch - 1], 0));
        if (PyErr_Occurred()) return NULL;
        trim = first_max < mint || last_min > maxt;
    }
    PyObject **encs = PyMem_Calloc(nlab ? (size_t)nlab : 1, sizeof(PyObject *));
    int64_t *ts = PyMem_Malloc((nch ? (size_t)nch : 1) * 2 * sizeof(int64_t));
    PyObject *out = NULL;
    size_t total = 0;
    Py_ssize_t kept = 0;
    if (!encs || !ts) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t k = 0; k < nlab; k++) {
        if (!(encs[k] = encode_label(PyTuple_GET_ITEM(labels, k), cache))) goto done;
        total += (size_t)PyBytes_GET_SIZE(encs[k]);
    }
    for (Py_ssize_t k = 0; k < nch; k++) {
        int64_t a = PyLong_AsLongLong(PyTuple_GET_ITEM(cs[k], 0));
        int64_t z = PyLong_AsLongLong(PyTuple_GET_ITEM(cs[k], 1));
        if (PyErr_Occurred()) goto done;
        ts[2 * k] = a; ts[2 * k + 1] = z;
        if (trim && (z < mint || a > maxt)) continue;
        kept++;
        total += chunk_field_len(a, z, (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(cs[k], 2)));
    }
    if (trim && !kept) { out = Py_False; Py_INCREF(out); goto done; }
    size_t head = framed ? 1 + varint_len(total) : 0;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(head + total));
    if (!out) goto done;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    if (framed) { *p++ = 0x0a; p = put_varint(p, total); }
    for (Py_ssize_t k = 0; k < nlab; k++) {
        memcpy(p, PyBytes_AS_STRING(encs[k]), (size_t)PyBytes_GET_SIZE(encs[k]));
        p += PyBytes_GET_SIZE(encs[k]);
    }
    for (Py_ssize_t k = 0; k < nch; k++) {
        int64_t a = ts[2 * k], z = ts[2 * k + 1];
        if (trim && (z < mint || a > maxt)) continue;
        PyObject *d = PyTuple_GET_ITEM(cs[k], 2);
        size_t dl = (size_t)PyBytes_GET_SIZE(d);
        size_t raw = dl ? 1 + varint_len(dl) + dl : 0;
        size_t agg = (a ? 1 + varint_len((uint64_t)a) : 0) + (z ? 1 + varint_len((uint64_t)z) : 0)
                     + 1 + varint_len(raw) + raw;
        *p++ = 0x12; p = put_varint(p, agg);
        if (a) { *p++ = 0x08; p = put_varint(p, (uint64_t)a); }
        if (z) { *p++ = 0x10; p = put_varint(p, (uint64_t)z); }
        *p++ = 0x1a; p = put_varint(p, raw);
        if (dl) { *p++ = 0x12; p = put_varint(p, dl); memcpy(p, PyBytes_AS_STRING(d), dl); p += dl; }
    }
done:
    if (encs) for (Py_ssize_t k = 0; k < nlab; k++) Py_XDECREF(encs[k]);
    PyMem_Free(encs); PyMem_Free(ts);
    return out;
}

static PyObject *py_series_frames(PyObject *self, PyObject *args) {
    PyObject *items, *cache;
    long long mint, maxt;
    int framed;
    if (!PyArg_ParseTuple(args, "O!O!LLp", &PyList_Type, &items, &PyDict_Type, &cache, &mint, &maxt, &framed))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *got = series_item(PyList_GET_ITEM(items, k), cache, mint, maxt, framed);
        if (!got) {
            if (PyErr_ExceptionMatches(PyExc_MemoryError)) { Py_DECREF(out); return NULL; }
            PyErr_Clear();  /* not plain: the caller's Python encoder takes it (and its errors) */
            got = Py_None; Py_INCREF(got);
        }
        PyList_SET_ITEM(out, k, got);
    }
    return out;
}

/* split_frames(buf, max_frame) -> (frames, used, bad): the complete HTTP/2 frames at the front
 * of buf as (type, flags, stream id, payload bytes) and how many bytes they took, in one pass
 * (a read's few frames cost ~10 Python steps each in Python). bad: the length of the first
 * frame longer than max_frame (the split stops there; the caller raises), else -1. */
static PyObject *py_split_frames(PyObject *self, PyObject *args) {
    Py_buffer b;
    long long max_frame;
    if (!PyArg_ParseTuple(args, "y*L", &b, &max_frame)) return NULL;
    const unsigned char *p = b.buf;
    Py_ssize_t pos = 0, end = b.len;
    long long bad = -1;
    PyObject *out = PyList_New(0);
    if (out == NULL) goto fail;
    while (end - pos >= 9) {
        const unsigned char *h = p + pos;
        long long length = (long long)h[0] << 16 | h[1] << 8 | h[2];
        if (length > max_frame) { bad = length; break; }
        if (end - pos < 9 + length) break;
        unsigned long sid = ((unsigned long)h[5] << 24 | (unsigned long)h[6] << 16
                             | (unsigned long)h[7] << 8 | h[8]) & 0x7FFFFFFFUL;
        PyObject *payload = PyBytes_FromStringAndSize((const char *)h + 9, (Py_ssize_t)length);
        if (payload == NULL) goto fail;
        PyObject *f = Py_BuildValue("(iikN)", (int)h[3], (int)h[4], sid, payload);
        if (f == NULL) goto fail;
        int rc = PyList_Append(out, f);
        Py_DECREF(f);
        if (rc < 0) goto fail;
        pos += 9 + (Py_ssize_t)length;
    }
    PyBuffer_Release(&b);
    return Py_BuildValue("(NnL)", out, pos, bad);
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&b);
    return NULL;
}

/* grpc_messages(buf, max_bytes) -> (messages, flags, too_large): the complete gRPC
 * length-prefixed messages at the front of the bytearray buf, taken off it in one pass, with
 * each one's compressed flag (one byte per message). too_large: the next message announces more
 * than max_bytes (the split stops there; the caller raises). */
static PyObject *py_grpc_messages(PyObject *self, PyObject *args) {
    PyObject *buf;
    long long max_bytes;
    if (!PyArg_ParseTuple(args, "O!L", &PyByteArray_Type, &buf, &max_bytes)) return NULL;
    const unsigned char *p = (const unsigned char *)PyByteArray_AS_STRING(buf);
    Py_ssize_t pos = 0, end = PyByteArray_GET_SIZE(buf), count = 0;
    int too_large = 0;
    PyObject *msgs = PyList_New(0), *flags = NULL;
    char *fl = PyMem_Malloc(end / 5 + 1);
    if (msgs == NULL || fl == NULL) goto fail;
    while (end - pos >= 5) {
        const unsigned char *h = p + pos;
        long long n = (long long)h[1] << 24 | (long long)h[2] << 16 | h[3] << 8 | h[4];
        if (n > max_bytes) { too_large = 1; break; }
        if (end - pos < 5 + n) break;
        PyObject *m = PyBytes_FromStringAndSize((const char *)h + 5, (Py_ssize_t)n);
        if (m == NULL) goto fail;
        int rc = PyList_Append(msgs, m);
        Py_DECREF(m);
        if (rc < 0) goto fail;
        fl[count++] = (char)h[0];
        pos += 5 + (Py_ssize_t)n;
    }
    flags = PyBytes_FromStringAndSize(fl, count);
    PyMem_Free(fl);
    fl = NULL;
    if (flags == NULL) goto fail;
    if (pos && PySequence_DelSlice(buf, 0, pos) < 0) goto fail;
    return Py_BuildValue("(NNO)", msgs, flags, too_large ? Py_True : Py_False);
fail:
    PyMem_Free(fl);
    Py_XDECREF(msgs);
    Py_XDECREF(flags);
    return NULL;
}

/* whole_messages(data, max_bytes) -> list | None: the gRPC messages of data when it is exactly
 * complete uncompressed length-prefixed messages of at most max_bytes each (a streamed call's
 * whole answer, H2Channel._whole); None otherwise -- a compressed flag, a message too large,
 * or a partial one at the end -- for grpc_messages' path, which takes and raises those. */
static PyObject *py_whole_messages(PyObject *self, PyObject *args) {
    Py_buffer data;
    long long max_bytes;
    if (!PyArg_ParseTuple(args, "y*L", &data, &max_bytes)) return NULL;
    const unsigned char *p = (const unsigned char *)data.buf;
    Py_ssize_t pos = 0, end = data.len;
    while (end - pos >= 5) {  /* checked whole first: nothing built for an answer refused */
        const unsigned char *h = p + pos;
        long long n = (long long)h[1] << 24 | (long long)h[2] << 16 | h[3] << 8 | h[4];
        if (h[0] != 0 || n > max_bytes || end - pos - 5 < n) break;
        pos += 5 + (Py_ssize_t)n;
    }
    if (pos != end) {
        PyBuffer_Release(&data);
        Py_RETURN_NONE;
    }
    PyObject *msgs = PyList_New(0);
    for (pos = 0; msgs != NULL && pos < end;) {
        const unsigned char *h = p + pos;
        Py_ssize_t n = (Py_ssize_t)((long long)h[1] << 24 | (long long)h[2] << 16 | h[3] << 8 | h[4]);
        PyObject *m = PyBytes_FromStringAndSize((const char *)h + 5, n);
        if (m == NULL || PyList_Append(msgs, m) < 0) Py_CLEAR(msgs);
        Py_XDECREF(m);
        pos += 5 + n;
    }
    PyBuffer_Release(&data);
    return msgs;
}

/* with_times(mint, maxt, rest) -> bytes: a SeriesRequest, its time fields (min_time = 1,
 * max_time = 2, zero omitted, each int taken modulo 2**64 as protobuf's int64) before the
 * request's other fields ``rest`` (kept per query shape by storeapi/client.py), in one
 * allocation: in Python the two varints and concatenations are ~20 calls per store call.
 * Byte-identical to wire.series_request_times(mint, maxt) + rest. */
static PyObject *py_with_times(PyObject *self, PyObject *args) {
    PyObject *mo, *xo;
    Py_buffer rest;
    if (!PyArg_ParseTuple(args, "OOy*", &mo, &xo, &rest)) return NULL;
    PyObject *mi = PyNumber_Index(mo), *xi = mi ? PyNumber_Index(xo) : NULL;
    PyObject *out = NULL;
    if (!xi) goto done;
    int mset = PyObject_IsTrue(mi), xset = PyObject_IsTrue(xi);
    uint64_t mv = PyLong_AsUnsignedLongLongMask(mi), xv = PyLong_AsUnsignedLongLongMask(xi);
    if (mset < 0 || xset < 0 || PyErr_Occurred()) goto done;
    size_t n = (mset ? 1 + varint_len(mv) : 0) + (xset ? 1 + varint_len(xv) : 0);
    if ((size_t)rest.len > (size_t)PY_SSIZE_T_MAX - n) { PyErr_NoMemory(); goto done; }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n + (size_t)rest.len));
    if (!out) goto done;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    if (mset) { *p++ = 0x08; p = put_varint(p, mv); }
    if (xset) { *p++ = 0x10; p = put_varint(p, xv); }
    if (rest.len) memcpy(p, rest.buf, (size_t)rest.len);
done:
    Py_XDECREF(mi);
    Py_XDECREF(xi);
    PyBuffer_Release(&rest);
    return out;
}

/* matcher_fields(matchers) -> bytes: the SeriesRequest.matchers fields (tag 3) of a sequence
 * of receiver.tsdb.labels.Matcher (each with .type, a MatchType whose _value_ is "=", "!=",
 * "=~" or "!~", .name and .value strs): LabelMatcher{type = 1 (omitted for EQ), name = 2,
 * value = 3 (each omitted when empty)}. Byte-identical to wire._matcher_field of each; a str
 * that is not valid UTF-8 (a lone surrogate) raises UnicodeEncodeError, as str.encode does,
 * an unknown type KeyError. A query not seen before encodes its matchers anew: in Python that
 * was a dozen calls per matcher. */
static int matcher_type(PyObject *m, long *code) {
    PyObject *t = PyObject_GetAttrString(m, "type");
    if (!t) return -1;
    PyObject *v = PyObject_GetAttrString(t, "_value_");
    Py_DECREF(t);
    if (!v) return -1;
    static const char *ops[] = {"=", "!=", "=~", "!~"};
    *code = -1;
    if (PyUnicode_Check(v))
        for (long k = 0; k < 4; k++)
            if (PyUnicode_CompareWithASCIIString(v, ops[k]) == 0) { *code = k; break; }
    if (*code < 0) PyErr_SetObject(PyExc_KeyError, v);
    Py_DECREF(v);
    return *code < 0 ? -1 : 0;
}

static PyObject *py_matcher_fields(PyObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "matchers must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *strs = PyList_New(0), *out = NULL;  /* (name, value) strs, kept alive meanwhile */
    long *codes = PyMem_Malloc((n ? (size_t)n : 1) * sizeof(long));
    size_t total = 0;
    if (!strs || !codes) { if (!PyErr_Occurred()) PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (matcher_type(items[i], &codes[i])) goto done;
        size_t body = codes[i] ? 2 : 0;
        for (int f = 0; f < 2; f++) {
            PyObject *sv = PyObject_GetAttrString(items[i], f ? "value" : "name");
            if (!sv) goto done;
            int rc = PyList_Append(strs, sv);
            Py_DECREF(sv);
            if (rc < 0) goto done;
            if (!PyUnicode_Check(sv)) { PyErr_SetString(PyExc_TypeError, "matcher name and value must be str"); goto done; }
            Py_ssize_t len;
            if (!PyUnicode_AsUTF8AndSize(sv, &len)) goto done;
            if (len) body += 1 + varint_len((uint64_t)len) + (size_t)len;
        }
        total += 1 + varint_len(body) + body;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!out) goto done;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t ln, lv;
        const char *name = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(strs, 2 * i), &ln);
        const char *value = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(strs, 2 * i + 1), &lv);
        size_t body = (codes[i] ? 2 : 0) + (ln ? 1 + varint_len((uint64_t)ln) + (size_t)ln : 0)
                      + (lv ? 1 + varint_len((uint64_t)lv) + (size_t)lv : 0);
        *p++ = 0x1a;
        p = put_varint(p, body);
        if (codes[i]) { *p++ = 0x08; *p++ = (uint8_t)codes[i]; }
        if (ln) { *p++ = 0x12; p = put_varint(p, (uint64_t)ln); memcpy(p, name, (size_t)ln); p += ln; }
        if (lv) { *p++ = 0x1a; p = put_varint(p, (uint64_t)lv); memcpy(p, value, (size_t)lv); p += lv; }
    }
done:
    PyMem_Free(codes);
    Py_XDECREF(strs);
    Py_DECREF(seq);
    if (PyErr_Occurred()) Py_CLEAR(out);
    return out;
}

/* request_frames(sid, block, data, max_frame) -> bytes: a call's opening frames, as our gRPC
 * client writes a request that fits one DATA frame: HEADERS (+ CONTINUATION frames, each at
 * most max_frame bytes) carrying the header block, then DATA with END_STREAM carrying data (the
 * length-prefixed message). Byte-identical to h2frames.header_frames(sid, block, max_frame,
 * False) + frame(DATA, END_STREAM, sid, data), in one call instead of a dozen Python steps.
 * ValueError when data does not fit one frame or an argument is out of range. */
static uint8_t *put_frame_head(uint8_t *p, size_t n, uint8_t typ, uint8_t flags, uint32_t sid) {
    *p++ = (uint8_t)(n >> 16); *p++ = (uint8_t)(n >> 8); *p++ = (uint8_t)n;
    *p++ = typ; *p++ = flags;
    *p++ = (uint8_t)(sid >> 24); *p++ = (uint8_t)(sid >> 16); *p++ = (uint8_t)(sid >> 8);
    *p++ = (uint8_t)sid;
    return p;
}

static PyObject *py_request_frames(PyObject *self, PyObject *args) {
    long long sid, max_frame;
    Py_buffer block, data;
    if (!PyArg_ParseTuple(args, "Ly*y*L", &sid, &block, &data, &max_frame)) return NULL;
    PyObject *out = NULL;
    if (sid < 0 || sid > 0xFFFFFFFFLL || max_frame < 1 || max_frame > 0xFFFFFF
            || data.len > max_frame) {
        PyErr_SetString(PyExc_ValueError, "stream id, frame size or data out of range");
        goto done;
    }
    size_t bl = (size_t)block.len, mf = (size_t)max_frame;
    size_t nheads = bl ? (bl + mf - 1) / mf : 1;
    if (nheads > ((size_t)PY_SSIZE_T_MAX - bl - (size_t)data.len) / 9 - 1) {
        PyErr_NoMemory(); goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(9 * (nheads + 1) + bl + (size_t)data.len));
    if (!out) goto done;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    const uint8_t *b = block.buf;
    for (size_t i = 0; i < nheads; i++) {
        size_t at = i * mf, n = bl - at < mf ? bl - at : mf;
        if (!bl) n = 0;
        p = put_frame_head(p, n, i ? 9 : 1, at + mf >= bl ? 0x4 : 0, (uint32_t)sid);
        if (n) { memcpy(p, b + at, n); p += n; }
    }
    p = put_frame_head(p, (size_t)data.len, 0, 0x1, (uint32_t)sid);
    if (data.len) memcpy(p, data.buf, (size_t)data.len);
done:
    PyBuffer_Release(&block);
    PyBuffer_Release(&data);
    return out;
}

/* one_stream(data, max_frame, max_block) -> (sid, head, chunks, ndata, nbytes, tail, ended) or
 * None: a read that is exactly one stream's plain answer frames -- [HEADERS] DATA* [HEADERS],
 * all on one nonzero stream, HEADERS with END_HEADERS only (no padding, no priority, at most
 * max_block bytes), DATA unpadded, END_STREAM on the last frame only, no frame longer than
 * max_frame, no partial frame left -- split in one call: head/tail the header blocks (None when
 * absent), chunks the nonempty DATA payloads, ndata the DATA frames, nbytes their payload bytes.
 * None for anything else (the caller then takes the frame-by-frame path, which handles it). */
static PyObject *py_one_stream(PyObject *self, PyObject *args) {
    Py_buffer b;
    long long max_frame, max_block;
    if (!PyArg_ParseTuple(args, "y*LL", &b, &max_frame, &max_block)) return NULL;
    const unsigned char *p = b.buf;
    Py_ssize_t pos = 0, end = b.len, nframes = 0;
    unsigned long sid = 0;
    long long nbytes = 0, ndata = 0;
    int ended = 0;
    PyObject *head = NULL, *tail = NULL, *chunks = NULL, *out = NULL;
    /* pass 1: validate the whole read before building anything */
    while (pos < end) {
        if (ended || end - pos < 9) goto none;
        const unsigned char *h = p + pos;
        long long length = (long long)h[0] << 16 | h[1] << 8 | h[2];
        if (length > max_frame || end - pos - 9 < length) goto none;
        unsigned long s = ((unsigned long)h[5] << 24 | (unsigned long)h[6] << 16
                           | (unsigned long)h[7] << 8 | h[8]) & 0x7FFFFFFFUL;
        if (s == 0 || (nframes && s != sid)) goto none;
        sid = s;
        int typ = h[3], flags = h[4];
        if (typ == 0) {
            if (flags & ~0x1) goto none;
            ndata++;
            nbytes += length;
        } else if (typ == 1) {
            if ((flags & ~0x1) != 0x4 || length > max_block) goto none;
            /* a header block: the first frame or the last one, never between DATA */
            if (nframes && pos + 9 + length != end) goto none;
        } else {
            goto none;
        }
        if (flags & 0x1) ended = 1;
        pos += 9 + (Py_ssize_t)length;
        nframes++;
    }
    if (!nframes) goto none;
    chunks = PyList_New(0);
    if (chunks == NULL) goto fail;
    for (pos = 0; pos < end;) {
        const unsigned char *h = p + pos;
        Py_ssize_t length = (Py_ssize_t)((long long)h[0] << 16 | h[1] << 8 | h[2]);
        if (h[3] == 1 || length) {
            PyObject *pl = PyBytes_FromStringAndSize((const char *)h + 9, length);
            if (pl == NULL) goto fail;
            if (h[3] == 0) {
                int rc = PyList_Append(chunks, pl);
                Py_DECREF(pl);
                if (rc < 0) goto fail;
            } else if (pos == 0) {
                head = pl;
            } else {
                tail = pl;
            }
        }
        pos += 9 + length;
    }
    out = Py_BuildValue("(kOOLLOO)", sid, head ? head : Py_None, chunks, ndata, nbytes,
                        tail ? tail : Py_None, ended ? Py_True : Py_False);
fail:
    Py_XDECREF(head);
    Py_XDECREF(tail);
    Py_XDECREF(chunks);
    PyBuffer_Release(&b);
    return out;
none:
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

/* ---- StoreAPI Series request: the usual thanos.SeriesRequest decoded at once (the store's side) ----
 * series_request(data) -> tuple | None (storeapi/seriesrequest.py). On a cold call upb's parse
 * and a dozen field reads by name cost ~25 us of CPU; this is a few. The tuple is
 *   (min_time, max_time, matchers, max_resolution_window, aggregates, partial_response_disabled,
 *    partial_response_strategy, skip_chunks, step, range, has_query_hints,
 *    without_replica_labels, limit, response_batch_size)
 * with matchers a tuple of (type, name, value), aggregates a tuple of ints and
 * without_replica_labels a tuple of strs; query_hints is only checked, as upb parses it. None for
 * anything this does not represent exactly as upb would -- hints (9), shard_info (13), unknown
 * fields, a known field of another wire type, a bool not 0/1, an enum value beyond its names, a
 * string not UTF-8, a varint past 64 bits, anything malformed -- and the caller lets upb decode
 * it (and raise its own error). Proto3: the last scalar wins, repeated fields accumulate,
 * aggregates packed or not. */

/* A varint as rd_varint reads it, refused when its tenth byte carries bits past 64. */
static int sq_varint(rd_t *r, uint64_t *v) {
    const uint8_t *start = r->p;
    if (rd_varint(r, v)) return -1;
    return r->p - start == 10 && start[9] > 1 ? -1 : 0;
}

/* The next field's number and wire type; its LEN bytes in *sub when wt is 2, its varint in *v
 * when wt is 0; any other wire type (fixed, groups) is refused. */
static int sq_field(rd_t *r, uint32_t *num, int *wt, uint64_t *v, rd_t *sub) {
    uint64_t tag;
    if (sq_varint(r, &tag) || tag > 0xffffffffu || (tag >> 3) == 0) return -1;
    *num = (uint32_t)(tag >> 3); *wt = (int)(tag & 7);
    if (*wt == 0) return sq_varint(r, v);
    return *wt == 2 ? rd_value(r, 2, v, sub) : -1;
}

/* A message that is only checked (query_hints and its parts): per field number its kind,
 * 'v' a varint, 's' a UTF-8 string, 'm' a message of spec sub; the list ends with number 0. */
typedef struct sq_spec { uint32_t num; char kind; const struct sq_spec *sub; } sq_spec;

static const sq_spec SQS_FUNC[] = {{1, 's', NULL}, {0, 0, NULL}};
static const sq_spec SQS_GROUPING[] = {{1, 'v', NULL}, {3, 's', NULL}, {0, 0, NULL}};
static const sq_spec SQS_RANGE[] = {{1, 'v', NULL}, {0, 0, NULL}};
static const sq_spec SQS_QUERY_HINTS[] = {
    {1, 'v', NULL}, {2, 'm', SQS_FUNC}, {4, 'm', SQS_GROUPING}, {5, 'm', SQS_RANGE},
    {6, 's', NULL}, {7, 'v', NULL}, {8, 's', NULL}, {0, 0, NULL}};

static int sq_check(rd_t r, const sq_spec *spec) {
    uint32_t num; int wt; uint64_t v; rd_t sub;
    while (r.p < r.end) {
        if (sq_field(&r, &num, &wt, &v, &sub)) return -1;
        const sq_spec *s = spec;
        while (s->num && s->num != num) s++;
        if (!s->num || (wt == 0) != (s->kind == 'v')) return -1;
        if (s->kind == 's' && !utf8_ok(sub)) return -1;
        if (s->kind == 'm' && sq_check(sub, s->sub)) return -1;
    }
    return 0;
}

/* A str of UTF-8 bytes; NULL with no exception set when they are not UTF-8. */
static PyObject *sq_str(rd_t s) {
    PyObject *u = PyUnicode_DecodeUTF8(s.p ? (const char *)s.p : "", s.p ? s.end - s.p : 0, "strict");
    if (!u && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
    return u;
}

/* One LabelMatcher as (type, name, value) appended to out; -1 when not represented (no
 * exception set) or on an error (set). Every occurrence of a string is checked, as upb does. */
static int sq_matcher(rd_t m, PyObject *out) {
    uint64_t type = 0, v;
    rd_t str[2] = {{NULL, NULL}, {NULL, NULL}}, sub;  /* name = 2, value = 3 */
    uint32_t num; int wt;
    while (m.p < m.end) {
        if (sq_field(&m, &num, &wt, &v, &sub)) return -1;
        if (num == 1 && wt == 0) type = v;
        else if ((num == 2 || num == 3) && wt == 2) {
            if (str[num - 2].p && !utf8_ok(str[num - 2])) return -1;
            str[num - 2] = sub;
        } else return -1;
    }
    if (type > 3) return -1;  /* EQ, NEQ, RE, NRE */
    PyObject *name = sq_str(str[0]), *value = name ? sq_str(str[1]) : NULL;
    PyObject *t = value ? Py_BuildValue("(iOO)", (int)type, name, value) : NULL;
    Py_XDECREF(name); Py_XDECREF(value);
    int rc = t ? PyList_Append(out, t) : -1;
    Py_XDECREF(t);
    return rc;
}

/* One Aggr (RAW..COUNTER) appended to out. */
static int sq_aggr(uint64_t v, PyObject *out) {
    if (v > 5) return -1;
    PyObject *a = PyLong_FromLong((long)v);
    int rc = a ? PyList_Append(out, a) : -1;
    Py_XDECREF(a);
    return rc;
}

/* aggregates (5): one value (wire type 0) or a packed run of them (2). */
static int sq_aggregates(int wt, uint64_t v, rd_t sub, PyObject *out) {
    if (wt == 0) return sq_aggr(v, out);
    while (sub.p < sub.end)
        if (sq_varint(&sub, &v) || sq_aggr(v, out)) return -1;
    return 0;
}

/* The varint fields kept as numbers, by their slot in val[]; SQ_SLOT maps a field number to it. */
enum { SQ_MINT, SQ_MAXT, SQ_RES, SQ_PR_DISABLED, SQ_STRATEGY, SQ_SKIP, SQ_STEP, SQ_RANGE,
       SQ_LIMIT, SQ_BATCH, SQ_NVAL };
static const int8_t SQ_SLOT[17] = {-1, SQ_MINT, SQ_MAXT, -1, SQ_RES, -1, SQ_PR_DISABLED,
                                   SQ_STRATEGY, SQ_SKIP, -1, SQ_STEP, SQ_RANGE, -1, -1, -1,
                                   SQ_LIMIT, SQ_BATCH};

/* One field of the request into val[] or the lists; 0 when taken, -1 when not represented
 * (or on an error, then set). */
static int sq_top_field(uint32_t num, int wt, uint64_t v, rd_t sub, uint64_t *val, int *hints,
                        PyObject *matchers, PyObject *aggrs, PyObject *labels) {
    if (num == 3) return wt == 2 ? sq_matcher(sub, matchers) : -1;
    if (num == 5) return sq_aggregates(wt, v, sub, aggrs);
    if (num == 12) { *hints = 1; return wt == 2 ? sq_check(sub, SQS_QUERY_HINTS) : -1; }
    if (num == 14) {
        PyObject *s = wt == 2 ? sq_str(sub) : NULL;
        int rc = s ? PyList_Append(labels, s) : -1;
        Py_XDECREF(s);
        return rc;
    }
    int slot = num < 17 ? SQ_SLOT[num] : -1;
    if (slot < 0 || wt != 0) return -1;
    val[slot] = v;
    return 0;
}

/* The result tuple (see above) of the decoded fields. */
static PyObject *sq_result(const uint64_t *val, int hints, PyObject *matchers, PyObject *aggrs,
                           PyObject *labels) {
    PyObject *items[14] = {
        PyLong_FromLongLong((long long)val[SQ_MINT]), PyLong_FromLongLong((long long)val[SQ_MAXT]),
        PyList_AsTuple(matchers), PyLong_FromLongLong((long long)val[SQ_RES]),
        PyList_AsTuple(aggrs), PyBool_FromLong((long)val[SQ_PR_DISABLED]),
        PyLong_FromLong((long)val[SQ_STRATEGY]), PyBool_FromLong((long)val[SQ_SKIP]),
        PyLong_FromLongLong((long long)val[SQ_STEP]), PyLong_FromLongLong((long long)val[SQ_RANGE]),
        PyBool_FromLong(hints), PyList_AsTuple(labels),
        PyLong_FromLongLong((long long)val[SQ_LIMIT]), PyLong_FromLongLong((long long)val[SQ_BATCH])};
    PyObject *out = PyTuple_New(14);
    for (int i = 0; i < 14; i++) if (!items[i]) Py_CLEAR(out);
    for (int i = 0; i < 14; i++) {
        if (out) PyTuple_SET_ITEM(out, i, items[i]);
        else Py_XDECREF(items[i]);
    }
    return out;
}

static PyObject *py_series_request(PyObject *self, PyObject *arg) {
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE)) return NULL;
    rd_t r = {(const uint8_t *)buf.buf, (const uint8_t *)buf.buf + buf.len}, sub = {NULL, NULL};
    uint64_t val[SQ_NVAL] = {0}, v = 0;
    uint32_t num; int wt, hints = 0, ok = 1;
    PyObject *matchers = PyList_New(0), *aggrs = PyList_New(0), *labels = PyList_New(0), *out = NULL;
    if (!matchers || !aggrs || !labels) goto done;
    while (ok && r.p < r.end)
        ok = !sq_field(&r, &num, &wt, &v, &sub)
             && !sq_top_field(num, wt, v, sub, val, &hints, matchers, aggrs, labels);
    if (PyErr_Occurred()) goto done;
    if (!ok || val[SQ_PR_DISABLED] > 1 || val[SQ_SKIP] > 1 || val[SQ_STRATEGY] > 1)
        out = Py_NewRef(Py_None);  /* WARN, ABORT; bools 0 or 1 */
    else
        out = sq_result(val, hints, matchers, aggrs, labels);
done:
    Py_XDECREF(matchers); Py_XDECREF(aggrs); Py_XDECREF(labels);
    PyBuffer_Release(&buf);
    return out;
}


static PyMethodDef methods[] = {
    {"xor_chunk_fields", py_xor_chunk_fields, METH_O, "Encode Series.chunks fields of XOR chunks."},
    {"chunked_read_series", py_chunked_read_series, METH_O,
     "Decode the series of one remote-read ChunkedReadResponse frame."},
    {"series_frames", py_series_frames, METH_VARARGS,
     "Encode the Series bodies (or frames) of many (labels, chunks) items (see above)."},
    {"series_response", py_series_response, METH_VARARGS,
     "Decode one StoreAPI SeriesResponse frame (see the comment above)."},
    {"split_frames", py_split_frames, METH_VARARGS,
     "Split the complete HTTP/2 frames off the front of a buffer (see the comment above)."},
    {"grpc_messages", py_grpc_messages, METH_VARARGS,
     "Take the complete gRPC messages off the front of a bytearray (see the comment above)."},
    {"whole_messages", py_whole_messages, METH_VARARGS,
     "The gRPC messages a whole uncompressed answer is made of, or None (see above)."},
    {"with_times", py_with_times, METH_VARARGS,
     "A SeriesRequest: its time fields, then the given rest of its fields (see above)."},
    {"one_stream", py_one_stream, METH_VARARGS,
     "A read of one stream's plain answer frames, split in one call (None otherwise)."},
    {"matcher_fields", py_matcher_fields, METH_O,
     "SeriesRequest.matchers fields of a sequence of Matchers (see above)."},
    {"request_frames", py_request_frames, METH_VARARGS,
     "A call's HEADERS (+ CONTINUATION) and one END_STREAM DATA frame (see above)."},
    {"series_request", py_series_request, METH_O,
     "The usual SeriesRequest's fields as a tuple, None for any other (see above)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_wire", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__wire(void) { return PyModule_Create(&moduledef); }
