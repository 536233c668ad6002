/*
 * _chunkenc: Prometheus XOR ("Gorilla") chunk codec and the per-series head chunk store.
 *
 * Chunk bytes are bit-exact with Prometheus's XORChunk.Bytes():
 *
 *   [0..1]  number of samples, big-endian uint16
 *   then one bitstream, most significant bit first, zero-padded to a whole byte:
 *     sample 0   t0 as a zig-zag varint (whole bytes), v0 as its raw 64 bits
 *     sample 1   (t1 - t0) as a uvarint (whole bytes), then the value XOR (below)
 *     sample n   dod = (t_n - t_{n-1}) - (t_{n-1} - t_{n-2}), then the value XOR:
 *                  dod == 0                    '0'
 *                  -(2^13-1) <= dod <= 2^13    '10'   + 14-bit two's complement
 *                  -(2^16-1) <= dod <= 2^16    '110'  + 17 bits
 *                  -(2^19-1) <= dod <= 2^19    '1110' + 20 bits
 *                  otherwise                   '1111' + 64 bits
 *   value XOR:  x = bits(v) ^ bits(prev v)
 *                  x == 0                                        '0'
 *                  window exists, lz(x) >= lead, tz(x) >= trail  '10' + (64-lead-trail) bits of x>>trail
 *                  otherwise                                     '11' + lead (5 bits, lz clamped to 31)
 *                                                                + sigbits (6 bits, 64 written as 0)
 *                                                                + sigbits bits of x>>tz; new window
 *               Sample 1 never has a window (lead starts at the 0xff sentinel).
 *
 * Bit writing keeps every buffer zeroed past the written bits and 8+ bytes of slack, so a write of
 * up to 57 bits is one unaligned big-endian load, OR, store. Reading loads 8 bytes at a time too,
 * falling back to a zero-padded load near the end of the input.
 *
 * HeadChunks layout: one contiguous array of `Series` (64 bytes each), indexed by dense ref.
 * A series owns its open chunk buffer (grown geometrically, appended to incrementally with the
 * encoder state kept in the struct: last t, last t-delta, last value bits, leading, trailing, bit
 * count) and an array of completed chunks {mint, maxt, data, len}, oldest first, whose data
 * buffers are shrunk to their exact size when the chunk is cut. Open buffers grow by 1.5x; a new
 * chunk starts at the size of the series' previous chunk plus 1/8, so steady series rarely
 * reallocate and carry little slack. The open chunk's first two bytes
 * always hold the current sample count, so a snapshot is a plain copy of its written bytes.
 * An open chunk with zero samples means the series holds no samples at all (a cut immediately
 * appends the sample that caused it). The GIL guards all HeadChunks state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "bigbytes.h"

/* ------------------------------------------------------------------------------------------ */
/* Byte order helpers                                                                          */

static inline uint64_t load_be64(const uint8_t *p) {
    uint64_t x;
    memcpy(&x, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    return x;
}

static inline void store_be64(uint8_t *p, uint64_t x) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    memcpy(p, &x, 8);
}

static inline uint64_t f2u(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }
static inline double u2f(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }

/* ------------------------------------------------------------------------------------------ */
/* Bit writer: buf must be zero past bit `*nbits` and have >= 8 bytes beyond the current byte.  */

static inline void put_bits57(uint8_t *buf, uint32_t *nbits, uint64_t v, int n) {
    /* n in 1..57; v holds at most n significant bits */
    uint32_t pos = *nbits;
    uint8_t *p = buf + (pos >> 3);
    int off = (int)(pos & 7);
    uint64_t w = load_be64(p);
    w |= v << (64 - off - n);
    store_be64(p, w);
    *nbits = pos + (uint32_t)n;
}

static inline void put_bits(uint8_t *buf, uint32_t *nbits, uint64_t v, int n) {
    if (n <= 0) return;
    if (n < 64) v &= (((uint64_t)1) << n) - 1;
    if (n <= 57) {
        put_bits57(buf, nbits, v, n);
    } else {
        put_bits57(buf, nbits, v >> 32, n - 32);
        put_bits57(buf, nbits, v & 0xffffffffu, 32);
    }
}

static inline void put_uvarint(uint8_t *buf, uint32_t *nbits, uint64_t x) {
    while (x >= 0x80) {
        put_bits57(buf, nbits, (x & 0x7f) | 0x80, 8);
        x >>= 7;
    }
    put_bits57(buf, nbits, x, 8);
}

/* ------------------------------------------------------------------------------------------ */
/* Encoder                                                                                     */

typedef struct {
    int64_t t;         /* last timestamp */
    uint64_t tdelta;   /* last t delta (two's complement) */
    uint64_t vbits;    /* last value bits */
    uint32_t nbits;    /* bits written, including the 16-bit count header */
    uint16_t count;    /* samples in chunk */
    uint8_t leading;   /* 0xff: no window yet */
    uint8_t trailing;
} XorState;

/* Worst case growth of one append, in bytes, plus slack for the 8-byte stores. */
#define MAX_SAMPLE_BYTES 24
#define WRITE_SLACK 8

static inline void xor_state_init(XorState *s) {
    s->t = 0; s->tdelta = 0; s->vbits = 0;
    s->nbits = 16; s->count = 0; s->leading = 0xff; s->trailing = 0;
}

static inline void put_value(uint8_t *buf, XorState *s, uint64_t vbits) {
    uint64_t x = vbits ^ s->vbits;
    if (x == 0) {
        put_bits57(buf, &s->nbits, 0, 1);
        return;
    }
    int lz = __builtin_clzll(x);
    int tz = __builtin_ctzll(x);
    if (lz >= 32) lz = 31;
    if (s->leading != 0xff && lz >= s->leading && tz >= s->trailing) {
        put_bits57(buf, &s->nbits, 2, 2); /* '10' */
        put_bits(buf, &s->nbits, x >> s->trailing, 64 - s->leading - s->trailing);
        return;
    }
    s->leading = (uint8_t)lz;
    s->trailing = (uint8_t)tz;
    int sig = 64 - lz - tz;
    /* '11' + 5 bits leading + 6 bits sigbits (64 wraps to 0) */
    put_bits57(buf, &s->nbits, (3u << 11) | ((uint64_t)lz << 6) | ((uint64_t)sig & 63), 13);
    put_bits(buf, &s->nbits, x >> tz, sig);
}

/* Appends one sample; buf needs MAX_SAMPLE_BYTES + WRITE_SLACK free bytes past nbits/8. */
static inline void xor_append(uint8_t *buf, XorState *s, int64_t t, uint64_t vbits) {
    if (s->count == 0) {
        uint64_t ux = ((uint64_t)t) << 1;
        if (t < 0) ux = ~ux;
        put_uvarint(buf, &s->nbits, ux);
        put_bits(buf, &s->nbits, vbits, 64);
        s->tdelta = 0;
    } else if (s->count == 1) {
        uint64_t td = (uint64_t)t - (uint64_t)s->t;
        put_uvarint(buf, &s->nbits, td);
        put_value(buf, s, vbits);
        s->tdelta = td;
    } else {
        uint64_t td = (uint64_t)t - (uint64_t)s->t;
        int64_t dod = (int64_t)(td - s->tdelta);
        if (dod == 0) {
            put_bits57(buf, &s->nbits, 0, 1);
        } else if (dod >= -((1 << 13) - 1) && dod <= (1 << 13)) {
            put_bits57(buf, &s->nbits, (2ull << 14) | ((uint64_t)dod & 0x3fff), 16);
        } else if (dod >= -((1 << 16) - 1) && dod <= (1 << 16)) {
            put_bits57(buf, &s->nbits, (6ull << 17) | ((uint64_t)dod & 0x1ffff), 20);
        } else if (dod >= -((1 << 19) - 1) && dod <= (1 << 19)) {
            put_bits57(buf, &s->nbits, (14ull << 20) | ((uint64_t)dod & 0xfffff), 24);
        } else {
            put_bits57(buf, &s->nbits, 15, 4);
            put_bits(buf, &s->nbits, (uint64_t)dod, 64);
        }
        put_value(buf, s, vbits);
        s->tdelta = td;
    }
    s->t = t;
    s->vbits = vbits;
    s->count++;
    buf[0] = (uint8_t)(s->count >> 8);
    buf[1] = (uint8_t)(s->count & 0xff);
}

/* ------------------------------------------------------------------------------------------ */
/* Decoder                                                                                     */

typedef struct {
    const uint8_t *buf;
    size_t len;       /* bytes */
    uint64_t pos;     /* bit position */
    uint64_t end;     /* len * 8 */
} BitReader;

static inline uint64_t peek64(const BitReader *r) {
    size_t byte = (size_t)(r->pos >> 3);
    uint64_t w;
    if (byte + 8 <= r->len) {
        w = load_be64(r->buf + byte);
    } else {
        uint8_t tmp[8] = {0};
        if (byte < r->len) memcpy(tmp, r->buf + byte, r->len - byte);
        w = load_be64(tmp);
    }
    return w << (r->pos & 7);
}

/* Reads n bits (1..57). Returns 0 on success, -1 past the end. */
static inline int get_bits57(BitReader *r, int n, uint64_t *out) {
    if (r->pos + (uint64_t)n > r->end) return -1;
    *out = peek64(r) >> (64 - n);
    r->pos += (uint64_t)n;
    return 0;
}

static inline int get_bits(BitReader *r, int n, uint64_t *out) {
    if (n <= 57) return get_bits57(r, n, out);
    uint64_t hi, lo;
    if (get_bits57(r, n - 32, &hi) < 0 || get_bits57(r, 32, &lo) < 0) return -1;
    *out = (hi << 32) | lo;
    return 0;
}

static inline int get_uvarint(BitReader *r, uint64_t *out) {
    uint64_t x = 0, b;
    int shift = 0;
    for (int i = 0; i < 10; i++) {
        if (get_bits57(r, 8, &b) < 0) return -1;
        if (b < 0x80) {
            if (i == 9 && b > 1) return -1; /* overflow */
            *out = x | (b << shift);
            return 0;
        }
        x |= (b & 0x7f) << shift;
        shift += 7;
    }
    return -1;
}

/* Decodes chunk into ts/vs, keeping samples with mint <= t <= maxt and stopping at the first
 * t > maxt (samples in a chunk are in time order). Returns the number kept, or -1 if corrupt.
 * ts/vs need room for the chunk's header count. */
static Py_ssize_t xor_decode_into(const uint8_t *chunk, size_t len, int64_t mint, int64_t maxt,
                                  int64_t *ts, uint64_t *vs) {
    if (len < 2) return -1;
    unsigned total = ((unsigned)chunk[0] << 8) | chunk[1];
    if (total == 0) return 0;
    BitReader r = {chunk + 2, len - 2, 0, (uint64_t)(len - 2) * 8};
    Py_ssize_t k = 0;
    uint64_t ux, vbits, tdelta = 0;
    int64_t t;
    unsigned leading = 0, trailing = 0;

    if (get_uvarint(&r, &ux) < 0) return -1;
    t = (int64_t)(ux >> 1);
    if (ux & 1) t = ~t;
    if (get_bits(&r, 64, &vbits) < 0) return -1;
    if (t > maxt) return 0;
    if (t >= mint) { ts[k] = t; vs[k] = vbits; k++; }

    for (unsigned i = 1; i < total; i++) {
        if (i == 1) {
            if (get_uvarint(&r, &tdelta) < 0) return -1;
        } else {
            /* delta-of-delta prefix: up to four bits, stops at the first zero */
            if (r.pos >= r.end) return -1;
            uint64_t w = peek64(&r) >> 60; /* bits past the end read as zero, caught below */
            int64_t dod;
            uint64_t bits;
            int sz;
            if (!(w & 8))        { r.pos += 1; sz = 0; }
            else if (!(w & 4))   { r.pos += 2; sz = 14; }
            else if (!(w & 2))   { r.pos += 3; sz = 17; }
            else if (!(w & 1))   { r.pos += 4; sz = 20; }
            else                 { r.pos += 4; sz = 64; }
            if (r.pos > r.end) return -1;
            if (sz == 0) {
                dod = 0;
            } else if (sz == 64) {
                if (get_bits(&r, 64, &bits) < 0) return -1;
                dod = (int64_t)bits;
            } else {
                if (get_bits57(&r, sz, &bits) < 0) return -1;
                if (bits > ((uint64_t)1 << (sz - 1))) bits -= (uint64_t)1 << sz;
                dod = (int64_t)bits;
            }
            tdelta = tdelta + (uint64_t)dod;
        }
        t = (int64_t)((uint64_t)t + tdelta);

        /* value */
        uint64_t b;
        if (get_bits57(&r, 1, &b) < 0) return -1;
        if (b) {
            if (get_bits57(&r, 1, &b) < 0) return -1;
            if (b) {
                uint64_t hdr;
                if (get_bits57(&r, 11, &hdr) < 0) return -1;
                unsigned lead = (unsigned)(hdr >> 6);
                unsigned sig = (unsigned)(hdr & 63);
                if (sig == 0) sig = 64;
                if (lead + sig > 64) return -1;
                leading = lead;
                trailing = 64 - lead - sig;
            } else if (i == 1) {
                return -1; /* no window yet */
            }
            int mb = 64 - (int)leading - (int)trailing;
            uint64_t x;
            if (get_bits(&r, mb, &x) < 0) return -1;
            vbits ^= x << trailing;
        }
        if (t > maxt) return k;
        if (t >= mint) { ts[k] = t; vs[k] = vbits; k++; }
    }
    return k;
}

/* ------------------------------------------------------------------------------------------ */
/* Buffer argument helpers                                                                     */

/* Gets a contiguous buffer of 8-byte items. kind 'i' = int64, 'f' = float64. Raw byte buffers
 * ('B'/'b'/'c' or no format) are accepted as packed native-endian 8-byte items. */
static int get_buf8(PyObject *obj, char kind, Py_buffer *view, Py_ssize_t *n, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    const char *f = view->format;
    if (f && (*f == '<' || *f == '=' || *f == '@')) f++;
    int raw = (f == NULL) || ((f[0] == 'B' || f[0] == 'b' || f[0] == 'c') && f[1] == 0);
    int ok;
    if (raw) {
        ok = (view->len % 8) == 0;
    } else if (kind == 'i') {
        ok = view->itemsize == 8 && (f[0] == 'q' || f[0] == 'l' || f[0] == 'Q' || f[0] == 'L') && f[1] == 0;
    } else {
        ok = view->itemsize == 8 && f[0] == 'd' && f[1] == 0;
    }
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous %s buffer", what,
                     kind == 'i' ? "int64" : "float64");
        PyBuffer_Release(view);
        return -1;
    }
    *n = view->len / 8;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Module functions                                                                            */

#define MAX_CHUNK_SAMPLES 65535

static PyObject *py_xor_encode(PyObject *self, PyObject *args) {
    PyObject *ots, *ovs;
    if (!PyArg_ParseTuple(args, "OO:xor_encode", &ots, &ovs)) return NULL;
    Py_buffer bt, bv;
    Py_ssize_t nt, nv;
    if (get_buf8(ots, 'i', &bt, &nt, "ts") < 0) return NULL;
    if (get_buf8(ovs, 'f', &bv, &nv, "vals") < 0) { PyBuffer_Release(&bt); return NULL; }
    PyObject *res = NULL;
    if (nt != nv) {
        PyErr_SetString(PyExc_ValueError, "ts and vals differ in length");
        goto done;
    }
    if (nt > MAX_CHUNK_SAMPLES) {
        PyErr_SetString(PyExc_ValueError, "a chunk holds at most 65535 samples");
        goto done;
    }
    size_t cap = 2 + (size_t)nt * MAX_SAMPLE_BYTES + WRITE_SLACK + 16;
    uint8_t *buf = PyMem_Calloc(cap, 1);
    if (!buf) { PyErr_NoMemory(); goto done; }
    XorState s;
    xor_state_init(&s);
    const int64_t *ts = bt.buf;
    const uint64_t *vs = bv.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nt; i++) xor_append(buf, &s, ts[i], vs[i]);
    Py_END_ALLOW_THREADS
    res = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)((s.nbits + 7) / 8));
    PyMem_Free(buf);
done:
    PyBuffer_Release(&bt);
    PyBuffer_Release(&bv);
    return res;
}

/* window_sums(vals, starts): the sum of each window vals[starts[i]:starts[i+1]] (the last to
 * the end), added from 0.0 one sample after another in order -- Thanos's downsampling
 * aggregator's order, so sums are bit-identical to its. Built without -ffast-math, so the
 * compiler keeps this order. */
static PyObject *py_window_sums(PyObject *self, PyObject *args) {
    PyObject *ovs, *ost;
    if (!PyArg_ParseTuple(args, "OO:window_sums", &ovs, &ost)) return NULL;
    Py_buffer bv, bs;
    Py_ssize_t nv, ns;
    if (get_buf8(ovs, 'f', &bv, &nv, "vals") < 0) return NULL;
    if (get_buf8(ost, 'i', &bs, &ns, "starts") < 0) { PyBuffer_Release(&bv); return NULL; }
    PyObject *res = NULL;
    const double *v = bv.buf;
    const int64_t *st = bs.buf;
    for (Py_ssize_t i = 0; i < ns; i++) {
        int64_t end = i + 1 < ns ? st[i + 1] : (int64_t)nv;
        if (st[i] < 0 || st[i] > end || end > (int64_t)nv) {
            PyErr_SetString(PyExc_ValueError, "starts must be ascending offsets into vals");
            goto done;
        }
    }
    res = PyBytes_FromStringAndSize(NULL, ns * (Py_ssize_t)sizeof(double));
    if (!res) goto done;
    double *out = (double *)PyBytes_AS_STRING(res);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < ns; i++) {
        int64_t end = i + 1 < ns ? st[i + 1] : (int64_t)nv;
        double acc = 0.0;
        for (int64_t j = st[i]; j < end; j++) acc += v[j];
        out[i] = acc;
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&bv);
    PyBuffer_Release(&bs);
    return res;
}

static PyObject *corrupt(void) {
    PyErr_SetString(PyExc_ValueError, "corrupt XOR chunk");
    return NULL;
}

static PyObject *py_xor_decode(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    PyObject *ots = NULL, *ovs = NULL, *res = NULL;
    if (b.len < 2) { corrupt(); goto done; }
    const uint8_t *p = b.buf;
    Py_ssize_t total = ((Py_ssize_t)p[0] << 8) | p[1];
    ots = PyBytes_FromStringAndSize(NULL, total * 8);
    ovs = PyBytes_FromStringAndSize(NULL, total * 8);
    if (!ots || !ovs) goto done;
    Py_ssize_t k = xor_decode_into(p, (size_t)b.len, INT64_MIN, INT64_MAX,
                                   (int64_t *)PyBytes_AS_STRING(ots),
                                   (uint64_t *)PyBytes_AS_STRING(ovs));
    if (k != total) { corrupt(); goto done; }
    res = PyTuple_Pack(2, ots, ovs);
done:
    Py_XDECREF(ots);
    Py_XDECREF(ovs);
    PyBuffer_Release(&b);
    return res;
}

/* Decodes n chunks (given as pointer/length pairs) into fresh bytes objects (ts, vals): as one
 * series, or with per_series (chunk counts of nseries consecutive series) as that many series,
 * whose start offsets (nseries + 1 of them) go to offs. */
static PyObject *decode_grouped(const uint8_t **ptrs, const size_t *lens, Py_ssize_t n,
                                const Py_ssize_t *per_series, Py_ssize_t nseries, int64_t *offs,
                                int64_t mint, int64_t maxt) {
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (lens[i] < 2) return corrupt();
        total += ((Py_ssize_t)ptrs[i][0] << 8) | ptrs[i][1];
    }
    PyObject *ots = big_bytes(total * 8);
    PyObject *ovs = big_bytes(total * 8);
    if (!ots || !ovs) { Py_XDECREF(ots); Py_XDECREF(ovs); return NULL; }
    int64_t *ts = (int64_t *)PyBytes_AS_STRING(ots);
    uint64_t *vs = (uint64_t *)PyBytes_AS_STRING(ovs);
    Py_ssize_t k = 0, c = 0;
    const Py_ssize_t groups = per_series ? nseries : 1;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t g = 0; g < groups && !bad; g++) {
        if (offs) offs[g] = k;
        const Py_ssize_t stop = c + (per_series ? per_series[g] : n);
        for (; c < stop; c++) {
            Py_ssize_t got = xor_decode_into(ptrs[c], lens[c], mint, maxt, ts + k, vs + k);
            if (got < 0) { bad = 1; break; }
            k += got;
        }
    }
    if (offs) offs[groups] = k;
    Py_END_ALLOW_THREADS
    if (bad) { Py_DECREF(ots); Py_DECREF(ovs); return corrupt(); }
    if (k != total) {
        if (_PyBytes_Resize(&ots, k * 8) < 0) { Py_DECREF(ovs); return NULL; }
        if (_PyBytes_Resize(&ovs, k * 8) < 0) { Py_DECREF(ots); return NULL; }
    }
    PyObject *res = PyTuple_Pack(2, ots, ovs);
    Py_DECREF(ots);
    Py_DECREF(ovs);
    return res;
}

static PyObject *decode_spans(const uint8_t **ptrs, const size_t *lens, Py_ssize_t n,
                              int64_t mint, int64_t maxt) {
    return decode_grouped(ptrs, lens, n, NULL, 0, NULL, mint, maxt);
}

/* The buffers of the chunks one batch decode reads: views keep them alive (and are released
 * by chunk_bufs_free, also after an error part-way), ptrs/lens are what decode_grouped reads. */
typedef struct {
    Py_buffer *views;
    const uint8_t **ptrs;
    size_t *lens;
    Py_ssize_t n;  /* buffers taken so far */
} ChunkBufs;

static int chunk_bufs_alloc(ChunkBufs *b, Py_ssize_t cap) {
    b->views = PyMem_Calloc((size_t)cap + 1, sizeof(Py_buffer));
    b->ptrs = PyMem_Malloc(((size_t)cap + 1) * sizeof(*b->ptrs));
    b->lens = PyMem_Malloc(((size_t)cap + 1) * sizeof(*b->lens));
    b->n = 0;
    if (b->views && b->ptrs && b->lens) return 0;
    PyErr_NoMemory();
    return -1;
}

/* Takes the buffer of data (room for it was allocated); -1 with an exception if it has none. */
static int chunk_bufs_add(ChunkBufs *b, PyObject *data) {
    Py_buffer *v = &b->views[b->n];
    if (PyObject_GetBuffer(data, v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    b->ptrs[b->n] = v->buf;
    b->lens[b->n] = (size_t)v->len;
    b->n++;
    return 0;
}

static void chunk_bufs_free(ChunkBufs *b) {
    if (b->views) for (Py_ssize_t i = 0; i < b->n; i++) PyBuffer_Release(&b->views[i]);
    PyMem_Free(b->views);
    PyMem_Free(b->ptrs);
    PyMem_Free(b->lens);
}

static PyObject *py_xor_decode_many(PyObject *self, PyObject *args) {
    PyObject *seq;
    long long mint, maxt;
    if (!PyArg_ParseTuple(args, "OLL:xor_decode_many", &seq, &mint, &maxt)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "chunks must be a sequence of bytes-like objects");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    ChunkBufs bufs = {0};
    PyObject *res = NULL;
    if (chunk_bufs_alloc(&bufs, n) < 0) goto done;
    for (Py_ssize_t i = 0; i < n; i++)
        if (chunk_bufs_add(&bufs, PySequence_Fast_GET_ITEM(fast, i)) < 0) goto done;
    res = decode_spans(bufs.ptrs, bufs.lens, n, (int64_t)mint, (int64_t)maxt);
done:
    chunk_bufs_free(&bufs);
    Py_DECREF(fast);
    return res;
}

/* The chunk bytes of one item of a series' chunk list: the item itself, or the data field
 * (index 2) of a (mint, maxt, data) tuple as StoreAPI clients keep them. Borrowed. */
static PyObject *chunk_data(PyObject *item) {
    if (PyTuple_Check(item)) {
        if (PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_ValueError, "a chunk tuple is (mint, maxt, data)");
            return NULL;
        }
        return PyTuple_GET_ITEM(item, 2);
    }
    return item;
}

/* xor_decode_series(series, mint, maxt) -> (ts bytes, vals bytes, offs bytes): the samples
 * with mint <= t <= maxt of many series, each given as its chunk list (time order), decoded
 * in one call and laid end to end; offs is int64[n+1], series i at [offs[i], offs[i+1]). */
static PyObject *py_xor_decode_series(PyObject *self, PyObject *args) {
    PyObject *seq;
    long long mint, maxt;
    if (!PyArg_ParseTuple(args, "OLL:xor_decode_series", &seq, &mint, &maxt)) return NULL;
    PyObject *outer = PySequence_Fast(seq, "series must be a sequence of chunk lists");
    if (!outer) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(outer);
    PyObject **inner = PyMem_Calloc((size_t)n + 1, sizeof(PyObject *));
    Py_ssize_t *nchunks = PyMem_Calloc((size_t)n + 1, sizeof(Py_ssize_t));
    ChunkBufs bufs = {0};
    PyObject *ooffs = NULL, *pair = NULL, *res = NULL;
    Py_ssize_t total_chunks = 0;
    if (!inner || !nchunks) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < n; i++) {
        inner[i] = PySequence_Fast(PySequence_Fast_GET_ITEM(outer, i),
                                   "a series' chunks must be a sequence");
        if (!inner[i]) goto done;
        nchunks[i] = PySequence_Fast_GET_SIZE(inner[i]);
        total_chunks += nchunks[i];
    }
    if (chunk_bufs_alloc(&bufs, total_chunks) < 0) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        for (Py_ssize_t c = 0; c < nchunks[i]; c++) {
            PyObject *data = chunk_data(PySequence_Fast_GET_ITEM(inner[i], c));
            if (!data || chunk_bufs_add(&bufs, data) < 0) goto done;
        }
    }
    ooffs = PyBytes_FromStringAndSize(NULL, (n + 1) * 8);
    if (!ooffs) goto done;
    pair = decode_grouped(bufs.ptrs, bufs.lens, bufs.n, nchunks, n,
                          (int64_t *)PyBytes_AS_STRING(ooffs), (int64_t)mint, (int64_t)maxt);
    if (pair) res = PyTuple_Pack(3, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), ooffs);
done:
    chunk_bufs_free(&bufs);
    if (inner) for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(inner[i]);
    PyMem_Free(inner);
    PyMem_Free(nchunks);
    Py_XDECREF(pair);
    Py_XDECREF(ooffs);
    Py_DECREF(outer);
    return res;
}

/* ------------------------------------------------------------------------------------------ */
/* HeadChunks                                                                                  */

typedef struct {
    int64_t mint, maxt;
    uint8_t *data;   /* exactly len bytes */
    uint32_t len;
    uint32_t _pad;
} DoneChunk;

typedef struct {
    uint8_t *buf;        /* open chunk: count header + bitstream, zeroed past nbits; NULL if unused */
    DoneChunk *done;     /* completed chunks, oldest first; capacity done_capacity(ndone) */
    int64_t t0;          /* first timestamp of the open chunk */
    XorState enc;        /* last t, t delta, value bits, bit count, sample count, window */
    uint32_t cap;        /* bytes allocated for buf */
    uint32_t ndone;      /* completed chunks */
} Series;                /* 64 bytes */

/* Capacity of the completed-chunk array for n entries: the next power of two, at least 2. */
static inline uint32_t done_capacity(uint32_t n) {
    if (n == 0) return 0;
    uint32_t c = 2;
    while (c < n) c <<= 1;
    return c;
}

_Static_assert(sizeof(Series) == 64, "Series should stay one cache line");

typedef struct {
    PyObject_HEAD
    Series *series;
    Py_ssize_t n;
    Py_ssize_t cap;
    int64_t chunk_range;
    uint32_t samples_per_chunk;
} HeadChunksObject;

static inline int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

static void series_free(Series *s) {
    for (uint32_t i = 0; i < s->ndone; i++) free(s->done[i].data);
    free(s->done);
    free(s->buf);
    memset(s, 0, sizeof(*s));
    xor_state_init(&s->enc);
}

static void head_dealloc(HeadChunksObject *self) {
    for (Py_ssize_t i = 0; i < self->n; i++) series_free(&self->series[i]);
    free(self->series);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int head_init(HeadChunksObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"samples_per_chunk", "chunk_range_ms", NULL};
    long long spc = 120, range = 7200000;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|LL:HeadChunks", kwlist, &spc, &range)) return -1;
    if (spc < 1 || spc > MAX_CHUNK_SAMPLES) {
        PyErr_SetString(PyExc_ValueError, "samples_per_chunk must be in 1..65535");
        return -1;
    }
    if (range < 1) {
        PyErr_SetString(PyExc_ValueError, "chunk_range_ms must be positive");
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->n; i++) series_free(&self->series[i]);
    self->n = 0;
    self->samples_per_chunk = (uint32_t)spc;
    self->chunk_range = (int64_t)range;
    return 0;
}

static int check_ref(HeadChunksObject *self, long long ref) {
    if (ref < 0 || ref >= self->n) {
        PyErr_Format(PyExc_IndexError, "series ref %lld out of range [0, %zd)", ref, self->n);
        return -1;
    }
    return 0;
}

static PyObject *head_resize(HeadChunksObject *self, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) { PyErr_SetString(PyExc_ValueError, "negative size"); return NULL; }
    if (n <= self->n) Py_RETURN_NONE;
    if (n > self->cap) {
        Py_ssize_t cap = self->cap ? self->cap : 64;
        while (cap < n) cap += cap / 2 + 1;
        Series *s = realloc(self->series, (size_t)cap * sizeof(Series));
        if (!s) return PyErr_NoMemory();
        self->series = s;
        self->cap = cap;
    }
    for (Py_ssize_t i = self->n; i < n; i++) {
        memset(&self->series[i], 0, sizeof(Series));
        xor_state_init(&self->series[i].enc);
    }
    self->n = n;
    Py_RETURN_NONE;
}

/* Moves the open chunk of s to its completed list, shrinking the buffer to the chunk size. */
static int series_cut(Series *s) {
    if (s->ndone == done_capacity(s->ndone)) {
        DoneChunk *d = realloc(s->done, done_capacity(s->ndone + 1) * sizeof(DoneChunk));
        if (!d) return -1;
        s->done = d;
    }
    uint32_t len = (s->enc.nbits + 7) / 8;
    uint8_t *data = realloc(s->buf, len);
    if (!data) data = s->buf; /* shrinking can't really fail; keep the old block if it does */
    DoneChunk *c = &s->done[s->ndone++];
    c->mint = s->t0;
    c->maxt = s->enc.t;
    c->data = data;
    c->len = len;
    c->_pad = 0;
    s->buf = NULL;
    s->cap = 0;
    int64_t t = s->enc.t;
    uint64_t v = s->enc.vbits;
    xor_state_init(&s->enc);
    s->enc.t = t;     /* keep the series' last sample for ordering checks */
    s->enc.vbits = v;
    return 0;
}

/* Makes room for one more sample in the open chunk. */
static int series_reserve(Series *s) {
    size_t need = (size_t)(s->enc.nbits >> 3) + MAX_SAMPLE_BYTES + WRITE_SLACK;
    if (need <= s->cap) return 0;
    size_t nc;
    if (s->cap) {
        nc = (size_t)s->cap + s->cap / 2;            /* 1.5x: the open chunk is most of the memory */
    } else if (s->ndone) {
        uint32_t prev = s->done[s->ndone - 1].len;  /* series repeat themselves: size like the last */
        nc = prev + prev / 8 + MAX_SAMPLE_BYTES + WRITE_SLACK;
    } else {
        nc = 64;
    }
    if (nc < need) nc = need + need / 2;
    if (nc > UINT32_MAX) return -1;
    uint8_t *b = realloc(s->buf, nc);
    if (!b) return -1;
    memset(b + s->cap, 0, nc - s->cap);
    s->buf = b;
    s->cap = (uint32_t)nc;
    return 0;
}

enum { ST_OK = 0, ST_OUT_OF_ORDER = 1, ST_DUPLICATE = 2, ST_TOO_OLD = 3, ST_SAME_DUPLICATE = 4 };

static inline int series_has_samples(const Series *s) {
    return s->enc.count > 0 || s->ndone > 0;
}

static PyObject *head_append(HeadChunksObject *self, PyObject *args) {
    PyObject *orefs, *ots, *ovs;
    long long min_valid;
    if (!PyArg_ParseTuple(args, "OOOL:append", &orefs, &ots, &ovs, &min_valid)) return NULL;
    Py_buffer br, bt, bv;
    Py_ssize_t nr, nt, nv;
    if (get_buf8(orefs, 'i', &br, &nr, "refs") < 0) return NULL;
    if (get_buf8(ots, 'i', &bt, &nt, "ts") < 0) { PyBuffer_Release(&br); return NULL; }
    if (get_buf8(ovs, 'f', &bv, &nv, "vals") < 0) {
        PyBuffer_Release(&br); PyBuffer_Release(&bt); return NULL;
    }
    PyObject *out = NULL;
    if (nr != nt || nt != nv) {
        PyErr_SetString(PyExc_ValueError, "refs, ts and vals differ in length");
        goto done;
    }
    const int64_t *refs = br.buf;
    const int64_t *ts = bt.buf;
    const uint64_t *vs = bv.buf;
    for (Py_ssize_t i = 0; i < nr; i++) {
        if (refs[i] < 0 || refs[i] >= self->n) { check_ref(self, refs[i]); goto done; }
    }
    out = PyBytes_FromStringAndSize(NULL, nr);
    if (!out) goto done;
    uint8_t *st = (uint8_t *)PyBytes_AS_STRING(out);
    const int64_t range = self->chunk_range;
    const uint32_t spc = self->samples_per_chunk;
    for (Py_ssize_t i = 0; i < nr; i++) {
        Series *s = &self->series[refs[i]];
        int64_t t = ts[i];
        uint64_t v = vs[i];
        if (t < min_valid) { st[i] = ST_TOO_OLD; continue; }
        if (series_has_samples(s)) {
            if (t < s->enc.t) { st[i] = ST_OUT_OF_ORDER; continue; }
            if (t == s->enc.t) {
                st[i] = (v == s->enc.vbits) ? ST_SAME_DUPLICATE : ST_DUPLICATE;
                continue;
            }
        }
        if (s->enc.count > 0 &&
            (s->enc.count >= spc || floor_div(t, range) != floor_div(s->t0, range))) {
            if (series_cut(s) < 0) goto nomem;
        }
        if (series_reserve(s) < 0) goto nomem;
        if (s->enc.count == 0) s->t0 = t;
        xor_append(s->buf, &s->enc, t, v);
        st[i] = ST_OK;
    }
    goto done;
nomem:
    Py_CLEAR(out);
    PyErr_NoMemory();
done:
    PyBuffer_Release(&br);
    PyBuffer_Release(&bt);
    PyBuffer_Release(&bv);
    return out;
}

static PyObject *chunk_tuple(int64_t mint, int64_t maxt, const uint8_t *data, Py_ssize_t len) {
    return Py_BuildValue("(LLy#)", (long long)mint, (long long)maxt, (const char *)data, len);
}

/* cut_after(refs, t): complete the open chunk of each refs[i] whose newest float is older than
   t[i]. The head passes each series' newest native histogram time, so a float that follows a
   histogram starts a new chunk, as Prometheus cuts on a sample type change: a block's chunks
   of one series must not overlap. */
static PyObject *head_cut_after(HeadChunksObject *self, PyObject *args) {
    PyObject *orefs, *ots;
    if (!PyArg_ParseTuple(args, "OO:cut_after", &orefs, &ots)) return NULL;
    Py_buffer br, bt;
    Py_ssize_t nr, nt;
    if (get_buf8(orefs, 'i', &br, &nr, "refs") < 0) return NULL;
    if (get_buf8(ots, 'i', &bt, &nt, "ts") < 0) { PyBuffer_Release(&br); return NULL; }
    PyObject *res = NULL;
    if (nr != nt) {
        PyErr_SetString(PyExc_ValueError, "refs and ts differ in length");
        goto done;
    }
    const int64_t *refs = br.buf, *ts = bt.buf;
    for (Py_ssize_t i = 0; i < nr; i++) {
        if (check_ref(self, refs[i]) < 0) goto done;
        Series *s = &self->series[refs[i]];
        if (s->enc.count > 0 && ts[i] > s->enc.t && series_cut(s) < 0) {
            PyErr_NoMemory();
            goto done;
        }
    }
    res = Py_None;
    Py_INCREF(res);
done:
    PyBuffer_Release(&br);
    PyBuffer_Release(&bt);
    return res;
}

static PyObject *series_chunks(HeadChunksObject *self, long long ref, long long mint, long long maxt) {
    if (check_ref(self, ref) < 0) return NULL;
    Series *s = &self->series[ref];
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (uint32_t i = 0; i < s->ndone; i++) {
        DoneChunk *c = &s->done[i];
        if (c->maxt < mint) continue;
        if (c->mint > maxt) break;
        PyObject *tup = chunk_tuple(c->mint, c->maxt, c->data, c->len);
        if (!tup || PyList_Append(list, tup) < 0) { Py_XDECREF(tup); Py_DECREF(list); return NULL; }
        Py_DECREF(tup);
    }
    if (s->enc.count > 0 && s->enc.t >= mint && s->t0 <= maxt) {
        PyObject *tup = chunk_tuple(s->t0, s->enc.t, s->buf, (s->enc.nbits + 7) / 8);
        if (!tup || PyList_Append(list, tup) < 0) { Py_XDECREF(tup); Py_DECREF(list); return NULL; }
        Py_DECREF(tup);
    }
    return list;
}

static PyObject *head_chunks(HeadChunksObject *self, PyObject *args) {
    long long ref, mint, maxt;
    if (!PyArg_ParseTuple(args, "LLL:chunks", &ref, &mint, &maxt)) return NULL;
    return series_chunks(self, ref, mint, maxt);
}

/* chunks_many(refs, mint, maxt) -> one chunks() list per ref of the list refs: a query's
 * series in one call instead of one Python-level call per series. */
static PyObject *head_chunks_many(HeadChunksObject *self, PyObject *args) {
    PyObject *refs;
    long long mint, maxt;
    if (!PyArg_ParseTuple(args, "O!LL:chunks_many", &PyList_Type, &refs, &mint, &maxt)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(refs);
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        long long ref = PyLong_AsLongLong(PyList_GET_ITEM(refs, k));
        PyObject *list = (ref == -1 && PyErr_Occurred()) ? NULL : series_chunks(self, ref, mint, maxt);
        if (!list) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, k, list);
    }
    return out;
}

static PyObject *head_samples(HeadChunksObject *self, PyObject *args) {
    long long ref, mint, maxt;
    if (!PyArg_ParseTuple(args, "LLL:samples", &ref, &mint, &maxt)) return NULL;
    if (check_ref(self, ref) < 0) return NULL;
    Series *s = &self->series[ref];
    const uint8_t **ptrs = PyMem_Malloc(((size_t)s->ndone + 1) * sizeof(*ptrs));
    size_t *lens = PyMem_Malloc(((size_t)s->ndone + 1) * sizeof(*lens));
    if (!ptrs || !lens) { PyMem_Free(ptrs); PyMem_Free(lens); return PyErr_NoMemory(); }
    Py_ssize_t n = 0;
    for (uint32_t i = 0; i < s->ndone; i++) {
        DoneChunk *c = &s->done[i];
        if (c->maxt < mint) continue;
        if (c->mint > maxt) break;
        ptrs[n] = c->data; lens[n] = c->len; n++;
    }
    if (s->enc.count > 0 && s->enc.t >= mint && s->t0 <= maxt) {
        ptrs[n] = s->buf; lens[n] = (s->enc.nbits + 7) / 8; n++;
    }
    PyObject *res = decode_spans(ptrs, lens, n, (int64_t)mint, (int64_t)maxt);
    PyMem_Free(ptrs);
    PyMem_Free(lens);
    return res;
}

/* lookup(refs, ts) -> (hit bytes, value bytes): for each (refs[i], ts[i]) whether the series
   already holds a sample at exactly that time (1/0) and its value (float64; 0 on a miss).
   The out-of-order path's duplicate check: one decode of the one chunk that may hold t. */
static PyObject *head_lookup(HeadChunksObject *self, PyObject *args) {
    PyObject *orefs, *ots;
    if (!PyArg_ParseTuple(args, "OO:lookup", &orefs, &ots)) return NULL;
    Py_buffer br, bt;
    Py_ssize_t nr, nt;
    if (get_buf8(orefs, 'i', &br, &nr, "refs") < 0) return NULL;
    if (get_buf8(ots, 'i', &bt, &nt, "ts") < 0) { PyBuffer_Release(&br); return NULL; }
    PyObject *hits = NULL, *vals = NULL, *res = NULL;
    if (nr != nt) {
        PyErr_SetString(PyExc_ValueError, "refs and ts differ in length");
        goto done;
    }
    hits = PyBytes_FromStringAndSize(NULL, nr);
    vals = PyBytes_FromStringAndSize(NULL, nr * 8);
    if (!hits || !vals) goto done;
    uint8_t *hit = (uint8_t *)PyBytes_AS_STRING(hits);
    uint64_t *val = (uint64_t *)PyBytes_AS_STRING(vals);
    const int64_t *refs = br.buf;
    const int64_t *ts = bt.buf;
    int bad = 0;
    for (Py_ssize_t i = 0; i < nr && !bad; i++) {
        hit[i] = 0;
        val[i] = 0;
        if (refs[i] < 0 || refs[i] >= self->n) continue;
        const Series *s = &self->series[refs[i]];
        const int64_t t = ts[i];
        const uint8_t *data = NULL;
        size_t len = 0;
        for (uint32_t c = 0; c < s->ndone; c++) {
            if (s->done[c].mint > t) break;
            if (s->done[c].maxt >= t) { data = s->done[c].data; len = s->done[c].len; break; }
        }
        if (!data && s->enc.count > 0 && s->t0 <= t && t <= s->enc.t) {
            data = s->buf;
            len = (s->enc.nbits + 7) / 8;
        }
        if (!data) continue;
        int64_t got_t[2];
        uint64_t got_v[2];
        Py_ssize_t k = xor_decode_into(data, len, t, t, got_t, got_v);
        if (k < 0) bad = 1;
        else if (k == 1) { hit[i] = 1; val[i] = got_v[0]; }
    }
    if (bad) { corrupt(); goto done; }
    res = PyTuple_Pack(2, hits, vals);
done:
    Py_XDECREF(hits);
    Py_XDECREF(vals);
    PyBuffer_Release(&br);
    PyBuffer_Release(&bt);
    return res;
}

static PyObject *head_bounds(HeadChunksObject *self, PyObject *arg) {
    long long ref = PyLong_AsLongLong(arg);
    if (ref == -1 && PyErr_Occurred()) return NULL;
    if (check_ref(self, ref) < 0) return NULL;
    Series *s = &self->series[ref];
    if (!series_has_samples(s)) Py_RETURN_NONE;
    int64_t lo = s->ndone ? s->done[0].mint : s->t0;
    return Py_BuildValue("(LL)", (long long)lo, (long long)s->enc.t);
}

static PyObject *head_last(HeadChunksObject *self, PyObject *arg) {
    long long ref = PyLong_AsLongLong(arg);
    if (ref == -1 && PyErr_Occurred()) return NULL;
    if (check_ref(self, ref) < 0) return NULL;
    Series *s = &self->series[ref];
    if (!series_has_samples(s)) Py_RETURN_NONE;
    return Py_BuildValue("(Ld)", (long long)s->enc.t, u2f(s->enc.vbits));
}

/* The earliest chunk start at or after t over every series (INT64_MAX if none): lets the block
   cut jump straight to the next window that holds data instead of stepping through empty ones.
   Chunks never straddle a chunk-range boundary, so for an aligned t this is exact per window. */
static PyObject *head_min_time_from(HeadChunksObject *self, PyObject *arg) {
    long long t = PyLong_AsLongLong(arg);
    if (t == -1 && PyErr_Occurred()) return NULL;
    int64_t best = INT64_MAX;
    for (Py_ssize_t r = 0; r < self->n; r++) {
        const Series *s = &self->series[r];
        int64_t got = INT64_MAX;
        for (uint32_t i = 0; i < s->ndone; i++) {
            if (s->done[i].maxt >= t) { got = s->done[i].mint; break; }
        }
        if (got == INT64_MAX && s->enc.count > 0 && s->enc.t >= t) got = s->t0;
        if (got < t) got = t;
        if (got < best) best = got;
    }
    return PyLong_FromLongLong(best);
}

/* empty_refs() -> bytes of int64 refs of every series slot without a sample (after a
   truncation: the candidates for removal from the head's index). */
static PyObject *head_empty_refs(HeadChunksObject *self, PyObject *unused) {
    (void)unused;
    Py_ssize_t n = 0;
    for (Py_ssize_t r = 0; r < self->n; r++) n += !series_has_samples(&self->series[r]);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (!out) return NULL;
    int64_t *o = (int64_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t r = 0; r < self->n; r++) {
        if (!series_has_samples(&self->series[r])) *o++ = (int64_t)r;
    }
    return out;
}

static PyObject *head_num_samples(HeadChunksObject *self, PyObject *arg) {
    long long ref = PyLong_AsLongLong(arg);
    if (ref == -1 && PyErr_Occurred()) return NULL;
    if (check_ref(self, ref) < 0) return NULL;
    Series *s = &self->series[ref];
    long long n = s->enc.count;
    for (uint32_t i = 0; i < s->ndone; i++) n += ((unsigned)s->done[i].data[0] << 8) | s->done[i].data[1];
    return PyLong_FromLongLong(n);
}

static PyObject *head_num_chunks(HeadChunksObject *self, PyObject *arg) {
    long long ref = PyLong_AsLongLong(arg);
    if (ref == -1 && PyErr_Occurred()) return NULL;
    if (check_ref(self, ref) < 0) return NULL;
    Series *s = &self->series[ref];
    return PyLong_FromLongLong((long long)s->ndone + (s->enc.count > 0));
}

static PyObject *head_truncate_before(HeadChunksObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"t", "include_open", NULL};
    long long t;
    int include_open = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "L|p:truncate_before", kwlist, &t, &include_open))
        return NULL;
    long long freed = 0;
    for (Py_ssize_t r = 0; r < self->n; r++) {
        Series *s = &self->series[r];
        uint32_t k = 0;
        while (k < s->ndone && s->done[k].maxt < t) { free(s->done[k].data); k++; }
        if (k) {
            memmove(s->done, s->done + k, (s->ndone - k) * sizeof(DoneChunk));
            s->ndone -= k;
            freed += k;
            if (s->ndone == 0) {
                free(s->done);
                s->done = NULL;
            } else {
                /* keep the power-of-two capacity that series_cut relies on */
                DoneChunk *d = realloc(s->done, done_capacity(s->ndone) * sizeof(DoneChunk));
                if (d) s->done = d;
            }
        }
        if (include_open && s->ndone == 0 && s->enc.count > 0 && s->enc.t < t) {
            series_free(s);
            freed++;
        }
    }
    return PyLong_FromLongLong(freed);
}

static PyObject *head_clear(HeadChunksObject *self, PyObject *arg) {
    long long ref = PyLong_AsLongLong(arg);
    if (ref == -1 && PyErr_Occurred()) return NULL;
    if (check_ref(self, ref) < 0) return NULL;
    series_free(&self->series[ref]);
    Py_RETURN_NONE;
}

static PyObject *head_memory_bytes(HeadChunksObject *self, PyObject *unused) {
    size_t total = sizeof(HeadChunksObject) + (size_t)self->cap * sizeof(Series);
    for (Py_ssize_t r = 0; r < self->n; r++) {
        Series *s = &self->series[r];
        total += s->cap + (size_t)done_capacity(s->ndone) * sizeof(DoneChunk);
        for (uint32_t i = 0; i < s->ndone; i++) total += s->done[i].len;
    }
    return PyLong_FromSize_t(total);
}

static Py_ssize_t head_len(HeadChunksObject *self) { return self->n; }

static PyObject *head_get_spc(HeadChunksObject *self, void *c) {
    return PyLong_FromUnsignedLong(self->samples_per_chunk);
}
static PyObject *head_get_range(HeadChunksObject *self, void *c) {
    return PyLong_FromLongLong(self->chunk_range);
}

static PyMethodDef head_methods[] = {
    {"resize", (PyCFunction)head_resize, METH_O,
     "resize(n): make refs [0, n) valid; never shrinks."},
    {"append", (PyCFunction)head_append, METH_VARARGS,
     "append(refs, ts, vals, min_valid_ts) -> bytes of per-sample status "
     "(0 ok, 1 out of order, 2 duplicate ts/other value, 3 too old, 4 exact duplicate)."},
    {"cut_after", (PyCFunction)head_cut_after, METH_VARARGS,
     "cut_after(refs, ts): complete the open chunk of series whose newest sample is before ts."},
    {"chunks", (PyCFunction)head_chunks, METH_VARARGS,
     "chunks(ref, mint, maxt) -> [(chunk mint, chunk maxt, bytes)] overlapping [mint, maxt]."},
    {"chunks_many", (PyCFunction)head_chunks_many, METH_VARARGS,
     "chunks_many(refs, mint, maxt) -> [chunks(ref, mint, maxt) for ref in refs]."},
    {"samples", (PyCFunction)head_samples, METH_VARARGS,
     "samples(ref, mint, maxt) -> (ts bytes, vals bytes) of samples in [mint, maxt]."},
    {"lookup", (PyCFunction)head_lookup, METH_VARARGS,
     "lookup(refs, ts) -> (hit bytes, float64 value bytes): samples held at exactly ts."},
    {"bounds", (PyCFunction)head_bounds, METH_O, "bounds(ref) -> (min t, max t) or None."},
    {"last", (PyCFunction)head_last, METH_O, "last(ref) -> (t, v) or None."},
    {"num_samples", (PyCFunction)head_num_samples, METH_O, "num_samples(ref) -> int."},
    {"empty_refs", (PyCFunction)head_empty_refs, METH_NOARGS,
     "empty_refs() -> bytes: int64 refs of series without samples."},
    {"min_time_from", (PyCFunction)head_min_time_from, METH_O,
     "min_time_from(t) -> earliest chunk start >= t over all series (clipped to t), or int64 max."},
    {"num_chunks", (PyCFunction)head_num_chunks, METH_O,
     "num_chunks(ref) -> completed chunks plus the open one if it has samples."},
    {"truncate_before", (PyCFunction)(void (*)(void))head_truncate_before,
     METH_VARARGS | METH_KEYWORDS,
     "truncate_before(t, include_open=False) -> number of chunks freed (those with maxt < t). "
     "With include_open, an idle series' open chunk is freed too once all its data is < t."},
    {"clear", (PyCFunction)head_clear, METH_O, "clear(ref): drop all samples of a series."},
    {"memory_bytes", (PyCFunction)head_memory_bytes, METH_NOARGS,
     "memory_bytes() -> bytes allocated for series state and chunk buffers."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef head_getset[] = {
    {"samples_per_chunk", (getter)head_get_spc, NULL, NULL, NULL},
    {"chunk_range_ms", (getter)head_get_range, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods head_as_seq = {.sq_length = (lenfunc)head_len};

static PyTypeObject HeadChunksType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "receiver.tsdb._chunkenc.HeadChunks",
    .tp_basicsize = sizeof(HeadChunksObject),
    .tp_dealloc = (destructor)head_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "HeadChunks(samples_per_chunk=120, chunk_range_ms=7200000): per-series XOR chunks "
              "appended incrementally, refs dense ints 0..n-1.",
    .tp_methods = head_methods,
    .tp_getset = head_getset,
    .tp_as_sequence = &head_as_seq,
    .tp_init = (initproc)head_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------------------------------ */

static PyMethodDef module_methods[] = {
    {"xor_encode", py_xor_encode, METH_VARARGS,
     "xor_encode(ts, vals) -> bytes: a Prometheus XOR chunk of int64 ts / float64 vals."},
    {"xor_decode", py_xor_decode, METH_O,
     "xor_decode(chunk) -> (ts bytes, vals bytes), native int64 / float64."},
    {"window_sums", py_window_sums, METH_VARARGS,
     "window_sums(vals, starts) -> float64 bytes: each window's sum, added in order from 0.0."},
    {"xor_decode_series", py_xor_decode_series, METH_VARARGS,
     "xor_decode_series(series, mint, maxt) -> (ts bytes, vals bytes, offs bytes) of many "
     "series' chunk lists ((mint, maxt, data) tuples or bytes) laid end to end."},
    {"xor_decode_many", py_xor_decode_many, METH_VARARGS,
     "xor_decode_many(chunks, mint, maxt) -> (ts bytes, vals bytes) of the samples of the "
     "chunks (one series, time order) with mint <= t <= maxt."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef chunkenc_module = {
    PyModuleDef_HEAD_INIT, "_chunkenc",
    "Prometheus XOR chunk codec and per-series head chunk store.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__chunkenc(void) {
    if (PyType_Ready(&HeadChunksType) < 0) return NULL;
    PyObject *m = PyModule_Create(&chunkenc_module);
    if (!m) return NULL;
    Py_INCREF(&HeadChunksType);
    if (PyModule_AddObject(m, "HeadChunks", (PyObject *)&HeadChunksType) < 0) {
        Py_DECREF(&HeadChunksType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "OK", ST_OK);
    PyModule_AddIntConstant(m, "OUT_OF_ORDER", ST_OUT_OF_ORDER);
    PyModule_AddIntConstant(m, "DUPLICATE", ST_DUPLICATE);
    PyModule_AddIntConstant(m, "TOO_OLD", ST_TOO_OLD);
    PyModule_AddIntConstant(m, "SAME_DUPLICATE", ST_SAME_DUPLICATE);
    PyModule_AddIntConstant(m, "MAX_CHUNK_SAMPLES", MAX_CHUNK_SAMPLES);
    return m;
}
