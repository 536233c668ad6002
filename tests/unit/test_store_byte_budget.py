"""store.ranges.ByteBudget: the bytes of fetched ranges a store holds at once stay within its
limit however many reads run; a range bigger than the whole budget goes alone; a read
cancelled while it waits takes nothing and holds up no one."""
from __future__ import annotations

import asyncio

from store.ranges import ByteBudget


def test_reads_wait_until_their_range_fits_and_a_bigger_one_goes_alone() -> None:
    async def body() -> None:
        budget = ByteBudget(100)
        held: list[int] = []

        async def read(n: int) -> None:
            got = await budget.acquire(n)
            held.append(budget.used)
            await asyncio.sleep(0.001)
            budget.release(got)

        await asyncio.gather(*(read(n) for n in (40, 40, 40, 70, 30, 250, 10, 60)))
        assert budget.used == 0 and budget.peak <= 100
        assert max(held) == 100  # 250 went alone, counted as the whole budget
        assert len(held) == 8

    asyncio.run(body())


def test_a_read_cancelled_while_waiting_takes_nothing() -> None:
    async def body() -> None:
        budget = ByteBudget(100)
        first = await budget.acquire(80)
        waiting = asyncio.ensure_future(budget.acquire(50))
        other = asyncio.ensure_future(budget.acquire(20))
        await asyncio.sleep(0)
        assert budget.used == 100 and not waiting.done()  # 20 fit beside the 80
        waiting.cancel()
        await asyncio.sleep(0)
        budget.release(first)
        assert await other == 20
        assert budget.used == 20 and budget._waiters == []
        budget.release(20)
        assert await budget.acquire(100) == 100

    asyncio.run(body())
