"""WAL throughput: segment files (receiver.wal) vs LMDB, same columnar records.

Measures, for records of N samples (default 2000):
  * write, fsync "none", one writer            (log() only: bytes reach the page cache)
  * write, fsync "batch", 4 concurrent writers (log() + await sync(): group commit)
  * replay of everything written (warm page cache)
The LMDB variant stores each record's payload (same encoding as the WAL) under an 8-byte
big-endian sequence key (LMDB keeps no checksums, so "lmdb+crc32" adds the WAL's crc32 per
value to compare like with like); "none" = sync=False env, "batch" = the same env plus a shared
env.sync(True) in a worker thread (the same group-commit scheme), and additionally one fsync
per commit (sync=True), which is how LMDB is usually run.

    /work/venv/bin/python bench/bench_wal.py [--records 5000] [--samples 2000] [--dir /tmp/x]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import lmdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from receiver.wal import WAL, SamplesRecord, WALConfig  # noqa: E402
from receiver.wal.records import decode_samples, samples_parts  # noqa: E402

WRITERS = 4
DISTINCT = 64  # records are cycled from a small pool so generation is not measured


def make_records(n_samples: int) -> list[SamplesRecord]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(DISTINCT):
        refs = np.sort(rng.choice(1_000_000, n_samples, replace=False)).astype(np.int64)
        ts = np.full(n_samples, 1_700_000_000_000 + i * 15_000, dtype=np.int64)
        out.append(SamplesRecord(refs, ts, rng.standard_normal(n_samples)))
    return out


# ---- segment-file WAL ------------------------------------------------------------------------


def seg_write_none(d: Path, recs: list, n: int) -> float:
    with WAL(WALConfig(d, fsync="none")) as wal:
        t = time.perf_counter()
        for i in range(n):
            wal.log(None, recs[i % DISTINCT])
        return time.perf_counter() - t


def seg_write_batch(d: Path, recs: list, n: int) -> tuple[float, int]:
    async def main() -> tuple[float, int]:
        wal = WAL(WALConfig(d, fsync="batch"))

        async def writer(k: int) -> None:
            for i in range(k, n, WRITERS):
                wal.log(None, recs[i % DISTINCT])
                await wal.sync()

        t = time.perf_counter()
        await asyncio.gather(*(writer(k) for k in range(WRITERS)))
        dt = time.perf_counter() - t
        wal.close()
        return dt, wal.fsyncs

    return asyncio.run(main())


def seg_replay(d: Path) -> tuple[float, int]:
    with WAL(WALConfig(d, fsync="none")) as wal:
        t = time.perf_counter()
        total = sum(len(r.refs) for r in wal.replay())
        return time.perf_counter() - t, total


# ---- LMDB ------------------------------------------------------------------------------------


class LmdbLog:
    """Minimal LMDB-backed log with the WAL's log/sync/replay shape."""

    def __init__(self, d: Path, sync: str, checksum: bool = False) -> None:
        self.mode = sync  # "none" | "batch" | "commit"
        self.checksum = checksum  # crc32 per value, to compare like with like
        self.env = lmdb.open(str(d), map_size=64 << 30, sync=(sync == "commit"), metasync=(sync == "commit"),
                             lock=True, max_dbs=0)
        self.seq = 0
        self.synced = 0
        self.task: asyncio.Future | None = None
        self.fsyncs = 0

    def log(self, rec: SamplesRecord) -> None:
        parts = samples_parts(rec)
        if self.checksum:
            crc = 0
            for p in parts:
                crc = zlib.crc32(p, crc)
            parts.append(struct.pack("<I", crc))
        payload = b"".join(parts)
        with self.env.begin(write=True) as txn:
            txn.put(struct.pack(">Q", self.seq), payload, append=True)
        self.seq += 1

    async def sync(self) -> None:
        if self.mode != "batch":
            return
        target = self.seq
        while self.synced < target:
            if self.task is None:
                self.task = asyncio.ensure_future(self._commit())
            await asyncio.shield(self.task)

    async def _commit(self) -> None:
        try:
            seq = self.seq
            await asyncio.to_thread(self.env.sync, True)
            self.fsyncs += 1
            self.synced = seq
        finally:
            self.task = None

    def replay_samples(self) -> int:
        total = 0
        with self.env.begin(buffers=True) as txn:
            for _, v in txn.cursor():
                n = len(v)
                if self.checksum:
                    n -= 4
                    if zlib.crc32(v[:n]) != struct.unpack_from("<I", v, n)[0]:
                        raise ValueError("checksum mismatch")
                rec, _ = decode_samples(memoryview(v), 0, n)
                total += len(rec.refs)
        return total

    def close(self) -> None:
        self.env.close()


def lmdb_write(d: Path, recs: list, n: int, mode: str, checksum: bool = False) -> tuple[float, int]:
    db = LmdbLog(d, mode, checksum)
    if mode == "none":
        t = time.perf_counter()
        for i in range(n):
            db.log(recs[i % DISTINCT])
        dt = time.perf_counter() - t
    else:
        async def main() -> float:
            async def writer(k: int) -> None:
                for i in range(k, n, WRITERS):
                    db.log(recs[i % DISTINCT])
                    await db.sync()

            t = time.perf_counter()
            await asyncio.gather(*(writer(k) for k in range(WRITERS)))
            return time.perf_counter() - t

        dt = asyncio.run(main())
    fs = db.fsyncs if mode == "batch" else (n if mode == "commit" else 0)
    db.close()
    return dt, fs


def lmdb_replay(d: Path, checksum: bool = False) -> tuple[float, int]:
    db = LmdbLog(d, "none", checksum)
    t = time.perf_counter()
    total = db.replay_samples()
    dt = time.perf_counter() - t
    db.close()
    return dt, total


# ---- driver ----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--commit-records", type=int, default=1000, help="records for lmdb sync=True")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported")
    ap.add_argument("--dir", type=Path, default=None, help="scratch dir (default: a temp dir)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_wal_", dir=args.dir))
    recs = make_records(args.samples)
    n, s = args.records, args.samples
    print(f"{n} records x {s} samples ({n * s * 24 / 2**20:.0f} MiB of columns), "
          f"{WRITERS} writers for batch, median of {args.repeat}")

    def case(name: str, records: int, write, replay=None) -> None:
        """Run write (and replay) ``repeat`` times on fresh dirs; print the medians."""
        w_times, r_times, syncs = [], [], []
        for k in range(args.repeat):
            d = root / f"{name.split()[0]}{k}"
            os.sync()  # start each run without the previous run's dirty pages being flushed
            dt, fs = write(d)
            w_times.append(dt)
            syncs.append(fs)
            if replay is not None:
                dt, total = replay(d)
                assert total == records * s
                r_times.append(dt)
            shutil.rmtree(d)
        for what, times, extra in (("write", w_times, f"{int(statistics.median(syncs))} fsyncs"),
                                   ("replay", r_times, "")):
            if times:
                dt = statistics.median(times)
                print(f"{name + ' ' + what:<40} {records * s / dt / 1e6:8.2f} M samples/s "
                      f"{records / dt:9.0f} rec/s {dt:7.3f} s  {extra if what == 'write' else ''}", flush=True)

    try:
        case("segments fsync=none", n, lambda d: (seg_write_none(d, recs, n), 0), seg_replay)
        case("segments fsync=batch x4", n, lambda d: seg_write_batch(d, recs, n))
        case("lmdb sync=False", n, lambda d: lmdb_write(d, recs, n, "none"), lmdb_replay)
        case("lmdb+crc32 sync=False", n, lambda d: lmdb_write(d, recs, n, "none", True),
             lambda d: lmdb_replay(d, True))
        case("lmdb sync=False+group env.sync x4", n, lambda d: lmdb_write(d, recs, n, "batch"))
        nc = args.commit_records
        case("lmdb sync=True x4", nc, lambda d: lmdb_write(d, recs, nc, "commit"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
