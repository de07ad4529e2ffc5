"""The caller's side of an operation: route, send, retry within the deadline.

A ``Call`` is one operation in flight. It is started from any thread; its
routing, retries and completion happen on the member's loop thread, driven by
callbacks rather than a task per call (a task costs more than a batched key).
The caller waits on a lock (sync API) or an asyncio future (async API).

Retry rules: MOVED and RETRY (the table is changing) and an unreachable peer
before the op was sent are retried with exponential backoff until the
deadline. An unreachable peer after a read was sent is retried too (reads are
idempotent); after a write was sent the outcome is unknown, and the call ends
INDETERMINATE rather than risk applying it twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from peergrid.invocation.pipe import Item, submit_all
from peergrid.protocol import WRITES, Op, Result, Status


class Router(Protocol):
    """What the invoker needs of the member."""

    loop: asyncio.AbstractEventLoop
    closed: bool

    def pipe_for(self, partition: int) -> PeerPipe | None:
        """The pipe to the partition's owner, or None to execute locally."""
        ...

    def pipes_for(self, partitions: Sequence[int]) -> Sequence[PeerPipe | None]:
        """``pipe_for`` of each partition, in one pass (a batch's keys)."""
        ...

    def execute_local(self, op: Op) -> Result | asyncio.Future[Result]:
        """Run an op as (would-be) owner, on the loop thread."""
        ...


class PeerPipe(Protocol):
    """A pipe to a peer, as the invoker uses it (``peergrid.invocation.pipe.Pipe``)."""

    legacy: bool  # the peer predates GET_MANY: get_all asks it key by key

    def submit(self, item: Item) -> None: ...
    def submit_many(self, items: Sequence[Item]) -> None: ...


_RETRYABLE = frozenset({Status.MOVED, Status.RETRY})
_CLOSED = Result(Status.CLOSED, message="this grid was shut down")


class Group:
    """Calls that are waited for together (get_all, put_all, size, ...)."""

    __slots__ = ("_lock", "on_done", "remaining")

    def __init__(self, count: int, on_done: Callable[[], None] | None = None) -> None:
        self.remaining = count
        self.on_done = on_done
        self._lock = threading.Lock()
        self._lock.acquire()
        if count == 0:
            self._finish()

    def child_done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self._finish()

    def _finish(self) -> None:
        if self.on_done is not None:
            self.on_done()
        else:
            self._lock.release()

    def wait(self, timeout: float) -> bool:
        """Block until every call finished; False on timeout."""
        return self._lock.acquire(timeout=max(0.0, timeout))


class Call:
    """One operation in flight, and the means to wait for its result."""

    __slots__ = (
        "_done",
        "_lock",
        "attempt",
        "deadline",
        "group",
        "invoker",
        "on_done",
        "op",
        "result",
    )

    def __init__(
        self,
        invoker: Invoker,
        op: Op,
        deadline: float,
        group: Group | None = None,
        on_done: Callable[[Result], None] | None = None,
    ) -> None:
        self.invoker = invoker
        self.op = op
        self.deadline = deadline
        self.group = group
        self.on_done = on_done
        self.attempt = 0
        self.result: Result | None = None
        self._done = False
        self._lock: threading.Lock | None = None
        if group is None and on_done is None:
            self._lock = threading.Lock()
            self._lock.acquire()

    def handle(self, result: Result) -> None:
        """A result arrived for this call (loop thread)."""
        self.invoker.on_result(self, result)

    def finish(self, result: Result) -> None:
        """Complete the call (loop thread, once)."""
        if self._done:
            return
        self._done = True
        self.result = result
        if self.group is not None:
            self.group.child_done()
        elif self.on_done is not None:
            self.on_done(result)
        elif self._lock is not None:
            self._lock.release()

    def wait(self, timeout: float) -> Result | None:
        """Block for the result; None on timeout."""
        assert self._lock is not None
        if self._lock.acquire(timeout=max(0.0, timeout)):
            return self.result
        return None


class Invoker:
    """Starts calls and drives their retries."""

    def __init__(self, router: Router, retry_initial: float, retry_max: float) -> None:
        self._router = router
        self._loop = router.loop
        self._retry_initial = retry_initial
        self._retry_max = retry_max

    @property
    def closed(self) -> bool:
        """This member was shut down (any thread)."""
        return self._router.closed

    def pipe_for(self, partition: int) -> PeerPipe | None:
        """The pipe to ``partition``'s owner, or None to run it here (any thread)."""
        return self._router.pipe_for(partition)

    def pipes_for(self, partitions: Sequence[int]) -> Sequence[PeerPipe | None]:
        """``pipe_for`` of each partition, in one pass (any thread)."""
        return self._router.pipes_for(partitions)

    def start(self, call: Call) -> None:
        """Send a call towards its owner (any thread)."""
        if self._router.closed:
            self._loop.call_soon_threadsafe(call.finish, _CLOSED)
            return
        pipe = self._router.pipe_for(call.op.partition)
        if pipe is None:
            self._loop.call_soon_threadsafe(self.run_local, call)
        else:
            pipe.submit(call)

    def start_many(self, calls: Sequence[Call]) -> None:
        """Send calls, one frame per owner where possible (any thread)."""
        if self._router.closed:
            for call in calls:
                self._loop.call_soon_threadsafe(call.finish, _CLOSED)
            return
        local: list[Call] = []
        by_pipe: dict[int, tuple[PeerPipe, list[Call]]] = {}
        pipes = self._router.pipes_for([call.op.partition for call in calls])
        for call, pipe in zip(calls, pipes, strict=True):
            if pipe is None:
                local.append(call)
            else:
                by_pipe.setdefault(id(pipe), (pipe, []))[1].append(call)
        submit_all(list(by_pipe.values()))
        if local:
            self._loop.call_soon_threadsafe(self._run_locals, local)

    def _run_locals(self, calls: list[Call]) -> None:
        for call in calls:
            self.run_local(call)

    def run_local(self, call: Call) -> None:
        """Execute a call on this member (loop thread)."""
        if self._router.closed:
            call.finish(_CLOSED)
            return
        outcome = self._router.execute_local(call.op)
        if isinstance(outcome, Result):
            self.on_result(call, outcome)
        else:
            outcome.add_done_callback(lambda future: self.on_result(call, _future_result(future)))

    def on_result(self, call: Call, result: Result) -> None:
        """Finish a call, or schedule its retry (loop thread)."""
        status = result.status
        if status in _RETRYABLE or (
            status == Status.UNREACHABLE and (not result.found or call.op.code not in WRITES)
        ):
            self._retry(call, result)
        elif status == Status.UNREACHABLE:
            call.finish(Result(Status.INDETERMINATE, message=result.message))
        else:
            call.finish(result)

    def _retry(self, call: Call, last: Result) -> None:
        call.attempt += 1
        delay = min(self._retry_max, self._retry_initial * (2 ** min(call.attempt - 1, 20)))
        if time.monotonic() + delay >= call.deadline:
            # Unknown outcome only for a write that was sent; a read that was sent simply failed.
            sent_write = last.status == Status.UNREACHABLE and last.found and call.op.code in WRITES
            status = Status.INDETERMINATE if sent_write else Status.TIMEOUT
            call.finish(Result(status, message=_why(last)))
            return
        self._loop.call_later(delay, self._resend, call)

    def _resend(self, call: Call) -> None:
        if self._router.closed:
            call.finish(_CLOSED)
            return
        pipe = self._router.pipe_for(call.op.partition)
        if pipe is None:
            self.run_local(call)
        else:
            pipe.submit(call)


def _future_result(future: asyncio.Future[Result]) -> Result:
    if future.cancelled():
        return Result(Status.ERROR, message="the operation was cancelled on the owner")
    exc = future.exception()
    if exc is not None:
        return Result(Status.ERROR, message=f"{type(exc).__name__}: {exc}")
    return future.result()


def _why(last: Result) -> str:
    reasons = {
        Status.MOVED: "the partition kept moving",
        Status.RETRY: "the partition was migrating or its owner was catching up",
        Status.UNREACHABLE: "the owner was unreachable",
    }
    detail = f" ({last.message})" if last.message else ""
    return reasons.get(last.status, "no answer") + detail
