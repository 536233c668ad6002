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
