"""The owner's side of backups: ship each write, wait for the sync backups' acks.

The owner applies a write, bumps the partition's version, sends the write's
effects to its ``backup_count`` sync backups and ``async_backup_count`` async
ones over the coalescing pipes, and answers once every sync backup has
acknowledged. The fast path is callbacks only; a backup that answers anything
but OK moves that write to a slow path (a task) that repairs the backup (a
whole-partition transfer on a gap) or waits for the table to change.

An acknowledgement means a copy exists: a write is answered OK only once
every sync backup the current table names holds it. When a backup leaves the
table (it died, or was cut off), the write waits for its replacement, which
the owner rebuilds from its own copy (that holds the write); with fewer
members than ``backup_count`` needs, for those there are. A write whose owner
loses the partition, or quorum (``min_cluster_size``), before that ends
INDETERMINATE, as does one whose owner is reset (it was dropped from the
cluster), or whose owner's lease ran out before the last ack: never OK on the
strength of a backup that went away, nor from an owner others may have
replaced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from peergrid.config import GridConfig
from peergrid.partition import PartitionTable
from peergrid.protocol import Answered, Code, Effect, Op, Result, Status, with_reply

Repair = Callable[[int, str], "asyncio.Task[int]"]
"""Send partition ``p`` whole to backup ``uuid``; the task's result is the version it holds then."""

log = logging.getLogger("peergrid.replication")


class _Pipe(Protocol):
    def submit(self, item: object) -> None: ...


class ReplicatorMember(Protocol):
    """What the replicator needs of the member."""

    uuid: str
    loop: asyncio.AbstractEventLoop

    def pipe_to(self, uuid: str) -> _Pipe | None: ...
    def has_quorum(self) -> bool: ...
    def holds_lease(self) -> bool: ...
    def lease_left(self) -> float:
        """Seconds this member's owner lease has left (0 when it holds none)."""

    def backup_missed(self, p: int, uuid: str) -> None:
        """Backup ``uuid`` may not hold a write of ``p`` (its near caches may not know it)."""


class _Waiter:
    """One write waiting for its sync backups: ``uuids`` are those that must still hold it."""

    __slots__ = ("applied_at", "effects", "future", "partition", "result", "taken", "uuids", "version")

    def __init__(
        self,
        future: asyncio.Future[Result],
        partition: int,
        version: int,
        effects: Sequence[Effect],
        result: Result,
        uuids: set[str],
    ) -> None:
        self.future = future
        self.partition = partition
        self.version = version
        self.effects = effects
        self.result = result
        self.uuids = uuids
        self.taken = False  # the sender took the result from its copy (``with_reply``)
        self.applied_at = time.time()  # wall clock: a journal stamp, should a split begin now


class _Send:
    """A backup write in a pipe."""

    __slots__ = ("op", "replicator", "uuid", "waiter")

    def __init__(self, replicator: Replicator, op: Op, uuid: str, waiter: _Waiter | None) -> None:
        self.replicator = replicator
        self.op = op
        self.uuid = uuid
        self.waiter = waiter

    def handle(self, result: Result) -> None:
        if result.status == Status.OK:
            self.replicator.applied(self.op.partition, self.uuid, self.op.version)
            if self.waiter is not None:
                if result.found and self.op.key:
                    self.waiter.taken = True  # its caller has the result: see ``replicate``
                self.replicator.ack(self.waiter, self.uuid)
        else:
            self.replicator.failed(self, result)


class _Once:
    """A backup write resent from the slow path; its result completes a future."""

    __slots__ = ("future", "op")

    def __init__(self, op: Op, future: asyncio.Future[Result]) -> None:
        self.op = op
        self.future = future

    def handle(self, result: Result) -> None:
        if not self.future.done():
            self.future.set_result(result)


class Replicator:
    """Ships writes to backups and tracks which backups are in sync. Loop thread only."""

    def __init__(
        self, config: GridConfig, cluster: ReplicatorMember, repair: Repair, resync: Callable[[], None]
    ) -> None:
        self._config = config
        self._sync_count = config.backup_count
        self._cluster = cluster
        self._sync_backup = repair  # push one partition to one backup
        self._resync = resync  # bring every backup that is not known to be in sync in sync
        self._table = PartitionTable(0, ())
        self._synced: dict[int, set[str]] = {}  # p -> backups known to hold the owner's version
        self._applied: dict[tuple[int, str], int] = {}  # (p, backup) -> highest version it acknowledged
        self._waiters: set[_Waiter] = set()
        self._pending: dict[int, int] = {}  # p -> writes waiting for acks or repairs
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ state
    def on_table(self, table: PartitionTable) -> None:
        """Forget backups the table no longer names; re-judge the writes waiting for them."""
        self._table = table
        for p, uuids in list(self._synced.items()):
            replicas = table.replicas[p]
            if not replicas or replicas[0] != self._cluster.uuid:
                del self._synced[p]
            else:
                uuids.intersection_update(replicas[1:])
        for p, uuid in list(self._applied):
            if uuid not in table.replicas[p][1:] or table.replicas[p][0] != self._cluster.uuid:
                del self._applied[(p, uuid)]
        for waiter in list(self._waiters):
            self._rejudge(waiter)

    def _rejudge(self, waiter: _Waiter) -> None:
        """The table moved under a waiting write: what must now hold it, or INDETERMINATE."""
        p = waiter.partition
        replicas = self._table.replicas[p]
        backups = set(replicas[1 : 1 + self._sync_count])
        owner = bool(replicas) and replicas[0] == self._cluster.uuid
        if not self._cluster.has_quorum():
            if waiter.uuids - backups:
                # A backup it waits for is gone and no longer ours to replace.
                self._finish(
                    waiter,
                    Result(
                        Status.INDETERMINATE,
                        message="the owner lost quorum before every backup acknowledged the write",
                    ),
                )
            return
        if not owner:
            # The partition moved (a join, a leave) while the write waited. Its new owner takes
            # the newest copy, which holds the write: we applied it before we answered the new
            # owner's version question (answering adopts the list that moves the partition, and
            # ends our writes to it). A backup that acknowledges it holds it too (a backup
            # refuses writes of an owner its newer table replaced): so the write is as safe as
            # before the move once the acks on their way arrive. A backup that fails it is no
            # longer ours to repair: then the write ends INDETERMINATE (``_repair``). Until
            # stop 38 a join made such a write INDETERMINATE at once.
            return
        # Still the owner: every sync backup of the new table must hold the write. New ones are
        # rebuilt from this copy (which holds it) and count once synced past its version.
        waiter.uuids = {u for u in backups if self._applied.get((p, u), -1) < waiter.version}
        if not waiter.uuids:
            self._finish(waiter, waiter.result)

    def is_synced(self, p: int, uuid: str) -> bool:
        """True when backup ``uuid`` is known to hold our version of ``p``."""
        return uuid in self._synced.get(p, ())

    def mark_synced(self, p: int, uuid: str, version: int) -> None:
        """Backup ``uuid`` holds ``p`` at ``version`` (which may be behind by writes in flight).

        Callers check that the table did not change since they learned it; a
        mark for a member the current table does not name as backup is ignored.
        """
        replicas = self._table.replicas[p]
        if replicas and replicas[0] == self._cluster.uuid and uuid in replicas[1:]:
            self._synced.setdefault(p, set()).add(uuid)
            self.applied(p, uuid, version)
            for waiter in [w for w in self._waiters if w.partition == p and w.version <= version]:
                self.ack(waiter, uuid)

    def applied(self, p: int, uuid: str, version: int) -> None:
        """Backup ``uuid`` acknowledged holding ``p`` up to ``version``."""
        key = (p, uuid)
        if self._applied.get(key, -1) < version:
            self._applied[key] = version

    def holds(self, p: int, uuid: str, reported: int, current: int) -> bool:
        """Whether a backup reporting version ``reported`` of ``p`` lost nothing.

        A backup that acknowledged writes up to version ``a`` must report at
        least ``a``; writes after that are in flight and end in an ack or a
        repair of their own, so a lag behind ``current`` alone is no
        divergence. A backup we know nothing of must match ``current``.
        """
        acknowledged = self._applied.get((p, uuid))
        if acknowledged is None:
            return reported == current
        return reported >= acknowledged

    def mark_unsure(self, p: int, uuid: str) -> None:
        """Check ``uuid``'s version of ``p`` again before calling it in sync."""
        self._synced.get(p, set()).discard(uuid)

    def all_synced(self, p: int) -> bool:
        """Every backup of ``p`` is in sync and no write waits for an ack."""
        if self._pending.get(p):
            return False
        synced = self._synced.get(p, set())
        return all(uuid in synced for uuid in self._table.replicas[p][1:])

    # ------------------------------------------------------------------ writes
    def replicate(
        self,
        p: int,
        version: int,
        effects: Sequence[Effect],
        result: Result,
        reply: tuple[str, int, int] | None = None,
    ) -> Result | asyncio.Future[Result]:
        """Ship a write; return its result now (no sync backups) or a future for it.

        ``reply``: the write is op ``index`` of frame ``frame_id`` that member ``uuid`` sent,
        ``(uuid, frame_id, index)``. When that member is the write's one sync backup, its copy
        carries the result (``protocol.with_reply``) and its caller takes it from there, once
        the copy is applied, within what is left of this member's lease: the caller's write
        then costs one round trip rather than two, and the future ends ``Answered`` (the owner
        sends no answer of it). The guarantee is the same as an ack's: the caller has it only
        once the copy exists, while the owner held its lease (``_finish``'s check).
        """
        backups = self._table.replicas[p][1:]
        if not backups:
            return result
        op = Op(Code.BACKUP, p, "", version=version, effects=tuple(effects))
        sync, rest = backups[: self._sync_count], backups[self._sync_count :]
        for uuid in rest:
            self._send(_Send(self, op, uuid, None))
        if not sync:
            return result
        future: asyncio.Future[Result] = self._cluster.loop.create_future()
        waiter = _Waiter(future, p, version, effects, result, set(sync))
        self._waiters.add(waiter)
        self._pending[p] = self._pending.get(p, 0) + 1
        if reply is not None and len(sync) == 1 and sync[0] == reply[0]:
            lease_left = self._cluster.lease_left()
            if lease_left > 0:
                op = with_reply(op, reply[1], reply[2], result, lease_left)
        for uuid in sync:
            self._send(_Send(self, op, uuid, waiter))
        return future

    def settle_pending(self, keep: Callable[[int, float, Sequence[Effect]], bool]) -> None:
        """Ask ``keep(partition, applied_at, effects)`` of every write waiting for its backups,
        in the order they were applied (``applied_at``: when, wall-clock seconds); one it does
        not keep ends INDETERMINATE now (it may be applied here, or beyond a split)."""
        for waiter in sorted(self._waiters, key=lambda w: (w.partition, w.version)):
            if not keep(waiter.partition, waiter.applied_at, waiter.effects):
                self._finish(
                    waiter,
                    Result(
                        Status.INDETERMINATE,
                        message="the cluster may be split: the write may be applied on either side",
                    ),
                )

    def lag(self) -> int:
        """Writes awaiting backup acknowledgements, in the worst partition."""
        return max(self._pending.values(), default=0)

    def touch(self, p: int, effects: Sequence[Effect]) -> None:
        """Ship entries' access times to every backup of ``p`` (no version, no wait)."""
        op = Op(Code.TOUCH, p, "", effects=tuple(effects))
        for uuid in self._table.replicas[p][1:]:
            pipe = self._cluster.pipe_to(uuid)
            if pipe is not None:
                pipe.submit(_Once(op, self._cluster.loop.create_future()))

    def _send(self, send: _Send) -> None:
        pipe = self._cluster.pipe_to(send.uuid)
        if pipe is None:
            self.failed(send, Result(Status.UNREACHABLE, message="no pipe to the backup"))
        else:
            pipe.submit(send)

    def ack(self, waiter: _Waiter, uuid: str) -> None:
        """Backup ``uuid`` holds the write."""
        waiter.uuids.discard(uuid)
        if not waiter.uuids:
            self._finish(waiter, waiter.result)

    def _finish(self, waiter: _Waiter, result: Result) -> None:
        if result.status == Status.OK and not self._cluster.holds_lease():
            # The owner's lease ran out while the write waited (it was cut off, or paused): the
            # others may have taken the partition over from a copy without it, and the backups
            # that acked may be on the cut-off side only (a take-over there can keep an
            # unreachable member in the list, so quorum alone does not tell).
            result = Result(
                Status.INDETERMINATE,
                message="the owner's lease ran out before every backup acknowledged the write",
            )
        if waiter in self._waiters:
            self._waiters.discard(waiter)
            self._pending[waiter.partition] -= 1
            if not waiter.future.done():
                if waiter.taken and result.status == Status.OK:
                    result = Answered.of(result)  # the sender has it: see ``replicate``
                waiter.future.set_result(result)

    def sync_backups(self, p: int) -> tuple[str, ...]:
        """The backups whose ack a write of ``p`` waits for (as ``replicate`` sends it now)."""
        return self._table.replicas[p][1 : 1 + self._sync_count]

    def failed(self, send: _Send, result: Result) -> None:
        """A backup did not take a write: repair it off the fast path (its near caches, told
        of the write by the copy rather than by an event, hear of a gap)."""
        self._cluster.backup_missed(send.op.partition, send.uuid)
        self.mark_unsure(send.op.partition, send.uuid)
        if send.waiter is None:
            # No write waits for it (an async backup), so nothing repairs this one write: what
            # it acknowledged before no longer vouches for it (``holds`` would excuse the
            # missing write as one in flight, and anti-entropy would never send it). The
            # owner's sync job compares versions and sends the copy, until the backup holds it.
            self._applied.pop((send.op.partition, send.uuid), None)
            self._resync()
            return
        task = self._cluster.loop.create_task(self._repair(send, result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _repair(self, send: _Send, result: Result) -> None:
        """Get a write to a backup that did not take it; ack only once it holds it.

        Gives up when the write no longer waits or ``uuid`` is no longer its
        backup. If we still own the partition, the table change that made it so
        re-judged the write already; if we do not, the write ends INDETERMINATE.
        """
        p, uuid, waiter = send.op.partition, send.uuid, send.waiter
        assert waiter is not None
        try:
            await self._repair_until_acked(send, result)
        finally:
            if waiter in self._waiters and uuid in waiter.uuids and not self._still_backup(p, uuid):
                # Still waited for, and no longer ours to repair: we lost the partition (a
                # table change re-judges the writes of a partition we keep, and drops the
                # backups it no longer names from what they wait for).
                self._finish(
                    waiter,
                    Result(
                        Status.INDETERMINATE,
                        message="the partition moved before every backup acknowledged the write",
                    ),
                )

    async def _repair_until_acked(self, send: _Send, result: Result) -> None:
        p, uuid, waiter = send.op.partition, send.uuid, send.waiter
        assert waiter is not None
        delay = self._config.timing.retry_initial
        while waiter in self._waiters and self._still_backup(p, uuid):
            if result.status == Status.GAP:
                synced = await self._sync_backup(p, uuid)
                if synced >= send.op.version:
                    return  # mark_synced acked it
                if synced < 0:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._config.timing.retry_max)
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._config.timing.retry_max)
            if not (waiter in self._waiters and self._still_backup(p, uuid)):
                return
            result = await self._resend(send)
            if result.status == Status.OK:
                self.applied(p, uuid, send.op.version)
                self.ack(waiter, uuid)
                return

    def _still_backup(self, p: int, uuid: str) -> bool:
        replicas = self._table.replicas[p]
        return (
            bool(replicas)
            and replicas[0] == self._cluster.uuid
            and uuid in replicas[1 : 1 + self._sync_count]
        )

    async def _resend(self, send: _Send) -> Result:
        pipe = self._cluster.pipe_to(send.uuid)
        if pipe is None:
            return Result(Status.UNREACHABLE)
        future: asyncio.Future[Result] = self._cluster.loop.create_future()
        pipe.submit(_Once(send.op, future))
        return await future

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Drop all state; writes still waiting end INDETERMINATE (their owner is gone)."""
        for waiter in list(self._waiters):
            self._finish(
                waiter,
                Result(Status.INDETERMINATE, message="the owner was dropped from the cluster"),
            )
        self._synced.clear()
        self._applied.clear()
        self._pending.clear()
        for task in self._tasks:
            task.cancel()

    async def stop(self) -> None:
        """Cancel repairs; writes still waiting end INDETERMINATE."""
        self.reset()
        await asyncio.gather(*self._tasks, return_exceptions=True)
