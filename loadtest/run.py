"""Headless load test: a fixed scenario of remote-write shards and dashboard readers for a while.

    python -m loadtest --start-up --duration 600
    python -m loadtest --remote-write-url http://host:19291/api/v1/receive \\
        --query-url http://host:10902 --duration 300 --target-pid 1234

Prints ingest samples/s, request latency p50/p99 and errors for writes and queries, and the
target's resident memory over time (from /proc when we know its pid, else its /metrics
``process_resident_memory_bytes``), so that memory staying flat under steady load is visible.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field, fields  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import gevent  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locust import events as locust_events  # noqa: E402
from locust.env import Environment  # noqa: E402

from loadtest import locustfile as lf  # noqa: E402
from loadtest.target import UpProcess, rss_from_metrics, rss_from_proc  # noqa: E402
from loadtest.workload import Config  # noqa: E402


@dataclass
class Latencies:
    """Exact per-request latencies of one kind of request (locust's own are bucketed)."""

    ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)

    def record(self, ms: float, exc: BaseException | None) -> None:
        self.ms.append(ms)
        if exc is not None:
            self.errors += 1
            if len(self.first_errors) < 5:
                self.first_errors.append(str(exc)[:300])

    def summary(self) -> dict:
        a = np.asarray(self.ms) if self.ms else np.zeros(1)
        return {"requests": len(self.ms), "errors": self.errors, "first_errors": self.first_errors,
                "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
                "max_ms": float(a.max())}


def _rss_reader(pid: int | None, query_url: str, remote_write_url: str) -> Callable[[], int | None]:
    if pid is not None:
        return lambda: rss_from_proc(pid)
    rw_base = remote_write_url.split("/api/")[0]
    urls = [f"{query_url.rstrip('/')}/metrics", f"{rw_base}/metrics"]

    def read() -> int | None:
        vals = [v for v in (rss_from_metrics(u) for u in urls) if v is not None]
        return max(vals) if vals else None
    return read


def run(cfg: Config, duration: float, pid: int | None = None, rss_interval: float = 5.0,
        progress: float = 30.0) -> dict:
    """Runs the scenario against ``cfg``'s URLs for ``duration`` seconds and returns the figures."""
    env = Environment(user_classes=[lf.RemoteWriteUser, lf.QueryUser], events=locust_events)
    env.loadtest_config = cfg
    lf.config_for(env)
    lf.RemoteWriteUser.fixed_count = cfg.writers
    lf.QueryUser.fixed_count = cfg.queriers
    lat = {"write": Latencies(), "query": Latencies()}

    def on_request(request_type, name, response_time, response_length, exception=None, **_kw):  # type: ignore[no-untyped-def]
        lat["write" if name == lf.RW_NAME else "query"].record(response_time, exception)

    env.events.request.add_listener(on_request)
    read_rss = _rss_reader(pid, cfg.query_url, cfg.remote_write_url)
    rss: list[tuple[float, int]] = []
    counters: lf.Counters = env.loadtest_counters
    t_start = time.monotonic()

    def sample_rss() -> None:
        while True:
            v = read_rss()
            if v is not None:
                rss.append((round(time.monotonic() - t_start, 1), v))
            gevent.sleep(rss_interval)

    def print_progress() -> None:
        last, t_last = 0, t_start
        while True:
            gevent.sleep(progress)
            now = time.monotonic()
            w = lat["write"]
            print(f"[{now - t_start:6.0f}s] {(counters.samples_ok - last) / (now - t_last):9,.0f} samples/s  "
                  f"writes {len(w.ms)} (errors {w.errors})  queries {len(lat['query'].ms)} "
                  f"(errors {lat['query'].errors})  rss {rss[-1][1] / 2**20 if rss else float('nan'):.0f} MiB",
                  flush=True)
            last, t_last = counters.samples_ok, now

    greenlets = [gevent.spawn(sample_rss)]
    if progress > 0:
        greenlets.append(gevent.spawn(print_progress))
    runner = env.create_local_runner()
    runner.start(cfg.writers + cfg.queriers, spawn_rate=100)
    gevent.sleep(duration)
    runner.quit()
    elapsed = time.monotonic() - t_start
    v = read_rss()
    if v is not None:
        rss.append((round(elapsed, 1), v))
    gevent.killall(greenlets)
    return {"config": asdict(cfg), "duration_s": elapsed, "samples_ok": counters.samples_ok,
            "samples_failed": counters.samples_failed, "samples_per_s": counters.samples_ok / elapsed,
            "query_series": counters.query_series, "query_points": counters.query_points,
            "write": lat["write"].summary(), "query": lat["query"].summary(), "rss": rss}


def rss_points(rss: list[tuple[float, int]], warmup: float) -> dict[str, int | float | None]:
    """RSS at start (after the first scrape interval, every series created), middle and end."""
    if not rss:
        return {"start": None, "middle": None, "end": None, "growth_after_warmup": None}
    after = [r for r in rss if r[0] >= warmup] or rss
    start, end = after[0], rss[-1]
    mid = min(after, key=lambda r: abs(r[0] - (start[0] + end[0]) / 2))
    return {"idle": rss[0][1], "start": start[1], "middle": mid[1], "end": end[1], "max": max(r[1] for r in rss),
            "growth_after_warmup": (end[1] - start[1]) / start[1]}


def report(res: dict) -> str:
    w, q, cfg = res["write"], res["query"], res["config"]
    pts = res["rss_points"]
    mib = lambda v: "n/a" if v is None else f"{v / 2**20:.0f} MiB"  # noqa: E731
    lines = [
        f"load test: {cfg['series']:,} active series every {cfg['interval']:g}s, {cfg['per_request']} samples/request, "
        f"churn {cfg['churn']:g}/interval, {cfg['tenants']} tenant(s), {cfg['writers']} writers, "
        f"{cfg['queriers']} dashboard readers; {res['duration_s']:.0f} s",
        f"ingest:  {res['samples_per_s']:,.0f} samples/s ({res['samples_ok']:,} samples acknowledged, "
        f"{res['samples_failed']:,} failed)",
        f"writes:  {w['requests']:,} requests, p50 {w['p50_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms, errors {w['errors']}",
        f"queries: {q['requests']:,} requests, p50 {q['p50_ms']:.1f} ms, p99 {q['p99_ms']:.1f} ms, errors {q['errors']} "
        f"({res['query_series']:,} series / {res['query_points']:,} points returned)",
        f"RSS:     idle {mib(pts.get('idle'))}, start {mib(pts['start'])}, middle {mib(pts['middle'])}, "
        f"end {mib(pts['end'])}, max {mib(pts.get('max'))}"
        + ("" if pts["growth_after_warmup"] is None else f"; growth start→end {100 * pts['growth_after_warmup']:+.1f}%"),
    ]
    for kind in ("write", "query"):
        for e in res[kind]["first_errors"]:
            lines.append(f"  {kind} error: {e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n")[0])
    ap.add_argument("--start-up", action="store_true", help="start a `promring up` in a temp dir and stop it after")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--target-pid", type=int, default=None, help="read the target's RSS from /proc/<pid>")
    ap.add_argument("--rss-interval", type=float, default=5.0)
    ap.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines (0: none)")
    ap.add_argument("--json", dest="json_path", default=None, help="also write the figures as JSON here")
    for f in fields(Config):
        ap.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(f.default), default=None,
                        help=f"default {f.default!r} (env LOADTEST_{f.name.upper()})")
    a = ap.parse_args(argv)
    overrides = {f.name: getattr(a, f.name) for f in fields(Config)}
    up = None
    pid = a.target_pid
    if a.start_up:
        up = UpProcess().start()
        overrides.update(remote_write_url=up.remote_write_url, query_url=up.query_url)
        pid = up.proc.pid if up.proc else None
    cfg = Config.from_env(**overrides)
    try:
        res = run(cfg, a.duration, pid=pid, rss_interval=a.rss_interval, progress=a.progress)
    finally:
        code = up.stop() if up is not None else None
    res["rss_points"] = rss_points(res["rss"], warmup=min(cfg.interval * 2, a.duration / 3))
    res["target_exit_code"] = code
    print(report(res), flush=True)
    if a.json_path:
        Path(a.json_path).write_text(json.dumps(res, indent=1))
    return 0 if res["write"]["errors"] == 0 and res["query"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
