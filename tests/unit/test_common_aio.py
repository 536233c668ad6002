"""common.aio.gather_eager: gather's results and errors, without Tasks for coroutines that
never wait."""
from __future__ import annotations

import asyncio

import pytest

from common.aio import gather_eager


async def _now(v: int) -> int:
    return v


async def _later(v: int, delay: float = 0.01) -> int:
    await asyncio.sleep(delay)
    await asyncio.sleep(0)
    return v * 10


def _count_tasks(loop: asyncio.AbstractEventLoop) -> list[int]:
    made = [0]

    def factory(loop, coro, **kw):
        made[0] += 1
        return asyncio.Task(coro, loop=loop, **kw)
    loop.set_task_factory(factory)
    return made


def test_results_in_order_and_tasks_only_for_coroutines_that_wait():
    async def main():
        made = _count_tasks(asyncio.get_running_loop())
        assert await gather_eager([_now(1), _now(2), _now(3)]) == [1, 2, 3]
        assert made[0] == 0
        assert await gather_eager([_now(1), _later(2), _now(3), _later(4, 0)]) == [1, 20, 3, 40]
        assert made[0] == 2
        assert await gather_eager([]) == []
    asyncio.run(main())


def test_error_cancels_the_rest_and_closes_unstarted():
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.append(True)

    async def boom():
        raise KeyError("x")

    async def boom_later():
        await asyncio.sleep(0.01)
        raise ValueError("late")

    async def main():
        never = _now(5)
        with pytest.raises(KeyError):
            await gather_eager([slow(), boom(), never])
        assert cancelled == [True]
        assert never.cr_frame is None  # closed, not left "never awaited"
        with pytest.raises(ValueError):
            await gather_eager([slow(), boom_later()])
        assert cancelled == [True, True]
    asyncio.run(main())


def test_cancelling_the_caller_reaches_suspended_coroutines():
    seen = []

    async def slow():
        try:
            await asyncio.sleep(30)
        finally:
            seen.append("ended")

    async def main():
        t = asyncio.create_task(gather_eager([slow(), _now(1)]))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert seen == ["ended"]
    asyncio.run(main())


def test_values_and_exceptions_pass_through_after_suspension():
    async def inner():
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, fut.set_result, 7)
        v = await fut
        try:
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        except asyncio.TimeoutError:
            v += 1
        return v

    async def main():
        assert await gather_eager([inner(), inner()]) == [8, 8]
    asyncio.run(main())
