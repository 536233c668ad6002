"""Internal value kinds: every node is evaluated for all steps at once.

An instant vector is a set of rows (label sets) x steps with a presence mask, so per-step
work is numpy column operations. ``drop`` implements Prometheus 3's delayed ``__name__``
removal: a row flagged for dropping keeps its name until the end of evaluation (or until
label_replace/label_join rewrites it).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from receiver.tsdb.labels import METRIC_NAME, STALE_NAN_BITS, Labels


@dataclass
class Vec:
    labels: list[Labels]
    vals: np.ndarray  # float64 [n, T]
    present: np.ndarray  # bool [n, T]
    drop: np.ndarray  # bool [n]
    sample_ts: np.ndarray | None = None  # int64 [n, T]; set only by a plain vector selector
    hist: np.ndarray | None = None  # object [n, T]: native histogram where not None; None = all floats
    sample_st: np.ndarray | None = None  # int64 [n, T] start timestamps (0 unknown); plain selector only


@dataclass
class Scalar:
    vals: np.ndarray  # float64 [T]


@dataclass
class Str:
    val: str


@dataclass
class Matrix:
    """Range vector: raw (non-stale) samples per series plus each step's window (end-rng, end]."""

    labels: list[Labels]
    ts: list[np.ndarray]
    vals: list[np.ndarray]
    drop: np.ndarray
    end: np.ndarray  # int64 [T] right window edge per step (eval time minus offset)
    rng: int  # ms
    eval_ts: np.ndarray  # int64 [T] the step (or @) time, Prometheus's enh.Ts
    hists: list | None = None  # per series: object array parallel to ts (None entries = floats), or None
    # anchored/smoothed selectors (Prometheus's extended range selectors): ts/vals also hold the
    # samples up to a lookback before each window (and after it, smoothed); see rangeext
    ext: object | None = None
    # per series: int64 start timestamps parallel to ts (0 unknown) or None; None = no series has any.
    # Only a matrix selector under rate/irate/increase/resets with use-start-timestamps sets it.
    sts: list | None = None
    # ts/vals laid end to end with int64 offsets [n+1], as the selector read them (then ts[i] and
    # vals[i] are views of these), so range functions need not concatenate the series again
    cat: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def held_points(v) -> int:
    """How many points a value holds, for the query's sample budget."""
    if isinstance(v, (Vec, Scalar)):
        return v.vals.size
    if isinstance(v, Matrix):
        return len(v.cat[0]) if v.cat is not None else sum(len(t) for t in v.ts)
    return 0


def concat_vecs(vecs: list[Vec]) -> Vec:
    """The rows of ``vecs`` (at least one) one after the other: a selector's or a range
    function's result over consecutive slices of a selection (engine._selected_parts)."""
    if len(vecs) == 1:
        return vecs[0]
    hist = None
    if any(v.hist is not None for v in vecs):
        hist = np.concatenate([v.hist if v.hist is not None else
                               np.full(v.vals.shape, None, dtype=object) for v in vecs])
    sample_ts = sample_st = None
    if all(v.sample_ts is not None for v in vecs):  # a plain selector's vector
        sample_ts = np.concatenate([v.sample_ts for v in vecs])
    if any(v.sample_st is not None for v in vecs):
        sample_st = np.concatenate([v.sample_st if v.sample_st is not None else
                                    np.zeros(v.vals.shape, dtype=np.int64) for v in vecs])
    return Vec(list(itertools.chain.from_iterable(v.labels for v in vecs)),
               np.concatenate([v.vals for v in vecs]), np.concatenate([v.present for v in vecs]),
               np.concatenate([v.drop for v in vecs]), sample_ts, hist, sample_st)


def bounded_runs(cost: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive [a, b) index ranges whose summed ``cost`` stays within ``limit`` (a single
    costlier item is a run of its own)."""
    total = np.cumsum(cost)
    out, a = [], 0
    while a < len(cost):
        base = total[a - 1] if a else 0
        b = max(a + 1, int(np.searchsorted(total, base + limit, side="right")))
        out.append((a, b))
        a = b
    return out


def empty_vec(T: int) -> Vec:
    return Vec([], np.zeros((0, T)), np.zeros((0, T), dtype=bool), np.zeros(0, dtype=bool))


def is_stale(vals: np.ndarray) -> np.ndarray:
    return vals.view(np.uint64) == np.uint64(STALE_NAN_BITS)


# The metric's schema labels: where Prometheus drops the name it drops the type and unit labels
# (type-and-unit-labels) with it -- unconditionally, so a default server does the same.
METADATA_LABELS = frozenset((METRIC_NAME, "__type__", "__unit__"))


def drop_name(lbls: Labels) -> Labels:
    # Sorted label sets hold the name first unless a label name sorts before "__name__"; when
    # the next name sorts after "__unit__", no later one is a schema label either.
    if lbls and lbls[0][0] == METRIC_NAME and (len(lbls) == 1 or lbls[1][0] > "__unit__"):
        return lbls[1:]
    return tuple(p for p in lbls if p[0] not in METADATA_LABELS)


def drop_names(labels: list[Labels]) -> list[Labels]:
    """drop_name of every label set; the usual case (name first, no schema label) inline."""
    return [l[1:] if l and l[0][0] == METRIC_NAME and (len(l) == 1 or l[1][0] > "__unit__")
            else drop_name(l) for l in labels]


def get_label(lbls: Labels, name: str) -> str:
    for k, v in lbls:
        if k == name:
            return v
    return ""


def set_label(lbls: Labels, name: str, value: str) -> Labels:
    d = dict(lbls)
    if value == "":
        d.pop(name, None)
    else:
        d[name] = value
    return tuple(sorted(d.items()))


def fmt_labels(lbls: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in lbls) + "}"


def merge_rows(v: Vec, err: str) -> Vec:
    """Combine rows with identical label sets; two present at one step is an error."""
    if len(set(v.labels)) == len(v.labels):  # the usual case, hashed in C
        return v
    from querier.promql.types import PromQLError
    ids: dict[Labels, int] = {}
    gid = np.array([ids.setdefault(l, len(ids)) for l in v.labels], dtype=np.intp)
    G, T = len(ids), v.vals.shape[1]
    count = np.zeros((G, T), dtype=np.int64)
    np.add.at(count, gid, v.present)
    if (count > 1).any():
        raise PromQLError("execution", err)
    first = np.full(G, len(gid), dtype=np.intp)
    np.minimum.at(first, gid, np.arange(len(gid)))
    rr, tt = np.nonzero(v.present)
    vals = v.vals[first].copy()  # a group's first row where none is present, as before
    vals[gid[rr], tt] = v.vals[rr, tt]
    hist = None
    if v.hist is not None:
        hist = np.full((G, T), None, dtype=object)
        hist[gid[rr], tt] = v.hist[rr, tt]
    drop = np.zeros(G, dtype=bool)
    np.logical_or.at(drop, gid, v.drop)
    return Vec(list(ids), vals, count > 0, drop, hist=hist)


def finalize(v: Vec) -> Vec:
    """Apply delayed name removal and reject label-set collisions, as at the end of a query."""
    dropped = np.count_nonzero(v.drop)  # bool count in C: no reduction wrapper per call
    if dropped and dropped == len(v.drop):
        from querier.promql._groupc import group_ids
        # the rows' label sets without the metadata labels, hashed and interned in C: as many
        # distinct ones as rows (the usual case) is a vector that needs no merge
        got = group_ids(v.labels, METADATA_LABELS, False) if isinstance(v.labels, list) else None
        if got is not None and len(got[1]) == len(v.labels):
            return Vec(got[1], v.vals, v.present, np.zeros(len(v.labels), dtype=bool), hist=v.hist)
        v = Vec(drop_names(v.labels), v.vals, v.present, np.zeros(len(v.labels), dtype=bool),
                hist=v.hist)
    elif dropped:
        v = Vec([drop_name(l) if d else l for l, d in zip(v.labels, v.drop.tolist())], v.vals, v.present,
                np.zeros(len(v.labels), dtype=bool), hist=v.hist)
    return merge_rows(v, "vector cannot contain metrics with the same labelset")


def is_hist(v: Vec) -> np.ndarray:
    """bool [n, T]: where the vector holds a (present) native histogram."""
    if v.hist is None:
        return np.zeros(v.present.shape, dtype=bool)
    return v.present & (v.hist != None)  # noqa: E711 - elementwise on an object array


def floats_only(v: Vec) -> Vec:
    """The float samples of v (functions that do not apply to histograms drop them)."""
    if v.hist is None:
        return v
    return Vec(v.labels, v.vals, v.present & ~is_hist(v), v.drop, v.sample_ts)


def with_hist(v: Vec, labels=None, present=None, drop=None) -> Vec:
    """A copy of v with some fields replaced, histograms kept."""
    return Vec(v.labels if labels is None else labels, v.vals, v.present if present is None else present,
               v.drop if drop is None else drop, v.sample_ts, v.hist)


def select_rows(v: Vec, order) -> Vec:
    return Vec([v.labels[i] for i in order], v.vals[order], v.present[order], v.drop[order],
               None if v.sample_ts is None else v.sample_ts[order], None if v.hist is None else v.hist[order])


def row_values(v: Vec, i: int, mask: np.ndarray) -> np.ndarray:
    """Values of row i at the masked steps: float64, or an object array when histograms occur."""
    if v.hist is None:
        return v.vals[i][mask]
    h = v.hist[i][mask]
    if all(x is None for x in h):
        return v.vals[i][mask]
    out = v.vals[i][mask].astype(object)
    hm = h != None  # noqa: E711
    out[hm] = h[hm]
    return out


def valid_label_name(name: str) -> bool:
    """Prometheus 3 takes any non-empty UTF-8 label name. The parser keeps a byte escape that
    is not UTF-8 (``"\\xff"``) as a lone surrogate, which makes the name invalid."""
    if not name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(s: str) -> str:
    """A string for an error text as Go's %s prints it into JSON: bytes that are not UTF-8
    become U+FFFD."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
