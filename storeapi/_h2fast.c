/* Steps of the gRPC server's usual call (storeapi/h2server.py, h2serverconn.py) in C.
 *
 * Why C: after the process sat idle, a one-series StoreAPI call costs about 0.5-1 us of CPU per
 * interpreted Python line around the store's own work; these steps are pure byte work whose
 * Python lines (struct packing, slicing, joining) were a visible part of that. Each returns None
 * (or raises nothing) where the case is not the plain one, and the caller takes its general
 * Python path, which the tests compare against. Only the CPython C API is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* unary_message(body) -> bytes | None: the one uncompressed gRPC message of a unary request body
 * (flag 0, a 4-byte big-endian length that is exactly the rest); None for anything else (a
 * compressed message, a short, truncated or extra-carrying body), which the general path
 * answers with its status. */
static PyObject *py_unary_message(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *p = (const uint8_t *)b.buf;
    PyObject *out;
    if (b.len >= 5 && p[0] == 0 &&
        (((uint64_t)p[1] << 24) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 8) | p[4])
            == (uint64_t)(b.len - 5))
        out = PyBytes_FromStringAndSize((const char *)p + 5, b.len - 5);
    else {
        Py_INCREF(Py_None);
        out = Py_None;
    }
    PyBuffer_Release(&b);
    return out;
}

static uint8_t *put_head(uint8_t *p, Py_ssize_t len, uint8_t typ, uint8_t flags, uint32_t sid) {
    p[0] = (uint8_t)(len >> 16); p[1] = (uint8_t)(len >> 8); p[2] = (uint8_t)len;
    p[3] = typ; p[4] = flags;
    p[5] = (uint8_t)(sid >> 24) & 0x7f; p[6] = (uint8_t)(sid >> 16); p[7] = (uint8_t)(sid >> 8);
    p[8] = (uint8_t)sid;
    return p + 9;
}

/* reply(sid, headers, data, trailers) -> bytes: a whole answer's frames -- HEADERS (END_HEADERS)
 * with the header block, one DATA frame, HEADERS (END_HEADERS | END_STREAM) with the trailers.
 * The caller checked windows and frame sizes (each part below 2^24 bytes). */
static PyObject *py_reply(PyObject *self, PyObject *args) {
    unsigned long sid;
    Py_buffer h, d, t;
    if (!PyArg_ParseTuple(args, "ky*y*y*", &sid, &h, &d, &t)) return NULL;
    PyObject *out = NULL;
    if (h.len >= (1 << 24) || d.len >= (1 << 24) || t.len >= (1 << 24) || sid > 0x7fffffffUL) {
        PyErr_SetString(PyExc_ValueError, "frame too large");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, 27 + h.len + d.len + t.len);
    if (out == NULL) goto done;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    p = put_head(p, h.len, 0x1, 0x4, (uint32_t)sid);
    memcpy(p, h.buf, h.len); p += h.len;
    p = put_head(p, d.len, 0x0, 0x0, (uint32_t)sid);
    memcpy(p, d.buf, d.len); p += d.len;
    p = put_head(p, t.len, 0x1, 0x5, (uint32_t)sid);
    memcpy(p, t.buf, t.len);
done:
    PyBuffer_Release(&h); PyBuffer_Release(&d); PyBuffer_Release(&t);
    return out;
}

/* messages(msgs) -> bytes: each bytes-like message of the list prefixed as a gRPC message
 * (flag 0, 4-byte big-endian length) and joined; a message of 2^32 bytes or more raises. */
static PyObject *py_messages(PyObject *self, PyObject *arg) {
    if (!PyList_Check(arg)) { PyErr_SetString(PyExc_TypeError, "a list of messages"); return NULL; }
    Py_ssize_t n = PyList_GET_SIZE(arg), total = 0, i;
    Py_buffer *bufs = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer));
    if (bufs == NULL) return PyErr_NoMemory();
    PyObject *out = NULL;
    for (i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(arg, i), &bufs[i], PyBUF_SIMPLE) < 0) goto done;
        if ((uint64_t)bufs[i].len > 0xffffffffULL) {
            PyErr_SetString(PyExc_ValueError, "message too large");
            i++;
            goto done;
        }
        total += 5 + bufs[i].len;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out != NULL) {
        uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
        for (Py_ssize_t j = 0; j < n; j++) {
            uint64_t len = (uint64_t)bufs[j].len;
            p[0] = 0; p[1] = (uint8_t)(len >> 24); p[2] = (uint8_t)(len >> 16);
            p[3] = (uint8_t)(len >> 8); p[4] = (uint8_t)len;
            memcpy(p + 5, bufs[j].buf, len);
            p += 5 + len;
        }
    }
done:
    for (Py_ssize_t j = 0; j < i; j++) PyBuffer_Release(&bufs[j]);
    PyMem_Free(bufs);
    return out;
}

/* grpc_timeout(value) -> float | None: the seconds of a grpc-timeout header value, 1 to 8 ASCII
 * digits and a unit (H M S m u n), as the gRPC spec and grpc-go have it; None if malformed. */
static PyObject *py_grpc_timeout(PyObject *self, PyObject *arg) {
    if (!PyUnicode_Check(arg)) { PyErr_SetString(PyExc_TypeError, "a str"); return NULL; }
    if (!PyUnicode_IS_ASCII(arg)) Py_RETURN_NONE;
    Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    const char *s = (const char *)PyUnicode_1BYTE_DATA(arg);
    if (n < 2 || n > 9) Py_RETURN_NONE;
    uint64_t v = 0;
    for (Py_ssize_t i = 0; i < n - 1; i++) {
        if (s[i] < '0' || s[i] > '9') Py_RETURN_NONE;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    double unit;
    switch (s[n - 1]) {
    case 'H': unit = 3600.0; break;
    case 'M': unit = 60.0; break;
    case 'S': unit = 1.0; break;
    case 'm': unit = 1e-3; break;
    case 'u': unit = 1e-6; break;
    case 'n': unit = 1e-9; break;
    default: Py_RETURN_NONE;
    }
    return PyFloat_FromDouble((double)v * unit);
}

static PyMethodDef methods[] = {
    {"grpc_timeout", py_grpc_timeout, METH_O, "Seconds of a grpc-timeout value, else None (see above)."},
    {"unary_message", py_unary_message, METH_O,
     "The one uncompressed message of a unary request body, else None (see above)."},
    {"reply", py_reply, METH_VARARGS, "A whole answer's HEADERS, DATA and trailer frames (see above)."},
    {"messages", py_messages, METH_O, "gRPC length-prefixed messages joined (see above)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_h2fast", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__h2fast(void) { return PyModule_Create(&moduledef); }
