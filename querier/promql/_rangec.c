/* Range-vector window kernels over many series laid end to end (querier/promql/rangefuncs.py).
 *
 * Why C: a dashboard's rate() over a few thousand series at 240 steps is ~10^5-10^6 windows;
 * numpy spent ~40 whole-array passes on them (bounds by banded searchsorted, then the
 * extrapolation arithmetic), which was most of the querier's CPU on such queries. Here each
 * series' windows are found by walking its samples once (the steps ascend), and rate's
 * arithmetic is one pass over the windows, in Prometheus's own operation order (counter-reset
 * corrections are added to the result one by one, as its extrapolatedRate does).
 *
 * Buffers in, bytes out (the caller wraps them with numpy.frombuffer); no numpy headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../../receiver/tsdb/bigbytes.h"

/* First index k in [a, b) with ts[k] > v, else b. */
static inline int64_t upper_bound(const int64_t *ts, int64_t a, int64_t b, int64_t v) {
    while (a < b) {
        int64_t m = a + (b - a) / 2;
        if (ts[m] > v) b = m; else a = m + 1;
    }
    return a;
}

/* Prometheus's staleness marker, a NaN with this exact bit pattern. */
#define STALE_NAN 0x7ff0000000000002ULL

static inline int64_t sat_sub(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r)) return b > 0 ? INT64_MIN : INT64_MAX;
    return r;
}

static int check_i64(Py_buffer *b, const char *what) {
    if (b->len % 8) {
        PyErr_Format(PyExc_ValueError, "%s must be an int64/float64 buffer", what);
        return -1;
    }
    return 0;
}

/* The number of series n described by offs (n+1 int64 starts from 0 to N, not decreasing)
 * whose n*T windows fit in memory; -1 with an exception set otherwise. */
static Py_ssize_t series_count(Py_buffer *ob, Py_ssize_t N, Py_ssize_t T) {
    Py_ssize_t n1 = ob->len / 8;
    if (n1 < 1) { PyErr_SetString(PyExc_ValueError, "offs needs n+1 entries"); return -1; }
    const Py_ssize_t n = n1 - 1;
    const int64_t *offs = ob->buf;
    if (offs[0] != 0 || offs[n] != N) {
        PyErr_SetString(PyExc_ValueError, "offs must run from 0 to len(ts)"); return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (offs[i + 1] < offs[i]) { PyErr_SetString(PyExc_ValueError, "offs must not decrease"); return -1; }
    if (T && n > PY_SSIZE_T_MAX / 8 / T) { PyErr_NoMemory(); return -1; }
    return n;
}

/* window_bounds(ts, offs, end, rng) -> (lo, hi): int64 bytes of n*T entries, series-major
 * (series i, step j at i*T + j). ts: int64 timestamps of n series laid end to end, each
 * ascending; offs: int64[n+1] where each series starts (offs[n] = len(ts)); end: int64[T]
 * window ends. Window (end - rng, end]: lo = first sample after end - rng, hi = first sample
 * after end, as indices into ts. */
static PyObject *py_window_bounds(PyObject *self, PyObject *args) {
    Py_buffer tb, ob, eb;
    long long rng;
    if (!PyArg_ParseTuple(args, "y*y*y*L:window_bounds", &tb, &ob, &eb, &rng)) return NULL;
    PyObject *olo = NULL, *ohi = NULL, *res = NULL;
    if (check_i64(&tb, "ts") || check_i64(&ob, "offs") || check_i64(&eb, "end")) goto done;
    Py_ssize_t N = tb.len / 8, T = eb.len / 8, n = series_count(&ob, N, T);
    if (n < 0) goto done;
    const int64_t *ts = tb.buf, *offs = ob.buf, *end = eb.buf;
    olo = big_bytes(n * T * 8);
    ohi = big_bytes(n * T * 8);
    if (!olo || !ohi) goto done;
    int64_t *lo = (int64_t *)PyBytes_AS_STRING(olo), *hi = (int64_t *)PyBytes_AS_STRING(ohi);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t a = offs[i], b = offs[i + 1];
        int64_t pl = a, ph = a;
        for (Py_ssize_t j = 0; j < T; j++) {
            const int64_t e = end[j], s = sat_sub(e, rng);
            if (j == 0 || e < end[j - 1]) {  /* first step, or the ends went back: search */
                pl = upper_bound(ts, a, b, s);
                ph = upper_bound(ts, pl > a ? pl : a, b, e);
                if (ph < pl) ph = upper_bound(ts, a, b, e);
            } else {  /* ascending ends: both bounds only move forward */
                while (pl < b && ts[pl] <= s) pl++;
                while (ph < b && ts[ph] <= e) ph++;
            }
            lo[i * T + j] = pl;
            hi[i * T + j] = ph;
        }
    }
    Py_END_ALLOW_THREADS
    res = PyTuple_Pack(2, olo, ohi);
done:
    Py_XDECREF(olo);
    Py_XDECREF(ohi);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&ob);
    PyBuffer_Release(&eb);
    return res;
}

/* extrapolated(ts, vals, lo, hi, end, rng, counter, rate) -> (result float64 bytes, ok bytes)
 * for W windows: window w holds samples lo[w]..hi[w]-1 of ts/vals and ends at end[w] (range
 * rng ms). Prometheus's extrapolatedRate for float samples: rate (counter, rate), increase
 * (counter) or delta (neither). ok[w] is 1 where the window holds at least two samples; the
 * result is 0 elsewhere. */
static PyObject *py_extrapolated(PyObject *self, PyObject *args) {
    Py_buffer tb, vb, lb, hb, eb;
    long long rng;
    int counter, rate;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*Lpp:extrapolated", &tb, &vb, &lb, &hb, &eb, &rng,
                          &counter, &rate))
        return NULL;
    PyObject *ores = NULL, *ook = NULL, *res = NULL;
    if (check_i64(&tb, "ts") || check_i64(&vb, "vals") || check_i64(&lb, "lo") ||
        check_i64(&hb, "hi") || check_i64(&eb, "end"))
        goto done;
    Py_ssize_t N = tb.len / 8, W = lb.len / 8;
    if (vb.len != tb.len || hb.len != lb.len || eb.len != lb.len) {
        PyErr_SetString(PyExc_ValueError, "ts/vals and lo/hi/end must have equal lengths"); goto done;
    }
    const int64_t *ts = tb.buf, *lo = lb.buf, *hi = hb.buf, *end = eb.buf;
    const double *x = vb.buf;
    for (Py_ssize_t w = 0; w < W; w++)
        if (lo[w] < 0 || hi[w] > N || (hi[w] > lo[w] && lo[w] >= N)) {
            PyErr_SetString(PyExc_ValueError, "window bounds outside the samples"); goto done;
        }
    ores = big_bytes(W * 8);
    ook = big_bytes(W);
    if (!ores || !ook) goto done;
    double *out = (double *)PyBytes_AS_STRING(ores);
    char *ok = PyBytes_AS_STRING(ook);
    const double range_s = (double)rng / 1000.0;
    /* For counters, reset[k] = the first j >= k with x[j+1] < x[j] (a counter reset), else N:
     * a window visits only its resets (mostly none) instead of every pair of its samples,
     * which overlapping windows (a 5m range at a 15 s step: ~20 each) walked again and again. */
    int64_t *reset = NULL;
    if (counter && N > 0) {
        reset = PyMem_RawMalloc((size_t)N * sizeof(int64_t));
        if (!reset) { PyErr_NoMemory(); goto done; }
    }
    Py_BEGIN_ALLOW_THREADS
    if (reset) {
        int64_t next = N;
        reset[N - 1] = N;
        for (Py_ssize_t k = N - 2; k >= 0; k--) {
            if (x[k + 1] < x[k]) next = k;
            reset[k] = next;
        }
    }
    for (Py_ssize_t w = 0; w < W; w++) {
        const int64_t f = lo[w], l = hi[w] - 1;
        if (hi[w] - lo[w] < 2) { out[w] = 0.0; ok[w] = 0; continue; }
        ok[w] = 1;
        const double fv = x[f], lv = x[l];
        const int64_t ft = ts[f], lt = ts[l];
        double r = lv - fv;
        if (counter) {  /* corrections added in sample order, as Prometheus adds them */
            for (int64_t k = reset[f]; k < l; k = reset[k + 1])
                r += x[k];
            r += 0.0;  /* -0 becomes 0, as Prometheus's sum of corrections does */
        }
        const double sampled = (double)(lt - ft) / 1000.0;
        const double avg = sampled / (double)(l - f);
        double dstart = (double)(ft - (end[w] - rng)) / 1000.0;
        double dend = (double)(end[w] - lt) / 1000.0;
        const double thr = avg * 1.1;
        if (dstart >= thr) dstart = avg / 2;
        if (counter) {
            const double dz = sampled * (fv / r);
            if (r > 0 && fv >= 0 && dz < dstart) dstart = dz;
        }
        if (dend >= thr) dend = avg / 2;
        double factor = (sampled + dstart + dend) / sampled;
        if (rate) factor = factor / range_s;
        out[w] = r * factor;
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(reset);
    res = PyTuple_Pack(2, ores, ook);
done:
    Py_XDECREF(ores);
    Py_XDECREF(ook);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&lb);
    PyBuffer_Release(&hb);
    PyBuffer_Release(&eb);
    return res;
}

/* last_samples(ts, vals, offs, steps, lookback) -> (vals float64, present bool, sample_ts
 * int64), n*T entries each, series-major: each series' newest sample at or before each step
 * and newer than step - lookback (an instant vector selector); present unless there is none
 * or it is a staleness marker. Absent entries hold the series' first sample (0 when empty). */
static PyObject *py_last_samples(PyObject *self, PyObject *args) {
    Py_buffer tb, vb, ob, eb;
    long long lb;
    if (!PyArg_ParseTuple(args, "y*y*y*y*L:last_samples", &tb, &vb, &ob, &eb, &lb)) return NULL;
    PyObject *ov = NULL, *op = NULL, *ot = NULL, *res = NULL;
    if (check_i64(&tb, "ts") || check_i64(&vb, "vals") || check_i64(&ob, "offs") || check_i64(&eb, "steps"))
        goto done;
    if (vb.len != tb.len) { PyErr_SetString(PyExc_ValueError, "ts and vals differ in length"); goto done; }
    Py_ssize_t N = tb.len / 8, T = eb.len / 8, n = series_count(&ob, N, T);
    if (n < 0) goto done;
    const int64_t *ts = tb.buf, *offs = ob.buf, *E = eb.buf;
    const uint64_t *vbits = vb.buf;
    /* bytearrays: the caller's numpy views of them are the vector's own, writable arrays */
    ov = PyByteArray_FromStringAndSize(NULL, n * T * 8);
    op = PyByteArray_FromStringAndSize(NULL, n * T);
    ot = PyByteArray_FromStringAndSize(NULL, n * T * 8);
    if (!ov || !op || !ot) goto done;
    uint64_t *out_v = (uint64_t *)PyByteArray_AS_STRING(ov);
    char *out_p = PyByteArray_AS_STRING(op);
    int64_t *out_t = (int64_t *)PyByteArray_AS_STRING(ot);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t a = offs[i], b = offs[i + 1];
        int64_t h = a;
        for (Py_ssize_t j = 0; j < T; j++) {
            const int64_t e = E[j];
            if (j == 0 || e < E[j - 1]) h = upper_bound(ts, a, b, e);
            else while (h < b && ts[h] <= e) h++;
            const Py_ssize_t w = i * T + j;
            const int64_t k = h > a ? h - 1 : a;
            if (a == b) { out_v[w] = 0; out_t[w] = 0; out_p[w] = 0; continue; }
            out_v[w] = vbits[k];
            out_t[w] = ts[k];
            out_p[w] = h > a && ts[k] > sat_sub(e, lb) && vbits[k] != STALE_NAN;
        }
    }
    Py_END_ALLOW_THREADS
    res = PyTuple_Pack(3, ov, op, ot);
done:
    Py_XDECREF(ov);
    Py_XDECREF(op);
    Py_XDECREF(ot);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&ob);
    PyBuffer_Release(&eb);
    return res;
}

/* present_samples(ts, vals, offs, start, step, T, lookback) -> (ts bytes, vals bytes, counts
 * list, nonempty), or None when a series' timestamps do not strictly ascend: the instant
 * vector selector at the steps start + j * step (j < T) as the range query answer wants it,
 * only the present points (the sample newest at or before the step, newer than step -
 * lookback, not a staleness marker), each series' points end to end with their step times,
 * each series' point count, and how many series have samples at all.
 * The one-selector range query's whole evaluation (querier/plainrange.py), with no n*T arrays. */
static PyObject *py_present_samples(PyObject *self, PyObject *args) {
    Py_buffer tb, vb, ob;
    long long start, step, T, lb;
    if (!PyArg_ParseTuple(args, "y*y*y*LLLL:present_samples", &tb, &vb, &ob, &start, &step, &T, &lb))
        return NULL;
    PyObject *ot = NULL, *ov = NULL, *oc = NULL, *res = NULL;
    if (check_i64(&tb, "ts") || check_i64(&vb, "vals") || check_i64(&ob, "offs")) goto done;
    if (vb.len != tb.len) { PyErr_SetString(PyExc_ValueError, "ts and vals differ in length"); goto done; }
    if (step <= 0 || T < 0 || (T && start > INT64_MAX - (T - 1) * (__int128)step)) {
        PyErr_SetString(PyExc_ValueError, "bad steps"); goto done;
    }
    Py_ssize_t N = tb.len / 8, n = series_count(&ob, N, (Py_ssize_t)T);
    if (n < 0) goto done;
    const int64_t *ts = tb.buf, *offs = ob.buf;
    const uint64_t *vbits = vb.buf;
    for (Py_ssize_t i = 0; i < n; i++)  /* within each series: strictly ascending */
        for (int64_t k = offs[i] + 1; k < offs[i + 1]; k++)
            if (ts[k] <= ts[k - 1]) { res = Py_None; Py_INCREF(res); goto done; }
    const Py_ssize_t cap = n * (Py_ssize_t)T;  /* at most a point per step and series */
    ot = PyBytes_FromStringAndSize(NULL, cap * 8);
    ov = PyBytes_FromStringAndSize(NULL, cap * 8);
    oc = PyList_New(n);
    if (!ot || !ov || !oc) goto done;
    int64_t *out_t = (int64_t *)PyBytes_AS_STRING(ot);
    uint64_t *out_v = (uint64_t *)PyBytes_AS_STRING(ov);
    Py_ssize_t w = 0, nonempty = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t a = offs[i], b = offs[i + 1];
        const Py_ssize_t w0 = w;
        int64_t h = a;
        for (long long j = 0; j < T && a < b; j++) {
            const int64_t e = start + j * step;
            if (j == 0) h = upper_bound(ts, a, b, e);
            else while (h < b && ts[h] <= e) h++;
            if (h == a) continue;
            const int64_t k = h - 1;
            if (ts[k] > sat_sub(e, lb) && vbits[k] != STALE_NAN) {
                out_t[w] = e;
                out_v[w] = vbits[k];
                w++;
            }
        }
        PyObject *count = PyLong_FromSsize_t(w - w0);
        if (!count) goto done;
        PyList_SET_ITEM(oc, i, count);
        nonempty += b > a;
    }
    /* (an empty bytes object is shared: never resized) */
    if (w < cap && (_PyBytes_Resize(&ot, w * 8) || _PyBytes_Resize(&ov, w * 8))) goto done;
    res = Py_BuildValue("OOOn", ot, ov, oc, nonempty);
done:
    Py_XDECREF(ot);
    Py_XDECREF(ov);
    Py_XDECREF(oc);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&ob);
    return res;
}

static PyMethodDef methods[] = {
    {"last_samples", py_last_samples, METH_VARARGS,
     "last_samples(ts, vals, offs, steps, lookback) -> (vals, present, sample_ts) bytearrays."},
    {"present_samples", py_present_samples, METH_VARARGS,
     "present_samples(ts, vals, offs, start, step, T, lookback) -> (ts, vals, counts, nonempty) | None."},
    {"window_bounds", py_window_bounds, METH_VARARGS,
     "window_bounds(ts, offs, end, rng) -> (lo, hi) int64 bytes, series-major."},
    {"extrapolated", py_extrapolated, METH_VARARGS,
     "extrapolated(ts, vals, lo, hi, end, rng, counter, rate) -> (float64 bytes, ok bytes)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_rangec",
                                       "Range-vector window kernels.", -1, methods};

PyMODINIT_FUNC PyInit__rangec(void) { return PyModule_Create(&moduledef); }
