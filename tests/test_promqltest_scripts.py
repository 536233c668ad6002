"""Run Prometheus's PromQL conformance scripts (shared test data) through our engine.

Each file must pass at least its recorded baseline, so regressions fail; raise the numbers
as the engine improves. Native-histogram cases are reported as unsupported, not failed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "unit"))
from promqltest import run_file  # noqa: E402

SCRIPTS = Path(__file__).resolve().parents[1].parent / "shared/testdata/promqltest"

# file -> minimum number of passing evals (of the supported ones)
BASELINE = {
    "aggregators.test": 125,
    "at_modifier.test": 78,
    "collision.test": 2,
    "functions.test": 335,
    "histograms.test": 54,
    "limit.test": 0,
    "literals.test": 25,
    "name_label_dropping.test": 30,
    "native_histograms.test": 3,
    "operators.test": 142,
    "range_queries.test": 16,
    "selectors.test": 31,
    "staleness.test": 17,
    "subquery.test": 32,
    "trig_functions.test": 19,
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
    print(f"{name}: {r.passed}/{r.total} passed; unsupported: native histograms {r.unsupported}")
    for f in r.failures:
        print("  FAIL", f)
    assert r.passed >= BASELINE[name], "\n".join(r.failures[:20])
