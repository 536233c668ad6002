"""The querier's evaluation cost of a small query (issue 13), without its HTTP front: CPU time
and event-loop iterations per query of ``QueryAPI._on_loop`` (parse cache, inline evaluation,
the StoreAPI Series call, the answer's JSON) against a ``promring store`` over bench_scale.py's
blocks, in this process; ``--dump`` writes every answer of a set of dashboard queries (through
the whole HTTP API) so two checkouts' answers can be compared byte for byte.

    .venv/bin/python bench/bench_inline_eval.py --blocks /work/scale/s1
    .venv/bin/python bench/bench_inline_eval.py --blocks /work/scale/s1 --dump /tmp/a.json
    .venv/bin/python bench/bench_inline_eval.py --blocks /work/scale/s1 --repo /work/main
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "bench")]

from harness import free_port, wait_ready  # noqa: E402
from sidebyside import HOUR_MS, POINTS  # noqa: E402

ONE = 'x{instance="i-00007"}'
DUMPED = [ONE, 'rate(x{instance="i-00007"}[5m])', 'sum(x{instance=~"i-0000[1-5]"})',
          'x{instance="i-00007"} * 2 + 1', "sum by (job) (rate(x[5m]))",
          "histogram_quantile(0.99, sum by (le, job) (rate(b[5m])))", "topk(10, rate(x[5m]))",
          "count by (job) (x)", 'x{shard="0"}', 'avg_over_time(x{shard="0"}[5m])',
          'x{instance="nope"}', 'x{instance="i-00007"}[5m]', "1 +", 'vector(1)']


@contextlib.contextmanager
def store_over(blocks: Path, repo: Path = REPO) -> Iterator[int]:
    """A ``promring store`` (of checkout ``repo``) over a copy of ``blocks`` while the block
    runs; its gRPC port."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-inline-"))
    shutil.copytree(blocks, tmp / "bucket")
    (tmp / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
    sg, sh = free_port(), free_port()
    store = subprocess.Popen([str(repo / ".venv" / "bin" / "promring"), "store", "--data-dir",
                              str(tmp / "store"), "--objstore.config-file", str(tmp / "objstore.yml"),
                              "--grpc-address", f"127.0.0.1:{sg}", "--http-address",
                              f"127.0.0.1:{sh}", "--log.level", "warn"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=600, proc=store)
        yield sg
    finally:
        store.terminate()
        store.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


async def per_query(api, end_ms: int, hours: int, n: int, query: str) -> tuple[float, float]:
    """(CPU ms, loop iterations) per ``_on_loop`` call of a range query, medians of batches."""
    from querier.fanout import FanoutQueryable
    loop = asyncio.get_running_loop()
    start, step = end_ms - hours * HOUR_MS, hours * 3600_000 // POINTS
    steps = (end_ms - start) // step + 1
    iterations = [0]
    run_once = loop._run_once

    def counted() -> None:
        iterations[0] += 1
        run_once()
    loop._run_once = counted

    def run(engine, qa, expr):
        return engine.range(qa, query, start, end_ms, step, expr)
    cpu, its = [], []
    try:
        for batch in range(12):
            c0, i0 = time.process_time(), iterations[0]
            for _ in range(n // 12):
                qa = FanoutQueryable(api.stores, loop, api._options_default, deadline=loop.time() + 60)
                _, body, _ = await api._on_loop(run, api.engine_opts, api.engine_opts.timeout_s,
                                                qa, query, steps, step, 0, None)
                assert body is not None, "not evaluated inline"
            if batch:  # the first batch warms up
                cpu.append((time.process_time() - c0) / (n // 12) * 1e3)
                its.append((iterations[0] - i0) / (n // 12))
    finally:
        loop._run_once = run_once
    return statistics.median(cpu), statistics.median(its)


async def dump(port: int, end_ms: int) -> dict:
    import aiohttp
    out = {}
    async with aiohttp.ClientSession(auto_decompress=True) as s:
        for hours in (1, 24):
            start, step = end_ms - hours * HOUR_MS, hours * 3600 / POINTS
            for q in DUMPED:
                for path, params in (("query_range", {"query": q, "start": start / 1000,
                                                      "end": end_ms / 1000, "step": step}),
                                     ("query", {"query": q, "time": end_ms / 1000})):
                    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urlencode(params)}"
                    async with s.get(url) as r:
                        out[f"{path} {hours}h {q}"] = f"{r.status} {(await r.read()).decode()}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("-n", type=int, default=2400, help="queries per range")
    ap.add_argument("--query", default=ONE)
    ap.add_argument("--dump", type=Path, help="write the answers of a query set here (JSON)")
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose querier runs")
    a = ap.parse_args()
    sys.path.insert(0, str(a.repo.resolve()))
    from querier.config import QueryConfig
    from querier.server import Querier
    metas = sorted(a.blocks.glob("*/meta.json"))
    end_ms = json.loads(metas[0].read_text())["minTime"] + 2 * len(metas) * HOUR_MS - 30_000
    with store_over(a.blocks) as sg:
        async def go() -> None:
            port = free_port()
            q = Querier(QueryConfig(http_address=f"127.0.0.1:{port}", endpoints=[f"127.0.0.1:{sg}"]))
            await q.start()
            try:
                if a.dump:
                    a.dump.write_text(json.dumps(await dump(port, end_ms), indent=0))
                    return
                from querier.fanout import SelectOptions
                q.api._options_default = SelectOptions(partial_response=True)
                for hours in (1, 24):
                    cpu, its = await per_query(q.api, end_ms, hours, a.n, a.query)
                    print(f"{a.query} {hours} h: {cpu:.3f} ms CPU, {its:.1f} loop iterations "
                          "per query (evaluation path, no HTTP)")
            finally:
                await q.stop()
        asyncio.run(go())


if __name__ == "__main__":
    main()
