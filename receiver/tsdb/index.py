"""The ``index`` file of a Prometheus TSDB block: writer and reader for format v2.

Layout (all fixed-width ints big-endian; each section's CRC32C covers the bytes after its
4-byte length): header (magic ``0xBAAAD700``, format byte 2) | symbols | series entries, each
16-byte aligned so a series id is its offset / 16 | postings lists (the all-series list under
the empty key first, then sorted by label name and value) | postings offset table | TOC
(six u64 section offsets + CRC). The deprecated label-index sections are not written; like
current Prometheus, the TOC points them at the postings start and the postings offset table.

Per-item encoding (varints, CRCs, offset table parsing) happens in C (``_blockio``); grouping
label pairs into postings lists is numpy. Python loops here are per label value at most.
"""
from __future__ import annotations

from common.varint import uvarint

import bisect
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import lt
from pathlib import Path

import numpy as np

from ._blockio import (
    crc32c,
    decode_series,
    offset_table_entries,
    pack_strings,
    parse_offset_table,
    parse_strings,
    postings_lists,
    series_entries,
)
from .chunks import CorruptionError
from .labels import Labels, Matcher, MatchType

MAGIC_INDEX = 0xBAAAD700
INDEX_FORMAT_V1 = 1
INDEX_FORMAT_V2 = 2
HEADER_LEN = 5
TOC_LEN = 6 * 8 + 4
SERIES_ALIGN = 16

EMPTY = np.zeros(0, dtype=np.int64)
ChunkMeta = tuple[int, int, int]  # (mint, inclusive maxt, chunk ref)


@dataclass(frozen=True)
class TOC:
    symbols: int
    series: int
    label_indices: int
    label_offset_table: int
    postings: int
    postings_table: int

    def encode(self) -> bytes:
        body = struct.pack(">6Q", self.symbols, self.series, self.label_indices,
                           self.label_offset_table, self.postings, self.postings_table)
        return body + struct.pack(">I", crc32c(body))


def _section(body: bytes | bytearray) -> bytes:
    """``len<4B> body CRC32C(body)``: the frame of every fixed-length index section."""
    return struct.pack(">I", len(body)) + bytes(body) + struct.pack(">I", crc32c(body))


def write_index(path: Path, series_labels: Sequence[Labels], chunk_counts: np.ndarray,
                chunk_mint: np.ndarray, chunk_maxt: np.ndarray, chunk_ref: np.ndarray
                ) -> np.ndarray:
    """Write a v2 index for series sorted by labels; returns the series references (entry
    offset / 16) in label order.

    ``chunk_counts[i]`` chunks of series i sit at consecutive positions of the flattened
    ``chunk_mint``/``chunk_maxt`` (inclusive)/``chunk_ref`` arrays.
    """
    n = len(series_labels)
    if n > 1 and not all(map(lt, series_labels, series_labels[1:])):
        bad = next(i for i in range(n - 1) if not series_labels[i] < series_labels[i + 1])
        raise ValueError(f"series not strictly sorted by labels at {series_labels[bad + 1]!r}")

    flat = list(chain.from_iterable(chain.from_iterable(series_labels)))
    symbols = sorted(set(flat))
    sym_id = {s: i for i, s in enumerate(symbols)}
    label_syms = np.array(list(map(sym_id.__getitem__, flat)), dtype=np.int64)
    label_counts = np.fromiter(map(len, series_labels), dtype=np.int64, count=n)
    sym_bytes = [s.encode() for s in symbols]

    out: list[bytes] = [struct.pack(">IB", MAGIC_INDEX, INDEX_FORMAT_V2)]
    pos = HEADER_LEN

    toc_symbols = pos
    out.append(_section(struct.pack(">I", len(symbols)) + pack_strings(sym_bytes)))
    pos += len(out[-1])

    toc_series = pos
    blob, ids_b = series_entries(label_syms, label_counts,
                                 np.ascontiguousarray(chunk_mint, dtype=np.int64),
                                 np.ascontiguousarray(chunk_maxt, dtype=np.int64),
                                 np.ascontiguousarray(chunk_ref, dtype=np.int64),
                                 np.ascontiguousarray(chunk_counts, dtype=np.int64), pos)
    out.append(blob)
    pos += len(blob)
    ids = np.frombuffer(ids_b, dtype=np.int64)

    # The postings section starts before the padding that 4-byte-aligns its first list
    # (Prometheus's TOC says so too; readers find each list through the offset table).
    toc_postings = pos
    pad = -pos % 4
    out.append(b"\0" * pad)
    pos += pad

    # One (name, value, series id) triple per label; symbol order is string order, so sorting
    # by (name id, value id) is sorting by (name, value). A stable sort keeps ids ascending.
    names, values = label_syms[0::2], label_syms[1::2]
    key = names * max(len(symbols), 1) + values
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    refs = np.repeat(ids, label_counts)[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]]) if len(key) else EMPTY
    bounds = np.concatenate(([0, n], n + starts[1:], [n + len(refs)] if len(refs) else [])
                            ).astype(np.int64)
    blob, offs_b = postings_lists(np.concatenate((ids, refs)), bounds, pos)
    out.append(blob)
    pos += len(blob)
    offs = np.frombuffer(offs_b, dtype=np.int64)

    toc_ptable = pos
    # The all-postings key ("", "") is no symbol, so its entry is spelled out here.
    entries = b"\x02\x00\x00" + uvarint(int(offs[0])) + offset_table_entries(
        sym_bytes, names[order][starts], values[order][starts], offs[1:])
    out.append(_section(struct.pack(">I", len(starts) + 1) + entries))
    pos += len(out[-1])

    out.append(TOC(toc_symbols, toc_series, toc_postings, toc_ptable, toc_postings,
                   toc_ptable).encode())
    pos += TOC_LEN
    with open(path, "wb") as f:
        f.writelines(out)
    return ids



class IndexReader:
    """Reads a v2 index from any bytes-like object (bytes, mmap, memoryview).

    Symbols and the postings offset table are decoded up front (one C pass each); series
    entries and postings lists are read on demand, checking their CRCs.
    """

    def __init__(self, buf: bytes | bytearray | memoryview | object) -> None:
        self._b = buf
        size = len(buf)  # type: ignore[arg-type]
        if size < HEADER_LEN + TOC_LEN:
            raise CorruptionError("index: file too short")
        magic, version = struct.unpack_from(">IB", buf, 0)  # type: ignore[arg-type]
        if magic != MAGIC_INDEX:
            raise CorruptionError(f"index: bad magic {magic:#x}")
        if version != INDEX_FORMAT_V2:
            raise CorruptionError(f"index: unsupported format version {version} (only v2 is read)")
        self.version = version
        toc_off = size - TOC_LEN
        fields = struct.unpack_from(">6QI", buf, toc_off)  # type: ignore[arg-type]
        if crc32c(memoryview(buf)[toc_off:toc_off + 48]) != fields[6]:  # type: ignore[arg-type]
            raise CorruptionError("index: TOC checksum mismatch")
        self.toc = TOC(*fields[:6])
        for name, off in vars(self.toc).items():
            if off > toc_off:
                raise CorruptionError(f"index: TOC {name} offset {off} past end")

        start, end = self._checked_section(self.toc.symbols, "symbols")
        (count,) = struct.unpack_from(">I", buf, start)  # type: ignore[arg-type]
        self._symbols: list[str] = parse_strings(buf, start + 4, count, end)

        start, end = self._checked_section(self.toc.postings_table, "postings offset table")
        (count,) = struct.unpack_from(">I", buf, start)  # type: ignore[arg-type]
        names, values, offs_b = parse_offset_table(buf, start + 4, count, end)
        offs = np.frombuffer(offs_b, dtype=np.int64)
        # Runs of one name share a str object (the C parser reuses it), so ids mark the runs.
        obj = np.fromiter(map(id, names), dtype=np.int64, count=len(names))
        cuts = np.flatnonzero(np.r_[True, obj[1:] != obj[:-1]]).tolist() + [len(names)]
        self._postings: dict[str, tuple[list[str], np.ndarray]] = {
            names[a]: (values[a:z], offs[a:z]) for a, z in zip(cuts[:-1], cuts[1:])
        }

    def _checked_section(self, off: int, what: str) -> tuple[int, int]:
        """Verify a ``len body crc`` section; return the body's [start, end)."""
        b = self._b
        if off + 4 > len(b):  # type: ignore[arg-type]
            raise CorruptionError(f"index: {what} offset past end")
        (ln,) = struct.unpack_from(">I", b, off)  # type: ignore[arg-type]
        start, end = off + 4, off + 4 + ln
        if end + 4 > len(b):  # type: ignore[arg-type]
            raise CorruptionError(f"index: {what} runs past end of file")
        (want,) = struct.unpack_from(">I", b, end)  # type: ignore[arg-type]
        if crc32c(memoryview(b)[start:end]) != want:  # type: ignore[arg-type]
            raise CorruptionError(f"index: {what} at {off}: checksum mismatch")
        return start, end

    # -- symbols and label values

    def symbols(self) -> list[str]:
        return self._symbols

    def label_names(self) -> list[str]:
        return sorted(k for k in self._postings if k != "")

    def label_values(self, name: str) -> list[str]:
        return list(self._postings[name][0]) if name in self._postings else []

    # -- postings

    def _read_postings(self, off: int) -> np.ndarray:
        start, end = self._checked_section(int(off), "postings list")
        (count,) = struct.unpack_from(">I", self._b, start)  # type: ignore[arg-type]
        if end - start != 4 + 4 * count:
            raise CorruptionError(f"index: postings list at {off}: length disagrees with count")
        return np.frombuffer(self._b, dtype=">u4", count=count,  # type: ignore[call-overload]
                             offset=start + 4).astype(np.int64)

    def postings(self, name: str, value: str) -> np.ndarray:
        """Sorted series ids having label ``name=value`` (empty array if none)."""
        entry = self._postings.get(name)
        if entry is None:
            return EMPTY
        vals, offs = entry
        i = bisect.bisect_left(vals, value)
        if i == len(vals) or vals[i] != value:
            return EMPTY
        return self._read_postings(offs[i])

    def all_postings(self) -> np.ndarray:
        """Every series id, in label order."""
        return self.postings("", "")

    def _union(self, name: str, keep: object) -> np.ndarray:
        entry = self._postings.get(name)
        if entry is None:
            return EMPTY
        vals, offs = entry
        lists = [self._read_postings(o) for v, o in zip(vals, offs) if keep(v)]  # type: ignore[operator]
        if not lists:
            return EMPTY
        return lists[0] if len(lists) == 1 else np.unique(np.concatenate(lists))

    def select(self, matchers: Sequence[Matcher]) -> np.ndarray:
        """Sorted ids of series matching all matchers; an absent label matches as ""."""
        result: np.ndarray | None = None
        for m in sorted(matchers, key=lambda m: m.matches_empty()):
            if m.matches_empty():
                bad = self._union(m.name, lambda v, m=m: not m.matches(v))
                base = self.all_postings() if result is None else result
                result = np.setdiff1d(base, bad, assume_unique=True) if len(bad) else base
            else:
                hit = (self.postings(m.name, m.value) if m.type is MatchType.EQ
                       else self._union(m.name, m.matches))
                result = hit if result is None else np.intersect1d(result, hit, assume_unique=True)
            if len(result) == 0:
                return EMPTY
        return self.all_postings() if result is None else result

    # -- series

    def series(self, ref: int) -> tuple[Labels, list[ChunkMeta]]:
        """Labels and chunk metas ``(mint, inclusive maxt, chunk ref)`` of series ``ref``."""
        off = int(ref) * SERIES_ALIGN
        if not self.toc.series <= off < self.toc.postings_table:
            raise CorruptionError(f"index: series ref {ref} outside the series section")
        try:
            ids, chunks = decode_series(self._b, off)
        except ValueError as e:
            raise CorruptionError(f"index: {e}") from None
        syms = self._symbols
        try:
            it = iter(ids)
            lbls = tuple((syms[a], syms[b]) for a, b in zip(it, it))
        except IndexError:
            raise CorruptionError(f"index: series {ref} names an unknown symbol") from None
        return lbls, chunks
