"""Checking every checksum of a block's index once, in the background, after the block loads.

Loading a block reads only its TOC, symbols and postings offset table (all CRC-checked); the
series entries and postings lists are CRC-checked when a query reads them. So garbage in a
part no query has touched yet would go unnoticed. This walks the whole index once per block
(ranged reads of ``piece`` bytes, the per-item work in C without the GIL): every series
entry (CRC, symbol ids, chunk refs inside their segment's actual size), every postings list
(CRC, length, refs inside the series section) and any label index entry. Symbols, the
postings offset table and the TOC were checked when the index-header was built.

A block that passed leaves a marker next to its index-header, so a restart does not read
its index again.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from objstore import Bucket
from receiver.tsdb._blockio import verify_items
from receiver.tsdb.block import CHUNKS_DIRNAME
from receiver.tsdb.chunks import CorruptionError
from receiver.tsdb.index import TOC_LEN

from .indexheader import IndexHeader

VERIFIED_MARKER = "index-verified"
DEFAULT_PIECE = 1 << 20
_SERIES, _POSTINGS, _ENTRIES = 0, 1, 2


def segment_size_array(seg_sizes: dict[str, int]) -> np.ndarray:
    """Sizes by segment sequence number (``chunks/000001`` is 0); absent segments are 0."""
    seqs = {int(rel.rsplit("/", 1)[1]) - 1: size for rel, size in seg_sizes.items()
            if rel.startswith(CHUNKS_DIRNAME + "/") and rel.rsplit("/", 1)[1].isdigit()}
    out = np.zeros(max(seqs, default=-1) + 1, dtype=np.int64)
    for seq, size in seqs.items():
        if seq >= 0:
            out[seq] = size
    return out


def _sections(h: IndexHeader) -> list[tuple[int, int, int]]:
    """(kind, start, end) of the sections walked item by item."""
    toc = h.toc
    bounds = sorted({*vars(toc).values(), h.index_size - TOC_LEN})

    def end_of(start: int) -> int:
        return next(b for b in bounds if b > start)

    out = [(_SERIES, toc.series, end_of(toc.series)),
           (_POSTINGS, toc.postings, end_of(toc.postings))]
    if toc.label_indices not in (toc.postings, toc.postings_table, toc.label_offset_table):
        out.append((_ENTRIES, toc.label_indices, end_of(toc.label_indices)))
    if toc.label_offset_table not in (toc.postings, toc.postings_table):
        out.append((_ENTRIES, toc.label_offset_table, end_of(toc.label_offset_table)))
    return out


async def verify_index(bucket: Bucket, index_name: str, header: IndexHeader,
                       seg_sizes: dict[str, int], piece: int = DEFAULT_PIECE) -> None:
    """Raise CorruptionError unless every item of the index checks out (see module doc)."""
    segs = segment_size_array(seg_sizes)
    nsyms = header.num_symbols
    lo, hi = header.toc.series, header.series_end
    for kind, start, end in _sections(header):
        off, carry = start, b""
        while off + len(carry) < end or carry:
            at = off + len(carry)
            if at < end:
                data = await bucket.get_range(index_name, at, min(piece, end - at))
                if not data:
                    raise CorruptionError(f"{index_name}: short read at {at}")
                carry += data
            try:
                used = verify_items(carry, off, kind, end, segs, nsyms, lo, hi)
            except ValueError as e:
                raise CorruptionError(f"{index_name}: {e}") from None
            if used == 0 and at >= end:  # nothing left to read yet no progress: never spin
                raise CorruptionError(f"{index_name}: item at {off} runs past its section")
            off += used
            carry = carry[used:]


def is_verified(local_dir: Path) -> bool:
    return (local_dir / VERIFIED_MARKER).is_file()


def mark_verified(local_dir: Path) -> None:
    local_dir.mkdir(parents=True, exist_ok=True)
    (local_dir / VERIFIED_MARKER).write_bytes(b"")
