"""Hostile queries against a real ``promring up`` holding some data: nothing a query says may
crash the process, answer 5xx (other than a 503 timeout) or stall ``/-/ready``."""
from __future__ import annotations

import time

import pytest
import requests

from harness import PromringProcess
from rw import push

T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One process for the module: 50 series x 120 samples, and values made for regex traps."""
    pr = PromringProcess.up(tmp_path_factory.mktemp("hostile") / "data")
    try:
        ts = [T0 + i * 15_000 for i in range(120)]
        series = [((("__name__", "hm"), ("i", str(i)), ("job", f"j{i % 5}"),
                    ("v", "a" * 28 + "!" if i == 0 else f"v{i}")), ts, [float(i + k) for k in range(120)])
                  for i in range(50)]
        assert push(pr.write_url, series).status_code == 200
        yield pr
    finally:
        pr.stop()


def alive(pr: PromringProcess) -> None:
    assert pr.proc.poll() is None, f"promring died with {pr.proc.returncode}:\n{pr.log_text()[-2000:]}"
    assert requests.get(f"http://127.0.0.1:{pr.http_port}/-/ready", timeout=10).status_code == 200


@pytest.mark.parametrize("q", ["x + " * 4250 + "x", "(" * 10_000 + "x" + ")" * 10_000,
                               "x + " * 1000 + "x"])
def test_parser_crashers_are_bad_data(served, q):
    r = requests.post(f"{served.api}/query", data={"query": q, "time": T0 / 1000}, timeout=60)
    alive(served)
    assert r.status_code == 400, r.text[:300]
    body = r.json()
    assert body["status"] == "error" and body["errorType"] == "bad_data"
    assert "nests too deeply" in body["error"]


def test_deep_series_selector_is_bad_data(served):
    r = requests.post(f"{served.api}/series", data={"match[]": "(" * 10_000 + "x" + ")" * 10_000},
                      timeout=60)
    alive(served)
    assert r.status_code == 400, r.text[:300]
    assert r.json()["errorType"] == "bad_data"


def test_catastrophic_regexes_answer_at_once(served):
    """Backtracking took 6 s here ("a"*28+"!", doubling per character); RE2 is linear."""
    for path, data in (("query", {"query": 'hm{v=~"(a+)+b"}', "time": T0 / 1000 + 60}),
                       ("query", {"query": 'count(hm{v!~"(a|a)+b"})', "time": T0 / 1000 + 60}),
                       ("series", {"match[]": 'hm{v=~"(a|a)+b"}'})):
        r = requests.post(f"{served.api}/{path}", data=data, timeout=60)
        assert r.status_code == 200, r.text[:300]
    assert r.json()["data"] == []
    r = requests.post(f"{served.api}/query", data={"query": 'count(hm{v!~"(a|a)+b"})',
                                                   "time": T0 / 1000 + 60}, timeout=60)
    assert r.json()["data"]["result"][0]["value"][1] == "50"


@pytest.mark.parametrize("path,param", [("query", "query"), ("series", "match[]")])
def test_invalid_regex_is_bad_data(served, path, param):
    r = requests.post(f"{served.api}/{path}", data={param: 'hm{v=~"a)|(b"}'}, timeout=60)
    alive(served)
    assert r.status_code == 400, r.text[:300]
    assert r.json()["errorType"] == "bad_data"
    assert "error parsing regexp" in r.json()["error"]


@pytest.mark.parametrize("q", ["max_over_time(vector(1)[1d:1ms])", "max_over_time(hm[1h:100ms])",
                               "count(count_over_time(hm[30d:1ms]))"])
def test_huge_subquery_grids_are_refused_before_allocating(served, q):
    """86.4 M points took 2.8 GB; with the default --query.max-samples (50 M) it is refused."""
    r = requests.post(f"{served.api}/query", data={"query": q, "time": T0 / 1000 + 3600}, timeout=120)
    alive(served)
    if q.startswith("max_over_time(hm"):  # 50 series x 36,000 steps = 1.8 M: within budget
        assert r.status_code == 200, r.text[:300]
        return
    assert r.status_code == 422, r.text[:300]
    assert r.json() == {"status": "error", "errorType": "execution", "error":
                        "query processing would load too many samples into memory in query execution"}
