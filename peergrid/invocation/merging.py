"""A merging member's side of a merge: bring what it served back into the surviving instance.

When two instances of one cluster merge, each member of the smaller one leaves
it, joins the larger as a new member and brings back the partitions it owned
and served there (see ``cluster/merge.py``), each in one of two ways:

- **Restore**: if the surviving instance lost every copy of the partition (all
  of them were on this side of the split), its owner there installs this copy
  whole: readers never see part of it, and nothing of it is lost.
- **Changes**: otherwise the survivor has the partition, and what it lacks is
  what this side changed while split: the journaled changes (puts, deletes,
  clears, with their stamps; see ``peergrid.storage.journal``). Between
  instances that formed apart (different origins: no history in common),
  every entry goes as well, unstamped. They travel as MERGE ops, a map and a
  batch at a time, and the survivor's owner applies each by the map's merge
  policy. A MERGE op applies idempotently, so it is retried like a read.

A partition is never merged half-way in the sense that matters: a restore is
atomic, and a change either wins or not, key by key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from peergrid.errors import PeerGridError
from peergrid.invocation.invoker import Call, Group, Invoker
from peergrid.protocol import Code, Effect, EffectKind, Op, Result, Status
from peergrid.storage import Partition, journal

log = logging.getLogger("peergrid.cluster")

Restore = Callable[[Partition], Awaitable[str]]
"""Offer a copy to its owner in the surviving instance; what became of it (``PartitionManager.restore``)."""


@dataclass
class Merged:
    """What became of the partitions a member brought into the surviving instance."""

    restored: int = 0
    """Partitions the survivor had lost entirely, now served again from our copies."""
    changes: int = 0
    """Changes sent (journaled ones; every entry, between instances that formed apart)."""
    won: int = 0
    """Of those, changes the survivor's owners applied (by each map's merge policy)."""
    failed: int = 0
    """Partitions or batches that could not be merged before the deadline."""
    left: list[Partition] = field(default_factory=list)
    """Copies not merged because the instance this member joined went away mid-merge (it
    merged on into another): they go to the next instance it joins, whole."""


async def merge_back(
    copies: Sequence[Partition],
    same_origin: bool,
    restore: Restore,
    invoker: Invoker,
    batch: tuple[int, int],
    timeout: float,
    retry_max: float,
    abandoned: Callable[[], bool] = lambda: False,
) -> Merged:
    """Bring ``copies`` (partitions this member served in the merged instance) into the one it
    joined; ``same_origin``: both instances descend from one formation (a healed split).
    ``batch``: the most changes, and bytes, one MERGE op carries. Once ``abandoned()`` (this
    member must join yet another instance), the copies not yet merged are handed back in
    ``Merged.left``, the one in progress too (a MERGE op applies idempotently)."""
    outcome = Merged()
    for index, copy in enumerate(copies):
        deadline = time.monotonic() + timeout
        how = await _restore(copy, restore, deadline, retry_max, abandoned)
        if how == "served" and not abandoned():
            await _send_changes(copy, same_origin, invoker, batch, deadline, outcome, abandoned)
        if abandoned():
            outcome.left = list(copies[index:])
            return outcome
        if how == "restored":
            outcome.restored += 1
        elif how == "served":
            pass
        else:
            outcome.failed += 1
            log.warning("partition %d could not be merged: its owner kept answering %r", copy.id, how)
    return outcome


async def _restore(
    copy: Partition, restore: Restore, deadline: float, retry_max: float, abandoned: Callable[[], bool]
) -> str:
    """Offer ``copy`` to its owner until it is restored or served there, the deadline, or
    ``abandoned()``."""
    delay = 0.01
    how = "retry"
    while True:
        try:
            how = await restore(copy)
        except PeerGridError as exc:
            how = f"retry ({exc})"
        if how in ("restored", "served") or time.monotonic() + delay > deadline or abandoned():
            return how
        await asyncio.sleep(delay)  # the owner is still taking the partition over, or it moved
        delay = min(delay * 2, retry_max)


def changes(copy: Partition, same_origin: bool) -> Iterator[Effect]:
    """What the survivor's owner must judge of ``copy``: its journal, as changes with their
    stamps (a put with the value it has now; a counter only incremented, as what each member
    added to it), and between instances that formed apart, every other entry, unstamped."""
    journaled = copy.journal or {}
    for (name, key), rec in journaled.items():
        stamp = journal.stamp_in(rec)
        counts = copy.contributions(name, key)
        if counts is not None:  # a counter only incremented: each member's count, to add up
            for who, count in counts.items():
                yield Effect(EffectKind.DELTA, name, key, journal.encode_delta(who, count), 0.0, stamp)
        elif key == journal.WHOLE_MAP:
            yield Effect(EffectKind.CLEAR, name, b"", b"", 0.0, stamp)
        elif journal.is_delete(rec):
            yield Effect(EffectKind.DELETE, name, key, b"", 0.0, stamp)
        else:
            store = copy.maps.get(name)
            value = store.peek(key) if store is not None else None
            if value is not None:  # else it expired here since: nothing to bring
                assert store is not None
                yield Effect(EffectKind.PUT, name, key, value, store.expiry.get(key, 0.0), stamp)
    if same_origin:
        return
    for name, store in list(copy.maps.items()):
        for key, value, expire_at in store.items():
            if (name, key) not in journaled:
                yield Effect(EffectKind.PUT, name, key, value, expire_at)


async def _send_changes(
    copy: Partition,
    same_origin: bool,
    invoker: Invoker,
    batch: tuple[int, int],
    deadline: float,
    outcome: Merged,
    abandoned: Callable[[], bool],
) -> None:
    by_map: dict[str, list[Effect]] = {}
    for change in changes(copy, same_origin):
        by_map.setdefault(change.map, []).append(change)
    ops = [
        Op(Code.MERGE, copy.id, name, version=copy.version, effects=part)
        for name, effects in by_map.items()
        for part in _batches(effects, *batch)
    ]
    outcome.changes += sum(len(op.effects) for op in ops)
    delay = 0.01
    while ops:
        # A MERGE op applies idempotently (a change that won already loses to itself; counts
        # only grow), so one whose outcome is unknown (the table moved under it) goes again.
        failed = []
        for op, result in zip(ops, await _run(invoker, ops, deadline), strict=True):
            if result.status == Status.OK:
                outcome.won += result.count
            else:
                failed.append((op, result))
        if failed and time.monotonic() + delay > deadline:
            outcome.failed += len(failed)
            op, result = failed[0]
            log.warning("merging changes of partition %d failed: %s", op.partition, result)
            return
        ops = [op for op, _ in failed]
        if ops and abandoned():
            outcome.changes -= sum(len(op.effects) for op in ops)  # they go again, with the copy
            return
        if ops:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)


def _batches(effects: list[Effect], most: int, max_bytes: int) -> Iterator[tuple[Effect, ...]]:
    """``effects`` in runs of at most ``most`` changes and about ``max_bytes`` bytes."""
    run: list[Effect] = []
    size = 0
    for effect in effects:
        if run and (len(run) >= most or size + len(effect.key) + len(effect.value) > max_bytes):
            yield tuple(run)
            run, size = [], 0
        run.append(effect)
        size += len(effect.key) + len(effect.value)
    if run:
        yield tuple(run)


async def _run(invoker: Invoker, ops: list[Op], deadline: float) -> list[Result]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finished() -> None:  # on the loop: calls finish there
        if not done.done():
            done.set_result(None)

    group = Group(len(ops), finished)
    calls = [Call(invoker, op, deadline, group) for op in ops]
    invoker.start_many(calls)
    await done
    return [call.result or Result(Status.ERROR, message="no result") for call in calls]
