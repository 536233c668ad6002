/* Byte-level kernels for Prometheus TSDB block files (index + chunk segments).
 *
 * Why C: every section of a block carries a CRC32C, and the index is a long run of varints
 * (series entries, postings offset table, symbols). Doing those per item in Python would make
 * block writes and index loads a per-series/per-chunk interpreter loop; here they are single
 * passes over buffers. Only the CPython C API and the buffer protocol are used.
 *
 * All integers passed as "i64 buffers" are native-endian int64 arrays (numpy int64 .data).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------- CRC32C (Castagnoli) */

static uint32_t crc_tab[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xFF];
}

/* Slicing-by-8 software path. */
static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n && ((uintptr_t)p & 7)) { crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xFF]; n--; }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;  /* little-endian hosts only; guarded below */
        crc = crc_tab[7][w & 0xFF] ^ crc_tab[6][(w >> 8) & 0xFF] ^ crc_tab[5][(w >> 16) & 0xFF] ^
              crc_tab[4][(w >> 24) & 0xFF] ^ crc_tab[3][(w >> 32) & 0xFF] ^ crc_tab[2][(w >> 40) & 0xFF] ^
              crc_tab[1][(w >> 48) & 0xFF] ^ crc_tab[0][w >> 56];
        p += 8; n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xFF];
    return ~crc;
}

static uint32_t crc_bytewise(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n--) crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xFF];
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) { c = _mm_crc32_u8((uint32_t)c, *p++); n--; }
    while (n >= 8) { uint64_t w; memcpy(&w, p, 8); c = _mm_crc32_u64(c, w); p += 8; n -= 8; }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#define HAVE_HW 1
#else
#define HAVE_HW 0
#endif

static uint32_t (*crc32c)(uint32_t, const uint8_t *, size_t) = crc_bytewise;

/* ---------------------------------------------------------------- growable output buffer */

typedef struct { uint8_t *b; size_t n, cap; } Buf;

static int buf_reserve(Buf *o, size_t extra) {
    if (o->n + extra <= o->cap) return 0;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->n + extra) cap *= 2;
    uint8_t *nb = PyMem_Realloc(o->b, cap);
    if (!nb) { PyErr_NoMemory(); return -1; }
    o->b = nb; o->cap = cap;
    return 0;
}
static inline void put_u8(Buf *o, uint8_t v) { o->b[o->n++] = v; }
static inline void put_be32(Buf *o, uint32_t v) {
    o->b[o->n++] = v >> 24; o->b[o->n++] = v >> 16; o->b[o->n++] = v >> 8; o->b[o->n++] = v;
}
static inline void put_uvarint(Buf *o, uint64_t v) {
    while (v >= 0x80) { o->b[o->n++] = (uint8_t)(v | 0x80); v >>= 7; }
    o->b[o->n++] = (uint8_t)v;
}
static inline void put_varint(Buf *o, int64_t v) {
    put_uvarint(o, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}
static inline size_t uvarint_len(uint64_t v) { size_t n = 1; while (v >= 0x80) { v >>= 7; n++; } return n; }

static PyObject *buf_to_bytes(Buf *o) {
    PyObject *r = PyBytes_FromStringAndSize((const char *)o->b, (Py_ssize_t)o->n);
    PyMem_Free(o->b); o->b = NULL; o->n = o->cap = 0;
    return r;
}

/* Decoding helpers: return 0 on success, -1 when running past the end. */
static inline int get_uvarint(const uint8_t *p, size_t n, size_t *i, uint64_t *out) {
    uint64_t x = 0; int shift = 0;
    while (*i < n) {
        uint8_t c = p[(*i)++];
        if (shift == 63 && c > 1) return -1;
        x |= (uint64_t)(c & 0x7F) << shift;
        if (c < 0x80) { *out = x; return 0; }
        shift += 7;
        if (shift > 63) return -1;
    }
    return -1;
}
static inline int get_varint(const uint8_t *p, size_t n, size_t *i, int64_t *out) {
    uint64_t u;
    if (get_uvarint(p, n, i, &u)) return -1;
    *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return 0;
}
static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int get_i64(PyObject *obj, Py_buffer *v, const char *what) {
    if (PyObject_GetBuffer(obj, v, PyBUF_SIMPLE) < 0) return -1;
    if (v->len % 8) {
        PyErr_Format(PyExc_ValueError, "%s: not an int64 buffer", what);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- crc32c(data, crc=0) */

static PyObject *py_crc32c(PyObject *self, PyObject *args) {
    Py_buffer v; unsigned int crc = 0;
    if (!PyArg_ParseTuple(args, "y*|I", &v, &crc)) return NULL;
    uint32_t r;
    Py_BEGIN_ALLOW_THREADS
    r = crc32c(crc, v.buf, (size_t)v.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLong(r);
}

/* ---------------------------------------------------------------- checked_postings(reads) */

/* checked_postings(reads) -> [list, ...]: the postings list at the start of each read (bytes
 * of at least its whole range: 4-byte length n, n bytes of count and refs, 4-byte CRC-32C of
 * those n bytes), exactly those n + 8 bytes, each checked: its checksum, and a length that is
 * 4 + 4 * count. ValueError for the first read that is cut short or fails a check. A store's
 * cold one-series call reads one such list per block; one call checks them all. */
static PyObject *py_checked_postings(PyObject *self, PyObject *reads) {
    if (!PyList_Check(reads)) {
        PyErr_SetString(PyExc_TypeError, "checked_postings: a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(reads);
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyList_GET_ITEM(reads, i);
        if (!PyBytes_Check(b)) {
            PyErr_SetString(PyExc_TypeError, "checked_postings: a list of bytes");
            goto fail;
        }
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(b);
        size_t len = (size_t)PyBytes_GET_SIZE(b);
        if (len < 8) goto cut;
        uint64_t ln = be32(p);
        if (ln + 8 > len) goto cut;
        if (crc32c(0, p + 4, (size_t)ln) != be32(p + 4 + ln)) {
            PyErr_SetString(PyExc_ValueError, "postings list: checksum mismatch");
            goto fail;
        }
        if (ln < 4 || ln != 4 + 4 * (uint64_t)be32(p + 4)) {
            PyErr_SetString(PyExc_ValueError, "postings list: length disagrees with count");
            goto fail;
        }
        PyObject *item;
        if (ln + 8 == len && PyBytes_CheckExact(b)) {
            Py_INCREF(b);
            item = b;
        } else {
            item = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)(ln + 8));
            if (!item) goto fail;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
cut:
    PyErr_SetString(PyExc_ValueError, "postings list longer than its range");
fail:
    Py_DECREF(out);
    return NULL;
}

/* ---------------------------------------------------------------- chunk segments */

/* pack_chunks(chunks, start, pos, limit, encoding) -> (payload, offsets_i64, n_packed, n_samples)
 * Packs chunks[start:] as segment records `uvarint(len) enc data crc32c(enc+data)` while the
 * segment stays <= limit bytes; a record always goes into a segment that holds only its header
 * (pos == 8) so an oversized chunk cannot stall the writer. n_samples sums XOR sample counts. */
static PyObject *py_pack_chunks(PyObject *self, PyObject *args) {
    PyObject *seq; Py_ssize_t start; long long pos, limit; int enc;
    if (!PyArg_ParseTuple(args, "OnLLi", &seq, &start, &pos, &limit, &enc)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "chunks must be a sequence");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    Buf out = {0}, offs = {0};
    long long nsamples = 0;
    Py_ssize_t i = start;
    for (; i < n; i++) {
        Py_buffer v;
        if (PyObject_GetBuffer(items[i], &v, PyBUF_SIMPLE) < 0) goto fail;
        size_t dl = (size_t)v.len;
        size_t rec = uvarint_len(dl) + 1 + dl + 4;
        if (pos + (long long)rec > limit && pos > 8) { PyBuffer_Release(&v); break; }
        if (buf_reserve(&out, rec) || buf_reserve(&offs, 8)) { PyBuffer_Release(&v); goto fail; }
        int64_t at = pos;
        memcpy(offs.b + offs.n, &at, 8); offs.n += 8;
        put_uvarint(&out, dl);
        uint8_t *crc_start = out.b + out.n;
        put_u8(&out, (uint8_t)enc);
        memcpy(out.b + out.n, v.buf, dl); out.n += dl;
        if (enc == 1 && dl >= 2) nsamples += ((const uint8_t *)v.buf)[0] << 8 | ((const uint8_t *)v.buf)[1];
        put_be32(&out, crc32c(0, crc_start, dl + 1));
        pos += (long long)rec;
        PyBuffer_Release(&v);
    }
    Py_DECREF(fast);
    PyObject *a = buf_to_bytes(&out), *b = buf_to_bytes(&offs);
    if (!a || !b) { Py_XDECREF(a); Py_XDECREF(b); return NULL; }
    return Py_BuildValue("(NNnL)", a, b, i - start, nsamples);
fail:
    Py_DECREF(fast);
    PyMem_Free(out.b); PyMem_Free(offs.b);
    return NULL;
}

/* read_chunk(buf, off, verify) -> (encoding, bytes): one record of a segment file. */
static PyObject *py_read_chunk(PyObject *self, PyObject *args) {
    Py_buffer v; long long off; int verify;
    if (!PyArg_ParseTuple(args, "y*Lp", &v, &off, &verify)) return NULL;
    const uint8_t *p = v.buf; size_t n = (size_t)v.len, i = (size_t)off;
    uint64_t dl;
    if (off < 0 || get_uvarint(p, n, &i, &dl) || i + 1 + dl + 4 > n) {
        PyBuffer_Release(&v);
        PyErr_Format(PyExc_ValueError, "chunk at offset %lld runs past the end of its segment", off);
        return NULL;
    }
    if (verify && crc32c(0, p + i, dl + 1) != be32(p + i + 1 + dl)) {
        PyBuffer_Release(&v);
        PyErr_Format(PyExc_ValueError, "chunk at offset %lld: checksum mismatch", off);
        return NULL;
    }
    PyObject *r = Py_BuildValue("(iy#)", p[i], (const char *)p + i + 1, (Py_ssize_t)dl);
    PyBuffer_Release(&v);
    return r;
}

/* read_chunks(records) -> (encodings, datas): many whole chunk records (uvarint len, encoding
 * byte, data, CRC32C), each checked; encodings is one byte per record, datas the data bytes.
 * One call per block instead of a Python call and a tuple per chunk (store gateway). */
static PyObject *py_read_chunks(PyObject *self, PyObject *arg) {
    PyObject *fast = PySequence_Fast(arg, "read_chunks expects a sequence of bytes");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    PyObject *encs = PyBytes_FromStringAndSize(NULL, n), *datas = PyList_New(n);
    if (!encs || !datas) goto fail;
    uint8_t *e = (uint8_t *)PyBytes_AS_STRING(encs);
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_buffer v;
        if (PyObject_GetBuffer(items[k], &v, PyBUF_SIMPLE) < 0) goto fail;
        const uint8_t *p = v.buf; size_t len = (size_t)v.len, i = 0;
        uint64_t dl;
        if (get_uvarint(p, len, &i, &dl) || dl > len || i + 1 + dl + 4 > len) {
            PyBuffer_Release(&v);
            PyErr_Format(PyExc_ValueError, "chunk record %zd runs past its end", k);
            goto fail;
        }
        if (crc32c(0, p + i, dl + 1) != be32(p + i + 1 + dl)) {
            PyBuffer_Release(&v);
            PyErr_Format(PyExc_ValueError, "chunk record %zd: checksum mismatch", k);
            goto fail;
        }
        e[k] = p[i];
        PyObject *d = PyBytes_FromStringAndSize((const char *)p + i + 1, (Py_ssize_t)dl);
        PyBuffer_Release(&v);
        if (!d) goto fail;
        PyList_SET_ITEM(datas, k, d);
    }
    Py_DECREF(fast);
    return Py_BuildValue("(NN)", encs, datas);
fail:
    Py_DECREF(fast); Py_XDECREF(encs); Py_XDECREF(datas);
    return NULL;
}

/* ---------------------------------------------------------------- index writing */

/* pack_strings(list[bytes]) -> bytes: uvarint(len) + bytes for each (symbol table body). */
static PyObject *py_pack_strings(PyObject *self, PyObject *arg) {
    PyObject *fast = PySequence_Fast(arg, "expected a sequence of bytes");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    Buf out = {0};
    for (Py_ssize_t i = 0; i < n; i++) {
        char *s; Py_ssize_t l;
        if (PyBytes_AsStringAndSize(items[i], &s, &l) < 0 || buf_reserve(&out, (size_t)l + 10)) {
            Py_DECREF(fast); PyMem_Free(out.b); return NULL;
        }
        put_uvarint(&out, (uint64_t)l);
        memcpy(out.b + out.n, s, (size_t)l); out.n += (size_t)l;
    }
    Py_DECREF(fast);
    return buf_to_bytes(&out);
}

/* series_entries(label_syms, label_counts, c_mint, c_maxt, c_ref, chunk_counts, pos)
 *   -> (bytes, series_ids_i64)
 * label_syms: i64 (name, value) symbol pairs for all series, flattened; label_counts: pairs per
 * series; chunk arrays flattened with chunk_counts per series. pos = file offset of the blob's
 * first byte (for 16-byte alignment). Each entry: padding, uvarint len, body, crc32c(body). */
static PyObject *py_series_entries(PyObject *self, PyObject *args) {
    PyObject *o[6]; long long pos;
    if (!PyArg_ParseTuple(args, "OOOOOOL", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &pos)) return NULL;
    Py_buffer b[6]; int got = 0;
    static const char *names[6] = {"label_syms", "label_counts", "c_mint", "c_maxt", "c_ref", "chunk_counts"};
    for (; got < 6; got++) if (get_i64(o[got], &b[got], names[got]) < 0) goto release;
    const int64_t *syms = b[0].buf, *lc = b[1].buf, *mint = b[2].buf, *maxt = b[3].buf, *ref = b[4].buf, *cc = b[5].buf;
    size_t nser = (size_t)b[1].len / 8, nsym = (size_t)b[0].len / 8, nchk = (size_t)b[2].len / 8;
    if ((size_t)b[5].len / 8 != nser || (size_t)b[3].len / 8 != nchk || (size_t)b[4].len / 8 != nchk) {
        PyErr_SetString(PyExc_ValueError, "series_entries: array lengths disagree");
        goto release;
    }
    Buf out = {0}, ids = {0}, body = {0};
    size_t si = 0, ci = 0;
    for (size_t s = 0; s < nser; s++) {
        size_t nl = (size_t)lc[s], nc = (size_t)cc[s];
        if (si + 2 * nl > nsym || ci + nc > nchk) {
            PyErr_SetString(PyExc_ValueError, "series_entries: counts exceed arrays");
            goto fail;
        }
        body.n = 0;
        if (buf_reserve(&body, 10 + nl * 10 + nc * 30)) goto fail;
        put_uvarint(&body, nl);
        for (size_t k = 0; k < 2 * nl; k++) put_uvarint(&body, (uint64_t)syms[si + k]);
        si += 2 * nl;
        put_uvarint(&body, nc);
        int64_t prev_maxt = 0, prev_ref = 0;
        for (size_t k = 0; k < nc; k++, ci++) {
            int64_t a = mint[ci], z = maxt[ci], r = ref[ci];
            if (z < a) { PyErr_Format(PyExc_ValueError, "chunk maxt %lld < mint %lld", (long long)z, (long long)a); goto fail; }
            if (k == 0) {
                put_varint(&body, a);
                put_uvarint(&body, (uint64_t)(z - a));
                put_uvarint(&body, (uint64_t)r);
            } else {
                if (a <= prev_maxt) {
                    PyErr_Format(PyExc_ValueError, "chunk mint %lld not after previous chunk maxt %lld", (long long)a, (long long)prev_maxt);
                    goto fail;
                }
                if (r < prev_ref) { PyErr_SetString(PyExc_ValueError, "chunk refs not increasing"); goto fail; }
                put_uvarint(&body, (uint64_t)(a - prev_maxt));
                put_uvarint(&body, (uint64_t)(z - a));
                put_varint(&body, r - prev_ref);
            }
            prev_maxt = z; prev_ref = r;
        }
        size_t pad = (size_t)((16 - (pos + (long long)out.n) % 16) % 16);
        if (buf_reserve(&out, pad + 10 + body.n + 4) || buf_reserve(&ids, 8)) goto fail;
        memset(out.b + out.n, 0, pad); out.n += pad;
        int64_t id = (pos + (long long)out.n) / 16;
        memcpy(ids.b + ids.n, &id, 8); ids.n += 8;
        put_uvarint(&out, body.n);
        memcpy(out.b + out.n, body.b, body.n); out.n += body.n;
        put_be32(&out, crc32c(0, body.b, body.n));
    }
    PyMem_Free(body.b);
    for (int k = 0; k < 6; k++) PyBuffer_Release(&b[k]);
    PyObject *x = buf_to_bytes(&out), *y = buf_to_bytes(&ids);
    if (!x || !y) { Py_XDECREF(x); Py_XDECREF(y); return NULL; }
    return Py_BuildValue("(NN)", x, y);
fail:
    PyMem_Free(out.b); PyMem_Free(ids.b); PyMem_Free(body.b);
release:
    for (int k = 0; k < got; k++) PyBuffer_Release(&b[k]);
    return NULL;
}

/* postings_lists(refs_i64, bounds_i64, pos) -> (bytes, offsets_i64)
 * List j holds refs[bounds[j]:bounds[j+1]]; each is written 4-byte aligned as
 * `len<4B> count<4B> ref<4B>* crc32c(count+refs)`; offsets are absolute file positions. */
static PyObject *py_postings_lists(PyObject *self, PyObject *args) {
    PyObject *ro, *bo; long long pos;
    if (!PyArg_ParseTuple(args, "OOL", &ro, &bo, &pos)) return NULL;
    Py_buffer rb, bb;
    if (get_i64(ro, &rb, "refs") < 0) return NULL;
    if (get_i64(bo, &bb, "bounds") < 0) { PyBuffer_Release(&rb); return NULL; }
    const int64_t *refs = rb.buf, *bounds = bb.buf;
    size_t nref = (size_t)rb.len / 8, nb = (size_t)bb.len / 8;
    Buf out = {0}, offs = {0};
    for (size_t j = 0; j + 1 < nb; j++) {
        int64_t a = bounds[j], z = bounds[j + 1];
        if (a < 0 || z < a || (size_t)z > nref) { PyErr_SetString(PyExc_ValueError, "postings bounds out of range"); goto fail; }
        size_t cnt = (size_t)(z - a);
        size_t pad = (size_t)((4 - (pos + (long long)out.n) % 4) % 4);
        if (buf_reserve(&out, pad + 12 + 4 * cnt) || buf_reserve(&offs, 8)) goto fail;
        memset(out.b + out.n, 0, pad); out.n += pad;
        int64_t at = pos + (long long)out.n;
        memcpy(offs.b + offs.n, &at, 8); offs.n += 8;
        put_be32(&out, (uint32_t)(4 + 4 * cnt));
        uint8_t *start = out.b + out.n;
        put_be32(&out, (uint32_t)cnt);
        for (size_t k = 0; k < cnt; k++) {
            int64_t r = refs[a + k];
            if (r < 0 || r > 0xFFFFFFFFll) { PyErr_SetString(PyExc_ValueError, "series ref exceeds 4 bytes"); goto fail; }
            put_be32(&out, (uint32_t)r);
        }
        put_be32(&out, crc32c(0, start, 4 + 4 * cnt));
    }
    PyBuffer_Release(&rb); PyBuffer_Release(&bb);
    PyObject *x = buf_to_bytes(&out), *y = buf_to_bytes(&offs);
    if (!x || !y) { Py_XDECREF(x); Py_XDECREF(y); return NULL; }
    return Py_BuildValue("(NN)", x, y);
fail:
    PyBuffer_Release(&rb); PyBuffer_Release(&bb);
    PyMem_Free(out.b); PyMem_Free(offs.b);
    return NULL;
}

/* offset_table_entries(symbols: list[bytes], name_ids_i64, value_ids_i64, offsets_i64) -> bytes
 * Postings offset table entries `2, len+name, len+value, uvarint offset` (no count, no CRC). */
static PyObject *py_offset_table_entries(PyObject *self, PyObject *args) {
    PyObject *symo, *o[3];
    if (!PyArg_ParseTuple(args, "OOOO", &symo, &o[0], &o[1], &o[2])) return NULL;
    PyObject *fast = PySequence_Fast(symo, "symbols must be a sequence");
    if (!fast) return NULL;
    Py_ssize_t nsym = PySequence_Fast_GET_SIZE(fast);
    PyObject **syms = PySequence_Fast_ITEMS(fast);
    Py_buffer b[3]; int got = 0;
    Buf out = {0};
    for (; got < 3; got++) if (get_i64(o[got], &b[got], "offset table arrays") < 0) goto fail;
    size_t n = (size_t)b[0].len / 8;
    if ((size_t)b[1].len / 8 != n || (size_t)b[2].len / 8 != n) { PyErr_SetString(PyExc_ValueError, "array lengths disagree"); goto fail; }
    const int64_t *ni = b[0].buf, *vi = b[1].buf, *off = b[2].buf;
    for (size_t k = 0; k < n; k++) {
        if (ni[k] < 0 || ni[k] >= nsym || vi[k] < 0 || vi[k] >= nsym) { PyErr_SetString(PyExc_IndexError, "symbol id out of range"); goto fail; }
        char *s1, *s2; Py_ssize_t l1, l2;
        if (PyBytes_AsStringAndSize(syms[ni[k]], &s1, &l1) < 0 || PyBytes_AsStringAndSize(syms[vi[k]], &s2, &l2) < 0) goto fail;
        if (buf_reserve(&out, 1 + 10 + (size_t)l1 + 10 + (size_t)l2 + 10)) goto fail;
        put_u8(&out, 2);
        put_uvarint(&out, (uint64_t)l1); memcpy(out.b + out.n, s1, (size_t)l1); out.n += (size_t)l1;
        put_uvarint(&out, (uint64_t)l2); memcpy(out.b + out.n, s2, (size_t)l2); out.n += (size_t)l2;
        put_uvarint(&out, (uint64_t)off[k]);
    }
    for (int k = 0; k < got; k++) PyBuffer_Release(&b[k]);
    Py_DECREF(fast);
    return buf_to_bytes(&out);
fail:
    for (int k = 0; k < got; k++) PyBuffer_Release(&b[k]);
    Py_DECREF(fast);
    PyMem_Free(out.b);
    return NULL;
}

/* ---------------------------------------------------------------- index reading */

/* parse_strings(buf, off, count, end) -> list[str]: `count` uvarint-prefixed UTF-8 strings
 * starting at off, none reaching past end. */
static PyObject *py_parse_strings(PyObject *self, PyObject *args) {
    Py_buffer v; long long off, end; Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*LnL", &v, &off, &count, &end)) return NULL;
    const uint8_t *p = v.buf;
    size_t n = (size_t)(end < v.len ? end : v.len), i = (size_t)off;
    PyObject *list = NULL;
    if (off < 0 || count < 0 || (size_t)off > n || (size_t)count > n - (size_t)off) {
        PyErr_SetString(PyExc_ValueError, "symbol count exceeds its section");
        goto done;
    }
    list = PyList_New(count);
    if (!list) goto done;
    for (Py_ssize_t k = 0; k < count; k++) {
        uint64_t l;
        if (get_uvarint(p, n, &i, &l) || i + l > n) {
            PyErr_SetString(PyExc_ValueError, "symbol table runs past its section");
            Py_CLEAR(list); goto done;
        }
        PyObject *s = PyUnicode_DecodeUTF8((const char *)p + i, (Py_ssize_t)l, "strict");
        if (!s) { Py_CLEAR(list); goto done; }
        PyList_SET_ITEM(list, k, s);
        i += l;
    }
done:
    PyBuffer_Release(&v);
    return list;
}

/* One canonical label key (uvarint-prefixed name, value, name, value, ...) as a tuple of
   (name, value) pairs of interned str (via `symbols`); NULL with ValueError if it is not one. */
static PyObject *label_key_pairs(const uint8_t *p, size_t n, PyObject *symbols) {
    size_t i = 0, parts = 0;
    while (i < n) {  /* count first: the tuple is allocated once */
        uint64_t l;
        if (get_uvarint(p, n, &i, &l) || l > n - i) goto bad;
        i += l;
        parts++;
    }
    if (parts % 2) goto bad;
    PyObject *out = PyTuple_New((Py_ssize_t)(parts / 2));
    if (!out) return NULL;
    i = 0;
    for (size_t k = 0; k < parts / 2; k++) {
        PyObject *pair = PyTuple_New(2);
        if (!pair) { Py_DECREF(out); return NULL; }
        PyTuple_SET_ITEM(out, (Py_ssize_t)k, pair);
        for (int j = 0; j < 2; j++) {
            uint64_t l;
            get_uvarint(p, n, &i, &l);
            PyObject *str = PyUnicode_DecodeUTF8((const char *)p + i, (Py_ssize_t)l, "strict");
            if (!str) { Py_DECREF(out); return NULL; }
            i += l;
            PyObject *sym = PyDict_SetDefault(symbols, str, str);  /* borrowed */
            Py_XINCREF(sym);
            Py_DECREF(str);
            if (!sym) { Py_DECREF(out); return NULL; }
            PyTuple_SET_ITEM(pair, j, sym);
        }
    }
    return out;
bad:
    PyErr_SetString(PyExc_ValueError, "not a canonical label key");
    return NULL;
}

/* decode_label_keys(keys, symbols, strict) -> list of label tuples. A key that does not
   decode (bad lengths, odd count, not UTF-8) raises ValueError when strict, else gives None:
   WAL replay skips such series, the write path refuses the batch before changing anything. */
static PyObject *py_decode_label_keys(PyObject *self, PyObject *args) {
    PyObject *keys, *symbols;
    int strict;
    if (!PyArg_ParseTuple(args, "O!O!p", &PyList_Type, &keys, &PyDict_Type, &symbols, &strict))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *key = PyList_GET_ITEM(keys, k);
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "label keys must be bytes");
            Py_DECREF(out);
            return NULL;
        }
        PyObject *lbls = label_key_pairs((const uint8_t *)PyBytes_AS_STRING(key),
                                         (size_t)PyBytes_GET_SIZE(key), symbols);
        if (!lbls) {
            if (strict || !PyErr_ExceptionMatches(PyExc_ValueError)) { Py_DECREF(out); return NULL; }
            PyErr_Clear();  /* UnicodeDecodeError is a ValueError too */
            lbls = Py_None;
            Py_INCREF(lbls);
        }
        PyList_SET_ITEM(out, k, lbls);
    }
    return out;
}

/* parse_offset_table(buf, off, count, end) -> (names: list[str], values: list[str], offsets_i64)
 * Consecutive equal names share one str object. */
static PyObject *py_parse_offset_table(PyObject *self, PyObject *args) {
    Py_buffer v; long long off, end; Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*LnL", &v, &off, &count, &end)) return NULL;
    const uint8_t *p = v.buf;
    size_t n = (size_t)(end < v.len ? end : v.len), i = (size_t)off;
    if (off < 0 || count < 0 || (size_t)off > n || (size_t)count > (n - (size_t)off) / 4) {
        PyBuffer_Release(&v);
        PyErr_SetString(PyExc_ValueError, "postings offset table count exceeds its section");
        return NULL;
    }
    PyObject *names = PyList_New(count), *values = PyList_New(count), *offs = NULL, *last = NULL;
    const uint8_t *last_p = NULL; uint64_t last_l = 0;
    int64_t *o = NULL;
    if (!names || !values) goto fail;
    offs = PyBytes_FromStringAndSize(NULL, count * 8);
    if (!offs) goto fail;
    o = (int64_t *)PyBytes_AS_STRING(offs);
    for (Py_ssize_t k = 0; k < count; k++) {
        uint64_t keys, l1, l2, at;
        if (get_uvarint(p, n, &i, &keys)) goto corrupt;
        if (keys != 2) { PyErr_Format(PyExc_ValueError, "postings offset table: unexpected key count %llu", (unsigned long long)keys); goto fail; }
        if (get_uvarint(p, n, &i, &l1) || i + l1 > n) goto corrupt;
        const uint8_t *np_ = p + i; i += l1;
        if (get_uvarint(p, n, &i, &l2) || i + l2 > n) goto corrupt;
        const uint8_t *vp = p + i; i += l2;
        if (get_uvarint(p, n, &i, &at)) goto corrupt;
        if (!(last && l1 == last_l && memcmp(np_, last_p, l1) == 0)) {
            PyObject *s = PyUnicode_DecodeUTF8((const char *)np_, (Py_ssize_t)l1, "strict");
            if (!s) goto fail;
            last = s; last_p = np_; last_l = l1;
        } else {
            Py_INCREF(last);
        }
        PyList_SET_ITEM(names, k, last);
        PyObject *s2 = PyUnicode_DecodeUTF8((const char *)vp, (Py_ssize_t)l2, "strict");
        if (!s2) goto fail;
        PyList_SET_ITEM(values, k, s2);
        o[k] = (int64_t)at;
    }
    PyBuffer_Release(&v);
    return Py_BuildValue("(NNN)", names, values, offs);
corrupt:
    PyErr_SetString(PyExc_ValueError, "postings offset table runs past its section");
fail:
    PyBuffer_Release(&v);
    Py_XDECREF(names); Py_XDECREF(values); Py_XDECREF(offs);
    return NULL;
}

/* decode_series(buf, off) -> (sym_ids: list[int], chunks: list[(mint, maxt, ref)])
 * Reads one v2 series entry at byte offset off and checks its CRC. */
static PyObject *py_decode_series(PyObject *self, PyObject *args) {
    Py_buffer v; long long off;
    if (!PyArg_ParseTuple(args, "y*L", &v, &off)) return NULL;
    const uint8_t *p = v.buf; size_t n = (size_t)v.len, i = (size_t)off;
    PyObject *syms = NULL, *chks = NULL;
    uint64_t blen, nl, nc;
    if (off < 0 || get_uvarint(p, n, &i, &blen) || i + blen + 4 > n) goto corrupt;
    if (crc32c(0, p + i, blen) != be32(p + i + blen)) {
        PyErr_Format(PyExc_ValueError, "series entry at offset %lld: checksum mismatch", off);
        goto fail;
    }
    n = i + blen;
    if (get_uvarint(p, n, &i, &nl) || nl > blen) goto corrupt;
    syms = PyList_New((Py_ssize_t)(2 * nl));
    if (!syms) goto fail;
    for (uint64_t k = 0; k < 2 * nl; k++) {
        uint64_t s;
        if (get_uvarint(p, n, &i, &s)) goto corrupt;
        PyObject *x = PyLong_FromUnsignedLongLong(s);
        if (!x) goto fail;
        PyList_SET_ITEM(syms, (Py_ssize_t)k, x);
    }
    if (get_uvarint(p, n, &i, &nc) || nc > blen) goto corrupt;
    chks = PyList_New((Py_ssize_t)nc);
    if (!chks) goto fail;
    int64_t t0 = 0, r0 = 0;
    for (uint64_t k = 0; k < nc; k++) {
        int64_t mint, maxt, ref;
        uint64_t d, u;
        if (k == 0) {
            if (get_varint(p, n, &i, &mint) || get_uvarint(p, n, &i, &d) || get_uvarint(p, n, &i, &u)) goto corrupt;
            maxt = mint + (int64_t)d; ref = (int64_t)u;
        } else {
            int64_t dr;
            if (get_uvarint(p, n, &i, &u) || get_uvarint(p, n, &i, &d) || get_varint(p, n, &i, &dr)) goto corrupt;
            mint = t0 + (int64_t)u; maxt = mint + (int64_t)d; ref = r0 + dr;
        }
        t0 = maxt; r0 = ref;
        PyObject *t = Py_BuildValue("(LLK)", (long long)mint, (long long)maxt, (unsigned long long)ref);
        if (!t) goto fail;
        PyList_SET_ITEM(chks, (Py_ssize_t)k, t);
    }
    PyBuffer_Release(&v);
    return Py_BuildValue("(NN)", syms, chks);
corrupt:
    PyErr_Format(PyExc_ValueError, "series entry at offset %lld is malformed", off);
fail:
    PyBuffer_Release(&v);
    Py_XDECREF(syms); Py_XDECREF(chks);
    return NULL;
}

/* ---------------------------------------------------------------- index verification */

/* Checks one series entry body: symbol ids below nsyms, chunk refs inside their segments
 * (seg_sizes[seq] bytes, data after the 8-byte segment header). Returns 0 or -1 with *why. */
static int check_series_body(const uint8_t *p, size_t n, uint64_t nsyms, const int64_t *seg,
                             size_t nseg, const char **why) {
    size_t i = 0;
    uint64_t nl, nc;
    if (get_uvarint(p, n, &i, &nl) || nl > n) { *why = "malformed labels"; return -1; }
    for (uint64_t k = 0; k < 2 * nl; k++) {
        uint64_t sym;
        if (get_uvarint(p, n, &i, &sym)) { *why = "malformed labels"; return -1; }
        if (sym >= nsyms) { *why = "unknown symbol"; return -1; }
    }
    if (get_uvarint(p, n, &i, &nc) || nc > n) { *why = "malformed chunk list"; return -1; }
    int64_t ref = 0;
    for (uint64_t k = 0; k < nc; k++) {
        uint64_t u, d; int64_t x;
        if (k == 0) {
            if (get_varint(p, n, &i, &x) || get_uvarint(p, n, &i, &d) || get_uvarint(p, n, &i, &u)) {
                *why = "malformed chunk list"; return -1;
            }
            ref = (int64_t)u;
        } else {
            if (get_uvarint(p, n, &i, &u) || get_uvarint(p, n, &i, &d) || get_varint(p, n, &i, &x)) {
                *why = "malformed chunk list"; return -1;
            }
            ref += x;
        }
        uint64_t sq = (uint64_t)ref >> 32, off = (uint64_t)ref & 0xFFFFFFFFu;
        if (ref < 0 || sq >= nseg || off < 8 || (int64_t)off >= seg[sq]) {
            *why = "chunk ref outside its segment"; return -1;
        }
    }
    if (i != n) { *why = "trailing bytes"; return -1; }
    return 0;
}

/* verify_items(buf, base, kind, section_end, seg_sizes, nsyms, series_lo, series_hi) -> consumed
 * Walks the items of one index section held (in part) in buf, which starts at file offset
 * base; the section ends at file offset section_end. kind 0: series entries (16-byte aligned,
 * uvarint length); 1: postings lists (4-byte aligned, refs must point into [series_lo,
 * series_hi)); 2: other 4-byte aligned length-prefixed entries (label indices). Every item's
 * CRC32C is checked. Returns the bytes consumed: the start of the first item not wholly in buf
 * (all of buf once it reaches the section end, where only zero padding may follow the last
 * item). Raises ValueError on corruption. */
#define MAX_ZERO_RUN (1 << 20)  /* padding is a few bytes; a longer run of zeros is damage */
#define WALK_ERR ((size_t)-1)

typedef struct {
    long long base, send, slo, shi;  /* file offsets: buf start, section end, series section */
    int kind;
    const int64_t *seg;
    size_t nseg;
    uint64_t nsyms;
    const char *why;                 /* set on error, with at */
    long long at;
} Walk;

/* The loop of verify_items, free of Python calls (it runs without the GIL). */
static size_t walk_items(const uint8_t *p, size_t n, Walk *w) {
    const size_t align = w->kind == 0 ? 16 : 4;
    const int final = w->base + (long long)n >= w->send;
    const size_t left = w->send > w->base ? (size_t)(w->send - w->base) : 0;
    size_t i = 0;
    if (w->base + (long long)n > w->send) { w->at = w->base; w->why = "buffer runs past the section end"; return WALK_ERR; }
    for (;;) {
        const size_t start = i;
        i += (align - (size_t)((w->base + (long long)i) % (long long)align)) % align;
        for (size_t k = start; k < i && k < n; k++)
            if (p[k]) { w->at = w->base + (long long)k; w->why = "non-zero padding"; return WALK_ERR; }
        w->at = w->base + (long long)(i < n ? i : start);
        size_t body = 0, blen = 0;
        int zero = i >= n;  /* nothing but padding left in buf */
        if (!zero && w->kind == 0) {
            uint64_t len;
            size_t j = i;
            if (get_uvarint(p, n, &j, &len)) {
                if (n - i >= 10 || final) { w->why = "malformed length"; return WALK_ERR; }
                return start;
            }
            zero = len == 0;
            body = j; blen = (size_t)len;
            if (!zero && len > left) { w->why = "runs past the section end"; return WALK_ERR; }
        } else if (!zero) {
            if (n - i < 4) {
                if (!final) return start;
                zero = 1;
            } else {
                blen = be32(p + i);
                body = i + 4;
                zero = blen == 0;
                if (!zero && body + blen + 4 > left) { w->why = "runs past the section end"; return WALK_ERR; }
            }
        }
        if (zero) {  /* padding: zeros up to the end of what we have */
            for (size_t k = start; k < n; k++)
                if (p[k]) { w->at = w->base + (long long)k; w->why = "malformed entry"; return WALK_ERR; }
            if (!final && n - start > MAX_ZERO_RUN) { w->why = "long run of zeros"; return WALK_ERR; }
            return final ? n : start;
        }
        if (body + blen + 4 > n) {  /* completes in a later piece, if there is one */
            if (final) { w->why = "runs past the section end"; return WALK_ERR; }
            return start;
        }
        if (crc32c(0, p + body, blen) != be32(p + body + blen)) { w->why = "checksum mismatch"; return WALK_ERR; }
        if (w->kind == 0) {
            if (check_series_body(p + body, blen, w->nsyms, w->seg, w->nseg, &w->why)) return WALK_ERR;
        } else if (w->kind == 1) {
            uint32_t count = blen >= 4 ? be32(p + body) : 0;
            if (blen != 4 + 4 * (size_t)count) { w->why = "postings length disagrees with count"; return WALK_ERR; }
            for (uint32_t k = 0; k < count; k++) {
                long long r = (long long)be32(p + body + 4 + 4 * (size_t)k) * 16;
                if (r < w->slo || r >= w->shi) { w->why = "postings ref outside the series section"; return WALK_ERR; }
            }
        }
        i = body + blen + 4;
    }
}

static PyObject *py_verify_items(PyObject *self, PyObject *args) {
    Py_buffer v, sz;
    PyObject *szobj;
    long long nsyms;
    Walk w = {0};
    if (!PyArg_ParseTuple(args, "y*LiLOLLL", &v, &w.base, &w.kind, &w.send, &szobj, &nsyms,
                          &w.slo, &w.shi))
        return NULL;
    if (get_i64(szobj, &sz, "seg_sizes") < 0) { PyBuffer_Release(&v); return NULL; }
    w.seg = sz.buf;
    w.nseg = (size_t)sz.len / 8;
    w.nsyms = nsyms < 0 ? 0 : (uint64_t)nsyms;
    size_t got;
    Py_BEGIN_ALLOW_THREADS
    got = walk_items(v.buf, (size_t)v.len, &w);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&v);
    PyBuffer_Release(&sz);
    if (got == WALK_ERR) {
        PyErr_Format(PyExc_ValueError, "index item at offset %lld: %s", w.at, w.why);
        return NULL;
    }
    return PyLong_FromSize_t(got);
}

/* ---------------------------------------------------------------- module */


/* decode_series_batch(raws) -> (label_counts, sym_ids, chunk_counts, c_mint, c_maxt, c_ref)
 * Decodes many v2 series entries (each raw starts at its uvarint length; CRC checked) in one
 * call, into flat arrays (bytes of native int64) instead of per-series lists and per-chunk
 * tuples: label_counts[i] pairs of sym_ids per series, chunk_counts[i] chunks per series. */
static PyObject *py_decode_series_batch(PyObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "raws must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t ns = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Buf lc = {0}, sy = {0}, cc = {0}, mi = {0}, ma = {0}, rf = {0};
    PyObject *res = NULL;
    Py_ssize_t bad = -1;
    if (buf_reserve(&lc, ns * 8 + 8) || buf_reserve(&cc, ns * 8 + 8)) goto fail;
    for (Py_ssize_t s = 0; s < ns; s++) {
        Py_buffer v;
        if (PyObject_GetBuffer(items[s], &v, PyBUF_SIMPLE)) goto fail;
        const uint8_t *p = v.buf; size_t n = (size_t)v.len, i = 0;
        uint64_t blen, nl, nc;
        int ok = !get_uvarint(p, n, &i, &blen) && blen <= n - i && n - i - blen >= 4
                 && crc32c(0, p + i, blen) == be32(p + i + blen);
        if (ok) {
            n = i + blen;
            ok = !get_uvarint(p, n, &i, &nl) && nl <= blen && !buf_reserve(&sy, 16 * nl);
        }
        for (uint64_t k = 0; ok && k < 2 * nl; k++) {
            uint64_t x;
            ok = !get_uvarint(p, n, &i, &x);
            if (ok) { int64_t y = (int64_t)x; memcpy(sy.b + sy.n, &y, 8); sy.n += 8; }
        }
        if (ok) ok = !get_uvarint(p, n, &i, &nc) && nc <= blen;
        if (ok && (buf_reserve(&mi, 8 * nc) || buf_reserve(&ma, 8 * nc) || buf_reserve(&rf, 8 * nc))) {
            PyBuffer_Release(&v); goto fail;
        }
        int64_t t0 = 0, r0 = 0;
        for (uint64_t k = 0; ok && k < nc; k++) {
            int64_t mint, maxt, ref;
            uint64_t d, u;
            if (k == 0) {
                ok = !get_varint(p, n, &i, &mint) && !get_uvarint(p, n, &i, &d) && !get_uvarint(p, n, &i, &u);
                maxt = mint + (int64_t)d; ref = (int64_t)u;
            } else {
                int64_t dr;
                ok = !get_uvarint(p, n, &i, &u) && !get_uvarint(p, n, &i, &d) && !get_varint(p, n, &i, &dr);
                mint = t0 + (int64_t)u; maxt = mint + (int64_t)d; ref = r0 + dr;
            }
            t0 = maxt; r0 = ref;
            memcpy(mi.b + mi.n, &mint, 8); mi.n += 8;
            memcpy(ma.b + ma.n, &maxt, 8); ma.n += 8;
            memcpy(rf.b + rf.n, &ref, 8); rf.n += 8;
        }
        PyBuffer_Release(&v);
        if (!ok) { bad = s; break; }
        int64_t a = (int64_t)nl, c = (int64_t)nc;
        memcpy(lc.b + lc.n, &a, 8); lc.n += 8;
        memcpy(cc.b + cc.n, &c, 8); cc.n += 8;
    }
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "series entry %zd of the batch is malformed or fails its checksum", bad);
        goto fail;
    }
    res = Py_BuildValue("(NNNNNN)", buf_to_bytes(&lc), buf_to_bytes(&sy), buf_to_bytes(&cc),
                        buf_to_bytes(&mi), buf_to_bytes(&ma), buf_to_bytes(&rf));
fail:
    PyMem_Free(lc.b); PyMem_Free(sy.b); PyMem_Free(cc.b);
    PyMem_Free(mi.b); PyMem_Free(ma.b); PyMem_Free(rf.b);
    Py_DECREF(seq);
    return res;
}

/* ---- head postings (receiver/tsdb/postings.py) ------------------------------------------ */

/* Put `ref` into the sorted int64 list `lst` (a bytearray). Appending is the normal case
   (refs grow); an older ref is inserted in place, a present one is left alone. A list that a
   query still views (exported buffer, so it cannot be resized) is copied: the new list is
   returned (new reference) and the query keeps the old one. NULL on error. */
static PyObject *posting_put(PyObject *lst, int64_t ref) {
    Py_ssize_t n = PyByteArray_GET_SIZE(lst) / 8, at = n;
    const int64_t *d = (const int64_t *)PyByteArray_AS_STRING(lst);
    if (n && d[n - 1] >= ref) {
        Py_ssize_t lo = 0, hi = n;  /* first index with d[i] >= ref */
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (d[mid] < ref) lo = mid + 1; else hi = mid;
        }
        if (d[lo] == ref) { Py_INCREF(lst); return lst; }
        at = lo;
    }
    PyObject *out = lst;
    Py_INCREF(out);
    if (PyByteArray_Resize(out, (n + 1) * 8) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_BufferError)) { Py_DECREF(out); return NULL; }
        PyErr_Clear();
        Py_DECREF(out);
        out = PyByteArray_FromStringAndSize(NULL, (n + 1) * 8);
        if (!out) return NULL;
        memcpy(PyByteArray_AS_STRING(out), PyByteArray_AS_STRING(lst), (size_t)n * 8);
    }
    int64_t *w = (int64_t *)PyByteArray_AS_STRING(out);
    memmove(w + at + 1, w + at, (size_t)(n - at) * 8);
    w[at] = ref;
    return out;
}

/* posting_put on values[key] (creating the list); 0 ok, -1 error. */
static int posting_put_in(PyObject *values, PyObject *key, int64_t ref) {
    PyObject *lst = PyDict_GetItemWithError(values, key);  /* borrowed */
    if (!lst) {
        if (PyErr_Occurred()) return -1;
        lst = PyByteArray_FromStringAndSize((const char *)&ref, 8);
        if (!lst) return -1;
        int rc = PyDict_SetItem(values, key, lst);
        Py_DECREF(lst);
        return rc;
    }
    if (!PyByteArray_Check(lst)) { PyErr_SetString(PyExc_TypeError, "postings lists must be bytearray"); return -1; }
    PyObject *got = posting_put(lst, ref);
    if (!got) return -1;
    int rc = got == lst ? 0 : PyDict_SetItem(values, key, got);
    Py_DECREF(got);
    return rc;
}

/* postings_add(index, all, refs, label_sets) -> all: index series `refs` (int64 buffer) under
   each (name, value) of their label set (None = skip) in index[name][value], and in `all`.
   Returns `all` or its copy if a query holds a view of it. */
static PyObject *py_postings_add(PyObject *self, PyObject *args) {
    PyObject *index, *all, *sets;
    Py_buffer rb;
    if (!PyArg_ParseTuple(args, "O!O!y*O!", &PyDict_Type, &index, &PyByteArray_Type, &all, &rb,
                          &PyList_Type, &sets))
        return NULL;
    Py_ssize_t n = rb.len / 8;
    const int64_t *refs = (const int64_t *)rb.buf;
    PyObject *holder = PyDict_New();  /* "all" kept under a key so posting_put_in can swap it */
    PyObject *key = PyUnicode_FromString("");
    if (!holder || !key || PyDict_SetItem(holder, key, all) < 0) goto fail;
    if (rb.len % 8 || PyList_GET_SIZE(sets) != n) {
        PyErr_SetString(PyExc_ValueError, "postings_add: refs and label sets differ in length");
        goto fail;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *lbls = PyList_GET_ITEM(sets, k);
        if (lbls == Py_None) continue;
        if (!PyTuple_Check(lbls)) { PyErr_SetString(PyExc_TypeError, "label sets must be tuples"); goto fail; }
        if (posting_put_in(holder, key, refs[k]) < 0) goto fail;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(lbls); j++) {
            PyObject *pair = PyTuple_GET_ITEM(lbls, j);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_TypeError, "labels must be (name, value) pairs");
                goto fail;
            }
            PyObject *name = PyTuple_GET_ITEM(pair, 0);
            PyObject *values = PyDict_GetItemWithError(index, name);  /* borrowed */
            if (!values) {
                if (PyErr_Occurred()) goto fail;
                values = PyDict_New();
                if (!values) goto fail;
                int rc = PyDict_SetItem(index, name, values);
                Py_DECREF(values);
                if (rc < 0) goto fail;
            }
            if (posting_put_in(values, PyTuple_GET_ITEM(pair, 1), refs[k]) < 0) goto fail;
        }
    }
    PyObject *out = PyDict_GetItem(holder, key);
    Py_INCREF(out);
    Py_DECREF(holder); Py_DECREF(key);
    PyBuffer_Release(&rb);
    return out;
fail:
    Py_XDECREF(holder); Py_XDECREF(key);
    PyBuffer_Release(&rb);
    return NULL;
}


/* with_external_labels(items, ext) -> [(labels with ext merged in, chunks)] for a list of
 * (labels, chunks) whose labels are name-sorted tuples of (str, str); ext a name-sorted
 * tuple of (str, str) pairs that replace series labels of the same name (a store's answer
 * carries its external labels). None when some labels are not name-sorted str pairs: the
 * caller then merges in Python. One call per query instead of a sort per series. */
static int str_pair(PyObject *p) {
    return PyTuple_CheckExact(p) && PyTuple_GET_SIZE(p) == 2 && PyUnicode_CheckExact(PyTuple_GET_ITEM(p, 0))
           && PyUnicode_CheckExact(PyTuple_GET_ITEM(p, 1));
}

static PyObject *py_with_external_labels(PyObject *self, PyObject *args) {
    PyObject *items, *ext;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &items, &PyTuple_Type, &ext)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items), m = PyTuple_GET_SIZE(ext);
    for (Py_ssize_t j = 0; j < m; j++)
        if (!str_pair(PyTuple_GET_ITEM(ext, j))
            || (j && PyUnicode_Compare(PyTuple_GET_ITEM(PyTuple_GET_ITEM(ext, j - 1), 0),
                                       PyTuple_GET_ITEM(PyTuple_GET_ITEM(ext, j), 0)) >= 0))
            Py_RETURN_NONE;
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyList_GET_ITEM(items, k);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2 || !PyTuple_CheckExact(PyTuple_GET_ITEM(item, 0)))
            goto not_plain;
        PyObject *lbls = PyTuple_GET_ITEM(item, 0);
        Py_ssize_t nl = PyTuple_GET_SIZE(lbls), kept = 0;
        for (Py_ssize_t i = 0; i < nl; i++) {
            PyObject *pr = PyTuple_GET_ITEM(lbls, i);
            if (!str_pair(pr)) goto not_plain;
            PyObject *name = PyTuple_GET_ITEM(pr, 0);
            if (i && PyUnicode_Compare(PyTuple_GET_ITEM(PyTuple_GET_ITEM(lbls, i - 1), 0), name) >= 0)
                goto not_plain;
            int dup = 0;
            for (Py_ssize_t j = 0; j < m && !dup; j++)
                dup = PyUnicode_Compare(PyTuple_GET_ITEM(PyTuple_GET_ITEM(ext, j), 0), name) == 0;
            kept += !dup;
        }
        if (PyErr_Occurred()) { Py_DECREF(out); return NULL; }
        PyObject *merged = PyTuple_New(kept + m);
        if (!merged) { Py_DECREF(out); return NULL; }
        Py_ssize_t i = 0, j = 0, o = 0;
        while (i < nl || j < m) {
            PyObject *pr = i < nl ? PyTuple_GET_ITEM(lbls, i) : NULL;
            PyObject *e = j < m ? PyTuple_GET_ITEM(ext, j) : NULL;
            int c = !pr ? 1 : !e ? -1 : PyUnicode_Compare(PyTuple_GET_ITEM(pr, 0), PyTuple_GET_ITEM(e, 0));
            if (c == 0) { i++; continue; }  /* replaced by the external label */
            PyObject *take = c < 0 ? pr : e;
            if (c < 0) i++; else j++;
            Py_INCREF(take);
            PyTuple_SET_ITEM(merged, o++, take);
        }
        PyObject *pair = PyTuple_Pack(2, merged, PyTuple_GET_ITEM(item, 1));
        Py_DECREF(merged);
        if (!pair) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, k, pair);
    }
    return out;
not_plain:
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"with_external_labels", py_with_external_labels, METH_VARARGS,
     "with_external_labels(items, ext) -> [(merged labels, chunks)] or None (see above)."},
    {"crc32c", py_crc32c, METH_VARARGS, "crc32c(data, crc=0) -> int: CRC-32C (Castagnoli), chainable."},
    {"checked_postings", py_checked_postings, METH_O, "Postings lists at the start of reads, checked."},
    {"pack_chunks", py_pack_chunks, METH_VARARGS, "Pack chunks into segment records until the segment limit."},
    {"read_chunk", py_read_chunk, METH_VARARGS, "read_chunk(buf, off, verify) -> (encoding, data)."},
    {"read_chunks", py_read_chunks, METH_O, "read_chunks(records) -> (encodings, datas), CRCs checked."},
    {"pack_strings", py_pack_strings, METH_O, "uvarint-length-prefixed concatenation of byte strings."},
    {"series_entries", py_series_entries, METH_VARARGS, "Encode 16-byte aligned index series entries."},
    {"postings_lists", py_postings_lists, METH_VARARGS, "Encode postings lists with CRCs."},
    {"offset_table_entries", py_offset_table_entries, METH_VARARGS, "Encode postings offset table entries."},
    {"parse_strings", py_parse_strings, METH_VARARGS, "Decode uvarint-prefixed UTF-8 strings."},
    {"parse_offset_table", py_parse_offset_table, METH_VARARGS, "Decode postings offset table entries."},
    {"postings_add", py_postings_add, METH_VARARGS,
     "postings_add(index, all, refs, label_sets) -> all: add series to head postings (sorted bytearrays)."},
    {"decode_label_keys", py_decode_label_keys, METH_VARARGS,
     "decode_label_keys(keys, symbols, strict) -> [label tuple or None]: canonical keys, interned."},
    {"decode_series", py_decode_series, METH_VARARGS, "Decode one v2 series entry (CRC checked)."},
    {"decode_series_batch", py_decode_series_batch, METH_O, "Decode many v2 series entries into flat arrays."},
    {"verify_items", py_verify_items, METH_VARARGS, "Check every item of an index section piece; bytes consumed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_blockio", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__blockio(void) {
    crc_init();
#if HAVE_HW
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) crc32c = crc_hw;
    else
#endif
    {
        const uint16_t one = 1;
        crc32c = (*(const uint8_t *)&one == 1) ? crc_sw : crc_bytewise;
    }
    return PyModule_Create(&moduledef);
}
