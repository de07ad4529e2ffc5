"""The peergrid runtime: one event loop, on a thread of its own, for every member of the process.

The asyncio code is the implementation; sync callers run coroutines on this
loop with a timeout. A call already on the loop thread must not block on it.

Why one loop per process rather than one per member: grpc.aio keeps a single
completion queue per process, anchored to an event loop, and dispatches every
other loop's events through it. Members that each owned a loop would depend on
whichever loop grpc anchored to, and stopping that member would strand the
others. One long-lived loop avoids the question; members in one process (an
in-process test cluster) share it, and a member's shutdown stops only what it
started. The application's own threads and loops never run peergrid's work.

Fork: threads do not survive ``fork()``, and neither does grpc's asyncio state
(its completion-queue poller is a thread; grpc supports fork only in its sync
client, and only with ``GRPC_ENABLE_FORK_SUPPORT``). So in a child process, the
members inherited from the parent are marked closed by an ``os.register_at_fork``
hook (every call on them raises ``GridClosedError`` at once: the flag is the one
the owner-local read already checks, so the hot path pays nothing), and the
runtime loop is started afresh on first use. A child forked while a member was
running cannot start a member of its own either (grpc's state is the parent's):
``runtime()`` raises ``ForkError`` at once. A child forked from a process whose
members were all shut down (or that never started one) starts members normally.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from peergrid.errors import ForkError, GridClosedError, PeerGridError

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running on a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread_id = 0

    def _run(self) -> None:
        self.thread_id = threading.get_ident()
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Let cancelled tasks finish their cleanup before the loop closes.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wait_started(self) -> None:
        """Block until the loop thread runs (its id is known)."""
        ready = threading.Event()
        self.loop.call_soon_threadsafe(ready.set)
        ready.wait()

    def alive(self) -> bool:
        """True while the loop thread runs."""
        return self._thread.is_alive() and not self.loop.is_closed()

    def in_loop(self) -> bool:
        """True on the loop's own thread."""
        return threading.get_ident() == self.thread_id

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for it (never from the loop thread)."""
        if self.in_loop():
            coro.close()
            raise RuntimeError("a blocking peergrid call was made on the member's own loop thread")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` on the loop, from any thread."""
        if self.in_loop():
            self.loop.call_soon(fn, *args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and join the thread (safe to call twice)."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if not self.in_loop():
                self._thread.join(timeout)


_runtime: LoopThread | None = None
_runtime_lock = threading.Lock()

#: What an inherited member says in a forked child (``GridClosedError``).
FORKED = "created before fork; create a Grid in each worker (docs/fork.md)"


class Member(Protocol):
    """What the fork hook needs of a member (``peergrid.member.node.Node``)."""

    closed: bool
    closed_reason: str


_members: weakref.WeakSet[Any] = weakref.WeakSet()  # every member started in this process
_forked_running = False  # this process was forked while a member ran: grpc's state is not ours


def track(member: Member) -> None:
    """Mark ``member`` closed in a child process forked after this call (see the module doc)."""
    _members.add(member)


def check_not_forked(member: Member) -> None:
    """Raise ``GridClosedError`` when ``member`` was inherited through ``fork()``."""
    if member.closed_reason == FORKED:
        raise GridClosedError(FORKED)


def _after_fork_in_child() -> None:
    global _runtime, _runtime_lock, _forked_running
    # The loop thread did not survive, and its lock may have been held by a thread that did not.
    _runtime, _runtime_lock = None, threading.Lock()
    for member in list(_members):
        if not member.closed:
            # Only flags: closing its server or channels here would shut the parent's sockets.
            member.closed_reason = FORKED
            member.closed = True
            _forked_running = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def runtime() -> LoopThread:
    """The process's peergrid loop thread, started on first use and kept for the process's life.

    Raises ``ForkError`` in a process forked while a member was running (see the module doc).
    """
    global _runtime
    if _forked_running:
        raise ForkError(
            "cannot start a peergrid member in a process forked from one whose member was running: "
            "grpc does not survive fork. Start Grids only after fork, in each worker (gunicorn "
            "without --preload, or in its post_fork hook), shut the parent's Grid down before "
            "forking, or use multiprocessing's 'spawn' or 'forkserver' start method (docs/fork.md)"
        )
    with _runtime_lock:
        if _runtime is None or not _runtime.alive():
            _runtime = LoopThread("peergrid-runtime")
            _runtime.start()
            _runtime.wait_started()
        return _runtime


async def every(interval: float, job: Callable[[], Any]) -> None:
    """Run ``job`` (a function, or one returning a coroutine) every ``interval`` seconds, for ever;
    a failure is logged and the next round runs."""
    while True:
        await asyncio.sleep(interval)
        try:
            outcome = job()
            if asyncio.iscoroutine(outcome):
                await outcome
        except asyncio.CancelledError:
            raise
        except PeerGridError as exc:
            logging.getLogger("peergrid").debug("background job failed: %s", exc)
        except Exception:
            logging.getLogger("peergrid").exception("background job failed")
