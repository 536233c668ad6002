"""Error answers of the query API, diffed against Debian's Prometheus 2.42 run on a free port:
the same request must get the same status and the same JSON (errorType and error text).

Only requests where 2.42 itself answers sensibly are compared; where it overflows silently
(``time=1e18`` answers 200 with a garbage timestamp) tests/unit/test_query_api.py holds our 400.
A negative ``timeout`` is left out: 2.42 answers "in query queue" or "in query execution" by race.
"""
from __future__ import annotations

import asyncio
import shutil

import aiohttp
import pytest

from harness import PrometheusProcess
from querier.config import QueryConfig
from querier.server import Querier

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus package is not installed")

Q, QR = "/api/v1/query", "/api/v1/query_range"
REQUESTS = [
    (Q, {"query": "1", "timeout": "bogus"}),
    (Q, {"query": "1", "timeout": "1e300"}),
    (Q, {"query": "1", "timeout": "Inf"}),
    (Q, {"query": "1", "time": "bogus"}),
    (Q, {"query": "1", "time": "2020-01-01"}),
    (Q, {"query": "1", "time": "0x10"}),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "0"}),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "-1"}),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "NaN"}),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "Inf"}),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "-Inf"}),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "1e300"}),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "1e14"}),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "bogus"}),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "1.5m"}),
    (QR, {"query": "1", "start": "0", "end": "100000", "step": "1"}),
    (QR, {"query": "1", "start": "0", "end": "100", "step": "1e-6"}),
    (QR, {"query": "1", "start": "100", "end": "0", "step": "1"}),
    (QR, {"query": "1", "start": "", "end": "0", "step": "1"}),
    (QR, {"query": "1", "start": "0", "end": "bogus", "step": "1"}),
    ("/api/v1/series", {"match[]": "up", "start": "bogus"}),
    ("/api/v1/series", {"match[]": "up", "end": "bogus"}),
    ("/api/v1/labels", {"end": "bogus"}),
    ("/api/v1/label/job/values", {"start": "bogus"}),
]


async def _answers(base: str) -> list[tuple[int, dict]]:
    out = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for path, params in REQUESTS:
            async with http.get(base + path, params=params) as r:
                out.append((r.status, await r.json(content_type=None)))
    return out


def test_error_answers_equal_prometheus_242(tmp_path):
    prom = PrometheusProcess(tmp_path / "prom", "global:\n  scrape_interval: 1m\n").start()
    try:
        theirs = asyncio.run(_answers(f"http://127.0.0.1:{prom.port}"))
    finally:
        prom.stop()

    async def ours():
        q = Querier(QueryConfig(http_address="127.0.0.1:0"))
        await q.start()
        try:
            return await _answers(f"http://127.0.0.1:{q.port}")
        finally:
            await q.stop()
    mine = asyncio.run(ours())
    diffs = [(req, t, m) for req, t, m in zip(REQUESTS, theirs, mine) if t != m]
    assert not diffs, "\n".join(f"{req}:\n  prometheus {t}\n  promring   {m}" for req, t, m in diffs)
