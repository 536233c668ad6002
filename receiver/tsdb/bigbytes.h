/* Fresh bytes objects for big C results (decoded samples, per-window arrays), asked to sit in
 * transparent huge pages as numpy asks for its own big arrays. Without it, an answer bigger
 * than glibc's largest mmap threshold (32 MiB) is a fresh mapping every query, faulted in
 * 4 KiB at a time: at millions of samples the page faults cost as much as the decode. */
#ifndef PROMRING_BIGBYTES_H
#define PROMRING_BIGBYTES_H
#include <Python.h>
#include <stdint.h>
#include <sys/mman.h>

#define BIGBYTES_HUGE_PAGE ((uintptr_t)2 << 20)
#define BIGBYTES_MIN ((Py_ssize_t)4 << 20) /* numpy's threshold for the same advice */

/* PyBytes_FromStringAndSize(NULL, n), its 2 MiB-aligned interior advised MADV_HUGEPAGE
 * before anything touches it. The advice is a hint: where the kernel has no huge page (or
 * THP is off) it is ignored and the bytes behave as any others. */
static inline PyObject *big_bytes(Py_ssize_t n) {
    PyObject *o = PyBytes_FromStringAndSize(NULL, n);
#ifdef MADV_HUGEPAGE
    if (o != NULL && n >= BIGBYTES_MIN) {
        uintptr_t p = (uintptr_t)PyBytes_AS_STRING(o);
        uintptr_t a = (p + BIGBYTES_HUGE_PAGE - 1) & ~(BIGBYTES_HUGE_PAGE - 1);
        uintptr_t e = (p + (uintptr_t)n) & ~(BIGBYTES_HUGE_PAGE - 1);
        if (e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
    }
#endif
    return o;
}
#endif
