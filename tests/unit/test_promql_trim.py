"""Native-histogram trim operators (</ and >/): hand-computed cases of Prometheus 3.14's
TrimBuckets, beyond native_histograms.test."""
from __future__ import annotations

import math

from querier.promql import nhist as nh
from querier.promql.binops import elem
from querier.promql.nhtrim import trim


def custom(cv, counts) -> nh.H:
    h = nh.H(schema=nh.CUSTOM, cv=tuple(cv), count=float(sum(counts)), sum=100.0)
    h.pos = {i: float(c) for i, c in enumerate(counts) if c}
    return h


class Ev:
    """Collects annotations as the evaluator would."""

    def __init__(self) -> None:
        self.infos: list[str] = []

    def info(self, msg: str) -> None:
        self.infos.append(msg)

    warn = info


def test_upper_trim_interpolates_linearly_in_custom_buckets():
    # (-Inf,2]: 1  (2,4]: 2  (4,+Inf]: 5; cut at 3 keeps all of the first (midpoint 2/2),
    # half of the second (midpoint 2.5) and none of the +Inf bucket.
    h = trim(custom((2, 4), (1, 2, 5)), 3.0, upper=True)
    assert h.pos == {0: 1.0, 1: 1.0} and h.count == 2.0 and h.sum == 1.0 + 2.5


def test_lower_trim_keeps_the_open_bucket_at_its_lower_bound():
    h = trim(custom((2, 4), (1, 2, 5)), 3.0, upper=False)
    assert h.pos == {1: 1.0, 2: 5.0} and h.count == 6.0 and h.sum == 3.5 + 5 * 4.0


def test_nothing_trimmed_keeps_count_and_sum_untouched():
    h = trim(custom((2, 4), (1, 2, 5)), math.inf, upper=True)
    assert h.count == 8.0 and h.sum == 100.0 and h.pos == {0: 1.0, 1: 2.0, 2: 5.0}


def test_exponential_buckets_interpolate_on_the_log_scale():
    # schema 0: bucket 1 is (1,2]; a cut at 2**0.25 keeps a quarter of it, whose
    # midpoint is the geometric mean of 1 and the cut.
    h = nh.H(schema=0, count=4.0, sum=6.0, pos={1: 4.0})
    cut = 2 ** 0.25
    trim(h, cut, upper=True)
    assert math.isclose(h.pos[1], 1.0) and math.isclose(h.count, 1.0)
    assert math.isclose(h.sum, math.sqrt(cut))


def test_zero_bucket_spans_only_the_populated_side():
    # Only positive buckets: the zero bucket is taken as [0, zt], so >/ 0 keeps all of it.
    h = nh.H(schema=0, zt=0.5, zc=2.0, count=3.0, sum=1.5, pos={1: 1.0})
    trim(h, 0.0, upper=False)
    assert h.zc == 2.0 and h.count == 3.0 and h.sum == 1.5  # nothing trimmed: unchanged
    h = nh.H(schema=0, zt=0.5, zc=2.0, count=3.0, sum=1.5, pos={1: 1.0})
    trim(h, 0.25, upper=True)  # keeps half of [0, 0.5] and nothing of (1, 2]
    assert h.zc == 1.0 and h.pos == {} and h.count == 1.0 and h.sum == 0.125


def test_trim_operator_leaves_the_operand_unchanged_and_refuses_floats():
    src = custom((2, 4), (1, 2, 5))
    ev = Ev()
    f, out, keep, failed = elem(ev, "</", 0.0, 3.0, src, None)
    assert keep and not failed and out.count == 2.0
    assert src.pos == {0: 1.0, 1: 2.0, 2: 5.0} and src.count == 8.0
    f, out, keep, failed = elem(ev, ">/", 3.0, 0.0, None, src)  # float >/ histogram
    assert failed and out is None
    assert ev.infos == ['incompatible sample types encountered for binary operator ">/": float >/ histogram']


def test_nan_cut_through_a_zero_width_zero_bucket_is_nan_not_a_crash():
    # Go divides 0/0 into NaN there; Python raised ZeroDivisionError
    for upper in (True, False):
        h = trim(nh.H(schema=0, zt=0.0, zc=2.0, count=2.0, sum=0.0), math.nan, upper)
        assert math.isnan(h.zc) and math.isnan(h.count)
