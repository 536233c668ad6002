"""Builds promring's small compiled core (C, buffer protocol only, no numpy headers)."""
from setuptools import Extension, setup

CFLAGS = ["-O3", "-std=c11", "-Wall", "-Wno-unused-function"]

setup(
    ext_modules=[
        Extension("receiver.tsdb._chunkenc", ["receiver/tsdb/_chunkenc.c"], extra_compile_args=CFLAGS,
                  depends=["receiver/tsdb/bigbytes.h"]),
        Extension("receiver.tsdb._refcache", ["receiver/tsdb/_refcache.c"], extra_compile_args=CFLAGS,
                  depends=["receiver/tsdb/refcache_api.h"]),
        Extension("receiver._rwdecode", ["receiver/_rwdecode.c"], extra_compile_args=CFLAGS,
                  depends=["receiver/tsdb/refcache_api.h"]),
        Extension("receiver.tsdb._blockio", ["receiver/tsdb/_blockio.c"], extra_compile_args=CFLAGS),
        Extension("querier._pointsjson", ["querier/_pointsjson.c"], extra_compile_args=CFLAGS),
        Extension("querier._request", ["querier/_request.c"], extra_compile_args=CFLAGS),
        Extension("querier.promql._rangec", ["querier/promql/_rangec.c"], extra_compile_args=CFLAGS,
                  depends=["receiver/tsdb/bigbytes.h"]),
        Extension("querier.promql._groupc", ["querier/promql/_groupc.c"], extra_compile_args=CFLAGS),
        Extension("storeapi._wire", ["storeapi/_wire.c"], extra_compile_args=CFLAGS),
        Extension("storeapi._h2fast", ["storeapi/_h2fast.c"], extra_compile_args=CFLAGS),
        Extension("store._indexheader", ["store/_indexheader.c"], extra_compile_args=CFLAGS),
        Extension("store._items", ["store/_items.c"], extra_compile_args=CFLAGS),
        Extension("store._lru", ["store/_lru.c"], extra_compile_args=CFLAGS),
        Extension("store._coldselect", ["store/_coldselect.c"], extra_compile_args=CFLAGS),
        Extension("store._coldseries", ["store/_coldseries.c"], extra_compile_args=CFLAGS),
        Extension("receiver.hashring._ringc", ["receiver/hashring/_ringc.c"], extra_compile_args=CFLAGS),
        Extension("receiver.capnproto._capnpc", ["receiver/capnproto/_capnpc.c"], extra_compile_args=CFLAGS),
        Extension("common._hugearena", ["common/_hugearena.c"], extra_compile_args=CFLAGS),
        Extension("objstore._pread", ["objstore/_pread.c"], extra_compile_args=CFLAGS),
    ]
)
