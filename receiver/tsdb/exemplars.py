"""A tenant's exemplars: a fixed-size ring shared by all series, as Prometheus's
CircularExemplarStorage (tsdb/exemplar.go).

Why a ring: memory is bounded by ``--tsdb.max-exemplars`` whatever the series count; the
newest exemplars win. Each slot links to the next (newer) slot of the same series, and an
index maps a series' label key to its oldest and newest slot, so a query walks only the
slots of matching series. Per series, an exemplar must be newer than the series' newest
(else out of order, refused and counted); an exact repeat of the newest is silently ignored,
as Prometheus does with the exemplar a scrape repeats until it changes.

Exemplars are few beside samples (at most one per series and scrape), so the append walks
them in Python; the request decoder has already validated and flattened them in C.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .labels import Labels, Matcher, decode_labels_key, matches_all

ADDED = 0
DUPLICATE = 1     # equal to the series' newest exemplar: ignored, not an error
OUT_OF_ORDER = 2  # Prometheus's ErrOutOfOrderExemplar

_EMPTY = -1


@dataclass
class ExemplarResult:
    """The exemplars of one series, oldest first: (labels, value, timestamp ms)."""

    series_labels: Labels
    exemplars: list[tuple[Labels, float, int]]


class CircularExemplarStorage:
    """At most ``max_exemplars`` exemplars over all series of one tenant (0 = disabled).

    Slots and series are numpy columns, so a request's exemplars go in with a few array
    operations: the exemplars of distinct series at once (a request repeating a series is
    taken in rounds, the n-th exemplar of every series in round n), Python only for series
    seen for the first time or losing their last exemplar.
    """

    def __init__(self, max_exemplars: int) -> None:
        self.max_exemplars = max(0, max_exemplars)
        # Slot columns grow with use up to max_exemplars (a tenant that sends few exemplars
        # costs little however large the flag); positions only wrap once they are full size.
        self._sid = np.zeros(0, dtype=np.int64)            # series id per slot (-1: empty)
        self._ts = np.zeros(0, dtype=np.int64)
        self._vals = np.zeros(0, dtype=np.float64)
        self._labels = np.zeros(0, dtype=object)           # exemplar label key per slot
        self._next = np.zeros(0, dtype=np.int64)           # newer slot of the same series
        # Series: ids handed out per label key; freed ids are reused, so at most n + one
        # request's worth are ever live.
        self._ids: dict[bytes, int] = {}
        self._keys: list[bytes | None] = []
        self._series_labels: list[Labels | None] = []
        self._oldest = np.zeros(0, dtype=np.int64)
        self._newest = np.zeros(0, dtype=np.int64)
        self._free: list[int] = []
        self._evicted: list[np.ndarray] = []  # series that lost slots in this add()
        # A checkpoint reads the ring from a worker thread while the loop adds to it.
        self._lock = threading.Lock()
        self._pos = 0
        self.count = 0  # slots in use

    def _grow(self, upto: int) -> None:
        """Slot columns of at least ``upto`` slots (never more than max_exemplars)."""
        have = len(self._sid)
        if upto <= have:
            return
        new = min(self.max_exemplars, max(upto, 2 * have, 1024))
        extra = new - have
        self._sid = np.concatenate([self._sid, np.full(extra, _EMPTY, np.int64)])
        self._ts = np.concatenate([self._ts, np.zeros(extra, np.int64)])
        self._vals = np.concatenate([self._vals, np.zeros(extra, np.float64)])
        self._labels = np.concatenate([self._labels, np.full(extra, b"", dtype=object)])
        self._next = np.concatenate([self._next, np.full(extra, _EMPTY, np.int64)])

    @property
    def enabled(self) -> bool:
        return self.max_exemplars > 0

    @property
    def num_series(self) -> int:
        return len(self._ids)

    def _series_ids(self, keys: list[bytes]) -> np.ndarray:
        found = list(map(self._ids.get, keys))
        if None in found:
            for i, k in enumerate(keys):
                if found[i] is None:
                    sid = self._ids.get(k)
                    if sid is None:
                        sid = self._new_series(k)
                    found[i] = sid
        return np.array(found, dtype=np.int64)

    def _new_series(self, key: bytes) -> int:
        if self._free:
            sid = self._free.pop()
            self._keys[sid], self._series_labels[sid] = key, None
        else:
            sid = len(self._keys)
            self._keys.append(key)
            self._series_labels.append(None)
            if sid >= len(self._oldest):
                grow = max(64, 2 * len(self._oldest))
                self._oldest = np.concatenate([self._oldest, np.full(grow, _EMPTY, np.int64)])
                self._newest = np.concatenate([self._newest, np.full(grow, _EMPTY, np.int64)])
        self._oldest[sid] = self._newest[sid] = _EMPTY
        self._ids[key] = sid
        return sid

    def add(self, series: list[bytes], labels: list[bytes], vals, ts) -> np.ndarray:
        """Append exemplars (per series in order); returns ADDED/DUPLICATE/OUT_OF_ORDER each."""
        n = len(series)
        out = np.zeros(n, dtype=np.uint8)
        if not self.enabled or n == 0:
            return out
        ts = np.asarray(ts, dtype=np.int64)
        vals = np.asarray(vals, dtype=np.float64)
        lab = np.empty(n, dtype=object)
        lab[:] = labels
        with self._lock:
            self._add_rounds(self._series_ids(series), ts, vals, lab, out)
        return out

    def _add_rounds(self, sids: np.ndarray, ts: np.ndarray, vals: np.ndarray, lab: np.ndarray,
                    out: np.ndarray) -> None:
        n = len(sids)
        # The k-th exemplar of each series in this request goes in round k.
        order = np.argsort(sids, kind="stable")
        srt = sids[order]
        starts = np.flatnonzero(np.r_[True, srt[1:] != srt[:-1]])
        rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        occurrence = np.empty(n, dtype=np.int64)
        occurrence[order] = rank
        for r in range(int(occurrence.max()) + 1):
            idx = np.flatnonzero(occurrence == r)
            for lo in range(0, len(idx), self.max_exemplars):
                part = idx[lo:lo + self.max_exemplars]
                out[part] = self._add_distinct(sids[part], ts[part], vals[part], lab[part])
        self._drop_empty_series()

    def _add_distinct(self, sids: np.ndarray, ts: np.ndarray, vals: np.ndarray,
                      lab: np.ndarray) -> np.ndarray:
        """Exemplars of distinct series, at most a ring's worth."""
        st = np.full(len(sids), ADDED, dtype=np.uint8)
        newest = self._newest[sids]
        has = newest >= 0
        nslot = np.where(has, newest, 0)
        nts = self._ts[nslot] if len(self._ts) else np.zeros(len(sids), dtype=np.int64)
        stale = has & (ts <= nts)
        if stale.any():
            same = stale & (ts == nts) & (vals == self._vals[nslot])
            for i in np.flatnonzero(same).tolist():
                if lab[i] == self._labels[nslot[i]]:
                    st[i] = DUPLICATE
            st[stale & (st != DUPLICATE)] = OUT_OF_ORDER
        acc = np.flatnonzero(st == ADDED)
        if not len(acc):
            return st
        size = self.max_exemplars
        if stale.any() and (stale & ((nslot - self._pos) % size < len(acc))).any():
            # A refused exemplar whose series' newest is overwritten by this very batch: one at
            # a time its series would be empty by then and take it, as Prometheus does.
            return np.array([self._add_distinct(sids[i:i + 1], ts[i:i + 1], vals[i:i + 1],
                                                lab[i:i + 1])[0] for i in range(len(sids))],
                            dtype=np.uint8)
        sids, ts, vals, lab = sids[acc], ts[acc], vals[acc], lab[acc]
        self._grow(self._pos + len(acc))  # before the first wrap, slots run 0, 1, 2, ...
        slots = (self._pos + np.arange(len(acc))) % size
        # Evict: each evicted series' oldest moves past its last overwritten slot.
        old = self._sid[slots]
        ev = np.flatnonzero(old >= 0)
        if len(ev):
            rev = ev[::-1]
            uniq, first_in_rev = np.unique(old[rev], return_index=True)
            last_slot = slots[rev[first_in_rev]]
            nxt = self._next[last_slot]
            self._oldest[uniq] = nxt
            self._newest[uniq[nxt < 0]] = _EMPTY
            self._evicted.append(uniq)
        self.count += len(acc) - len(ev)
        # Link each new slot after its series' newest.
        newest = self._newest[sids]
        linked = newest >= 0
        self._next[newest[linked]] = slots[linked]
        self._oldest[sids[~linked]] = slots[~linked]
        self._newest[sids] = slots
        self._sid[slots] = sids
        self._ts[slots] = ts
        self._vals[slots] = vals
        self._labels[slots] = lab
        self._next[slots] = _EMPTY
        self._pos = int((self._pos + len(acc)) % size)
        return st

    def _drop_empty_series(self) -> None:
        """Forget series whose exemplars were all overwritten (their ids are reused)."""
        if not self._evicted:
            return
        ev = np.unique(np.concatenate(self._evicted))
        self._evicted = []
        for sid in ev[self._newest[ev] < 0].tolist():
            key = self._keys[sid]
            if key is not None:
                del self._ids[key]
                self._keys[sid] = None
                self._series_labels[sid] = None
                self._free.append(sid)

    def select(self, start: int, end: int, selectors: list[list[Matcher]]) -> list[ExemplarResult]:
        """Exemplars in [start, end] of series matching any selector, sorted by series labels
        (as Prometheus's Select)."""
        out = []
        nxt = ts = None
        for key, sid in list(self._ids.items()):
            lbls = self._series_labels[sid]
            if lbls is None:
                lbls = self._series_labels[sid] = decode_labels_key(key)
            if not any(matches_all(lbls, ms) for ms in selectors):
                continue
            if nxt is None:
                nxt, ts = self._next.tolist(), self._ts.tolist()
            found = []
            i = int(self._oldest[sid])
            while i != _EMPTY:
                t = ts[i]
                if t > end:
                    break
                if t >= start:
                    found.append((decode_labels_key(self._labels[i]), float(self._vals[i]), t))
                i = nxt[i]
            if found:
                out.append(ExemplarResult(lbls, found))
        out.sort(key=lambda r: r.series_labels)
        return out

    def time_range(self) -> tuple[int, int] | None:
        """Oldest and newest exemplar timestamps held (None when empty)."""
        used = self._sid >= 0
        if not used.any():
            return None
        return int(self._ts[used].min()), int(self._ts[used].max())

    def all_oldest_first(self) -> tuple[list[bytes], list[bytes], list[float], list[int]]:
        """Every held exemplar in ring order (oldest first): what a checkpoint re-logs."""
        with self._lock:
            n = len(self._sid)
            order = (self._pos + np.arange(n)) % n if n else np.zeros(0, np.int64)
            order = order[self._sid[order] >= 0]
            keys = self._keys
            return ([keys[s] for s in self._sid[order].tolist()],  # type: ignore[misc]
                    self._labels[order].tolist(), self._vals[order].tolist(),
                    self._ts[order].tolist())
