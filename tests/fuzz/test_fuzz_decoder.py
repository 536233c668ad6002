"""Fuzz target (a): the remote-write decoder in-process (receiver.remotewrite + the C
extension). Whatever the body, decoding either returns consistent arrays or raises
RemoteWriteError; it never crashes the interpreter or raises anything else. Unmutated bodies
decode, with every sample accounted for. ``FUZZ_EXAMPLES`` sets the number of bodies."""
from __future__ import annotations

import os
import random

import numpy as np
from hypothesis import HealthCheck, given, settings

from receiver.remotewrite import STATUS_MESSAGES, DecodedWrite, RemoteWriteError, decode_body

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
