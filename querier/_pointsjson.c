/* A matrix series' JSON `values` array, `[[t,"v"],...]`, in one pass (querier/jsonfmt.py).
 *
 * Why C: a range query answer has a point per series per step, and formatting each point in
 * Python (a float repr, a timestamp, a format call) was a third of the querier's CPU on dashboard
 * queries. The shortest round-trip float digits come from orjson (Ryu), passed in as the JSON
 * array orjson.dumps makes of the float64 values; this only re-spells its plain tokens the way
 * Prometheus (Go's strconv 'f', -1) does, drops the ".0" of whole numbers, and writes the
 * timestamps as seconds with three millisecond digits when not whole. Any token that is not a
 * plain decimal (exponent form, null for NaN/Inf) makes it return None: the caller then formats
 * that series in Python. Only the CPython C API is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Writes t_ms as seconds[.mmm]; returns the end. Two digits per division: a range answer
 * writes one per point. */
static char *put_ts(char *p, int64_t t) {
    uint64_t u;
    if (t < 0) { *p++ = '-'; u = (uint64_t)0 - (uint64_t)t; } else { u = (uint64_t)t; }
    uint64_t s = u / 1000, ms = u % 1000;
    char tmp[24];
    int k = 24;
    while (s >= 100) {
        const unsigned d = (unsigned)(s % 100) * 2;
        s /= 100;
        tmp[--k] = DIGIT_PAIRS[d + 1];
        tmp[--k] = DIGIT_PAIRS[d];
    }
    if (s >= 10) {
        tmp[--k] = DIGIT_PAIRS[s * 2 + 1];
        tmp[--k] = DIGIT_PAIRS[s * 2];
    } else {
        tmp[--k] = (char)('0' + s);
    }
    memcpy(p, tmp + k, (size_t)(24 - k));
    p += 24 - k;
    if (ms) {
        *p++ = '.';
        *p++ = (char)('0' + ms / 100);
        *p++ = (char)('0' + ms / 10 % 10);
        *p++ = (char)('0' + ms % 10);
    }
    return p;
}

/* points(ts, vals_json) -> bytes | None: ts any int64 buffer of n items, vals_json the bytes
 * orjson.dumps made of the n float64 values. */
static PyObject *py_points(PyObject *self, PyObject *args) {
    Py_buffer tb, vb;
    if (!PyArg_ParseTuple(args, "y*y*", &tb, &vb)) return NULL;
    PyObject *out = NULL;
    if (tb.len % 8) { PyErr_SetString(PyExc_ValueError, "ts must be int64"); goto done; }
    Py_ssize_t n = tb.len / 8;
    const char *v = vb.buf, *vend = (const char *)vb.buf + vb.len;
    if (vb.len < 2 || v[0] != '[' || vend[-1] != ']') {
        PyErr_SetString(PyExc_ValueError, "vals_json must be a JSON array"); goto done;
    }
    v++; vend--;
    /* per point at most: [ - 20 digits . 3 , " token " ] , */
    size_t cap = 2 + (size_t)n * 32 + (size_t)(vend - v);
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);  /* written in place */
    if (!bytes) goto done;
    char *buf = PyBytes_AS_STRING(bytes);
    const int64_t *ts = tb.buf;
    char *p = buf;
    *p++ = '[';
    Py_ssize_t i = 0;
    int ok = 1;
    while (v < vend || i < n) {
        if (i >= n || v >= vend) { ok = 0; break; }  /* counts differ */
        const char *e = memchr(v, ',', (size_t)(vend - v));
        if (!e) e = vend;
        if (e == v) { ok = 0; break; }
        size_t len = (size_t)(e - v);
        /* orjson's float tokens: digits, '.', '-', or an exponent ('e') or null (NaN, Inf) */
        if (*v == 'n' || memchr(v, 'e', len)) { ok = 0; break; }
        /* below 1e-6 Go switches to exponent form: a plain 0.000000... token is not Go's */
        const char *z = *v == '-' ? v + 1 : v;
        if (e - z > 8 && memcmp(z, "0.000000", 8) == 0) { ok = 0; break; }
        if (len >= 2 && e[-1] == '0' && e[-2] == '.') len -= 2;
        if (i) *p++ = ',';
        *p++ = '[';
        p = put_ts(p, ts[i]);
        *p++ = ','; *p++ = '"';
        memcpy(p, v, len); p += len;
        *p++ = '"'; *p++ = ']';
        i++;
        v = e < vend ? e + 1 : e;
    }
    *p++ = ']';
    if (ok && _PyBytes_Resize(&bytes, p - buf) == 0) out = bytes;
    else if (ok) out = NULL;  /* (the resize failed: bytes is gone, the error set) */
    else { Py_DECREF(bytes); Py_INCREF(Py_None); out = Py_None; }
done:
    PyBuffer_Release(&tb);
    PyBuffer_Release(&vb);
    return out;
}

static PyMethodDef methods[] = {
    {"points", py_points, METH_VARARGS, "A matrix series' values JSON from its timestamps and orjson-dumped values."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_pointsjson", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pointsjson(void) { return PyModule_Create(&moduledef); }
