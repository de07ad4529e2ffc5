"""How many partition transfers a member runs at once, and in which order.

A member copies partitions a few at a time (``TransferSlots(count)``), first come first served:
a join moves about 1/N of every map, and all at once would flood the loops and the network.
But until its copy has arrived, a partition's new owner cannot take writes to it, so a caller
writing to the last partition in the queue waited for the whole migration. A partition a
caller is waiting for is ``hurry``-ed: it goes before every other waiting transfer, and may
use one slot more than ``count``, so it starts at once unless another hurried one runs.

The same holds for copies a member sends: a write whose backup has no copy of the partition
yet (a newcomer's, during a join) waits for the owner to send it one, and that transfer is
hurried too. A member never fetches and sends one partition at once (it sends only what it
serves), so transfers are told apart by partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class TransferSlots:
    """``count`` transfers at a time, plus one for a hurried partition. Loop thread only."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._running = 0
        self._waiting: list[tuple[int | None, asyncio.Future[None]]] = []  # in arrival order
        self._hurried: set[int] = set()  # partitions a caller waits for, until they get a slot

    @contextlib.asynccontextmanager
    async def slot(self, p: int | None = None) -> AsyncIterator[None]:
        """Hold a slot for a transfer of partition ``p`` (None: one no caller can hurry)."""
        await self._acquire(p)
        try:
            yield
        finally:
            self._running -= 1
            self._grant()

    def hurry(self, p: int) -> None:
        """A caller waits for ``p``'s copy: its transfer, now or when it asks, goes first."""
        self._hurried.add(p)
        self._grant()

    def forget(self) -> None:
        """Drop every hurry (the partitions' owners changed)."""
        self._hurried.clear()

    def _limit(self, p: int | None) -> int:
        return self._count + 1 if p in self._hurried else self._count

    async def _acquire(self, p: int | None) -> None:
        entry = (p, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        self._grant()  # at once if it may run now: awaiting a done future does not yield
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry in self._waiting:
                self._waiting.remove(entry)
            elif not entry[1].cancelled():  # granted, then cancelled before it ran: give it back
                self._running -= 1
                self._grant()
            raise

    def _grant(self) -> None:
        """Start the waiting transfers that may run now: hurried ones first, then in order."""
        while self._waiting:
            entry = next((e for e in self._waiting if e[0] in self._hurried), self._waiting[0])
            p, future = entry
            if self._running >= self._limit(p):
                return
            self._waiting.remove(entry)
            if future.done():  # cancelled while it waited
                continue
            self._running += 1
            if p is not None:
                self._hurried.discard(p)
            future.set_result(None)
