"""Run one multi-step protocol from the sync API or the async API.

A *flow* is a generator that yields steps and receives their outcomes: a
``float`` is a pause (seconds), anything else is handed to the driver's
``run`` (a map operation, a call of the user's function). An exception that
``run`` raises is thrown into the flow, which may handle it. The protocol is
written once; ``drive`` runs it on the calling thread, ``drive_async`` in the
calling task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")
S = TypeVar("S")
Flow = Generator[S | float, Any, T]


def drive(flow: Flow[S, T], run: Callable[[S], Any]) -> T:
    """Run ``flow`` to its end on this thread; return what it returns."""
    sent: Any = None
    error: Exception | None = None
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


async def drive_async(flow: Flow[S, T], run: Callable[[S], Awaitable[Any]]) -> T:
    """Run ``flow`` to its end in this task; return what it returns."""
    sent: Any = None
    error: Exception | None = None
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
