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

static PyMethodDef methods[] = {
    {"xor_chunk_fields", py_xor_chunk_fields, METH_O, "Encode Series.chunks fields of XOR chunks."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_wire", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__wire(void) { return PyModule_Create(&moduledef); }
