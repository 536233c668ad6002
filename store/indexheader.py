"""The index-header: the few parts of a block's ``index`` a store keeps locally.

To answer a query the store must map label matchers to postings lists and series ids to label
strings. Those need the symbol table and the postings offset table -- typically a few percent
of the index. They are fetched once with ranged reads (TOC, then header+symbols, then the
offset table), persisted to ``<data_dir>/<ULID>/index-header`` so a restart costs no bucket
reads, and everything else (postings lists, series entries) is read on demand by range.

Own file format (not Thanos's): ``magic u32 | version u8 | index version u8 | index size u64 |
TOC (52 bytes, verbatim) | u32 len + symbols section | u32 len + postings offset table section |
CRC32C u32`` of everything before it. Sections are kept byte-for-byte as in the index, so their
own CRCs are checked again on load.
"""
from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from objstore import Bucket
from receiver.tsdb._blockio import crc32c, parse_offset_table, parse_strings
from receiver.tsdb.chunks import CorruptionError
from receiver.tsdb.index import HEADER_LEN, INDEX_FORMAT_V2, MAGIC_INDEX, TOC, TOC_LEN

HEADER_MAGIC = 0x50524948  # "PRIH"
HEADER_VERSION = 1
HEADER_FILENAME = "index-header"
_PREFIX = struct.Struct(">IBBQ")


def _section_body(buf: bytes, off: int, what: str) -> tuple[int, int]:
    """Check the ``len body crc`` section at ``off`` of ``buf``; return the body's [start, end)."""
    if off + 4 > len(buf):
        raise CorruptionError(f"index-header: {what} truncated")
    (ln,) = struct.unpack_from(">I", buf, off)
    start, end = off + 4, off + 4 + ln
    if end + 4 > len(buf):
        raise CorruptionError(f"index-header: {what} runs past its end")
    (want,) = struct.unpack_from(">I", buf, end)
    if crc32c(memoryview(buf)[start:end]) != want:
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
    """Symbols and postings offsets of one block's index, plus section bounds for range reads."""

    def __init__(self, index_size: int, toc_raw: bytes, symbols_section: bytes,
                 ptable_section: bytes) -> None:
        self.index_size = index_size
        self._toc_raw = bytes(toc_raw)
        self._sym_raw = bytes(symbols_section)
        self._pt_raw = bytes(ptable_section)
        self.toc = toc = _parse_toc(self._toc_raw, index_size)

        start, end = _section_body(self._sym_raw, 0, "symbols")
        (count,) = struct.unpack_from(">I", self._sym_raw, start)
        try:
            self.symbols: list[str] = parse_strings(self._sym_raw, start + 4, count, end)
        except ValueError as e:
            raise CorruptionError(f"index-header: symbols: {e}") from None

        start, end = _section_body(self._pt_raw, 0, "postings offset table")
        (count,) = struct.unpack_from(">I", self._pt_raw, start)
        try:
            names, values, offs_b = parse_offset_table(self._pt_raw, start + 4, count, end)
        except ValueError as e:
            raise CorruptionError(f"index-header: {e}") from None
        starts = np.frombuffer(offs_b, dtype=np.int64)
        # A postings list ends where the next one (in file order) starts; the last one at the
        # next section. Reading that whole span is safe: the list's own length prefix bounds it.
        self.postings_end = _next_boundary(toc, toc.postings, index_size)
        order = np.argsort(starts, kind="stable")
        ends = np.empty_like(starts)
        ends[order] = np.r_[starts[order][1:], self.postings_end]
        if len(starts) and (starts.min() < toc.postings or starts.max() >= self.postings_end):
            raise CorruptionError("index-header: postings offset outside the postings section")
        obj = np.fromiter(map(id, names), dtype=np.int64, count=len(names))
        cuts = np.flatnonzero(np.r_[True, obj[1:] != obj[:-1]]).tolist() + [len(names)]
        self._postings: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {
            names[a]: (values[a:z], starts[a:z], ends[a:z]) for a, z in zip(cuts[:-1], cuts[1:])
        }
        self.series_end = _next_boundary(toc, toc.series, index_size)

    # -- building and persisting

    @classmethod
    async def fetch(cls, bucket: Bucket, index_name: str, index_size: int) -> IndexHeader:
        """Build from three ranged reads of the index object (TOC, head, offset table)."""
        if index_size < HEADER_LEN + TOC_LEN:
            raise CorruptionError(f"{index_name}: too short for an index")
        toc_raw = await bucket.get_range(index_name, index_size - TOC_LEN, TOC_LEN)
        toc = _parse_toc(toc_raw, index_size)
        head = await bucket.get_range(index_name, 0, toc.series)
        if len(head) != toc.series:
            raise CorruptionError(f"{index_name}: short read of the symbols section")
        magic, version = struct.unpack_from(">IB", head, 0)
        if magic != MAGIC_INDEX:
            raise CorruptionError(f"{index_name}: bad magic {magic:#x}")
        if version != INDEX_FORMAT_V2:
            raise CorruptionError(f"{index_name}: unsupported index format version {version}")
        pt_len = index_size - TOC_LEN - toc.postings_table
        ptable = await bucket.get_range(index_name, toc.postings_table, pt_len)
        if len(ptable) != pt_len:
            raise CorruptionError(f"{index_name}: short read of the postings offset table")
        return cls(index_size, toc_raw, head[toc.symbols:], ptable)

    def to_bytes(self) -> bytes:
        body = b"".join((
            _PREFIX.pack(HEADER_MAGIC, HEADER_VERSION, INDEX_FORMAT_V2, self.index_size),
            self._toc_raw, struct.pack(">I", len(self._sym_raw)), self._sym_raw,
            struct.pack(">I", len(self._pt_raw)), self._pt_raw))
        return body + struct.pack(">I", crc32c(body))

    @classmethod
    def from_bytes(cls, b: bytes) -> IndexHeader:
        if len(b) < _PREFIX.size + TOC_LEN + 12:
            raise CorruptionError("index-header: file too short")
        (want,) = struct.unpack_from(">I", b, len(b) - 4)
        if crc32c(memoryview(b)[:-4]) != want:
            raise CorruptionError("index-header: checksum mismatch")
        magic, version, _, size = _PREFIX.unpack_from(b, 0)
        if magic != HEADER_MAGIC or version != HEADER_VERSION:
            raise CorruptionError("index-header: bad magic or version")
        pos = _PREFIX.size
        toc_raw = b[pos:pos + TOC_LEN]
        pos += TOC_LEN
        (n,) = struct.unpack_from(">I", b, pos)
        sym = b[pos + 4:pos + 4 + n]
        pos += 4 + n
        (n,) = struct.unpack_from(">I", b, pos)
        pt = b[pos + 4:pos + 4 + n]
        return cls(size, toc_raw, sym, pt)

    def write(self, path: Path) -> None:
        """Atomically (tmp + rename) persist; a torn file would fail its CRC anyway."""
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(self.to_bytes())
        os.replace(tmp, path)

    @classmethod
    async def load_or_fetch(cls, bucket: Bucket, index_name: str, index_size: int,
                            path: Path) -> tuple[IndexHeader, bool]:
        """The header from ``path`` if valid for this index size, else fetched and written.
        Returns (header, fetched)."""
        try:
            h = cls.from_bytes(path.read_bytes())
            if h.index_size == index_size:
                return h, False
        except (OSError, CorruptionError, struct.error):
            pass
        h = await cls.fetch(bucket, index_name, index_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        h.write(path)
        return h, True

    # -- lookups

    @property
    def nbytes(self) -> int:
        return len(self._sym_raw) + len(self._pt_raw)

    def label_names(self) -> list[str]:
        return sorted(k for k in self._postings if k != "")

    def label_values(self, name: str) -> list[str]:
        e = self._postings.get(name)
        return list(e[0]) if e is not None else []

    def postings_range(self, name: str, value: str) -> tuple[int, int] | None:
        """[start, end) of the postings list for ``name=value`` in the index, or None."""
        e = self._postings.get(name)
        if e is None:
            return None
        vals, starts, ends = e
        i = bisect.bisect_left(vals, value)
        if i == len(vals) or vals[i] != value:
            return None
        return int(starts[i]), int(ends[i])

    def postings_ranges(self, name: str, keep: Callable[[str], bool]
                        ) -> list[tuple[str, int, int]]:
        """(value, start, end) of every postings list of ``name`` whose value passes ``keep``."""
        e = self._postings.get(name)
        if e is None:
            return []
        vals, starts, ends = e
        idx = [i for i, v in enumerate(vals) if keep(v)]
        return [(vals[i], int(starts[i]), int(ends[i])) for i in idx]

    def lookup_labels(self, sym_ids: list[int]) -> tuple[tuple[str, str], ...]:
        try:
            it = map(self.symbols.__getitem__, sym_ids)
            return tuple(zip(it, it))
        except IndexError:
            raise CorruptionError("index: series names an unknown symbol") from None


def _next_boundary(toc: TOC, after: int, index_size: int) -> int:
    """Start of the first TOC section that begins strictly after ``after`` (or the TOC)."""
    cands = [v for v in vars(toc).values() if v > after]
    return min(cands) if cands else index_size - TOC_LEN
