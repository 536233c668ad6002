"""XOR chunk codec and HeadChunks: round trips, spec-level bit checks, and bit-exactness with the
chunks the real Prometheus (promtool) writes."""
from __future__ import annotations

import math
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from receiver.tsdb import chunkenc
from receiver.tsdb.chunkenc import (
    DUPLICATE, OK, OUT_OF_ORDER, SAME_DUPLICATE, TOO_OLD, HeadChunks, decode, decode_many, encode,
)
from receiver.tsdb.labels import STALE_NAN_BITS

PROMTOOL = "/usr/bin/promtool"
STALE_NAN = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]


# -- an independent, slow reference encoder written from the format description --------------

def _ref_encode(ts: list[int], vals: list[float]) -> bytes:
    bits: list[str] = []

    def put(v: int, n: int) -> None:
        bits.append(format(v & ((1 << n) - 1), f"0{n}b"))

    def put_uvarint(x: int) -> None:
        x &= (1 << 64) - 1
        while x >= 0x80:
            put((x & 0x7F) | 0x80, 8)
            x >>= 7
        put(x, 8)

    prev_bits = 0
    lead, trail = None, 0
    prev_t = prev_delta = 0
    for i, (t, v) in enumerate(zip(ts, vals)):
        vb = struct.unpack("<Q", struct.pack("<d", v))[0]
        if i == 0:
            put_uvarint((t << 1) ^ (t >> 63))  # zig-zag
            put(vb, 64)
        else:
            delta = t - prev_t
            if i == 1:
                put_uvarint(delta)
            else:
                dod = delta - prev_delta
                if dod == 0:
                    put(0, 1)
                else:
                    for prefix, plen, n in ((0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)):
                        if -(2 ** (n - 1) - 1) <= dod <= 2 ** (n - 1):
                            put(prefix, plen)
                            put(dod, n)
                            break
                    else:
                        put(0b1111, 4)
                        put(dod, 64)
            prev_delta = delta
            x = vb ^ prev_bits
            if x == 0:
                put(0, 1)
            else:
                lz = min(64 - x.bit_length(), 31)
                tz = (x & -x).bit_length() - 1
                if lead is not None and lz >= lead and tz >= trail:
                    put(0b10, 2)
                    put(x >> trail, 64 - lead - trail)
                else:
                    lead, trail = lz, tz
                    put(0b11, 2)
                    put(lz, 5)
                    put(64 - lz - tz, 6)
                    put(x >> tz, 64 - lz - tz)
        prev_t, prev_bits = t, vb
    s = "".join(bits)
    s += "0" * (-len(s) % 8)
    body = int(s, 2).to_bytes(len(s) // 8, "big") if s else b""
    return len(ts).to_bytes(2, "big") + body


def _bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).view(np.uint64)


def _check_roundtrip(ts, vals) -> bytes:
    ts = np.asarray(ts, dtype=np.int64)
    vals = np.asarray(vals, dtype=np.float64)
    chunk = encode(ts, vals)
    assert chunk == _ref_encode(ts.tolist(), vals.tolist())
    t2, v2 = decode(chunk)
    np.testing.assert_array_equal(t2, ts)
    np.testing.assert_array_equal(_bits(v2), _bits(vals))
    assert chunkenc.num_samples(chunk) == len(ts)
    return chunk


# -- codec ----------------------------------------------------------------------------------

def test_empty_chunk() -> None:
    assert encode([], []) == b"\x00\x00"
    t, v = decode(b"\x00\x00")
    assert len(t) == 0 and len(v) == 0


@pytest.mark.parametrize("n", [1, 2, 3, 119, 120, 121, 1000])
def test_roundtrip_realistic(n: int) -> None:
    rng = np.random.default_rng(n)
    ts = 1_700_000_000_000 + np.cumsum(15_000 + rng.integers(-50, 50, n))
    counter = np.cumsum(rng.integers(0, 100, n)).astype(np.float64)
    gauge = np.round(rng.normal(50, 10, n), 2)
    _check_roundtrip(ts, counter)
    _check_roundtrip(ts, gauge)


@pytest.mark.parametrize("seed", range(8))
def test_roundtrip_random_bits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    ts = np.cumsum(rng.integers(-(2**40), 2**40, n))
    vals = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True).view(np.float64)
    _check_roundtrip(ts, vals)


def test_adversarial_values() -> None:
    n = 120
    ts = np.arange(n, dtype=np.int64) * 15_000
    _check_roundtrip(ts, np.full(n, 42.0))                          # constant
    _check_roundtrip(ts, np.zeros(n))
    special = [0.0, -0.0, math.nan, math.inf, -math.inf, STALE_NAN, 1e308, 5e-324, -5e-324, 1.0]
    _check_roundtrip(ts[:len(special)], special)
    vals = np.array(special * 12)
    _check_roundtrip(ts, vals)
    # stale NaN keeps its exact bit pattern
    t2, v2 = decode(encode([1, 2, 3], [1.0, STALE_NAN, 2.0]))
    assert int(_bits(v2)[1]) == STALE_NAN_BITS
    # alternating huge jumps
    _check_roundtrip(ts, np.where(np.arange(n) % 2 == 0, 1e300, -1e-300))


def test_leading_zero_clamp_and_64_sigbits() -> None:
    # XOR == 1: 63 leading zeros, clamped to 31 -> 33 significant bits.
    one = np.array([0, 1], dtype=np.uint64).view(np.float64)
    chunk = _check_roundtrip([0, 1], one)
    # header(16) + varint(8) + v0(64) + uvarint(8) + '11' + 5 + 6 + 33 bits
    assert len(chunk) == math.ceil((16 + 8 + 64 + 8 + 2 + 5 + 6 + 33) / 8)
    # XOR with no leading or trailing zeros: sigbits 64 is written as 0.
    full = np.array([0, 0x8000000000000001], dtype=np.uint64).view(np.float64)
    chunk = _check_roundtrip([0, 1], full)
    bitstr = "".join(format(b, "08b") for b in chunk[2:])
    start = 8 + 64 + 8
    assert bitstr[start:start + 2] == "11"
    assert bitstr[start + 2:start + 7] == "00000"      # leading
    assert bitstr[start + 7:start + 13] == "000000"    # 64 sigbits written as 0
    # window reuse after a clamped window
    vals = np.array([0, 1, 3, 2, 1 << 40, (1 << 63) | 1], dtype=np.uint64).view(np.float64)
    _check_roundtrip(np.arange(6), vals)


DOD_CASES = [
    (0, "0", 0),
    (1, "10", 14), (-1, "10", 14), (8192, "10", 14), (-8191, "10", 14),
    (8193, "110", 17), (-8192, "110", 17), (65536, "110", 17), (-65535, "110", 17),
    (65537, "1110", 20), (-65536, "1110", 20), (524288, "1110", 20), (-524287, "1110", 20),
    (524289, "1111", 64), (-524288, "1111", 64), (2**62, "1111", 64), (-(2**62), "1111", 64),
]


@pytest.mark.parametrize("dod,prefix,width", DOD_CASES)
def test_dod_buckets(dod: int, prefix: str, width: int) -> None:
    ts = [0, 1000, 2000 + dod]
    chunk = _check_roundtrip(ts, [1.0, 1.0, 1.0])
    bitstr = "".join(format(b, "08b") for b in chunk[2:])
    pos = 8 + 64 + 16 + 1          # varint(0), v0, uvarint(1000) is 2 bytes, value '0'
    assert bitstr[pos:pos + len(prefix)] == prefix
    field = bitstr[pos + len(prefix):pos + len(prefix) + width]
    if width:
        raw = int(field, 2)
        assert (raw - (1 << width) if raw > (1 << (width - 1)) else raw) == dod
    end = pos + len(prefix) + width + 1
    assert bitstr[end - 1] == "0" and len(chunk) - 2 == math.ceil(end / 8)


def test_negative_and_extreme_timestamps() -> None:
    _check_roundtrip([-5_000, -4_000, -3_500, 10], [1.0, 2.0, 3.0, 4.0])
    _check_roundtrip([-(2**62), 0, 2**62], [1.0, 2.0, 3.0])
    _check_roundtrip([10_000, 5_000, 0, 20_000], [1.0, 2.0, 3.0, 4.0])  # codec doesn't order
    _check_roundtrip([-(2**63), 2**63 - 1], [0.0, 0.0])


def test_max_samples() -> None:
    n = 65535
    ts = np.arange(n, dtype=np.int64) * 1000
    _check_roundtrip(ts[:5000], np.sin(np.arange(5000)))
    chunk = encode(ts, np.ones(n))
    assert chunk[:2] == b"\xff\xff"
    assert len(decode(chunk)[0]) == n
    with pytest.raises(ValueError):
        encode(np.zeros(n + 1, dtype=np.int64), np.zeros(n + 1))


def test_input_validation_and_corruption() -> None:
    with pytest.raises(ValueError):
        encode([1, 2], [1.0])
    with pytest.raises(TypeError):
        chunkenc.xor_encode(np.zeros(2, dtype=np.int32), np.zeros(2))
    with pytest.raises(TypeError):
        chunkenc.xor_encode(np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.float32))
    chunk = encode(np.arange(50) * 15_000, np.random.default_rng(0).random(50))
    for cut in (0, 1, 3, 10, len(chunk) // 2, len(chunk) - 2):
        with pytest.raises(ValueError):
            decode(chunk[:cut])
    with pytest.raises(ValueError):
        decode_many([chunk, chunk[:5]], 0, 10**12)


def test_decode_many_filters_and_concatenates() -> None:
    rng = np.random.default_rng(3)
    ts = np.cumsum(rng.integers(1, 30_000, 700))
    vals = rng.normal(size=700)
    chunks = [encode(ts[i:i + 120], vals[i:i + 120]) for i in range(0, 700, 120)]
    t, v = decode_many(chunks, -(2**63), 2**63 - 1)
    np.testing.assert_array_equal(t, ts)
    np.testing.assert_array_equal(v, vals)
    for mint, maxt in [(ts[5], ts[400]), (ts[119], ts[120]), (ts[0] - 1, ts[0]),
                       (ts[-1], ts[-1] + 10), (ts[-1] + 1, ts[-1] + 100), (ts[300] + 1, ts[300])]:
        t, v = decode_many(chunks, int(mint), int(maxt))
        keep = (ts >= mint) & (ts <= maxt)
        np.testing.assert_array_equal(t, ts[keep])
        np.testing.assert_array_equal(v, vals[keep])
    t, v = decode_many([bytearray(chunks[0]), memoryview(chunks[1])], ts[100], ts[130])
    np.testing.assert_array_equal(t, ts[100:131])
    assert len(decode_many([], 0, 10)[0]) == 0


def _random_series(rng: np.random.Generator, nseries: int) -> list[list]:
    """Chunk lists of random series (0-4 chunks each, 0-130 samples a chunk), each chunk as
    bytes, bytearray, memoryview or a (mint, maxt, data) tuple."""
    out = []
    t = int(rng.integers(-10**6, 10**6))
    for _ in range(nseries):
        chunks: list = []
        for _ in range(int(rng.integers(0, 5))):
            n = int(rng.integers(0, 131))
            ts = t + np.cumsum(rng.integers(1, 60_000, n))
            t = int(ts[-1]) if n else t
            vals = rng.choice([rng.normal(size=n) * 1e3, rng.integers(0, 9, n).astype(float)])
            chunk = encode(ts, vals)
            kind = int(rng.integers(0, 4))
            chunks.append([chunk, bytearray(chunk), memoryview(chunk),
                           (int(ts[0]) if n else 0, t, chunk)][kind])
        out.append(chunks)
    return out


def _data(item) -> object:
    return item[2] if isinstance(item, tuple) else item


@pytest.mark.parametrize("seed", range(12))
def test_decode_series_matches_decode_many_per_series(seed: int) -> None:
    """The two batch entry points share their chunk collection and decode loop: the samples of
    each series from decode_series are exactly decode_many's of its chunks."""
    rng = np.random.default_rng(seed)
    series = _random_series(rng, int(rng.integers(0, 40)))
    everything = [c for s in series for c in s]
    times = [int(t) for c in everything for t in decode(_data(c))[0]] or [0]
    bounds = [(-(2**63), 2**63 - 1), (min(times), max(times)), (max(times) + 1, max(times) + 9)]
    for _ in range(4):
        a, b = sorted(int(x) for x in rng.choice(times, 2))
        bounds.append((a + int(rng.integers(-1, 2)), b + int(rng.integers(-1, 2))))
    for mint, maxt in bounds:
        ts, vals, offs = chunkenc.decode_series(series, mint, maxt)
        assert len(offs) == len(series) + 1 and offs[0] == 0 and offs[-1] == len(ts)
        for i, s in enumerate(series):
            t1, v1 = decode_many([_data(c) for c in s], mint, maxt)
            np.testing.assert_array_equal(ts[offs[i]:offs[i + 1]], t1)
            np.testing.assert_array_equal(_bits(vals[offs[i]:offs[i + 1]]), _bits(v1))
        t_all, v_all = decode_many([_data(c) for c in everything], mint, maxt)
        np.testing.assert_array_equal(ts, t_all)
        np.testing.assert_array_equal(_bits(vals), _bits(v_all))


def test_batch_decoders_reject_bad_items_and_release_every_buffer() -> None:
    """Errors part-way through the chunk list (corrupt chunk, an item that is no buffer, a bad
    tuple) raise and still release the buffers already taken: a bytearray whose buffer stayed
    exported could not be resized afterwards."""
    good = encode(np.arange(10) * 1000, np.ones(10))
    held = bytearray(good)
    cases_many = [([held, good[:3]], ValueError), ([held, 42], TypeError),
                  ([held, (0, 1, good)], TypeError), ([held, "abc"], TypeError)]
    for chunks, err in cases_many:
        with pytest.raises(err):
            decode_many(chunks, 0, 10**9)
        held.append(0)  # BufferError if an export leaked
        held.pop()
    cases_series = [([[held], [good[:3]]], ValueError), ([[held], [42]], TypeError),
                    ([[held], [(0, 1)]], ValueError), ([[held], 7], TypeError), (5, TypeError)]
    for series, err in cases_series:
        with pytest.raises(err):
            chunkenc.decode_series(series, 0, 10**9)
        held.append(0)
        held.pop()
    assert decode_many([held], 0, 10**9)[0].tolist() == list(range(0, 10_000, 1000))


# -- HeadChunks -------------------------------------------------------------------------------

def _append(h: HeadChunks, refs, ts, vals, min_valid: int = -(2**63)) -> list[int]:
    out = h.append(np.asarray(refs, dtype=np.int64), np.asarray(ts, dtype=np.int64),
                   np.asarray(vals, dtype=np.float64), min_valid)
    assert isinstance(out, bytes)
    return list(out)


def test_head_incremental_matches_encode() -> None:
    rng = np.random.default_rng(7)
    nseries, rounds = 50, 400
    h = HeadChunks(120, 7_200_000)
    h.resize(nseries)
    expect_t: list[list[int]] = [[] for _ in range(nseries)]
    expect_v: list[list[float]] = [[] for _ in range(nseries)]
    t = np.full(nseries, 1_700_000_000_000 - 3_600_000, dtype=np.int64)
    for _ in range(rounds):
        refs = rng.permutation(nseries)[: rng.integers(1, nseries)]
        t[refs] += rng.integers(1, 40_000, len(refs))
        vals = np.where(rng.random(len(refs)) < 0.05, STALE_NAN, np.round(rng.normal(size=len(refs)), 3))
        st = _append(h, refs, t[refs], vals)
        assert st == [OK] * len(refs)
        for r, tt, vv in zip(refs.tolist(), t[refs].tolist(), vals.tolist()):
            expect_t[r].append(tt)
            expect_v[r].append(vv)
    for r in range(nseries):
        chunks = h.chunks(r, -(2**63), 2**63 - 1)
        assert sum(chunkenc.num_samples(c) for _, _, c in chunks) == len(expect_t[r]) == h.num_samples(r)
        assert h.num_chunks(r) == len(chunks)
        all_t: list[int] = []
        all_v: list[float] = []
        for cmin, cmax, data in chunks:
            ct, cv = decode(data)
            assert data == encode(ct, cv)                    # incremental == one-shot encode
            assert (cmin, cmax) == (ct[0], ct[-1])
            assert len(ct) <= 120
            assert ct[0] // 7_200_000 == ct[-1] // 7_200_000  # never straddles a block
            all_t += ct.tolist()
            all_v += cv.tolist()
        assert all_t == expect_t[r]
        np.testing.assert_array_equal(_bits(all_v), _bits(expect_v[r]))
        st, sv = chunkenc.head_samples(h, r, -(2**63), 2**63 - 1)
        np.testing.assert_array_equal(st, expect_t[r])
        assert h.bounds(r) == (expect_t[r][0], expect_t[r][-1])
        lt, lv = h.last(r)
        assert lt == expect_t[r][-1] and struct.pack("<d", lv) == struct.pack("<d", expect_v[r][-1])


def test_head_cut_rules() -> None:
    h = HeadChunks(samples_per_chunk=4, chunk_range_ms=1000)
    h.resize(2)
    # 4 per chunk within one range, then a cut at the range boundary.
    assert _append(h, [0] * 7, [0, 10, 20, 30, 40, 999, 1000], range(7)) == [OK] * 7
    spans = [(a, b) for a, b, _ in h.chunks(0, -10, 10_000)]
    assert spans == [(0, 30), (40, 999), (1000, 1000)]
    # negative timestamps use floor division for the range: -1 and 0 are in different ranges
    assert _append(h, [1, 1, 1], [-1001, -1, 0], [1.0, 2.0, 3.0]) == [OK] * 3
    assert [(a, b) for a, b, _ in h.chunks(1, -10_000, 10_000)] == [(-1001, -1001), (-1, -1), (0, 0)]
    for _, _, data in h.chunks(0, -10, 10_000) + h.chunks(1, -10_000, 10_000):
        assert data == encode(*decode(data))


def test_head_status_codes() -> None:
    h = HeadChunks()
    h.resize(3)
    st = _append(
        h,
        [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2],
        [100, 100, 100, 50, 200, 10, 5, 5, 300, 300, 300],
        [1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 6.0, STALE_NAN, STALE_NAN, math.nan],
        min_valid=20,
    )
    assert st == [OK, SAME_DUPLICATE, DUPLICATE, OUT_OF_ORDER, OK, TOO_OLD, TOO_OLD, TOO_OLD,
                  OK, SAME_DUPLICATE, DUPLICATE]
    assert h.num_samples(0) == 2 and h.num_samples(1) == 0 and h.num_samples(2) == 1
    assert h.bounds(1) is None and h.last(1) is None
    assert h.last(0) == (200, 4.0)
    # ordering is against the series' last sample even right after a cut
    h2 = HeadChunks(samples_per_chunk=2)
    h2.resize(1)
    assert _append(h2, [0, 0, 0, 0, 0], [1, 2, 3, 2, 3], [1.0, 1.0, 1.0, 1.0, 1.0]) == \
        [OK, OK, OK, OUT_OF_ORDER, SAME_DUPLICATE]


def test_head_bad_refs_and_inputs() -> None:
    h = HeadChunks()
    h.resize(2)
    with pytest.raises(IndexError):
        _append(h, [0, 2], [1, 2], [1.0, 1.0])
    assert h.num_samples(0) == 0                 # validated before anything was appended
    with pytest.raises(IndexError):
        _append(h, [-1], [1], [1.0])
    with pytest.raises(IndexError):
        h.chunks(5, 0, 1)
    with pytest.raises(ValueError):
        _append(h, [0, 1], [1], [1.0, 2.0])
    with pytest.raises(TypeError):
        h.append(np.zeros(1, dtype=np.int32), np.zeros(1, dtype=np.int64), np.zeros(1), 0)
    h.resize(1)                                  # never shrinks
    assert len(h) == 2
    h.resize(10)
    assert len(h) == 10 and h.bounds(9) is None
    with pytest.raises(ValueError):
        HeadChunks(0)
    with pytest.raises(ValueError):
        HeadChunks(120, 0)


def test_head_chunks_range_filter() -> None:
    h = HeadChunks(samples_per_chunk=10, chunk_range_ms=10**12)
    h.resize(1)
    ts = np.arange(35, dtype=np.int64) * 10     # chunks [0,90] [100,190] [200,290] open [300,340]
    _append(h, np.zeros(35), ts, ts * 0.5)
    def spans(lo: int, hi: int) -> list[tuple[int, int]]:
        return [(a, b) for a, b, _ in h.chunks(0, lo, hi)]
    assert spans(-100, 10_000) == [(0, 90), (100, 190), (200, 290), (300, 340)]
    assert spans(90, 100) == [(0, 90), (100, 190)]
    assert spans(91, 99) == []
    assert spans(195, 305) == [(200, 290), (300, 340)]
    assert spans(340, 340) == [(300, 340)]
    assert spans(341, 10_000) == []
    assert spans(-100, -1) == []
    open_chunk = h.chunks(0, 300, 300)[0][2]
    assert open_chunk == encode(ts[30:], ts[30:] * 0.5)
    st, sv = chunkenc.head_samples(h, 0, 95, 305)
    np.testing.assert_array_equal(st, ts[10:31])
    np.testing.assert_array_equal(sv, ts[10:31] * 0.5)


def test_head_truncate_clear_and_memory() -> None:
    h = HeadChunks(samples_per_chunk=10)
    h.resize(3)
    base = h.memory_bytes()
    ts = np.arange(25, dtype=np.int64) * 10
    _append(h, np.zeros(25), ts, np.ones(25))
    _append(h, np.ones(5), ts[:5], np.ones(5))
    grown = h.memory_bytes()
    assert grown > base
    assert h.truncate_before(0) == 0
    assert h.truncate_before(150) == 1           # [0,90] freed, [100,190] kept
    assert h.bounds(0) == (100, 240)
    assert h.num_samples(0) == 15
    assert h.memory_bytes() < grown
    assert h.truncate_before(10_000) == 1        # completed chunks only: open chunk stays
    assert h.bounds(0) == (200, 240) and h.bounds(1) == (0, 40)
    assert h.truncate_before(10_000, include_open=True) == 2
    assert h.bounds(0) is None and h.bounds(1) is None
    assert _append(h, [0], [5], [1.0]) == [OK]   # a freed series starts over
    h.clear(0)
    assert h.num_samples(0) == 0 and h.chunks(0, 0, 100) == []
    assert h.memory_bytes() == base


def test_head_memory_per_series_is_compact() -> None:
    h = HeadChunks()
    n = 10_000
    h.resize(n)
    refs = np.arange(n, dtype=np.int64)
    for i in range(120):
        _append(h, refs, np.full(n, i * 15_000), refs + i * 0.25)
    per_series = h.memory_bytes() / n
    # 64 bytes of state plus one open 120-sample chunk with bounded growth slack
    assert per_series < 64 + 1.6 * len(h.chunks(0, 0, 10**9)[0][2]) + 64


# -- bit-exactness against real Prometheus ----------------------------------------------------

def _crc32c(data: bytes) -> int:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _uvarint(buf: bytes, i: int) -> tuple[int, int]:
    x = shift = 0
    while True:
        b = buf[i]
        i += 1
        x |= (b & 0x7F) << shift
        if b < 0x80:
            return x, i
        shift += 7


def _segment_chunks(path: Path) -> list[tuple[int, bytes]]:
    data = path.read_bytes()
    assert data[:4] == bytes.fromhex("85BD40DD") and data[4] == 1
    out = []
    i = 8
    while i < len(data):
        n, j = _uvarint(data, i)
        enc = data[j]
        chunk = data[j + 1:j + 1 + n]
        crc = int.from_bytes(data[j + 1 + n:j + 5 + n], "big")
        assert crc == _crc32c(data[j:j + 1 + n])
        out.append((enc, chunk))
        i = j + 5 + n
    return out


def _om_float(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


@pytest.mark.skipif(not os.path.exists(PROMTOOL), reason="promtool not installed at /usr/bin/promtool")
def test_bit_exact_with_promtool_blocks(tmp_path: Path) -> None:
    rng = np.random.default_rng(42)
    base = (1_700_000_000_000 // 7_200_000) * 7_200_000 + 1_000
    series: dict[str, tuple[list[int], list[float]]] = {}

    def add(name: str, ts_ms: np.ndarray, vals: np.ndarray) -> None:
        keep_t, keep_v, last = [], [], None
        for t, v in zip(ts_ms.tolist(), vals.tolist()):
            text = f"{t // 1000}.{t % 1000:03d}"
            parsed = int(float(text) * 1000)    # what the OpenMetrics parser computes
            if parsed != t or (last is not None and t <= last):
                continue
            keep_t.append(t)
            keep_v.append(v)
            last = t
        series[name] = (keep_t, keep_v)

    n = 400
    regular = base + np.arange(n) * 15_000
    add('pr_counter{job="a"}', regular, np.cumsum(rng.integers(0, 500, n)).astype(float))
    jitter = base + np.cumsum(rng.integers(9_000, 21_000, n))
    add('pr_gauge{job="b"}', jitter, np.round(rng.normal(100, 25, n), 3))
    # every delta-of-delta bucket, including 64-bit gaps, and odd values
    steps = np.array([1000, 1000, 9192, 1000, 66_536, 1000, 525_288, 1000, 1_900_000, 1000,
                      15_000, 2, 15_000, 7, 600_000, 30_000] * 6)
    odd = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, 5e-324, -1.5, 1.0, 2**53, 0.1, 3.0]
    vals = np.array((odd * (len(steps) // len(odd) + 1))[:len(steps)])
    add('pr_odd{job="c"}', base + np.cumsum(steps), vals)
    add('pr_const{job="d"}', regular[:250], np.full(250, 7.0))
    add('pr_random{job="e"}', regular[:300],
        rng.integers(0, 2**62, 300).astype(np.uint64).view(np.float64))
    # keep the random-bits series to finite non-NaN values OpenMetrics text can carry exactly
    t_, v_ = series['pr_random{job="e"}']
    series['pr_random{job="e"}'] = ([t for t, v in zip(t_, v_) if math.isfinite(v)],
                                    [v for v in v_ if math.isfinite(v)])

    lines = []
    for name, (ts, vs) in series.items():
        lines.append(f"# TYPE {name.split('{')[0]} gauge")
        lines += [f"{name} {_om_float(v)} {t // 1000}.{t % 1000:03d}" for t, v in zip(ts, vs)]
    lines.append("# EOF")
    om = tmp_path / "in.om"
    om.write_text("\n".join(lines) + "\n")
    out = tmp_path / "blocks"
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(om), str(out)],
                   check=True, capture_output=True, timeout=120)

    segments = sorted(out.glob("*/chunks/*"))
    assert segments
    xor_chunks = [c for seg in segments for enc, c in _segment_chunks(seg) if enc == 1]
    total = 0
    for chunk in xor_chunks:
        t, v = decode(chunk)
        assert encode(t, v) == chunk                  # byte-for-byte what Prometheus wrote
        # the chunk is a contiguous run of exactly one input series
        matches = []
        for name, (ets, evs) in series.items():
            if t[0] in ets:
                i = ets.index(int(t[0]))
                exp_t = np.array(ets[i:i + len(t)])
                exp_v = np.array(evs[i:i + len(t)])
                if len(exp_t) == len(t) and (exp_t == t).all() and \
                        all((a == b) or (math.isnan(a) and math.isnan(b)) for a, b in zip(exp_v, v)):
                    matches.append(name)
        assert len(matches) == 1
        total += len(t)
    assert total == sum(len(ts) for ts, _ in series.values())
