"""A task's step run in the callback that queued it, not one event-loop iteration later.

asyncio runs a new task's first step, and a waiting task's wake-up, in the loop's next
iteration: an epoll_wait and the loop's bookkeeping more per step, each on cold CPU caches
when the process was idle (a small query paid four iterations: HTTP request read, task
start, store answer read, task wake-up). Python 3.12's eager tasks run the first step at
once; this does it by hand on 3.11's loop, for both: the step's handle is taken off the
loop's ready queue right after it was queued, and run by its caller once that is at a safe
point. The task stays a real Task (current_task, cancel, asyncio.timeout as ever). Steps are
only taken from plain callbacks (no task running: a task never steps inside another), and a
loop that queues differently keeps its steps where they are: uvloop's, which the servers run
on where it is installed (common.aio.new_event_loop), has no ready queue to take them from,
so there this does nothing and a step costs one pass of its loop in C.
"""
from __future__ import annotations

import asyncio
from asyncio import tasks

_CURRENT_TASKS: dict | None = getattr(tasks, "_current_tasks", None)


# current_task(loop): asyncio.current_task(loop) for a given loop (never None), in one C call
# (3.11's is a Python function around this lookup)
current_task = _CURRENT_TASKS.get if _CURRENT_TASKS is not None else asyncio.current_task


def take_step(loop: asyncio.AbstractEventLoop, task: asyncio.Task | None = None
              ) -> asyncio.Handle | None:
    """The handle ``loop`` queued last, taken off its ready queue when it is a step of a Task
    (of ``task`` when given) and no task is running now; else None, and it stays queued. The
    caller must run it (``handle._run()``) soon, exactly once, outside any task."""
    ready = getattr(loop, "_ready", None)
    if not ready or _CURRENT_TASKS is None or _CURRENT_TASKS.get(loop) is not None:
        return None
    owner = getattr(ready[-1]._callback, "__self__", None)
    if owner is not task if task is not None else not isinstance(owner, asyncio.Task):
        return None
    return ready.pop()


def steps_taken(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether take_step may ever take a step of ``loop``'s: it has a ready queue (uvloop's
    has none). For a caller that asks per connection, not per step."""
    return _CURRENT_TASKS is not None and getattr(loop, "_ready", None) is not None


def run_first_step(loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
    """Take the just created ``task``'s first step now (when take_step allows)."""
    step = take_step(loop, task)
    if step is not None:
        step._run()
