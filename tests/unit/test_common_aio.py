"""common.aio.gather_eager: gather's results and errors, without Tasks for coroutines that
never wait, on asyncio's loop and on uvloop's (common.aio.run, what the servers run on); and
common.eagerstep on uvloop's loop, which has no ready queue: the step stays queued."""
from __future__ import annotations

import asyncio

import pytest
import uvloop

from common import aio
from common.aio import gather_eager
from common.eagerstep import run_first_step, steps_taken, take_step


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Runs a coroutine to its end on one of the two loops."""
    return asyncio.run if request.param == "asyncio" else aio.run


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


def test_results_in_order_and_tasks_only_for_coroutines_that_wait(run):
    async def main():
        made = _count_tasks(asyncio.get_running_loop())
        assert await gather_eager([_now(1), _now(2), _now(3)]) == [1, 2, 3]
        assert made[0] == 0
        assert await gather_eager([_now(1), _later(2), _now(3), _later(4, 0)]) == [1, 20, 3, 40]
        assert made[0] == 2
        assert await gather_eager([]) == []
    run(main())


def test_error_cancels_the_rest_and_closes_unstarted(run):
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
    run(main())


def test_cancelling_the_caller_reaches_suspended_coroutines(run):
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
    run(main())


def test_values_and_exceptions_pass_through_after_suspension(run):
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
    run(main())


def test_run_is_on_uvloop_and_returns_the_result():
    async def main():
        return type(asyncio.get_running_loop())
    assert aio.run(main()) is uvloop.Loop
    assert isinstance(aio.new_event_loop(), uvloop.Loop)


def test_eager_step_leaves_uvloop_steps_queued():
    steps = []

    async def job():
        steps.append("first")
        await asyncio.sleep(0)
        return 3

    async def main():
        loop = asyncio.get_running_loop()
        task = loop.create_task(job())
        assert take_step(loop, task) is None  # no ready queue to take it from
        run_first_step(loop, task)
        assert steps == []  # not run by hand: the loop runs it
        assert await task == 3
        assert steps == ["first"]
    aio.run(main())


def test_steps_are_taken_on_asyncio_s_loop_only():
    """steps_taken (asked once per connection) says whether take_step can ever take a step:
    on asyncio's loop, not on uvloop's."""
    async def main():
        return steps_taken(asyncio.get_running_loop())
    assert asyncio.run(main()) is True
    assert aio.run(main()) is False


def test_current_task_of_a_given_loop_is_asyncio_s_on_both_loops():
    from common.eagerstep import current_task

    async def main():
        loop = asyncio.get_running_loop()
        return current_task(loop) is asyncio.current_task(loop) is not None

    assert asyncio.run(main()) and aio.run(main())
    idle = asyncio.new_event_loop()
    try:
        assert current_task(idle) is None  # no task running there
    finally:
        idle.close()
