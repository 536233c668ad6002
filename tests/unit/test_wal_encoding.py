"""Issue 13: WAL record encodings -- compact (version 2, optionally snappy) and the old raw one.

Every record type round-trips in both settings of --tsdb.wal-compression; a WAL written by the
old code (version-1 frames, fixture below) still replays, also with new frames appended; damage
inside a compressed frame is caught by the checksum (or, past a forged checksum, by the
decoder) and handled like any bad frame: a torn tail is cut, an earlier segment is counted.
"""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import cramjam
import numpy as np
import pytest

from receiver.multitsdb import TenantTSDB, TSDBOptions
from receiver.tsdb.labels import encode_labels_key
from receiver.wal import (WAL, HistogramsRecord, OOOHistogramsRecord, OOOSamplesRecord,
                          SamplesRecord, SeriesRecord, WALConfig)
from receiver.wal.checkpoint import replay_checkpoint, write_checkpoint
from receiver.wal.compact import MAX_ROWS
from receiver.wal.wal import FLAG_SNAPPY, HEADER

# Written by receiver/wal at commit 03b9b96 (before issue 13) from ``old_records()``.
V1_FIXTURE = Path(__file__).parent / "data" / "wal_v1"
STALE_NAN = np.array([0x7FF0000000000002], dtype=np.uint64).view(np.float64)[0]


def old_records() -> list[tuple]:
    """Arguments of ``WAL.log`` covering every frame type: series+samples, series alone,
    samples alone, native histograms, out-of-order floats and histograms."""
    rng = np.random.default_rng(13)
    refs = np.arange(40, dtype=np.int64)
    keys = [encode_labels_key((("__name__", f"m{i}"),)) for i in range(40)]
    vals = rng.standard_normal(40)
    vals[::7] = STALE_NAN
    ts = np.full(40, 1_700_000_000_000, dtype=np.int64)
    return [
        (SeriesRecord(refs[:30], keys[:30]), SamplesRecord(refs[:30], ts[:30], vals[:30])),
        (SeriesRecord(refs[30:], keys[30:]), None),
        (None, SamplesRecord(refs[::-1].copy(), ts + 15_000, -vals)),
        (None, None, HistogramsRecord(refs[:3], ts[:3] + 1, [b"\x08\x01", b"", b"\x10" * 9])),
        (None, None, None, OOOSamplesRecord(refs[5:9], ts[5:9] - 60_000, vals[5:9])),
        (None, None, None, None, OOOHistogramsRecord(refs[:2], ts[:2] - 1, [b"h1", b"h22"])),
    ]


def flat(calls: list[tuple]) -> list:
    return [r for call in calls for r in call if r is not None and len(r.refs)]


def assert_same(got: list, want: list) -> None:
    assert [type(g) for g in got] == [type(w) for w in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.refs, w.refs)
        for name in ("keys", "raw"):
            if hasattr(w, name):
                assert getattr(g, name) == getattr(w, name)
        if hasattr(w, "ts"):
            np.testing.assert_array_equal(g.ts, w.ts)
        if hasattr(w, "vals"):  # bit-exact, NaN payloads and -0.0 included
            np.testing.assert_array_equal(np.asarray(g.vals).view(np.uint64),
                                          np.asarray(w.vals).view(np.uint64))


def edge_records() -> list[tuple]:
    """Records that stress the compact encoding: int64 extremes, wrapping deltas, one row,
    constant columns, empty blobs."""
    i64 = np.iinfo(np.int64)
    wild = np.array([i64.max, i64.min, 0, -1, i64.max, 1 << 40], dtype=np.int64)
    vals = np.array([np.inf, -np.inf, -0.0, STALE_NAN, 1e-308, 5e-324])
    return [
        (SeriesRecord(np.array([7], np.int64), [b""]), SamplesRecord(np.array([7]), np.array([0]), np.array([0.0]))),
        (None, SamplesRecord(wild, wild[::-1].copy(), vals)),
        (None, SamplesRecord(np.full(500, 3, np.int64), np.arange(500, dtype=np.int64), np.ones(500))),
        (None, None, HistogramsRecord(wild, wild, [b""] * 6)),
    ]


@pytest.mark.parametrize("compression", [True, False])
def test_every_record_type_round_trips(tmp_path: Path, compression: bool) -> None:
    calls = old_records() + edge_records()
    with WAL(WALConfig(tmp_path, compression=compression)) as wal:
        for call in calls:
            wal.log(*call)
    with WAL(WALConfig(tmp_path, compression=compression)) as wal:
        assert_same(list(wal.replay()), flat(calls))
    # a reader does not need the writer's setting, and a restart with the other one appends
    with WAL(WALConfig(tmp_path, compression=not compression)) as wal:
        assert_same(list(wal.replay()), flat(calls))
        for call in calls:
            wal.log(*call)
    with WAL(WALConfig(tmp_path, compression=compression)) as wal:
        assert_same(list(wal.replay()), flat(calls) * 2)


def test_compression_flag_is_set_only_when_it_pays(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 2000
    sizes = {}
    for compression in (True, False):
        d = tmp_path / str(compression)
        with WAL(WALConfig(d, compression=compression)) as wal:
            wal.log(None, SamplesRecord(np.arange(n, dtype=np.int64), np.full(n, 1_700_000_000_000),
                                        rng.integers(0, 1000, n).astype(np.float64)))
            wal.log(None, SamplesRecord(np.array([0x0102030405060708]), np.array([0x1122334455667788]),
                                        np.array([np.pi])))
        data = (d / "00000000").read_bytes()
        _, ver, flags, length, _, _ = HEADER.unpack_from(data, 0)
        assert ver == 2 and flags == (FLAG_SNAPPY if compression else 0)
        _, ver, flags, _, _, _ = HEADER.unpack_from(data, HEADER.size + length)
        assert ver == 2 and flags == 0  # 1 sample does not compress: stored as it is
        sizes[compression] = len(data)
    # the compact encoding alone is far below the 24 bytes/sample of version 1
    assert sizes[False] < 11 * n and sizes[True] < sizes[False] // 2


def test_old_format_wal_still_replays_and_takes_new_frames(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    shutil.copytree(V1_FIXTURE, d)
    data = (d / "00000000").read_bytes()
    assert HEADER.unpack_from(data, 0)[1] == 1  # really the old encoding
    with WAL(WALConfig(d)) as wal:
        assert_same(list(wal.replay()), flat(old_records()))
        wal.log(*edge_records()[1])  # appended to the same, old segment
    with WAL(WALConfig(d)) as wal:
        assert_same(list(wal.replay()), flat(old_records()) + flat(edge_records()[1:2]))
        assert (d / "00000000").stat().st_size > len(data)


def test_old_format_wal_replays_into_a_tenant(tmp_path: Path) -> None:
    wal_dir = tmp_path / "t" / "wal"
    shutil.copytree(V1_FIXTURE, wal_dir)
    db = TenantTSDB("t", TSDBOptions(path=tmp_path))
    try:
        assert db.replay() > 0
        st = db.replay_stats  # (the fixture's histogram bytes need not be valid messages)
        assert st.corrupt_segments == 0 and st.unknown_ref_samples == 0 and st.invalid_series == 0
        assert db.head.num_series == 40
    finally:
        db.close()


@pytest.mark.parametrize("compression", [True, False])
def test_checkpoint_round_trip(tmp_path: Path, compression: bool) -> None:
    calls = old_records()
    write_checkpoint(tmp_path, 3, calls, compression=compression)
    assert_same(list(replay_checkpoint(tmp_path / "checkpoint.00000003")), flat(calls))


def _compressed_frames(d: Path, n_frames: int) -> list[int]:
    """Write ``n_frames`` compressible sample frames; returns their offsets."""
    offsets = []
    with WAL(WALConfig(d)) as wal:
        for i in range(n_frames):
            offsets.append(wal.bytes_written)
            wal.log(None, SamplesRecord(np.arange(1000, dtype=np.int64), np.full(1000, i * 15_000),
                                        np.arange(1000, dtype=np.float64) + i))
    data = (d / "00000000").read_bytes()
    assert all(HEADER.unpack_from(data, o)[2] == FLAG_SNAPPY for o in offsets)
    return offsets


def test_corrupt_compressed_frame_fails_checksum_and_tail_is_cut(tmp_path: Path, caplog) -> None:
    offsets = _compressed_frames(tmp_path, 4)
    path = tmp_path / "00000000"
    data = bytearray(path.read_bytes())
    data[offsets[2] + HEADER.size + 20] ^= 0x10
    path.write_bytes(bytes(data))
    with WAL(WALConfig(tmp_path)) as wal:
        got = list(wal.replay())
    assert [int(r.ts[0]) for r in got] == [0, 15_000]
    assert path.stat().st_size == offsets[2]
    assert any("checksum mismatch" in r.getMessage() for r in caplog.records)


def _forge(data: bytearray, off: int, payload: bytes) -> bytes:
    """Replace the frame at ``off`` (the last one) by ``payload`` with a *valid* checksum."""
    typ, ver, flags, _, _, rsv = HEADER.unpack_from(data, off)
    head8 = HEADER.pack(typ, ver, flags, len(payload), 0, rsv)[:8]
    crc = zlib.crc32(payload, zlib.crc32(head8))
    return bytes(data[:off]) + head8 + struct.pack("<II", crc, 0) + payload


@pytest.mark.parametrize("payload", [
    b"\xff\xff\xff\xff\x0f" + b"\x00" * 20,   # claims 4 GiB from 25 bytes
    b"\x80" * 11,                              # length header overflows
    b"\x20\x00garbage-not-snappy",             # not a snappy block
    b"\x04\x0c\x01\x00\x00\x00",               # valid snappy, but 1 row and nothing else
    bytes(cramjam.snappy.compress_raw(struct.pack("<I", MAX_ROWS + 1) + bytes(40))),  # row bomb
])
def test_undecodable_compressed_payload_past_the_checksum_is_a_bad_frame(
        tmp_path: Path, payload: bytes) -> None:
    offsets = _compressed_frames(tmp_path, 3)
    path = tmp_path / "00000000"
    path.write_bytes(_forge(bytearray(path.read_bytes()), offsets[2], payload))
    with WAL(WALConfig(tmp_path)) as wal:
        assert len(list(wal.replay())) == 2
    assert path.stat().st_size == offsets[2]


def test_corrupt_compressed_frame_in_an_earlier_segment_is_counted(tmp_path: Path) -> None:
    """As before issue 13 for raw frames: the rest of that segment is skipped and counted in
    the replay-skipped stats (promring_tsdb_wal_replay_skipped{kind="corrupt_segments"})."""
    db = TenantTSDB("t", TSDBOptions(path=tmp_path))
    rows = np.arange(1000, dtype=np.int64)
    keys = [encode_labels_key((("__name__", f"m{i}"),)) for i in range(1000)]
    db.wal.log(SeriesRecord(rows, keys), SamplesRecord(rows, np.full(1000, 1_000), rows * 1.0))
    seg = db.wal.rotate()
    db.wal.log(None, SamplesRecord(rows, np.full(1000, 2_000), rows * 2.0))
    db.wal.rotate()
    db.wal.log(None, SamplesRecord(rows, np.full(1000, 3_000), rows * 3.0))
    db.close()
    path = db.wal.cfg.dir / f"{seg:08d}"
    data = bytearray(path.read_bytes())
    assert HEADER.unpack_from(data, 0)[2] == FLAG_SNAPPY
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    again = TenantTSDB("t", TSDBOptions(path=tmp_path))
    try:
        assert again.replay() == 2000
        assert again.replay_stats.corrupt_segments == 1 and again.replay_stats.skipped == 1
    finally:
        again.close()


@pytest.mark.parametrize("argv,want", [([], True), (["--tsdb.wal-compression"], True),
                                       (["--no-tsdb.wal-compression"], False)])
def test_wal_compression_flag_reaches_the_tenant_wal(tmp_path: Path, argv: list, want: bool) -> None:
    from promring.cli import build_parser, receive_config
    cfg = receive_config(build_parser().parse_args(["receive", *argv]), str(tmp_path), "", "")
    assert cfg.wal_compression is want
    db = TenantTSDB("t", TSDBOptions(path=tmp_path, wal_compression=cfg.wal_compression))
    rows = np.arange(1000, dtype=np.int64)
    db.wal.log(None, SamplesRecord(rows, np.full(1000, 1_000), rows * 1.0))
    db.close()
    data = (tmp_path / "t" / "wal" / "00000000").read_bytes()
    assert HEADER.unpack_from(data, 0)[2] == (FLAG_SNAPPY if want else 0)
