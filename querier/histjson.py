"""Native histogram values in Prometheus's HTTP API JSON (util/jsonutil MarshalHistogram).

A histogram sample is ``[t, {"count": "..", "sum": "..", "buckets": [[rule, "lo", "up",
"count"], ...]}]``; empty buckets are left out and ``buckets`` is absent without any. The
boundary rule says which ends are inclusive: 0 upper only (positive and custom buckets),
1 lower only (negative buckets), 3 both (the zero bucket).
"""
from __future__ import annotations

import orjson

from querier.promql import nhist

from .jsonfmt import format_value, ts_fragment


def histogram_object(h: nhist.H) -> str:
    parts = [f'"count":"{format_value(h.count)}"', f'"sum":"{format_value(h.sum)}"']
    n_neg = 0 if h.custom else len(h.neg)
    rows = []
    for i, (lo, up, c) in enumerate(h.buckets()):
        if c == 0:
            continue
        if h.custom or i > n_neg or (i == n_neg and not h.zc > 0):
            rule = 0
        elif i < n_neg:
            rule = 1
        else:
            rule = 3
        rows.append(f'[{rule},"{format_value(lo)}","{format_value(up)}","{format_value(c)}"]')
    if rows:
        parts.append('"buckets":[' + ",".join(rows) + "]")
    return "{" + ",".join(parts) + "}"


def histogram_point(t: int, h: nhist.H) -> str:
    return f"[{ts_fragment(t)},{histogram_object(h)}]"


def matrix_entry(metric: dict, ts, vals) -> dict:
    """A matrix row whose values may mix floats and histograms (object array)."""
    fl, hs = [], []
    for t, v in zip(ts.tolist(), list(vals)):
        if isinstance(v, nhist.H):
            hs.append(histogram_point(t, v))
        else:
            fl.append(f'[{ts_fragment(t)},"{format_value(float(v))}"]')
    out: dict = {"metric": metric}
    if fl:
        out["values"] = orjson.Fragment("[" + ",".join(fl) + "]")
    if hs:
        out["histograms"] = orjson.Fragment("[" + ",".join(hs) + "]")
    return out
