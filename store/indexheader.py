"""The index-header: the few parts of a block's ``index`` a store keeps locally.

To answer a query the store must map label matchers to postings lists and series ids to label
strings. Those need the symbol table and the postings offset table -- typically a few percent
of the index. They are fetched once with ranged reads (TOC, then header+symbols, then the
offset table), streamed to ``<data_dir>/<ULID>/index-header`` so a restart costs no bucket
reads, and everything else (postings lists, series entries) is read on demand by range.

The header file is mmapped, not read into memory (as Thanos's index-header reader): per block
only compact arrays stay in memory -- a uint32 position per symbol and per postings offset
table value, an int64 offset per postings list, one str per label name. Strings are decoded
from the mapping when a query needs them (store/_indexheader.c), so a block's resident cost
is a few bytes per distinct label value instead of a Python object per string.

Own file format (not Thanos's): ``magic u32 | version u8 | index version u8 | index size u64 |
TOC (52 bytes, verbatim) | u32 len + symbols section | u32 len + postings offset table section |
CRC32C u32`` of everything before it. Sections are kept byte-for-byte as in the index, so their
own CRCs are checked again on load.
"""
from __future__ import annotations

import io
import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from objstore import Bucket
from receiver.tsdb._blockio import crc32c

from ._indexheader import (eq_postings_ranges, label_sets, offset_table_positions,
                           string_positions, strings_range)
from receiver.tsdb.chunks import CorruptionError
from receiver.tsdb.index import HEADER_LEN, INDEX_FORMAT_V2, MAGIC_INDEX, TOC, TOC_LEN

HEADER_MAGIC = 0x50524948  # "PRIH"
HEADER_VERSION = 1
HEADER_FILENAME = "index-header"
_PREFIX = struct.Struct(">IBBQ")
_WINDOW = 1 << 20  # bytes of the mapped header checked before their pages are let go
FETCH_PIECE = 1 << 20  # ranged reads while building a header: bounded memory for any size


def _section_body(buf: bytes | mmap.mmap, off: int, what: str) -> tuple[int, int]:
    """Check the ``len body crc`` section at ``off`` of ``buf``; return the body's [start, end)."""
    if off + 4 > len(buf):
        raise CorruptionError(f"index-header: {what} truncated")
    (ln,) = struct.unpack_from(">I", buf, off)
    start, end = off + 4, off + 4 + ln
    if end + 4 > len(buf):
        raise CorruptionError(f"index-header: {what} runs past its end")
    (want,) = struct.unpack_from(">I", buf, end)
    with memoryview(buf) as mv:
        ok = crc32c(mv[start:end]) == want
    if not ok:
        raise CorruptionError(f"index-header: {what}: checksum mismatch")
    return start, end


def _parse_toc(raw: bytes, index_size: int) -> TOC:
    if len(raw) != TOC_LEN:
        raise CorruptionError("index: TOC truncated")
    fields = struct.unpack(">6QI", raw)
    if crc32c(raw[:48]) != fields[6]:
        raise CorruptionError("index: TOC checksum mismatch")
    toc = TOC(*fields[:6])
    for name, off in vars(toc).items():
        if off > index_size - TOC_LEN:
            raise CorruptionError(f"index: TOC {name} offset {off} past end")
    if not HEADER_LEN <= toc.symbols < toc.series <= toc.postings <= toc.postings_table:
        raise CorruptionError("index: TOC sections out of order")
    return toc


class IndexHeader:
    """Symbols and postings offsets of one block's index, plus section bounds for range reads,
    over the bytes of an index-header file (an mmap of it, or bytes)."""

    def __init__(self, buf: bytes | mmap.mmap) -> None:
        self._buf = buf
        if len(buf) < _PREFIX.size + TOC_LEN + 12:
            raise CorruptionError("index-header: file too short")
        (want,) = struct.unpack_from(">I", buf, len(buf) - 4)
        crc = 0
        with memoryview(buf) as mv:
            for a in range(0, len(buf) - 4, _WINDOW):  # a window at a time: bounded RSS
                crc = crc32c(mv[a:min(a + _WINDOW, len(buf) - 4)], crc)
                self._drop(a, a + _WINDOW)
        if crc != want:
            raise CorruptionError("index-header: checksum mismatch")
        magic, version, _, self.index_size = _PREFIX.unpack_from(buf, 0)
        if magic != HEADER_MAGIC or version != HEADER_VERSION:
            raise CorruptionError("index-header: bad magic or version")
        pos = _PREFIX.size
        self.toc = toc = _parse_toc(bytes(buf[pos:pos + TOC_LEN]), self.index_size)
        pos += TOC_LEN
        (n,) = struct.unpack_from(">I", buf, pos)
        sym_at, pt_at = pos + 4, pos + 8 + n
        if pt_at > len(buf) - 4:
            raise CorruptionError("index-header: symbols run past the file")
        (pt_len,) = struct.unpack_from(">I", buf, pt_at - 4)
        if pt_at + pt_len != len(buf) - 4:
            raise CorruptionError("index-header: postings offset table disagrees with the file")
        self.nbytes = n + pt_len

        start, end = _section_body(buf, sym_at, "symbols")
        (count,) = struct.unpack_from(">I", buf, start)
        self._sym_base = start + 4
        try:
            self._sym_pos = np.frombuffer(string_positions(buf, start + 4, count, end), np.uint32)
        except ValueError as e:
            raise CorruptionError(f"index-header: symbols: {e}") from None
        self._drop(sym_at, end + 4)

        start, end = _section_body(buf, pt_at, "postings offset table")
        (count,) = struct.unpack_from(">I", buf, start)
        self._pt_base = start + 4
        try:
            # Offsets as uint32 for every index under 4 GiB: half the memory.
            narrow = self.index_size <= 0xFFFFFFFF
            names, runs, vpos, offs = offset_table_positions(buf, start + 4, count, end, narrow)
        except ValueError as e:
            raise CorruptionError(f"index-header: {e}") from None
        self._val_pos = np.frombuffer(vpos, np.uint32)
        starts = np.frombuffer(offs, np.uint32 if narrow else np.int64)
        self._start_at = memoryview(starts)
        # A postings list ends where the next one (in file order) starts; the last one at the
        # next section. Reading that whole span is safe: the list's own length prefix bounds it.
        self.postings_end = _next_boundary(toc, toc.postings, index_size=self.index_size)
        if len(starts) and (starts.min() < toc.postings or starts.max() >= self.postings_end):
            raise CorruptionError("index-header: postings offset outside the postings section")
        # Writers lay postings lists out in table order; only if not is an end array kept.
        self._ends: np.ndarray | None = None
        if len(starts) > 1 and not bool(np.all(starts[1:] > starts[:-1])):
            order = np.argsort(starts, kind="stable")
            ends = np.empty_like(starts)
            ends[order] = np.r_[starts[order][1:], self.postings_end]
            self._ends = ends
        r = np.frombuffer(runs, np.int64).tolist()
        self._names: dict[str, tuple[int, int]] = {
            nm: (a, z) for nm, a, z in zip(names, r[:-1], r[1:])}
        self.series_end = _next_boundary(toc, toc.series, self.index_size)
        # eq_ranges's arguments in one tuple: store._indexheader.eq_plans looks up a selection
        # of equality matchers in every block of a request in one call
        self.eq_state = (buf, self._pt_base, self._val_pos, self._start_at, self._ends,
                         self.postings_end, self._names)
        self._drop(0, len(buf))

    def _drop(self, start: int, end: int) -> None:
        """Let go of the mapped pages of [start, end) once read (they stay in the page cache
        and come back on the next touch), so loading a big header never holds it all."""
        if isinstance(self._buf, mmap.mmap):
            a = start - start % mmap.PAGESIZE
            z = min(end, len(self._buf))
            if z > a:
                self._buf.madvise(mmap.MADV_DONTNEED, a, z - a)

    # -- building and persisting

    @staticmethod
    async def _build(bucket: Bucket, index_name: str, index_size: int,
                     out: io.RawIOBase | io.BufferedIOBase) -> None:
        """Write the header file to ``out`` from three (groups of) ranged reads of the index
        (TOC, head, offset table), in pieces of at most FETCH_PIECE bytes."""
        if index_size < HEADER_LEN + TOC_LEN:
            raise CorruptionError(f"{index_name}: too short for an index")
        toc_raw = await bucket.get_range(index_name, index_size - TOC_LEN, TOC_LEN)
        toc = _parse_toc(toc_raw, index_size)
        crc = 0

        def put(b: bytes) -> None:
            nonlocal crc
            crc = crc32c(b, crc)
            out.write(b)

        put(_PREFIX.pack(HEADER_MAGIC, HEADER_VERSION, INDEX_FORMAT_V2, index_size) + toc_raw)
        put(struct.pack(">I", toc.series - toc.symbols))
        at = 0
        while at < toc.series:
            piece = await bucket.get_range(index_name, at, min(FETCH_PIECE, toc.series - at))
            if not piece:
                raise CorruptionError(f"{index_name}: short read of the symbols section")
            if at == 0:
                if len(piece) < HEADER_LEN:
                    raise CorruptionError(f"{index_name}: short read of the index header")
                magic, version = struct.unpack_from(">IB", piece, 0)
                if magic != MAGIC_INDEX:
                    raise CorruptionError(f"{index_name}: bad magic {magic:#x}")
                if version != INDEX_FORMAT_V2:
                    raise CorruptionError(
                        f"{index_name}: unsupported index format version {version}")
            lo = max(toc.symbols - at, 0)
            if lo < len(piece):
                put(piece[lo:])
            at += len(piece)
        pt_len = index_size - TOC_LEN - toc.postings_table
        put(struct.pack(">I", pt_len))
        at = toc.postings_table
        while at < toc.postings_table + pt_len:
            piece = await bucket.get_range(index_name, at,
                                           min(FETCH_PIECE, toc.postings_table + pt_len - at))
            if not piece:
                raise CorruptionError(f"{index_name}: short read of the postings offset table")
            put(piece)
            at += len(piece)
        out.write(struct.pack(">I", crc))

    @classmethod
    async def fetch(cls, bucket: Bucket, index_name: str, index_size: int) -> IndexHeader:
        """Built in memory from ranged reads of the index object (no local file)."""
        out = io.BytesIO()
        await cls._build(bucket, index_name, index_size, out)
        return cls(out.getvalue())

    def to_bytes(self) -> bytes:
        return bytes(self._buf)

    @classmethod
    def from_bytes(cls, b: bytes) -> IndexHeader:
        return cls(b)

    @classmethod
    def open(cls, path: Path) -> IndexHeader:
        """The header file at ``path``, mmapped."""
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise CorruptionError("index-header: empty file")
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return cls(m)
        except BaseException:
            m.close()
            raise

    @classmethod
    async def load_or_fetch(cls, bucket: Bucket, index_name: str, index_size: int,
                            path: Path) -> tuple[IndexHeader, bool]:
        """The header from ``path`` if valid for this index size, else fetched (streamed to
        a tmp file, renamed into place) and opened. Returns (header, fetched)."""
        try:
            h = cls.open(path)
            if h.index_size == index_size:
                return h, False
            h.close()
        except (OSError, ValueError, struct.error):
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                await cls._build(bucket, index_name, index_size, f)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return cls.open(path), True

    def close(self) -> None:
        """Unmap the file (a dropped block); lookups fail afterwards."""
        if isinstance(self._buf, mmap.mmap):
            self._buf.close()

    # -- lookups

    @property
    def num_symbols(self) -> int:
        return len(self._sym_pos)

    @property
    def symbols(self) -> list[str]:
        """Every symbol, decoded (tests and tools; queries use lookup_labels)."""
        return strings_range(self._buf, self._sym_base, self._sym_pos, 0, len(self._sym_pos))

    def label_names(self) -> list[str]:
        return sorted(k for k in self._names if k != "")

    def _values(self, lo: int, hi: int) -> list[str]:
        return strings_range(self._buf, self._pt_base, self._val_pos, lo, hi)

    def label_values(self, name: str) -> list[str]:
        e = self._names.get(name)
        return self._values(*e) if e is not None else []

    def _range_at(self, i: int) -> tuple[int, int]:
        starts = self._start_at  # (a memoryview: a Python int per index, no numpy scalar)
        if self._ends is not None:
            return starts[i], int(self._ends[i])
        return starts[i], starts[i + 1] if i + 1 < len(starts) else self.postings_end

    def postings_range(self, name: str, value: str) -> tuple[int, int] | None:
        """[start, end) of the postings list for ``name=value`` in the index, or None."""
        got = self.eq_ranges([name], [value.encode("utf-8", "surrogatepass")])
        return None if got is None else got[0]

    def eq_ranges(self, names: list[str], values: list[bytes]) -> list[tuple[int, int]] | None:
        """``postings_range`` of each ``names[k]=values[k]`` (values as UTF-8) in one C call
        (a selection of equality matchers over many blocks); None when any has no list."""
        runs = list(map(self._names.get, names))
        if None in runs:
            return None
        try:
            return eq_postings_ranges(self._buf, self._pt_base, self._val_pos, self._start_at,
                                      self._ends, self.postings_end, runs, values)
        except ValueError:
            raise CorruptionError("index-header: postings offset table value runs past "
                                  "its section") from None

    def postings_ranges(self, name: str, keep: Callable[[str], bool]
                        ) -> list[tuple[str, int, int]]:
        """(value, start, end) of every postings list of ``name`` whose value passes ``keep``."""
        e = self._names.get(name)
        if e is None:
            return []
        lo, hi = e
        return [(v, *self._range_at(lo + i)) for i, v in enumerate(self._values(lo, hi))
                if keep(v)]

    def lookup_labels(self, sym_ids: list[int]) -> tuple[tuple[str, str], ...]:
        return self.label_sets(np.array([len(sym_ids) // 2], np.int64),
                               np.asarray(sym_ids, np.int64))[0]

    def label_sets(self, label_counts: np.ndarray | bytes, sym_ids: np.ndarray | bytes
                   ) -> list[tuple[tuple[str, str], ...]]:
        """Label sets of many series from decode_series_batch's flat arrays."""
        try:
            return label_sets(self._buf, self._sym_base, self._sym_pos, label_counts, sym_ids)
        except IndexError:
            raise CorruptionError("index: series names an unknown symbol") from None


def _next_boundary(toc: TOC, after: int, index_size: int) -> int:
    """Start of the first TOC section that begins strictly after ``after`` (or the TOC)."""
    cands = [v for v in vars(toc).values() if v > after]
    return min(cands) if cands else index_size - TOC_LEN
