/*
 * Prometheus remote-write 1.0 (prometheus.WriteRequest) decoder straight into flat arrays.
 *
 * Why C: a 2000-sample request is ~450 KB of protobuf; decoding it into Python message objects
 * costs far more than ingesting the samples. Here one pass over the bytes writes samples into
 * growable bytes objects (handed to numpy without copying) and builds one canonical label key
 * per series (the same bytes receiver.tsdb.labels.encode_labels_key produces), so the Python
 * side does one dict lookup per series and stays vectorised per sample.
 *
 * Strictness follows the gogoproto code Prometheus and Thanos run: unknown fields of wire types
 * 0/1/2/5 are skipped, groups (3/4) and wire types 6/7 are rejected, a known field carrying the
 * wrong wire type is an error, and every length is checked against its enclosing message.
 * Nothing here reads outside the caller's buffer; every failure is a ValueError.
 *
 * Only the CPython C API and the buffer protocol are used (no numpy headers).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tsdb/refcache_api.h"

/* The head's series-ref cache (receiver.tsdb._refcache), imported with this module. */
static const RefCacheAPI *refcache;

/* Wire types. */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* Label validation results, mirroring Thanos labelpb.ValidateLabels, plus labels that are not
   valid UTF-8 (Prometheus refuses those; the head could not even decode them). */
enum { ST_OK = 0, ST_EMPTY = 1, ST_DUPLICATE = 2, ST_OUT_OF_ORDER = 3, ST_INVALID_UTF8 = 4 };

typedef struct {
    const uint8_t *base;   /* start of the request, for error offsets */
    const char *err;       /* static description of the first failure */
    const char *where;     /* message being parsed when it failed */
    Py_ssize_t err_off;
} Ctx;

typedef struct {
    const uint8_t *name;
    const uint8_t *value;
    size_t name_len;
    size_t value_len;
} LabelRef;

typedef struct {
    LabelRef *items;
    size_t len;
    size_t cap;
} LabelVec;

static int fail(Ctx *c, const uint8_t *at, const char *where, const char *msg)
{
    c->err = msg;
    c->where = where;
    c->err_off = (Py_ssize_t)(at - c->base);
    return -1;
}

/* Reads a base-128 varint of at most 10 bytes; bits past 64 are dropped as gogoproto does. */
static inline int read_varint(Ctx *c, const uint8_t **pp, const uint8_t *end, uint64_t *out,
                              const char *where)
{
    const uint8_t *p = *pp;
    if (p < end && *p < 0x80) {
        *out = *p;
        *pp = p + 1;
        return 0;
    }
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (p >= end)
            return fail(c, *pp, where, "truncated varint");
        uint8_t b = *p++;
        x |= (uint64_t)(b & 0x7F) << (shift < 64 ? shift : 63);
        if (b < 0x80) {
            *out = x;
            *pp = p;
            return 0;
        }
    }
    return fail(c, *pp, where, "varint longer than 10 bytes");
}

/* Reads a field tag and rejects field number 0, numbers past 2^29-1 and wire types 3/4/6/7. */
static inline int read_tag(Ctx *c, const uint8_t **pp, const uint8_t *end, uint32_t *field,
                           unsigned *wt, const char *where)
{
    const uint8_t *start = *pp;
    uint64_t tag;
    if (read_varint(c, pp, end, &tag, where) < 0)
        return -1;
    uint64_t f = tag >> 3;
    unsigned w = (unsigned)(tag & 7);
    if (f == 0 || f > 0x1FFFFFFFu)
        return fail(c, start, where, "invalid field number");
    if (w == 3 || w == 4)
        return fail(c, start, where, "group wire type (3/4) is not supported");
    if (w > 5)
        return fail(c, start, where, "invalid wire type (6/7)");
    *field = (uint32_t)f;
    *wt = w;
    return 0;
}

/* Reads a length prefix and checks the payload fits inside the enclosing message. */
static inline int read_len(Ctx *c, const uint8_t **pp, const uint8_t *end, size_t *len,
                           const char *where)
{
    const uint8_t *start = *pp;
    uint64_t n;
    if (read_varint(c, pp, end, &n, where) < 0)
        return -1;
    if (n > (uint64_t)(end - *pp))
        return fail(c, start, where, "length-delimited field runs past the end of its message");
    *len = (size_t)n;
    return 0;
}

static int skip_field(Ctx *c, const uint8_t **pp, const uint8_t *end, unsigned wt,
                      const char *where)
{
    uint64_t dummy;
    size_t n;
    switch (wt) {
    case WT_VARINT:
        return read_varint(c, pp, end, &dummy, where);
    case WT_I64:
        if (end - *pp < 8)
            return fail(c, *pp, where, "truncated fixed64 field");
        *pp += 8;
        return 0;
    case WT_I32:
        if (end - *pp < 4)
            return fail(c, *pp, where, "truncated fixed32 field");
        *pp += 4;
        return 0;
    case WT_LEN:
        if (read_len(c, pp, end, &n, where) < 0)
            return -1;
        *pp += n;
        return 0;
    default:
        return fail(c, *pp, where, "invalid wire type");
    }
}

static inline int expect_wt(Ctx *c, const uint8_t *at, unsigned got, unsigned want,
                            const char *where)
{
    if (got != want)
        return fail(c, at, where, "known field has the wrong wire type");
    return 0;
}

/* ---------------------------------------------------------------- decoding */

/*
 * Sample outputs live directly in bytes objects that grow geometrically and are trimmed once at
 * the end, so there is no counting pass and no final copy.
 */
typedef struct {
    PyObject *series_obj, *ts_obj, *vals_obj;
    int32_t *series;
    int64_t *ts;
    uint64_t *vals;  /* raw IEEE-754 bits so NaN payloads (stale markers) survive untouched */
    Py_ssize_t cap;
    Py_ssize_t n;
    Py_ssize_t n_histograms;
    Py_ssize_t n_exemplars;
    /* Histogram samples, collected only by decode_with_histograms (hraw != NULL). */
    PyObject *hraw;   /* list of bytes: each prometheus.Histogram message as sent */
    int32_t *hser;
    int64_t *hts;
    Py_ssize_t hcap;
    /* Exemplars, collected only by decode_with_histograms (exkeys != NULL). */
    PyObject *exkeys; /* list of bytes: each exemplar's canonical label key */
    int32_t *exser;
    int64_t *exts;
    uint64_t *exvals;
    uint8_t *exst;
    Py_ssize_t excap;
    LabelVec exlv;    /* one exemplar's labels, reused */
} Out;

static int out_resize(Out *o, Py_ssize_t cap)
{
    if (_PyBytes_Resize(&o->series_obj, cap * (Py_ssize_t)sizeof(int32_t)) < 0 ||
        _PyBytes_Resize(&o->ts_obj, cap * (Py_ssize_t)sizeof(int64_t)) < 0 ||
        _PyBytes_Resize(&o->vals_obj, cap * (Py_ssize_t)sizeof(uint64_t)) < 0)
        return -1;
    o->series = (int32_t *)PyBytes_AS_STRING(o->series_obj);
    o->ts = (int64_t *)PyBytes_AS_STRING(o->ts_obj);
    o->vals = (uint64_t *)PyBytes_AS_STRING(o->vals_obj);
    o->cap = cap;
    return 0;
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static int parse_label(Ctx *c, const uint8_t *p, const uint8_t *end, LabelRef *l)
{
    static const char W[] = "Label";
    l->name = l->value = p;
    l->name_len = l->value_len = 0;
    /* Fast path: name then value, as every real client writes them. */
    if (end - p >= 2 && p[0] == 0x0A && p[1] < 0x80 && (size_t)(end - p - 2) >= p[1]) {
        size_t nl = p[1];
        const uint8_t *q = p + 2 + nl;
        if (end - q >= 2 && q[0] == 0x12 && q[1] < 0x80 && (size_t)(end - q - 2) == q[1]) {
            l->name = p + 2;
            l->name_len = nl;
            l->value = q + 2;
            l->value_len = q[1];
            return 0;
        }
    }
    while (p < end) {
        const uint8_t *at = p;
        uint32_t f;
        unsigned wt;
        size_t n;
        if (read_tag(c, &p, end, &f, &wt, W) < 0)
            return -1;
        if (f == 1 || f == 2) {
            if (expect_wt(c, at, wt, WT_LEN, W) < 0 || read_len(c, &p, end, &n, W) < 0)
                return -1;
            if (f == 1) {
                l->name = p;
                l->name_len = n;
            } else {
                l->value = p;
                l->value_len = n;
            }
            p += n;
        } else if (skip_field(c, &p, end, wt, W) < 0) {
            return -1;
        }
    }
    return 0;
}

/* A double value (fixed64) in field `f_val` or an int64 timestamp (varint) in field `f_ts`:
   1 when field `f` was one of them (read into *v / *t), 0 when it is another field, -1 on error.
   Samples (value 1, timestamp 2) and exemplars (value 2, timestamp 3) share it. */
static int read_value_or_ts(Ctx *c, const uint8_t *at, const uint8_t **p, const uint8_t *end,
                            uint32_t f, unsigned wt, uint32_t f_val, uint32_t f_ts, uint64_t *v,
                            uint64_t *t, const char *W)
{
    if (f == f_val) {
        if (expect_wt(c, at, wt, WT_I64, W) < 0)
            return -1;
        if (end - *p < 8)
            return fail(c, *p, W, "truncated fixed64 field");
        *v = load_le64(*p);
        *p += 8;
        return 1;
    }
    if (f == f_ts) {
        if (expect_wt(c, at, wt, WT_VARINT, W) < 0 || read_varint(c, p, end, t, W) < 0)
            return -1;
        return 1;
    }
    return 0;
}

static int parse_sample(Ctx *c, const uint8_t *p, const uint8_t *end, uint64_t *val, int64_t *ts)
{
    static const char W[] = "Sample";
    uint64_t v = 0, t = 0;
    /* Fast path: value (fixed64) then timestamp (varint) and nothing else. */
    if (end - p >= 11 && p[0] == 0x09 && p[9] == 0x10) {
        const uint8_t *q = p + 10;
        if (read_varint(c, &q, end, &t, W) == 0 && q == end) {
            *val = load_le64(p + 1);
            *ts = (int64_t)t;
            return 0;
        }
        c->err = NULL;  /* the general loop below reports any real error */
        t = 0;
    }
    while (p < end) {
        const uint8_t *at = p;
        uint32_t f;
        unsigned wt;
        if (read_tag(c, &p, end, &f, &wt, W) < 0)
            return -1;
        int got = read_value_or_ts(c, at, &p, end, f, wt, 1, 2, &v, &t, W);
        if (got < 0 || (got == 0 && skip_field(c, &p, end, wt, W) < 0))
            return -1;
    }
    *val = v;
    *ts = (int64_t)t;
    return 0;
}

static inline size_t uvarint_size(size_t x)
{
    size_t n = 1;
    while (x >= 0x80) {
        x >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *put_uvarint(uint8_t *o, size_t x)
{
    while (x >= 0x80) {
        *o++ = (uint8_t)(x | 0x80);
        x >>= 7;
    }
    *o++ = (uint8_t)x;
    return o;
}

/* Bytewise comparison, the order Go uses for strings. Label names are short and usually
   differ within a few bytes, so a plain loop beats a libc call. */
static inline int cmp_bytes(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t m = al < bl ? al : bl;
    for (size_t i = 0; i < m; i++) {
        if (a[i] != b[i])
            return (int)a[i] - (int)b[i];
    }
    return (al > bl) - (al < bl);
}

/* memcpy for the short strings labels are; stays inside [0, n) of both buffers. */
static inline void copy_short(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n >= 8 && n <= 16) {
        uint64_t x, y;
        memcpy(&x, src, 8);
        memcpy(&y, src + n - 8, 8);
        memcpy(dst, &x, 8);
        memcpy(dst + n - 8, &y, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t x, y;
        memcpy(&x, src, 4);
        memcpy(&y, src + n - 4, 4);
        memcpy(dst, &x, 4);
        memcpy(dst + n - 4, &y, 4);
    } else if (n < 4) {
        for (size_t i = 0; i < n; i++)
            dst[i] = src[i];
    } else {
        memcpy(dst, src, n);
    }
}

/* Same checks, in the same order, as Thanos labelpb.ValidateLabels; first failure wins. */
static uint8_t validate_label_order(const LabelRef *ls, size_t n)
{
    if (n == 0)
        return ST_EMPTY;
    if (ls[0].name_len == 0 || ls[0].value_len == 0)
        return ST_EMPTY;
    for (size_t i = 1; i < n; i++) {
        const LabelRef *prev = &ls[i - 1], *cur = &ls[i];
        if (cur->name_len == 0 || cur->value_len == 0)
            return ST_EMPTY;
        int r = cmp_bytes(cur->name, cur->name_len, prev->name, prev->name_len);
        if (r == 0)
            return ST_DUPLICATE;
        if (r < 0)
            return ST_OUT_OF_ORDER;
    }
    return ST_OK;
}

/* Strict UTF-8 as Go's utf8.ValidString and Python's decoder agree on: no overlong forms, no
   surrogates, nothing past U+10FFFF. ASCII (all real label names, most values) goes 8 bytes
   at a time. */
static int valid_utf8(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            else if (c == 0xED) hi = 0x9F;  /* U+D800..U+DFFF are surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            else if (c == 0xF4) hi = 0x8F;
        } else {
            return 0;
        }
        if (n - i < len || p[i + 1] < lo || p[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
        }
        i += len;
    }
    return 1;
}

/* 1 when no byte of p[0..n) has its high bit set. One word-wise pass over a series' whole key
   (names, values and their length prefixes) costs less than a UTF-8 check per name and value,
   and an ASCII key needs no other: ASCII is valid UTF-8. */
static int all_ascii(const uint8_t *p, size_t n)
{
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= p[i];
    return !(acc & 0x8080808080808080ull);
}

/* Same checks, in the same order, as Thanos labelpb.ValidateLabels; first failure wins. Then
   UTF-8 (skipped when the caller saw only ASCII), so a key the head stores always decodes. */
static uint8_t validate_labels(const LabelRef *ls, size_t n, int ascii)
{
    uint8_t st = validate_label_order(ls, n);
    if (st != ST_OK || ascii)
        return st;
    for (size_t i = 0; i < n; i++) {
        if (!valid_utf8(ls[i].name, ls[i].name_len) || !valid_utf8(ls[i].value, ls[i].value_len))
            return ST_INVALID_UTF8;
    }
    return ST_OK;
}

/* Makes room for element ``k`` in parallel PyMem arrays that share one capacity: each grows
   to ``*cap * 2 + extra`` elements of its own size. ``slots`` holds the addresses of the
   typed array pointers; they are read and written through memcpy, so no pointer is accessed
   as another type. On failure (MemoryError set) every array is still valid and at least as
   large as ``*cap``, which is left unchanged. */
static int grow_columns(Py_ssize_t k, Py_ssize_t *cap, Py_ssize_t extra, size_t n,
                        void *const slots[], const size_t elem[])
{
    if (k < *cap)
        return 0;
    Py_ssize_t ncap = *cap * 2 + extra;
    for (size_t i = 0; i < n; i++) {
        void *old, *grown;
        memcpy(&old, slots[i], sizeof old);
        grown = PyMem_Realloc(old, (size_t)ncap * elem[i]);
        if (!grown) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(slots[i], &grown, sizeof grown);
    }
    *cap = ncap;
    return 0;
}

static int labelvec_push(LabelVec *v, const LabelRef *l)
{
    if (v->len == v->cap) {
        size_t ncap = v->cap ? v->cap * 2 : 32;
        LabelRef *ni = PyMem_Realloc(v->items, ncap * sizeof(LabelRef));
        if (!ni) {
            PyErr_NoMemory();
            return -1;
        }
        v->items = ni;
        v->cap = ncap;
    }
    v->items[v->len++] = *l;
    return 0;
}

static int collect_histogram(Ctx *c, const uint8_t *p, const uint8_t *end, int32_t idx, Out *out);
static int collect_exemplar(Ctx *c, const uint8_t *p, const uint8_t *end, int32_t idx, Out *out);

/* End of the leading run of label fields (tag 0x0A, field 1 as a length) of a TimeSeries body:
   the bytes a series-ref cache is keyed by. `p` when there is none or a length is malformed
   (the full parse reports that). */
static const uint8_t *label_run_end(Ctx *c, const uint8_t *p, const uint8_t *end)
{
    while (p < end && *p == 0x0A) {
        const uint8_t *q = p + 1;
        size_t n;
        if (read_len(c, &q, end, &n, "TimeSeries") < 0) {
            c->err = NULL;
            break;
        }
        p = q + n;
    }
    return p;
}

/*
 * Parses one TimeSeries: labels into `lv`, samples into `out` (out == NULL: labels only).
 * Returns -1 with c->err set for malformed input, -2 with a Python exception set (allocation
 * failure).
 */
static int fill_series(Ctx *c, const uint8_t *p, const uint8_t *end, int32_t idx, LabelVec *lv,
                       Out *out)
{
    static const char W[] = "TimeSeries";
    lv->len = 0;
    while (p < end) {
        const uint8_t *at = p;
        uint32_t f;
        unsigned wt;
        size_t n;
        if (read_tag(c, &p, end, &f, &wt, W) < 0)
            return -1;
        if (f >= 1 && f <= 4) {
            if (expect_wt(c, at, wt, WT_LEN, W) < 0 || read_len(c, &p, end, &n, W) < 0)
                return -1;
            if (f == 1) {
                LabelRef l;
                if (parse_label(c, p, p + n, &l) < 0)
                    return -1;
                if (labelvec_push(lv, &l) < 0)
                    return -2;
            } else if (!out) {
                /* labels only */
            } else if (f == 2) {
                Py_ssize_t k = out->n;
                if (k >= out->cap && out_resize(out, out->cap * 2 + 64) < 0)
                    return -2;
                if (parse_sample(c, p, p + n, &out->vals[k], &out->ts[k]) < 0)
                    return -1;
                out->series[k] = idx;
                out->n = k + 1;
            } else if (f == 3) {
                out->n_exemplars++;
                if (out->exkeys) {
                    int r = collect_exemplar(c, p, p + n, idx, out);
                    if (r < 0)
                        return r;
                }
            } else {
                out->n_histograms++;
                if (out->hraw) {
                    int r = collect_histogram(c, p, p + n, idx, out);
                    if (r < 0)
                        return r;
                }
            }
            p += n;
        } else if (skip_field(c, &p, end, wt, W) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Histogram.timestamp is field 15; the rest of the message is kept as raw bytes. */
static int histogram_ts(Ctx *c, const uint8_t *p, const uint8_t *end, int64_t *ts)
{
    static const char W[] = "Histogram";
    uint64_t t = 0;
    while (p < end) {
        const uint8_t *at = p;
        uint32_t f;
        unsigned wt;
        if (read_tag(c, &p, end, &f, &wt, W) < 0)
            return -1;
        if (f == 15) {
            if (expect_wt(c, at, wt, WT_VARINT, W) < 0 || read_varint(c, &p, end, &t, W) < 0)
                return -1;
        } else if (skip_field(c, &p, end, wt, W) < 0) {
            return -1;
        }
    }
    *ts = (int64_t)t;
    return 0;
}

/* Records one histogram sample: -1 malformed (c->err set), -2 Python error. */
static int collect_histogram(Ctx *c, const uint8_t *p, const uint8_t *end, int32_t idx, Out *out)
{
    int64_t ts;
    if (histogram_ts(c, p, end, &ts) < 0) {
        /* A malformed Histogram body does not fail the request here (callers that only count
           histograms never looked inside); INT64_MIN marks it for the caller to refuse. */
        c->err = NULL;
        ts = INT64_MIN;
    }
    Py_ssize_t k = PyList_GET_SIZE(out->hraw);
    void *const slots[] = {&out->hser, &out->hts};
    static const size_t elem[] = {sizeof(int32_t), sizeof(int64_t)};
    if (grow_columns(k, &out->hcap, 16, 2, slots, elem) < 0)
        return -2;
    PyObject *raw = PyBytes_FromStringAndSize((const char *)p, end - p);
    if (!raw)
        return -2;
    int ar = PyList_Append(out->hraw, raw);
    Py_DECREF(raw);
    if (ar < 0)
        return -2;
    out->hser[k] = idx;
    out->hts[k] = ts;
    return 0;
}

/* Exemplar validation results (Prometheus drops such exemplars and keeps the samples). */
enum { EX_OK = 0, EX_LABELS_TOO_LONG = 1, EX_INVALID_UTF8 = 2, EX_MALFORMED = 3 };

/* Prometheus's exemplar.ExemplarMaxLabelSetLength: runes of all names and values together. */
#define EXEMPLAR_MAX_LABEL_SET_RUNES 128

static PyObject *make_key(const LabelVec *lv);

/* Runes of valid UTF-8: every byte that is not a continuation byte starts one. */
static size_t rune_count(const uint8_t *p, size_t n)
{
    size_t r = 0;
    for (size_t i = 0; i < n; i++)
        r += (p[i] & 0xC0) != 0x80;
    return r;
}

/* Exemplar { repeated Label labels = 1; double value = 2; int64 timestamp = 3; }: labels into
   `lv`, -1 if the body does not parse (c->err set). */
static int parse_exemplar(Ctx *c, const uint8_t *p, const uint8_t *end, LabelVec *lv,
                          uint64_t *val, int64_t *ts, int *nomem)
{
    static const char W[] = "Exemplar";
    uint64_t v = 0, t = 0;
    while (p < end) {
        const uint8_t *at = p;
        uint32_t f;
        unsigned wt;
        size_t n;
        if (read_tag(c, &p, end, &f, &wt, W) < 0)
            return -1;
        if (f == 1) {
            LabelRef l;
            if (expect_wt(c, at, wt, WT_LEN, W) < 0 || read_len(c, &p, end, &n, W) < 0 ||
                parse_label(c, p, p + n, &l) < 0)
                return -1;
            if (labelvec_push(lv, &l) < 0) {
                *nomem = 1;
                return -1;
            }
            p += n;
        } else {
            int got = read_value_or_ts(c, at, &p, end, f, wt, 2, 3, &v, &t, W);
            if (got < 0 || (got == 0 && skip_field(c, &p, end, wt, W) < 0))
                return -1;
        }
    }
    *val = v;
    *ts = (int64_t)t;
    return 0;
}

static int cmp_label_names(const void *a, const void *b)
{
    const LabelRef *x = a, *y = b;
    return cmp_bytes(x->name, x->name_len, y->name, y->name_len);
}

/* Exemplar labels sorted by name, as Prometheus builds them from remote write (so the same
   labels sent in another order are the same exemplar). Already sorted is the usual case. */
static void sort_labels(LabelVec *lv)
{
    for (size_t i = 1; i < lv->len; i++) {
        if (cmp_label_names(&lv->items[i - 1], &lv->items[i]) > 0) {
            qsort(lv->items, lv->len, sizeof(LabelRef), cmp_label_names);
            return;
        }
    }
}

static uint8_t validate_exemplar_labels(const LabelVec *lv)
{
    size_t runes = 0;
    for (size_t i = 0; i < lv->len; i++) {
        const LabelRef *l = &lv->items[i];
        if (!valid_utf8(l->name, l->name_len) || !valid_utf8(l->value, l->value_len))
            return EX_INVALID_UTF8;
        runes += rune_count(l->name, l->name_len) + rune_count(l->value, l->value_len);
    }
    return runes > EXEMPLAR_MAX_LABEL_SET_RUNES ? EX_LABELS_TOO_LONG : EX_OK;
}

/* Records one exemplar: a malformed or invalid one is kept with its status (the caller drops
   and counts it; it never fails the request's samples). -2 on a Python error. */
static int collect_exemplar(Ctx *c, const uint8_t *p, const uint8_t *end, int32_t idx, Out *out)
{
    LabelVec *lv = &out->exlv;
    uint64_t val = 0;
    int64_t ts = 0;
    int nomem = 0;
    uint8_t st;
    lv->len = 0;
    if (parse_exemplar(c, p, end, lv, &val, &ts, &nomem) < 0) {
        if (nomem)
            return -2;
        c->err = NULL;
        lv->len = 0;
        st = EX_MALFORMED;
    } else {
        st = validate_exemplar_labels(lv);
    }
    Py_ssize_t k = PyList_GET_SIZE(out->exkeys);
    void *const slots[] = {&out->exser, &out->exts, &out->exvals, &out->exst};
    static const size_t elem[] = {sizeof(int32_t), sizeof(int64_t), sizeof(uint64_t), 1};
    if (grow_columns(k, &out->excap, 16, 4, slots, elem) < 0)
        return -2;
    if (st == EX_OK)
        sort_labels(lv);
    PyObject *key = st == EX_OK ? make_key(lv) : PyBytes_FromStringAndSize(NULL, 0);
    if (!key)
        return -2;
    int ar = PyList_Append(out->exkeys, key);
    Py_DECREF(key);
    if (ar < 0)
        return -2;
    out->exser[k] = idx;
    out->exts[k] = ts;
    out->exvals[k] = val;
    out->exst[k] = st;
    return 0;
}

static PyObject *make_key(const LabelVec *lv)
{
    size_t size = 0;
    for (size_t i = 0; i < lv->len; i++) {
        const LabelRef *l = &lv->items[i];
        size += uvarint_size(l->name_len) + l->name_len + uvarint_size(l->value_len) + l->value_len;
    }
    PyObject *key = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (!key)
        return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(key);
    for (size_t i = 0; i < lv->len; i++) {
        const LabelRef *l = &lv->items[i];
        o = put_uvarint(o, l->name_len);
        copy_short(o, l->name, l->name_len);
        o += l->name_len;
        o = put_uvarint(o, l->value_len);
        copy_short(o, l->value, l->value_len);
        o += l->value_len;
    }
    return key;
}

static PyObject *raise_malformed(const Ctx *c)
{
    PyErr_Format(PyExc_ValueError, "malformed remote-write protobuf: %s in %s at byte offset %zd",
                 c->err, c->where, c->err_off);
    return NULL;
}

/* Series outputs: one key per series in a list (None for a series the ref cache knew), one
   status byte per series; with a cache also each series' cached ref (-1: not cached) and the
   offset and length of its leading label fields in the request. */
typedef struct {
    PyObject *keys;
    uint8_t *status;
    int64_t *refs;
    int64_t *spans;
    Py_ssize_t cap;
    int with_refs;
} SeriesOut;

/* Makes room for series `si` in every SeriesOut column. */
static int grow_series(SeriesOut *so, Py_ssize_t si)
{
    if (so->with_refs) {
        void *const slots[] = {&so->status, &so->refs, &so->spans};
        static const size_t elem[] = {1, sizeof(int64_t), 2 * sizeof(int64_t)};
        return grow_columns(si, &so->cap, 64, 3, slots, elem);
    }
    void *const slots[] = {&so->status};
    static const size_t elem[] = {1};
    return grow_columns(si, &so->cap, 64, 1, slots, elem);
}

/* Each TimeSeries' leading label bytes (body start, length) and the ref the cache holds for
   them, looked up for the whole request at once before the full parse. */
typedef struct {
    const uint8_t **body;
    size_t *lens;
    int64_t *refs;
    Py_ssize_t n, cap;
} Prelook;

/* Fills `pre` from the request's top-level fields, walked as decode_impl walks them; stops at
   the first malformed one (the full parse reports it). -1 on a Python error. */
static int prelook(Ctx *c, const uint8_t *p, const uint8_t *end, PyObject *cache, Prelook *pre)
{
    while (p < end) {
        const uint8_t *at = p;
        uint32_t f;
        unsigned wt;
        size_t n;
        if (read_tag(c, &p, end, &f, &wt, "WriteRequest") < 0)
            break;
        if (f != 1 && f != 3) {
            if (skip_field(c, &p, end, wt, "WriteRequest") < 0)
                break;
            continue;
        }
        if (expect_wt(c, at, wt, WT_LEN, "WriteRequest") < 0 ||
            read_len(c, &p, end, &n, "WriteRequest") < 0)
            break;
        if (f == 1) {
            void *const slots[] = {&pre->body, &pre->lens, &pre->refs};
            static const size_t elem[] = {sizeof(uint8_t *), sizeof(size_t), sizeof(int64_t)};
            if (grow_columns(pre->n, &pre->cap, 64, 3, slots, elem) < 0)
                return -1;
            pre->body[pre->n] = p;
            pre->lens[pre->n] = (size_t)(label_run_end(c, p, p + n) - p);
            pre->n++;
        }
        p += n;
    }
    c->err = NULL;
    return refcache->lookup_many(cache, pre->n, pre->body, pre->lens, pre->refs);
}

/* One TimeSeries of the request: samples into `out`; its key (or None when the prelook found
   its label bytes in the cache), status and cache columns into `so`. -1 malformed, -2 Python
   error. */
static int decode_series(Ctx *c, const uint8_t *p, const uint8_t *end, Py_ssize_t si,
                         LabelVec *lv, Out *out, SeriesOut *so, const Prelook *pre)
{
    int64_t ref = -1;
    const uint8_t *labels_end = p;
    if (pre && si < pre->n && pre->body[si] == p) {
        ref = pre->refs[si];
        labels_end = p + pre->lens[si];
    }
    int r = fill_series(c, ref >= 0 ? labels_end : p, end, (int32_t)si, lv, out);
    if (r < 0)
        return r;
    if (ref >= 0 && lv->len) {
        /* More labels after the cached run: another label list, validated as any other. */
        ref = -1;
        r = fill_series(c, p, end, (int32_t)si, lv, NULL);
        if (r < 0)
            return r;
    }
    if (grow_series(so, si) < 0)
        return -2;
    PyObject *key;
    if (ref >= 0) {
        key = Py_NewRef(Py_None);
        so->status[si] = ST_OK;  /* these exact bytes passed validation before */
    } else {
        key = make_key(lv);
        if (!key)
            return -2;
        int ascii = all_ascii((const uint8_t *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key));
        so->status[si] = validate_labels(lv->items, lv->len, ascii);
    }
    if (so->with_refs) {
        so->refs[si] = ref;
        so->spans[2 * si] = (int64_t)(p - c->base);
        so->spans[2 * si + 1] = (int64_t)(labels_end - p);
    }
    int ar = PyList_Append(so->keys, key);
    Py_DECREF(key);
    return ar < 0 ? -2 : 0;
}

static PyObject *decode_impl(PyObject *arg, int with_hist, PyObject *cache)
{
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *start = (const uint8_t *)buf.buf, *end = start + buf.len;
    Ctx c = {start, NULL, NULL, 0};
    PyObject *status = NULL, *result = NULL;
    LabelVec lv = {NULL, 0, 0};
    SeriesOut so = {PyList_New(0), NULL, NULL, NULL, 0, cache != NULL};
    /* Start at one sample per 48 request bytes: label-heavy requests (the usual 1-sample
       series, ~230 bytes each) then never grow, and sample-dense ones (~18 bytes per sample)
       grow twice. A large overestimate costs more than it saves: fresh big blocks fault pages. */
    Py_ssize_t cap0 = buf.len / 48 + 16;
    Out out = {PyBytes_FromStringAndSize(NULL, cap0 * (Py_ssize_t)sizeof(int32_t)),
               PyBytes_FromStringAndSize(NULL, cap0 * (Py_ssize_t)sizeof(int64_t)),
               PyBytes_FromStringAndSize(NULL, cap0 * (Py_ssize_t)sizeof(uint64_t)),
               NULL, NULL, NULL, 0, 0, 0, 0, NULL, NULL, NULL, 0,
               NULL, NULL, NULL, NULL, NULL, 0, {NULL, 0, 0}};
    Prelook pre = {NULL, NULL, NULL, 0, 0};
    if (with_hist && (!(out.hraw = PyList_New(0)) || !(out.exkeys = PyList_New(0))))
        goto done;
    if (cache && prelook(&c, start, end, cache, &pre) < 0)
        goto done;
    if (!so.keys || !out.series_obj || !out.ts_obj || !out.vals_obj || out_resize(&out, cap0) < 0)
        goto done;

    const uint8_t *p = start;
    while (p < end) {
        const uint8_t *at = p;
        uint32_t f;
        unsigned wt;
        size_t n;
        if (read_tag(&c, &p, end, &f, &wt, "WriteRequest") < 0)
            goto malformed;
        if (f != 1 && f != 3) {
            if (skip_field(&c, &p, end, wt, "WriteRequest") < 0)
                goto malformed;
            continue;
        }
        if (expect_wt(&c, at, wt, WT_LEN, "WriteRequest") < 0 ||
            read_len(&c, &p, end, &n, "WriteRequest") < 0)
            goto malformed;
        if (f == 3) {  /* metadata: not ingested */
            p += n;
            continue;
        }
        Py_ssize_t si = PyList_GET_SIZE(so.keys);
        if (si >= INT32_MAX) {
            fail(&c, at, "WriteRequest", "too many series");
            goto malformed;
        }
        int r = decode_series(&c, p, p + n, si, &lv, &out, &so, cache ? &pre : NULL);
        if (r == -1)
            goto malformed;
        if (r < 0)
            goto done;
        p += n;
    }
    status = PyBytes_FromStringAndSize((const char *)so.status, PyList_GET_SIZE(so.keys));
    if (!status || out_resize(&out, out.n) < 0)
        goto done;
    if (with_hist) {
        Py_ssize_t nh = PyList_GET_SIZE(out.hraw);
        PyObject *hs = PyBytes_FromStringAndSize((const char *)out.hser, nh * (Py_ssize_t)sizeof(int32_t));
        PyObject *ht = hs ? PyBytes_FromStringAndSize((const char *)out.hts, nh * (Py_ssize_t)sizeof(int64_t)) : NULL;
        Py_ssize_t ne = PyList_GET_SIZE(out.exkeys);
        PyObject *es = ht ? PyBytes_FromStringAndSize((const char *)out.exser, ne * (Py_ssize_t)sizeof(int32_t)) : NULL;
        PyObject *et = es ? PyBytes_FromStringAndSize((const char *)out.exts, ne * (Py_ssize_t)sizeof(int64_t)) : NULL;
        PyObject *ev = et ? PyBytes_FromStringAndSize((const char *)out.exvals, ne * (Py_ssize_t)sizeof(uint64_t)) : NULL;
        PyObject *est = ev ? PyBytes_FromStringAndSize((const char *)out.exst, ne) : NULL;
        Py_ssize_t ns = PyList_GET_SIZE(so.keys);
        PyObject *refs = NULL, *spans = NULL;
        if (est && cache) {
            refs = PyBytes_FromStringAndSize((const char *)so.refs, ns * (Py_ssize_t)sizeof(int64_t));
            spans = refs ? PyBytes_FromStringAndSize((const char *)so.spans, ns * 2 * (Py_ssize_t)sizeof(int64_t)) : NULL;
        }
        if (est && cache && spans)
            result = Py_BuildValue("(OOOOOnnOOOOOOOOOO)", so.keys, status, out.series_obj, out.ts_obj,
                                   out.vals_obj, out.n_histograms, out.n_exemplars, hs, ht, out.hraw,
                                   es, et, ev, out.exkeys, est, refs, spans);
        else if (est && !cache)
            result = Py_BuildValue("(OOOOOnnOOOOOOOO)", so.keys, status, out.series_obj, out.ts_obj,
                                   out.vals_obj, out.n_histograms, out.n_exemplars, hs, ht, out.hraw,
                                   es, et, ev, out.exkeys, est);
        Py_XDECREF(refs);
        Py_XDECREF(spans);
        Py_XDECREF(hs);
        Py_XDECREF(ht);
        Py_XDECREF(es);
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(est);
    } else {
        result = Py_BuildValue("(OOOOOnn)", so.keys, status, out.series_obj, out.ts_obj,
                               out.vals_obj, out.n_histograms, out.n_exemplars);
    }
    goto done;

malformed:
    raise_malformed(&c);
done:
    PyMem_Free(lv.items);
    PyMem_Free(so.status);
    PyMem_Free(pre.body);
    PyMem_Free(pre.lens);
    PyMem_Free(pre.refs);
    PyMem_Free(so.refs);
    PyMem_Free(so.spans);
    Py_XDECREF(so.keys);
    Py_XDECREF(status);
    Py_XDECREF(out.series_obj);
    Py_XDECREF(out.ts_obj);
    Py_XDECREF(out.vals_obj);
    Py_XDECREF(out.hraw);
    PyMem_Free(out.hser);
    PyMem_Free(out.hts);
    Py_XDECREF(out.exkeys);
    PyMem_Free(out.exser);
    PyMem_Free(out.exts);
    PyMem_Free(out.exvals);
    PyMem_Free(out.exst);
    PyMem_Free(out.exlv.items);
    PyBuffer_Release(&buf);
    return result;
}

static PyObject *decode(PyObject *self, PyObject *arg)
{
    (void)self;
    return decode_impl(arg, 0, NULL);
}

static PyObject *decode_with_histograms(PyObject *self, PyObject *arg)
{
    (void)self;
    return decode_impl(arg, 1, NULL);
}

static PyObject *decode_with_refs(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *data, *cache;
    if (!PyArg_ParseTuple(args, "OO!:decode_with_refs", &data, refcache->type, &cache))
        return NULL;
    return decode_impl(data, 1, cache);
}

/* keys_at_spans(data, spans) -> list of the label keys of the label fields at each (offset,
   length) int64 pair of `spans` in `data` (as decode_with_refs reported them). */
static PyObject *keys_at_spans(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer buf, sp;
    if (!PyArg_ParseTuple(args, "y*y*:keys_at_spans", &buf, &sp))
        return NULL;
    const uint8_t *start = buf.buf;
    Ctx c = {start, NULL, NULL, 0};
    LabelVec lv = {NULL, 0, 0};
    const int64_t *pairs = sp.buf;
    Py_ssize_t n = sp.len / (Py_ssize_t)(2 * sizeof(int64_t));
    PyObject *keys = PyList_New(n);
    for (Py_ssize_t i = 0; keys && i < n; i++) {
        int64_t off = pairs[2 * i], len = pairs[2 * i + 1];
        if (off < 0 || len < 0 || off > buf.len || len > buf.len - off) {
            PyErr_SetString(PyExc_ValueError, "label span outside the request");
            Py_CLEAR(keys);
            break;
        }
        int r = fill_series(&c, start + off, start + off + len, 0, &lv, NULL);
        if (r == -1)
            raise_malformed(&c);
        PyObject *key = r < 0 ? NULL : make_key(&lv);
        if (!key) {
            Py_CLEAR(keys);
            break;
        }
        PyList_SET_ITEM(keys, i, key);
    }
    PyMem_Free(lv.items);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&sp);
    return keys;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_O,
     "decode(data) -> (keys, series_status, sample_series, ts, vals, n_histograms, n_exemplars)\n\n"
     "Decode an uncompressed prometheus.WriteRequest. keys: list of canonical label keys (one\n"
     "per TimeSeries, labels in request order); series_status: uint8 per series (0 ok, 1 empty,\n"
     "2 duplicate, 3 out of order, 4 not UTF-8); sample_series: int32 series index per sample; ts: int64;\n"
     "vals: float64 (all native endian). Raises ValueError on malformed input."},
    {"decode_with_histograms", decode_with_histograms, METH_O,
     "decode_with_histograms(data) -> decode(data)'s 7 items + (hist_series, hist_ts, hist_raw)\n"
     "+ (ex_series, ex_ts, ex_vals, ex_keys, ex_status)\n\n"
     "hist_series: int32 series index per histogram sample; hist_ts: int64 timestamps;\n"
     "hist_raw: list of each prometheus.Histogram message's bytes, in request order.\n"
     "A Histogram whose body is malformed gets the timestamp INT64_MIN.\n"
     "Then the exemplars: ex_series (int32 series index), ex_ts (int64), ex_vals (float64 bits),\n"
     "ex_keys (list of canonical label keys), ex_status (uint8: 0 ok, 1 label set over 128\n"
     "runes, 2 not UTF-8, 3 malformed); invalid ones never fail the request."},
    {"decode_with_refs", decode_with_refs, METH_VARARGS,
     "decode_with_refs(data, cache) -> decode_with_histograms(data)'s 15 items + (refs, spans)\n\n"
     "A series whose leading label fields are bytes the RefCache `cache` holds gets the key None,\n"
     "status 0 and its ref in refs (int64 per series, -1 elsewhere); spans: int64 (offset, length)\n"
     "of each series' leading label fields in data (keys_at_spans builds their keys)."},
    {"keys_at_spans", keys_at_spans, METH_VARARGS,
     "keys_at_spans(data, spans) -> list of label keys of the label fields at each int64\n"
     "(offset, length) pair of spans in data."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_rwdecode",
    "Prometheus remote-write 1.0 WriteRequest decoder into flat arrays.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rwdecode(void)
{
    PyObject *mod = PyImport_ImportModule("receiver.tsdb._refcache");  /* PyCapsule_Import only walks attributes */
    if (!mod)
        return NULL;
    Py_DECREF(mod);
    refcache = PyCapsule_Import(REFCACHE_CAPSULE, 0);
    if (!refcache)
        return NULL;
    return PyModule_Create(&moddef);
}
