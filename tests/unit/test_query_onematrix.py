"""querier.api.one_matrix_json (the one-series panel's answer in a few calls) is byte for byte
the general encoder's answer (result_payload, truncate, result_chunks) for any labels, times
and values, and declines every answer it does not cover."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from querier.api import one_matrix_json, result_chunks, result_payload, truncate
from querier.promql import nhist
from querier.promql.types import QueryResult
from receiver.tsdb.labels import STALE_NAN_BITS, Labels

_TEXT = st.text(max_size=12)  # any unicode: quotes, backslashes, control characters
_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
    [0.0, -0.0, 1e-7, 5e-324, 1e21, 1e16, 123456789012345678.0, 0.1, -2.5, float("nan"),
     np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]]))


def _general(res: QueryResult, limit: int) -> list[bytes]:
    return result_chunks(result_payload(truncate(res, limit)))


@settings(max_examples=300, deadline=None)
@given(labels=st.dictionaries(_TEXT, _TEXT, max_size=5),
       points=st.lists(st.tuples(st.integers(-(1 << 52), 1 << 52), _VALUES), min_size=1,
                       max_size=40),
       limit=st.sampled_from([0, 1, 2, 1000]))
def test_one_series_answer_is_the_general_encoder_s(labels, points, limit):
    lbls = Labels(sorted(labels.items()))
    ts = np.array([t for t, _ in points], dtype=np.int64)
    vals = np.array([v for _, v in points], dtype=np.float64)
    res = QueryResult("matrix", [(lbls, ts, vals)])
    got = one_matrix_json(res)
    assert got == _general(QueryResult("matrix", [(lbls, ts, vals)]), limit)


def test_other_answers_are_declined():
    lbls = Labels([("__name__", "x")])
    ts, vals = np.array([1000, 2000], dtype=np.int64), np.array([1.0, 2.0])
    hist = np.empty(1, dtype=object)
    hist[0] = nhist.H(count=1.0, sum=1.0)
    for res in (QueryResult("matrix", []),
                QueryResult("matrix", [(lbls, ts, vals), (Labels([("a", "b")]), ts, vals)]),
                QueryResult("matrix", [(lbls, ts, vals)], warnings=["w"]),
                QueryResult("matrix", [(lbls, ts, vals)], infos=["i"]),
                QueryResult("matrix", [(lbls, ts[:1], hist)]),
                QueryResult("vector", [(lbls, 1000, 1.0)]),
                QueryResult("scalar", (1000, 1.0))):
        assert one_matrix_json(res) is None
