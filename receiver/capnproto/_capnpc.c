/* Cap'n Proto wire format for Thanos's capnp replication (write_request.capnp).
 *
 * Written here rather than taken from pycapnp: Thanos's RPC runs over go-capnp's *packed*
 * stream transport, which pycapnp's two-party RPC (unpacked only) cannot speak, and reading
 * a write request element by element from Python would put a per-sample loop on the hot path.
 *
 *   unpack(data, max_out)      -> (bytes, consumed)  packed stream -> words, whole units only
 *   pack(data)                 -> bytes              words -> packed encoding
 *   segments(msg)              -> [(byte_start, n_words)]  of a framed message
 *   pointer(msg, seg, word)    -> None | (1, seg, word, data_words, ptr_count)     struct
 *                                 | (2, seg, word, elem_size, count, dw, pc)       list
 *                                 | (3, cap_index)                                 capability
 *   to_remote_write(msg, seg, word, max_out) -> (tenant bytes, prometheus.WriteRequest bytes)
 *       the WriteRequest that the pointer at (seg, word) points to; every pointer, list size,
 *       symbol reference and offset is checked (ValueError), the work is bounded by a traversal
 *       limit and the output by max_out.
 *   from_remote_write(body, tenant) -> bytes: a WriteRequest struct image (0 data words,
 *       3 pointers) starting at word 0, labels in a deduplicated symbol table.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_SEGMENTS 512

/* ------------------------------------------------------------------ packing */

static PyObject *py_unpack(PyObject *self, PyObject *args) {
    Py_buffer in;
    Py_ssize_t max_out;
    if (!PyArg_ParseTuple(args, "y*n", &in, &max_out)) return NULL;
    const uint8_t *p = in.buf;
    size_t n = (size_t)in.len, i = 0, o = 0;
    size_t cap = n * 2 + 64;
    if (cap > (size_t)max_out + 4096) cap = (size_t)max_out + 4096;
    uint8_t *out = PyMem_Malloc(cap);
    if (!out) { PyBuffer_Release(&in); return PyErr_NoMemory(); }
    while (i < n && o < (size_t)max_out) {
        uint8_t tag = p[i];
        size_t need = 1 + (size_t)__builtin_popcount(tag), extra_words = 0;
        if (tag == 0x00 || tag == 0xff) need += 1;
        if (i + need > n) break;
        if (tag == 0xff) {
            extra_words = p[i + need - 1];
            if (i + need + extra_words * 8 > n) break;
        } else if (tag == 0x00) {
            extra_words = p[i + 1];
        }
        size_t produce = 8 + extra_words * 8;
        if (o + produce > cap) {
            size_t nc = cap * 2 + produce;
            uint8_t *t = PyMem_Realloc(out, nc);
            if (!t) { PyMem_Free(out); PyBuffer_Release(&in); return PyErr_NoMemory(); }
            out = t; cap = nc;
        }
        if (tag == 0x00) {
            memset(out + o, 0, produce);
            i += 2;
        } else {
            size_t j = i + 1;
            for (int b = 0; b < 8; b++) out[o + b] = (tag >> b & 1) ? p[j++] : 0;
            if (tag == 0xff) {
                memcpy(out + o + 8, p + j + 1, extra_words * 8);
                j += 1 + extra_words * 8;
            }
            i = j;
        }
        o += produce;
    }
    PyObject *res = Py_BuildValue("(y#n)", (const char *)out, (Py_ssize_t)o, (Py_ssize_t)i);
    PyMem_Free(out);
    PyBuffer_Release(&in);
    return res;
}

static PyObject *py_pack(PyObject *self, PyObject *args) {
    Py_buffer in;
    if (!PyArg_ParseTuple(args, "y*", &in)) return NULL;
    if (in.len % 8) { PyBuffer_Release(&in); PyErr_SetString(PyExc_ValueError, "not whole words"); return NULL; }
    const uint8_t *p = in.buf;
    size_t nw = (size_t)in.len / 8, o = 0;
    uint8_t *out = PyMem_Malloc((size_t)in.len + in.len / 8 * 2 + 16);
    if (!out) { PyBuffer_Release(&in); return PyErr_NoMemory(); }
    size_t w = 0;
    while (w < nw) {
        const uint8_t *word = p + w * 8;
        uint8_t tag = 0;
        size_t tpos = o++;
        for (int b = 0; b < 8; b++) if (word[b]) { tag |= 1 << b; out[o++] = word[b]; }
        out[tpos] = tag;
        w++;
        if (tag == 0x00) {
            size_t run = 0;
            while (w < nw && run < 255) {
                uint64_t v; memcpy(&v, p + w * 8, 8);
                if (v) break;
                run++; w++;
            }
            out[o++] = (uint8_t)run;
        } else if (tag == 0xff) {
            /* Following words with at most one zero byte are copied raw (as the reference
             * packer does: packing them would not save space). */
            size_t start = w, run = 0;
            while (w < nw && run < 255) {
                const uint8_t *x = p + w * 8;
                int zeros = 0;
                for (int b = 0; b < 8; b++) zeros += x[b] == 0;
                if (zeros >= 2) break;
                run++; w++;
            }
            out[o++] = (uint8_t)run;
            memcpy(out + o, p + start * 8, run * 8);
            o += run * 8;
        }
    }
    PyObject *res = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)o);
    PyMem_Free(out);
    PyBuffer_Release(&in);
    return res;
}

/* ------------------------------------------------------------------ reading */

typedef struct {
    const uint8_t *seg[MAX_SEGMENTS];
    size_t len[MAX_SEGMENTS];  /* words */
    uint32_t n;
    int64_t budget;            /* traversal limit, in words */
} Msg;

typedef struct {
    int kind;                  /* 0 null, 1 struct, 2 list, 3 capability */
    uint32_t seg;
    size_t word;               /* struct: data start; list: first element */
    uint16_t dw, pc;           /* struct sizes (also of composite list elements) */
    uint8_t esize;
    uint32_t count;
    uint32_t cap;
} Ptr;

static int fail(const char *msg) { PyErr_SetString(PyExc_ValueError, msg); return -1; }

static int msg_init(Msg *m, const uint8_t *b, size_t len) {
    if (len < 8) return fail("capnp: message shorter than its segment table");
    uint32_t n; memcpy(&n, b, 4);
    if (n >= MAX_SEGMENTS) return fail("capnp: too many segments");
    m->n = n + 1;
    size_t hdr = (4 + 4 * (size_t)m->n + 7) / 8 * 8;
    if (hdr > len) return fail("capnp: truncated segment table");
    size_t off = hdr;
    for (uint32_t i = 0; i < m->n; i++) {
        uint32_t s; memcpy(&s, b + 4 + 4 * i, 4);
        if ((len - off) / 8 < s) return fail("capnp: segment beyond the message");
        m->seg[i] = b + off;
        m->len[i] = s;
        off += (size_t)s * 8;
    }
    m->budget = (int64_t)(len / 8) * 4 + 1024;
    return 0;
}

static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static int charge(Msg *m, int64_t words) {
    m->budget -= words > 0 ? words : 1;
    return m->budget < 0 ? fail("capnp: traversal limit exceeded") : 0;
}

/* Decode a struct/list pointer word ``p`` whose target starts at word ``target`` of ``seg``. */
static int decode_at(Msg *m, uint64_t p, uint32_t seg, int64_t target, Ptr *out) {
    uint32_t hi = (uint32_t)(p >> 32);
    int64_t slen = (int64_t)m->len[seg];
    out->seg = seg;
    if ((p & 3) == 0) {
        out->kind = 1;
        out->dw = hi & 0xffff; out->pc = hi >> 16;
        if (target < 0 || target + out->dw + out->pc > slen) return fail("capnp: struct out of bounds");
        out->word = (size_t)target;
        return charge(m, out->dw + out->pc);
    }
    out->kind = 2;
    out->esize = hi & 7;
    uint32_t count = hi >> 3;
    if (target < 0) return fail("capnp: list out of bounds");
    if (out->esize == 7) {
        if (target + 1 + (int64_t)count > slen) return fail("capnp: list out of bounds");
        uint64_t tag = rd64(m->seg[seg] + target * 8);
        if ((tag & 3) != 0) return fail("capnp: bad composite list tag");
        uint32_t n = (uint32_t)(tag >> 2) & 0x3fffffff;
        out->dw = (uint16_t)(tag >> 32); out->pc = (uint16_t)(tag >> 48);
        if ((uint64_t)n * (out->dw + out->pc) > count) return fail("capnp: composite list overruns its words");
        out->count = n;
        out->word = (size_t)target + 1;
        return charge(m, (int64_t)n * (out->dw + out->pc) > n ? (int64_t)n * (out->dw + out->pc) : n);
    }
    static const int bits[8] = {0, 1, 8, 16, 32, 64, 64, 0};
    int64_t words = ((int64_t)count * bits[out->esize] + 63) / 64;
    if (target + words > slen) return fail("capnp: list out of bounds");
    out->count = count; out->dw = 0; out->pc = out->esize == 6;
    out->word = (size_t)target;
    return charge(m, words > count ? words : count);
}

static int follow(Msg *m, uint32_t seg, size_t at, Ptr *out) {
    memset(out, 0, sizeof *out);
    if (seg >= m->n || at >= m->len[seg]) return fail("capnp: pointer out of bounds");
    uint64_t p = rd64(m->seg[seg] + at * 8);
    if (p == 0) return 0;
    switch (p & 3) {
    case 3:
        if ((p & 0xffffffffu) != 3) return fail("capnp: unknown pointer kind");
        out->kind = 3; out->cap = (uint32_t)(p >> 32);
        return 0;
    case 2: {
        uint32_t lseg = (uint32_t)(p >> 32);
        size_t pad = (size_t)((p >> 3) & 0x1fffffff);
        if (lseg >= m->n) return fail("capnp: far pointer to a missing segment");
        if (!(p & 4)) {
            if (pad >= m->len[lseg]) return fail("capnp: far pointer out of bounds");
            uint64_t q = rd64(m->seg[lseg] + pad * 8);
            if ((q & 3) >= 2) return fail("capnp: far pointer landing pad is not a struct or list");
            int64_t off = (int32_t)(uint32_t)q >> 2;
            return decode_at(m, q, lseg, (int64_t)pad + 1 + off, out);
        }
        if (pad + 1 >= m->len[lseg]) return fail("capnp: far pointer out of bounds");
        uint64_t f = rd64(m->seg[lseg] + pad * 8), tag = rd64(m->seg[lseg] + pad * 8 + 8);
        if ((f & 7) != 2 || (tag & 3) >= 2) return fail("capnp: bad double-far landing pad");
        uint32_t cseg = (uint32_t)(f >> 32);
        if (cseg >= m->n) return fail("capnp: far pointer to a missing segment");
        return decode_at(m, tag, cseg, (int64_t)((f >> 3) & 0x1fffffff), out);
    }
    default: {
        int64_t off = (int32_t)(uint32_t)p >> 2;
        return decode_at(m, p, seg, (int64_t)at + 1 + off, out);
    }
    }
}

/* Pointer ``i`` of a struct (or composite list element at ``elem``). */
static int field_ptr(Msg *m, const Ptr *s, size_t elem_word, uint16_t i, Ptr *out) {
    if (i >= s->pc) { memset(out, 0, sizeof *out); return 0; }
    return follow(m, s->seg, elem_word + s->dw + i, out);
}

static inline uint64_t data64(const Msg *m, const Ptr *s, size_t elem_word, unsigned w) {
    return w < s->dw ? rd64(m->seg[s->seg] + (elem_word + w) * 8) : 0;
}
static inline uint32_t data32(const Msg *m, const Ptr *s, size_t elem_word, unsigned byte_off) {
    return byte_off / 8 < s->dw ? rd32(m->seg[s->seg] + elem_word * 8 + byte_off) : 0;
}
static inline uint16_t data16(const Msg *m, const Ptr *s, size_t elem_word, unsigned byte_off) {
    if (byte_off / 8 >= s->dw) return 0;
    uint16_t v; memcpy(&v, m->seg[s->seg] + elem_word * 8 + byte_off, 2); return v;
}

static int expect_list(const Ptr *p, int esize, const char *what) {
    if (p->kind == 0) return 0;
    if (p->kind != 2 || p->esize != esize) {
        PyErr_Format(PyExc_ValueError, "capnp: %s has the wrong list encoding", what);
        return -1;
    }
    return 0;
}

static PyObject *py_segments(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    Msg m;
    if (msg_init(&m, b.buf, (size_t)b.len) < 0) { PyBuffer_Release(&b); return NULL; }
    PyObject *l = PyList_New(m.n);
    for (uint32_t i = 0; l && i < m.n; i++)
        PyList_SET_ITEM(l, i, Py_BuildValue("(nn)", (Py_ssize_t)(m.seg[i] - (const uint8_t *)b.buf),
                                            (Py_ssize_t)m.len[i]));
    PyBuffer_Release(&b);
    return l;
}

static PyObject *py_pointer(PyObject *self, PyObject *args) {
    Py_buffer b;
    unsigned int seg;
    Py_ssize_t word;
    if (!PyArg_ParseTuple(args, "y*In", &b, &seg, &word)) return NULL;
    Msg m;
    Ptr p;
    PyObject *res = NULL;
    if (msg_init(&m, b.buf, (size_t)b.len) == 0 && word >= 0 && follow(&m, seg, (size_t)word, &p) == 0) {
        switch (p.kind) {
        case 0: res = Py_NewRef(Py_None); break;
        case 1: res = Py_BuildValue("(iInii)", 1, p.seg, (Py_ssize_t)p.word, p.dw, p.pc); break;
        case 2: res = Py_BuildValue("(iIniIii)", 2, p.seg, (Py_ssize_t)p.word, p.esize, p.count, p.dw, p.pc); break;
        default: res = Py_BuildValue("(iI)", 3, p.cap);
        }
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "capnp: pointer out of bounds");
    }
    PyBuffer_Release(&b);
    return res;
}

/* ------------------------------------------------------------------ protobuf output */

typedef struct { uint8_t *b; size_t n, cap, max; } Buf;

static int buf_reserve(Buf *o, size_t k) {
    if (o->n + k <= o->cap) return 0;
    if (o->n + k > o->max) return fail("capnp: converted request exceeds the size limit");
    size_t nc = o->cap * 2 + k + 256;
    if (nc > o->max + 16) nc = o->max + 16;
    uint8_t *t = PyMem_Realloc(o->b, nc);
    if (!t) { PyErr_NoMemory(); return -1; }
    o->b = t; o->cap = nc;
    return 0;
}
static inline int put(Buf *o, const void *p, size_t k) {
    if (buf_reserve(o, k) < 0) return -1;
    memcpy(o->b + o->n, p, k); o->n += k; return 0;
}
static int put_varint(Buf *o, uint64_t v) {
    uint8_t t[10]; int k = 0;
    while (v >= 0x80) { t[k++] = (uint8_t)(v | 0x80); v >>= 7; }
    t[k++] = (uint8_t)v;
    return put(o, t, k);
}
static int put_tag(Buf *o, unsigned field, unsigned wt) { return put_varint(o, (uint64_t)field << 3 | wt); }
static int put_fixed64(Buf *o, unsigned field, uint64_t v) {
    return put_tag(o, field, 1) < 0 ? -1 : put(o, &v, 8);
}
static int put_bytes(Buf *o, unsigned field, const uint8_t *p, size_t k) {
    if (put_tag(o, field, 2) < 0 || put_varint(o, k) < 0) return -1;
    return put(o, p, k);
}
/* Length-delimited submessage: reserve 5 bytes for the length, fix it up at the end. */
static int begin_msg(Buf *o, unsigned field, size_t *mark) {
    if (put_tag(o, field, 2) < 0 || buf_reserve(o, 5) < 0) return -1;
    *mark = o->n; o->n += 5; return 0;
}
static void end_msg(Buf *o, size_t mark) {
    size_t len = o->n - mark - 5;
    uint8_t t[5]; int k = 0; uint64_t v = len;
    while (v >= 0x80) { t[k++] = (uint8_t)(v | 0x80); v >>= 7; }
    t[k++] = (uint8_t)v;
    memmove(o->b + mark + k, o->b + mark + 5, len);
    memcpy(o->b + mark, t, k);
    o->n = mark + k + len;
}

typedef struct { const uint8_t *data; const uint8_t *offsets; uint32_t n; size_t data_len; } Symbols;

static int sym(const Symbols *s, uint32_t i, const uint8_t **p, size_t *len) {
    if (i >= s->n) return fail("capnp: label refers to a symbol outside the symbol table");
    uint32_t end = rd32(s->offsets + 4 * (size_t)i), start = i ? rd32(s->offsets + 4 * (size_t)(i - 1)) : 0;
    *p = s->data + start; *len = end - start;
    return 0;
}

static int labels_out(Msg *m, const Ptr *list, const Symbols *syms, unsigned field, Buf *o) {
    if (list->kind == 0) return 0;
    if (list->esize != 7) return fail("capnp: labels have the wrong list encoding");
    for (uint32_t i = 0; i < list->count; i++) {
        size_t w = list->word + (size_t)i * (list->dw + list->pc), mark;
        const uint8_t *np, *vp; size_t nl, vl;
        if (sym(syms, data32(m, list, w, 0), &np, &nl) < 0 || sym(syms, data32(m, list, w, 4), &vp, &vl) < 0)
            return -1;
        if (begin_msg(o, field, &mark) < 0) return -1;
        if (nl && put_bytes(o, 1, np, nl) < 0) return -1;
        if (vl && put_bytes(o, 2, vp, vl) < 0) return -1;
        end_msg(o, mark);
    }
    return 0;
}

static int spans_out(Msg *m, const Ptr *h, size_t hw, uint16_t ptr, unsigned field, Buf *o) {
    Ptr l;
    if (field_ptr(m, h, hw, ptr, &l) < 0) return -1;
    if (l.kind == 0) return 0;
    if (l.kind != 2 || l.esize != 7) return fail("capnp: bucket spans have the wrong list encoding");
    for (uint32_t i = 0; i < l.count; i++) {
        size_t w = l.word + (size_t)i * (l.dw + l.pc), mark;
        int32_t off = (int32_t)data32(m, &l, w, 0);
        uint32_t len = data32(m, &l, w, 4);
        if (begin_msg(o, field, &mark) < 0) return -1;
        if (off && (put_tag(o, 1, 0) < 0 || put_varint(o, (uint32_t)((off << 1) ^ (off >> 31))) < 0)) return -1;
        if (len && (put_tag(o, 2, 0) < 0 || put_varint(o, len) < 0)) return -1;
        end_msg(o, mark);
    }
    return 0;
}

/* A List(Int64) as packed sint64 (zigzag) or a List(Float64) as packed double. */
static int packed64_out(Msg *m, const Ptr *h, size_t hw, uint16_t ptr, unsigned field, int zigzag, Buf *o) {
    Ptr l;
    if (field_ptr(m, h, hw, ptr, &l) < 0 || expect_list(&l, 5, "histogram buckets") < 0) return -1;
    if (l.kind == 0 || l.count == 0) return 0;
    size_t mark;
    if (begin_msg(o, field, &mark) < 0) return -1;
    const uint8_t *p = m->seg[l.seg] + l.word * 8;
    if (!zigzag) {
        if (put(o, p, (size_t)l.count * 8) < 0) return -1;
    } else {
        for (uint32_t i = 0; i < l.count; i++) {
            int64_t v = (int64_t)rd64(p + (size_t)i * 8);
            if (put_varint(o, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63)) < 0) return -1;
        }
    }
    end_msg(o, mark);
    return 0;
}

static int histogram_out(Msg *m, const Ptr *l, uint32_t i, Buf *o) {
    size_t w = l->word + (size_t)i * (l->dw + l->pc), mark;
    if (begin_msg(o, 4, &mark) < 0) return -1;
    uint64_t count = data64(m, l, w, 0), sum = data64(m, l, w, 2), zt = data64(m, l, w, 3);
    uint64_t zc = data64(m, l, w, 4), ts = data64(m, l, w, 6);
    int32_t schema = (int32_t)data32(m, l, w, 12);
    uint16_t count_kind = data16(m, l, w, 8), zc_kind = data16(m, l, w, 10), hint = data16(m, l, w, 40);
    if (count_kind > 1 || zc_kind > 1) return fail("capnp: unknown histogram count kind");
    if (count_kind == 0 ? (put_tag(o, 1, 0) < 0 || put_varint(o, count) < 0) : put_fixed64(o, 2, count) < 0) return -1;
    if (sum && put_fixed64(o, 3, sum) < 0) return -1;
    if (schema && (put_tag(o, 4, 0) < 0 || put_varint(o, (uint32_t)((schema << 1) ^ (schema >> 31))) < 0)) return -1;
    if (zt && put_fixed64(o, 5, zt) < 0) return -1;
    if (zc_kind == 0 ? (put_tag(o, 6, 0) < 0 || put_varint(o, zc) < 0) : put_fixed64(o, 7, zc) < 0) return -1;
    if (spans_out(m, l, w, 0, 8, o) < 0 || packed64_out(m, l, w, 1, 9, 1, o) < 0 ||
        packed64_out(m, l, w, 2, 10, 0, o) < 0 || spans_out(m, l, w, 3, 11, o) < 0 ||
        packed64_out(m, l, w, 4, 12, 1, o) < 0 || packed64_out(m, l, w, 5, 13, 0, o) < 0) return -1;
    if (hint && (put_tag(o, 14, 0) < 0 || put_varint(o, hint) < 0)) return -1;
    if (ts && (put_tag(o, 15, 0) < 0 || put_varint(o, ts) < 0)) return -1;
    end_msg(o, mark);
    return 0;
}

static int series_out(Msg *m, const Ptr *ts, uint32_t i, const Symbols *syms, Buf *o) {
    size_t w = ts->word + (size_t)i * (ts->dw + ts->pc), mark;
    Ptr labels, samples, hists, exs;
    if (field_ptr(m, ts, w, 0, &labels) < 0 || expect_list(&labels, 7, "labels") < 0 ||
        field_ptr(m, ts, w, 1, &samples) < 0 || expect_list(&samples, 7, "samples") < 0 ||
        field_ptr(m, ts, w, 2, &hists) < 0 || expect_list(&hists, 7, "histograms") < 0 ||
        field_ptr(m, ts, w, 3, &exs) < 0 || expect_list(&exs, 7, "exemplars") < 0) return -1;
    if (begin_msg(o, 1, &mark) < 0) return -1;
    if (labels_out(m, &labels, syms, 1, o) < 0) return -1;
    for (uint32_t j = 0; samples.kind && j < samples.count; j++) {
        size_t sw = samples.word + (size_t)j * (samples.dw + samples.pc), sm;
        uint64_t t = data64(m, &samples, sw, 0), v = data64(m, &samples, sw, 1);
        if (begin_msg(o, 2, &sm) < 0) return -1;
        if (v && put_fixed64(o, 1, v) < 0) return -1;
        if (t && (put_tag(o, 2, 0) < 0 || put_varint(o, t) < 0)) return -1;
        end_msg(o, sm);
    }
    for (uint32_t j = 0; exs.kind && j < exs.count; j++) {
        size_t ew = exs.word + (size_t)j * (exs.dw + exs.pc), em;
        Ptr el;
        if (field_ptr(m, &exs, ew, 0, &el) < 0 || expect_list(&el, 7, "exemplar labels") < 0) return -1;
        uint64_t v = data64(m, &exs, ew, 0), t = data64(m, &exs, ew, 1);
        if (begin_msg(o, 3, &em) < 0 || labels_out(m, &el, syms, 1, o) < 0) return -1;
        if (v && put_fixed64(o, 2, v) < 0) return -1;
        if (t && (put_tag(o, 3, 0) < 0 || put_varint(o, t) < 0)) return -1;
        end_msg(o, em);
    }
    for (uint32_t j = 0; hists.kind && j < hists.count; j++)
        if (histogram_out(m, &hists, j, o) < 0) return -1;
    end_msg(o, mark);
    return 0;
}

static PyObject *py_to_remote_write(PyObject *self, PyObject *args) {
    Py_buffer b;
    unsigned int seg;
    Py_ssize_t word, max_out;
    if (!PyArg_ParseTuple(args, "y*Inn", &b, &seg, &word, &max_out)) return NULL;
    Msg m;
    Buf o = {NULL, 0, 0, (size_t)max_out};
    PyObject *res = NULL;
    Ptr wr, symp, data, offs, ts, tenant;
    Symbols syms = {NULL, NULL, 0, 0};
    if (msg_init(&m, b.buf, (size_t)b.len) < 0 || word < 0 || follow(&m, seg, (size_t)word, &wr) < 0) goto done;
    if (buf_reserve(&o, (size_t)b.len * 3 / 2 < o.max ? (size_t)b.len * 3 / 2 : o.max) < 0) goto done;
    if (wr.kind == 2 || wr.kind == 3) { fail("capnp: write request is not a struct"); goto done; }
    memset(&ts, 0, sizeof ts); memset(&tenant, 0, sizeof tenant);
    if (wr.kind == 1) {
        if (field_ptr(&m, &wr, wr.word, 0, &symp) < 0) goto done;
        if (symp.kind == 2 || symp.kind == 3) { fail("capnp: symbols is not a struct"); goto done; }
        if (symp.kind == 1) {
            if (field_ptr(&m, &symp, symp.word, 0, &data) < 0 || expect_list(&data, 2, "symbol data") < 0 ||
                field_ptr(&m, &symp, symp.word, 1, &offs) < 0 || expect_list(&offs, 4, "symbol offsets") < 0)
                goto done;
            if (data.kind) { syms.data = m.seg[data.seg] + data.word * 8; syms.data_len = data.count; }
            if (offs.kind) { syms.offsets = m.seg[offs.seg] + offs.word * 8; syms.n = offs.count; }
            uint32_t prev = 0;
            for (uint32_t i = 0; i < syms.n; i++) {
                uint32_t e = rd32(syms.offsets + 4 * (size_t)i);
                if (e < prev || e > syms.data_len) { fail("capnp: symbol offsets are not ascending within the data"); goto done; }
                prev = e;
            }
        }
        if (field_ptr(&m, &wr, wr.word, 1, &ts) < 0 || expect_list(&ts, 7, "timeSeries") < 0 ||
            field_ptr(&m, &wr, wr.word, 2, &tenant) < 0 || expect_list(&tenant, 2, "tenant") < 0) goto done;
    }
    for (uint32_t i = 0; ts.kind && i < ts.count; i++)
        if (series_out(&m, &ts, i, &syms, &o) < 0) goto done;
    {
        const char *tp = tenant.kind ? (const char *)m.seg[tenant.seg] + tenant.word * 8 : "";
        size_t tl = tenant.kind ? tenant.count : 0;
        if (tl && tp[tl - 1] == 0) tl--;  /* Text carries a NUL terminator */
        res = Py_BuildValue("(y#y#)", tp, (Py_ssize_t)tl, o.b ? (const char *)o.b : "", (Py_ssize_t)o.n);
    }
done:
    PyMem_Free(o.b);
    PyBuffer_Release(&b);
    return res;
}

/* ------------------------------------------------------------------ protobuf input -> capnp */

typedef struct { const uint8_t *p, *end; } PB;

static int pb_varint(PB *r, uint64_t *v) {
    uint64_t x = 0;
    for (int s = 0; s < 70; s += 7) {
        if (r->p >= r->end) return fail("protobuf: truncated varint");
        uint8_t c = *r->p++;
        x |= (uint64_t)(c & 0x7f) << s;
        if (!(c & 0x80)) { *v = x; return 0; }
    }
    return fail("protobuf: varint too long");
}

/* Next field: its number, wire type, and for length-delimited fields the payload. */
static int pb_next(PB *r, uint32_t *field, int *wt, uint64_t *v, PB *sub) {
    uint64_t key;
    if (pb_varint(r, &key) < 0) return -1;
    *field = (uint32_t)(key >> 3); *wt = key & 7;
    switch (*wt) {
    case 0: return pb_varint(r, v);
    case 1: if (r->end - r->p < 8) return fail("protobuf: truncated fixed64");
            memcpy(v, r->p, 8); r->p += 8; return 0;
    case 5: if (r->end - r->p < 4) return fail("protobuf: truncated fixed32");
            { uint32_t x; memcpy(&x, r->p, 4); *v = x; } r->p += 4; return 0;
    case 2: {
        uint64_t n;
        if (pb_varint(r, &n) < 0) return -1;
        if (n > (uint64_t)(r->end - r->p)) return fail("protobuf: truncated field");
        sub->p = r->p; sub->end = r->p + n; r->p += n; return 0;
    }
    default: return fail("protobuf: unsupported wire type");
    }
}

typedef struct { uint64_t *w; size_t n, cap; } Words;

static int words_alloc(Words *o, size_t k, size_t *at) {
    if (o->n + k > o->cap) {
        size_t nc = o->cap * 2 + k + 64;
        if (nc > ((size_t)1 << 29)) return fail("capnp: message too large");
        uint64_t *t = PyMem_Realloc(o->w, nc * 8);
        if (!t) { PyErr_NoMemory(); return -1; }
        o->w = t; o->cap = nc;
    }
    memset(o->w + o->n, 0, k * 8);
    *at = o->n; o->n += k;
    return 0;
}
static void set_struct_ptr(Words *o, size_t at, size_t target, uint16_t dw, uint16_t pc) {
    int64_t off = (int64_t)target - (int64_t)at - 1;
    o->w[at] = ((uint64_t)(uint32_t)(off << 2)) | ((uint64_t)dw << 32) | ((uint64_t)pc << 48);
}
static void set_list_ptr(Words *o, size_t at, size_t target, unsigned esize, uint32_t count) {
    int64_t off = (int64_t)target - (int64_t)at - 1;
    o->w[at] = ((uint64_t)(uint32_t)(off << 2)) | 1 | ((uint64_t)(esize | (count << 3)) << 32);
}
/* A composite list of ``n`` structs of (dw, pc); returns the first element's word. */
static int new_struct_list(Words *o, size_t ptr_at, uint32_t n, uint16_t dw, uint16_t pc, size_t *first) {
    size_t at;
    if (words_alloc(o, 1 + (size_t)n * (dw + pc), &at) < 0) return -1;
    o->w[at] = ((uint64_t)n << 2) | ((uint64_t)dw << 32) | ((uint64_t)pc << 48);
    set_list_ptr(o, ptr_at, at, 7, n * (uint32_t)(dw + pc));
    *first = at + 1;
    return 0;
}
static int new_prim_list(Words *o, size_t ptr_at, unsigned esize, uint32_t count, size_t bytes, size_t *at) {
    if (words_alloc(o, (bytes + 7) / 8, at) < 0) return -1;
    set_list_ptr(o, ptr_at, *at, esize, count);
    return 0;
}

typedef struct {
    uint32_t *slots;           /* 0 = empty, else symbol index + 1 */
    size_t cap;
    uint8_t *data; size_t len, dcap;
    uint32_t *ends; uint32_t n, ecap;
} SymTab;

static uint64_t fnv(const uint8_t *p, size_t n) {
    /* 8 bytes per step (a symbol table hash, not a stable one). */
    uint64_t h = 1469598103934665603ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { h ^= rd64(p + i); h *= 0x9E3779B97F4A7C15ull; h ^= h >> 29; }
    uint64_t t = 0;
    memcpy(&t, p + i, n - i);
    h ^= t; h *= 0x9E3779B97F4A7C15ull; h ^= h >> 32;
    return h;
}
static int symtab_grow(SymTab *t) {
    size_t nc = t->cap ? t->cap * 2 : 1024;
    uint32_t *s = PyMem_Calloc(nc, sizeof *s);
    if (!s) { PyErr_NoMemory(); return -1; }
    for (uint32_t i = 0; i < t->n; i++) {
        uint32_t st = i ? t->ends[i - 1] : 0;
        size_t h = fnv(t->data + st, t->ends[i] - st) & (nc - 1);
        while (s[h]) h = (h + 1) & (nc - 1);
        s[h] = i + 1;
    }
    PyMem_Free(t->slots); t->slots = s; t->cap = nc;
    return 0;
}
static int symtab_add(SymTab *t, const uint8_t *p, size_t n, uint32_t *idx) {
    if ((size_t)(t->n + 1) * 2 > t->cap && symtab_grow(t) < 0) return -1;
    size_t h = fnv(p, n) & (t->cap - 1);
    while (t->slots[h]) {
        uint32_t i = t->slots[h] - 1, st = i ? t->ends[i - 1] : 0;
        if (t->ends[i] - st == n && memcmp(t->data + st, p, n) == 0) { *idx = i; return 0; }
        h = (h + 1) & (t->cap - 1);
    }
    if (t->len + n > 0xffffffffu) return fail("capnp: symbol table too large");
    if (t->len + n > t->dcap) {
        size_t nc = t->dcap * 2 + n + 1024;
        uint8_t *d = PyMem_Realloc(t->data, nc);
        if (!d) { PyErr_NoMemory(); return -1; }
        t->data = d; t->dcap = nc;
    }
    if (t->n == t->ecap) {
        uint32_t nc = t->ecap * 2 + 256;
        uint32_t *e = PyMem_Realloc(t->ends, (size_t)nc * 4);
        if (!e) { PyErr_NoMemory(); return -1; }
        t->ends = e; t->ecap = nc;
    }
    memcpy(t->data + t->len, p, n);
    t->len += n;
    t->ends[t->n] = (uint32_t)t->len;
    t->slots[h] = ++t->n;
    *idx = t->n - 1;
    return 0;
}

/* Count the length-delimited fields numbered 1..4 of a message (counts[f]). */
static int pb_count(PB r, uint32_t counts[5]) {
    uint32_t f; int wt; uint64_t v; PB sub;
    memset(counts, 0, 5 * sizeof counts[0]);
    while (r.p < r.end) {
        if (pb_next(&r, &f, &wt, &v, &sub) < 0) return -1;
        if (wt == 2 && f >= 1 && f <= 4) counts[f]++;
    }
    return 0;
}

/* The ``n`` Label messages numbered ``field`` of a message as a List(Label). */
static int labels_in(PB r, uint32_t field, uint32_t n, Words *o, size_t ptr_at, SymTab *st) {
    uint32_t f; int wt; uint64_t v; PB sub;
    size_t first;
    if (new_struct_list(o, ptr_at, n, 1, 0, &first) < 0) return -1;
    for (uint32_t k = 0; r.p < r.end;) {
        if (pb_next(&r, &f, &wt, &v, &sub) < 0) return -1;
        if (f != field || wt != 2) continue;
        const uint8_t *np = (const uint8_t *)"", *vp = (const uint8_t *)""; size_t nl = 0, vl = 0;
        uint32_t lf; int lwt; uint64_t lv; PB ls;
        while (sub.p < sub.end) {
            if (pb_next(&sub, &lf, &lwt, &lv, &ls) < 0) return -1;
            if (lf == 1 && lwt == 2) { np = ls.p; nl = ls.end - ls.p; }
            if (lf == 2 && lwt == 2) { vp = ls.p; vl = ls.end - ls.p; }
        }
        uint32_t ni, vi;
        if (symtab_add(st, np, nl, &ni) < 0 || symtab_add(st, vp, vl, &vi) < 0) return -1;
        o->w[first + k++] = (uint64_t)ni | ((uint64_t)vi << 32);
    }
    return 0;
}

static int spans_in(PB r, uint32_t field, Words *o, size_t ptr_at) {
    uint32_t n = 0, f; int wt; uint64_t v; PB sub;
    size_t first;
    for (PB scan = r; scan.p < scan.end;) {
        if (pb_next(&scan, &f, &wt, &v, &sub) < 0) return -1;
        n += f == field && wt == 2;
    }
    if (new_struct_list(o, ptr_at, n, 1, 0, &first) < 0) return -1;
    for (uint32_t k = 0; r.p < r.end;) {
        if (pb_next(&r, &f, &wt, &v, &sub) < 0) return -1;
        if (f != field || wt != 2) continue;
        uint32_t off = 0, len = 0, sf; int swt; uint64_t sv; PB ss;
        while (sub.p < sub.end) {
            if (pb_next(&sub, &sf, &swt, &sv, &ss) < 0) return -1;
            if (sf == 1 && swt == 0) off = (uint32_t)((sv >> 1) ^ (~(sv & 1) + 1));
            if (sf == 2 && swt == 0) len = (uint32_t)sv;
        }
        o->w[first + k++] = (uint64_t)off | ((uint64_t)len << 32);
    }
    return 0;
}

/* Repeated sint64 (zigzag) or double, packed or not, as a List(Int64)/List(Float64). */
static int repeated64_in(PB r, uint32_t field, int zigzag, Words *o, size_t ptr_at) {
    uint32_t f, n = 0; int wt; uint64_t v; PB sub;
    PB scan = r;
    while (scan.p < scan.end) {
        if (pb_next(&scan, &f, &wt, &v, &sub) < 0) return -1;
        if (f != field) continue;
        if (wt == 2) {
            if (!zigzag) { n += (uint32_t)((sub.end - sub.p) / 8); continue; }
            while (sub.p < sub.end) { if (pb_varint(&sub, &v) < 0) return -1; n++; }
        } else n++;
    }
    size_t at, k = 0;
    if (new_prim_list(o, ptr_at, 5, n, (size_t)n * 8, &at) < 0) return -1;
    while (r.p < r.end && k < n) {
        if (pb_next(&r, &f, &wt, &v, &sub) < 0) return -1;
        if (f != field) continue;
        if (wt != 2) { o->w[at + k++] = zigzag ? (v >> 1) ^ (~(v & 1) + 1) : v; continue; }
        while (sub.p < sub.end && k < n) {
            if (zigzag) { if (pb_varint(&sub, &v) < 0) return -1; v = (v >> 1) ^ (~(v & 1) + 1); }
            else { if (sub.end - sub.p < 8) break; memcpy(&v, sub.p, 8); sub.p += 8; }
            o->w[at + k++] = v;
        }
    }
    return 0;
}

static int histogram_in(PB r, Words *o, size_t hw) {
    /* Histogram struct: 7 data words, 6 pointers (see write_request.capnp). */
    uint32_t f; int wt; uint64_t v; PB sub;
    PB scan = r;
    uint16_t count_kind = 0, zc_kind = 0;
    while (scan.p < scan.end) {
        if (pb_next(&scan, &f, &wt, &v, &sub) < 0) return -1;
        switch (f) {
        case 1: o->w[hw] = v; count_kind = 0; break;
        case 2: o->w[hw] = v; count_kind = 1; break;
        case 3: o->w[hw + 2] = v; break;
        case 4: { uint32_t s = (uint32_t)((v >> 1) ^ (~(v & 1) + 1));
                  o->w[hw + 1] = (o->w[hw + 1] & 0xffffffffull) | ((uint64_t)s << 32); break; }
        case 5: o->w[hw + 3] = v; break;
        case 6: o->w[hw + 4] = v; zc_kind = 0; break;
        case 7: o->w[hw + 4] = v; zc_kind = 1; break;
        case 14: o->w[hw + 5] = (uint16_t)v; break;
        case 15: o->w[hw + 6] = v; break;
        }
    }
    o->w[hw + 1] = (o->w[hw + 1] & ~0xffffffffull) | count_kind | ((uint64_t)zc_kind << 16);
    size_t p = hw + 7;
    if (spans_in(r, 8, o, p) < 0 || repeated64_in(r, 9, 1, o, p + 1) < 0 ||
        repeated64_in(r, 10, 0, o, p + 2) < 0 || spans_in(r, 11, o, p + 3) < 0 ||
        repeated64_in(r, 12, 1, o, p + 4) < 0 || repeated64_in(r, 13, 0, o, p + 5) < 0) return -1;
    return 0;
}

static int series_in(PB r, Words *o, size_t sw, SymTab *st) {
    /* TimeSeries struct: 0 data words, pointers labels, samples, histograms, exemplars. */
    uint32_t f, n[5]; int wt; uint64_t v; PB sub;
    size_t first;
    if (pb_count(r, n) < 0 || labels_in(r, 1, n[1], o, sw, st) < 0) return -1;
    if (new_struct_list(o, sw + 1, n[2], 2, 0, &first) < 0) return -1;
    PB scan = r;
    for (uint32_t k = 0; scan.p < scan.end;) {
        if (pb_next(&scan, &f, &wt, &v, &sub) < 0) return -1;
        if (f != 2 || wt != 2) continue;
        uint64_t t = 0, val = 0; uint32_t sf; int swt; uint64_t sv; PB ss;
        while (sub.p < sub.end) {
            if (pb_next(&sub, &sf, &swt, &sv, &ss) < 0) return -1;
            if (sf == 1 && swt == 1) val = sv;
            if (sf == 2 && swt == 0) t = sv;
        }
        o->w[first + 2 * k] = t; o->w[first + 2 * k + 1] = val; k++;
    }
    if (n[4]) {
        if (new_struct_list(o, sw + 2, n[4], 7, 6, &first) < 0) return -1;
        scan = r;
        for (uint32_t k = 0; scan.p < scan.end;) {
            if (pb_next(&scan, &f, &wt, &v, &sub) < 0) return -1;
            if (f == 4 && wt == 2 && histogram_in(sub, o, first + (size_t)13 * k++) < 0) return -1;
        }
    }
    if (n[3]) {
        if (new_struct_list(o, sw + 3, n[3], 2, 1, &first) < 0) return -1;
        scan = r;
        for (uint32_t k = 0; scan.p < scan.end;) {
            if (pb_next(&scan, &f, &wt, &v, &sub) < 0) return -1;
            if (f != 3 || wt != 2) continue;
            size_t ew = first + (size_t)3 * k++;
            uint32_t en[5];
            if (pb_count(sub, en) < 0 || labels_in(sub, 1, en[1], o, ew + 2, st) < 0) return -1;
            uint32_t ef; int ewt; uint64_t ev; PB es;
            while (sub.p < sub.end) {
                if (pb_next(&sub, &ef, &ewt, &ev, &es) < 0) return -1;
                if (ef == 2 && ewt == 1) o->w[ew] = ev;
                if (ef == 3 && ewt == 0) o->w[ew + 1] = ev;
            }
        }
    }
    return 0;
}

static PyObject *py_from_remote_write(PyObject *self, PyObject *args) {
    Py_buffer b, tb;
    if (!PyArg_ParseTuple(args, "y*y*", &b, &tb)) return NULL;
    Words o = {NULL, 0, 0};
    SymTab st;
    memset(&st, 0, sizeof st);
    PyObject *res = NULL;
    size_t root, syms, first, at;
    PB r = {b.buf, (const uint8_t *)b.buf + b.len};
    /* WriteRequest: pointers symbols, timeSeries, tenant. About a word per protobuf byte. */
    if (words_alloc(&o, (size_t)b.len / 8 + 16, &root) < 0) goto done;
    o.n = 0;
    if (words_alloc(&o, 3, &root) < 0 || words_alloc(&o, 2, &syms) < 0) goto done;
    set_struct_ptr(&o, root, syms, 0, 2);
    uint32_t counts[5];
    if (pb_count(r, counts) < 0 || new_struct_list(&o, root + 1, counts[1], 0, 4, &first) < 0) goto done;
    if (tb.len) {
        if (new_prim_list(&o, root + 2, 2, (uint32_t)tb.len + 1, (size_t)tb.len + 1, &at) < 0) goto done;
        memcpy(o.w + at, tb.buf, (size_t)tb.len);
    }
    for (uint32_t k = 0; r.p < r.end;) {
        uint32_t f; int wt; uint64_t v; PB sub;
        if (pb_next(&r, &f, &wt, &v, &sub) < 0) goto done;
        if (f == 1 && wt == 2 && series_in(sub, &o, first + (size_t)4 * k++, &st) < 0) goto done;
    }
    if (new_prim_list(&o, syms, 2, (uint32_t)st.len, st.len, &at) < 0) goto done;
    if (st.len) memcpy(o.w + at, st.data, st.len);
    if (new_prim_list(&o, syms + 1, 4, st.n, (size_t)st.n * 4, &at) < 0) goto done;
    if (st.n) memcpy(o.w + at, st.ends, (size_t)st.n * 4);
    res = PyBytes_FromStringAndSize((const char *)o.w, (Py_ssize_t)(o.n * 8));
done:
    PyMem_Free(o.w); PyMem_Free(st.slots); PyMem_Free(st.data); PyMem_Free(st.ends);
    PyBuffer_Release(&b); PyBuffer_Release(&tb);
    return res;
}

static PyMethodDef methods[] = {
    {"unpack", py_unpack, METH_VARARGS, "Unpack whole units of a packed stream, up to max_out bytes."},
    {"pack", py_pack, METH_VARARGS, "Pack whole words."},
    {"segments", py_segments, METH_VARARGS, "Segments of a framed message: [(byte start, words)]."},
    {"pointer", py_pointer, METH_VARARGS, "Resolve the pointer at (segment, word)."},
    {"to_remote_write", py_to_remote_write, METH_VARARGS, "capnp WriteRequest -> (tenant, prometheus.WriteRequest)."},
    {"from_remote_write", py_from_remote_write, METH_VARARGS, "prometheus.WriteRequest -> capnp WriteRequest image."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_capnpc", NULL, -1, methods};

PyMODINIT_FUNC PyInit__capnpc(void) { return PyModule_Create(&module); }
