"""Hostile queries against a real ``promring up`` holding some data: nothing a query says may
crash the process, answer 5xx (other than a 503 timeout) or stall ``/-/ready``.

The generated suite (test_generated_hostile_queries) runs PROMRING_HOSTILE_QUERIES requests
(default 2000, under a minute on two busy cores) from seed PROMRING_HOSTILE_SEED (default 1);
for a long run: PROMRING_HOSTILE_QUERIES=50000 pytest tests/e2e/test_hostile_queries.py -s -k
generated. It prints (and with PROMRING_HOSTILE_REPORT=path writes as JSON) the status
histogram, the peak RSS of the process and /-/ready latency percentiles."""
from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from harness import PromringProcess
from hostile_gen import T_DATA, requests_for
from rw import push

T0 = T_DATA * 1000


def push_data(pr: PromringProcess) -> None:
    """50 series x 120 samples (15 s apart), one with a value made for regex traps."""
    ts = [T0 + i * 15_000 for i in range(120)]
    series = [((("__name__", "hm"), ("i", str(i)), ("job", f"j{i % 5}"),
                ("v", "a" * 28 + "!" if i == 0 else f"v{i}")), ts, [float(i + k) for k in range(120)])
              for i in range(50)]
    assert push(pr.write_url, series).status_code == 200


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One process for the module's focused reproducers."""
    pr = PromringProcess.up(tmp_path_factory.mktemp("hostile") / "data")
    try:
        push_data(pr)
        yield pr
    finally:
        pr.stop()


def alive(pr: PromringProcess) -> None:
    assert pr.proc.poll() is None, f"promring died with {pr.proc.returncode}:\n{pr.log_text()[-2000:]}"
    assert requests.get(f"http://127.0.0.1:{pr.http_port}/-/ready", timeout=10).status_code == 200


def test_served_on_uvloop(served):
    """The process's event loop is uvloop's (common.aio.run): its extension is mapped."""
    maps = open(f"/proc/{served.proc.pid}/maps").read()
    assert "uvloop/loop." in maps, "promring up is not running on uvloop"
    alive(served)


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


def _proc_status(pid: int, key: str) -> int:
    """A /proc/<pid>/status figure in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class ReadyProbe(threading.Thread):
    """GET /-/ready every 50 ms while the suite runs, with a bounded per-probe timeout."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop_flag = url, threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        with requests.Session() as s:
            while not self.stop_flag.is_set():
                t0 = time.perf_counter()
                try:
                    r = s.get(self.url, timeout=5)
                    if r.status_code != 200:
                        self.failures.append(f"status {r.status_code}")
                except requests.RequestException as e:
                    self.failures.append(repr(e))
                self.latencies.append(time.perf_counter() - t0)
                self.stop_flag.wait(0.05)


def _classify(path: str, params: dict, resp: requests.Response | Exception) -> str | None:
    """None when the answer is acceptable; else why not."""
    if isinstance(resp, Exception):
        return f"no answer: {resp!r}"
    try:
        body = resp.json()
    except ValueError:
        return f"{resp.status_code} not JSON: {resp.text[:200]!r}"
    if resp.status_code == 503 and body.get("errorType") in ("timeout", "canceled"):
        return None
    if resp.status_code >= 500:
        return f"{resp.status_code} {body.get('errorType')}: {body.get('error', '')[:200]}"
    if resp.status_code >= 400 and (body.get("status") != "error" or not body.get("errorType")):
        return f"{resp.status_code} without Prometheus's error shape: {str(body)[:200]}"
    return None


def test_generated_hostile_queries(tmp_path):
    n = int(os.environ.get("PROMRING_HOSTILE_QUERIES", "2000"))
    seed = int(os.environ.get("PROMRING_HOSTILE_SEED", "1"))
    pr = PromringProcess.up(tmp_path / "data", "--query.timeout", "5s",
                            "--query.max-samples", "5000000")
    try:
        push_data(pr)
        probe = ReadyProbe(f"http://127.0.0.1:{pr.http_port}/-/ready")
        probe.start()
        local = threading.local()

        def send(req):
            path, params = req
            if not hasattr(local, "s"):
                local.s = requests.Session()
            try:
                resp = local.s.post(f"{pr.api}/{path}", data=params, timeout=120)
            except requests.RequestException as e:
                resp = e
            return path, params, resp

        statuses: Counter = Counter()
        errors: Counter = Counter()  # the start of each error message, for the report
        bad: list[str] = []
        t0 = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            for path, params, resp in pool.map(send, requests_for(seed, n)):
                statuses[getattr(resp, "status_code", "none")] += 1
                if getattr(resp, "status_code", 200) >= 400:
                    errors[f"{resp.status_code} {resp.text[:90]}"] += 1
                why = _classify(path, params, resp)
                if why is not None:
                    rest = {k: v for k, v in params.items() if k not in ("query", "match[]")}
                    q = params.get("query", params.get("match[]", ""))
                    bad.append(f"{path} {json.dumps(rest)} {q[:200]!r} -> {why}")
                if pr.proc.poll() is not None:
                    break
        elapsed = time.monotonic() - t0
        probe.stop_flag.set()
        probe.join(10)
        alive_at_end = pr.proc.poll() is None
        peak_rss = _proc_status(pr.proc.pid, "VmHWM") if alive_at_end else 0
        lat = np.array(probe.latencies) * 1000
        report = {"queries": sum(statuses.values()), "seed": seed, "seconds": round(elapsed, 1),
                  "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
                  "peak_rss_mib": round(peak_rss / 2**20, 1),
                  "ready_probes": len(lat), "ready_failures": len(probe.failures),
                  "ready_p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
                  "ready_p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
                  "ready_max_ms": round(float(lat.max()), 1) if len(lat) else None,
                  "top_errors": errors.most_common(25), "unacceptable": bad[:50]}
        print("hostile-query report:", json.dumps(report, indent=1))
        if os.environ.get("PROMRING_HOSTILE_REPORT"):
            with open(os.environ["PROMRING_HOSTILE_REPORT"], "w") as f:
                json.dump(report, f, indent=1)
        assert alive_at_end, f"promring died ({pr.proc.returncode}):\n{pr.log_text()[-3000:]}"
        assert not bad, "\n".join(bad[:20])
        assert not probe.failures, probe.failures[:5]
        # --query.max-samples 5 M bounds each query; two at a time plus the process itself
        assert peak_rss < 1536 * 2**20, f"peak RSS {peak_rss / 2**20:.0f} MiB"
    finally:
        pr.stop()
