"""Where one small query's time goes inside one promring process, step by step (issue 13).

``promring store`` + ``promring query`` over bench_scale.py's blocks, each started with a
``sitecustomize`` (in a temporary directory put on PYTHONPATH) that wraps a fixed list of
functions of the process chosen by ``--process`` and records, at each one's entry (``>``) and
exit (``<``), the monotonic time and the thread's CPU time. The one-series query
``x{instance=...}`` is then asked ``--queries`` times (``--cold``: a never-asked series each
time, after the aggregations ran once, as bench_scale's cold cells), with ``--pause-ms`` of
idle before each (the regime where the one-series gap to Prometheus lives, see
bench_fixed_cost.py --pause-ms). Per event it prints the median wall and CPU time since the
process received the request (the first event of each query). Each wrapper costs ~1 us, so
the offsets include the recording; compare runs, not absolute values.

    python bench/bench_phases.py --blocks /work/scale/s1 --process query --pause-ms 10
    python bench/bench_phases.py --blocks /work/scale/s1 --process store --cold --pause-ms 10
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_fixed_cost import AGGREGATIONS, start_promring  # noqa: E402

# (module, class or "", attribute, event name) per process; the first is each query's start.
WRAPPED = {
    "query": [
        ("querier.fasthttp", "FastConnection", "data_received", "http_in"),
        ("querier.fasthttp", "", "parse_request", "parse"),
        ("querier.fasthttp", "", "query_to_pairs", "query_pairs"),
        ("querier.api", "QueryAPI", "range_query", "range_query"),
        ("querier.api", "", "parse_time", "parse_time"),
        ("querier.api", "QueryAPI", "_options", "options"),
        ("querier.api", "QueryAPI", "_evaluate", "evaluate"),
        ("querier.api", "QueryAPI", "_on_loop", "on_loop"),
        ("querier.api", "", "plan_selects", "plan_selects"),
        ("querier.inline", "InlineQuery", "evaluate", "inline_eval"),
        ("querier.fanout", "FanoutQueryable", "fetch", "fanout_fetch"),
        ("storeapi.client", "StoreClient", "series_with_warnings", "store_client"),
        ("storeapi.h2client", "H2Channel", "unary_stream_each", "h2_call"),
        ("storeapi.h2client", "_Connection", "_write", "store_out"),
        ("storeapi.h2client", "_Connection", "data_received", "store_in"),
        ("storeapi.client", "_SeriesReader", "feed", "frames"),
        ("querier.api", "", "plain_range", "plain_range"),
        ("querier.api", "", "one_matrix_json", "json"),
        ("querier.fasthttp", "FastConnection", "_send", "send"),
        ("querier.fasthttp", "FastConnection", "_write", "http_out"),
    ],
    "store": [
        ("storeapi.h2server", "_Connection", "data_received", "h2_in"),
        ("storeapi.h2server", "_Connection", "_run", "call"),
        ("store.bucketstore", "BucketStore", "series", "bucket_series"),
        ("store.bucketstore", "BucketStore", "_select_misses", "select_misses"),
        ("store.bucketstore", "", "select_many", "select_many"),
        ("store.bucketstore", "BucketStore", "_read_many", "read_many"),
        ("store.bucketstore", "", "series_many", "series_many"),
        ("store.cache", "LRUCache", "get_many", "cache_get"),
        ("store.cache", "LRUCache", "put_many", "cache_put"),
        ("objstore.filesystem", "", "_read_ranges", "read_ranges"),
        ("store.bucketstore", "", "merge_block_series", "merge"),
        ("storeapi.h2server", "_Connection", "_end_with", "answer"),
    ],
}

SITECUSTOMIZE = '''
import functools, importlib, inspect, os, signal, sys, time
if sys.argv[1:2] == [{process!r}]:  # ``promring <process> ...``
    _ev = []
    def _rec(name):
        _ev.append((name, time.perf_counter_ns(), time.thread_time_ns()))
    def _wrapped(f, name):
        if inspect.iscoroutinefunction(f):
            @functools.wraps(f)
            async def w(*a, **k):
                _rec(name + ">")
                try:
                    return await f(*a, **k)
                finally:
                    _rec(name + "<")
        else:
            @functools.wraps(f)
            def w(*a, **k):
                _rec(name + ">")
                try:
                    return f(*a, **k)
                finally:
                    _rec(name + "<")
        return w
    for mod, cls, attr, name in {wrapped!r}:
        owner = importlib.import_module(mod)
        owner = getattr(owner, cls) if cls else owner
        setattr(owner, attr, _wrapped(getattr(owner, attr), name))
    def _dump(*_):
        with open({out!r}, "a") as fh:
            fh.writelines(" ".join(map(str, e)) + "\\n" for e in _ev)
        _ev.clear()
    signal.signal(signal.SIGUSR2, _dump)
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--process", choices=sorted(WRAPPED), default="query")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--hours", type=int, default=1)
    ap.add_argument("--pause-ms", type=float, default=10.0)
    ap.add_argument("--cold", action="store_true", help="a never-asked series each query")
    a = ap.parse_args()
    metas = sorted(a.blocks.glob("*/meta.json"))
    end_ms = json.loads(metas[0].read_text())["minTime"] + 2 * len(metas) * 3600_000 - 30_000
    tmp = Path(tempfile.mkdtemp(prefix="bench-phases-"))
    out = tmp / "events.txt"
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE.format(
        process=a.process, wrapped=WRAPPED[a.process], out=str(out)))
    procs: list = []
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tmp / "site")
    try:
        port, pids = start_promring(REPO, a.blocks, tmp, procs)
        pid = pids[0] if a.process == "store" else pids[1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

        def ask(query: str) -> None:
            conn.request("GET", "/api/v1/query_range?" + urlencode(
                {"query": query, "start": (end_ms - a.hours * 3600_000) / 1000,
                 "end": end_ms / 1000, "step": a.hours * 3600 / 240}),
                headers={"Accept-Encoding": "gzip"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
        for q in AGGREGATIONS:
            ask(q)
        for i in range(20):
            ask('x{instance="i-%05d"}' % (2100 + i % 20 if a.cold else 7))
        os.kill(pid, signal.SIGUSR2)
        time.sleep(0.3)
        out.unlink(missing_ok=True)
        t0 = time.perf_counter_ns()
        for i in range(a.queries):
            time.sleep(a.pause_ms / 1000)
            ask('x{instance="i-%05d"}' % (i if a.cold else 7))
        os.kill(pid, signal.SIGUSR2)
        time.sleep(0.5)
        events = [(n, int(t), int(c)) for n, t, c in
                  (line.split() for line in out.read_text().splitlines()) if int(t) >= t0]
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    first = WRAPPED[a.process][0][3] + ">"
    calls: list[list] = []
    for e in events:
        if e[0] == first:
            calls.append([])
        if calls:
            calls[-1].append(e)
    wall, cpu = collections.defaultdict(list), collections.defaultdict(list)
    order: list[str] = []
    for call in calls:
        seen: collections.Counter = collections.Counter()
        for name, t, c in call:
            seen[name] += 1
            key = f"{name}#{seen[name]}"
            if key not in order:
                order.append(key)
            wall[key].append(t - call[0][1])
            cpu[key].append(c - call[0][2])
    print(f"{a.process}: {len(calls)} {'cold' if a.cold else 'warm'} one-series calls, "
          f"{a.hours} h, {a.pause_ms:g} ms idle before each; medians since its first event (us)")
    for key in order:
        if len(wall[key]) >= 0.9 * len(calls):
            print(f"  {key:22s} wall {statistics.median(wall[key]) / 1000:8.1f}"
                  f"  cpu {statistics.median(cpu[key]) / 1000:8.1f}")


if __name__ == "__main__":
    main()
