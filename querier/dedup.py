"""Deduplicating replicas of a series (``--query.replica-label``, ``--deduplication.func``).

* ``chain``: the union of the replicas' samples, one sample per timestamp. Right for receive
  replication, where every replica holds the very same samples.
* ``penalty``: Thanos's algorithm for HA Prometheus pairs, whose replicas scrape at different
  moments. It follows one replica and switches to another only when the current one has a gap:
  after a sample at ``t`` from one replica, the other is considered only from
  ``t + 1 + 2 * (t - previous t)`` on (5 s before any delta is known). With ``counter=True``,
  a switch to a replica whose value is below the last one returned shifts that replica up by the
  difference, so the switch does not look like a counter reset to rate()/increase().

Each run of samples taken from one replica is found with array operations; Python only loops
once per switch between replicas, never per sample.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

INITIAL_PENALTY_MS = 5000

Replica = tuple[np.ndarray, np.ndarray]  # (ts int64 ascending, vals float64)


def strip_labels(labels: tuple, replica_labels: frozenset[str]) -> tuple:
    return tuple(p for p in labels if p[0] not in replica_labels)


def chain(replicas: Sequence[Replica]) -> Replica:
    """Union by timestamp; for equal timestamps the first replica's sample wins."""
    if len(replicas) == 1:
        return replicas[0]
    ts = np.concatenate([r[0] for r in replicas])
    vals = np.concatenate([r[1] for r in replicas])
    ts, first = np.unique(ts, return_index=True)
    return ts, vals[first]


def penalty(replicas: Sequence[Replica], counter: bool = False) -> Replica:
    """Thanos's penalty deduplication, folded over the replicas pairwise in the given order."""
    out = replicas[0]
    for r in replicas[1:]:
        out = _penalty_pair(out, r, counter)
    return out


def _run(x: np.ndarray, p: int, prev_last: int | None, y: np.ndarray, iy: int) -> tuple[int, int]:
    """We just returned x[p] (the sample before it was ``prev_last``) and y waits at ``iy``.

    Returns (end, jy): x[p+1:end] are returned next, then y[jy] (``jy == len(y)``: y is done and
    the rest of x follows; ``end == len(x)``: x ran out and y continues from ``jy``).
    """
    nx, ny = len(x), len(y)
    if p + 1 >= nx:  # x exhausted right away: y seeks past the penalty once more
        pen = INITIAL_PENALTY_MS if prev_last is None else 2 * (int(x[p]) - prev_last)
        return nx, max(iy, int(np.searchsorted(y, int(x[p]) + 1 + pen)))
    last = x[p:nx - 1]                       # x[k-1] for k = p+1 .. nx-1
    before = np.empty_like(last)             # the sample returned before x[k-1]
    before[1:] = x[p:nx - 2]
    first_pen = INITIAL_PENALTY_MS if prev_last is None else 2 * (int(x[p]) - prev_last)
    pen = 2 * (last - before)
    pen[0] = first_pen
    thr = last + 1 + pen
    jy = np.maximum.accumulate(np.searchsorted(y, thr, side="left"))
    np.maximum(jy, iy, out=jy)
    cand = x[p + 1:nx]
    yv = y[np.minimum(jy, ny - 1)] if ny else cand
    stay = (jy >= ny) | (cand <= yv)
    bad = np.flatnonzero(~stay)
    if len(bad) == 0:
        # x is followed to its end; then y seeks once more past the last penalty.
        last_t = int(x[-1])
        pen_y = 2 * (last_t - int(x[-2]))  # here x[-1] was returned after x[-2]
        return nx, max(int(jy[-1]), int(np.searchsorted(y, last_t + 1 + pen_y)))
    m = int(bad[0])
    return p + 1 + m, int(jy[m])


def _penalty_pair(a: Replica, b: Replica, counter: bool) -> Replica:
    if len(a[0]) == 0:
        return b
    if len(b[0]) == 0:
        return a
    series = [a, b]
    adjust = [0.0, 0.0]
    ts_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    cur = 0 if a[0][0] <= b[0][0] else 1
    p = 0
    prev_last: int | None = None
    other_pos = 0
    last_val: float | None = None
    while True:
        x_ts, x_v = series[cur]
        y_ts, y_v = series[1 - cur]
        if counter and last_val is not None:
            v = float(x_v[p]) + adjust[cur]
            if last_val > v:
                adjust[cur] += last_val - v
        end, jy = _run(x_ts, p, prev_last, y_ts, other_pos)
        ts_parts.append(x_ts[p:end])
        val_parts.append(x_v[p:end] + adjust[cur] if adjust[cur] else x_v[p:end])
        last_val = float(val_parts[-1][-1])
        if end >= len(x_ts):  # x ran out: the rest of y, from where it was sought
            if jy < len(y_ts):
                if counter:
                    v = float(y_v[jy]) + adjust[1 - cur]
                    if last_val > v:
                        adjust[1 - cur] += last_val - v
                ts_parts.append(y_ts[jy:])
                val_parts.append(y_v[jy:] + adjust[1 - cur] if adjust[1 - cur] else y_v[jy:])
            break
        if jy >= len(y_ts):  # cannot happen (stay would hold), kept for safety
            ts_parts.append(x_ts[end:])
            val_parts.append(x_v[end:] + adjust[cur])
            break
        prev_last = int(x_ts[end - 1])
        other_pos = end          # x waits at its next sample
        cur, p = 1 - cur, jy     # y[jy] is returned next
    return np.concatenate(ts_parts), np.concatenate(val_parts)


def penalty_reference(replicas: Sequence[Replica], counter: bool = False) -> Replica:
    """Sample-by-sample transcription of the algorithm, for tests only (slow on purpose)."""
    out = replicas[0]
    for r in replicas[1:]:
        out = _reference_pair(out, r, counter)
    return out


def _reference_pair(a: Replica, b: Replica, counter: bool) -> Replica:
    its = [[a[0].tolist(), a[1].tolist(), 0, 0.0], [b[0].tolist(), b[1].tolist(), 0, 0.0]]

    def seek(it, t):
        while it[2] < len(it[0]) and it[0][it[2]] < t:
            it[2] += 1
        return it[2] < len(it[0])

    def at(it):
        return it[0][it[2]], it[1][it[2]] + it[3]

    last_t = None
    pens = [0, 0]
    use = None
    ts, vs = [], []
    while True:
        last_v = vs[-1] if vs else None
        prev_use = use
        ok = [seek(its[i], (last_t + 1 + pens[i]) if last_t is not None else -(1 << 62)) for i in (0, 1)]
        if not ok[0] and not ok[1]:
            break
        if not ok[0] or not ok[1]:
            use = 0 if ok[0] else 1
            pens[use] = 0
        else:
            ta, tb = its[0][0][its[0][2]], its[1][0][its[1][2]]
            use = 0 if ta <= tb else 1
            t_new = ta if use == 0 else tb
            pens[1 - use] = INITIAL_PENALTY_MS if last_t is None else 2 * (t_new - last_t)
            pens[use] = 0
        if counter and prev_use is not None and use != prev_use and last_v is not None:
            _, v = at(its[use])
            if last_v > v:
                its[use][3] += last_v - v
        t, v = at(its[use])
        ts.append(t)
        vs.append(v)
        last_t = t
    return np.array(ts, dtype=np.int64), np.array(vs, dtype=np.float64)
