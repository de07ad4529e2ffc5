"""The coalescing pipe to one peer: every item it takes gets exactly one result."""

from __future__ import annotations

import asyncio
import time

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


class RecordingStream:
    """A stream that records what is sent and never answers."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    async def send(self, frame_id: int, table_version: int, sender: str, ops: list[Op]) -> None:
        self.ops.extend(ops)

    async def receive(self) -> None:
        await asyncio.Event().wait()

    def cancel(self) -> None:
        pass


def test_an_item_whose_caller_gave_up_is_never_sent() -> None:
    """The peer could not be reached (a cut) while an item waited; when it can again, the item's
    deadline has passed and its caller gave up: sent now, a lock would be granted to no one."""

    async def scenario() -> None:
        healed = asyncio.Event()
        stream = RecordingStream()

        async def opens_once_healed() -> RecordingStream:
            await healed.wait()
            return stream

        pipe = Pipe(
            "peer:1",
            asyncio.get_running_loop(),
            opens_once_healed,
            lambda: (1, "me"),
            100,
            2,
            30.0,
            lambda version: None,
        )
        late, fresh = Item(), Item()
        late.op = Op(Code.LOCK, 0, "m", b"k")
        now = time.monotonic()
        late.deadline, fresh.deadline = now + 0.05, now + 60  # type: ignore[attr-defined]
        pipe.submit(late)
        pipe.submit(fresh)
        await asyncio.sleep(0.1)  # the late one's caller gives up
        healed.set()
        for _ in range(100):
            if late.results and stream.ops:
                break
            await asyncio.sleep(0.01)
        assert [r.status for r in late.results] == [Status.TIMEOUT]
        assert [op.code for op in stream.ops] == [Code.GET]
        pipe.close()

    asyncio.run(scenario())
