"""Side-by-side query timing shared by the scale benchmarks (bench_scale.py: promring vs
Prometheus and optionally Thanos; bench_thanos.py: promring vs Thanos): starting store + query
of promring and of Thanos over one bucket, one timed query, answer comparison, the alternating
cold/warm loop over ranges, and stopping the servers started for it."""
from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import free_port, promring_cmd, wait_ready  # noqa: E402
from peers import peer  # noqa: E402

HOUR_MS = 3_600_000
POINTS = 240  # dashboard resolution: step = range / 240
SMALL_S = 0.05  # a query whose cold runs all took less than this gets compare_sides's warm_small

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


@dataclass
class Timing:
    """One query at one range: the cold run and the warm median of each side, in seconds."""
    name: str
    hours: int
    cold: dict[str, float]
    warm: dict[str, float]


def compare_sides(apis: dict[str, str], ours: str, queries: list[tuple[str, str]],
                  ranges_h: Iterable[int], end_ms: int, warm: int, warm_small: int = 0,
                  small_s: float = SMALL_S,
                  cold_variants: Callable[[str, int], list[str]] | None = None
                  ) -> tuple[list[Timing], list[str]]:
    """Every query at every range (``POINTS`` steps ending at ``end_ms``) against every API of
    ``apis`` (side name -> API base URL; the first is the reference), one after the other in
    turn so that load from elsewhere on a shared machine hits all alike: a cold run each (every
    answer compared with the reference's), then ``warm`` rounds, or ``warm_small`` if more for
    a query whose cold runs all took under ``small_s`` (a median of 3 runs of a few
    milliseconds moves with one scheduler hiccup; more runs of a cheap query cost little).
    ``cold_variants(name, hours)``: queries of the same shape that nothing has asked for yet
    (another series each); when it gives some, a query's cold time is the median of one first
    run of each (sides in turn, every answer compared), as one first run of a query of a few
    milliseconds moves with one hiccup; the query itself is then run once untimed before its
    warm runs. Returns the timings and the mismatches; prints ``ours``'s ratios to each other
    side as it goes."""
    sess = requests.Session()
    ref, *others = apis
    timings: list[Timing] = []
    mismatches: list[str] = []

    def compare(data: dict[str, dict], what: str) -> None:
        for side in others:
            diff = same_answer(data[ref], data[side])
            if diff:
                mismatches.append(f"{what}, {side} vs {ref}: {diff}")
    for h in ranges_h:
        params = {"start": (end_ms - h * HOUR_MS) / 1000, "end": end_ms / 1000,
                  "step": h * 3600 / POINTS}
        for name, q in queries:
            p = dict(params, query=q)
            variants = cold_variants(name, h) if cold_variants is not None else []
            firsts: dict[str, list[float]] = {side: [] for side in apis}
            for v in variants or [q]:
                data = {}
                for side, api in apis.items():
                    took, data[side] = run_query(sess, api, dict(params, query=v))
                    firsts[side].append(took)
                compare(data, f"{name} {h} h ({v})" if variants else f"{name} {h} h")
            cold = {side: statistics.median(v) for side, v in firsts.items()}
            if variants:  # the query itself once, untimed (its warm runs are warm), compared
                compare({side: run_query(sess, api, p)[1] for side, api in apis.items()},
                        f"{name} {h} h")
            runs: dict[str, list[float]] = {side: [] for side in apis}
            small = max(cold.values()) < small_s
            for _ in range(max(warm, warm_small) if small else warm):
                for side, api in apis.items():
                    runs[side].append(run_query(sess, api, p)[0])
            t = Timing(name, h, cold, {side: statistics.median(v) for side, v in runs.items()})
            timings.append(t)
            print(f"  {name} {h} h: " + ", ".join(
                f"vs {side} cold {t.cold[ours] / t.cold[side]:.2f}x warm "
                f"{t.warm[ours] / t.warm[side]:.2f}x" for side in apis if side != ours), flush=True)
    return timings, mismatches


def ratio_table(timings: list[Timing], ours: str, ref: str, names: list[str]) -> list[str]:
    """Markdown rows of ``ours`` / ``ref`` per query and range, cold and warm, then their
    geometric means."""
    ranges = list(dict.fromkeys(t.hours for t in timings))
    lines = ["| query | " + " | ".join(f"{h} h cold | {h} h warm" for h in ranges) + " |",
             "|---|" + "---|---|" * len(ranges)]
    for name in names:
        cells = [f"{t.cold[ours] / t.cold[ref]:.2f}x | {t.warm[ours] / t.warm[ref]:.2f}x"
                 for h in ranges for t in timings if t.name == name and t.hours == h]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    gc, gw = geomeans(timings, ours, ref)
    return lines + ["", f"Geometric mean: cold **{gc:.2f}x**, warm **{gw:.2f}x** "
                    f"({len(timings)} query/range pairs)."]


def geomeans(timings: list[Timing], ours: str, ref: str) -> tuple[float, float]:
    """Geometric means of ``ours`` / ``ref`` over every query and range: (cold, warm)."""
    return (geomean([t.cold[ours] / t.cold[ref] for t in timings]),
            geomean([t.warm[ours] / t.warm[ref] for t in timings]))


def start(args: list[str], ready: str, log: IO[bytes], timeout: float = 600) -> subprocess.Popen:
    p = subprocess.Popen(args, stdout=log, stderr=log)
    wait_ready(ready, timeout=timeout, proc=p)
    return p


def start_promring(workdir: Path, objstore_config: Path, log: IO[bytes]
                   ) -> tuple[dict[str, subprocess.Popen], str]:
    """``promring store`` over the bucket and ``promring query`` over it; (processes, API URL).
    The store's ready wait is long: at scale 4 it first builds index-headers of 623 MB."""
    sg, sh, qh = free_port(), free_port(), free_port()
    store = start(promring_cmd() + [
        "store", "--data-dir", str(workdir / "promring-store"), "--objstore.config-file",
        str(objstore_config), "--grpc-address", f"127.0.0.1:{sg}", "--http-address",
        f"127.0.0.1:{sh}", "--log.level", "warn"], f"http://127.0.0.1:{sh}/-/ready", log)
    procs = {"promring store": store}
    try:
        procs["promring query"] = start(promring_cmd() + [
            "query", "--endpoint", f"127.0.0.1:{sg}", "--grpc-address", "127.0.0.1:0",
            "--http-address", f"127.0.0.1:{qh}", "--log.level", "warn"],
            f"http://127.0.0.1:{qh}/-/ready", log, timeout=60)
    except BaseException:
        stop_all(procs.values())
        raise
    return procs, f"http://127.0.0.1:{qh}/api/v1"


def start_thanos(workdir: Path, objstore_config: Path, log: IO[bytes], probe_ms: int
                 ) -> tuple[dict[str, subprocess.Popen], str]:
    """The reference peer's ``thanos store`` + ``thanos query`` over the bucket; (processes,
    API URL), once the querier sees data at ``probe_ms`` (it looks for its store periodically)."""
    sg, sh, qg, qh = free_port(), free_port(), free_port(), free_port()
    procs = {"thanos store": start([
        peer("thanos"), "store", f"--data-dir={workdir / 'thanos-store'}",
        f"--objstore.config-file={objstore_config}", f"--grpc-address=127.0.0.1:{sg}",
        f"--http-address=127.0.0.1:{sh}", "--log.level=warn"], f"http://127.0.0.1:{sh}/-/ready",
        log)}
    try:
        procs["thanos query"] = start([
            peer("thanos"), "query", f"--endpoint=127.0.0.1:{sg}", f"--grpc-address=127.0.0.1:{qg}",
            f"--http-address=127.0.0.1:{qh}", "--log.level=warn"],
            f"http://127.0.0.1:{qh}/-/ready", log, timeout=60)
        api = f"http://127.0.0.1:{qh}/api/v1"
        wait_series(api, probe_ms)
    except BaseException:
        stop_all(procs.values())
        raise
    return procs, api


def wait_series(api: str, at_ms: int, timeout: float = 120) -> None:
    """Until a querier answers ``count(x)`` at ``at_ms`` with data (it has found its store)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(f"{api}/query", params={"query": "count(x)", "time": at_ms / 1000},
                         timeout=60).json()
        if r.get("data", {}).get("result"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"{api} sees no data")


def stop_all(procs: Iterable[subprocess.Popen], timeout_s: float = 30) -> None:
    """Terminate each process, killing any that has not exited within ``timeout_s``."""
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
