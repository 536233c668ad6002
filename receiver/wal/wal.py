"""The ingestor's write-ahead log: acknowledged samples survive ``kill -9``; a torn tail is cut.

On-disk format
--------------
The WAL directory holds numbered segment files ``00000000``, ``00000001``, ... (8+ decimal
digits; other names, e.g. a future checkpoint dir and the ``LOCK`` file, are ignored). A new
segment is started when the next frame would push the current one past ``segment_bytes``
(a frame larger than that gets a segment of its own). Segments are a plain sequence of frames,
no segment header::

    offset  size  field
    0       1     type      1 = series, 2 = samples, 3 = series + samples (one request),
                            4.. = see receiver.wal.records (FRAME_RECORDS)
    1       1     version   payload encoding: 2 = compact (written), 1 = raw columns (older WALs)
    2       2     flags     bit 0: the payload is one snappy block (--tsdb.wal-compression);
                            always 0 with version 1
    4       4     length    stored payload bytes, u32 LE
    8       4     crc       zlib.crc32 over header bytes 0..7 followed by the stored payload, u32 LE
    12      4     reserved  0
    16      len   payload   see receiver.wal.records and receiver.wal.compact

The CRC covers the bytes as stored, so a corrupt compressed frame is caught before it is
decompressed. Version-1 frames are multiples of 8 bytes (their arrays were read in place).

Durability
----------
``log`` builds the frame(s) of one request and hands them to the kernel with a single
``writev`` on an ``O_APPEND`` descriptor: once it returns the bytes are in the page cache and a
``kill -9`` of the process cannot lose them. Series and samples of one request share one frame
(type 3), so a request replays all-or-nothing. ``sync`` (policy ``"batch"``) adds power-loss
durability with group commit: one ``fsync`` in a worker thread covers every ``log`` made before
it started, and concurrent callers wait for that same fsync instead of queueing their own.

Recovery
--------
``replay`` reads segments in order, old (version 1) and new frames alike. An invalid frame
(short header, bad type/version/flags/reserved fields, length past end of file, CRC mismatch,
undecompressable or inconsistent payload) in the last non-empty
segment is a torn tail from a crash: the file is truncated at the end of the last valid frame,
a warning is logged and replay stops. The same in any earlier segment, or a gap in the segment
numbers, is real data loss and raises :class:`WALCorruptionError`.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import mmap
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cramjam

from common.varint import read_uvarint

from .records import (
    FRAME_RECORDS,
    TYPE_EXEMPLARS,
    TYPE_HISTOGRAMS,
    TYPE_OOO_HISTOGRAMS,
    TYPE_OOO_SAMPLES,
    TYPE_SAMPLES,
    TYPE_SERIES,
    TYPE_SERIES_SAMPLES,
    ExemplarsRecord,
    RecordDecodeError,
    SamplesRecord,
    HistogramsRecord,
    SeriesRecord,
    OOOHistogramsRecord,
    OOOSamplesRecord,
    decode_record,
    record_parts,
)

log = logging.getLogger(__name__)

VERSION = 2  # encoding of the frames written: 1 = raw columns (read only), 2 = compact
FLAG_SNAPPY = 1  # header flags: the payload is one snappy block
HEADER = struct.Struct("<BBHIII")  # type, version, flags, length, crc, reserved
HEADER_SIZE = HEADER.size  # 16
MAX_PAYLOAD = 0xFFFFFFFF
_SEGMENT_RE = re.compile(r"^\d{8,}$")
LOCK_FILE = "LOCK"


class WALCorruptionError(RuntimeError):
    """Corruption that is not a torn tail: replaying past it would silently drop data."""


@dataclass
class WALConfig:
    dir: Path
    segment_bytes: int = 128 << 20
    fsync: str = "batch"  # "none" | "batch"
    lock: bool = True  # False: the owner holds a lock covering this directory
    compression: bool = True  # snappy-compress each frame's payload (--tsdb.wal-compression)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir)
        if self.fsync not in ("none", "batch"):
            raise ValueError(f"fsync must be 'none' or 'batch', not {self.fsync!r}")
        if self.segment_bytes < HEADER_SIZE:
            raise ValueError("segment_bytes too small")


class _BadFrame(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


def _decompress(stored: memoryview) -> memoryview:
    """The payload of a snappy frame; a length header past what snappy can expand to is corrupt."""
    try:
        size, _ = read_uvarint(stored, 0, "snappy length header")
    except ValueError as e:
        raise RecordDecodeError(str(e)) from None
    if size > len(stored) * 22 + 64:
        raise RecordDecodeError(f"snappy: header claims {size} bytes from {len(stored)}")
    try:
        return memoryview(bytes(cramjam.snappy.decompress_raw(stored)))
    except Exception as e:  # cramjam raises its own DecompressionError
        raise RecordDecodeError(f"snappy: {e}") from None


def _frames(buf: memoryview) -> Iterator[SeriesRecord | SamplesRecord]:
    """Decode all frames of one segment; raises _BadFrame at the first invalid one."""
    size = len(buf)
    off = 0
    while off < size:
        if size - off < HEADER_SIZE:
            raise _BadFrame(off, f"short frame header ({size - off} bytes)")
        typ, ver, flags, length, crc, rsv2 = HEADER.unpack_from(buf, off)
        if (typ not in FRAME_RECORDS or ver not in (1, 2) or rsv2
                or flags & ~FLAG_SNAPPY or (ver == 1 and flags)):
            raise _BadFrame(off, "invalid frame header")
        p = off + HEADER_SIZE
        end = p + length
        if end > size:
            raise _BadFrame(off, f"frame length {length} runs past end of segment")
        if zlib.crc32(buf[p:end], zlib.crc32(buf[off:off + 8])) != crc:
            raise _BadFrame(off, "checksum mismatch")
        recs: list = []
        try:
            data, q, stop = buf, p, end
            if flags & FLAG_SNAPPY:
                data = _decompress(buf[p:end])
                q, stop = 0, len(data)
            for sub in FRAME_RECORDS[typ]:
                rec, q = decode_record(sub, ver, data, q, stop)
                recs.append(rec)
        except RecordDecodeError as e:
            raise _BadFrame(off, str(e)) from None
        if q != stop:
            raise _BadFrame(off, "payload shorter than frame")
        off = end
        yield from recs


class _SegmentView:
    """Read-only mmap of a segment: replay decodes straight from the page cache, no 128 MiB read()."""

    def __init__(self, path: Path) -> None:
        self._mm: mmap.mmap | None = None
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size:
                self._mm = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
                self._mm.madvise(mmap.MADV_SEQUENTIAL)

    def __enter__(self) -> memoryview:
        self._mv = memoryview(self._mm) if self._mm is not None else memoryview(b"")
        return self._mv

    def __exit__(self, *exc: object) -> None:
        try:
            self._mv.release()
            if self._mm is not None:
                self._mm.close()
        except BufferError:
            pass  # a decode traceback still holds a view; the mapping is freed with it


def _fsync_all(fds: list[int], dirpath: Path | None) -> None:
    """Worker-thread body of a group commit; owns (and closes) ``fds``."""
    try:
        for fd in fds:
            os.fsync(fd)
        if dirpath is not None:
            _fsync_dir(dirpath)
    finally:
        for fd in fds:
            os.close(fd)


def lock_dir(dirpath: Path, what: str) -> int:
    """Take the exclusive ``LOCK`` file of ``dirpath``; returns its descriptor (held until closed)."""
    fd = os.open(dirpath / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"{what} {dirpath} is in use by another process") from None
    return fd


def _fsync_dir(dirpath: Path) -> None:
    dfd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class WAL:
    """Segment-file WAL. Use from one thread (the event loop); only fsyncs run elsewhere."""

    def __init__(self, cfg: WALConfig) -> None:
        self.cfg = cfg
        cfg.dir.mkdir(parents=True, exist_ok=True)
        # One writer per directory: a second ingestor appending would interleave frames.
        self._lock_fd = lock_dir(cfg.dir, "WAL directory") if cfg.lock else None
        self._fd: int | None = None  # current segment, O_APPEND; opened on first log()
        self._seg = -1
        self._seg_size = 0
        self._tail_checked = False  # last segment verified (by replay or before first write)
        self._pending_fds: list[int] = []  # rotated-away segments with unsynced writes
        self._dir_dirty = False  # a segment file was created since the last fsync
        self._wseq = 0  # number of successful log() writes
        self._synced_seq = 0  # writes covered by a completed fsync
        self._sync_task: asyncio.Future | None = None
        self._broken: BaseException | None = None
        self._closed = False
        self.fsyncs = 0  # completed group commits (each = fsync of the touched segment files)
        self.bytes_written = 0
        self.records_written = 0
        self.writes_failed = 0  # prometheus_tsdb_wal_writes_failed_total
        self.repairs = 0  # torn tails cut (counted as corruptions, as Prometheus repairs them)
        self.fsync_seconds = 0.0  # sum of prometheus_tsdb_wal_fsync_duration_seconds

    # ---- segments -------------------------------------------------------------------------

    def _path(self, seg: int) -> Path:
        return self.cfg.dir / f"{seg:08d}"

    @property
    def current_segment(self) -> int:
        """The segment being written (-1 before the first write)."""
        return self._seg

    def segments(self) -> list[int]:
        """Numbers of the segment files present, ascending."""
        return sorted(int(n) for n in os.listdir(self.cfg.dir) if _SEGMENT_RE.match(n))

    def truncate_before(self, segment: int) -> None:
        """Delete every segment numbered below ``segment`` (the head no longer needs them)."""
        segs = self.segments()
        if segs and segment > segs[-1]:
            raise ValueError(f"cannot delete segment {segs[-1]}: it is the one being written")
        deleted = False
        for s in segs:
            if s >= segment:
                break
            os.unlink(self._path(s))  # oldest first, so a crash leaves a contiguous suffix
            deleted = True
        if deleted and self.cfg.fsync == "batch":
            _fsync_dir(self.cfg.dir)

    def rotate(self) -> int:
        """Start a new segment now (e.g. before a checkpoint) and return its number."""
        self._check_usable()
        self._open_writer()
        self._next_segment()
        return self._seg

    # ---- replay ---------------------------------------------------------------------------

    def replay(self, on_corruption: Callable[[str], None] | None = None
               ) -> Iterator[SeriesRecord | SamplesRecord]:
        """Yield every valid record in write order, cutting a torn tail in the last segment.

        Corruption elsewhere (a bad frame before the last segment, missing segments) raises
        :class:`WALCorruptionError`, unless ``on_corruption`` is given: then it is told what was
        lost and replay goes on with the next segment (an ingestor must start again)."""
        def corrupt(msg: str) -> None:
            if on_corruption is None:
                raise WALCorruptionError(msg)
            on_corruption(msg)

        segs = self.segments()
        for a, b in zip(segs, segs[1:]):
            if b != a + 1:
                corrupt(f"WAL {self.cfg.dir}: segments {a + 1}..{b - 1} are missing")
        last = self._last_nonempty(segs)
        for seg in segs:
            bad = None
            with _SegmentView(self._path(seg)) as buf:
                try:
                    yield from _frames(buf)
                except _BadFrame as e:
                    bad, size = e, len(buf)
            if bad is not None:
                if seg < last:
                    corrupt(f"WAL {self.cfg.dir}: segment {seg:08d} is corrupt at offset "
                            f"{bad.offset} ({bad.reason}) and is not the last segment; "
                            f"the rest of it ({size - bad.offset} bytes) is skipped")
                    continue
                self._cut(seg, bad, size)
                break
        self._tail_checked = True

    def _last_nonempty(self, segs: list[int]) -> int:
        for seg in reversed(segs):
            if self._path(seg).stat().st_size > 0:
                return seg
        return segs[-1] if segs else -1

    def _cut(self, seg: int, e: _BadFrame, size: int) -> None:
        log.warning(
            "WAL %s: torn tail in segment %08d at offset %d (%s); truncating %d bytes",
            self.cfg.dir, seg, e.offset, e.reason, size - e.offset,
        )
        self.repairs += 1
        path = self._path(seg)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, e.offset)
            if self.cfg.fsync == "batch":
                os.fsync(fd)
        finally:
            os.close(fd)
        if seg == self._seg:
            self._seg_size = e.offset

    def _check_tail(self) -> None:
        """Cut a torn tail before the first write if replay was skipped or not run to the end."""
        segs = self.segments()
        last = self._last_nonempty(segs)
        if last >= 0:
            bad = None
            with _SegmentView(self._path(last)) as buf:
                try:
                    for _ in _frames(buf):
                        pass
                except _BadFrame as e:
                    bad, size = e, len(buf)
            if bad is not None:
                self._cut(last, bad, size)
        self._tail_checked = True

    # ---- writing --------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("WAL is closed")
        if self._broken is not None:
            raise RuntimeError("WAL failed earlier and must be reopened") from self._broken

    def _open_writer(self) -> None:
        if self._fd is not None:
            return
        if not self._tail_checked:
            self._check_tail()
        segs = self.segments()
        self._open_segment(segs[-1] if segs else 0)

    def _open_segment(self, seg: int) -> None:
        path = self._path(seg)
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._fd, self._seg, self._seg_size = fd, seg, os.fstat(fd).st_size
        if created:
            self._dir_dirty = True

    def _next_segment(self) -> None:
        old = self._fd
        assert old is not None
        if self.cfg.fsync == "batch" and self._synced_seq < self._wseq:
            self._pending_fds.append(old)  # the next group commit must still fsync it
        else:
            os.close(old)
        self._fd = None
        self._open_segment(self._seg + 1)

    def release(self) -> bool:
        """Close the segment descriptor if no fsync still needs it (the next ``log`` reopens
        it), so that thousands of idle WALs hold no descriptors; returns whether it did."""
        if self._fd is None:
            return True
        if self._sync_task is not None or self._pending_fds or (
                self.cfg.fsync == "batch" and self._synced_seq < self._wseq):
            return False
        os.close(self._fd)
        self._fd = None
        return True

    def log(self, series: SeriesRecord | None, samples: SamplesRecord | None,
            histograms: HistogramsRecord | None = None,
            ooo: OOOSamplesRecord | None = None,
            ooo_histograms: OOOHistogramsRecord | None = None,
            exemplars: ExemplarsRecord | None = None) -> None:
        """Append one request's new series and accepted samples (float, then native
        histogram, then out-of-order float and native histogram, then exemplars) as a single
        write."""
        self._check_usable()
        has_series = series is not None and len(series.refs) > 0
        has_samples = samples is not None and len(samples.refs) > 0
        if not has_series and not has_samples and series is not None and len(series.keys):
            raise ValueError("series record: keys without refs")
        frames: list = []
        if has_series or has_samples:
            typ = (TYPE_SERIES_SAMPLES if has_series and has_samples
                   else TYPE_SERIES if has_series else TYPE_SAMPLES)
            frames = self._frame(typ, [r for r in (series, samples) if r is not None and len(r.refs)])
        for typ, rec in ((TYPE_HISTOGRAMS, histograms), (TYPE_OOO_SAMPLES, ooo),
                         (TYPE_OOO_HISTOGRAMS, ooo_histograms), (TYPE_EXEMPLARS, exemplars)):
            if rec is not None and len(rec.refs) > 0:
                frames += self._frame(typ, [rec])
        if frames:
            self._append_frames(frames)

    def _frame(self, typ: int, recs: list) -> list:
        """Header + payload buffers of one frame holding ``recs`` (the records of ``typ``)."""
        parts: list = []
        for sub, rec in zip(FRAME_RECORDS[typ], recs, strict=True):
            parts += record_parts(sub, rec)
        flags = 0
        if self.cfg.compression:
            raw = b"".join(parts)
            packed = cramjam.snappy.compress_raw(raw)
            if len(packed) < len(raw):  # incompressible payloads are stored as they are
                parts, flags = [memoryview(packed)], FLAG_SNAPPY
        length = sum(memoryview(p).nbytes for p in parts)
        if length > MAX_PAYLOAD:
            raise ValueError(f"WAL record of {length} bytes is too large")
        head8 = HEADER.pack(typ, VERSION, flags, length, 0, 0)[:8]
        crc = zlib.crc32(head8)
        for p in parts:
            crc = zlib.crc32(p, crc)
        return [head8 + struct.pack("<II", crc, 0), *parts]

    def _append_frames(self, bufs: list) -> None:
        """Write whole frames with one writev (a new segment first if they would overflow)."""
        total = sum(memoryview(p).nbytes for p in bufs)
        self._open_writer()
        if self._seg_size > 0 and self._seg_size + total > self.cfg.segment_bytes:
            self._next_segment()
        self._write_all(bufs, total)
        self._seg_size += total
        self._wseq += 1
        self.bytes_written += total
        self.records_written += 1

    def _write_all(self, bufs: list, total: int) -> None:
        """writev the frame; on failure cut the segment back so no partial frame stays behind."""
        fd = self._fd
        assert fd is not None
        try:
            n = os.writev(fd, bufs)
            if n < total:  # only on ENOSPC-like conditions; finish with plain writes
                rest = memoryview(b"".join(bufs))[n:]
                while rest:
                    rest = rest[os.write(fd, rest):]
        except BaseException as e:
            self.writes_failed += 1
            try:
                os.ftruncate(fd, self._seg_size)
            except OSError:
                self._broken = e  # cannot restore a clean tail: stop writing
            raise

    # ---- syncing --------------------------------------------------------------------------

    async def sync(self, force: bool = False) -> None:
        """Return once every record logged before this call is on stable storage.

        With fsync "batch", callers that arrive while an fsync is running wait for it and then
        share the next one, so N concurrent requests cost about two fsyncs, not N. With "none"
        only ``force`` (shutdown) fsyncs.
        """
        if self.cfg.fsync == "none" and not force:
            return
        self._check_usable()
        target = self._wseq
        while self._synced_seq < target:
            task = self._sync_task
            if task is None:
                task = self._sync_task = asyncio.ensure_future(self._group_commit())
            # shield: a cancelled caller must not cancel the fsync others are waiting on.
            await asyncio.shield(task)

    async def _group_commit(self) -> None:
        try:
            seq = self._wseq
            fds, self._pending_fds = self._pending_fds, []
            if self._fd is not None:
                fds.append(os.dup(self._fd))  # the thread owns its own descriptor
            dirty, self._dir_dirty = self._dir_dirty, False
            t0 = time.perf_counter()
            await asyncio.to_thread(_fsync_all, fds, self.cfg.dir if dirty else None)
            self.fsync_seconds += time.perf_counter() - t0
            self.fsyncs += 1
            self._synced_seq = max(self._synced_seq, seq)
        except OSError as e:
            # After a failed fsync the page cache state is unknown (data may be dropped);
            # retrying could falsely succeed, so refuse all further writes.
            self.writes_failed += 1
            self._broken = e
            raise
        finally:
            self._sync_task = None

    def close(self) -> None:
        """Flush (policy "batch") and release the directory."""
        if self._closed:
            return
        self._closed = True
        fds = self._pending_fds
        self._pending_fds = []
        if self._fd is not None:
            fds.append(self._fd)
            self._fd = None
        try:
            if self.cfg.fsync == "batch" and self._broken is None and self._synced_seq < self._wseq:
                _fsync_all(fds, self.cfg.dir if self._dir_dirty else None)
                self._synced_seq = self._wseq
                self.fsyncs += 1
            else:
                for fd in fds:
                    os.close(fd)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
