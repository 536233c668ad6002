"""WAL: round trips, rotation, torn-tail repair, corruption detection, kill -9, group commit."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from receiver.tsdb.labels import STALE_NAN_BITS, encode_labels_key
from receiver.wal import WAL, SamplesRecord, SeriesRecord, WALConfig, WALCorruptionError

REPO = Path(__file__).resolve().parents[2]
STALE_NAN = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]


def series(refs: list[int]) -> SeriesRecord:
    keys = [encode_labels_key((("__name__", f"m{r % 7}"), ("i", str(r)))) for r in refs]
    return SeriesRecord(np.array(refs, dtype=np.int64), keys)


def samples(seed: int, n: int) -> SamplesRecord:
    rng = np.random.default_rng(seed)
    vals = rng.standard_normal(n)
    vals[::5] = STALE_NAN
    return SamplesRecord(
        rng.integers(0, 1 << 40, n, dtype=np.int64),
        rng.integers(-(1 << 62), 1 << 62, n, dtype=np.int64),
        vals,
    )


def flat(pairs: list[tuple[SeriesRecord | None, SamplesRecord | None]]) -> list:
    return [r for pair in pairs for r in pair if r is not None and len(r.refs)]


def assert_same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert type(g) is type(w)
        np.testing.assert_array_equal(g.refs, w.refs)
        if isinstance(w, SeriesRecord):
            assert g.keys == w.keys
        else:
            np.testing.assert_array_equal(g.ts, w.ts)
            # bit-exact, NaN payloads included
            np.testing.assert_array_equal(g.vals.view(np.uint64), np.asarray(w.vals).view(np.uint64))


def make_pairs(count: int, start: int = 0) -> list:
    pairs = []
    for i in range(start, start + count):
        s = series(list(range(i * 10, i * 10 + i % 4))) if i % 3 == 0 else None
        pairs.append((s, samples(i, 1 + (i * 37) % 300)))
    return pairs


def write(wal: WAL, pairs: list) -> None:
    for s, m in pairs:
        wal.log(s, m)


def replay_all(d: Path, **kw) -> list:
    with WAL(WALConfig(d, **kw)) as wal:
        return list(wal.replay())


def test_round_trip_across_rotation(tmp_path: Path) -> None:
    pairs = make_pairs(120) + [(series([1, 2]), None), (None, samples(999, 2000))]
    with WAL(WALConfig(tmp_path, segment_bytes=8192)) as wal:
        write(wal, pairs)
        assert len(wal.segments()) > 5
        assert_same(list(wal.replay()), flat(pairs))
        # every segment but the last (the 48 KiB record) respects the size limit
        assert all((tmp_path / f"{s:08d}").stat().st_size <= 8192 for s in wal.segments()[:-1])


def test_replay_after_reopen_and_append(tmp_path: Path) -> None:
    first, second = make_pairs(30), make_pairs(30, start=30)
    with WAL(WALConfig(tmp_path, segment_bytes=16384)) as wal:
        write(wal, first)
    with WAL(WALConfig(tmp_path, segment_bytes=16384)) as wal:
        assert_same(list(wal.replay()), flat(first))
        write(wal, second)
    assert_same(replay_all(tmp_path), flat(first + second))


def test_big_record_gets_own_segment(tmp_path: Path) -> None:
    pairs = [(None, samples(1, 10)), (None, samples(2, 5000)), (None, samples(3, 10))]
    with WAL(WALConfig(tmp_path, segment_bytes=4096)) as wal:
        write(wal, pairs)
        assert wal.segments() == [0, 1, 2]
    assert_same(replay_all(tmp_path), flat(pairs))


def test_combined_record_and_empty_inputs(tmp_path: Path) -> None:
    with WAL(WALConfig(tmp_path)) as wal:
        wal.log(None, None)
        wal.log(SeriesRecord(np.array([], np.int64), []), SamplesRecord(*(np.array([], np.int64),) * 3))
        assert wal.records_written == 0
        wal.log(series([5]), samples(5, 3))
        assert wal.records_written == 1  # one frame for series + samples of one request
        with pytest.raises(ValueError):
            wal.log(None, SamplesRecord(np.arange(3), np.arange(2), np.zeros(3)))
        with pytest.raises(ValueError):
            wal.log(SeriesRecord(np.arange(2), [b"a"]), None)
        assert wal.records_written == 1
    assert_same(replay_all(tmp_path), [series([5]), samples(5, 3)])


def _segment_bytes_and_last_offset(d: Path, pairs: list) -> tuple[bytes, int]:
    with WAL(WALConfig(d)) as wal:
        write(wal, pairs[:-1])
        start = wal.bytes_written
        write(wal, pairs[-1:])
    return (d / "00000000").read_bytes(), start


def test_torn_tail_every_offset(tmp_path: Path) -> None:
    pairs = make_pairs(4) + [(series([77]), samples(77, 3))]
    data, start = _segment_bytes_and_last_offset(tmp_path / "src", pairs)
    assert start < len(data)
    for cut in range(start, len(data)):
        d = tmp_path / f"c{cut}"
        d.mkdir()
        (d / "00000000").write_bytes(data[:cut])
        with WAL(WALConfig(d)) as wal:
            assert_same(list(wal.replay()), flat(pairs[:-1]))
            assert (d / "00000000").stat().st_size == start
            wal.log(None, samples(1000, 4))
        assert_same(replay_all(d), flat(pairs[:-1]) + [samples(1000, 4)])


@pytest.mark.parametrize("garbage", [b"\x00" * 100, b"\x01" + os.urandom(200), b"\x03\x01\x00\x00"])
def test_garbage_appended(tmp_path: Path, garbage: bytes) -> None:
    pairs = make_pairs(5)
    with WAL(WALConfig(tmp_path)) as wal:
        write(wal, pairs)
    with open(tmp_path / "00000000", "ab") as f:
        f.write(garbage)
    with WAL(WALConfig(tmp_path)) as wal:
        assert_same(list(wal.replay()), flat(pairs))
        wal.log(series([9]), samples(9, 9))
    assert_same(replay_all(tmp_path), flat(pairs) + [series([9]), samples(9, 9)])


def test_log_without_replay_still_cuts_torn_tail(tmp_path: Path) -> None:
    pairs = make_pairs(5)
    with WAL(WALConfig(tmp_path)) as wal:
        write(wal, pairs)
    with open(tmp_path / "00000000", "ab") as f:
        f.write(b"\x02\x01\x00\x00\xff\xff")
    with WAL(WALConfig(tmp_path)) as wal:
        wal.log(None, samples(50, 5))
    assert_same(replay_all(tmp_path), flat(pairs) + [samples(50, 5)])


def test_crc_mismatch_mid_last_segment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pairs = [(None, samples(i, 50)) for i in range(6)]
    offsets = []
    with WAL(WALConfig(tmp_path)) as wal:
        for s, m in pairs:
            offsets.append(wal.bytes_written)
            wal.log(s, m)
    path = tmp_path / "00000000"
    data = bytearray(path.read_bytes())
    data[offsets[3] + 100] ^= 0x40  # one bit inside record 3's payload
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="receiver.wal.wal"):
        got = replay_all(tmp_path)
    assert_same(got, flat(pairs[:3]))
    assert path.stat().st_size == offsets[3]
    assert any("checksum mismatch" in r.getMessage() for r in caplog.records)


def test_corruption_in_earlier_segment_raises(tmp_path: Path) -> None:
    pairs = make_pairs(40)
    with WAL(WALConfig(tmp_path, segment_bytes=8192)) as wal:
        write(wal, pairs)
        segs = wal.segments()
    assert len(segs) >= 3
    path = tmp_path / f"{segs[1]:08d}"
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WALCorruptionError, match="not the last segment"):
        replay_all(tmp_path, segment_bytes=8192)
    # truncated (not flipped) earlier segment: also data loss, not a torn tail
    path.write_bytes(bytes(data[:30]))
    with pytest.raises(WALCorruptionError):
        replay_all(tmp_path, segment_bytes=8192)


def test_missing_middle_segment_raises(tmp_path: Path) -> None:
    with WAL(WALConfig(tmp_path, segment_bytes=8192)) as wal:
        write(wal, make_pairs(40))
        segs = wal.segments()
    os.unlink(tmp_path / f"{segs[2]:08d}")
    with pytest.raises(WALCorruptionError, match="missing"):
        replay_all(tmp_path)


def test_truncate_before_and_rotate(tmp_path: Path) -> None:
    pairs = make_pairs(40)
    with WAL(WALConfig(tmp_path, segment_bytes=8192)) as wal:
        write(wal, pairs[:20])
        cut = wal.rotate()
        write(wal, pairs[20:])
        with pytest.raises(ValueError):
            wal.truncate_before(wal.segments()[-1] + 1)
        wal.truncate_before(cut)
        assert wal.segments()[0] == cut
        assert_same(list(wal.replay()), flat(pairs[20:]))


def test_second_writer_is_refused(tmp_path: Path) -> None:
    with WAL(WALConfig(tmp_path)):
        with pytest.raises(RuntimeError, match="in use"):
            WAL(WALConfig(tmp_path))
    WAL(WALConfig(tmp_path)).close()


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    callers = 64

    async def main() -> WAL:
        wal = WAL(WALConfig(tmp_path, segment_bytes=1 << 16, fsync="batch"))
        await wal.sync()
        assert wal.fsyncs == 0  # nothing logged, nothing to sync

        async def request(i: int) -> None:
            await asyncio.sleep(0)
            wal.log(None, samples(i, 500))
            await wal.sync()

        await asyncio.gather(*(request(i) for i in range(callers)))
        assert wal._synced_seq == wal._wseq == callers
        assert 1 <= wal.fsyncs < callers
        before = wal.fsyncs
        await asyncio.gather(*(wal.sync() for _ in range(10)))  # all already durable
        assert wal.fsyncs == before
        return wal

    wal = asyncio.run(main())
    assert len(wal.segments()) > 1  # rotated segments were fsynced by the group commits
    wal.close()
    assert len(replay_all(tmp_path)) == callers


def test_fsync_none_never_fsyncs(tmp_path: Path) -> None:
    async def main() -> int:
        with WAL(WALConfig(tmp_path, fsync="none")) as wal:
            wal.log(None, samples(1, 10))
            await wal.sync()
            return wal.fsyncs

    assert asyncio.run(main()) == 0


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from receiver.wal import WAL, WALConfig
    sys.path.insert(0, sys.argv[3])
    from test_wal import expected
    wal = WAL(WALConfig(sys.argv[1], segment_bytes=1 << 20, fsync="none"))
    i = 0
    while True:
        wal.log(*expected(i))
        print(i, flush=True)
        i += 1
    """
)


def expected(i: int) -> tuple[SeriesRecord | None, SamplesRecord]:
    """Deterministic content of record ``i`` for the kill -9 test (also used by the child)."""
    s = series([i]) if i % 2 == 0 else None
    return s, samples(i, 500 + (i * 131) % 3000)


@pytest.mark.parametrize("kill_after", [50, 400, 1500])
def test_kill_9_loses_no_logged_record(tmp_path: Path, kill_after: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(REPO), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    printed = -1
    for line in proc.stdout:
        printed = int(line)
        if printed >= kill_after:
            break
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()  # lines flushed before the kill are acknowledged too
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    if rest.strip():
        printed = int(rest.split()[-1])
    assert printed >= kill_after

    got = replay_all(tmp_path)
    want: list = []
    i = 0
    while len(want) < len(got):
        want += flat([expected(i)])
        i += 1
    # the child may have logged one record it never got to print
    assert printed + 1 <= i <= printed + 2
    assert_same(got, want)
