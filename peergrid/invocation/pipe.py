"""A coalescing pipe to one peer: a queue, drained into frames on one stream.

Callers on any thread append operations; a sender on the member's loop writes
whatever has gathered as one frame, while at most ``max_inflight_frames``
frames await their results. The sender task opens the stream; after that the
frames are written from the wake-up callbacks themselves (``_pump``), and one
watchdog per pipe enforces the frame timeout. Under load the frames grow, so the per-operation
cost approaches a batch's (~7 us a key) rather than a call's (~300 us). At
rest, an operation goes out alone at once.

Items are objects with an ``op`` and a ``handle(result)`` method; ``handle``
runs on the loop thread exactly once. When the stream breaks, items already
sent get ``Status.UNREACHABLE`` with ``found=True`` (they may have been
applied) and queued ones with ``found=False`` (they were not). An item with a
``deadline`` (monotonic) that passed while it waited in the queue (the peer
could not be reached: a cut, a pause) is never sent: its caller has given up,
and an operation applied after that (a lock granted to a holder that gave up)
would take effect behind everyone's back. It gets ``Status.TIMEOUT``.

A frame stays under the transport's message limit (``max_bytes``): a batch of
large values goes out in as many frames as it needs. Its answer may come back
in several messages (``transport.frames.replies_to_pb``), results in order:
each item is handled as its result arrives, the frame ends with the last.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol

from peergrid.config import CLOCK_DRIFT
from peergrid.errors import PeerGridError
from peergrid.protocol import Code, Op, Result, Status

log = logging.getLogger("peergrid.invocation")

#: Frame ids, unique in the process (not per pipe): a write's result that comes with this
#: member's backup copy of it names its frame by id (``Pipe.forwarded``), and a pipe made anew
#: (the peer left and came back) must not take one meant for a frame of the pipe before it.
_FRAME_IDS = itertools.count(1)

#: The keys of a GET_MANY op that cost its owner about what one op of a frame does (a key read
#: and its share of the packed answer, against an op's decode, checks and result).
KEYS_PER_OP = 4


class _Taken:
    """The items of a frame in flight that took their result from a backup copy
    (``Pipe.forwarded``), and how many of its items still wait for one."""

    __slots__ = ("indexes", "left")

    def __init__(self, left: int) -> None:
        self.indexes: set[int] = set()
        self.left = left


class Item(Protocol):
    """Something to send: an operation and where its result goes."""

    op: Op

    def handle(self, result: Result) -> None: ...


class Stream(Protocol):
    """The transport's frame stream (``peergrid.transport.FrameStream``)."""

    async def send(self, frame_id: int, table_version: int, sender: str, ops: list[Op]) -> None: ...
    async def receive(self) -> tuple[int, int, list[Result]] | None: ...
    def cancel(self) -> None: ...


def _unreachable(sent: bool, why: str) -> Result:
    return Result(Status.UNREACHABLE, found=sent, message=why)


class Pipe:
    """Operations bound for one peer, coalesced into frames on one stream."""

    def __init__(
        self,
        address: str,
        loop: asyncio.AbstractEventLoop,
        open_stream: Callable[[], Awaitable[Stream]],
        frame_header: Callable[[], tuple[int, str]],
        max_ops: int,
        max_inflight: int,
        frame_timeout: float,
        on_table_version: Callable[[int], None],
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.address = address
        self._loop = loop
        self._open_stream = open_stream
        self._frame_header = frame_header  # -> (table version, sender uuid)
        self._max_ops = max_ops
        self._max_inflight = max_inflight
        self._frame_timeout = frame_timeout
        self._on_table_version = on_table_version
        # The bytes of data one frame may carry: the message limit less room for everything else
        # (ids, codes, partitions, names and varints: a few bytes an op, more for effects).
        self._max_bytes = max(1, max_bytes - 64 * 1024 - 64 * max_ops)
        self._received: dict[int, int] = {}  # frame id -> results received so far, while partial
        # frame id -> the items that took their result from a backup copy (``forwarded``)
        self._forwarded: dict[int, _Taken] = {}
        self._queue: collections.deque[Item] = collections.deque()
        self._signalled = False  # a wake-up is scheduled on the loop
        self._waiter: asyncio.Future[None] | None = None  # the idle sender task parks on it
        self._stream: Stream | None = None  # the sender task's open stream
        self._writing = False  # a frame's write to _stream is under way (one at a time)
        # Frames awaiting their answers, oldest first: frame id -> (items, monotonic send time).
        self._inflight: dict[int, tuple[list[Item], float]] = {}
        # One watchdog per pipe, not a timer per frame: armed while frames are in flight, it
        # fires at the oldest frame's deadline (see _watch).
        self._watchdog: asyncio.TimerHandle | None = None
        self._ids = _FRAME_IDS
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._reset_reason = "the pipe was closed"
        self.frames_sent = 0  # for tests and statistics
        self.legacy = False  # the peer answered GET_MANY as an unknown op: get_all asks key by key

    # ---------------------------------------------------------------- any thread
    def submit(self, item: Item) -> None:
        """Queue one item (any thread)."""
        self._queue.append(item)
        self._signal()

    def submit_many(self, items: Iterable[Item]) -> None:
        """Queue items that should travel together (any thread)."""
        self._queue.extend(items)
        self._signal()

    def _signal(self) -> None:
        # The flag is cleared on the loop before the sender drains, so an item
        # appended before the clear is drained, and one appended after it sees
        # the flag down and schedules another wake-up.
        # On the loop thread (backups and invalidations an owner sends while it runs a frame)
        # no self-pipe write is needed: the sender is started, or the write made, from a
        # callback behind the running one, so whatever else that callback submits travels in
        # the same frame. A closed pipe fails its items from a callback, never inside the
        # submitter's call.
        if asyncio._get_running_loop() is self._loop and not self._closed:
            if self._task is None:
                self._task = self._loop.create_task(self._run())
            else:
                self._loop.call_soon(self._wake)  # after the running callback: one frame for all
            return
        if not self._signalled:
            self._signalled = True
            try:
                if asyncio._get_running_loop() is self._loop:
                    self._loop.call_soon(self._kick)
                else:
                    self._loop.call_soon_threadsafe(self._kick)
            except RuntimeError:  # the loop is closed: the member is gone
                self._fail_queued("the member is shut down")

    # ---------------------------------------------------------------- loop thread
    def _kick(self) -> None:
        self._signalled = False
        if self._closed:
            self._fail_queued("the peer left the cluster")
            return
        if self._task is None:
            self._task = self._loop.create_task(self._run())
        self._wake()

    def _wake(self) -> None:
        # While the sender task is busy (opening the stream, writing) it looks at the queue again
        # before it parks; once parked, with its stream open, frames are written from here: the
        # write starts in this very callback, not in a task step one loop pass later.
        # A task parked before it opened a stream (started by a wake-up whose items an earlier
        # task had sent) is woken to open one.
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._stream is None:
            waiter.set_result(None)
        else:
            self._pump()

    def _pump(self) -> None:
        stream = self._stream
        while (
            stream is not None
            and not self._writing
            and self._queue
            and len(self._inflight) < self._max_inflight
            and not self._closed
        ):
            self._writing = True
            if not self._step(self._send_frame(stream), stream):
                return  # the write completes later, and pumps again

    def _step(self, write: Coroutine[Any, None, None], stream: Stream) -> bool:
        """Run ``write`` (a ``_send_frame``) on until it waits or ends, as a task's step would;
        True once it ended and the pump may go on."""
        try:
            waiting = write.send(None)
        except StopIteration:
            if stream is self._stream:
                self._writing = False
            return True
        except (Exception, asyncio.CancelledError) as exc:
            if stream is self._stream:  # else the stream was abandoned already
                self._writing = False
                if not isinstance(exc, PeerGridError | asyncio.CancelledError):
                    log.exception("pipe to %s failed", self.address)
                self._reset(f"{exc}" if isinstance(exc, PeerGridError) else f"write failed: {exc!r}")
            return False
        if waiting is None:  # a bare yield: go on in the next pass
            self._loop.call_soon(self._resume, write, stream)
        else:
            waiting._asyncio_future_blocking = False
            waiting.add_done_callback(lambda _: self._resume(write, stream))
        return False

    def _resume(self, write: Coroutine[Any, None, None], stream: Stream) -> None:
        if self._step(write, stream):
            self._pump()

    async def _run(self) -> None:
        stream: Stream | None = None
        reader: asyncio.Task[None] | None = None
        try:
            while not self._closed:
                if not self._queue or len(self._inflight) >= self._max_inflight or self._writing:
                    # Parked: with a stream open, _wake writes the frames from now on.
                    self._waiter = self._loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                    continue
                if stream is None:
                    stream = self._stream = await self._open_stream()
                    reader = self._loop.create_task(self._read(stream))
                self._writing = True
                try:
                    await self._send_frame(stream)
                finally:
                    self._writing = False
        except PeerGridError as exc:
            self._broken(f"{exc}")
        except asyncio.CancelledError:
            self._broken(self._reset_reason)
            if self._closed:
                raise
        except Exception as exc:  # a bug must not leave callers waiting forever
            log.exception("pipe to %s failed", self.address)
            self._broken(f"internal error: {exc!r}")
        finally:
            self._stream = None
            self._writing = False
            if reader is not None:
                reader.cancel()
            if stream is not None:
                stream.cancel()
            self._task = None
            if self._queue and not self._closed:
                self._signal()  # items arrived while we were failing: start over

    def _take(self) -> list[Item]:
        """The items of the next frame: at least one, but no more than ``max_ops`` ops' worth (a
        GET_MANY op counts its keys, ``KEYS_PER_OP`` to an op: the peer runs a frame in one
        step of its loop) nor more than fit ``max_bytes``."""
        queue = self._queue
        items: list[Item] = []
        room = self._max_bytes
        units = self._max_ops
        while queue:
            op = queue[0].op
            size = len(op.key) + len(op.value) + len(op.expect)
            weight = 1
            if op.code == Code.GET_MANY:
                weight = max(1, len(op.value) // (8 * KEYS_PER_OP))  # 8 header bytes a key
            elif op.effects:
                size += sum(len(e.key) + len(e.value) + 32 for e in op.effects)
            if items and (size > room or weight > units):
                break
            room -= size
            units -= weight
            items.append(queue.popleft())
        return items

    async def _send_frame(self, stream: Stream) -> None:
        items = self._take()
        now = time.monotonic()
        expired = [item for item in items if getattr(item, "deadline", now) < now]
        if expired:
            items = [item for item in items if getattr(item, "deadline", now) >= now]
            for item in expired:
                item.handle(
                    Result(Status.TIMEOUT, message=f"peer {self.address} could not be reached in time")
                )
            if not items:
                return
        frame_id = next(self._ids)
        self._inflight[frame_id] = (items, now)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._frame_timeout, self._watch)
        table_version, sender = self._frame_header()
        self.frames_sent += 1
        await stream.send(frame_id, table_version, sender, [item.op for item in items])

    async def _read(self, stream: Stream) -> None:
        try:
            while True:
                answer = await stream.receive()
                if answer is None:
                    self._reset(f"peer {self.address} closed the stream")
                    return
                frame_id, table_version, results = answer
                entry = self._inflight.get(frame_id)
                if entry is None:
                    continue  # timed out earlier
                items = entry[0]
                start = self._received.pop(frame_id, 0)
                end = start + len(results)
                taken = self._forwarded.get(frame_id)
                if end < len(items) and results:
                    # Part of the answer (it did not fit one message): the rest follows, in order.
                    self._received[frame_id] = end
                else:
                    del self._inflight[frame_id]
                    if taken is not None:
                        del self._forwarded[frame_id]
                    self._wake()
                self._on_table_version(table_version)
                if taken is None:
                    for item, result in zip(items[start:end], results, strict=False):
                        item.handle(result)
                else:  # those that took a result from a backup copy keep it
                    for i, (item, result) in enumerate(zip(items[start:end], results, strict=False), start):
                        if i not in taken.indexes:
                            taken.left -= 1
                            item.handle(result)
                if not results:
                    for i, item in enumerate(items[start:], start):
                        if taken is None or i not in taken.indexes:
                            item.handle(Result(Status.ERROR, message="peer sent too few results"))
        except asyncio.CancelledError:
            raise
        except PeerGridError as exc:
            self._reset(str(exc))
        except Exception as exc:
            log.exception("reading from %s failed", self.address)
            self._reset(f"internal error: {exc!r}")

    def forwarded(self, frame_id: int, index: int, partition: int, result: Result, lease_left: float) -> bool:
        """Hand item ``index`` of frame ``frame_id`` (in flight) ``result``: its write's result,
        which the owner sent with this member's backup copy of the write once it was applied
        here (loop thread; ``protocol.with_reply``). True if the item took it.

        Taken only while the owner certainly held its lease: it had ``lease_left`` seconds when
        it sent the copy, which it did after this frame was sent, so until ``sent + lease_left``
        by this member's clock too, less the clocks' drift bound (the owner's own check of an
        ack, ``Replicator._finish``). Otherwise the item waits for the owner's answer.
        """
        entry = self._inflight.get(frame_id)
        if entry is None:
            return False
        items, sent = entry
        if not 0 <= index < len(items) or items[index].op.partition != partition:
            return False
        if time.monotonic() - sent >= lease_left * (1 - 2 * CLOCK_DRIFT):
            return False
        answered = self._received.get(frame_id, 0)
        taken = self._forwarded.get(frame_id)
        if taken is None:
            taken = self._forwarded[frame_id] = _Taken(len(items) - answered)
        if index < answered or index in taken.indexes:
            return False
        taken.indexes.add(index)
        taken.left -= 1
        if taken.left == 0:
            # Every item has its result: the frame ends here (the owner sends no answer).
            del self._inflight[frame_id]
            del self._forwarded[frame_id]
            self._received.pop(frame_id, None)
            self._wake()
        items[index].handle(result)
        return True

    def _reset(self, why: str) -> None:
        # Fail what is in flight now; the sender task notices and restarts the stream.
        self._reset_reason = why
        if self._task is not None:
            self._task.cancel()
        else:
            self._broken(why)

    def _watch(self) -> None:
        # The oldest frame in flight decides: past its deadline the stream is reset; otherwise
        # the watchdog sleeps until that deadline. With nothing in flight it disarms, and the
        # next frame sent arms it again: a busy pipe arms it once per frame timeout, not per frame.
        self._watchdog = None
        if not self._inflight:
            return
        _, sent = next(iter(self._inflight.values()))
        late = time.monotonic() - sent - self._frame_timeout
        if late >= 0:
            self._reset(f"peer {self.address} did not answer within {self._frame_timeout}s")
        else:
            self._watchdog = self._loop.call_later(-late, self._watch)

    def _broken(self, why: str) -> None:
        inflight, self._inflight = self._inflight, {}
        received, self._received = self._received, {}
        forwarded, self._forwarded = self._forwarded, {}
        for frame_id, (items, _) in inflight.items():
            taken = forwarded.get(frame_id)
            first = received.get(frame_id, 0)
            for i, item in enumerate(items[first:], first):  # those answered already are done
                if taken is None or i not in taken.indexes:
                    item.handle(_unreachable(True, why))
        self._fail_queued(why)

    def _fail_queued(self, why: str) -> None:
        while self._queue:
            self._queue.popleft().handle(_unreachable(False, why))

    def close(self) -> None:
        """Stop the pipe (loop thread): everything pending fails as unreachable, now.

        Not left to the sender task: a task cancelled before its first step never
        runs its handlers, and what it held would wait forever.
        """
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._task is not None:
            self._task.cancel()
        self._broken("the peer left the cluster")


def submit_all(batches: Sequence[tuple[object, Sequence[Item]]]) -> None:
    """Queue items on several pipes of one member, waking its loop once (any thread).

    A get_all or put_all bound for two owners costs one ``call_soon_threadsafe`` (one self-pipe
    write, one wake-up of the loop thread) rather than one per owner: on one core each of them
    can switch to the loop thread and back before the next pipe is even queued. Pipes are
    ``Pipe`` objects of the same loop; anything else that has ``submit_many`` gets that.
    """
    pipes = [(pipe, items) for pipe, items in batches if isinstance(pipe, Pipe)]
    for pipe, items in batches:
        if not isinstance(pipe, Pipe):
            pipe.submit_many(items)  # type: ignore[attr-defined]
    if len(pipes) < 2 or asyncio._get_running_loop() is pipes[0][0]._loop:
        for pipe, items in pipes:
            pipe.submit_many(items)
        return
    kicks: list[Pipe] = []
    for pipe, items in pipes:
        pipe._queue.extend(items)
        if not pipe._signalled:  # see Pipe._signal
            pipe._signalled = True
            kicks.append(pipe)
    if kicks:
        try:
            pipes[0][0]._loop.call_soon_threadsafe(_kick_all, kicks)
        except RuntimeError:  # the loop is closed: the member is gone
            for pipe in kicks:
                pipe._fail_queued("the member is shut down")


def _kick_all(pipes: list[Pipe]) -> None:
    for pipe in pipes:
        pipe._kick()


class Pipes:
    """A member's pipes to its peers: one for calls and one for backup writes per peer, made on
    first use (any thread), dropped when the peer leaves."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address_of: Callable[[str], str | None],
        open_stream: Callable[[str], Awaitable[Stream]],
        frame_header: Callable[[], tuple[int, str]],
        saw_version: Callable[[int, str], None],
        limits: tuple[int, int, float, int],
        closed: Callable[[], bool],
    ) -> None:
        self._loop = loop
        self._address_of = address_of  # a member's address by uuid, None once it left
        self._open_stream = open_stream
        self._frame_header = frame_header
        self._saw_version = saw_version
        self._limits = limits  # max ops per frame, frames in flight, frame timeout, max message bytes
        self._calls: dict[str, Pipe] = {}
        self._backups: dict[str, Pipe] = {}
        self._lock = threading.Lock()
        self._closed = closed  # the member stopped: no new pipe

    def calls(self, uuid: str) -> Pipe | None:
        """The pipe for calls to member ``uuid``."""
        return self._pipe(uuid, self._calls)

    def call_pipe(self, uuid: str) -> Pipe | None:
        """The pipe for calls to member ``uuid`` if one was made (none is made here)."""
        return self._calls.get(uuid)

    def open_calls(self) -> dict[str, Pipe]:
        """The pipes for calls made so far, by member uuid (a copy)."""
        with self._lock:
            return dict(self._calls)

    def backups(self, uuid: str) -> Pipe | None:
        """The pipe for backup writes to member ``uuid``.

        Not the callers' pipe: an owner answers a frame of writes only once its
        backups acked them, so backup writes queued behind such frames (with
        ``max_inflight_frames`` reached both ways) would wait on each other.
        """
        return self._pipe(uuid, self._backups)

    def _pipe(self, uuid: str, pipes: dict[str, Pipe]) -> Pipe | None:
        pipe = pipes.get(uuid)
        if pipe is not None:
            return pipe
        address = self._address_of(uuid)
        if address is None or self._closed():
            return None
        with self._lock:
            pipe = pipes.get(uuid)
            if pipe is None:
                max_ops, max_inflight, timeout, max_bytes = self._limits
                pipe = pipes[uuid] = Pipe(
                    address,
                    self._loop,
                    lambda: self._open_stream(address),
                    self._frame_header,
                    max_ops,
                    max_inflight,
                    timeout,
                    lambda version: self._saw_version(version, address),
                    max_bytes,
                )
        return pipe

    def drop(self, uuid: str | None = None) -> None:
        """Close and forget the pipes to ``uuid`` (or to everyone)."""
        with self._lock:
            if uuid is None:
                dropped = [*self._calls.values(), *self._backups.values()]
                self._calls, self._backups = {}, {}
            else:
                dropped = [p for p in (self._calls.pop(uuid, None), self._backups.pop(uuid, None)) if p]
        for pipe in dropped:
            pipe.close()
