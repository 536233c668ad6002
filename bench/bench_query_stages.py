"""Wall time inside the querier per query: the whole request (aiohttp's handling, request parsed
to response written) and the StoreAPI Series calls within it, medians over many queries.

``promring store`` runs over a copy of bench_scale.py's blocks; the querier of checkout REPO
runs in this process with its request handling and ``StoreSet.series`` timed (wrapped, not
changed); a separate client process loops one query over a keep-alive connection.

    python bench/bench_query_stages.py --blocks /work/scale/s1 --repo /work/main
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--repo", type=Path, default=HERE, help="the promring checkout to time")
    ap.add_argument("--query", default='x{instance="i-00007"}')
    ap.add_argument("--hours", type=int, default=1)
    ap.add_argument("-n", type=int, default=1000, help="queries")
    a = ap.parse_args()
    repo = a.repo.resolve()
    sys.path[:0] = [str(repo), str(repo / "tests"), str(repo / "bench"), str(HERE / "bench")]
    from bench_inline_eval import store_over
    from harness import free_port
    from sidebyside import HOUR_MS, POINTS

    metas = sorted(a.blocks.glob("*/meta.json"))
    end_ms = json.loads(metas[0].read_text())["minTime"] + 2 * len(metas) * HOUR_MS - 30_000
    with store_over(a.blocks, repo) as sg:
        import aiohttp.web_protocol as wp
        from querier import fanout
        from querier.config import QueryConfig
        from querier.server import Querier
        handled: list[float] = []
        fetched: list[float] = []
        series, handle = fanout.StoreSet.series, wp.RequestHandler._handle_request

        def timed(method, seconds: list[float]):
            """``method`` wrapped to append each call's wall time to ``seconds``."""
            async def wrapper(self, *args, **kw):
                t = time.perf_counter()
                try:
                    return await method(self, *args, **kw)
                finally:
                    seconds.append(time.perf_counter() - t)
            return wrapper
        fanout.StoreSet.series = timed(series, fetched)
        wp.RequestHandler._handle_request = timed(handle, handled)

        async def run() -> float:
            port = free_port()
            q = Querier(QueryConfig(http_address=f"127.0.0.1:{port}",
                                    endpoints=[f"127.0.0.1:{sg}"]))
            await q.start()
            params = urlencode({"query": a.query, "start": (end_ms - a.hours * HOUR_MS) / 1000,
                                "end": end_ms / 1000, "step": a.hours * 3600 / POINTS})
            loop = (f"import http.client\nc = http.client.HTTPConnection('127.0.0.1', {port})\n"
                    f"for _ in range({a.n}):\n"
                    f"    c.request('GET', '/api/v1/query_range?{params}')\n"
                    "    r = c.getresponse(); r.read(); assert r.status == 200\n")
            cpu = time.process_time()
            client = await asyncio.create_subprocess_exec(sys.executable, "-c", loop)
            await client.wait()
            cpu = time.process_time() - cpu
            await q.stop()
            return cpu
        cpu = asyncio.run(run())
        skip = len(handled) // 5  # warm-up
        h = statistics.median(handled[skip:])
        f = statistics.median(fetched[skip:]) if fetched else 0.0
        print(f"{repo} {a.query} {a.hours} h: request {h * 1e3:.3f} ms, Series call "
              f"{f * 1e3:.3f} ms, the rest {(h - f) * 1e3:.3f} ms (medians); querier CPU "
              f"{cpu / a.n * 1e3:.3f} ms per query")


if __name__ == "__main__":
    main()
