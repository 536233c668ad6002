"""Run Prometheus's PromQL conformance scripts (shared test data) through our engine.

Every case of all 21 scripts must pass; the number of passing evals per file is pinned, so a
case the runner stops reading fails too.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "unit"))
from promqltest import run_file  # noqa: E402

SCRIPTS = Path(__file__).resolve().parents[1].parent / "shared/testdata/promqltest"

# file -> passing evals
BASELINE = {
    "aggregators.test": 160,
    "at_modifier.test": 78,
    "collision.test": 2,
    "duration_expression.test": 59,
    "extended_vectors.test": 169,
    "fill-modifier.test": 46,
    "functions.test": 431,
    "histograms.test": 185,
    "info.test": 53,
    "limit.test": 37,
    "literals.test": 25,
    "name_label_dropping.test": 30,
    "native_histograms.test": 522,
    "operators.test": 214,
    "range_queries.test": 18,
    "selectors.test": 31,
    "staleness.test": 17,
    "start_timestamps.test": 26,
    "subquery.test": 34,
    "trig_functions.test": 19,
    "type_and_unit.test": 58,
}


def test_scripts_present() -> None:
    assert SCRIPTS.is_dir(), f"PromQL test scripts missing: expected them in {SCRIPTS}"
    missing = [f for f in BASELINE if not (SCRIPTS / f).is_file()]
    assert not missing, f"missing scripts in {SCRIPTS}: {missing}"


@pytest.mark.parametrize("name", sorted(BASELINE))
def test_script(name: str) -> None:
    path = SCRIPTS / name
    if not path.is_file():
        pytest.fail(f"PromQL test script {path} not found (shared/ must sit beside the checkout)")
    r = run_file(path)
    print(f"{name}: {r.passed}/{r.total} passed")
    for f in r.failures:
        print("  FAIL", f)
    assert not r.failures, "\n".join(r.failures[:20])
    assert r.passed >= BASELINE[name]
