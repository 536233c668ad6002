/* Non-blocking reads from the page cache for the filesystem bucket.
 *
 * pread_cached(fd, off, n) -> bytes | None reads with preadv2(RWF_NOWAIT): the leading part of
 * the n bytes at off that the page cache holds, b"" when none of it is, never waiting for the
 * disk. None when the kernel or filesystem cannot read without blocking (or the platform has no
 * RWF_NOWAIT), so the caller reads in a worker thread instead. In C rather than os.preadv so
 * the bytes object is filled in place: os.preadv needs a bytearray and then a copy, which for a
 * 1 MiB read costs several times the read itself.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <sys/uio.h>

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
    struct iovec iov = {PyBytes_AS_STRING(out), (size_t)n};
    ssize_t got;
    int err;
    Py_BEGIN_ALLOW_THREADS
    do {
        got = preadv2(fd, &iov, 1, (off_t)off, RWF_NOWAIT);
    } while (got < 0 && errno == EINTR);
    err = errno;
    Py_END_ALLOW_THREADS
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

static PyMethodDef methods[] = {
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
