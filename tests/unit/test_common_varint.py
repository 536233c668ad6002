"""LEB128 uvarints: one decoding loop serves both the raising reader (WAL, labels, aggr chunks)
and the store's "None when the buffer ends inside it" form."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.varint import read_uvarint, uvarint, uvarint_at  # noqa: E402
from store.ranges import uvarint_at as store_uvarint_at  # noqa: E402


def test_round_trip_and_positions() -> None:
    values = [0, 1, 127, 128, 300, 2**31, 2**63 - 1, 2**64 - 1] + \
        [int(x) for x in np.random.default_rng(1).integers(0, 2**63, 200, dtype=np.uint64)]
    buf = b"\xff" + b"".join(uvarint(v) for v in values)
    i = 1
    for v in values:
        got, nxt = read_uvarint(buf, i)
        assert (got, nxt) == uvarint_at(buf, i) == uvarint_at(memoryview(buf), i)
        assert got == v and nxt - i == len(uvarint(v))
        i = nxt
    assert uvarint(-1) == uvarint(2**64 - 1)  # int64 -1 as protobuf writes it
    assert [uvarint(x) for x in range(-2, 300)] == [uvarint(2**64 - 2), uvarint(2**64 - 1)] + \
        [bytes([x]) if x < 0x80 else bytes([x & 0x7F | 0x80, x >> 7]) for x in range(300)]
    assert store_uvarint_at is uvarint_at


def test_truncated_and_overflowing() -> None:
    enc = uvarint(2**40)
    for cut in range(len(enc)):
        assert uvarint_at(enc[:cut], 0) is None
        with pytest.raises(ValueError, match="label key: truncated"):
            read_uvarint(enc[:cut], 0, "label key")
    too_long = b"\x80" * 10 + b"\x01"
    with pytest.raises(ValueError, match="chunk length: overflows 64 bits"):
        read_uvarint(too_long, 0, "chunk length")
    with pytest.raises(ValueError, match="overflows 64 bits"):
        uvarint_at(too_long, 0)
