"""The coalescing pipe to one peer: every item it takes gets exactly one result."""

from __future__ import annotations

import asyncio
import time

from peergrid.invocation.pipe import Pipe, submit_all
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


class AnsweringStream:
    """A stream that answers the frames ``answers(frame_number)`` allows, and records when each
    frame was sent."""

    def __init__(self, answers: object = lambda n: True) -> None:
        self.answers = answers
        self.sent: list[tuple[int, float]] = []  # (frame id, monotonic send time)
        self._replies: asyncio.Queue[tuple[int, int, list[Result]]] = asyncio.Queue()

    async def send(self, frame_id: int, table_version: int, sender: str, ops: list[Op]) -> None:
        self.sent.append((frame_id, time.monotonic()))
        if self.answers(len(self.sent)):  # type: ignore[operator]
            self._replies.put_nowait((frame_id, 1, [Result() for _ in ops]))

    async def receive(self) -> tuple[int, int, list[Result]]:
        return await self._replies.get()

    def cancel(self) -> None:
        pass


class TimedItem(Item):
    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    def handle(self, result: Result) -> None:
        self.at.append(time.monotonic())
        super().handle(result)


def pipe_on(stream: object, frame_timeout: float) -> Pipe:
    async def opens() -> object:
        return stream

    loop = asyncio.get_running_loop()
    return Pipe("peer:1", loop, opens, lambda: (1, "me"), 100, 2, frame_timeout, lambda version: None)  # type: ignore[arg-type]


async def until(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_a_busy_pipe_keeps_one_watchdog_rather_than_a_timer_per_frame() -> None:
    """Frames answered one after another: the watchdog armed by the first stays the only timer
    (a timer per frame costs a heap push and a cancel on every round trip)."""

    async def scenario() -> None:
        stream = AnsweringStream()
        pipe = pipe_on(stream, 30.0)
        items = []
        for _ in range(20):
            item = Item()
            pipe.submit(item)
            await until(lambda item=item: item.results)  # type: ignore[misc]
            items.append(item)
        assert len(stream.sent) == 20
        assert all([r.status for r in item.results] == [Status.OK] for item in items)
        watchdog = pipe._watchdog
        assert watchdog is not None
        for _ in range(5):
            item = Item()
            pipe.submit(item)
            await until(lambda item=item: item.results)  # type: ignore[misc]
        assert pipe._watchdog is watchdog
        pipe.close()
        assert pipe._watchdog is None

    asyncio.run(scenario())


def test_a_frame_left_unanswered_resets_the_pipe_once_its_own_timeout_passed() -> None:
    """The first frame is answered, the second never: the watchdog armed for the first finds
    the second younger than the timeout and waits for its deadline; then everything in flight
    fails as sent (it may have been applied) and later items go out on a new stream."""

    async def scenario() -> None:
        timeout = 0.3
        stream = AnsweringStream(lambda n: n != 2)
        pipe = pipe_on(stream, timeout)
        first = Item()
        pipe.submit(first)
        await until(lambda: first.results)
        await asyncio.sleep(timeout / 2)  # the second frame is sent well after the first
        second = TimedItem()
        pipe.submit(second)
        await until(lambda: second.results)
        _, sent = stream.sent[1]
        assert second.at[0] - sent >= timeout  # not reset at the first frame's deadline
        assert [r.status for r in second.results] == [Status.UNREACHABLE]
        assert second.results[0].found is True
        assert f"did not answer within {timeout}s" in second.results[0].message
        third = Item()
        pipe.submit(third)  # the pipe starts over
        await until(lambda: third.results)
        assert [r.status for r in third.results] == [Status.OK]
        pipe.close()

    asyncio.run(scenario())


def test_items_for_several_pipes_from_another_thread_wake_the_loop_once() -> None:
    """A get_all bound for two owners: both frames go out, after one call_soon_threadsafe."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        streams = [AnsweringStream(), AnsweringStream()]
        pipes = [pipe_on(stream, 30.0) for stream in streams]
        wakes = []
        threadsafe = loop.call_soon_threadsafe

        def counting(*args: object) -> object:
            if getattr(args[0], "__name__", "") in ("_kick", "_kick_all"):  # not the executor's own
                wakes.append(args)
            return threadsafe(*args)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        items = [[Item(), Item()], [Item()]]
        await loop.run_in_executor(None, submit_all, list(zip(pipes, items, strict=True)))
        await until(lambda: all(item.results for group in items for item in group))
        assert len(wakes) == 1
        assert [len(stream.sent) for stream in streams] == [1, 1]  # each pipe's items: one frame
        assert all([r.status for r in item.results] == [Status.OK] for group in items for item in group)
        for pipe in pipes:
            pipe.close()

    asyncio.run(scenario())


def test_an_idle_pipe_writes_a_frame_in_the_wake_up_itself() -> None:
    """Once its stream is open and its sender parked, a frame submitted from another thread is
    written in the wake-up callback, not one loop pass later in a task step; frames keep their
    order and every item gets its answer."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        writers: list[object] = []
        stream = AnsweringStream()
        send = stream.send

        async def recording(frame_id: int, table_version: int, sender: str, ops: list[Op]) -> None:
            writers.append(asyncio.current_task())
            await asyncio.sleep(0)  # a write that waits, as grpc's does
            await send(frame_id, table_version, sender, ops)

        stream.send = recording  # type: ignore[method-assign]
        pipe = pipe_on(stream, 30.0)
        first = Item()
        pipe.submit(first)  # the first frame: the sender task opens the stream and writes it
        await until(lambda: first.results)
        await until(lambda: pipe._waiter is not None)
        later = [Item() for _ in range(5)]
        for item in later:
            await loop.run_in_executor(None, pipe.submit, item)
            await until(lambda item=item: item.results)  # type: ignore[misc]
        assert writers[0] is pipe._task
        assert writers[1:] == [None] * 5  # written from the wake-up callback
        ids = [frame_id for frame_id, _ in stream.sent]  # unique in the process, in order
        assert ids == list(range(ids[0], ids[0] + 6))
        assert all([r.status for r in item.results] == [Status.OK] for item in [first, *later])
        pipe.close()

    asyncio.run(scenario())


def test_a_write_that_fails_outside_the_sender_task_fails_its_frame_and_the_pipe_starts_over() -> None:
    async def scenario() -> None:
        from peergrid.errors import PeerUnavailableError

        streams: list[AnsweringStream] = []

        async def opens() -> AnsweringStream:
            stream = AnsweringStream()
            if not streams:

                async def broken(frame_id: int, table_version: int, sender: str, ops: list[Op]) -> None:
                    if len(stream.sent) >= 1:
                        raise PeerUnavailableError("stream to peer:1 is closed", address="peer:1")
                    stream.sent.append((frame_id, time.monotonic()))
                    stream._replies.put_nowait((frame_id, 1, [Result() for _ in ops]))

                stream.send = broken  # type: ignore[method-assign]
            streams.append(stream)
            return stream

        loop = asyncio.get_running_loop()
        pipe = Pipe("peer:1", loop, opens, lambda: (1, "me"), 100, 2, 30.0, lambda version: None)
        first, second, third = Item(), Item(), Item()
        pipe.submit(first)
        await until(lambda: first.results and pipe._waiter is not None)
        await loop.run_in_executor(None, pipe.submit, second)  # written from the wake-up: fails
        await until(lambda: second.results)
        assert [r.status for r in second.results] == [Status.UNREACHABLE]
        assert second.results[0].found is True  # it may have reached the peer
        pipe.submit(third)
        await until(lambda: third.results)
        assert [r.status for r in third.results] == [Status.OK]
        assert len(streams) == 2
        pipe.close()

    asyncio.run(scenario())


def test_a_sender_started_with_nothing_to_send_still_opens_its_stream_for_later_items() -> None:
    """A wake-up whose items an earlier sender already sent starts a sender that parks before
    opening a stream; the next item must still go out."""

    async def scenario() -> None:
        stream = AnsweringStream()
        pipe = pipe_on(stream, 30.0)
        pipe._kick()  # a late wake-up: nothing queued
        await until(lambda: pipe._waiter is not None)
        item = Item()
        await asyncio.get_running_loop().run_in_executor(None, pipe.submit, item)
        await until(lambda: item.results)
        assert [r.status for r in item.results] == [Status.OK]
        pipe.close()

    asyncio.run(scenario())


class HeldStream:
    """A stream that records each frame's items and answers only when the test says so."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, list[Op]]] = []
        self._replies: asyncio.Queue[tuple[int, int, list[Result]] | None] = asyncio.Queue()

    async def send(self, frame_id: int, table_version: int, sender: str, ops: list[Op]) -> None:
        self.frames.append((frame_id, ops))

    def answer(self, frame_id: int, results: list[Result]) -> None:
        self._replies.put_nowait((frame_id, 1, results))

    def end(self) -> None:
        self._replies.put_nowait(None)

    async def receive(self) -> tuple[int, int, list[Result]] | None:
        return await self._replies.get()

    def cancel(self) -> None:
        pass


def test_a_result_that_comes_with_a_backup_copy_is_taken_once_and_can_end_its_frame() -> None:
    """A write whose caller's member is its backup gets its result with the copy
    (``Pipe.forwarded``): the item takes it once, only within the owner's lease and for the
    partition it wrote; the owner's answer, if it comes too, does not reach it again; a frame
    all of whose items took theirs ends without an answer; a broken stream fails only the
    items still waiting."""

    async def scenario() -> None:
        stream = HeldStream()
        pipe = pipe_on(stream, 30.0)
        a, b = Item(), Item()
        pipe.submit_many([a, b])
        await until(lambda: len(stream.frames) == 1)
        first = stream.frames[0][0]
        copy = Result(Status.OK, b"old", True, version=7)
        assert pipe.forwarded(first, 0, 1, copy, 5.0) is False  # not the item's partition
        assert pipe.forwarded(first, 0, 0, copy, 0.0) is False  # the owner's lease may be over
        assert pipe.forwarded(first, 0, 0, copy, 5.0) is True
        assert a.results == [copy]
        assert pipe.forwarded(first, 0, 0, copy, 5.0) is False  # taken already
        assert first in pipe._inflight  # b still waits for the owner's answer
        stream.answer(first, [Result(Status.INDETERMINATE), Result(Status.OK, b"b")])
        await until(lambda: b.results)
        assert a.results == [copy]
        assert [r.value for r in b.results] == [b"b"]
        assert not pipe._inflight
        assert not pipe._forwarded

        c = Item()
        pipe.submit(c)
        await until(lambda: len(stream.frames) == 2)
        second = stream.frames[1][0]
        assert pipe.forwarded(second, 0, 0, copy, 5.0) is True
        assert not pipe._inflight  # every item answered: the frame ended with the copy
        stream.answer(second, [Result(Status.ERROR)])  # an answer sent anyway is ignored
        assert pipe.forwarded(second, 0, 0, copy, 5.0) is False

        d, e = Item(), Item()
        pipe.submit_many([d, e])
        await until(lambda: len(stream.frames) == 3)
        assert pipe.forwarded(stream.frames[2][0], 1, 0, copy, 5.0) is True
        stream.end()  # the stream breaks: d was sent and gets UNREACHABLE, e keeps its copy's
        await until(lambda: d.results)
        assert [r.status for r in d.results] == [Status.UNREACHABLE]
        assert e.results == [copy]
        assert c.results == [copy]
        pipe.close()

    asyncio.run(scenario())


def test_results_from_copies_and_an_answer_in_parts_end_a_frame_once() -> None:
    """An answer that comes in parts (it did not fit one message) and results taken from copies
    share a frame: each item gets one result, and the frame ends with the last of them, whichever
    way it came."""

    async def scenario() -> None:
        stream = HeldStream()
        pipe = pipe_on(stream, 30.0)
        copy = Result(Status.OK, b"copy", True, version=3)
        items = [Item() for _ in range(4)]
        pipe.submit_many(items)
        await until(lambda: len(stream.frames) == 1)
        frame = stream.frames[0][0]
        assert pipe.forwarded(frame, 1, 0, copy, 5.0)
        stream.answer(frame, [Result(Status.OK, b"a0"), Result(Status.OK, b"a1")])  # the first part
        await until(lambda: items[0].results)
        assert not pipe.forwarded(frame, 0, 0, copy, 5.0)  # answered already
        assert pipe.forwarded(frame, 3, 0, copy, 5.0)
        assert frame in pipe._inflight  # item 2 still waits
        stream.answer(frame, [Result(Status.OK, b"a2"), Result(Status.OK, b"a3")])  # the rest
        await until(lambda: items[2].results)
        assert [[r.value for r in item.results] for item in items] == [[b"a0"], [b"copy"], [b"a2"], [b"copy"]]
        assert not pipe._inflight
        assert not pipe._forwarded

        more = [Item() for _ in range(3)]
        pipe.submit_many(more)
        await until(lambda: len(stream.frames) == 2)
        frame = stream.frames[1][0]
        stream.answer(frame, [Result(Status.OK, b"b0")])  # a first part, then copies for the rest
        await until(lambda: more[0].results)
        assert pipe.forwarded(frame, 2, 0, copy, 5.0)
        assert frame in pipe._inflight
        assert pipe.forwarded(frame, 1, 0, copy, 5.0)
        assert not pipe._inflight  # the last result came with a copy: the frame ended
        assert not pipe._forwarded
        assert [[r.value for r in item.results] for item in more] == [[b"b0"], [b"copy"], [b"copy"]]
        pipe.close()

    asyncio.run(scenario())
