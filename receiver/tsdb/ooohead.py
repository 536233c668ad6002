"""The out-of-order head: samples a series' in-order head refused as late but that fall
inside ``--tsdb.out-of-order.time-window`` of the tenant's newest sample (Prometheus's
``OutOfOrderTimeWindow``).

Late samples arrive in any order, so they cannot go into the in-order stores. Floats are kept
as flat numpy columns sorted by (series ref, timestamp): an insert is a vectorised search +
``insert``, a series' samples are one contiguous slice, and the whole store is cut into blocks
at once (Prometheus's OOO compaction). Native histograms go to sorted per-series lists
(``ooohist``). There are few of them next to the in-order samples and they live at most until
the next block cut.

A timestamp already held (in this store or passed in as taken by the in-order head) is a
duplicate: the same value is accepted and not stored twice, another value is refused -- where
Prometheus would silently drop it, an acknowledged sample that is then not what was stored.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from .chunkenc import DUPLICATE, ENCODING_XOR, OK, SAME_DUPLICATE, decode, encode
from .histogram import chunk_encoding, cut_chunks, decode_chunk
from .ooohist import OOOHistograms

# meta.json ``compaction.hints`` entry of a block cut from out-of-order samples (Prometheus's
# CompactionHintFromOutOfOrder): such a block may overlap in-order blocks of its range.
OOO_HINT = "from-out-of-order"

Chunk = tuple[int, int, Any]  # (mint, inclusive maxt, data)

def search(col_refs: np.ndarray, col_ts: np.ndarray, refs: np.ndarray, ts: np.ndarray,
           side: str = "left") -> np.ndarray:
    """Where each (refs[i], ts[i]) goes in columns sorted by (ref, t): numpy's searchsorted
    on the refs, then a bisection of every query's run of its ref, all queries at once."""
    lo = np.searchsorted(col_refs, refs, side="left")
    hi = np.searchsorted(col_refs, refs, side="right")
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = (lo + hi) // 2
        t_mid = col_ts[np.minimum(mid, len(col_ts) - 1)]
        right = open_ & ((t_mid < ts) if side == "left" else (t_mid <= ts))
        left = open_ & ~right
        lo = np.where(right, mid + 1, lo)
        hi = np.where(left, mid, hi)


def _bits(vals: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vals, dtype=np.float64).view(np.uint64)


_EMPTY_I8 = np.zeros(0, dtype=np.int64)


class OOOHead:
    """Columns (refs, ts, vals) sorted by (ref, t). Never mutated in place: an insert builds
    new arrays and swaps all three in one assignment, so a reader in a worker thread (a block
    cut, a checkpoint) sees a consistent view."""

    def __init__(self) -> None:
        self._cols: tuple[np.ndarray, np.ndarray, np.ndarray] = (
            _EMPTY_I8, _EMPTY_I8, np.zeros(0, dtype=np.float64))
        self.hists = OOOHistograms()  # late native histogram samples

    @property
    def num_samples(self) -> int:
        return len(self._cols[0]) + self.hists.num_samples

    @property
    def min_time(self) -> int:
        ts = self._cols[1]
        got = [int(ts.min())] if len(ts) else []
        h = self.hists.min_time
        return min(got + ([h] if h is not None else []), default=int(np.iinfo(np.int64).max))

    @property
    def max_time(self) -> int:
        ts = self._cols[1]
        got = [int(ts.max())] if len(ts) else []
        h = self.hists.max_time
        return max(got + ([h] if h is not None else []), default=int(np.iinfo(np.int64).min))

    def merge_from(self, other: OOOHead) -> None:
        """Take ``other``'s samples too (a failed cut's frozen head meets the live one)."""
        self.insert(*other.columns())
        pending: dict = {}
        for ref, ts, hs in other.hists.items():
            for t, h in zip(ts, hs):
                self.hists.insert(ref, t, h, None, pending)
        self.hists.commit(pending)

    def insert(self, refs: np.ndarray, ts: np.ndarray, vals: np.ndarray,
               taken: np.ndarray | None = None, taken_vals: np.ndarray | None = None
               ) -> np.ndarray:
        """Insert a batch; one status per sample: OK, SAME_DUPLICATE (value already there) or
        DUPLICATE (another value holds the timestamp). ``taken``/``taken_vals`` mark samples
        whose timestamp the in-order head already holds, with its value. Within the batch the
        first sample of a timestamp wins."""
        refs = np.ascontiguousarray(refs, dtype=np.int64)
        ts = np.ascontiguousarray(ts, dtype=np.int64)
        vals = np.ascontiguousarray(vals, dtype=np.float64)
        n = len(refs)
        status = np.full(n, OK, dtype=np.uint8)
        if n == 0:
            return status
        held = np.zeros(n, dtype=bool)
        held_bits = np.zeros(n, dtype=np.uint64)
        if taken is not None and taken.any():
            held |= taken
            held_bits[taken] = _bits(taken_vals)[taken]
        hit, hit_vals = self.lookup(refs, ts)
        if hit is not None:
            hit &= ~held
            held |= hit
            held_bits[hit] = _bits(hit_vals)[hit]
        # Within the batch: a later sample of a (ref, t) meets the first one's value.
        order = np.lexsort((ts, refs))  # stable
        sr, st = refs[order], ts[order]
        repeat = np.zeros(n, dtype=bool)
        repeat[1:] = (sr[1:] == sr[:-1]) & (st[1:] == st[:-1])
        if repeat.any():
            first = order[np.maximum.accumulate(np.where(repeat, 0, np.arange(n)))]
            dup = order[repeat]
            src = first[repeat]
            fresh = ~held[src]
            held_bits[dup] = np.where(fresh, _bits(vals)[src], held_bits[src])
            held[dup] = True
        status[held] = np.where(held_bits[held] == _bits(vals)[held], SAME_DUPLICATE, DUPLICATE)
        new = order[status[order] == OK]  # sorted by (ref, t), one per key
        if len(new):
            c_refs, c_ts, c_vals = self._cols
            at = search(c_refs, c_ts, refs[new], ts[new])
            self._cols = (np.insert(c_refs, at, refs[new]), np.insert(c_ts, at, ts[new]),
                          np.insert(c_vals, at, vals[new]))
        return status

    def lookup(self, refs: np.ndarray, ts: np.ndarray
               ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Which (ref, t) this head holds, and its value there (None, None when empty)."""
        c_refs, c_ts, c_vals = self._cols
        if not len(c_refs):
            return None, None
        refs = np.asarray(refs, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.int64)
        pos = search(c_refs, c_ts, refs, ts)
        at = np.minimum(pos, len(c_refs) - 1)
        hit = (pos < len(c_refs)) & (c_refs[at] == refs) & (c_ts[at] == ts)
        return hit, np.where(hit, c_vals[at], 0.0)

    def series_refs(self) -> np.ndarray:
        """Refs that hold samples (float or histogram), ascending."""
        r = self._cols[0]  # sorted
        r = r[np.r_[True, r[1:] != r[:-1]]] if len(r) else r
        if self.hists.num_samples:
            r = np.union1d(r, np.array(self.hists.refs(), dtype=np.int64))
        return r

    def has_refs(self, refs: np.ndarray) -> np.ndarray:
        """Whether each ref holds a sample, float or histogram (vectorised)."""
        refs = np.asarray(refs, dtype=np.int64)
        got = self.has_float_refs(refs)
        if self.hists.num_samples:
            got |= np.isin(refs, np.array(self.hists.refs(), dtype=np.int64))
        return got

    def has_float_refs(self, refs: np.ndarray) -> np.ndarray:
        r = self._cols[0]
        refs = np.asarray(refs, dtype=np.int64)
        return np.searchsorted(r, refs, side="right") > np.searchsorted(r, refs, side="left")

    def samples(self, ref: int, mint: int, maxt: int) -> tuple[np.ndarray, np.ndarray]:
        """One series' samples with mint <= t <= maxt, in time order."""
        c_refs, c_ts, c_vals = self._cols
        r = np.array([ref], dtype=np.int64)
        lo = search(c_refs, c_ts, r, np.array([mint], dtype=np.int64))[0]
        hi = search(c_refs, c_ts, r, np.array([maxt], dtype=np.int64), side="right")[0]
        return c_ts[lo:hi].copy(), c_vals[lo:hi].copy()

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All samples as (refs, ts, vals), sorted by (ref, t): for checkpoints and block cuts."""
        c_refs, c_ts, c_vals = self._cols
        return c_refs.copy(), c_ts.copy(), c_vals.copy()

    def memory_bytes(self) -> int:
        return sum(c.nbytes for c in self._cols) + 256 * self.hists.num_samples  # estimate


def encode_chunks(ts: np.ndarray, vals: np.ndarray, samples_per_chunk: int = 120
                  ) -> list[tuple[int, int, bytes]]:
    """Time-ordered samples as (mint, inclusive maxt, XOR bytes) chunks."""
    out = []
    for i in range(0, len(ts), samples_per_chunk):
        j = min(i + samples_per_chunk, len(ts))
        out.append((int(ts[i]), int(ts[j - 1]), encode(ts[i:j], vals[i:j])))
    return out


def is_ooo_block(meta: Any) -> bool:
    """Whether a block (its BlockMeta) was cut from out-of-order samples."""
    return OOO_HINT in (meta.extra.get("compaction") or {}).get("hints", ())


def merge_overlapping(chunks: list[Chunk], samples_per_chunk: int = 120) -> list[Chunk]:
    """One series' chunks, given in priority order, as time-ordered chunks that do not
    overlap: where they do, the float samples are decoded, one kept per timestamp (that of the
    chunk listed first) and re-encoded; native histogram chunks likewise, re-cut."""
    by_time = sorted(chunks, key=lambda c: c[0])
    if all(by_time[i][0] > by_time[i - 1][1] for i in range(1, len(by_time))):
        return by_time
    kinds = {chunk_encoding(c[2]) == ENCODING_XOR for c in chunks}
    if kinds == {False}:  # native histograms: decoded, first per timestamp, re-cut
        seen: dict[int, Any] = {}
        for c in chunks:
            for t, h in decode_chunk(c[2]):
                seen.setdefault(t, h)
        return cut_chunks(sorted(seen.items(), key=lambda p: p[0]), None, 1 << 62,
                          samples_per_chunk)
    if kinds != {True}:  # floats and histograms of one series overlap: left to the reader
        return by_time
    parts = [decode(c[2]) for c in chunks]
    ts = np.concatenate([p[0] for p in parts])
    vals = np.concatenate([p[1] for p in parts])
    order = np.argsort(ts, kind="stable")
    ts, first = np.unique(ts[order], return_index=True)
    return encode_chunks(ts, vals[order][first], samples_per_chunk)


def ooo_block_series(ooo: OOOHead, labels_of: Callable[[int], tuple], block_range_ms: int,
                     samples_per_chunk: int = 120
                     ) -> Iterator[tuple[int, list[tuple[tuple, list[Chunk]]]]]:
    """The out-of-order head cut into block ranges, as Prometheus's OOO compaction does: for
    each aligned range holding samples, its start and the label-sorted series' chunks."""
    refs, ts, vals = ooo.columns()
    by_window: dict[int, list] = {}
    win = ts // block_range_ms
    for w in np.unique(win).tolist():
        sel = np.flatnonzero(win == w)  # still sorted by (ref, t)
        r, t, v = refs[sel], ts[sel], vals[sel]
        cuts = np.flatnonzero(np.diff(r)) + 1
        for a, z in zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [len(r)]]).tolist()):
            lbls = labels_of(int(r[a]))
            if lbls:
                by_window.setdefault(w, []).append(
                    (lbls, encode_chunks(t[a:z], v[a:z], samples_per_chunk)))
    for ref, hts, hhs in ooo.hists.items():  # a series has late floats or histograms, not both
        lbls = labels_of(ref)
        if not lbls:
            continue
        for c in cut_chunks(list(zip(hts, hhs)), None, block_range_ms, samples_per_chunk):
            w = c[0] // block_range_ms
            got = by_window.setdefault(w, [])
            if got and got[-1][0] == lbls:
                got[-1][1].append(c)
            else:
                got.append((lbls, [c]))
    for w in sorted(by_window):
        series = sorted(by_window[w], key=lambda s: s[0])
        yield w * block_range_ms, series
