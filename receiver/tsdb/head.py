"""The in-memory head of one tenant's TSDB: series index plus XOR chunks.

Series are identified by their canonical label key (see ``labels.encode_labels_key``) and get a
dense integer ref on first sight. Samples live in C (``HeadChunks``), appended in batches, so the
write path costs one dict lookup per series and no Python work per sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._blockio import decode_label_keys
from .chunkenc import HeadChunks
from .histhead import HistogramHead
from .labels import Labels, Matcher, decode_labels_key
from .postings import MemPostings

# Per-sample status codes returned by HeadChunks.append.
OK, OUT_OF_ORDER, DUPLICATE, TOO_OLD, SAME_DUPLICATE = 0, 1, 2, 3, 4

NO_TIME_MIN = np.iinfo(np.int64).max
NO_TIME_MAX = np.iinfo(np.int64).min


@dataclass
class HeadOptions:
    chunk_range_ms: int = 2 * 3600 * 1000
    samples_per_chunk: int = 120


@dataclass
class AppendResult:
    """What happened to one batch: refs of new series and each sample's status."""

    new_refs: np.ndarray
    new_keys: list[bytes]
    status: np.ndarray


class Head:
    def __init__(self, opts: HeadOptions | None = None) -> None:
        self.opts = opts or HeadOptions()
        self._refs: dict[bytes, int] = {}
        self._keys: list[bytes | None] = []
        self._postings = MemPostings()
        self._chunks = HeadChunks(self.opts.samples_per_chunk, self.opts.chunk_range_ms)
        # Native histogram samples live beside the float store (see histhead).
        self.hists = HistogramHead(self.opts.chunk_range_ms, self.opts.samples_per_chunk)
        self.min_time = int(NO_TIME_MIN)
        self.max_time = int(NO_TIME_MAX)
        self.series_created = 0  # prometheus_tsdb_head_series_created_total
        self.series_removed = 0  # prometheus_tsdb_head_series_removed_total
        self._symbols: dict[str, str] = {}

    # -- series -------------------------------------------------------------------------------

    @property
    def num_series(self) -> int:
        return len(self._refs)

    def _create(self, key: bytes, ref: int | None = None) -> int:
        """Register a series (its postings are added by the caller, batched, from labels
        decoded before any state changed: decoding is what can fail)."""
        if ref is None:
            ref = len(self._keys)
        if ref >= len(self._keys):
            self._keys.extend([None] * (ref + 1 - len(self._keys)))
            self._chunks.resize(len(self._keys))
        self._keys[ref] = key
        self._refs[key] = ref
        self.series_created += 1
        return ref

    def refs_for(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """Refs for label keys, creating unseen series; also returns the new refs and keys."""
        found = list(map(self._refs.get, keys))
        new_refs: list[int] = []
        new_keys: list[bytes] = []
        if None in found:
            # All-or-nothing: decode every new key first (ValueError if one does not), so a
            # failure never leaves a series in the head whose record is not in the WAL.
            missing = list(dict.fromkeys(keys[i] for i, r in enumerate(found) if r is None))
            labels = decode_label_keys(missing, self._symbols, True)
            new_refs = [self._create(key) for key in missing]
            new_keys = missing
            self._postings.add_many(new_refs, labels)
            found = list(map(self._refs.get, keys))
        return (np.array(found, dtype=np.int64), np.array(new_refs, dtype=np.int64), new_keys)

    def restore_series(self, refs: list[int], keys: list[bytes]) -> list[int]:
        """WAL replay: recreate series under their logged refs; returns the ref each now has,
        -1 for a key that does not decode (skipped)."""
        out = []
        created: list[tuple[int, Labels]] = []
        labels = decode_label_keys(keys, self._symbols, False)
        for ref, key, lbls in zip(refs, keys, labels):
            existing = self._refs.get(key)
            if existing is not None:
                out.append(existing)
                continue
            if lbls is None:
                out.append(-1)
                continue
            taken = ref < 0 or (ref < len(self._keys) and self._keys[ref] is not None)
            got = self._create(key, None if taken else ref)
            out.append(got)
            created.append((got, lbls))
        created.sort(key=lambda c: c[0])  # postings lists stay sorted
        self._postings.add_many([c[0] for c in created], [c[1] for c in created])
        return out

    def labels(self, ref: int) -> Labels:
        key = self._keys[ref]
        return decode_labels_key(key) if key is not None else ()

    # -- samples ------------------------------------------------------------------------------

    def min_valid_time(self) -> int:
        """Prometheus rejects samples older than half a chunk range behind the head's newest."""
        if self.max_time == NO_TIME_MAX:
            return int(NO_TIME_MAX)
        return self.max_time - self.opts.chunk_range_ms // 2

    def append(self, refs: np.ndarray, ts: np.ndarray, vals: np.ndarray,
               min_valid_time: int | None = None) -> np.ndarray:
        """Append a batch in order; returns one status per sample (OK, OUT_OF_ORDER, ...)."""
        if len(refs) == 0:
            return np.zeros(0, dtype=np.uint8)
        mvt = self.min_valid_time() if min_valid_time is None else min_valid_time
        behind = None
        if self.hists.num_series:
            # A float may not go at or behind a series' newest histogram sample.
            hl = self.hists.last_ts(refs)
            behind = np.asarray(ts) <= hl
            has_hist = hl != np.iinfo(np.int64).min
            if has_hist.any() and not behind.all():
                # A float after a histogram starts a new chunk (no overlapping chunks).
                ahead = has_hist & ~behind
                self._chunks.cut_after(np.ascontiguousarray(np.asarray(refs)[ahead], dtype=np.int64),
                                       np.ascontiguousarray(hl[ahead]))
            if behind.any():
                good = ~behind
                status = np.empty(len(refs), dtype=np.uint8)
                status[behind] = np.where(np.asarray(ts)[behind] < hl[behind], OUT_OF_ORDER, DUPLICATE)
                status[good] = self.append(np.asarray(refs)[good], np.asarray(ts)[good],
                                           np.asarray(vals)[good], mvt) if good.any() else 0
                return status
        status = np.frombuffer(
            self._chunks.append(np.ascontiguousarray(refs, dtype=np.int64),
                                np.ascontiguousarray(ts, dtype=np.int64),
                                np.ascontiguousarray(vals, dtype=np.float64), int(mvt)),
            dtype=np.uint8)
        ok_ts = ts[status == OK]
        if len(ok_ts):
            self.min_time = min(self.min_time, int(ok_ts.min()))
            self.max_time = max(self.max_time, int(ok_ts.max()))
        return status

    def append_histograms(self, refs: list[int], ts: list[int], hists: list,
                          min_valid_time: int | None = None) -> np.ndarray:
        """Append native histogram samples in order; one status per sample as ``append``."""
        if not refs:
            return np.zeros(0, dtype=np.uint8)
        mvt = self.min_valid_time() if min_valid_time is None else min_valid_time

        def float_last(ref: int) -> int | None:
            got = self._chunks.last(ref)
            return None if got is None else int(got[0])

        status = self.hists.append(refs, ts, hists, int(mvt), float_last)
        ok_ts = [t for t, st in zip(ts, status.tolist()) if st == OK]
        if ok_ts:
            self.min_time = min(self.min_time, min(ok_ts))
            self.max_time = max(self.max_time, max(ok_ts))
        return status

    def _all_chunks(self, ref: int, mint: int, maxt: int) -> list:
        chunks = self._chunks.chunks(ref, mint, maxt)
        if self.hists.num_series:
            h = self.hists.chunks(ref, mint, maxt)
            if h:
                chunks = sorted(chunks + h, key=lambda c: c[0])
        return chunks

    # -- queries ------------------------------------------------------------------------------

    def select_refs(self, matchers: list[Matcher]) -> np.ndarray:
        return self._postings.select(matchers)

    def series(self, matchers: list[Matcher], mint: int, maxt: int, skip_chunks: bool = False
               ) -> list[tuple[Labels, list[tuple[int, int, bytes]]]]:
        """Matching series with data in [mint, maxt], sorted by labels."""
        out = []
        for ref in self.select_refs(matchers).tolist():
            chunks = self._all_chunks(ref, mint, maxt)
            if not chunks:
                continue
            out.append((self.labels(ref), [] if skip_chunks else chunks))
        out.sort(key=lambda s: s[0])
        return out

    def label_names(self, matchers: list[Matcher] | None = None) -> list[str]:
        if not matchers:
            return self._postings.label_names()
        names: set[str] = set()
        for ref in self.select_refs(matchers).tolist():
            names.update(n for n, _ in self.labels(ref))
        return sorted(names)

    def label_values(self, name: str, matchers: list[Matcher] | None = None) -> list[str]:
        if not matchers:
            return self._postings.label_values(name)
        values: set[str] = set()
        for ref in self.select_refs(matchers).tolist():
            for n, v in self.labels(ref):
                if n == name:
                    values.add(v)
        return sorted(values)

    def memory_bytes(self) -> int:
        return self._chunks.memory_bytes()

    # -- persistence --------------------------------------------------------------------------

    def live_refs(self) -> list[int]:
        return [r for r, k in enumerate(self._keys) if k is not None]

    def key(self, ref: int) -> bytes | None:
        return self._keys[ref]

    def samples(self, ref: int, mint: int, maxt: int) -> tuple[np.ndarray, np.ndarray]:
        ts, vals = self._chunks.samples(ref, mint, maxt)
        return np.frombuffer(ts, dtype=np.int64), np.frombuffer(vals, dtype=np.float64)

    def block_series(self, bmin: int, bmax: int) -> list[tuple[Labels, list[tuple[int, int, bytes]]]]:
        """Every series' chunks inside the block range [bmin, bmax), sorted by labels.

        Chunks are cut at chunk-range boundaries, so with the block range equal to the chunk
        range no chunk straddles ``bmax``.
        """
        out = []
        for ref in self.live_refs():
            chunks = [c for c in self._all_chunks(ref, bmin, bmax - 1) if c[0] >= bmin and c[1] < bmax]
            if chunks:
                out.append((self.labels(ref), chunks))
        out.sort(key=lambda s: s[0])
        return out

    def min_time_from(self, t: int) -> int:
        """Where the head's data resumes at or after ``t`` (NO_TIME_MIN if nothing does)."""
        got = self._chunks.min_time_from(t)
        if self.hists.num_series:
            got = min(got, self.hists.min_time_from(t))
        return int(got)

    def truncate(self, t: int) -> int:
        """Drop everything older than ``t`` (now in a block) and series left empty; returns
        how many series were removed. Refs are never reused, so WAL refs stay unambiguous."""
        self.truncate_samples(t)
        if self.max_time >= t:
            self.min_time = max(self.min_time, t)
        else:
            self.min_time = int(NO_TIME_MIN)
        return self.remove_empty_series(self.empty_series())

    def truncate_samples(self, t: int) -> None:
        """Free chunks older than ``t``. Safe in a worker thread while the event loop appends
        (each store call is atomic; appends at or after ``t`` are untouched)."""
        self._chunks.truncate_before(t, include_open=True)
        self.hists.truncate(t)

    def empty_series(self) -> np.ndarray:
        """Refs of series without any sample (candidates for removal); read-only, any thread."""
        refs = np.frombuffer(self._chunks.empty_refs(), dtype=np.int64)
        keys = self._keys  # slots of series removed earlier stay empty: skip them here, not on the loop
        refs = np.fromiter((r for r in refs.tolist() if r < len(keys) and keys[r] is not None),
                           dtype=np.int64)
        if len(refs) and self.hists.num_series:
            has_hist = np.fromiter((self.hists.num_samples(r) > 0 for r in refs.tolist()),
                                   dtype=bool, count=len(refs))
            refs = refs[~has_hist]
        return refs

    def remove_empty_series(self, candidates: np.ndarray) -> int:
        """Forget ``candidates`` that are still empty (on the thread that appends: a write may
        have given one a sample since they were found)."""
        gone: list[int] = []
        label_sets: list[Labels] = []
        keys = self._keys
        for ref in candidates.tolist():
            key = keys[ref] if ref < len(keys) else None
            if key is None or self._chunks.num_samples(ref) or self.hists.num_samples(ref):
                continue
            keys[ref] = None
            del self._refs[key]
            gone.append(ref)
            label_sets.append(decode_labels_key(key))
        self._postings.delete(np.array(gone, dtype=np.int64), label_sets)
        self.series_removed += len(gone)
        return len(gone)
