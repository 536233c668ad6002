"""Large remote-write bodies are decompressed on a worker thread with the inline path's exact
result and errors, and concurrent requests still decode to the same writes."""
from __future__ import annotations

import asyncio

import cramjam
import numpy as np
import pytest

from receiver.offload import BodyDecompressor, OffloadOptions
from receiver.remotewrite import RemoteWriteError, decompress_body, encode_write_request

CT, CE = "application/x-protobuf", "snappy"


def big_request(n_series: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_write_request(
        ((("__name__", "m"), ("id", f"{seed}-{i}-{rng.integers(1 << 40)}")),
         np.array([1_700_000_000_000 + seed], dtype=np.int64), np.array([float(i)]))
        for i in range(n_series))


def outcome(fn):
    try:
        return "ok", fn()
    except RemoteWriteError as e:
        return "error", (str(e), getattr(e, "status", 400))


@pytest.mark.parametrize("min_bytes", [0, 1 << 30])  # every body on a worker / none
def test_same_bytes_and_errors_as_inline(min_bytes):
    raw = big_request(2000, 1)
    body = bytes(cramjam.snappy.compress_raw(raw))
    assert len(body) > OffloadOptions().min_bytes  # the default threshold sends it to a worker
    bad = bytearray(body)
    bad[len(bad) // 2:] = b"\xff" * (len(bad) - len(bad) // 2)
    cases = [(body, CE, CT, 256 << 20), (bytes(bad), CE, CT, 256 << 20),
             (body, CE, CT, len(raw) - 1),                       # 413: over the limit
             (body, "gzip", CT, 256 << 20), (body, CE, "text/plain", 256 << 20)]
    d = BodyDecompressor(OffloadOptions(min_bytes=min_bytes))

    async def run_all():
        out = []
        for b, ce, ct, limit in cases:
            try:
                out.append(("ok", await d.decompress(b, ce, ct, max_decompressed_bytes=limit)))
            except RemoteWriteError as e:
                out.append(("error", (str(e), getattr(e, "status", 400))))
        return out

    try:
        got = asyncio.run(run_all())
    finally:
        d.close()
    want = [outcome(lambda c=c: decompress_body(c[0], c[1], c[2], max_decompressed_bytes=c[3]))
            for c in cases]
    assert got == want
    assert got[0] == ("ok", raw)
    assert [g[0] for g in got[1:]] == ["error"] * 4
    assert got[2][1][1] == 413


def test_concurrent_bodies_each_get_their_own_bytes():
    raws = [big_request(300, seed) for seed in range(24)]
    bodies = [bytes(cramjam.snappy.compress_raw(r)) for r in raws]
    d = BodyDecompressor(OffloadOptions(min_bytes=0, workers=2))

    async def run_all():
        return await asyncio.gather(*(d.decompress(b, CE, CT) for b in bodies))

    try:
        assert asyncio.run(run_all()) == raws
    finally:
        d.close()
