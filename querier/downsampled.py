"""What a querier feeds PromQL from downsampled data (Thanos's querier behaviour).

Thanos never hands aggregates to the engine as such. Per selector it asks the stores for
the aggregates the wrapping function needs (``aggrs_from_func``) and turns them back into one
plain sample stream: ``min``/``max``/``count``/``sum``-family functions read that aggregate,
rate-like functions read the counter aggregate with resets re-applied, and everything else
(plain selectors, ``avg_over_time``, ``quantile_over_time``...) reads sum/count, the average
of each window. Raw chunks in the same answer (ranges with no downsampled block) pass
through unchanged. Also here: resolution and lookback helpers from Thanos's query API.

Querier-independent: callers pass chunks as (mint, maxt, XOR bytes | AggrData), as
``storeapi.client.StoreClient.series_aggr`` returns them.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.units import parse_duration_ms
from receiver.tsdb.chunkenc import decode
from storeapi.server import AggrData

from receiver.tsdb.aggr import apply_counter_resets

# storeapi Aggr enum values.
COUNT, SUM, MIN, MAX, COUNTER = 1, 2, 3, 4, 5
_FIELDS = {COUNT: "count", SUM: "sum", MIN: "min", MAX: "max", COUNTER: "counter"}

# Functions that need two samples per range: Thanos caps the resolution at range/2 for them.
TWO_SAMPLE_FUNCS = frozenset({"rate", "irate", "increase", "delta", "idelta", "deriv",
                              "predict_linear", "holt_winters",
                              "double_exponential_smoothing"})
RES_LEVELS = (0, 5 * 60 * 1000, 60 * 60 * 1000)

Chunk = tuple[int, int, "bytes | AggrData"]


def aggrs_from_func(func: str) -> list[int]:
    """Aggregates to request for a selector wrapped in ``func`` ("" = plain selector)."""
    if func == "min" or func.startswith("min_"):
        return [MIN]
    if func == "max" or func.startswith("max_"):
        return [MAX]
    if func == "count" or func.startswith("count_"):
        return [COUNT]
    if func.startswith("sum_"):  # plain "sum" wants real samples: falls through
        return [SUM]
    if func in ("increase", "rate", "irate", "resets", "xincrease", "xrate"):
        return [COUNTER]
    return [COUNT, SUM]


def max_resolution_for(max_resolution_ms: int, func: str, range_ms: int) -> int:
    """The resolution allowed for one selector: at most half the range for two-sample
    functions, so each range still holds two downsampled samples."""
    if range_ms > 0 and func in TWO_SAMPLE_FUNCS:
        return min(max_resolution_ms, range_ms // 2)
    return max_resolution_ms


def parse_max_source_resolution(value: str | None, step_ms: int | None = None,
                                default_ms: int = 0, auto: bool = False) -> int:
    """The ``max_source_resolution`` query parameter in ms: "0s"/"5m"/"1h"/a duration, or
    "auto" (and ``auto`` = --query.auto-downsampling) meaning step/5 for range queries and
    ``default_ms`` for instant ones. Raises ValueError on a bad or negative value."""
    res = 0
    if auto or value == "auto":
        res = step_ms // 5 if step_ms else default_ms
    if value and value != "auto":
        res = parse_duration_ms(value)
    if res < 0:
        raise ValueError("negative max_source_resolution is not accepted")
    return res


def lookback_delta_for(lookback_ms: int, max_resolution_ms: int, dynamic: bool = True) -> int:
    """Thanos's dynamic lookback: with 5m/1h data a 5m lookback would miss samples, so the
    lookback grows to the resolution being read."""
    if not dynamic:
        return lookback_ms
    lds = []
    cur = lookback_ms
    for r in RES_LEVELS:
        if lookback_ms < r:
            cur = r
        lds.append(cur)
    for i in range(len(RES_LEVELS) - 1, 0, -1):
        if max(RES_LEVELS[i - 1], lookback_ms) < max_resolution_ms:
            return lds[i]
    return lds[0]


def _chunk_samples(data: bytes | AggrData, field: str) -> tuple[np.ndarray, np.ndarray] | None:
    if isinstance(data, AggrData):
        sub = getattr(data, field)
        return None if sub is None else decode(sub)
    return decode(data)


def _increasing(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate chunk samples, skipping any that do not move time forward (chunks may
    overlap, as Thanos's chunkSeriesIterator allows)."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0)
    t = np.concatenate([p[0] for p in parts])
    v = np.concatenate([p[1] for p in parts])
    if len(t) > 1:
        prev = np.r_[np.iinfo(np.int64).min, np.maximum.accumulate(t)[:-1]]
        keep = t > prev
        if not keep.all():
            t, v = t[keep], v[keep]
    return t, v


def series_samples(chunks: Sequence[Chunk], aggrs: Sequence[int], mint: int, maxt: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The (timestamps, values) Thanos's querier would iterate for one series whose chunks
    were fetched with ``aggrs``, limited to [mint, maxt]."""
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    key = sorted(set(aggrs))
    if len(key) == 1 and key[0] in _FIELDS:
        field = _FIELDS[key[0]]
        for _, _, data in chunks:
            p = _chunk_samples(data, field)
            if p is not None:
                parts.append(p)
        if key[0] == COUNTER:
            t, v, _ = apply_counter_resets(parts)
        else:
            t, v = _increasing(parts)
    elif key == [COUNT, SUM]:
        for _, _, data in chunks:
            if isinstance(data, AggrData):
                if data.count is None or data.sum is None:
                    continue
                ct, cv = decode(data.count)
                st, sv = decode(data.sum)
                if len(ct) != len(st) or not np.array_equal(ct, st):
                    raise ValueError("sum and count timestamps not aligned")
                parts.append((ct, sv / cv))
            else:
                parts.append(decode(data))
        t, v = _increasing(parts)
    else:
        raise ValueError(f"unexpected aggregate combination {list(aggrs)}")
    a = int(np.searchsorted(t, mint, side="left"))
    z = int(np.searchsorted(t, maxt, side="right"))
    return t[a:z], v[a:z]
