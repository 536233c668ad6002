"""StoreSet._fan's one-store step (one live endpoint, none down, no response timeout: its call
awaited and its result returned without the loop over results) against the general path
(_gathered, taken here with a response timeout no call reaches): the same series, warnings,
errors and endpoint health for an answer, a refused call, an unreachable store and a
cancellation."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from querier.fanout import SelectOptions, StoreSet, StoreUnavailable
from receiver.tsdb.labels import Matcher, MatchType
from storeapi.client import RawSeries, SeriesResult
from storeapi.h2client import RpcError

MS = [Matcher(MatchType.EQ, "__name__", "x")]
ANSWERS = {
    "series": SeriesResult([RawSeries((("__name__", "x"),), [(0, 1, b"\0\0")], False)],
                           ["a store warning"]),
    "refused": RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many samples"),
    "unreachable": RpcError(grpc.StatusCode.UNAVAILABLE, "connect: refused"),
    "not an rpc error": ValueError("bad frame"),
}


async def _fetch(answer, general: bool, partial: bool) -> tuple:
    stores = StoreSet(["127.0.0.1:1"])
    if general:
        stores.response_timeout_s = 3600.0  # (_gathered: no call lasts that long)
    called: list[dict] = []

    async def series_with_warnings(*args, **kw):
        called.append({"args": args, **kw})
        if isinstance(answer, BaseException):
            raise answer
        return answer

    stores.clients[0].series_with_warnings = series_with_warnings
    warnings: list[str] = []
    try:
        out = await stores.series(0, 10, MS, opts=SelectOptions(partial_response=partial),
                                  warnings=warnings, until=None)
    except StoreUnavailable as e:
        out = f"StoreUnavailable: {e}"
    return out, warnings, called, stores.health.status["127.0.0.1:1"].up


@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_one_store_step_gives_what_the_general_path_gives(name, partial):
    run = lambda general: asyncio.run(_fetch(ANSWERS[name], general, partial))  # noqa: E731
    fast, general = run(False), run(True)
    assert fast == general
    out, warnings, called, up = fast
    assert called[0]["args"] == (0, 10, MS) and called[0]["partial_response"] is partial
    if name == "series":
        assert out == ANSWERS["series"].series and warnings == ["a store warning"]
    elif partial:
        assert out == [] and warnings[0].startswith("endpoint 127.0.0.1:1: ")
    else:
        assert out.startswith("StoreUnavailable: endpoint 127.0.0.1:1: ")
    assert (up is False) == (name == "unreachable")


def test_a_cancelled_store_call_is_raised_either_way():
    for general in (False, True):
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(_fetch(asyncio.CancelledError(), general, True))
