"""Regressions found by the differential test against Prometheus 3
(tests/e2e/test_promql_differential_prometheus3.py), each as a Prometheus test script run
through our engine with Prometheus's default flags (tests/unit/promqltest.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from promqltest import MemQueryable, run_file
from querier.promql import Engine, PromQLError

SCRIPTS = {
    # One-to-one matching with ignoring(__name__) removes the name from the result, as every
    # other ignored label (Prometheus deletes the matching labels from the result metric).
    "ignoring_name": """
load 1m
  a{job="x", i="1"} 10 1
  b{job="x", i="1"} 5 5

eval instant at 0m a > ignoring(__name__) b
  {job="x", i="1"} 10

eval instant at 1m a < ignoring(__name__, i) b
  {job="x"} 1

eval instant at 0m a > ignoring(i) b
  a{job="x"} 10

eval range from 0 to 1m step 1m a >= ignoring(__name__) b
  {job="x", i="1"} 10 _

eval instant at 0m a > ignoring(__name__) group_left b
  a{job="x", i="1"} 10
""",
    # Date functions convert seconds to int64 as Go does: toward zero (-0.5 is 1970-01-01), and
    # NaN, ±Inf and values beyond int64 become math.MinInt64, a wrapped-around date on
    # 292277026596-12-04 15:30 UTC (Prometheus on amd64), not NaN.
    "date_functions_go_conversion": """
load 1m
  t{i="nan"} NaN
  t{i="inf"} Inf
  t{i="neg"} -0.5

eval instant at 0m month(t)
  {i="nan"} 12
  {i="inf"} 12
  {i="neg"} 1

eval instant at 0m year(t)
  {i="nan"} 292277026596
  {i="inf"} 292277026596
  {i="neg"} 1970

eval instant at 0m hour(t) + minute(t) / 100 + day_of_week(t) * 1000
  {i="nan"} 15.3
  {i="inf"} 15.3
  {i="neg"} 4000

eval instant at 0m day_of_month(t) + day_of_year(t) * 100 + days_in_month(t) * 100000
  {i="nan"} 3133904
  {i="inf"} 3133904
  {i="neg"} 3100101

eval instant at 0m month(vector(9.3e18)) * 100 + hour(vector(-1.5))
  {} 1223

eval instant at 0m year(vector(-1e17))
  {} -3168871881
""",
    # Label names are UTF-8 in Prometheus 3: label_replace/label_join accept any non-empty
    # valid UTF-8 destination (the compliance templates' "~invalid" included).
    "utf8_destination_labels": """
load 1m
  m{src="a"} 1

eval instant at 0m label_replace(m, "~invalid", "x$1", "src", "(.*)")
  m{src="a", "~invalid"="xa"} 1

eval instant at 0m label_join(m, "café", "-", "src", "src")
  m{src="a", "café"="a-a"} 1

eval instant at 0m label_replace(m, "\\xff", "", "src", "(.*)")
  expect fail

eval instant at 0m label_join(m, "", "-", "src")
  expect fail

eval instant at 0m count_values("~v", m)
  {"~v"="1"} 1

eval instant at 0m count_values("\\xff", m)
  expect fail msg: invalid label name "\\xff"
""",
    # topk/bottomk refuse a k beyond int64 (even with no input), as Prometheus does; a hugely
    # negative k selects nothing.
    "topk_k_overflow": """
load 1m
  m{i="1"} 1
  m{i="2"} 2

eval instant at 0m topk(1e20, m)
  expect fail msg: Scalar value 1e+20 overflows int64

eval instant at 0m bottomk(9.3e18, nothing)
  expect fail msg: Scalar value 9.3e+18 overflows int64

eval range from 0 to 2m step 1m topk(scalar(m{i="2"}) * 5e18, m)
  expect fail msg: Scalar value 1e+19 overflows int64

eval instant at 0m topk(-1e20, m)

eval range from 0 to 1m step 1m bottomk(scalar(nothing), m)
  expect fail msg: Parameter value is NaN

eval instant at 0m topk(9.2e18, m)
  m{i="1"} 1
  m{i="2"} 2
""",
}


def test_error_messages_as_prometheus_3():
    """Exact texts of Prometheus 3's errors (the scripts' ``msg`` only checks a prefix)."""
    q = MemQueryable()
    q.add((("__name__", "m"),), 0, 1.0)
    cases = {"topk(NaN, m)": "Parameter value is NaN",
             "m[1m]": 'invalid parameter "query": invalid expression type "range vector" for '
                      "range query, must be Scalar or instant Vector"}
    for query, msg in cases.items():
        with pytest.raises(PromQLError) as ex:
            Engine().range(q, query, 0, 60_000, 60_000)
        assert str(ex.value) == msg


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_answers_as_prometheus_3(tmp_path: Path, name: str):
    path = tmp_path / f"{name}.test"
    path.write_text(SCRIPTS[name])
    res = run_file(path, Engine())
    assert res.failed == 0, "\n".join(res.failures)
    assert res.passed == SCRIPTS[name].count("\neval")
