"""Small asyncio helpers shared by components."""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop promring's processes run on: uvloop's where it is installed (a
    dependency; libuv's loop in C), else asyncio's. A small query is mostly wake-ups, socket
    reads and writes and a few callbacks; on a process whose caches cooled while it idled
    (every query of a lightly loaded server), asyncio's loop pays for that in Python
    (_run_once, the selector, the transports' read and write paths) and uvloop's in a few
    C calls. common.eagerstep leaves a uvloop loop's steps queued (it has no ready queue to
    take them from), where a step costs little."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on new_event_loop's loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has finished unwinding."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


class _Resumed:
    """Awaitable that continues a coroutine already started by hand and suspended on
    ``first`` (what its ``send`` yielded): each value is passed up to the running Task, each
    resumption (or thrown exception, e.g. cancellation) passed back down."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, T], first: Any) -> None:
        self.coro, self.first = coro, first

    def __await__(self) -> Generator[Any, None, T]:
        coro, fut = self.coro, self.first
        while True:
            try:
                yield fut
            except BaseException as e:  # noqa: BLE001 -- handed to the coroutine
                try:
                    fut = coro.throw(e)
                except StopIteration as s:
                    return s.value
            else:
                try:
                    fut = coro.send(None)
                except StopIteration as s:
                    return s.value


async def _resume(coro: Coroutine[Any, Any, T], first: Any) -> T:
    return await _Resumed(coro, first)


async def gather_eager(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """``asyncio.gather`` of coroutines, results in order, but each is first run inline up to
    its first real suspension (Python 3.12's eager tasks): one that finishes without waiting
    on I/O (e.g. a read served from a cache) costs no Task and no event-loop round trip. Only
    those that suspend become Tasks; if any coroutine fails (or the caller is cancelled), the
    still-running ones are cancelled and ended, and the first error is raised."""
    todo = list(coros)
    results: list[Any] = []
    pending: list[tuple[int, asyncio.Task[T]]] = []
    started: list[Coroutine[Any, Any, T]] = []
    try:
        for i, coro in enumerate(todo):
            try:
                first = coro.send(None)
            except StopIteration as s:
                results.append(s.value)
                continue
            results.append(None)
            started.append(coro)
            pending.append((i, asyncio.ensure_future(_resume(coro, first))))
        if pending:
            done = await asyncio.gather(*(t for _, t in pending))
            for (i, _), v in zip(pending, done):
                results[i] = v
    except BaseException:
        for coro in todo[len(results):]:
            coro.close()  # never started
        for _, t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*(t for _, t in pending), return_exceptions=True)
        for coro in started:
            coro.close()  # one whose Task was cancelled before its first step is still suspended
        raise
    return results
