"""The running-loop lookups of a small query's path (issue 13): on Python 3.11 each
``asyncio.get_running_loop()`` -- also the one inside ``asyncio.current_task()`` without its
loop -- is a getpid() system call, paid with cold caches at the start of every dashboard query.
The query path keeps its loop instead (the API the one the querier started on)."""
from __future__ import annotations

import asyncio
import collections
import sys
from pathlib import Path

from querier_cluster import cluster, run

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000


def _caller() -> str:
    """The innermost promring source file (tests excluded) on the stack, relative to REPO."""
    f = sys._getframe(2)
    while f is not None:
        path = Path(f.f_code.co_filename)
        if REPO in path.parents and "tests" not in path.relative_to(REPO).parts:
            return str(path.relative_to(REPO))
        f = f.f_back
    return ""


def test_a_small_query_looks_up_no_running_loop(tmp_path, monkeypatch):
    lookups: collections.Counter = collections.Counter()
    real = asyncio.events.get_running_loop

    def counted():
        lookups[_caller()] += 1
        return real()

    async def go():
        async with cluster(tmp_path) as c:
            params = dict(query='m{i="2"}', start=str(T0 / 1000), end=str(T0 / 1000 + 1800),
                          step="15")
            for _ in range(3):  # connections made, caches filled
                assert (await c.get("/api/v1/query_range", **params))[0] == 200
            monkeypatch.setattr(asyncio, "get_running_loop", counted)
            monkeypatch.setattr(asyncio.events, "get_running_loop", counted)
            try:
                for _ in range(5):
                    assert (await c.get("/api/v1/query_range", **params))[0] == 200
            finally:
                monkeypatch.undo()
            assert c.querier.front.answered >= 5  # the fast front answered them
    run(go())
    lookups.pop("", None)  # the test's HTTP client
    assert not lookups, lookups
