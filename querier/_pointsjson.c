/* A matrix series' JSON `values` array, `[[t,"v"],...]`, in one pass (querier/jsonfmt.py).
 *
 * Why C: a range query answer has a point per series per step, and formatting each point in
 * Python (a float repr, a timestamp, a format call) was a third of the querier's CPU on dashboard
 * queries. The shortest round-trip float digits come from orjson (Ryu), passed in as the JSON
 * array orjson.dumps makes of the float64 values; this only re-spells its plain tokens the way
 * Prometheus (Go's strconv 'f', -1) does, drops the ".0" of whole numbers, and writes the
 * timestamps as seconds with three millisecond digits when not whole. Any token that is not a
 * plain decimal (exponent form, null for NaN/Inf) makes it return None: the caller then formats
 * that series in Python.
 * matrix_body writes a whole range query answer (querier/plainrange.py) from present_samples'
 * output with no arrays, orjson or result objects in between: on a cold query each of those
 * costs more than the formatting. It finds the shortest digits itself (see shortest), spells
 * values as querier.jsonfmt.format_value and escapes labels as orjson does.
 * Only the CPython C API is used.
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

static const uint64_t POW10[20] = {
    1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
    1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
    100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
    1000000000000000000ull, 10000000000000000000ull};

/* Writes s's decimal digits; returns the end. Two digits per division, from the last digit at
 * its place (the count from the bit length): a range answer writes two numbers per point. */
static char *put_u64(char *p, uint64_t s) {
    const int t = ((64 - __builtin_clzll(s | 1)) * 1233) >> 12;  /* floor(bits * log10 2) */
    const int n = t + (s >= POW10[t]);
    char *end = p + (n ? n : 1), *q = end;
    while (s >= 100) {
        const unsigned d = (unsigned)(s % 100) * 2;
        s /= 100;
        *--q = DIGIT_PAIRS[d + 1];
        *--q = DIGIT_PAIRS[d];
    }
    if (s >= 10) {
        *--q = DIGIT_PAIRS[s * 2 + 1];
        *--q = DIGIT_PAIRS[s * 2];
    } else {
        *--q = (char)('0' + s);
    }
    return end;
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

/* Writes m / 10^k as a plain decimal ("123.45", "0.00015"; m has no trailing zero if k > 0);
 * returns the end. */
static char *put_decimal(char *p, uint64_t m, int k) {
    char tmp[24];
    const int nd = (int)(put_u64(tmp, m) - tmp);
    if (nd > k) {
        memcpy(p, tmp, (size_t)(nd - k)); p += nd - k;
        if (!k) return p;
        *p++ = '.';
        memcpy(p, tmp + nd - k, (size_t)k);
        return p + k;
    }
    *p++ = '0'; *p++ = '.';
    memset(p, '0', (size_t)(k - nd)); p += k - nd;
    memcpy(p, tmp, (size_t)nd);
    return p + nd;
}

/* Writes the plain decimal of the exponent-form shortest digits r ("-1.5e-05", "1e+16");
 * returns the end. For the ranges Python's repr writes in exponent form but Go's 'f' does not:
 * [1e-6, 1e-4) and [1e16, 1e21) (what numpy's format_float_positional makes of them). */
static char *put_positional(char *p, const char *r, const char *e) {
    uint64_t m = 0;
    int nd = 0;
    if (*r == '-') *p++ = *r++;
    for (; r < e && nd < 19; r++)  /* (at most 17 digits) */
        if (*r != '.') { m = m * 10 + (uint64_t)(*r - '0'); nd++; }
    const long z = strtol(e + 1, NULL, 10) - (nd - 1);  /* the last digit's power of ten */
    if (z < 0) return put_decimal(p, m, (int)-z);
    p = put_u64(p, m);
    memset(p, '0', (size_t)z);  /* (z <= 20) */
    return p + z;
}

typedef unsigned __int128 u128;

static const uint64_t POW5[22] = {
    1ull, 5ull, 25ull, 125ull, 625ull, 3125ull, 15625ull, 78125ull, 390625ull, 1953125ull,
    9765625ull, 48828125ull, 244140625ull, 1220703125ull, 6103515625ull, 30517578125ull,
    152587890625ull, 762939453125ull, 3814697265625ull, 19073486328125ull, 95367431640625ull,
    476837158203125ull};

/* The shortest decimal m / 10^k that reads back as a, the nearest of them if several (the
 * digits of Python's repr and orjson's), for a not whole in [1e-4, 2**53); 0 where it leaves
 * the answer to dtoa. Why: dtoa (PyOS_double_to_string) takes big-integer steps, several times
 * the cost of the answer's other work per value.
 * Exact in integers: a = f / 2^s, so a * 10^K (K for 17 or 18 digits, enough to read back)
 * is x = 4 f 5^K in units of 2^-sh (sh = s + 2 - K), and the values reading back as a are
 * those less than half a gap from it (2 * 5^K units, 5^K below a power of two). The integers
 * [l, h] within are the K-digit decimals that read back; dropping digits while a multiple of
 * 10 is left in the range gives the fewest, then the nearest one is taken. Decimals exactly on
 * a half-gap boundary (dtoa takes them when f is even) have k >= s + 1 digits, so exist within
 * K only when sh < 2, and a value halfway between two decimals needs dtoa's tie-break: those
 * are left to dtoa. */
static int shortest(double a, uint64_t *m_out, int *k_out) {
    uint64_t bits;
    memcpy(&bits, &a, 8);
    const int e2 = (int)(bits >> 52) - 1023;  /* 2^e2 <= a < 2^(e2+1); -14 <= e2 <= 52 */
    const int K = 16 - ((e2 * 78913) >> 18);  /* 16 - floor(e2 log10 2): 1 <= K <= 21 */
    const int sh = 52 - e2 + 2 - K;
    if (sh < 2) return 0;
    const uint64_t f = (bits & (((uint64_t)1 << 52) - 1)) | (uint64_t)1 << 52, p = POW5[K];
    const u128 x = (u128)(f << 2) * p, unit = (u128)1 << sh;  /* x < 2^55 5^21 < 2^104 */
    const u128 rem = x & (unit - 1);
    if (2 * rem == unit) return 0;
    /* (a * 10^K < 10^18: the decimals fit 64 bits) */
    const uint64_t near = (uint64_t)(x >> sh) + (2 * rem > unit);
    const uint64_t below = f == (uint64_t)1 << 52 ? (f << 2) - 1 : (f << 2) - 2;
    uint64_t l = (uint64_t)(((u128)below * p) >> sh) + 1;
    uint64_t h = (uint64_t)(((u128)((f << 2) + 2) * p - 1) >> sh);
    int j = 0;
    while (j < K && (l + 9) / 10 <= h / 10) {
        l = (l + 9) / 10;
        h /= 10;
        j++;
    }
    if (l > h) return 0;
    uint64_t m = near;
    if (j) {  /* the nearest multiple of 10^j */
        const uint64_t pj = POW10[j], half = pj / 2, r = near % pj;
        m = (near + half) / pj;
        if (r == half) {  /* near is the midpoint: a itself is above or below it */
            if (!rem) return 0;  /* a is halfway: dtoa's tie-break */
            if (2 * rem > unit) m--;  /* near was rounded up: a is below */
        }
    }
    *m_out = m < l ? l : m > h ? h : m;  /* (one of [l, h]: the nearest that reads back) */
    *k_out = K - j;
    return 1;
}

/* Writes v as querier.jsonfmt.format_value spells it: Go's strconv 'f' (shortest round-trip
 * digits, no ".0") from 1e-6 to 1e21, its 'e' form (Python's repr's) outside, NaN, +Inf,
 * -Inf; returns the end, or NULL with the error set (out of memory). */
static char *put_value(char *p, double v) {
    if (Py_IS_NAN(v)) { memcpy(p, "NaN", 3); return p + 3; }
    if (Py_IS_INFINITY(v)) { memcpy(p, v > 0 ? "+Inf" : "-Inf", 4); return p + 4; }
    const double a = fabs(v);
    uint64_t m;
    int k;
    if (a < EXACT_INT && v == (double)(int64_t)v && (v != 0 || !signbit(v))) {
        if (v < 0) *p++ = '-';  /* whole: counters, most gauges, with no digits to find */
        return put_u64(p, (uint64_t)a);
    }
    if (a >= 1e-4 && a < EXACT_INT && shortest(a, &m, &k)) {
        if (v < 0) *p++ = '-';
        return put_decimal(p, m, k);
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

static const char MATRIX_HEAD[] =
    "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[";
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
