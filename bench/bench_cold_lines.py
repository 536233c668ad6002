"""Python lines a cold one-series query runs in ``promring store`` and ``promring query``
(issue 13): executed per query, and distinct (run by every query), per process.

A cold query's cost after idle follows how much distinct code and data it touches, not how
many lines it executes: a loop's second pass finds its code in the CPU caches. Session 21 cut
the store's executed lines per cold 6 h query by a quarter (1,150 -> 853: per-block loops
became C steps) and its distinct lines by 7 % (654 -> 606); its CPU per query after idle did
not move outside the spread between runs. This counts both, so a change can be judged by the
figure that matters before a noisy timing run.

Both servers start with a ``sitecustomize`` on their path (written to a temporary directory)
that installs a ``sys.settrace`` line counter on SIGUSR1 and writes the counts on SIGUSR2, so
only the measured queries are counted (after bench_scale's four aggregations ran once, as the
cold row runs them). Tracing slows the servers down; the counts are exact.

    python bench/bench_cold_lines.py --blocks /work/scale/s4 --hours 6 --top 20
    python bench/bench_cold_lines.py --blocks /work/scale/s4 --repo /tmp/other-checkout
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from bench_fixed_cost import AGGREGATIONS, COLD_QUERY, start_promring  # noqa: E402
from sidebyside import HOUR_MS, POINTS  # noqa: E402

# The line counter each server loads at start (only the promring entry point acts on it).
SITECUSTOMIZE = '''
import os, pickle, signal, sys
if os.environ.get("PROMRING_LINES_OUT") and os.path.basename(sys.argv[0]) == "promring":
    import collections
    _counts = collections.Counter()

    def _trace(frame, event, arg):
        if event == "line":
            _counts[(frame.f_code.co_filename, frame.f_code.co_name, frame.f_lineno)] += 1
        return _trace

    def _start(*_):
        sys.settrace(_trace)
        f = sys._getframe(1)
        while f is not None:
            f.f_trace = _trace
            f = f.f_back

    def _stop(*_):
        sys.settrace(None)
        out = os.path.join(os.environ["PROMRING_LINES_OUT"], f"{os.getpid()}.lines")
        with open(out, "wb") as fh:
            pickle.dump(dict(_counts), fh)

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
'''


def summary(counts: dict, n: int, repo: Path, top: int) -> list[str]:
    """Executed lines per query, distinct lines and functions run by every query, and the
    functions that execute the most lines."""
    every = [k for k, v in counts.items() if v >= n]
    by_func: collections.Counter = collections.Counter()
    for (path, func, _), v in counts.items():
        by_func[(os.path.relpath(path, repo) if path.startswith(str(repo)) else path, func)] += v
    lines = [f"  executed lines per query {sum(counts.values()) / n:,.0f}; distinct lines run "
             f"by every query {len(every):,}; distinct functions {len({k[:2] for k in every}):,}"]
    lines += [f"    {v / n:7.1f} {path}:{func}" for (path, func), v in by_func.most_common(top)]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout to measure")
    ap.add_argument("--hours", type=int, default=1, help="the query's range")
    ap.add_argument("--queries", type=int, default=60, help="cold queries counted")
    ap.add_argument("--top", type=int, default=0, help="functions listed per process")
    a = ap.parse_args()
    end_ms = json.loads(sorted(a.blocks.glob("*/meta.json"))[-1].read_text())["maxTime"] - 30_000
    work = Path(tempfile.mkdtemp(prefix="cold-lines-"))
    site = work / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = work / "lines"
    out.mkdir()
    # (the checkout first on the path: an editable install's finder would map the packages to
    # the tree it was installed from, whatever ``--repo`` says)
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(a.repo.resolve())]),
           "PROMRING_LINES_OUT": str(out)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    procs: list = []
    try:
        port, pids = start_promring(a.repo, a.blocks, work, procs)
        conn = http.client.HTTPConnection("127.0.0.1", port)

        def run(q: str) -> None:
            p = urlencode({"query": q, "start": (end_ms - a.hours * HOUR_MS) / 1000,
                           "end": end_ms / 1000, "step": a.hours * 3600 / POINTS})
            conn.request("GET", "/api/v1/query_range?" + p, headers={"Accept-Encoding": "gzip"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise SystemExit(f"{q}: HTTP {r.status}: {body[:200]!r}")
        for q in AGGREGATIONS:
            run(q)
        for pid in pids:
            os.kill(pid, signal.SIGUSR1)
        time.sleep(0.2)
        for i in range(a.queries):
            time.sleep(0.01)
            run(COLD_QUERY % (i + 10))
        for pid in pids:
            os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while len(list(out.glob("*.lines"))) < len(pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"{a.repo}: {a.queries} cold one-series queries at {a.hours} h")
        for name, pid in zip(("store", "query"), pids):
            print(name)
            counts = pickle.loads((out / f"{pid}.lines").read_bytes())
            print("\n".join(summary(counts, a.queries, a.repo.resolve(), a.top)))
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
