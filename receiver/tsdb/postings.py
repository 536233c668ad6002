"""Inverted index from label pairs to series refs, and matcher evaluation over it.

Refs are handed out in increasing order, so every postings list is sorted by construction and
appending is O(1). Lists are ``bytearray`` of native int64 -- 8 bytes a ref -- filled by C
(``_blockio.postings_add``: no Python work per series or label), and become numpy arrays
without a copy when a query intersects them. A list a query still views is copied, not grown.
"""
from __future__ import annotations

import numpy as np

from ._blockio import postings_add
from .labels import Labels, Matcher

EMPTY = np.zeros(0, dtype=np.int64)


class MemPostings:
    """``name -> value -> refs`` for one head."""

    def __init__(self) -> None:
        self._index: dict[str, dict[str, bytearray]] = {}
        self._all = bytearray()

    def add(self, ref: int, lbls: Labels) -> None:
        self.add_many([ref], [lbls])

    def add_many(self, refs: list[int] | np.ndarray, label_sets: list[Labels | None]) -> None:
        """Index series (``None`` label sets are skipped). Refs ascending and above every ref
        already added is the fast case; others are inserted in order, repeats ignored."""
        refs = np.ascontiguousarray(refs, dtype=np.int64)
        self._all = postings_add(self._index, self._all, refs, list(label_sets))

    def delete(self, refs: np.ndarray, label_sets: list[Labels]) -> None:
        """Drop ``refs`` (whose labels are ``label_sets``): each touched list is filtered once,
        vectorised, and names/values left without series disappear."""
        if not len(refs):
            return
        gone = np.asarray(refs, dtype=np.int64)
        touched: dict[tuple[str, str], None] = {}
        for lbls in label_sets:
            touched.update(dict.fromkeys(lbls))
        self._all = _without(self._all, gone)
        for name, value in touched:
            values = self._index.get(name)
            if values is None or value not in values:
                continue
            kept = _without(values[value], gone)
            if len(kept):
                values[value] = kept
            else:
                del values[value]
                if not values:
                    del self._index[name]

    def label_names(self) -> list[str]:
        return sorted(self._index)

    def label_values(self, name: str) -> list[str]:
        return sorted(self._index.get(name, ()))

    def all_refs(self) -> np.ndarray:
        return _view(self._all) if len(self._all) else EMPTY

    def _union(self, lists: list[bytearray]) -> np.ndarray:
        if not lists:
            return EMPTY
        if len(lists) == 1:
            return _view(lists[0])
        return np.unique(np.concatenate([np.frombuffer(x, dtype=np.int64) for x in lists]))

    def _matching(self, m: Matcher) -> np.ndarray:
        """Refs whose value for ``m.name`` is present and matches ``m``."""
        values = self._index.get(m.name, {})
        if m.type.value == "=":
            lst = values.get(m.value)
            return _view(lst) if lst is not None else EMPTY
        return self._union([lst for v, lst in values.items() if m.matches(v)])

    def select(self, matchers: list[Matcher]) -> np.ndarray:
        """Sorted refs of series matching every matcher (Prometheus semantics: absent == "")."""
        result: np.ndarray | None = None
        # Matchers that select (do not match "") narrow fastest, so apply them first.
        ordered = sorted(matchers, key=lambda m: m.matches_empty())
        for m in ordered:
            if m.matches_empty():
                # Series lacking the label match; subtract those whose value fails the matcher.
                values = self._index.get(m.name, {})
                bad = self._union([lst for v, lst in values.items() if not m.matches(v)])
                base = self.all_refs() if result is None else result
                result = np.setdiff1d(base, bad, assume_unique=True) if len(bad) else base
            else:
                hit = self._matching(m)
                result = hit if result is None else np.intersect1d(result, hit, assume_unique=True)
            if len(result) == 0:
                return EMPTY
        return self.all_refs() if result is None else result


def _view(lst: bytearray) -> np.ndarray:
    """A list as a read-only array, without a copy (the list is copied if it must grow)."""
    a = np.frombuffer(lst, dtype=np.int64)
    a.flags.writeable = False
    return a


def _without(lst: bytearray, gone: np.ndarray) -> bytearray:
    """A new list (never mutated in place: a query may hold a view of the old one)."""
    a = np.frombuffer(lst, dtype=np.int64) if len(lst) else EMPTY
    return bytearray(a[~np.isin(a, gone)].tobytes())
