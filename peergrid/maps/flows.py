"""Run one operation, written once, from the sync API or the async API.

A *flow* is a generator that yields steps and receives their outcomes, as
httpx's auth flows do: the operation is written once; ``drive`` runs it on the
calling thread, ``drive_async`` in the calling task. A step is:

- an ``Op``: run it (through the invoker, or locally); its checked ``Result``;
- a ``list`` of ops: run them in parallel, in frames of up to ``Limits.frame_ops`` per owner;
  their results;
- a ``Shared`` wait (``Flight``): another caller's fetch of the same key; True
  once it ended, False at the caller's deadline;
- ``OnMember``: a coroutine to run on the member's loop; what it returns;
- a ``float``: a pause of that many seconds;
- anything else (``cached``'s steps): the driver's ``run`` decides.

An exception a step raises is thrown into the flow, which may handle it.

An operation that may finish without a step (a near-cache hit, an owner-local
read) is a plain function returning either its value or ``Remote(flow)``: a
generator costs about half a microsecond to start and finish, as much as the
whole owner-local read.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, ParamSpec, TypeVar

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")
Flow = Generator[S | float, Any, T]


class Remote(Generic[T]):
    """An operation that needs steps: the drivers run ``flow`` to get its value."""

    __slots__ = ("flow",)

    def __init__(self, flow: Flow[Any, T]) -> None:
        self.flow = flow


class OnMember:
    """A step: run ``coro`` on the member's loop, waiting at most ``timeout`` seconds."""

    __slots__ = ("coro", "timeout")

    def __init__(self, coro: Coroutine[Any, Any, Any], timeout: float) -> None:
        self.coro = coro
        self.timeout = timeout


def flow(fn: Callable[P, Flow[Any, T]]) -> Callable[P, Remote[T]]:
    """Make a generator function an operation that always needs steps (returns ``Remote``)."""

    @functools.wraps(fn)
    def start(*args: P.args, **kwargs: P.kwargs) -> Remote[T]:
        return Remote(fn(*args, **kwargs))

    return start


def drive(flow: Flow[S, T], run: Callable[[S], Any]) -> T:
    """Run ``flow`` to its end on this thread; return what it returns."""
    sent: Any = None
    error: Exception | None = None
    try:
        while True:
            try:
                step = flow.throw(error) if error is not None else flow.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            sent, error = None, None
            if isinstance(step, int | float):
                time.sleep(step)
                continue
            try:
                sent = run(step)
            except Exception as exc:  # noqa: BLE001 - the flow decides; unhandled, it comes back out of throw()
                error = exc
    finally:
        flow.close()  # interrupted (KeyboardInterrupt): its cleanup runs now, not when collected


async def drive_async(flow: Flow[S, T], run: Callable[[S], Awaitable[Any]]) -> T:
    """Run ``flow`` to its end in this task; return what it returns."""
    sent: Any = None
    error: Exception | None = None
    try:
        while True:
            try:
                step = flow.throw(error) if error is not None else flow.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            sent, error = None, None
            if isinstance(step, int | float):
                await asyncio.sleep(step)
                continue
            try:
                sent = await run(step)
            except Exception as exc:  # noqa: BLE001 - as above
                error = exc
    finally:
        flow.close()  # cancelled: its cleanup (a near-cache fetch ending) runs now
