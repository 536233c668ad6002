/* The querier's usual request read in C: a complete GET as the fast HTTP front reads it
 * (querier/fasthttp.py's parse_request), and a range query's usual parameters (querier/api.py).
 *
 * Why C: reading a GET request head, its header lines and its query string in Python (a regex,
 * a dict of lower-cased names, yarl's query_to_pairs, a list per parameter, a dataclass), then
 * its start, end and step, was about a sixth of the querier's Python lines on a one-series
 * query. This reads the same bytes the same way and builds the same values; whatever it does
 * not fully handle (a POST, an incomplete or unusual head, an escape that is not %XX, a query
 * string that does not decode as UTF-8, a parameter that is not a plain number, anything the
 * Python reading would refuse) it leaves to the Python reading by returning NotImplemented,
 * so there is one meaning of each: the Python reading's. Only the CPython C API is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <strings.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_HEAD 8190  /* fasthttp.MAX_HEAD: the head must end within MAX_HEAD + 4 bytes */
#define MAX_FIELDS 100 /* more header lines than this: left to the Python parser */

/* fasthttp._HEAD's target characters: URI characters, no '#' and no quotes. */
static int uri_char(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c != 0 && strchr("-._~:/?[]@!$&'()*+,;=%", c) != NULL;
}

/* An HTTP token character (fasthttp._TCHAR). */
static int tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One query string component decoded as yarl's UNQUOTER_PLUS decodes valid input: '+' is a
 * space, %XX a byte, the bytes UTF-8. NULL without an error set when the component is not
 * of that kind (the Python parser then reads the whole request). */
static PyObject *unquote(const unsigned char *s, Py_ssize_t n, char *tmp) {
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '+') {
            tmp[k++] = ' ';
        } else if (c == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (i + 2 >= n) hi = lo = -1;
            if (hi < 0 || lo < 0) return NULL;
            tmp[k++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            tmp[k++] = (char)c;
        }
    }
    PyObject *out = PyUnicode_DecodeUTF8(tmp, k, "strict");
    if (out == NULL) PyErr_Clear();
    return out;
}

/* The query string's parameters, {name: [values]}, or NULL (no error set: not handled;
 * error set: out of memory). */
static PyObject *query_params(const unsigned char *q, Py_ssize_t n) {
    PyObject *params = PyDict_New();
    if (params == NULL) return NULL;
    char *tmp = PyMem_Malloc(n > 0 ? (size_t)n : 1);
    if (tmp == NULL) { Py_DECREF(params); return PyErr_NoMemory(); }
    Py_ssize_t at = 0;
    while (at <= n && n > 0) {
        const unsigned char *amp = memchr(q + at, '&', (size_t)(n - at));
        Py_ssize_t end = amp ? (Py_ssize_t)(amp - q) : n;
        if (end > at) {
            const unsigned char *eq = memchr(q + at, '=', (size_t)(end - at));
            Py_ssize_t name_end = eq ? (Py_ssize_t)(eq - q) : end;
            Py_ssize_t value_at = eq ? name_end + 1 : end;
            PyObject *name = unquote(q + at, name_end - at, tmp);
            PyObject *value = name ? unquote(q + value_at, end - value_at, tmp) : NULL;
            if (value == NULL) {
                Py_XDECREF(name);
                goto fail;
            }
            PyObject *list = PyDict_GetItemWithError(params, name);
            int bad;
            if (list != NULL) {
                bad = PyList_Append(list, value);
            } else if (PyErr_Occurred()) {
                bad = -1;
            } else {
                list = PyList_New(1);
                if (list == NULL) {
                    bad = -1;
                } else {
                    Py_INCREF(value);
                    PyList_SET_ITEM(list, 0, value);
                    bad = PyDict_SetItem(params, name, list);
                    Py_DECREF(list);
                }
            }
            Py_DECREF(name);
            Py_DECREF(value);
            if (bad) goto fail;
        }
        at = end + 1;
    }
    PyMem_Free(tmp);
    return params;
fail:
    PyMem_Free(tmp);
    Py_DECREF(params);
    return NULL;
}

static const char *HANDED_OFF[] = {"transfer-encoding", "expect", "upgrade", "origin", "te",
                                   "http2-settings", "content-length", NULL};

/* Whether the lower-cased header name is one that takes the request from this parser (a
 * GET with a Content-Length is not answered by the fast front either). */
static int handed_off(const char *name, Py_ssize_t n) {
    for (const char **h = HANDED_OFF; *h; h++)
        if ((Py_ssize_t)strlen(*h) == n && memcmp(*h, name, (size_t)n) == 0) return 1;
    return 0;
}

static PyObject *s_route, *s_params, *s_headers, *s_close, *s_size;

/* parse_get(buf, routes, request_type, headers_type) -> request_type instance | NotImplemented */
static PyObject *py_parse_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyDict_Check(args[1]) || !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "parse_get(buf: bytes, routes: dict, request_type, headers_type)");
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t lim = PyBytes_GET_SIZE(args[0]);
    if (lim > MAX_HEAD + 4) lim = MAX_HEAD + 4;
    if (lim < 4 || memcmp(b, "GET ", 4) != 0) Py_RETURN_NOTIMPLEMENTED;
    Py_ssize_t p = 4, target = 4;
    while (p < lim && uri_char(b[p])) p++;
    Py_ssize_t target_end = p;
    if (target_end == target || lim - p < 11 || memcmp(b + p, " HTTP/1.1\r\n", 11) != 0)
        Py_RETURN_NOTIMPLEMENTED;
    p += 11;
    /* header lines: name, value start and end (surrounding spaces left out) */
    Py_ssize_t fields[MAX_FIELDS][4];
    int nf = 0;
    for (;;) {
        if (lim - p >= 2 && b[p] == '\r' && b[p + 1] == '\n') { p += 2; break; }
        if (nf == MAX_FIELDS) Py_RETURN_NOTIMPLEMENTED;
        Py_ssize_t name = p;
        while (p < lim && tchar(b[p])) p++;
        if (p == name || p >= lim || b[p] != ':') Py_RETURN_NOTIMPLEMENTED;
        Py_ssize_t name_end = p++;
        while (p < lim && b[p] >= 0x20 && b[p] <= 0x7e) p++;
        if (lim - p < 2 || b[p] != '\r' || b[p + 1] != '\n') Py_RETURN_NOTIMPLEMENTED;
        Py_ssize_t v = name_end + 1, ve = p;
        while (v < ve && b[v] == ' ') v++;
        while (ve > v && b[ve - 1] == ' ') ve--;
        fields[nf][0] = name; fields[nf][1] = name_end; fields[nf][2] = v; fields[nf][3] = ve;
        nf++;
        p += 2;
    }
    Py_ssize_t size = p;
    const unsigned char *qmark = memchr(b + target, '?', (size_t)(target_end - target));
    Py_ssize_t path_end = qmark ? (Py_ssize_t)(qmark - b) : target_end;
    PyObject *path = PyUnicode_DecodeASCII((const char *)b + target, path_end - target, "strict");
    if (path == NULL) return NULL;
    PyObject *route = PyDict_GetItemWithError(args[1], path);
    Py_DECREF(path);
    if (route == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *hd = PyDict_New(), *params = NULL, *headers = NULL, *req = NULL;
    if (hd == NULL) return NULL;
    int close = 0, host = 0;
    for (int i = 0; i < nf; i++) {
        /* a name lies within the first MAX_HEAD + 4 bytes, after at least "GET / HTTP/1.1\r\n"
         * (16 bytes) and before its ':': shorter than MAX_HEAD - 12 */
        char lower[MAX_HEAD];
        Py_ssize_t ln = fields[i][1] - fields[i][0];
        for (Py_ssize_t j = 0; j < ln; j++) {
            unsigned char c = b[fields[i][0] + j];
            lower[j] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        if (handed_off(lower, ln)) goto not_handled;
        PyObject *name = PyUnicode_DecodeASCII(lower, ln, "strict");
        PyObject *value = name ? PyUnicode_DecodeASCII((const char *)b + fields[i][2],
                                                       fields[i][3] - fields[i][2], "strict") : NULL;
        if (value == NULL) { Py_XDECREF(name); goto error; }
        int seen = PyDict_Contains(hd, name);
        int bad = seen != 0 || PyDict_SetItem(hd, name, value) < 0;
        if (seen == 0 && !bad) {
            if (ln == 4 && memcmp(lower, "host", 4) == 0) host = 1;
            if (ln == 10 && memcmp(lower, "connection", 10) == 0) {
                Py_ssize_t vn = fields[i][3] - fields[i][2];
                const unsigned char *vv = b + fields[i][2];
                if (vn == 5 && strncasecmp((const char *)vv, "close", 5) == 0) close = 1;
                else if (!(vn == 10 && strncasecmp((const char *)vv, "keep-alive", 10) == 0)) bad = 1;
            }
        }
        Py_DECREF(name);
        Py_DECREF(value);
        if (seen < 0 || PyErr_Occurred()) goto error;
        if (bad) goto not_handled;  /* a repeated name, or a Connection other than these two */
    }
    if (!host) goto not_handled;
    if (qmark != NULL) {
        params = query_params(qmark + 1, target_end - (path_end + 1));
        if (params == NULL) {
            if (PyErr_Occurred()) goto error;
            goto not_handled;
        }
    } else {
        params = PyDict_New();
        if (params == NULL) goto error;
    }
    headers = PyObject_CallOneArg(args[3], hd);
    if (headers == NULL) goto error;
    PyTypeObject *tp = (PyTypeObject *)args[2];
    req = tp->tp_alloc(tp, 0);
    if (req == NULL) goto error;
    PyObject *size_obj = PyLong_FromSsize_t(size);
    if (size_obj == NULL
        || PyObject_SetAttr(req, s_route, route) < 0
        || PyObject_SetAttr(req, s_params, params) < 0
        || PyObject_SetAttr(req, s_headers, headers) < 0
        || PyObject_SetAttr(req, s_close, close ? Py_True : Py_False) < 0
        || PyObject_SetAttr(req, s_size, size_obj) < 0) {
        Py_XDECREF(size_obj);
        Py_CLEAR(req);
        goto error;
    }
    Py_DECREF(size_obj);
    Py_DECREF(hd);
    Py_DECREF(params);
    Py_DECREF(headers);
    return req;
not_handled:
    Py_DECREF(hd);
    Py_XDECREF(params);
    Py_RETURN_NOTIMPLEMENTED;
error:
    Py_DECREF(hd);
    Py_XDECREF(params);
    Py_XDECREF(headers);
    return NULL;
}

#define MAX_POINTS 11000  /* api.MAX_POINTS */

/* The first value of parameter `name` of p, borrowed; NULL when absent or an empty list. */
static PyObject *first(PyObject *p, PyObject *name) {
    PyObject *v = PyDict_GetItemWithError(p, name);
    if (v == NULL || !PyList_Check(v) || PyList_GET_SIZE(v) == 0) return NULL;
    v = PyList_GET_ITEM(v, 0);
    return PyUnicode_Check(v) ? v : NULL;
}

/* A plain decimal, [-]digits[.digits], of at most 20 significant characters, as a double
 * (strtod: correctly rounded, as Python's float()); 0 when it is not one. */
static int plain_decimal(PyObject *s, double *out) {
    Py_ssize_t n;
    const char *c = PyUnicode_AsUTF8AndSize(s, &n);
    if (c == NULL) { PyErr_Clear(); return 0; }
    if (n == 0 || n > 21) return 0;
    Py_ssize_t i = c[0] == '-', digits = 0, dot = 0;
    for (; i < n; i++) {
        if (c[i] >= '0' && c[i] <= '9') digits++;
        else if (c[i] == '.' && !dot && digits) dot = 1;
        else return 0;
    }
    if (!digits || c[n - 1] == '.') return 0;
    char buf[32];
    memcpy(buf, c, (size_t)n);
    buf[n] = 0;
    *out = strtod(buf, NULL);
    return 1;
}

/* params.parse_time of plain float seconds: whole seconds, and the rest rounded to ms half to
 * even (Python's round). Only for |seconds| <= 1e13, where no step below overflows. */
static int time_ms(PyObject *s, int64_t *ms) {
    double f;
    if (s == NULL || !plain_decimal(s, &f) || fabs(f) > 1e13) return 0;
    double sec = trunc(f);
    *ms = (int64_t)sec * 1000 + (int64_t)nearbyint((f - sec) * 1000);
    return 1;
}

static PyObject *s_limit, *s_start, *s_end, *s_step, *s_query;

/* range_args(p) -> (start_ms, end_ms, step_ns, query, limit) | NotImplemented:
 * /api/v1/query_range's start, end, step (plain seconds), query (not empty) and limit (absent
 * or empty: 0) as api.read_range_args reads them, when every check there passes. */
static PyObject *py_range_args(PyObject *self, PyObject *p) {
    if (!PyDict_Check(p)) {
        PyErr_SetString(PyExc_TypeError, "range_args(p: dict)");
        return NULL;
    }
    PyObject *limit = first(p, s_limit);
    if (PyErr_Occurred()) return NULL;
    if (limit != NULL && PyUnicode_GET_LENGTH(limit) != 0) Py_RETURN_NOTIMPLEMENTED;
    int64_t start, end;
    double step;
    PyObject *step_s = first(p, s_step), *query;
    if (!time_ms(first(p, s_start), &start) || !time_ms(first(p, s_end), &end) || end < start
        || step_s == NULL || !plain_decimal(step_s, &step) || !(step > 0) || step > 1e9
        || (query = first(p, s_query)) == NULL || PyUnicode_GET_LENGTH(query) == 0) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    int64_t step_ns = (int64_t)(step * 1e9);  /* int(): toward zero */
    if (step_ns <= 0 || (__int128)(end - start) * 1000000 / step_ns > MAX_POINTS)
        Py_RETURN_NOTIMPLEMENTED;
    return Py_BuildValue("(LLLOi)", (long long)start, (long long)end, (long long)step_ns, query, 0);
}

/* --- plain selectors (the grammar test_query_parsecache states as regexes) --- */

static int is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int is_alpha_(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z' ? 1 : c == '_'; }
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
/* A label value character needing no unescaping: printable ASCII but '"' and '\\'. */
static int is_value_char(unsigned char c) { return c >= ' ' && c <= '~' && c != '"' && c != '\\'; }

static const unsigned char *skip_blanks(const unsigned char *p, const unsigned char *end) {
    while (p < end && is_blank(*p)) p++;
    return p;
}

/* simple_selector_parts(query: str) -> (name, [(label, op, value), ...]) | None: the groups
 * test_query_parsecache's grammar (_SIMPLE, _ONE_MATCHER) gives of a plain selector's text
 * (name, then optionally {label op "value", ...} with = != =~ !~, blanks between tokens, a
 * trailing comma allowed, values of printable ASCII without '"' or '\\'); None where the
 * regex would not match. ASCII only: any other character is not a plain selector. */
static PyObject *py_simple_selector_parts(PyObject *self, PyObject *q) {
    if (!PyUnicode_Check(q)) {
        PyErr_SetString(PyExc_TypeError, "simple_selector_parts(query: str)");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(q)) Py_RETURN_NONE;
    const unsigned char *s = PyUnicode_1BYTE_DATA(q), *end = s + PyUnicode_GET_LENGTH(q), *p = s;
    if (p >= end || !(is_alpha_(*p) || *p == ':')) Py_RETURN_NONE;
    while (p < end && (is_alpha_(*p) || is_digit(*p) || *p == ':')) p++;
    PyObject *name = PyUnicode_FromStringAndSize((const char *)s, p - s);
    PyObject *ms = name ? PyList_New(0) : NULL;
    if (ms == NULL) { Py_XDECREF(name); return NULL; }
    if (p == end) goto ok;
    p = skip_blanks(p, end);
    if (p >= end || *p != '{') goto none;
    p = skip_blanks(p + 1, end);
    for (;;) {
        /* label */
        if (p >= end || !is_alpha_(*p)) {
            /* only "}" (after at least one matcher and an optional comma) ends the body */
            if (PyList_GET_SIZE(ms) && p < end && *p == '}') break;
            goto none;
        }
        const unsigned char *l0 = p;
        while (p < end && (is_alpha_(*p) || is_digit(*p))) p++;
        const unsigned char *l1 = p;
        p = skip_blanks(p, end);
        const char *op;
        if (end - p >= 2 && p[0] == '!' && p[1] == '=') { op = "!="; p += 2; }
        else if (end - p >= 2 && p[0] == '=' && p[1] == '~') { op = "=~"; p += 2; }
        else if (end - p >= 2 && p[0] == '!' && p[1] == '~') { op = "!~"; p += 2; }
        else if (p < end && p[0] == '=') { op = "="; p += 1; }
        else goto none;
        p = skip_blanks(p, end);
        if (p >= end || *p != '"') goto none;
        const unsigned char *v0 = ++p;
        while (p < end && is_value_char(*p)) p++;
        if (p >= end || *p != '"') goto none;
        PyObject *m = Py_BuildValue("(s#ss#)", (const char *)l0, (Py_ssize_t)(l1 - l0), op,
                                    (const char *)v0, (Py_ssize_t)(p - v0));
        if (m == NULL || PyList_Append(ms, m) < 0) { Py_XDECREF(m); goto fail; }
        Py_DECREF(m);
        p = skip_blanks(p + 1, end);
        if (p < end && *p == ',') {
            p = skip_blanks(p + 1, end);
            continue;  /* another matcher, or the closing brace after a trailing comma */
        }
        if (p < end && *p == '}') break;
        goto none;
    }
    if (p + 1 != end) goto none;  /* the brace ends the text */
ok:;
    PyObject *out = PyTuple_Pack(2, name, ms);
    Py_DECREF(name);
    Py_DECREF(ms);
    return out;
none:
    Py_DECREF(name);
    Py_DECREF(ms);
    Py_RETURN_NONE;
fail:
    Py_DECREF(name);
    Py_DECREF(ms);
    return NULL;
}

static PyMethodDef methods[] = {
    {"parse_get", (PyCFunction)(void (*)(void))py_parse_get, METH_FASTCALL,
     "parse_get(buf, routes, request_type, headers_type): the complete GET request at the start "
     "of buf as fasthttp.parse_request reads it, or NotImplemented when it is not one this "
     "reads (the Python parser then decides)."},
    {"range_args", py_range_args, METH_O,
     "range_args(p): (start_ms, end_ms, step_ns, query, limit) of /api/v1/query_range's usual "
     "parameters, or NotImplemented (the Python reading then decides)."},
    {"simple_selector_parts", py_simple_selector_parts, METH_O,
     "simple_selector_parts(query): (name, [(label, op, value), ...]) of a plain selector's "
     "text as parsecache's regexes read it, or None where they would not match."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_request", NULL, -1, methods};

PyMODINIT_FUNC PyInit__request(void) {
    static PyObject **names[] = {&s_route, &s_params, &s_headers, &s_close, &s_size, &s_limit,
                                 &s_start, &s_end, &s_step, &s_query};
    static const char *strs[] = {"route", "params", "headers", "close", "size", "limit",
                                 "start", "end", "step", "query"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (*names[i] == NULL && (*names[i] = PyUnicode_InternFromString(strs[i])) == NULL)
            return NULL;
    }
    return PyModule_Create(&moduledef);
}
