/* Non-blocking reads from the page cache for the filesystem bucket.
 *
 * pread_cached(fd, off, n) -> bytes | None reads with preadv2(RWF_NOWAIT): the leading part of
 * the n bytes at off that the page cache holds, b"" when none of it is, never waiting for the
 * disk. None when the kernel or filesystem cannot read without blocking (or the platform has no
 * RWF_NOWAIT), so the caller reads in a worker thread instead. In C rather than os.preadv so
 * the bytes object is filled in place: os.preadv needs a bytearray and then a copy, which for a
 * 1 MiB read costs several times the read itself.
 *
 * read_ranges(dirfd, reqs, max_len, tmp_prefix) -> list | None does the same for a whole batch
 * of (name, off, length) ranged reads of objects below the directory dirfd (a store's cold
 * Series call reads one small item per block and kind): each object is opened with openat2
 * confined beneath dirfd with no symbolic link followed (so nothing can lead out of the bucket),
 * checked to be a regular file, its range clamped to the file's size as a bucket read is, and
 * read without waiting for the disk. An item is None whenever anything is unusual (a name the
 * bucket would refuse, a missing object, a symbolic link, a range longer than max_len or not
 * wholly in the page cache, any error): the caller then does that one read the ordinary way,
 * which gives the exact result or error a single read gives. The whole answer is None when
 * the kernel has no openat2 or the filesystem no non-blocking reads. Consecutive ranges of one
 * object share one descriptor.
 *
 * With a dict `kept` (name -> descriptor, the bucket's), descriptors are kept open between calls,
 * at most keep_max of them (the oldest closed first): a cold Series call over a day of blocks
 * opened, checked and closed a dozen index and chunk files, ~3.5 us each, where the read itself
 * takes ~1 us. A kept descriptor is still checked at every use (fstat): a regular file whose
 * name still leads to it (st_nlink > 0), so an object deleted or replaced (uploads rename a new
 * file over the name) is opened again at once, never read from the old file. Reads of kept
 * descriptors hold the GIL (they never wait for the disk), so no other thread can close one
 * while it is read: every close of a kept descriptor happens with the GIL held.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/openat2.h>
#endif

#ifdef RWF_NOWAIT
/* preadv2(RWF_NOWAIT) of n bytes at off into buf, retried on EINTR, the GIL released when
 * `release` (a kept descriptor's read holds it: see above); the count read, or -1 with the
 * errno in *err. */
static ssize_t
nowait_read_gil(int fd, char *buf, size_t n, long long off, int *err, int release)
{
    struct iovec iov = {buf, n};
    ssize_t got;
    PyThreadState *ts = release ? PyEval_SaveThread() : NULL;
    do {
        got = preadv2(fd, &iov, 1, (off_t)off, RWF_NOWAIT);
    } while (got < 0 && errno == EINTR);
    *err = errno;
    if (ts != NULL)
        PyEval_RestoreThread(ts);
    return got;
}

static ssize_t
nowait_read(int fd, char *buf, size_t n, long long off, int *err)
{
    return nowait_read_gil(fd, buf, n, off, err, 1);
}
#endif

static PyObject *
pread_cached(PyObject *self, PyObject *args)
{
    int fd;
    long long off;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "iLn:pread_cached", &fd, &off, &n))
        return NULL;
    if (n < 0 || off < 0) {
        PyErr_SetString(PyExc_ValueError, "negative offset or length");
        return NULL;
    }
#ifdef RWF_NOWAIT
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL)
        return NULL;
    if (n == 0)
        return out;
    int err;
    ssize_t got = nowait_read(fd, PyBytes_AS_STRING(out), (size_t)n, off, &err);
    if (got < 0) {
        Py_DECREF(out);
        if (err == EAGAIN)
            return PyBytes_FromStringAndSize(NULL, 0);
        if (err == EOPNOTSUPP || err == ENOTSUP || err == EINVAL || err == ENOSYS)
            Py_RETURN_NONE;
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (got < n && _PyBytes_Resize(&out, got) < 0)
        return NULL;
    return out;
#else
    (void)fd;
    Py_RETURN_NONE;
#endif
}

#if defined(RWF_NOWAIT) && defined(SYS_openat2) && defined(RESOLVE_BENEATH)
/* A name the bucket accepts and this fast path may open: non-empty, no NUL, no empty, '.' or
 * '..' element, and a last element without the reserved temp-file prefix. */
static int
plain_name(const char *s, Py_ssize_t n, const char *tmp, size_t ntmp)
{
    if (n == 0 || (Py_ssize_t)strlen(s) != n)
        return 0;
    const char *end = s + n, *part = s;
    while (part <= end) {
        const char *slash = memchr(part, '/', (size_t)(end - part));
        const char *stop = slash ? slash : end;
        size_t len = (size_t)(stop - part);
        if (len == 0 || (len == 1 && part[0] == '.') ||
            (len == 2 && part[0] == '.' && part[1] == '.'))
            return 0;
        if (!slash)
            return !(len >= ntmp && memcmp(part, tmp, ntmp) == 0);
        part = slash + 1;
    }
    return 0;
}

/* 0: read into *out (a bytes object, or NULL meaning "do it the ordinary way");
 * -1: a Python error is set; 1: the whole fast path is unsupported here; 2 (only for a `kept`
 * descriptor, read with the GIL held): its object was deleted or replaced, open it again. */
static int
read_one(int fd, long long off, long long length, Py_ssize_t max_len, PyObject **out, int kept)
{
    struct stat st;
    int r;
    *out = NULL;
    if (kept) {
        r = fstat(fd, &st);
        if (r != 0 || !S_ISREG(st.st_mode) || st.st_nlink == 0)
            return 2; /* deleted or replaced since it was opened: open it again */
    } else {
        Py_BEGIN_ALLOW_THREADS
        r = fstat(fd, &st);
        Py_END_ALLOW_THREADS
    }
    if (r != 0 || !S_ISREG(st.st_mode))
        return 0;
    long long want = st.st_size > off ? st.st_size - off : 0;
    long long n = (length >= 0 && length < want) ? length : want;
    if (n > max_len)
        return 0;
    PyObject *buf = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (buf == NULL)
        return -1;
    if (n == 0) {
        *out = buf;
        return 0;
    }
    int err;
    ssize_t got = nowait_read_gil(fd, PyBytes_AS_STRING(buf), (size_t)n, off, &err, !kept);
    if (got == (ssize_t)n) {
        *out = buf;
        return 0;
    }
    Py_DECREF(buf);
    if (got < 0 && (err == EOPNOTSUPP || err == ENOTSUP || err == EINVAL || err == ENOSYS))
        return 1;
    return 0; /* partly or not in the page cache, or an error: the ordinary read */
}
#endif

#if defined(RWF_NOWAIT) && defined(SYS_openat2) && defined(RESOLVE_BENEATH)
/* Object `name` opened beneath dirfd (no symbolic link followed, nothing outside), the GIL
 * released meanwhile (the lookup may wait for the disk); -1 with the errno in *err. */
static int
open_beneath(int dirfd, const char *name, int *err)
{
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    int fd;
    Py_BEGIN_ALLOW_THREADS
    do {
        fd = (int)syscall(SYS_openat2, dirfd, name, &how, sizeof how);
    } while (fd < 0 && errno == EINTR);
    *err = errno;
    Py_END_ALLOW_THREADS
    return fd;
}

/* The descriptor kept for `name`: -1 if none, -2 with a Python error set. */
static int
kept_fd(PyObject *kept, PyObject *name)
{
    PyObject *v = PyDict_GetItemWithError(kept, name);
    if (v == NULL)
        return PyErr_Occurred() ? -2 : -1;
    long fd = PyLong_AsLong(v);
    if (fd == -1 && PyErr_Occurred())
        return -2;
    return (int)fd;
}

/* Keep `fd` for `name`, closing the oldest kept descriptors beyond keep_max - 1 first:
 * 1 kept, 0 not (keep_max <= 0), -1 with a Python error set. */
static int
keep(PyObject *kept, Py_ssize_t keep_max, PyObject *name, int fd)
{
    if (keep_max <= 0)
        return 0;
    while (PyDict_GET_SIZE(kept) >= keep_max) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        if (!PyDict_Next(kept, &pos, &k, &v))
            break;
        long old = PyLong_AsLong(v);
        if (old == -1 && PyErr_Occurred())
            return -1;
        Py_INCREF(k);
        int r = PyDict_DelItem(kept, k);
        Py_DECREF(k);
        if (r < 0)
            return -1;
        close((int)old);
    }
    PyObject *v = PyLong_FromLong(fd);
    if (v == NULL)
        return -1;
    int r = PyDict_SetItem(kept, name, v);
    Py_DECREF(v);
    return r < 0 ? -1 : 1;
}
#endif

static PyObject *
read_ranges(PyObject *self, PyObject *args)
{
    int dirfd;
    PyObject *reqs, *kept = Py_None;
    Py_ssize_t max_len, keep_max = 0;
    const char *tmp;
    Py_ssize_t ntmp;
    if (!PyArg_ParseTuple(args, "iO!ns#|On:read_ranges", &dirfd, &PyList_Type, &reqs, &max_len,
                          &tmp, &ntmp, &kept, &keep_max))
        return NULL;
    if (kept == Py_None)
        kept = NULL;
    else if (!PyDict_CheckExact(kept)) {
        PyErr_SetString(PyExc_TypeError, "read_ranges: kept must be a dict or None");
        return NULL;
    }
#if defined(RWF_NOWAIT) && defined(SYS_openat2) && defined(RESOLVE_BENEATH)
    Py_ssize_t count = PyList_GET_SIZE(reqs);
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    int fd = -1, fd_kept = 0; /* fd_kept: fd belongs to `kept` (closed only through it) */
    const char *open_name = NULL;
    Py_ssize_t open_len = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *req = PyList_GET_ITEM(reqs, i), *got = NULL, *name_obj;
        const char *name;
        Py_ssize_t nlen;
        long long off, length;
        if (!PyTuple_Check(req) || PyTuple_GET_SIZE(req) != 3 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(req, 0))) {
            PyErr_SetString(PyExc_TypeError, "read_ranges: each request is (name, off, length)");
            goto fail;
        }
        name_obj = PyTuple_GET_ITEM(req, 0);
        name = PyUnicode_AsUTF8AndSize(name_obj, &nlen);
        if (name == NULL)
            goto fail;
        off = PyLong_AsLongLong(PyTuple_GET_ITEM(req, 1));
        if (off == -1 && PyErr_Occurred())
            goto fail;
        length = PyLong_AsLongLong(PyTuple_GET_ITEM(req, 2));
        if (length == -1 && PyErr_Occurred())
            goto fail;
        if (off >= 0 && length >= -1 && plain_name(name, nlen, tmp, (size_t)ntmp)) {
            int fresh = 0; /* opened here for this name (not found in `kept`) */
            if (fd < 0 || nlen != open_len || memcmp(name, open_name, (size_t)nlen) != 0) {
                if (fd >= 0 && !fd_kept)
                    close(fd);
                fd = -1;
                fd_kept = 0;
                if (kept != NULL) {
                    fd = kept_fd(kept, name_obj);
                    if (fd == -2) {
                        fd = -1;
                        goto fail;
                    }
                    fd_kept = fd >= 0;
                }
                open_name = name;
                open_len = nlen;
            }
            for (int attempt = 0; attempt < 2; attempt++) {
                if (fd < 0) {
                    int err;
                    fd = open_beneath(dirfd, name, &err);
                    if (fd < 0 && (err == ENOSYS || err == EPERM)) {  /* no openat2 (or refused) */
                        Py_DECREF(out);
                        Py_RETURN_NONE;
                    }
                    if (fd < 0)
                        break;
                    fresh = 1;
                    if (kept != NULL) {
                        int r = keep(kept, keep_max, name_obj, fd);
                        if (r < 0) {
                            close(fd);
                            fd = -1;
                            goto fail;
                        }
                        fd_kept = r;
                    }
                }
                int r = read_one(fd, off, length, max_len, &got, fd_kept);
                if (r < 0)
                    goto fail;
                if (r == 1) {
                    if (!fd_kept)
                        close(fd);
                    Py_DECREF(out);
                    Py_RETURN_NONE;
                }
                if (r != 2)
                    break;
                /* a kept descriptor whose object was deleted or replaced: forget it, and open
                   the name again (once; a file gone again is read the ordinary way) */
                close(fd);
                fd = -1;
                fd_kept = 0;
                if (PyDict_DelItem(kept, name_obj) < 0)
                    goto fail;
                if (fresh)
                    break;
            }
        }
        if (got == NULL) {
            got = Py_None;
            Py_INCREF(got);
        }
        PyList_SET_ITEM(out, i, got);
    }
    if (fd >= 0 && !fd_kept)
        close(fd);
    return out;
fail:
    if (fd >= 0 && !fd_kept)
        close(fd);
    Py_DECREF(out);
    return NULL;
#else
    (void)dirfd; (void)reqs; (void)max_len; (void)tmp; (void)ntmp; (void)keep_max;
    Py_RETURN_NONE;
#endif
}

static PyMethodDef methods[] = {
    {"read_ranges", read_ranges, METH_VARARGS,
     "read_ranges(dirfd, [(name, off, length), ...], max_len, tmp_prefix, kept=None, keep_max=0) "
     "-> list | None: each range read from the page cache, or None where it must be read the "
     "ordinary way; None when the fast path is unsupported here. kept: name -> descriptor kept "
     "open between calls (at most keep_max)."},
    {"pread_cached", pread_cached, METH_VARARGS,
     "pread_cached(fd, off, n) -> bytes | None: what the page cache holds of n bytes at off "
     "(b\"\" if none), never waiting for the disk; None if non-blocking reads are unsupported."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pread", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__pread(void)
{
    return PyModule_Create(&module);
}
