"""Fuzz target (a): the remote-write decoder in-process (receiver.remotewrite + the C
extension). Whatever the body, decoding either returns consistent arrays or raises
RemoteWriteError; it never crashes the interpreter or raises anything else. Unmutated bodies
decode, with every sample accounted for. ``FUZZ_EXAMPLES`` sets the number of bodies."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from receiver.remotewrite import (STATUS_MESSAGES, DecodedWrite, RemoteWriteError, decode,
                                  decode_body, decompress_body)
from receiver.tsdb._refcache import RefCache

from .bodies import Body, bodies, byte_mutants

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))


def check_decoded(d: DecodedWrite) -> None:
    n_keys = len(d.keys)
    assert len(d.series_status) == n_keys
    assert len(d.sample_series) == len(d.ts) == len(d.vals)
    assert len(d.hist_series) == len(d.hist_ts) == len(d.hist_raw)
    for idx in (d.sample_series, d.hist_series):
        if len(idx):
            assert 0 <= int(idx.min()) and int(idx.max()) < n_keys
    assert all(isinstance(k, bytes) for k in d.keys)
    assert np.all(d.series_status <= max(STATUS_MESSAGES))


def decode_one(body: Body) -> DecodedWrite | None:
    try:
        d = decode_body(body.data, "snappy" if body.snappy else None, "application/x-protobuf")
    except RemoteWriteError:
        assert body.mutated or not body.snappy, "a valid snappy WriteRequest was refused"
        return None
    check_decoded(d)
    if not body.mutated and body.snappy:
        assert d.n_samples == body.n_samples
    return d


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies())
def test_decoder_accepts_or_refuses_cleanly(body):
    decode_one(body)


@settings(max_examples=EXAMPLES // 4, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies())
def test_byte_mutants_decode_or_refuse_cleanly(body):
    """The long run's byte-level variants (``--mutants``): mutated, and handled like any body."""
    mutants = byte_mutants(body, 4, random.Random(len(body.data)))
    assert len(mutants) == 4 and all(m.mutated and m.snappy == body.snappy for m in mutants)
    for m in mutants:
        decode_one(m)


def _plain(body: Body) -> bytes | None:
    """The uncompressed WriteRequest bytes of a body (None: not valid snappy)."""
    if not body.snappy:
        return body.data
    try:
        return decompress_body(body.data, "snappy", None)
    except RemoteWriteError:
        return None


def _same_decode(data: bytes, cache: RefCache, key_of_ref: dict[int, bytes]) -> None:
    """Decoding with the warm cache reports exactly what a cold decode does, and every hit's
    ref is the series whose key the cold decode built."""
    try:
        cold = decode(data)
    except ValueError as e:
        with pytest.raises(ValueError) as warm_err:
            decode(data, cache)
        assert str(warm_err.value) == str(e)
        return
    warm = decode(data, cache)
    hits = np.flatnonzero(warm.cached_refs >= 0)
    assert all(key_of_ref[r] == cold.keys[i] for i, r in zip(hits.tolist(), warm.cached_refs[hits].tolist()))
    assert warm.keys == cold.keys
    assert np.array_equal(warm.series_status, cold.series_status)
    for col in ("sample_series", "ts", "hist_series", "hist_ts", "ex_series", "ex_ts", "ex_status"):
        assert np.array_equal(getattr(warm, col), getattr(cold, col)), col
    assert warm.vals.tobytes() == cold.vals.tobytes()
    assert warm.hist_raw == cold.hist_raw and warm.ex_keys == cold.ex_keys


@settings(max_examples=EXAMPLES // 4, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies())
def test_a_warm_ref_cache_changes_nothing_a_decode_reports(body):
    """A head's ref cache holding the body's valid series: the body and byte-flipped variants
    of it decode exactly as without the cache (a hit needs the very bytes once validated)."""
    data = _plain(body)
    if data is None:
        return
    try:
        first = decode(data)
    except ValueError:
        first = None
    cache = RefCache(seed=len(data))
    key_of_ref: dict[int, bytes] = {}
    if first is not None:
        ok = np.flatnonzero(first.series_status == 0)
        cache.insert([first.keys[i] for i in ok.tolist()], ok.astype(np.int64))
        key_of_ref = {i: first.keys[i] for i in ok.tolist()}
    rng = random.Random(len(data))
    variants = [data]
    for _ in range(4):
        b = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        variants.append(bytes(b))
    for v in variants:
        _same_decode(v, cache, key_of_ref)
