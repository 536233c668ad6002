"""Internal value kinds: every node is evaluated for all steps at once.

An instant vector is a set of rows (label sets) x steps with a presence mask, so per-step
work is numpy column operations. ``drop`` implements Prometheus 3's delayed ``__name__``
removal: a row flagged for dropping keeps its name until the end of evaluation (or until
label_replace/label_join rewrites it).
"""
from __future__ import annotations

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
    # per series: int64 start timestamps parallel to ts (0 unknown) or None; None = no series has any.
    # Only a matrix selector under rate/irate/increase/resets with use-start-timestamps sets it.
    sts: list | None = None


def held_points(v) -> int:
    """How many points a value holds, for the query's sample budget."""
    if isinstance(v, (Vec, Scalar)):
        return v.vals.size
    if isinstance(v, Matrix):
        return sum(len(t) for t in v.ts)
    return 0


def empty_vec(T: int) -> Vec:
    return Vec([], np.zeros((0, T)), np.zeros((0, T), dtype=bool), np.zeros(0, dtype=bool))


def is_stale(vals: np.ndarray) -> np.ndarray:
    return vals.view(np.uint64) == np.uint64(STALE_NAN_BITS)


# The metric's schema labels: where Prometheus drops the name it drops the type and unit labels
# (type-and-unit-labels) with it -- unconditionally, so a default server does the same.
METADATA_LABELS = frozenset((METRIC_NAME, "__type__", "__unit__"))


def drop_name(lbls: Labels) -> Labels:
    return tuple(p for p in lbls if p[0] not in METADATA_LABELS)


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
    groups: dict[Labels, list[int]] = {}
    for i, l in enumerate(v.labels):
        groups.setdefault(l, []).append(i)
    if len(groups) == len(v.labels):
        return v
    from querier.promql.types import PromQLError
    T = v.vals.shape[1]
    labels, vals, pres, drop = [], np.zeros((len(groups), T)), np.zeros((len(groups), T), bool), []
    hist = None if v.hist is None else np.full((len(groups), T), None, dtype=object)
    for k, (l, idx) in enumerate(groups.items()):
        p = v.present[idx]
        if (p.sum(0) > 1).any():
            raise PromQLError("execution", err)
        sel = p.argmax(0)
        vals[k] = v.vals[idx][sel, np.arange(T)]
        if hist is not None:
            hist[k] = np.where(p.any(0), v.hist[idx][sel, np.arange(T)], None)
        pres[k] = p.any(0)
        labels.append(l)
        drop.append(bool(v.drop[idx].any()))
    return Vec(labels, vals, pres, np.array(drop, dtype=bool), hist=hist)


def finalize(v: Vec) -> Vec:
    """Apply delayed name removal and reject label-set collisions, as at the end of a query."""
    if v.drop.any():
        v = Vec([drop_name(l) if d else l for l, d in zip(v.labels, v.drop)], v.vals, v.present,
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
