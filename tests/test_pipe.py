"""The coalescing pipe to one peer: every item it takes gets exactly one result."""

from __future__ import annotations

import asyncio

from peergrid.invocation.pipe import Pipe
from peergrid.protocol import Code, Op, Result, Status


def idle_pipe(loop: asyncio.AbstractEventLoop) -> Pipe:
    """A pipe to a peer whose stream never opens (its sender waits on it for ever)."""

    async def never_opens() -> object:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return Pipe("peer:1", loop, never_opens, lambda: (1, "me"), 100, 2, 30.0, lambda version: None)


class Item:
    def __init__(self) -> None:
        self.op = Op(Code.GET, 0, "m", b"k")
        self.results: list[Result] = []

    def handle(self, result: Result) -> None:
        self.results.append(result)


def test_closing_a_pipe_whose_sender_has_not_started_yet_fails_what_it_holds() -> None:
    """The member drops a pipe (its peer left) right after the pipe's first item arrived: the
    sender task exists but never ran, so it cannot fail the item itself; close() must."""

    async def scenario() -> None:
        pipe = idle_pipe(asyncio.get_running_loop())
        item = Item()
        pipe.submit(item)
        await asyncio.sleep(0)  # the wake-up runs and creates the sender task, not started yet
        assert pipe._task is not None
        pipe.close()
        await asyncio.sleep(0.01)
        assert [r.status for r in item.results] == [Status.UNREACHABLE]
        assert item.results[0].found is False  # it was never sent: safe to retry, even a write

    asyncio.run(scenario())


def test_items_submitted_to_a_closed_pipe_fail_at_once() -> None:
    async def scenario() -> None:
        pipe = idle_pipe(asyncio.get_running_loop())
        pipe.close()
        item = Item()
        pipe.submit(item)
        await asyncio.sleep(0.01)
        assert [r.status for r in item.results] == [Status.UNREACHABLE]

    asyncio.run(scenario())
