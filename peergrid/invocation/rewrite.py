"""Writing a set of entries into the cluster with put-if-absent semantics (a merge's data).

A member whose instance of the cluster merged into another re-writes the
entries it owned there: an entry the surviving instance already has keeps the
survivor's value, the others are written with what remains of their TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from peergrid.invocation.invoker import Call, Group, Invoker
from peergrid.partition import partition_of
from peergrid.protocol import Code, Effect, Op, Result, Status


@dataclass
class Rewritten:
    """What became of the entries re-written."""

    written: int = 0
    """Entries the cluster did not have, now written."""
    kept: int = 0
    """Entries the cluster already had: its value was kept."""
    expired: int = 0
    """Entries that expired before they could be written."""
    failed: int = 0
    """Entries whose write failed (timed out, or refused)."""


async def rewrite(
    invoker: Invoker,
    entries: Sequence[Effect],
    partition_count: int,
    batch: int,
    timeout: float,
) -> Rewritten:
    """Put-if-absent every entry (a PUT effect), ``batch`` at a time; on the member's loop."""
    outcome = Rewritten()
    now = time.time()
    ops = []
    for entry in entries:
        if entry.expire_at and entry.expire_at <= now:
            outcome.expired += 1
            continue
        ttl = entry.expire_at - now if entry.expire_at else 0.0
        partition = partition_of(entry.key, partition_count)
        ops.append(Op(Code.PUT_IF_ABSENT, partition, entry.map, entry.key, entry.value, ttl=ttl))
    for start in range(0, len(ops), batch):
        for result in await _run(invoker, ops[start : start + batch], timeout):
            if result.status != Status.OK:
                outcome.failed += 1
            elif result.found:
                outcome.kept += 1
            else:
                outcome.written += 1
    return outcome


async def _run(invoker: Invoker, ops: list[Op], timeout: float) -> list[Result]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finished() -> None:  # on the loop: calls finish there
        if not done.done():
            done.set_result(None)

    group = Group(len(ops), finished)
    deadline = time.monotonic() + timeout
    calls = [Call(invoker, op, deadline, group) for op in ops]
    invoker.start_many(calls)
    await done
    return [call.result or Result(Status.ERROR, message="no result") for call in calls]
