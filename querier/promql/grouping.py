"""Group ids for aggregation rows, so reductions run over all groups at once."""
from __future__ import annotations

import numpy as np

from querier.promql import ast
from querier.promql._groupc import group_ids
from querier.promql.values import METADATA_LABELS
from receiver.tsdb.labels import Labels


def kept_names(mod) -> tuple[frozenset[str], bool]:
    """(names, keep): `by` keeps the listed names, `without` drops them and the metadata labels
    (as Prometheus 3.16); no modifier keeps nothing."""
    if mod is None:
        return frozenset(), True
    names = frozenset(mod.labels)
    if mod.type == ast.AggModifierType.By:
        return names, True
    return names | METADATA_LABELS, False


def group_rows(labels: list[Labels], mod) -> tuple[np.ndarray, list[Labels]]:
    """(gid int64 [n], group labels): rows' groups numbered in order of first appearance.

    Rows' kept pairs are hashed and interned in C (querier.promql._groupc), a group's key tuple
    built once from its first row; the reductions then run over the group ids for all groups
    at once. Label sets that are not tuples of pairs go row by row in Python."""
    n = len(labels)
    names, keep = kept_names(mod)
    if not names and keep:
        return np.zeros(n, np.int64), [()] if n else []
    got = group_ids(labels if isinstance(labels, list) else list(labels), names, keep)
    if got is not None:  # label sets of (name, value) tuples: hashed and interned in C
        return np.frombuffer(got[0], np.int64), got[1]
    if keep:
        keys = [tuple([p for p in l if p[0] in names]) for l in labels]
    else:
        keys = [tuple([p for p in l if p[0] not in names]) for l in labels]
    code_of = {k: i for i, k in enumerate(dict.fromkeys(keys))}  # first appearance order
    return np.fromiter(map(code_of.__getitem__, keys), np.int64, n), list(code_of)


def group_index(labels: list[Labels], mod) -> dict[Labels, np.ndarray]:
    """Group labels -> row indices (ascending), groups in order of first appearance."""
    gid, glabels = group_rows(labels, mod)
    order = np.argsort(gid, kind="stable")
    bounds = np.searchsorted(gid[order], np.arange(len(glabels) + 1))
    return {gl: order[bounds[g]:bounds[g + 1]] for g, gl in enumerate(glabels)}
