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


def empty_vec(T: int) -> Vec:
    return Vec([], np.zeros((0, T)), np.zeros((0, T), dtype=bool), np.zeros(0, dtype=bool))


def is_stale(vals: np.ndarray) -> np.ndarray:
    return vals.view(np.uint64) == np.uint64(STALE_NAN_BITS)


def drop_name(lbls: Labels) -> Labels:
    return tuple(p for p in lbls if p[0] != METRIC_NAME)


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
    for k, (l, idx) in enumerate(groups.items()):
        p = v.present[idx]
        if (p.sum(0) > 1).any():
            raise PromQLError("execution", err)
        sel = p.argmax(0)
        vals[k] = v.vals[idx][sel, np.arange(T)]
        pres[k] = p.any(0)
        labels.append(l)
        drop.append(bool(v.drop[idx].any()))
    return Vec(labels, vals, pres, np.array(drop, dtype=bool))


def finalize(v: Vec) -> Vec:
    """Apply delayed name removal and reject label-set collisions, as at the end of a query."""
    if v.drop.any():
        v = Vec([drop_name(l) if d else l for l, d in zip(v.labels, v.drop)], v.vals, v.present,
                np.zeros(len(v.labels), dtype=bool))
    return merge_rows(v, "vector cannot contain metrics with the same labelset")
