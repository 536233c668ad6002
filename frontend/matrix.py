"""Range-query results (Prometheus matrix JSON, decoded) cut by time and joined again.

Series are joined by their label set; samples are never touched one by one: each series'
value list is sorted by time, so a time window is two bisections and a join is a list
concatenation of disjoint, ordered pieces."""
from __future__ import annotations

import bisect

import orjson

Series = dict  # {"metric": {...}, "values": [[t, "v"], ...], "histograms": [[t, {...}], ...]}
_HALF_MS_S = 0.0005
_SAMPLE_KEYS = ("values", "histograms")


def _ts(sample: list) -> float:
    return sample[0]


def slice_series(series: list[Series], start_ms: int, end_ms: int) -> list[Series]:
    """The samples of ``series`` with start_ms <= t <= end_ms; series left empty are dropped."""
    lo, hi = start_ms / 1000 - _HALF_MS_S, end_ms / 1000 + _HALF_MS_S
    out = []
    for s in series:
        cut: Series = {"metric": s["metric"]}
        for k in _SAMPLE_KEYS:
            vals = s.get(k)
            if vals:
                part = vals[bisect.bisect_left(vals, lo, key=_ts):bisect.bisect_right(vals, hi, key=_ts)]
                if part:
                    cut[k] = part
        if len(cut) > 1:
            out.append(cut)
    return out


def _label_key(metric: dict) -> bytes:
    return orjson.dumps(metric, option=orjson.OPT_SORT_KEYS)


def join_series(pieces: list[list[Series]]) -> list[Series]:
    """Series of time-ordered, non-overlapping ``pieces`` joined by label set, sorted by labels
    (as Prometheus orders a matrix)."""
    joined: dict[bytes, Series] = {}
    for piece in pieces:
        for s in piece:
            key = _label_key(s["metric"])
            into = joined.get(key)
            if into is None:
                joined[key] = {"metric": s["metric"], **{k: list(s[k]) for k in _SAMPLE_KEYS if s.get(k)}}
                continue
            for k in _SAMPLE_KEYS:
                if s.get(k):
                    into.setdefault(k, []).extend(s[k])
    return [joined[k] for k in sorted(joined, key=lambda k: sorted(joined[k]["metric"].items()))]
