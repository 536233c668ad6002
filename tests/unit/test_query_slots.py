"""--query.max-concurrent's slots: the uncontended take and give-back (_Slots.take_now,
give_back) behave as asyncio.Semaphore's acquire() and release() do."""
from __future__ import annotations

import asyncio

from querier.api import _Slots


def test_take_now_takes_only_what_acquire_would_take_at_once_and_give_back_wakes_waiters():
    async def scenario() -> None:
        slots = _Slots(2)
        assert slots.take_now() and slots.take_now()
        assert not slots.take_now() and slots.locked() and slots._value == 0
        waiter = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        assert not waiter.done()
        slots.give_back()  # the freed slot goes to the waiter, not to a take_now
        assert not slots.take_now()
        await asyncio.sleep(0)
        assert waiter.done() and slots._value == 0
        slots.give_back()
        assert slots._value == 1 and not slots.locked()
        slots.release()  # the two kinds of release mix
        assert slots._value == 2 and slots.take_now() and slots._value == 1

    asyncio.run(scenario())


def test_take_now_leaves_a_slot_to_a_queued_waiter_and_skips_a_cancelled_one():
    async def scenario() -> None:
        slots = _Slots(1)
        assert slots.take_now()
        first = asyncio.ensure_future(slots.acquire())
        second = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        slots.give_back()  # woken: the second waiter, the cancelled one skipped
        await asyncio.sleep(0)
        assert second.done() and slots._value == 0 and not slots._waiters
        slots.give_back()
        assert slots.take_now() and not slots.take_now()

    asyncio.run(scenario())
