"""Per-block answers of small selections, kept whole, so a warm Series call costs a dict lookup
per block instead of a pass through postings, series entries and chunk records.

A dashboard repeats the same few-series selections over the same blocks, every refresh. The
LRU (store.cache) already holds their raw postings, series and chunk records, but reading a
block's answer from it still cost some 60 us of Python per block (lookups, decoding, checksum
passes, chunk slicing): most of a 24 h one-series query. Blocks are immutable, so a block's
whole answer to a selection -- every matching series with all its chunks, external labels
merged in -- never changes; here it is kept once built, and a query's range is applied to it
(a block the range covers needs nothing; a partly covered one drops the chunks outside).

Bounded: only selections of at most ``MAX_SERIES`` series are kept (and only for matchers of
at most 256 characters: the caller checks), and all entries together hold at most
``max_bytes`` of chunk data plus a per-chunk, per-entry and per-matcher-set overhead, least
recently used matcher sets dropped first. Entries of blocks no longer served are dropped at
each sync.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from functools import partial
from itertools import repeat
from typing import NamedTuple

from receiver.tsdb.labels import Labels

from ._items import answer_sizes, chunks_in_range

MAX_SERIES = 64  # selections up to this many series per block are kept
ENTRY_OVERHEAD = 200  # bytes counted per entry (key, tuple, list)
CHUNK_OVERHEAD = 120  # bytes counted per chunk (tuple, ints, bytes header)
GROUP_OVERHEAD = 1024  # bytes counted per kept matcher set (its dict, key of <= 256 chars)

Chunks = list[tuple[int, int, object]]


class Selection(NamedTuple):
    """One block's whole answer to a selection, and what reading it from the LRU looked up
    (so a memo hit counts the same cache requests and hits the LRU path would). Immutable;
    a tuple (a frozen dataclass's __init__ cost a Python call per field, per block of a
    cold request)."""

    series: list[tuple[Labels, Chunks]]
    min_time: int  # the block's [min_time, max_time)
    max_time: int
    selected: bool  # the index was asked (an external label did not rule the block out)
    refs: int  # series refs the selection found (series entries looked up)
    chunks: int  # chunks over all series
    size: int  # bytes counted against the budget

    def in_range(self, mint: int, maxt: int) -> tuple[list[tuple[Labels, Chunks]], int]:
        """The series with chunks overlapping [mint, maxt] (only those chunks), as the
        block's own read gives them, and how many chunks that is."""
        if mint <= self.min_time and maxt >= self.max_time - 1:
            return self.series, self.chunks
        # every chunk checked: a block's chunks of a series may overlap (out-of-order data)
        return chunks_in_range(self.series, mint, maxt)


_new_selection = partial(tuple.__new__, Selection)  # (no Python-level __new__ call)


def selection_of(series: list[tuple[Labels, Chunks]], min_time: int, max_time: int,
                 selected: bool, refs: int) -> Selection:
    (chunks,), (size,) = answer_sizes([series], ENTRY_OVERHEAD, CHUNK_OVERHEAD)
    return _new_selection((series, min_time, max_time, selected, refs, chunks, size))


def selections_of(answers: list[list[tuple[Labels, Chunks]]], min_times: list[int],
                  max_times: list[int], refs: list[int]) -> list[Selection]:
    """selection_of of the selected whole answers of several blocks (a cold request's), in C
    steps only: their sizes in one call, no Python step per block."""
    chunks, sizes = answer_sizes(answers, ENTRY_OVERHEAD, CHUNK_OVERHEAD)
    return list(map(_new_selection, zip(answers, min_times, max_times, repeat(True), refs,
                                        chunks, sizes)))


class SelectionMemo:
    """LRU of Selections by matchers, then by block ULID (one hash of the matchers per call,
    a string lookup per block); whole matcher groups are dropped oldest first once more than
    ``max_bytes`` is counted."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._d: OrderedDict[Hashable, dict[str, Selection]] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return sum(map(len, self._d.values()))

    def get(self, key: Hashable) -> dict[str, Selection] | None:
        """The kept Selections of a selection by block ULID (None: none kept)."""
        group = self._d.get(key)
        if group is not None:
            self._d.move_to_end(key)
        return group

    def put(self, key: Hashable, ulid: str, sel: Selection) -> None:
        self.put_many(key, [ulid], [sel])

    def put_many(self, key: Hashable, ulids: list[str], sels: list[Selection]) -> None:
        """Keep Selections of one selection by block ULID (the group looked up once)."""
        group = self._d.get(key)
        cap = self.max_bytes // 16  # one entry never takes much of the budget
        grow = 0
        for ulid, sel in zip(ulids, sels):
            if sel.size > cap:
                continue
            if group is None:  # the group's dict and key (short matchers only) counted too
                group = self._d[key] = {}
                self._sizes[key] = GROUP_OVERHEAD
                self.size += GROUP_OVERHEAD
            old = group.get(ulid)
            grow += sel.size - (old.size if old is not None else 0)
            group[ulid] = sel
        if not grow:
            return
        self._sizes[key] += grow
        self.size += grow
        self._evict()

    def _evict(self) -> None:
        """Drop whole matcher groups, least recently used first, until within budget."""
        while self.size > self.max_bytes:
            gone, _ = self._d.popitem(last=False)
            self.size -= self._sizes.pop(gone)

    def keep_blocks(self, ulids: Iterable[str]) -> None:
        """Drop the entries of blocks not in ``ulids`` (no longer served)."""
        keep = set(ulids)
        for key, group in list(self._d.items()):
            for u in [u for u in group if u not in keep]:
                n = group.pop(u).size
                self._sizes[key] -= n
                self.size -= n
            if not group:
                del self._d[key]
                self.size -= self._sizes.pop(key)
