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
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Writes u's decimal digits; returns the end. Two digits per division: a range answer
 * writes one or two numbers per point. */
static char *put_u64(char *p, uint64_t s) {
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
    return p + (24 - k);
}

/* Writes t_ms as seconds[.mmm]; returns the end (at most 21 bytes). */
static char *put_ts(char *p, int64_t t) {
    uint64_t u;
    if (t < 0) { *p++ = '-'; u = (uint64_t)0 - (uint64_t)t; } else { u = (uint64_t)t; }
    const uint64_t ms = u % 1000;
    p = put_u64(p, u / 1000);
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

/* The longest spellings: a point `[-9223372036854775.808,"-0.0000012345678901234567"],` takes
 * under 64 bytes (its value at most 26: Go's 'e' form of a 17-digit value is 24). */
#define POINT_MAX 64
#define EXACT_INT 9007199254740992.0  /* 2**53: every whole double below is an int64 */

/* Writes the plain decimal of the exponent-form shortest digits r ("-1.5e-05", "1e+16");
 * returns the end. For the ranges Python's repr writes in exponent form but Go's 'f' does not:
 * [1e-6, 1e-4) and [1e16, 1e21) (what numpy's format_float_positional makes of them). */
static char *put_positional(char *p, const char *r, const char *e) {
    char digits[24];
    int nd = 0;
    if (*r == '-') *p++ = *r++;
    for (; r < e && nd < 24; r++)
        if (*r != '.') digits[nd++] = *r;
    const long x = strtol(e + 1, NULL, 10);  /* -6, -5 or 16..20 */
    if (x < 0) {
        *p++ = '0'; *p++ = '.';
        for (long i = 1; i < -x; i++) *p++ = '0';
        memcpy(p, digits, (size_t)nd);
        return p + nd;
    }
    const int whole = (int)x + 1;
    if (nd <= whole) {
        memcpy(p, digits, (size_t)nd); p += nd;
        memset(p, '0', (size_t)(whole - nd));
        return p + (whole - nd);
    }
    memcpy(p, digits, (size_t)whole); p += whole;
    *p++ = '.';
    memcpy(p, digits + whole, (size_t)(nd - whole));
    return p + (nd - whole);
}

/* Writes v as querier.jsonfmt.format_value spells it: Go's strconv 'f' (shortest round-trip
 * digits, no ".0") from 1e-6 to 1e21, its 'e' form (Python's repr's) outside, NaN, +Inf,
 * -Inf; returns the end, or NULL with the error set (out of memory). */
static char *put_value(char *p, double v) {
    if (Py_IS_NAN(v)) { memcpy(p, "NaN", 3); return p + 3; }
    if (Py_IS_INFINITY(v)) { memcpy(p, v > 0 ? "+Inf" : "-Inf", 4); return p + 4; }
    const double a = fabs(v);
    if (a < EXACT_INT && v == (double)(int64_t)v && (v != 0 || !signbit(v))) {
        if (v < 0) *p++ = '-';  /* whole: counters, most gauges, with no digits to find */
        return put_u64(p, (uint64_t)a);
    }
    char *r = PyOS_double_to_string(v, 'r', 0, 0, NULL);  /* repr's digits, no ".0" */
    if (!r) return NULL;
    const char *e = strchr(r, 'e');
    if (e && a >= 1e-6 && a < 1e21) {
        p = put_positional(p, r, e);
    } else {
        const size_t n = strlen(r);
        memcpy(p, r, n);
        p += n;
    }
    PyMem_Free(r);
    return p;
}

/* orjson's escapes of the control characters: the short ones, else \u00XX (0: none short). */
static const char SHORT_ESC[32] = {0, 0, 0, 0, 0, 0, 0, 0, 'b', 't', 'n', 0, 'f', 'r'};

/* The bytes of s[0..n) as a JSON string, quotes included, escaped as orjson escapes: '"',
 * '\\' and the control characters; anything else (non-ASCII UTF-8, '/', DEL) as is. */
static Py_ssize_t json_str_len(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t len = n + 2;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < 0x20) len += SHORT_ESC[s[i]] ? 1 : 5;
        else if (s[i] == '"' || s[i] == '\\') len += 1;
    }
    return len;
}

static char *put_json_str(char *p, const unsigned char *s, Py_ssize_t n) {
    *p++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') { *p++ = (char)c; continue; }
        *p++ = '\\';
        if (c >= 0x20) *p++ = (char)c;
        else if (SHORT_ESC[c]) *p++ = SHORT_ESC[c];
        else {
            memcpy(p, "u00", 3); p += 3;
            *p++ = "0123456789abcdef"[c >> 4];
            *p++ = "0123456789abcdef"[c & 15];
        }
    }
    *p++ = '"';
    return p;
}

/* The UTF-8 of a label name or value; NULL (no error set) if it is not a str or has none. */
static const unsigned char *label_utf8(PyObject *s, Py_ssize_t *n) {
    if (!PyUnicode_Check(s)) return NULL;
    const char *u = PyUnicode_AsUTF8AndSize(s, n);
    if (!u) PyErr_Clear();  /* lone surrogates */
    return (const unsigned char *)u;
}

/* The bytes {"name":"value",...} of a series' labels take (what orjson.dumps(dict(lbls))
 * writes), or -1 (no error set) for labels it cannot write the same: not a tuple of
 * (str, str) pairs, not UTF-8, or names not strictly ascending (dict() would merge repeats). */
static Py_ssize_t labels_len(PyObject *lbls) {
    if (!PyTuple_Check(lbls)) return -1;
    const Py_ssize_t k = PyTuple_GET_SIZE(lbls);
    Py_ssize_t len = 2 + (k ? k - 1 : 0), prev_n = 0;
    const unsigned char *prev = NULL;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *pair = PyTuple_GET_ITEM(lbls, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) return -1;
        Py_ssize_t nn, vn;
        const unsigned char *name = label_utf8(PyTuple_GET_ITEM(pair, 0), &nn);
        const unsigned char *value = label_utf8(PyTuple_GET_ITEM(pair, 1), &vn);
        if (!name || !value || nn > PY_SSIZE_T_MAX / 16 || vn > PY_SSIZE_T_MAX / 16) return -1;
        if (prev) {
            const int c = memcmp(prev, name, (size_t)(prev_n < nn ? prev_n : nn));
            if (c > 0 || (c == 0 && prev_n >= nn)) return -1;
        }
        prev = name; prev_n = nn;
        const Py_ssize_t more = json_str_len(name, nn) + 1 + json_str_len(value, vn);
        if (len > PY_SSIZE_T_MAX / 2 - more) return -1;
        len += more;
    }
    return len;
}

/* Writes the labels checked by labels_len. */
static char *put_labels(char *p, PyObject *lbls) {
    *p++ = '{';
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(lbls); i++) {
        PyObject *pair = PyTuple_GET_ITEM(lbls, i);
        Py_ssize_t nn, vn;
        const unsigned char *name = label_utf8(PyTuple_GET_ITEM(pair, 0), &nn);
        const unsigned char *value = label_utf8(PyTuple_GET_ITEM(pair, 1), &vn);
        if (i) *p++ = ',';
        p = put_json_str(p, name, nn);
        *p++ = ':';
        p = put_json_str(p, value, vn);
    }
    *p++ = '}';
    return p;
}

static const char MATRIX_HEAD[] = "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[";
static const char MATRIX_TAIL[] = "]}}";
static const char METRIC[] = "{\"metric\":";
static const char VALUES[] = ",\"values\":[";

/* The bytes the answer takes at most: its labels exactly, POINT_MAX per point; -1 with
 * ValueError for counts that do not add up to the n points, or -2 (no error) for labels
 * labels_len refuses. Series with no point are left out, so not looked at. */
static Py_ssize_t matrix_len(PyObject *labels, PyObject *counts, Py_ssize_t n) {
    Py_ssize_t len = sizeof MATRIX_HEAD + sizeof MATRIX_TAIL, total = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(counts); i++) {
        PyObject *c = PySequence_Fast_GET_ITEM(counts, i);
        const Py_ssize_t count = PyLong_Check(c) ? PyLong_AsSsize_t(c) : -1;
        if (count < 0 || count > n - total) {
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError, "counts must be ints adding up to the points");
            }
            return -1;
        }
        if (!count) continue;
        total += count;
        const Py_ssize_t lbl = labels_len(PySequence_Fast_GET_ITEM(labels, i));
        if (lbl < 0) return -2;
        if (len > PY_SSIZE_T_MAX / 2 - lbl) return -2;
        len += sizeof METRIC + sizeof VALUES + 3 + lbl;
    }
    if (total != n) {
        PyErr_SetString(PyExc_ValueError, "counts must be ints adding up to the points");
        return -1;
    }
    if (n > (PY_SSIZE_T_MAX / 2 - len) / POINT_MAX) { PyErr_NoMemory(); return -1; }
    return len + n * POINT_MAX;
}

/* Writes the series with points of the answer sized by matrix_len; NULL with the error set
 * when out of memory. */
static char *put_matrix(char *p, PyObject *labels, PyObject *counts, const char *pts,
                        const char *pvals) {
    memcpy(p, MATRIX_HEAD, sizeof MATRIX_HEAD - 1); p += sizeof MATRIX_HEAD - 1;
    Py_ssize_t at = 0, written = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(counts); i++) {
        const Py_ssize_t count = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(counts, i));
        if (!count) continue;
        if (written++) *p++ = ',';
        memcpy(p, METRIC, sizeof METRIC - 1); p += sizeof METRIC - 1;
        p = put_labels(p, PySequence_Fast_GET_ITEM(labels, i));
        memcpy(p, VALUES, sizeof VALUES - 1); p += sizeof VALUES - 1;
        for (Py_ssize_t j = at; j < at + count; j++) {
            int64_t t;
            double v;
            memcpy(&t, pts + 8 * j, 8);  /* (any buffer: maybe not aligned) */
            memcpy(&v, pvals + 8 * j, 8);
            if (j > at) *p++ = ',';
            *p++ = '[';
            p = put_ts(p, t);
            *p++ = ','; *p++ = '"';
            if (!(p = put_value(p, v))) return NULL;
            *p++ = '"'; *p++ = ']';
        }
        at += count;
        *p++ = ']'; *p++ = '}';
    }
    memcpy(p, MATRIX_TAIL, sizeof MATRIX_TAIL - 1);
    return p + sizeof MATRIX_TAIL - 1;
}

/* matrix_body(labels, pts, pvals, counts) -> bytes | None: the whole /api/v1/query_range
 * answer (no warnings, infos or stats) of float series from present_samples' answer: series i
 * has labels[i] (a tuple of (name, value) str pairs) and the next counts[i] points of the int64
 * times pts and float64 values pvals; a series with no point is left out. None for labels
 * orjson would write otherwise (see labels_len): the caller then takes the Python path. */
static PyObject *py_matrix_body(PyObject *self, PyObject *args) {
    PyObject *labels_arg, *counts_arg;
    Py_buffer tb, vb;
    if (!PyArg_ParseTuple(args, "Oy*y*O:matrix_body", &labels_arg, &tb, &vb, &counts_arg))
        return NULL;
    PyObject *labels = NULL, *counts = NULL, *out = NULL;
    if (tb.len % 8 || vb.len != tb.len) {
        PyErr_SetString(PyExc_ValueError, "pts and pvals must be int64 and float64 alike");
        goto done;
    }
    labels = PySequence_Fast(labels_arg, "labels must be a sequence");
    counts = labels ? PySequence_Fast(counts_arg, "counts must be a sequence") : NULL;
    if (!counts) goto done;
    if (PySequence_Fast_GET_SIZE(labels) != PySequence_Fast_GET_SIZE(counts)) {
        PyErr_SetString(PyExc_ValueError, "labels and counts differ in length");
        goto done;
    }
    const Py_ssize_t cap = matrix_len(labels, counts, tb.len / 8);
    if (cap == -2) { Py_INCREF(Py_None); out = Py_None; }
    if (cap < 0) goto done;
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, cap);  /* written in place */
    if (!bytes) goto done;
    char *end = put_matrix(PyBytes_AS_STRING(bytes), labels, counts, tb.buf, vb.buf);
    if (!end) { Py_DECREF(bytes); goto done; }
    if (_PyBytes_Resize(&bytes, end - PyBytes_AS_STRING(bytes)) == 0) out = bytes;
done:
    Py_XDECREF(labels);
    Py_XDECREF(counts);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&vb);
    return out;
}

static PyMethodDef methods[] = {
    {"points", py_points, METH_VARARGS, "A matrix series' values JSON from its timestamps and orjson-dumped values."},
    {"matrix_body", py_matrix_body, METH_VARARGS,
     "matrix_body(labels, pts, pvals, counts) -> bytes | None: a matrix answer's whole body."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_pointsjson", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pointsjson(void) { return PyModule_Create(&moduledef); }
