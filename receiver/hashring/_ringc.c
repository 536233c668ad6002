/*
 * The router's per-request work in C, so that no Python loop runs per series or sample:
 *
 *   xxh64(data, seed=0) -> int                        XXH64 of one buffer
 *   hash_series(tenant, keys) -> bytes                uint64 Thanos series hash per canonical key
 *   hash_many(items) -> bytes                         uint64 XXH64 per bytes item
 *   ketama_replicas(owners, zones, rf, n_zones)       int32 replica endpoints per ring section
 *   series_spans(write_request) -> bytes              int64 (start, end) of every top-level
 *                                                     field-1 element (a TimeSeries, tag included)
 *   gather(data, spans, index) -> bytes               concatenation of data[spans[i]] for i in index
 *                                                     (index: int32 buffer)
 *   split_write(thanos_write_request) -> (body, tenant, replica)
 *                                                     field-1 elements as a prometheus.WriteRequest
 *                                                     body, field 2 (tenant) and field 3 (replica)
 *
 * Only the CPython C API and the buffer protocol are used. XXH64 follows the public xxHash
 * specification (little-endian reads, the five 64-bit primes).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v; /* little-endian hosts only (x86-64, aarch64) */
}

static inline uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t round64(uint64_t acc, uint64_t in)
{
    acc += in * P2;
    acc = rotl(acc, 31);
    return acc * P1;
}

static inline uint64_t merge64(uint64_t acc, uint64_t v)
{
    acc ^= round64(0, v);
    return acc * P1 + P4;
}

/* Streaming state so that prefix and key hash as one contiguous input without a copy. */
typedef struct {
    uint64_t v1, v2, v3, v4;
    uint64_t total;
    uint8_t buf[32];
    size_t buf_len;
    uint64_t seed;
} XXH;

static void xxh_init(XXH *s, uint64_t seed)
{
    s->v1 = seed + P1 + P2;
    s->v2 = seed + P2;
    s->v3 = seed;
    s->v4 = seed - P1;
    s->total = 0;
    s->buf_len = 0;
    s->seed = seed;
}

static inline void xxh_stripe(XXH *s, const uint8_t *p)
{
    s->v1 = round64(s->v1, rd64(p));
    s->v2 = round64(s->v2, rd64(p + 8));
    s->v3 = round64(s->v3, rd64(p + 16));
    s->v4 = round64(s->v4, rd64(p + 24));
}

static void xxh_update(XXH *s, const uint8_t *p, size_t n)
{
    s->total += n;
    if (s->buf_len) {
        size_t take = 32 - s->buf_len;
        if (take > n)
            take = n;
        memcpy(s->buf + s->buf_len, p, take);
        s->buf_len += take;
        p += take;
        n -= take;
        if (s->buf_len < 32)
            return;
        xxh_stripe(s, s->buf);
        s->buf_len = 0;
    }
    while (n >= 32) {
        xxh_stripe(s, p);
        p += 32;
        n -= 32;
    }
    if (n) {
        memcpy(s->buf, p, n);
        s->buf_len = n;
    }
}

static uint64_t xxh_digest(const XXH *s)
{
    uint64_t h;
    if (s->total >= 32) {
        h = rotl(s->v1, 1) + rotl(s->v2, 7) + rotl(s->v3, 12) + rotl(s->v4, 18);
        h = merge64(h, s->v1);
        h = merge64(h, s->v2);
        h = merge64(h, s->v3);
        h = merge64(h, s->v4);
    } else {
        h = s->seed + P5;
    }
    h += s->total;
    const uint8_t *p = s->buf, *end = s->buf + s->buf_len;
    while (p + 8 <= end) {
        h ^= round64(0, rd64(p));
        h = rotl(h, 27) * P1 + P4;
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)rd32(p) * P1;
        h = rotl(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (*p) * P5;
        h = rotl(h, 11) * P1;
        p++;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

static PyObject *py_xxh64(PyObject *self, PyObject *args)
{
    Py_buffer b;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "y*|K", &b, &seed))
        return NULL;
    XXH s;
    xxh_init(&s, seed);
    xxh_update(&s, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(xxh_digest(&s));
}

static int rd_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out);

/* Thanos labelpb.HashWithPrefix: XXH64(tenant 0xff name1 0xff value1 0xff name2 0xff ...),
 * labels in request order. Our canonical key is uvarint(len) name uvarint(len) value ...,
 * so each key is walked and its strings streamed with the separators in between. */
static int hash_series_key(const XXH *base, const uint8_t *p, size_t len, uint64_t *out)
{
    static const uint8_t sep = 0xff;
    const uint8_t *end = p + len;
    XXH s = *base;
    while (p < end) {
        uint64_t n;
        if (rd_varint(&p, end, &n) < 0 || n > (uint64_t)(end - p))
            return -1;
        xxh_update(&s, p, (size_t)n);
        xxh_update(&s, &sep, 1);
        p += n;
    }
    *out = xxh_digest(&s);
    return 0;
}

static PyObject *py_hash_series(PyObject *self, PyObject *args)
{
    Py_buffer tenant;
    PyObject *keys;
    if (!PyArg_ParseTuple(args, "y*O", &tenant, &keys))
        return NULL;
    PyObject *seq = PySequence_Fast(keys, "keys must be a sequence of bytes");
    if (!seq) {
        PyBuffer_Release(&tenant);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!out)
        goto fail;
    uint64_t *h = (uint64_t *)PyBytes_AS_STRING(out);
    XXH base;
    xxh_init(&base, 0);
    xxh_update(&base, tenant.buf, (size_t)tenant.len);
    static const uint8_t sep = 0xff;
    xxh_update(&base, &sep, 1);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = items[i];
        if (!PyBytes_Check(k)) {
            PyErr_SetString(PyExc_TypeError, "keys must be bytes");
            Py_DECREF(out);
            goto fail;
        }
        if (hash_series_key(&base, (const uint8_t *)PyBytes_AS_STRING(k),
                            (size_t)PyBytes_GET_SIZE(k), &h[i]) < 0) {
            PyErr_SetString(PyExc_ValueError, "malformed label key");
            Py_DECREF(out);
            goto fail;
        }
    }
    Py_DECREF(seq);
    PyBuffer_Release(&tenant);
    return out;
fail:
    Py_DECREF(seq);
    PyBuffer_Release(&tenant);
    return NULL;
}

static PyObject *py_hash_many(PyObject *self, PyObject *arg)
{
    PyObject *seq = PySequence_Fast(arg, "expected a sequence of bytes");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 8);
    if (out) {
        uint64_t *h = (uint64_t *)PyBytes_AS_STRING(out);
        PyObject **items = PySequence_Fast_ITEMS(seq);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (!PyBytes_Check(items[i])) {
                PyErr_SetString(PyExc_TypeError, "expected bytes");
                Py_CLEAR(out);
                break;
            }
            XXH s;
            xxh_init(&s, 0);
            xxh_update(&s, (const uint8_t *)PyBytes_AS_STRING(items[i]),
                       (size_t)PyBytes_GET_SIZE(items[i]));
            h[i] = xxh_digest(&s);
        }
    }
    Py_DECREF(seq);
    return out;
}

/* ---------------------------------------------------------------- ketama replica sets */

/* Thanos calculateSectionReplicas: for every section (sorted by hash) walk clockwise from it
 * and take distinct endpoints, skipping an endpoint whose zone already holds more replicas than
 * the least occupied zone (when there is more than one zone). Where Thanos would walk forever
 * (no acceptable endpoint left, e.g. the only under-filled zones are used up), a full fruitless
 * turn drops the zone rule for that section. */
static PyObject *py_ketama_replicas(PyObject *self, PyObject *args)
{
    Py_buffer owners_b, az_b;
    int rf, n_azs;
    if (!PyArg_ParseTuple(args, "y*y*ii", &owners_b, &az_b, &rf, &n_azs))
        return NULL;
    const int32_t *owners = owners_b.buf, *az_of = az_b.buf;
    Py_ssize_t ns = owners_b.len / 4, ne = az_b.len / 4;
    PyObject *out = NULL;
    uint8_t *chosen = NULL;
    int64_t *spread = NULL;
    if (rf < 1 || rf > ne || n_azs < 1) {
        PyErr_SetString(PyExc_ValueError, "bad replication factor or zone count");
        goto done;
    }
    for (Py_ssize_t i = 0; i < ns; i++)
        if (owners[i] < 0 || owners[i] >= ne) {
            PyErr_SetString(PyExc_ValueError, "owner out of range");
            goto done;
        }
    for (Py_ssize_t e = 0; e < ne; e++)
        if (az_of[e] < 0 || az_of[e] >= n_azs) {
            PyErr_SetString(PyExc_ValueError, "zone out of range");
            goto done;
        }
    chosen = PyMem_Calloc((size_t)ne, 1);
    spread = PyMem_Calloc((size_t)n_azs, sizeof(int64_t));
    out = PyBytes_FromStringAndSize(NULL, ns * rf * 4);
    if (!chosen || !spread || !out) {
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    int32_t *table = (int32_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < ns; i++) {
        int32_t *row = table + i * rf;
        int have = 0, zone_rule = n_azs > 1;
        Py_ssize_t j = i - 1, fruitless = 0;
        memset(chosen, 0, (size_t)ne);
        memset(spread, 0, (size_t)n_azs * sizeof(int64_t));
        while (have < rf) {
            j = (j + 1) % ns;
            int32_t e = owners[j];
            if (++fruitless > ns) {
                zone_rule = 0;
                fruitless = 0;
            }
            if (chosen[e])
                continue;
            if (zone_rule) {
                int64_t least = spread[0];
                for (int z = 1; z < n_azs; z++)
                    if (spread[z] < least)
                        least = spread[z];
                if (spread[az_of[e]] > least)
                    continue;
            }
            chosen[e] = 1;
            spread[az_of[e]]++;
            row[have++] = e;
            fruitless = 0;
        }
    }
done:
    PyMem_Free(chosen);
    PyMem_Free(spread);
    PyBuffer_Release(&owners_b);
    PyBuffer_Release(&az_b);
    return out;
}

/* ---------------------------------------------------------------- top-level protobuf walking */

static int rd_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t x = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= end)
            return -1;
        uint8_t c = *p++;
        x |= (uint64_t)(c & 0x7f) << shift;
        if (c < 0x80) {
            *pp = p;
            *out = x;
            return 0;
        }
    }
    return -1;
}

/* Advances over one field; reports its number, wire type and (for LEN) the payload bounds. */
static int next_field(const uint8_t **pp, const uint8_t *end, uint32_t *field, unsigned *wt,
                      const uint8_t **pay, size_t *pay_len, uint64_t *varint)
{
    uint64_t tag;
    if (rd_varint(pp, end, &tag) < 0)
        return -1;
    *field = (uint32_t)(tag >> 3);
    *wt = (unsigned)(tag & 7);
    if (*field == 0)
        return -1;
    switch (*wt) {
    case 0:
        return rd_varint(pp, end, varint);
    case 1:
        if (end - *pp < 8)
            return -1;
        *pp += 8;
        return 0;
    case 5:
        if (end - *pp < 4)
            return -1;
        *pp += 4;
        return 0;
    case 2: {
        uint64_t n;
        if (rd_varint(pp, end, &n) < 0 || n > (uint64_t)(end - *pp))
            return -1;
        *pay = *pp;
        *pay_len = (size_t)n;
        *pp += n;
        return 0;
    }
    default:
        return -1;
    }
}

static PyObject *malformed(const char *what)
{
    PyErr_Format(PyExc_ValueError, "malformed %s", what);
    return NULL;
}

static PyObject *py_series_spans(PyObject *self, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *start = b.buf, *p = start, *end = start + b.len;
    Py_ssize_t cap = 64, n = 0;
    int64_t *spans = PyMem_Malloc(cap * 2 * sizeof(int64_t));
    PyObject *out = NULL;
    if (!spans) {
        PyErr_NoMemory();
        goto done;
    }
    while (p < end) {
        const uint8_t *at = p, *pay = NULL;
        uint32_t f;
        unsigned wt;
        size_t len = 0;
        uint64_t v;
        if (next_field(&p, end, &f, &wt, &pay, &len, &v) < 0) {
            malformed("WriteRequest");
            goto done;
        }
        if (f != 1 || wt != 2)
            continue;
        if (n == cap) {
            int64_t *grown = PyMem_Realloc(spans, cap * 4 * sizeof(int64_t));
            if (!grown) {
                PyErr_NoMemory();
                goto done;
            }
            spans = grown;
            cap *= 2;
        }
        spans[2 * n] = at - start;
        spans[2 * n + 1] = p - start;
        n++;
    }
    out = PyBytes_FromStringAndSize((const char *)spans, n * 2 * (Py_ssize_t)sizeof(int64_t));
done:
    PyMem_Free(spans);
    PyBuffer_Release(&b);
    return out;
}

static PyObject *py_gather(PyObject *self, PyObject *args)
{
    Py_buffer data, spans, index;
    if (!PyArg_ParseTuple(args, "y*y*y*", &data, &spans, &index))
        return NULL;
    PyObject *out = NULL;
    const int64_t *sp = spans.buf;
    const int32_t *ix = index.buf;
    Py_ssize_t nspans = spans.len / 16, nix = index.len / 4, total = 0;
    for (Py_ssize_t i = 0; i < nix; i++) {
        int32_t k = ix[i];
        if (k < 0 || k >= nspans || sp[2 * k] < 0 || sp[2 * k + 1] > data.len ||
            sp[2 * k] > sp[2 * k + 1]) {
            PyErr_SetString(PyExc_IndexError, "span index out of range");
            goto done;
        }
        total += sp[2 * k + 1] - sp[2 * k];
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (!out)
        goto done;
    char *o = PyBytes_AS_STRING(out);
    const char *d = data.buf;
    for (Py_ssize_t i = 0; i < nix; i++) {
        int32_t k = ix[i];
        size_t len = (size_t)(sp[2 * k + 1] - sp[2 * k]);
        memcpy(o, d + sp[2 * k], len);
        o += len;
    }
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&spans);
    PyBuffer_Release(&index);
    return out;
}

static PyObject *py_split_write(PyObject *self, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *start = b.buf, *p = start, *end = start + b.len;
    const uint8_t *tenant = NULL;
    size_t tenant_len = 0, body_len = 0;
    int64_t replica = 0;
    PyObject *body = NULL, *ten = NULL, *res = NULL;
    int contiguous = 1; /* field-1 elements form one run: the body is a slice, no gather */
    const uint8_t *run_start = NULL, *run_end = NULL;
    /* First pass: find fields and the size of the field-1 elements. */
    while (p < end) {
        const uint8_t *at = p, *pay = NULL;
        uint32_t f;
        unsigned wt;
        size_t len = 0;
        uint64_t v = 0;
        if (next_field(&p, end, &f, &wt, &pay, &len, &v) < 0) {
            malformed("thanos.WriteRequest");
            goto done;
        }
        if (f == 1 && wt == 2) {
            body_len += (size_t)(p - at);
            if (run_start == NULL) {
                run_start = at;
            } else if (run_end != at) {
                contiguous = 0;
            }
            run_end = p;
        } else if (f == 2 && wt == 2) {
            tenant = pay;
            tenant_len = len;
        } else if (f == 3 && wt == 0) {
            replica = (int64_t)v;
        } else if ((f == 1 || f == 2 || f == 3) && wt != 2 && !(f == 3 && wt == 0)) {
            malformed("thanos.WriteRequest (wrong wire type)");
            goto done;
        }
    }
    if (contiguous) {
        body = PyBytes_FromStringAndSize((const char *)run_start, (Py_ssize_t)body_len);
    } else {
        body = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)body_len);
        if (body) {
            char *o = PyBytes_AS_STRING(body);
            p = start;
            while (p < end) {
                const uint8_t *at = p, *pay = NULL;
                uint32_t f = 0;
                unsigned wt = 0;
                size_t len = 0;
                uint64_t v;
                next_field(&p, end, &f, &wt, &pay, &len, &v);
                if (f == 1 && wt == 2) {
                    memcpy(o, at, (size_t)(p - at));
                    o += p - at;
                }
            }
        }
    }
    if (!body)
        goto done;
    ten = PyUnicode_DecodeUTF8((const char *)(tenant ? tenant : (const uint8_t *)""),
                               (Py_ssize_t)tenant_len, "strict");
    if (!ten)
        goto done;
    res = Py_BuildValue("(OOL)", body, ten, (long long)replica);
done:
    Py_XDECREF(body);
    Py_XDECREF(ten);
    PyBuffer_Release(&b);
    return res;
}

static PyMethodDef methods[] = {
    {"xxh64", py_xxh64, METH_VARARGS, "XXH64 of a buffer (seed optional)."},
    {"hash_series", py_hash_series, METH_VARARGS,
     "uint64 Thanos series hash (tenant, then every label name and value, 0xff after each) of "
     "every canonical label key, as bytes."},
    {"hash_many", py_hash_many, METH_O, "uint64 XXH64 of every bytes item, as bytes."},
    {"ketama_replicas", py_ketama_replicas, METH_VARARGS,
     "(owners int32 per sorted section, zone int32 per endpoint, rf, n_zones) -> int32 "
     "(n_sections, rf) replica endpoints, Thanos's zone-spreading walk."},
    {"series_spans", py_series_spans, METH_O,
     "int64 (start, end) byte spans of the top-level TimeSeries elements, as bytes."},
    {"gather", py_gather, METH_VARARGS, "Concatenate the spans picked by an int32 index."},
    {"split_write", py_split_write, METH_O,
     "thanos.WriteRequest bytes -> (prometheus.WriteRequest body, tenant, replica)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ringc",
                                    "Hashing and request splitting for the receive router.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__ringc(void) { return PyModule_Create(&module); }
