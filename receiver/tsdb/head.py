"""The in-memory head of one tenant's TSDB: series index plus XOR chunks.

Series are identified by their canonical label key (see ``labels.encode_labels_key``) and get a
dense integer ref on first sight. Samples live in C (``HeadChunks``), appended in batches, so the
write path costs one dict lookup per new or unusually encoded series (known ones resolve in C,
see ``refcache``) and no Python work per sample.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from operator import itemgetter

import numpy as np

from ._blockio import decode_label_keys
from ._refcache import RefCache
from .chunkenc import HeadChunks
from .histhead import HistogramHead
from .histogram import cut_chunks as cut_hist_chunks
from .labels import Labels, Matcher, decode_labels_key
from .ooohead import OOOHead, encode_chunks
from .postings import MemPostings

# Per-sample status codes returned by HeadChunks.append.
OK, OUT_OF_ORDER, DUPLICATE, TOO_OLD, SAME_DUPLICATE = 0, 1, 2, 3, 4

NO_TIME_MIN = np.iinfo(np.int64).max
NO_TIME_MAX = np.iinfo(np.int64).min


@dataclass
class HeadOptions:
    chunk_range_ms: int = 2 * 3600 * 1000
    samples_per_chunk: int = 120
    # --tsdb.out-of-order.time-window: late samples within this of the head's newest go
    # to the out-of-order head instead of being refused; 0 = refuse them (Prometheus's default).
    ooo_window_ms: int = 0


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
        # Refs by the raw remote-write bytes of validated label sets (see _refcache.c): the
        # decoder resolves known series through it with no per-series Python work. Entries
        # only for live series: remove_empty_series drops them with the series.
        self.refcache = RefCache(int.from_bytes(os.urandom(8), "little"))
        self._chunks = HeadChunks(self.opts.samples_per_chunk, self.opts.chunk_range_ms)
        # Native histogram samples live beside the float store (see histhead).
        self.hists = HistogramHead(self.opts.chunk_range_ms, self.opts.samples_per_chunk)
        # Late float samples (see ooohead). A block cut freezes it (a fresh one takes new
        # samples) and drops the frozen one once its blocks are in.
        self.ooo = OOOHead()
        self.ooo_frozen: OOOHead | None = None
        self.min_time = int(NO_TIME_MIN)
        self.max_time = int(NO_TIME_MAX)
        self.series_created = 0  # prometheus_tsdb_head_series_created_total
        self.series_removed = 0  # prometheus_tsdb_head_series_removed_total

    # -- series -------------------------------------------------------------------------------

    @property
    def num_series(self) -> int:
        return len(self._refs)

    def _create_many(self, keys: list[bytes], refs: np.ndarray | None = None) -> np.ndarray:
        """Register series (new keys, distinct free refs; default: the next ones), all at once.
        Their postings are added by the caller from labels decoded before any state changed:
        decoding is what can fail."""
        if refs is None:
            refs = np.arange(len(self._keys), len(self._keys) + len(keys), dtype=np.int64)
        if not len(keys):
            return refs
        top = int(refs.max()) + 1
        if top > len(self._keys):
            self._keys.extend([None] * (top - len(self._keys)))
            self._chunks.resize(top)
        ref_list = refs.tolist()
        lo = ref_list[0]
        if lo == top - len(keys) and np.array_equal(refs, np.arange(lo, top)):
            self._keys[lo:top] = keys
        else:
            for ref, key in zip(ref_list, keys):
                self._keys[ref] = key
        self._refs.update(zip(keys, ref_list))
        self.series_created += len(keys)
        return refs

    def known_refs(self, keys: list[bytes]) -> np.ndarray:
        """Refs of the series already in the head, -1 for the others (none is created)."""
        return np.fromiter((self._refs.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def refs_for(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """Refs for label keys, creating unseen series; also returns the new refs and keys."""
        found = list(map(self._refs.get, keys))
        new_refs = np.zeros(0, dtype=np.int64)
        new_keys: list[bytes] = []
        if None in found:
            # All-or-nothing: decode every new key first (ValueError if one does not), so a
            # failure never leaves a series in the head whose record is not in the WAL. Strings
            # are shared within the batch only: a head-wide table would cost a lookup in a
            # dict of every value ever seen (churn included) per label, and never shrink.
            missing = list(dict.fromkeys(keys[i] for i, r in enumerate(found) if r is None))
            labels = decode_label_keys(missing, {}, True)
            new_refs = self._create_many(missing)
            new_keys = missing
            self._postings.add_many(new_refs, labels)
            found = list(map(self._refs.get, keys))
        return np.fromiter(found, dtype=np.int64, count=len(found)), new_refs, new_keys

    def remember(self, keys: list[bytes], refs: np.ndarray) -> None:
        """Let ``refcache`` resolve these series (keys that passed the decoder's validation,
        refs of live series) by their label bytes from now on."""
        if keys:
            self.refcache.insert(keys, np.ascontiguousarray(refs, dtype=np.int64))

    def restore_series(self, refs: list[int], keys: list[bytes]) -> list[int]:
        """WAL replay: recreate series under their logged refs; returns the ref each now has,
        -1 for a key that does not decode (skipped)."""
        labels = decode_label_keys(keys, {}, False)
        logged = np.asarray(refs, dtype=np.int64)
        if self._fresh(logged, keys, labels):
            # The usual record: new series under new ascending refs -- no work per series.
            self._postings.add_many(self._create_many(keys, logged), labels)
            return refs
        out = []
        created: list[tuple[int, Labels]] = []
        for ref, key, lbls in zip(refs, keys, labels):
            existing = self._refs.get(key)
            if existing is not None:
                out.append(existing)
                continue
            if lbls is None:
                out.append(-1)
                continue
            taken = ref < 0 or (ref < len(self._keys) and self._keys[ref] is not None)
            got = int(self._create_many([key], None if taken else np.array([ref], dtype=np.int64))[0])
            out.append(got)
            created.append((got, lbls))
        created.sort(key=lambda c: c[0])  # postings lists stay sorted
        self._postings.add_many([c[0] for c in created], [c[1] for c in created])
        return out

    def _fresh(self, refs: np.ndarray, keys: list[bytes], labels: list[Labels | None]) -> bool:
        """Every series decodes, none is known, and the refs ascend above every ref in use."""
        return bool(len(refs) and refs[0] >= len(self._keys) and np.all(np.diff(refs) > 0)
                    and None not in labels and len(dict.fromkeys(keys)) == len(keys)
                    and not any(map(self._refs.__contains__, keys)))

    def labels(self, ref: int) -> Labels:
        key = self._keys[ref]
        return decode_labels_key(key) if key is not None else ()

    def labels_many(self, refs: list[int]) -> list[Labels]:
        """Label sets of live series, decoded in one C call (label strings shared across
        them): a query's hot path, where decoding per series in Python cost 20-30 % of the
        ingestor's CPU."""
        keys = list(map(self._keys.__getitem__, refs))
        return decode_label_keys(keys, {}, True)

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

    def append_late(self, refs: np.ndarray, ts: np.ndarray, vals: np.ndarray,
                    status: np.ndarray, head_maxt: int) -> np.ndarray:
        """Give the samples ``append`` refused as late (out of order, too old) to the
        out-of-order head when they are within the window of ``head_maxt`` (the head's newest
        before the batch, as Prometheus's appender takes it); returns the new statuses.

        With a window, a late sample outside it is "too old" (Prometheus's ErrTooOldSample).
        A series takes late samples of one kind only: late floats of a series holding native
        histograms keep their status (and the other way round, see append_histograms_late)."""
        window = self.opts.ooo_window_ms
        late = (status == OUT_OF_ORDER) | (status == TOO_OLD)
        if window <= 0 or head_maxt == NO_TIME_MAX or not late.any():
            return status
        refs = np.asarray(refs, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.int64)
        if self.hists.num_series:
            late &= self.hists.last_ts(refs) == NO_TIME_MAX
        for ooo in self.ooo_heads():
            if ooo.hists.num_samples:
                late &= ~np.isin(refs, np.array(ooo.hists.refs(), dtype=np.int64))
        within = late & (ts >= max(head_maxt - window, int(NO_TIME_MAX)))
        status = status.copy()
        status[late & ~within] = TOO_OLD
        idx = np.flatnonzero(within)
        if len(idx):
            taken, taken_vals = self._in_order_at(refs[idx], ts[idx])
            if self.ooo_frozen is not None:  # a block cut is writing it: still first-written
                hit, hit_vals = self.ooo_frozen.lookup(refs[idx], ts[idx])
                if hit is not None:
                    if taken is None:
                        taken, taken_vals = hit, hit_vals
                    else:
                        taken_vals = np.where(taken, taken_vals, hit_vals)
                        taken = taken | hit
            status[idx] = self.ooo.insert(refs[idx], ts[idx], np.asarray(vals)[idx],
                                          taken, taken_vals)
        return status

    def _in_order_at(self, refs: np.ndarray, ts: np.ndarray
                     ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Which (ref, t) the in-order store already holds, and its value there (in C)."""
        hit, vals = self._chunks.lookup(np.ascontiguousarray(refs, dtype=np.int64),
                                        np.ascontiguousarray(ts, dtype=np.int64))
        hit = np.frombuffer(hit, dtype=np.uint8).astype(bool)
        if not hit.any():
            return None, None
        return hit, np.frombuffer(vals, dtype=np.float64)

    def append_histograms_late(self, refs: list[int], ts: list[int], hists: list,
                               status: np.ndarray, head_maxt: int) -> np.ndarray:
        """``append_late`` for native histogram samples (per sample: they are rare). Only
        series without float samples (in order or late) take late histograms."""
        window = self.opts.ooo_window_ms
        if window <= 0 or head_maxt == NO_TIME_MAX:
            return status
        late = np.flatnonzero((status == OUT_OF_ORDER) | (status == TOO_OLD))
        if not len(late):
            return status
        status = status.copy()
        floor = max(head_maxt - window, int(NO_TIME_MAX))
        late_refs = np.array([refs[i] for i in late.tolist()], dtype=np.int64)
        has_floats = np.zeros(len(late), dtype=bool)
        for ooo in self.ooo_heads():
            has_floats |= ooo.has_float_refs(late_refs)
        pending: dict = {}
        for k, i in enumerate(late.tolist()):
            ref, t, h = refs[i], ts[i], hists[i]
            if has_floats[k] or self._chunks.num_samples(ref):
                continue
            if t < floor:
                status[i] = TOO_OLD
                continue
            held_ts, held = self.hists.samples(ref, t, t)
            prior = held[0] if held_ts else (
                self.ooo_frozen.hists.get(ref, t) if self.ooo_frozen is not None else None)
            status[i] = self.ooo.hists.insert(ref, t, h, prior, pending)
        self.ooo.hists.commit(pending)
        return status

    def replay_late_histograms(self, refs: list[int], ts: list[int], hists: list) -> int:
        """WAL replay of logged late histogram samples; returns how many were restored."""
        pending: dict = {}
        got = [self.ooo.hists.insert(r, t, h, None, pending) for r, t, h in zip(refs, ts, hists)]
        self.ooo.hists.commit(pending)
        return got.count(OK)

    def replay_late(self, refs: np.ndarray, ts: np.ndarray, vals: np.ndarray) -> int:
        """WAL replay of logged out-of-order samples (acknowledged, so no window check);
        returns how many were restored."""
        st = self.ooo.insert(refs, ts, vals)
        return int(np.count_nonzero(st == OK))

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
        return self._with_hists(ref, chunks, mint, maxt) if self.hists.num_series else chunks

    def _with_hists(self, ref: int, chunks: list, mint: int, maxt: int) -> list:
        """A series' float chunks with its histogram chunks merged in, in time order."""
        h = self.hists.chunks(ref, mint, maxt)
        return sorted(chunks + h, key=lambda c: c[0]) if h else chunks

    # -- queries ------------------------------------------------------------------------------

    def select_refs(self, matchers: list[Matcher]) -> np.ndarray:
        return self._postings.select(matchers)

    def series(self, matchers: list[Matcher], mint: int, maxt: int, skip_chunks: bool = False
               ) -> list[tuple[Labels, list[tuple[int, int, bytes]]]]:
        """Matching series with data in [mint, maxt], sorted by labels."""
        refs = self.select_refs(matchers).tolist()
        chunks = self._chunks.chunks_many(refs, mint, maxt)
        if self.hists.num_series:  # rare: merge in histogram chunks per series
            chunks = [self._with_hists(ref, c, mint, maxt) for ref, c in zip(refs, chunks)]
        kept = [i for i, c in enumerate(chunks) if c] if not all(chunks) else None
        if kept is not None:
            refs, chunks = [refs[i] for i in kept], [chunks[i] for i in kept]
        if skip_chunks:
            chunks = [[] for _ in refs]
        out = list(zip(self.labels_many(refs), chunks))
        out.sort(key=itemgetter(0))
        return out

    def ooo_heads(self) -> list[OOOHead]:
        """The out-of-order heads holding samples: one being cut, then the live one."""
        return [o for o in (self.ooo_frozen, self.ooo) if o is not None and o.num_samples]

    def freeze_ooo(self) -> OOOHead:
        """Start a block cut of the out-of-order head: it stays readable as ``ooo_frozen``
        (until ``ooo_frozen`` is cleared) and late samples go to a fresh one."""
        if self.ooo_frozen is None:
            self.ooo_frozen = self.ooo
        else:  # the last cut failed before its blocks were in: cut both now
            self.ooo_frozen.merge_from(self.ooo)
        self.ooo = OOOHead()
        return self.ooo_frozen

    def ooo_series(self, matchers: list[Matcher], mint: int, maxt: int,
                   ooo: OOOHead | None = None) -> list[tuple[Labels, list[tuple[int, int, bytes]]]]:
        """Matching series' out-of-order samples in [mint, maxt] as XOR chunks (of ``ooo``,
        by default the live out-of-order head), sorted by labels."""
        ooo = self.ooo if ooo is None else ooo
        if not ooo.num_samples:
            return []
        refs = np.intersect1d(self.select_refs(matchers), ooo.series_refs())
        out = []
        for ref in refs.tolist():
            chunks = encode_chunks(*ooo.samples(ref, mint, maxt), self.opts.samples_per_chunk)
            if ooo.hists.num_samples:
                hts, hhs = ooo.hists.samples(ref, mint, maxt)
                chunks += cut_hist_chunks(list(zip(hts, hhs)), None, self.opts.chunk_range_ms,
                                          self.opts.samples_per_chunk)
            if chunks and self._keys[ref] is not None:
                out.append((self.labels(ref), chunks))
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
        return (self._chunks.memory_bytes() + self.refcache.memory_bytes()
                + sum(o.memory_bytes() for o in self.ooo_heads()))

    # -- persistence --------------------------------------------------------------------------

    def live_refs(self) -> list[int]:
        return [r for r, k in enumerate(self._keys) if k is not None]

    def ref(self, key: bytes) -> int | None:
        """The ref of a series by its label key (None if the head does not hold it)."""
        return self._refs.get(key)

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
        for ooo in self.ooo_heads():
            if len(refs):
                refs = refs[~ooo.has_refs(refs)]
        return refs

    def remove_empty_series(self, candidates: np.ndarray) -> int:
        """Forget ``candidates`` that are still empty (on the thread that appends: a write may
        have given one a sample since they were found)."""
        gone: list[int] = []
        gone_keys: list[bytes] = []
        label_sets: list[Labels] = []
        keys = self._keys
        for ref in candidates.tolist():
            key = keys[ref] if ref < len(keys) else None
            if key is None or self._chunks.num_samples(ref) or self.hists.num_samples(ref):
                continue
            if any(o.has_refs(np.array([ref]))[0] for o in self.ooo_heads()):
                continue
            keys[ref] = None
            del self._refs[key]
            gone.append(ref)
            gone_keys.append(key)
            label_sets.append(decode_labels_key(key))
        gone_refs = np.array(gone, dtype=np.int64)
        self.refcache.remove(gone_keys, gone_refs)  # and bumps its generation: no stale hit
        self._postings.delete(gone_refs, label_sets)
        self.series_removed += len(gone)
        return len(gone)
