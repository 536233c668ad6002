"""Thanos's aggregate chunk ("AggrChunk") as stored in downsampled blocks.

A downsampled series keeps, per time slice, five XOR sub-chunks: count, sum, min, max and
counter (in that order, Thanos's ``AggrType`` numbering). On disk the chunk record carries
encoding byte ``0xff`` and its data is, per aggregate, ``uvarint(len(sub-chunk bytes))`` then
the sub-chunk's encoding byte and bytes; an absent aggregate is a single ``uvarint(0)``. Using
exactly this layout is what lets Thanos's store gateway and compactor read our blocks and
us theirs.
"""
from __future__ import annotations

from common.varint import read_uvarint, uvarint

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ENCODING_AGGR = 0xFF
ENCODING_XOR = 1
AGGR_COUNT, AGGR_SUM, AGGR_MIN, AGGR_MAX, AGGR_COUNTER = range(5)
AGGR_NAMES = ("count", "sum", "min", "max", "counter")

RES_RAW = 0
RES_5M = 5 * 60 * 1000
RES_1H = 60 * 60 * 1000
DOWNSAMPLE_RANGE_5M = 40 * 60 * 60 * 1000  # raw blocks at least this long get a 5m copy
DOWNSAMPLE_RANGE_1H = 10 * 24 * 60 * 60 * 1000  # 5m blocks at least this long get a 1h copy


@dataclass(frozen=True)
class AggrChunk:
    """The five XOR sub-chunks (``None`` = aggregate absent) of one downsampled chunk."""

    count: bytes | None = None
    sum: bytes | None = None
    min: bytes | None = None
    max: bytes | None = None
    counter: bytes | None = None

    def get(self, aggr: int) -> bytes | None:
        return (self.count, self.sum, self.min, self.max, self.counter)[aggr]

    def encode(self) -> bytes:
        """The chunk data as stored after the 0xff encoding byte."""
        parts = []
        for sub in (self.count, self.sum, self.min, self.max, self.counter):
            if not sub:
                parts.append(b"\x00")
            else:
                parts.append(uvarint(len(sub)) + bytes((ENCODING_XOR,)) + sub)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> AggrChunk:
        """Parse stored aggr chunk data; non-XOR sub-chunks (native histograms) are refused."""
        subs: list[bytes | None] = []
        i = 0
        for _ in range(5):
            if i >= len(data):  # trailing absent aggregates may be cut short
                subs.append(None)
                continue
            ln, i = read_uvarint(data, i, "aggr chunk length")
            if ln == 0:
                subs.append(None)
                continue
            if i + 1 + ln > len(data):
                raise ValueError("aggr chunk: sub-chunk runs past the end")
            if data[i] != ENCODING_XOR:
                raise ValueError(f"aggr chunk: sub-chunk encoding {data[i]} is not XOR")
            subs.append(bytes(data[i + 1:i + 1 + ln]))
            i += 1 + ln
        return cls(*subs)


def count_samples(data: bytes) -> int:
    """Samples of a stored aggr chunk (its count sub-chunk's), as Thanos counts them."""
    c = AggrChunk.decode(data).count
    return int.from_bytes(c[:2], "big") if c else 0


def apply_counter_resets(parts: Sequence[tuple[np.ndarray, np.ndarray]]
                         ) -> tuple[np.ndarray, np.ndarray, float]:
    """Thanos's ApplyCounterResetsSeriesIterator over consecutive counter chunks.

    Returns (timestamps, running totals with resets compensated, last raw value). NaNs are
    skipped; a sample at an already-seen timestamp only replaces the last raw value (the
    chunk-closing duplicate), one before it is ignored.
    """
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0), float("nan")
    t = np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False)
    v = np.concatenate([p[1] for p in parts]).astype(np.float64, copy=False)
    keep = ~np.isnan(v)
    t, v = t[keep], v[keep]
    if len(t) == 0:
        return t, v, float("nan")
    prev_max = np.r_[np.iinfo(np.int64).min, np.maximum.accumulate(t)[:-1]]
    emit = t > prev_max
    usable = emit | (t == prev_max)
    t, v, emit = t[usable], v[usable], emit[usable]
    prev = np.r_[v[:1], v[:-1]]
    inc = np.where(emit, np.where(v >= prev, v - prev, v), 0.0)
    inc[0] = v[0]
    total = np.cumsum(inc)
    return t[emit], total[emit], float(v[-1])
