"""The order in which a member runs its partition transfers (``TransferSlots``)."""

from __future__ import annotations

import asyncio

from peergrid.replication.slots import TransferSlots


async def _started(slots: TransferSlots, p: int | None, log: list[int | None], done: asyncio.Event) -> None:
    async with slots.slot(p):
        log.append(p)
        await done.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_transfers_run_count_at_a_time_in_arrival_order() -> None:
    async def run() -> list[int | None]:
        slots, log, done = TransferSlots(2), [], asyncio.Event()
        tasks = [asyncio.create_task(_started(slots, p, log, done)) for p in (1, 2, 3, 4, None)]
        await _settle()
        assert log == [1, 2]
        done.set()
        await asyncio.gather(*tasks)
        return log

    assert asyncio.run(run()) == [1, 2, 3, 4, None]


def test_a_hurried_partition_goes_first_in_a_slot_of_its_own() -> None:
    async def run() -> None:
        slots, log, done = TransferSlots(2), [], asyncio.Event()
        tasks = [asyncio.create_task(_started(slots, p, log, done)) for p in (1, 2, 3, 4, 5)]
        await _settle()
        slots.hurry(5)
        await _settle()
        assert log == [1, 2, 5]  # at once, beside the two running
        slots.hurry(4)
        await _settle()
        assert log == [1, 2, 5]  # one extra slot only: it waits, first in line
        done.set()
        await asyncio.gather(*tasks)
        assert log == [1, 2, 5, 4, 3]

    asyncio.run(run())


def test_a_partition_hurried_before_it_asks_goes_first_when_it_does() -> None:
    async def run() -> None:
        slots, log, done = TransferSlots(1), [], asyncio.Event()
        slots.hurry(7)
        first = asyncio.create_task(_started(slots, 1, log, done))
        await _settle()
        second = asyncio.create_task(_started(slots, 2, log, done))
        hurried = asyncio.create_task(_started(slots, 7, log, done))
        await _settle()
        assert log == [1, 7]
        slots.forget()  # a new table: the hurries are dropped, not the slots
        done.set()
        await asyncio.gather(first, second, hurried)
        assert log == [1, 7, 2]

    asyncio.run(run())


def test_a_cancelled_waiter_frees_its_place_and_a_granted_one_its_slot() -> None:
    async def run() -> None:
        slots, log, done = TransferSlots(1), [], asyncio.Event()
        held = slots.slot()
        await held.__aenter__()
        waiting = asyncio.create_task(_started(slots, 1, log, done))
        granted = asyncio.create_task(_started(slots, 2, log, done))
        after = asyncio.create_task(_started(slots, 3, log, done))
        await _settle()
        waiting.cancel()  # while it waits: its place goes
        await asyncio.gather(waiting, return_exceptions=True)
        await held.__aexit__(None, None, None)  # grants the slot to 2, which has not run yet
        granted.cancel()  # so it gives the slot back
        done.set()
        await asyncio.gather(granted, after, return_exceptions=True)
        assert log == [3]

    asyncio.run(run())
