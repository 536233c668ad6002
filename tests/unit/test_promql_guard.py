"""Query text the native parser cannot survive is refused (bad_data) before it is parsed.

Crash inputs run in a child interpreter: a regression shows as a signal in that child, not as a
dead test runner."""
from __future__ import annotations

import subprocess
import sys

import pytest

from querier.promql import Engine, PromQLError
from querier.promql.guard import DEFAULT_LIMITS, check_query, estimated_depth

# Inputs that killed the process with SIGSEGV inside the native parser (8 MiB stack).
CRASHERS = {
    "chain": "x + " * 4250 + "x",
    "parens": "(" * 10_000 + "x" + ")" * 10_000,
    "calls": "abs(" * 5000 + "x" + ")" * 5000,
    "unary": "-" * 20_000 + "x",
}
# Deep but parseable: the Python evaluator used to hit RecursionError (a 422).
TOO_DEEP = {"chain": "x + " * 1000 + "x", "aggr": "sum(" * 700 + "x" + ")" * 700}

_CHILD = """
import sys, threading
from querier.promql import Engine, PromQLError
class Empty:
    def select(self, ms, mint, maxt):
        return []
q = sys.stdin.read()
out = []
def run():
    try:
        Engine().instant(Empty(), q, 0)
        out.append("accepted")
    except PromQLError as e:
        out.append(e.kind + ": " + e.msg)
t = threading.Thread(target=run)  # the API evaluates in a worker thread too
t.start()
t.join()
print(out[0])
"""


@pytest.mark.parametrize("name", sorted(CRASHERS) + [f"deep-{k}" for k in sorted(TOO_DEEP)])
def test_crash_inputs_are_bad_data_in_a_child_process(name):
    q = CRASHERS.get(name) or TOO_DEEP[name.removeprefix("deep-")]
    r = subprocess.run([sys.executable, "-c", _CHILD], input=q, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"child died with {r.returncode}: {r.stderr[-500:]}"
    assert r.stdout.startswith("bad_data: "), r.stdout
    assert "nests too deeply" in r.stdout


def test_long_query_is_refused():
    q = "x" * (DEFAULT_LIMITS.max_length + 1)
    with pytest.raises(PromQLError) as e:
        check_query(q)
    assert e.value.kind == "bad_data" and "characters" in e.value.msg


@pytest.mark.parametrize("q", [
    'sum by (job) (rate(http_requests_total{job=~"a|b", code!="500"}[5m])) / ignoring(x) group_left '
    'sum(rate(x[1m:10s] offset 5m))',
    " or ".join(f"m{i}" for i in range(150)),
    "((((" * 10 + "x" + "))))" * 10,
    'x{a="(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("}',
    "# " + "(" * 1000 + "\nx",
])
def test_real_queries_pass(q):
    check_query(q)


def test_depth_estimate_bounds_the_parse_tree():
    assert estimated_depth("x") == 1
    assert estimated_depth("x + y") == 2
    assert estimated_depth("(x + y) + z") >= 3
    assert estimated_depth("a + " * 50 + "a") == 51
    assert estimated_depth('x{a=~"+++++"}') == 1  # matcher text is not syntax
    assert estimated_depth("x[5m:1m]") == 2


def test_accepted_depth_evaluates_without_recursion_error():
    class Empty:
        def select(self, ms, mint, maxt):
            return []
    d = DEFAULT_LIMITS.max_depth
    for q in ("1 + " * (d - 1) + "1", "abs(" * (d - 2) + "vector(1)" + ")" * (d - 2),
              "sum(" * (d // 2 - 1) + "x" + ")" * (d // 2 - 1)):
        check_query(q)
        Engine().instant(Empty(), q, 0)


@pytest.mark.parametrize("q", ["m @ 9223372036854775807", "m @ -9223372036854775807",
                               "max_over_time(m[1h] @ 9223372036854775807)",
                               "max_over_time(m[5m:1m] @ 9223372036854776)",
                               "m offset -1000y @ 9223372036854775"])
def test_extreme_at_and_offset_are_bad_data(q):
    class Empty:
        def select(self, ms, mint, maxt):
            return []
    with pytest.raises(PromQLError) as e:
        Engine().instant(Empty(), q, 0)
    assert e.value.kind == "bad_data", e.value.msg


class _Series:
    def select(self, ms, mint, maxt):
        import numpy as np
        from querier.promql import Series
        return [Series((("__name__", "m"), ("i", str(i))), np.array([0, 15_000], dtype=np.int64),
                       np.array([1.0, 2.0 + i])) for i in range(3)]


@pytest.mark.parametrize("q,kind", [
    ("quantile_over_time(9223372036854775807, m[1m])", None),  # an int64 index overflowed: 422
    ("quantile(1e300, m)", None),
    ("log10(-0)", "bad_data"),  # the parser lets this scalar through as a vector argument
    ("abs(-(-0))", "bad_data"),
])
def test_generated_oddities_answer_cleanly(q, kind):
    if kind is None:
        res = Engine().instant(_Series(), q, 30_000)
        assert all(v == float("inf") for _, _, v in res.series)
        return
    with pytest.raises(PromQLError) as e:
        Engine().instant(_Series(), q, 30_000)
    assert e.value.kind == kind


@pytest.mark.parametrize("t", [2**63, -(2**63) - 1, 10**100])
def test_out_of_range_evaluation_times_are_bad_data(t):
    with pytest.raises(PromQLError) as e:
        Engine().instant(_Series(), "m", t)
    assert e.value.kind == "bad_data"
    with pytest.raises(PromQLError) as e:
        Engine().range(_Series(), "m", min(0, t), max(0, t), 10**12)
    assert e.value.kind == "bad_data"
