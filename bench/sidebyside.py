"""Side-by-side query timing shared by the scale benchmarks (bench_scale.py: promring vs
Prometheus; bench_thanos.py: promring vs Thanos): one timed query, answer comparison, the
alternating cold/warm loop over ranges, and stopping the servers started for it."""
from __future__ import annotations

import math
import statistics
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import requests

HOUR_MS = 3_600_000
POINTS = 240  # dashboard resolution: step = range / 240

# (name, hours, ours cold s, reference cold s, ours warm median s, reference warm median s)
Row = tuple[str, int, float, float, float, float]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_query(sess: requests.Session, api: str, params: dict) -> tuple[float, dict]:
    t = time.perf_counter()
    r = sess.get(f"{api}/query_range", params=params, timeout=600)
    dt = time.perf_counter() - t
    r.raise_for_status()
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{api}: {body}")
    return dt, body["data"]


def _as_map(data: dict) -> dict:
    return {tuple(sorted(s["metric"].items())): [(float(t), float(v)) for t, v in s["values"]]
            for s in data["result"]}


def same_answer(a: dict, b: dict, rel: float = 1e-9) -> str | None:
    """None if equal within ``rel``, else what differs."""
    ma, mb = _as_map(a), _as_map(b)
    if ma.keys() != mb.keys():
        return f"series differ: {len(ma)} vs {len(mb)}, e.g. {sorted(ma.keys() ^ mb.keys())[:2]}"
    for k, va in ma.items():
        vb = mb[k]
        if len(va) != len(vb):
            return f"{k}: {len(va)} vs {len(vb)} points"
        for (ta, xa), (tb, xb) in zip(va, vb):
            if ta != tb:
                return f"{k}: timestamps {ta} vs {tb}"
            if math.isnan(xa) and math.isnan(xb):
                continue
            if not math.isclose(xa, xb, rel_tol=rel, abs_tol=1e-12):
                return f"{k} @ {ta}: {xa} vs {xb}"
    return None


def geomean(xs: list[float]) -> float:
    return math.exp(sum(map(math.log, xs)) / len(xs))


def timed_queries(reference_api: str, ours_api: str, queries: list[tuple[str, str]],
                  ranges_h: Iterable[int], end_ms: int, warm: int
                  ) -> tuple[list[Row], list[str]]:
    """Every query at every range (``POINTS`` steps ending at ``end_ms``) against both APIs,
    alternately so that load from elsewhere on a shared machine hits both alike: a cold run
    each (answers compared), then ``warm`` runs each. Returns the rows and the mismatches."""
    sess = requests.Session()
    rows: list[Row] = []
    mismatches: list[str] = []
    for h in ranges_h:
        params = {"start": (end_ms - h * HOUR_MS) / 1000, "end": end_ms / 1000,
                  "step": h * 3600 / POINTS}
        for name, q in queries:
            p = dict(params, query=q)
            rc, rd = run_query(sess, reference_api, p)
            oc, od = run_query(sess, ours_api, p)
            diff = same_answer(rd, od)
            if diff:
                mismatches.append(f"{name} {h} h: {diff}")
            rw, ow = [], []
            for _ in range(warm):
                rw.append(run_query(sess, reference_api, p)[0])
                ow.append(run_query(sess, ours_api, p)[0])
            rows.append((name, h, oc, rc, statistics.median(ow), statistics.median(rw)))
            print(f"  {name} {h} h: cold {oc / rc:.2f}x warm "
                  f"{statistics.median(ow) / statistics.median(rw):.2f}x", flush=True)
    return rows, mismatches


def stop_all(procs: Iterable[subprocess.Popen], timeout_s: float = 30) -> None:
    """Terminate each process, killing any that has not exited within ``timeout_s``."""
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
