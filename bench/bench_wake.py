"""Wake-ups, CPU and syscalls per one-series query, in bench_scale.py's alternating setting
(issue 13): Prometheus 2.42 and ``promring store`` + ``promring query`` (this checkout, and
``--other DIR``'s too) over copies of bench_scale.py's blocks, ``x{instance="i-00007"}`` over
``--hours`` with gzip asked, one query per server in turn on one requests session exactly like
sidebyside.compare_sides (so each query starts after the other servers ran: cold CPU caches,
idle vCPUs); with ``--other``, the two promring sides take turns at following Prometheus.

Per server and process, per query (medians over ``--queries``): wall time, CPU (schedstat
nanoseconds), times a thread was put on a CPU (schedstat's third field), voluntary and
involuntary context switches (/proc/PID/task/*/status), which threads ran, and how often the
processes' busiest threads ran on the CPU the client last ran on. ``--strace N`` then counts
syscalls per query over N more alternating queries (``strace -c -f`` attached to each server
process: counts only, its timings are inflated). ``--split``: both promring processes record
the monotonic time and CPU of every event-loop wake-up and socket write (a few microseconds per
query), and the wall time of each query is split into its hops: client to querier, the
querier's work up to its store call, querier to store, the store's work, store to querier, the
querier's work up to its answer, answer to client (with which CPU each side ran on).

    python bench/bench_wake.py --blocks /work/scale/s1 --other /work/main
    python bench/bench_wake.py --blocks /work/scale/s1 --strace 40 --split
    python bench/bench_wake.py --blocks /work/scale/s1 --split --pause-ms 10
    python bench/bench_wake.py --blocks /work/scale/s4 --scale 4 --cold --split

``--cold``: the measured queries are bench_scale's cold one-series cell's (after its four
aggregations ran once at the range, each query asks every server for a single series no query
asked for before), not one series asked again and again.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from harness import free_port, wait_ready  # noqa: E402
from bench_fixed_cost import AGGREGATIONS, QUERY, prometheus_over  # noqa: E402
from bench_scale import fresh_single_series  # noqa: E402
from sidebyside import HOUR_MS, POINTS, run_query, stop_all  # noqa: E402

HOPS = ("client -> querier woke", "querier: request -> store call written",
        "store call written -> store woke", "store: woke -> answer written",
        "store answer written -> querier woke", "querier: store answer -> HTTP answer written",
        "HTTP answer written -> client done")


def recorded(argv: list[str]) -> None:
    """``promring argv`` recording (event, monotonic time, CPU) at each event-loop wake-up
    ("woke") and socket write ("write"); SIGUSR1 writes them to $WAKE_EVENTS (and clears).
    These hooks are asyncio's selector loop's, so a recorded process runs on that loop, not
    on uvloop's (common.aio.new_event_loop): its split is the asyncio loop's."""
    import asyncio
    import selectors
    import signal as sig
    from asyncio import selector_events
    getcpu = ctypes.CDLL(None).sched_getcpu
    events: list[tuple[str, float, int]] = []
    select = selectors.EpollSelector.select
    write = selector_events._SelectorSocketTransport.write

    def recorded_select(self, timeout=None):
        ready = select(self, timeout)
        if ready:
            events.append(("woke", time.perf_counter(), getcpu()))
        return ready

    def recorded_write(self, data):
        events.append(("write", time.perf_counter(), getcpu()))
        return write(self, data)

    def dump(*_) -> None:
        with open(os.environ["WAKE_EVENTS"], "w") as f:
            f.writelines("%s %.7f %d\n" % e for e in events)
        events.clear()
    selectors.EpollSelector.select = recorded_select  # type: ignore[method-assign]
    selector_events._SelectorSocketTransport.write = recorded_write  # type: ignore
    sig.signal(sig.SIGUSR1, dump)
    sys.argv = ["promring"] + argv
    import common.aio
    common.aio.new_event_loop = asyncio.new_event_loop  # type: ignore[assignment]
    from promring.cli import main
    main()


def start_promring(repo: Path, blocks: Path, work: Path, procs: list, record: bool
                   ) -> tuple[int, tuple[int, int]]:
    """store + query of checkout ``repo`` over a copy of ``blocks`` (each under ``recorded``
    when ``record``); (query HTTP port, (store pid, query pid))."""
    shutil.copytree(blocks, work / "bucket")
    (work / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {work / 'bucket'}\n")
    sg, sh, qh = free_port(), free_port(), free_port()
    log = open(work / "promring.log", "ab")

    def cmd(name: str) -> list[str]:
        if record:
            return [str(repo / ".venv/bin/python"), __file__, "--recorded", name]
        return [str(repo / ".venv/bin/promring"), name]
    env = lambda name: dict(os.environ, WAKE_EVENTS=str(work / f"{name}.events"))  # noqa: E731
    store = subprocess.Popen(cmd("store") + [
        "--data-dir", str(work / "store"), "--objstore.config-file", str(work / "objstore.yml"),
        "--grpc-address", f"127.0.0.1:{sg}", "--http-address", f"127.0.0.1:{sh}",
        "--log.level", "warn"], stdout=log, stderr=log, cwd=repo, env=env("store"))
    procs.append(store)
    wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=600, proc=store)
    query = subprocess.Popen(cmd("query") + [
        "--endpoint", f"127.0.0.1:{sg}", "--grpc-address", "127.0.0.1:0", "--http-address",
        f"127.0.0.1:{qh}", "--log.level", "warn"], stdout=log, stderr=log, cwd=repo,
        env=env("query"))
    procs.append(query)
    wait_ready(f"http://127.0.0.1:{qh}/-/ready", timeout=60, proc=query)
    return qh, (store.pid, query.pid)


def _events(path: Path) -> list[tuple[str, float, int]]:
    return [(k, float(t), int(c)) for k, t, c in (ln.split() for ln in path.read_text().splitlines())]


def split(queries: list[tuple[float, float, int, int]], store: list, query: list) -> list[str]:
    """Each query's hops (see HOPS) from the client's (start, end, CPU at start, CPU at end)
    and the processes' events: medians, and how often the woken side ran on the waker's CPU."""
    def first(evs: list, kind: str, t: float):
        for e in evs:
            if e[0] == kind and e[1] >= t:
                return e
        raise LookupError
    hops: list[list[float]] = [[] for _ in HOPS]
    same = collections.Counter()
    for t0, t1, c0, c1 in queries:
        try:
            qw = first(query, "woke", t0)
            qc = first(query, "write", qw[1])
            sw = first(store, "woke", qc[1])
            sa = first(store, "write", sw[1])
            qa = first(query, "woke", sa[1])
            qh = first(query, "write", qa[1])
        except LookupError:
            continue
        marks = (t0, qw[1], qc[1], sw[1], sa[1], qa[1], qh[1], t1)
        for i in range(len(HOPS)):
            hops[i].append(marks[i + 1] - marks[i])
        same["querier woke on the client's CPU"] += qw[2] == c0
        same["store woke on the querier's CPU"] += sw[2] == qc[2]
        same["querier woke on the store's CPU"] += qa[2] == sa[2]
        same["client woke on the querier's CPU"] += c1 == qh[2]
    n = len(hops[0]) or 1
    return ([f"{h}: {statistics.median(v) * 1e6:.0f} us" for h, v in zip(HOPS, hops) if v]
            + [f"{k}: {v / n:.0%}" for k, v in same.items()])


def threads(pid: int) -> dict[int, tuple[str, int, int, int, int, int]]:
    """tid -> (name, CPU ns, times put on a CPU, voluntary, involuntary switches, last CPU)."""
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            ns, _, runs = (t / "schedstat").read_text().split()[:3]
            vol = invol = 0
            for line in (t / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    vol = int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol = int(line.split()[1])
            stat = (t / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(t.name)] = ((t / "comm").read_text().strip(), int(ns), int(runs), vol, invol,
                                int(stat[36]))
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return out


def my_cpu() -> int:
    return int(Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()[36])


class Tally:
    """Per-query deltas of one process's threads."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []  # per query: cpu_us, runs, vol, invol, threads
        self.names: collections.Counter = collections.Counter()  # thread names that ran
        self.same_cpu = 0  # queries whose busiest thread last ran on the client's CPU

    def add(self, before: dict, after: dict, client_cpu: int) -> None:
        row = dict(cpu_us=0.0, runs=0, vol=0, invol=0, threads=0)
        busiest, busiest_ns = None, -1
        for tid, a in after.items():
            b = before.get(tid, (a[0], 0, 0, 0, 0, -1))
            if a[2] == b[2]:
                continue
            ns = a[1] - b[1]
            row["cpu_us"] += ns / 1e3
            row["runs"] += a[2] - b[2]
            row["vol"] += a[3] - b[3]
            row["invol"] += a[4] - b[4]
            row["threads"] += 1
            self.names[a[0]] += 1
            if ns > busiest_ns:
                busiest, busiest_ns = a, ns
        if busiest is not None and busiest[5] == client_cpu:
            self.same_cpu += 1
        self.rows.append(row)

    def line(self) -> str:
        n = len(self.rows)
        med = {k: statistics.median(r[k] for r in self.rows) for k in self.rows[0]}
        mean = {k: sum(r[k] for r in self.rows) / n for k in self.rows[0]}
        names = ", ".join(f"{k} {v / n:.2f}" for k, v in self.names.most_common(4))
        return (f"CPU {med['cpu_us']:.0f} us, on-CPU {mean['runs']:.2f}x, switches vol "
                f"{mean['vol']:.2f} invol {mean['invol']:.2f}, threads {mean['threads']:.2f} "
                f"({names}); busiest thread on the client's CPU {self.same_cpu / n:.0%}")


def strace_counts(pid: int, out: Path) -> subprocess.Popen:
    return subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(pid)],
                            stderr=subprocess.DEVNULL)


def parse_strace(path: Path) -> dict[str, int]:
    calls = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
            calls[parts[-1]] = int(parts[3])
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--other", type=Path, help="a second promring checkout")
    ap.add_argument("--queries", type=int, default=200, help="measured queries per server")
    ap.add_argument("--hours", type=int, default=1)
    ap.add_argument("--strace", type=int, default=0, help="then count syscalls over N queries")
    ap.add_argument("--split", action="store_true", help="split each promring query's wall time")
    ap.add_argument("--pause-ms", type=float, default=0.0,
                    help="idle this long before each measured query (not timed): the regime where "
                         "caches have cooled, as in bench_fixed_cost.py --pause-ms")
    ap.add_argument("--cold", action="store_true",
                    help="a never-asked series per measured query, as bench_scale's cold cell")
    ap.add_argument("--scale", type=float, default=1.0, help="the blocks' bench_scale --scale")
    a = ap.parse_args()
    metas = sorted(a.blocks.glob("*/meta.json"))
    end_ms = json.loads(metas[0].read_text())["minTime"] + 2 * len(metas) * HOUR_MS - 30_000
    params = {"query": QUERY, "start": (end_ms - a.hours * HOUR_MS) / 1000,
              "end": end_ms / 1000, "step": a.hours * 3600 / POINTS}
    tmp = Path(tempfile.mkdtemp(prefix="bench-wake-"))
    procs: list[subprocess.Popen] = []
    prom = prometheus_over(a.blocks, tmp / "prom")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        cleanup.callback(prom.stop)
        cleanup.callback(stop_all, procs)
        prom.start()
        sides: dict[str, tuple[str, dict[str, int]]] = {
            "Prometheus": (prom.api, {"prometheus": prom.proc.pid})}  # type: ignore[union-attr]
        repos = [("promring", REPO)] + ([(f"promring {a.other}", a.other.resolve())]
                                         if a.other else [])
        for k, (name, repo) in enumerate(repos):
            port, (store, query) = start_promring(repo, a.blocks, tmp / str(k), procs, a.split)
            sides[name] = (f"http://127.0.0.1:{port}/api/v1", {"query": query, "store": store})
        sess = requests.Session()
        sess.headers["Accept-Encoding"] = "gzip"
        for _ in range(30):  # warm up
            for api, _ in sides.values():
                run_query(sess, api, params)
        fresh = fresh_single_series(a.scale)
        if a.cold:  # bench_scale's order: the aggregations once at this range, then first runs
            for q in AGGREGATIONS:
                for api, _ in sides.values():
                    run_query(sess, api, dict(params, query=q))
        wall: dict[str, list[float]] = {s: [] for s in sides}
        marks: dict[str, list] = {s: [] for s in sides}
        tally = {s: {p: Tally() for p in pids} for s, (_, pids) in sides.items()}
        getcpu = ctypes.CDLL(None).sched_getcpu
        ours = [s for s in sides if s != "Prometheus"]
        for i in range(a.queries):
            if a.cold:
                params = dict(params, query=next(fresh))
            # Prometheus first, as in bench_scale; the promring sides take turns behind it (a
            # query that follows another promring's finds the interpreter's code in the caches)
            for side in ["Prometheus"] + ours[i % len(ours):] + ours[:i % len(ours)]:
                api, pids = sides[side]
                if a.pause_ms:
                    time.sleep(a.pause_ms / 1000)
                before = {p: threads(pid) for p, pid in pids.items()}
                c0, t0 = getcpu(), time.perf_counter()
                wall[side].append(run_query(sess, api, params)[0])
                marks[side].append((t0, time.perf_counter(), c0, getcpu()))
                cpu = my_cpu()
                for p, pid in pids.items():
                    tally[side][p].add(before[p], threads(pid), cpu)
        ref = statistics.median(wall["Prometheus"])
        for side in sides:
            w = sorted(wall[side])
            print(f"{side}: wall median {w[len(w) // 2] * 1e3:.2f} ms ({w[len(w) // 2] / ref:.2f}x"
                  f"), p25 {w[len(w) // 4] * 1e3:.2f} p75 {w[3 * len(w) // 4] * 1e3:.2f}")
            for p, t in tally[side].items():
                print(f"   {p}: {t.line()}")
        if a.split:
            for k, side in enumerate(s for s in sides if s != "Prometheus"):
                for pid in sides[side][1].values():
                    os.kill(pid, signal.SIGUSR1)
                time.sleep(1.0)
                print(f"{side}, wall split (medians; includes the client's own work):")
                for line in split(marks[side], _events(tmp / str(k) / "store.events"),
                                  _events(tmp / str(k) / "query.events")):
                    print(f"   {line}")
        if a.strace:
            tracers = {}
            for side, (_, pids) in sides.items():
                for p, pid in pids.items():
                    tracers[(side, p)] = (strace_counts(pid, tmp / f"{pid}.strace"),
                                          tmp / f"{pid}.strace")
            time.sleep(1.0)  # attached
            for _ in range(a.strace):
                for api, _ in sides.values():
                    run_query(sess, api, params)
            for tr, _ in tracers.values():
                tr.send_signal(signal.SIGINT)
                tr.wait(30)
            for (side, p), (_, path) in tracers.items():
                calls = parse_strace(path)
                top = sorted(calls.items(), key=lambda kv: -kv[1])
                print(f"{side} {p}: syscalls per query {sum(calls.values()) / a.strace:.1f}: "
                      + ", ".join(f"{k} {v / a.strace:.2f}" for k, v in top if v >= a.strace / 4))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--recorded"]:  # a promring process started by start_promring
        recorded(sys.argv[2:])
    else:
        main()
