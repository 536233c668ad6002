"""bench/sidebyside.py compare_sides: a query whose cold runs all took under SMALL_S gets
``warm_small`` warm runs per side (a median of 3 runs of a few milliseconds moves with one
scheduler hiccup), a slower one ``warm``; every side gets the same number, and the report says
how many.

The fake servers do not sleep: each answer advances a clock that compare_sides reads instead
of time.perf_counter (``slow`` by twice SMALL_S, any other query by 1 ms), so what counts as a
fast query does not depend on how busy the machine is (a real 50 ms bound failed once in a
full suite run, a first request taking longer)."""
from __future__ import annotations

import json
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import bench_scale  # noqa: E402
import sidebyside  # noqa: E402
from sidebyside import SMALL_S, compare_sides  # noqa: E402

ANSWER = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
    {"metric": {"__name__": "x"}, "values": [[1, "1"]]}]}}).encode()


class _Clock:
    """The time compare_sides measures: advanced by the fake servers as they answer."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def advance(self, s: float) -> None:
        with self.lock:
            self.now += s

    def __call__(self) -> float:
        with self.lock:
            return self.now


class _Api(BaseHTTPRequestHandler):
    """/api/v1/query_range answering one fixed series; a ``slow`` query takes twice SMALL_S
    on the clock, any other 1 ms."""
    counts: dict[str, int]
    clock: _Clock

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        q = parse_qs(urlparse(self.path).query)["query"][0]
        self.counts[q] = self.counts.get(q, 0) + 1
        self.clock.advance(SMALL_S * 2 if q == "slow" else 0.001)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args) -> None:
        pass


def _serve(clock: _Clock) -> tuple[ThreadingHTTPServer, dict[str, int]]:
    counts: dict[str, int] = {}
    handler = type("Api", (_Api,), {"counts": counts, "clock": clock})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, counts


def _fake_clock(monkeypatch) -> _Clock:
    """compare_sides's timer (sidebyside's ``time.perf_counter``) replaced by a _Clock."""
    clock = _Clock()
    monkeypatch.setattr(sidebyside, "time", types.SimpleNamespace(perf_counter=clock))
    return clock


def test_cheap_queries_get_more_warm_runs_than_slow_ones(monkeypatch):
    clock = _fake_clock(monkeypatch)
    (a, ca), (b, cb) = _serve(clock), _serve(clock)
    try:
        apis = {"ref": f"http://127.0.0.1:{a.server_port}/api/v1",
                "ours": f"http://127.0.0.1:{b.server_port}/api/v1"}
        timings, mismatches = compare_sides(apis, "ours", [("fast", "fast"), ("slow", "slow")],
                                            [1], 3_600_000, warm=3, warm_small=9)
    finally:
        a.shutdown(), b.shutdown()
        a.server_close(), b.server_close()
    assert mismatches == []
    assert [t.name for t in timings] == ["fast", "slow"]
    assert ca == cb == {"fast": 1 + 9, "slow": 1 + 3}


def test_report_says_how_many_warm_runs_each_kind_of_query_got():
    from sidebyside import Timing
    t = [Timing("one series", 1, {"Prometheus": 0.003, "promring": 0.0036},
                {"Prometheus": 0.002, "promring": 0.0019})]
    text = bench_scale.report(t, {"Prometheus": 1.0}, [], ["one series"], "head", 3, 15)
    assert "warm = median of 3 (15 for a query whose cold runs all took under 50 ms)" in text
    assert "one series 1 h 2.0/1.9" in text
    # the one-series row's cold medians themselves, not only their ratio
    assert (f"One-series cold medians (ms, of {bench_scale.COLD_SAMPLES} first runs), "
            "Prometheus / promring: 1 h 3.0/3.6") in text


def test_cold_cells_with_variants_are_the_median_of_first_runs_of_each(monkeypatch):
    """With cold_variants, a query's cold time is the median of one first run of each variant
    on every side (one slow variant does not make the cell), the query itself runs once
    untimed before its warm runs, and queries without variants are measured as before."""
    clock = _fake_clock(monkeypatch)
    (a, ca), (b, cb) = _serve(clock), _serve(clock)
    try:
        apis = {"ref": f"http://127.0.0.1:{a.server_port}/api/v1",
                "ours": f"http://127.0.0.1:{b.server_port}/api/v1"}
        variants = lambda name, h: ["v1", "slow", "v2"] if name == "one" else []  # noqa: E731
        timings, mismatches = compare_sides(apis, "ours", [("one", "fast"), ("other", "x")],
                                            [1], 3_600_000, warm=3, warm_small=5,
                                            cold_variants=variants)
    finally:
        a.shutdown(), b.shutdown()
        a.server_close(), b.server_close()
    assert mismatches == []
    assert ca == cb == {"v1": 1, "slow": 1, "v2": 1, "fast": 1 + 5, "x": 1 + 5}
    one = timings[0]
    assert all(t == pytest.approx(0.001) for t in one.cold.values())  # the median, not "slow"


def test_one_series_variants_are_fresh_single_series_outside_the_raw_rows():
    variants = bench_scale.one_series_cold_variants(1)
    got = [variants("one series", h) for h in bench_scale.RANGES_H]
    assert variants("count by (job) (x)", 1) == []
    flat = [q for qs in got for q in qs]
    assert all(len(qs) == bench_scale.COLD_SAMPLES for qs in got) and len(set(flat)) == len(flat)
    ids = [int(q.split('"')[1][2:]) for q in flat]
    assert all(bench_scale.RAW_SERIES <= i < bench_scale.X_SERIES for i in ids)  # shard="1"
    assert 'x{instance="i-00007"}' not in flat
