/* The chunk fields of a thanos.Series body, encoded in one pass (storeapi/wire.py).
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

/* The next field: its number, wire type and (for LEN) its bytes; scalars in *val. */
static int rd_field(rd_t *r, uint32_t *num, int *wt, uint64_t *val, rd_t *sub) {
    uint64_t tag;
    if (rd_varint(r, &tag)) return -1;
    *num = (uint32_t)(tag >> 3); *wt = (int)(tag & 7);
    switch (*wt) {
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

static PyMethodDef methods[] = {
    {"xor_chunk_fields", py_xor_chunk_fields, METH_O, "Encode Series.chunks fields of XOR chunks."},
    {"chunked_read_series", py_chunked_read_series, METH_O,
     "Decode the series of one remote-read ChunkedReadResponse frame."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_wire", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__wire(void) { return PyModule_Create(&moduledef); }
