"""info(v [, data-label selector]): enrich series with the data labels of info metrics
(``target_info`` by default) that share their identifying labels (``instance``, ``job``).

Work is per info series and per base series (dict lookups keyed on identifying labels, as
Prometheus does), each vectorised across the steps: at every step the newest sample of each
info series group wins, and a base series whose winners change over time splits into one
output row per distinct set of winners.
"""
from __future__ import annotations

import numpy as np
from querier.promql import ast
from querier.promql.types import PromQLError
from querier.promql.values import Vec, fmt_labels, get_label, merge_rows
from receiver.tsdb.labels import METRIC_NAME, Labels, Matcher, MatchType

TARGET_INFO = "target_info"
IDENTIFYING = ("instance", "job")
_GO_META = set("\\.+*?()|[]{}^$")


def quote_meta(s: str) -> str:
    """Go's regexp.QuoteMeta: only RE2's metacharacters are escaped."""
    return "".join("\\" + c if c in _GO_META else c for c in s)


def effective_name_matchers(ms: list[Matcher]) -> list[Matcher]:
    """The ``__name__`` matchers that select info series: as given when one is positive, with
    ``.+_info`` added when all are negative, ``target_info`` when none is given."""
    if any(m.type in (MatchType.EQ, MatchType.RE) for m in ms):
        return ms
    if ms:
        return [Matcher(MatchType.RE, METRIC_NAME, ".+_info")] + ms
    return [Matcher(MatchType.EQ, METRIC_NAME, TARGET_INFO)]


def _children(e) -> list:
    """A node's operands in Prometheus's Inspect order (duck-typed over the syntax tree)."""
    kids = [getattr(e, a, None) for a in ("lhs", "rhs", "expr", "param")]
    return [k for k in kids if k is not None and not isinstance(k, (str, int, float))] + list(getattr(e, "args", ()))


def reference_time(ev, e) -> tuple[int | None, int]:
    """(@ time or None, offset ms) that govern when info series are looked up: those of the
    first vector selector in ``e``, where enclosing subqueries add their offsets until one of
    them (or the selector) is pinned with @."""
    from querier.promql.engine import dur_ms
    stack = [(e, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, ast.VectorSelector):
            at, off = ev.at_ms(node), dur_ms(node.offset)
            for outer in reversed(path):
                if at is not None:
                    break
                if isinstance(outer, ast.SubqueryExpr):
                    off += dur_ms(outer.offset)
                    at = ev.at_ms(outer)
            return at, off
        if isinstance(node, ast.MatrixSelector):
            stack.append((node.vector_selector, path + (node,)))
            continue
        stack.extend((c, path + (node,)) for c in reversed(_children(node)))
    return None, 0


def info(ev, args) -> Vec:
    at, off = reference_time(ev, args[0])
    base = ev.eval(args[0])
    if not isinstance(base, Vec):
        raise PromQLError("bad_data", "expected type instant vector in call to function 'info'")
    data: dict[str, list[Matcher]] = {}
    if len(args) > 1:
        for m in ev.matchers_of(args[1]):
            data.setdefault(m.name, []).append(m)
    name_ms = data.pop(METRIC_NAME, [])
    eff = effective_name_matchers(name_ms)
    ignored = np.array([all(m.matches(get_label(l, METRIC_NAME)) for m in eff) for l in base.labels], dtype=bool)
    infos = _fetch(ev, base, ignored, data, eff, at, off)
    return _combine(ev, base, ignored, infos, data)


def _fetch(ev, base: Vec, ignored: np.ndarray, data: dict, name_ms: list[Matcher], at: int | None,
           off: int) -> Vec | None:
    """The info series sharing identifying label values with ``base``, as an instant vector
    whose values are each sample's own timestamp (newest wins)."""
    wanted: dict[str, set[str]] = {}
    for l, skip in zip(base.labels, ignored):
        if skip:
            continue
        for n in IDENTIFYING:
            v = get_label(l, n)
            if v:
                wanted.setdefault(n, set()).add(v)
    if not wanted or ev.T == 0:
        return None
    ms = [Matcher(MatchType.RE, n, "|".join(quote_meta(v) for v in sorted(vs)))
          for n, vs in sorted(wanted.items())]
    ms += [m for group in data.values() for m in group] + name_ms
    E = (ev.steps if at is None else np.full(ev.T, at, dtype=np.int64)) - off
    lb = ev.sh.opts.lookback_delta_ms
    got = ev.lookup(ev.select_series(ms, int(E.min()) - lb + 1, int(E.max())), E)
    if got.hist is not None and (got.hist != None).any():  # noqa: E711
        i = int(np.nonzero((got.hist != None).any(1))[0][0])  # noqa: E711
        raise PromQLError("execution",
                          f"this should be an info metric, with float samples: {fmt_labels(got.labels[i])}")
    return got


def _signature(name: str, lbls: Labels) -> tuple:
    return (name,) + tuple(p for p in lbls if p[0] in IDENTIFYING and p[1])


def _winners(ev, infos: Vec, steps: np.ndarray) -> tuple[dict[tuple, int], np.ndarray]:
    """Signature -> group number, and per group and step the info row whose sample is newest
    (-1: none; one extra all -1 row at the end for "no group"). Two rows with equally new
    samples at one of ``steps`` (bool mask: where the base has samples) are a conflict, as in
    Prometheus. One pass over all rows at once."""
    index: dict[tuple, int] = {}
    gid = np.array([index.setdefault(_signature(get_label(l, METRIC_NAME), l), len(index))
                    for l in infos.labels], dtype=np.intp)
    G, T = len(index), infos.vals.shape[1]
    ev.sh.fits(3 * len(gid) * T)
    order = np.argsort(gid, kind="stable")
    g = gid[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    pres = infos.present[order]
    t = np.where(pres, infos.sample_ts[order], np.iinfo(np.int64).min)
    best = np.maximum.reduceat(t, starts, axis=0)
    is_best = pres & (t == best[g])
    ties = (np.add.reduceat(is_best.astype(np.int64), starts, axis=0) > 1) & steps
    if ties.any():
        gg, k = (int(x[0]) for x in np.nonzero(ties))
        a, b = order[np.flatnonzero(is_best[:, k] & (g == gg))[:2]]
        raise PromQLError("execution", "found duplicate series for info metric: existing "
                          f"{fmt_labels(infos.labels[a])} @ {best[gg, k]}, "
                          f"new {fmt_labels(infos.labels[b])} @ {best[gg, k]}")
    win = np.full((G + 1, T), -1, dtype=np.intp)
    r, k = np.nonzero(is_best)
    win[g[r], k] = order[r]
    return index, win


def _enriched(base_l: Labels, chosen: list[Labels], data: dict) -> Labels:
    """base_l plus the chosen info series' data labels (only those named by the data-label
    matchers, if any); labels the base already has stay as they are."""
    have = dict(base_l)
    add: dict[str, str] = {}
    for il in chosen:
        for n, v in il:
            if n == METRIC_NAME or (data and n not in data):
                continue
            if add.get(n, "") not in ("", v):
                raise PromQLError("execution", f"conflicting label: {n}")
            if n not in have:
                add[n] = v
    if not add:
        return base_l
    return tuple(sorted({**have, **add}.items()))


def _combine(ev, base: Vec, ignored: np.ndarray, infos: Vec | None, data: dict) -> Vec:
    n, T = base.vals.shape
    names = sorted({get_label(l, METRIC_NAME) for l in infos.labels}) if infos is not None else []
    need_match = any(not m.matches("") for group in data.values() for m in group)
    rows: list[tuple[int, Labels, np.ndarray]] = []  # (base row, labels, present)
    if names:
        index, win = _winners(ev, infos, base.present.any(0))
        none = len(index)
        gids = np.array([[index.get(_signature(nm, l), none) for l in base.labels] for nm in names],
                        dtype=np.intp).reshape(len(names), n)
        ev.sh.fits(2 * gids.size * T)
        W = win[gids]  # [names, base rows, steps]: the winning info row of each name
        ref = W[:, np.arange(n), base.present.argmax(1)]
        same = ((W == ref[:, :, None]) | ~base.present[None]).all(axis=(0, 2))
    for i, l in enumerate(base.labels):
        if ignored[i] or not names:
            if ignored[i] or not need_match:
                rows.append((i, l, base.present[i]))
            continue
        if same[i]:  # the usual case: the same winners at every step
            combos, inv = ref[:, i:i + 1], None
        else:
            ev.sh.check_deadline()
            combos, inv = np.unique(W[:, i], axis=1, return_inverse=True)
            inv = np.ravel(inv)
        for c in range(combos.shape[1]):
            at = base.present[i] if inv is None else base.present[i] & (inv == c)
            if inv is not None and not at.any():
                continue
            chosen = [infos.labels[r] for r in combos[:, c] if r >= 0]
            if not chosen and need_match:
                continue
            rows.append((i, _enriched(l, chosen, data), at))
    idx = np.array([r[0] for r in rows], dtype=np.intp)
    pres = np.array([r[2] for r in rows], dtype=bool).reshape(len(rows), T)
    out = Vec([r[1] for r in rows], base.vals[idx], pres, base.drop[idx], None,
              None if base.hist is None else base.hist[idx])
    return merge_rows(out, "vector cannot contain metrics with the same labelset")
