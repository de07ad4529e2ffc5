"""A merging member's side of a merge: bring what it served back into the surviving instance.

When two instances of one cluster merge, each member of the smaller one leaves
it, joins the larger as a new member and brings back the partitions it owned
and served there (see ``cluster/merge.py``), each in one of two ways:

- **Restore**: if the surviving instance lost every copy of the partition (all
  of them were on this side of the split), its owner there installs this copy
  whole: readers never see part of it, and nothing of it is lost. Between the
  two sides of a split the survivor is asked first (a SIZE op, which answers
  LOST there), so that only those copies cross the network whole.
- **Changes**: otherwise the survivor has the partition, and what it lacks is
  what this side changed while split: the journaled changes (puts, deletes,
  clears, with their stamps; see ``peergrid.storage.journal``). Between
  instances that formed apart (different origins: no history in common),
  every entry goes as well, unstamped. They travel as MERGE ops, a map and a
  batch at a time, and the survivor's owner applies each by the map's merge
  policy. A MERGE op applies idempotently, so it is retried like a read.

Between the two sides of a split, the copies a member holds but does not serve
(backups, and partitions it owns but has not yet taken over) go too: where their
owner on this side died, or had not taken them over, they are the only copies of
what this side acknowledged. Each is offered whole only where the survivor lost
the partition (asked the same way), else its journaled changes go, as an
owner's would.

A partition is never merged half-way in the sense that matters: a restore is
atomic, and a change either wins or not, key by key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from peergrid.cluster.membership import Membership, State
from peergrid.config import GridConfig
from peergrid.errors import PeerGridError
from peergrid.invocation.invoker import Call, Group, Invoker
from peergrid.protocol import Code, Effect, EffectKind, MemberList, Op, Result, Status
from peergrid.replication import PartitionManager
from peergrid.storage import Partition, journal
from peergrid.transport import PeerClient

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

    def add(self, other: Merged) -> None:
        """Count ``other``'s outcome in this one (not its ``left``)."""
        self.restored += other.restored
        self.changes += other.changes
        self.won += other.won
        self.failed += other.failed


Batches = list[tuple[list[Partition], str]]
"""Copies to merge, each list with the origin of the instance it was served in."""


class Merging:
    """A member leaving its instance of the cluster for another and bringing its data there.

    ``into(members)``: told to merge (its master merges the whole instance), or, with None,
    orphaned (its master went to another instance) or declared dead (it was paused or cut
    off): it joins again, through ``members`` or wherever the seeds and discovery lead, then
    brings back the partitions it served (``merge_back``). Told again while at it (the
    instance it joined merged on into a third), it finishes nothing in the instance that
    went away: it joins again and brings what it has not yet merged, with what it served
    meanwhile.
    """

    def __init__(
        self,
        config: GridConfig,
        manager: PartitionManager,
        invoker: Invoker,
        membership: Callable[[], Membership],
        replica_peer: Callable[[str], PeerClient | None],
        rejoin: Callable[[], Awaitable[None]],
    ) -> None:
        self._config = config
        self._manager = manager
        self._invoker = invoker
        self._membership = membership
        self._replica_peer = replica_peer
        self._rejoin = rejoin  # leave everything behind and join again (through ``seeds``)
        self.seeds: list[str] = []  # while joining the other instance: its members
        self.busy = False  # its data is being re-written into the other instance: not safe
        self._again = False  # told to merge again meanwhile: one more round

    async def into(self, into: MemberList | None) -> None:
        """Leave this instance for ``into``'s (None: wherever the seeds and discovery lead),
        and bring this member's data."""
        if self.busy:
            self._again = True  # already on its way: once more when this round ends
            return
        membership = self._membership()
        origin = membership.members.origin
        batches: Batches = [(self._manager.owned_copies(), origin)]
        spares: Batches = [(self._manager.spare_copies(), origin)]
        self.busy = True
        try:
            while batches or spares:
                self._again = False
                batches, spares = await self._round(into, batches, spares)
                into = None
        finally:
            self.busy = False
            self._again = False

    async def _round(
        self, into: MemberList | None, batches: Batches, spares: Batches
    ) -> tuple[Batches, Batches]:
        """Join ``into``'s instance and merge ``batches`` (copies served) and ``spares`` (copies
        held, not served) into it; what is left of each to merge in the next instance if this
        one went away meanwhile."""
        self.seeds = [m.address for m in into.members] if into is not None else []
        try:
            await self._rejoin()
        finally:
            self.seeds = []
        membership, cluster = self._membership(), self._config.cluster
        address = membership.me.address
        if membership.state is State.JOINING:
            log.error(
                "member %s could not join the other instance of cluster %r; serving its data alone",
                address,
                cluster,
            )
            membership.form()
        joined = membership.members.origin
        limits, timing = self._config.limits, self._config.timing
        how = (
            self._restore,
            self._invoker,
            (limits.max_batch_ops, limits.max_message_bytes // 4),
            timing.operation_timeout,
            timing.retry_max,
            lambda: self._again,
        )
        done, left = Merged(), []
        for copies, origin in batches:
            outcome = await merge_back(copies, joined == origin, *how)
            done.add(outcome)
            if outcome.left:
                left.append((outcome.left, origin))
        spared, spares_left = Merged(), []
        for copies, origin in spares:
            if joined != origin:
                continue  # (between instances that formed apart, every owner sends every entry)
            outcome = await merge_spares(copies, *how)
            spared.add(outcome)
            if outcome.left:
                spares_left.append((outcome.left, origin))
        if self._again:
            # The instance went away under us: what we served in it goes on too.
            served = self._manager.owned_copies()
            log.warning(
                "member %s: the instance of cluster %r it merged into went away meanwhile; "
                "joining again with %d partitions still to merge and %d served meanwhile",
                address,
                cluster,
                sum(len(copies) for copies, _ in left),
                len(served),
            )
            # (Never both empty: the loop joins again.)
            return [*left, (served, joined)], [*spares_left, (self._manager.spare_copies(), joined)]
        if spared.restored or spared.failed:
            log.log(
                logging.WARNING if spared.failed else logging.INFO,
                "member %s: of the copies it held but did not serve, %d came back whole (the cluster "
                "had lost them); %d failed",
                address,
                spared.restored,
                spared.failed,
            )
        log.log(
            logging.WARNING if done.failed else logging.INFO,
            "member %s joined cluster %r again (%d members): of the %d partitions it served, %d "
            "came back whole (the cluster had lost them); of the %d changes it brought (made while "
            "split, or every entry when the instances formed apart), %d written, %d kept the value "
            "the cluster had (merge policy); %d failed",
            address,
            cluster,
            len(membership.members.members),
            sum(len(copies) for copies, _ in batches),
            done.restored,
            done.changes,
            done.won,
            done.changes - done.won,
            done.failed,
        )
        return [], []

    async def _restore(self, copy: Partition) -> str:
        """Offer a merged copy to its owner here (``PartitionManager.restore``)."""
        owner = self._manager.table.owner(copy.id)
        if owner == self._membership().me.uuid:
            return self._manager.restore(copy)
        peer = self._replica_peer(owner) if owner is not None else None
        if peer is None:
            return "moved"
        chunks = self._manager.chunks(copy, restore=True)
        return await peer.install(chunks, timeout=self._config.timing.rpc_timeout * 10)


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
    ``Merged.left``, the one in progress too (a MERGE op applies idempotently).

    Between the two sides of a split, the survivor is asked first which partitions it lost
    (``merge_spares``): only those copies travel whole, the rest send their journaled changes
    (offered whole just to ask, every copy would cross the network, the side's whole data).
    Between instances that formed apart, each copy is offered whole, then every entry goes."""
    if same_origin:
        return await _merge_asked(copies, restore, invoker, batch, timeout, retry_max, abandoned, served=True)
    outcome = Merged()
    for index, copy in enumerate(copies):
        deadline = time.monotonic() + timeout
        how = await _restore(copy, restore, deadline, retry_max, abandoned)
        log.debug(
            "merging partition %d (version %d, %d journaled changes, same origin: %s): %s",
            copy.id,
            copy.version,
            len(copy.journal or {}),
            same_origin,
            how,
        )
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


async def merge_spares(
    copies: Sequence[Partition],
    restore: Restore,
    invoker: Invoker,
    batch: tuple[int, int],
    timeout: float,
    retry_max: float,
    abandoned: Callable[[], bool] = lambda: False,
) -> Merged:
    """Bring ``copies`` (partitions this member held but did not serve in the other side of a
    split) into the instance it joined: whole where the survivor lost the partition, else
    their journaled changes (cheap, and idempotent: every holder of a copy may send them)."""
    return await _merge_asked(copies, restore, invoker, batch, timeout, retry_max, abandoned, served=False)


async def _merge_asked(
    copies: Sequence[Partition],
    restore: Restore,
    invoker: Invoker,
    batch: tuple[int, int],
    timeout: float,
    retry_max: float,
    abandoned: Callable[[], bool],
    served: bool,
) -> Merged:
    """Ask the survivor about each copy (a SIZE op: LOST where it lost the partition), then
    restore whole the copies it lost and send the others' journaled changes. An empty copy is
    asked nothing: a held one is dropped; a ``served`` one is offered whole (it is empty),
    since where the survivor lost the partition, this side's empty copy is what it holds."""
    outcome = Merged()
    answered: list[tuple[Partition, int]] = []
    pending: list[tuple[Partition, Op]] = []
    for copy in copies:
        op = _probe(copy)
        if op is not None:
            pending.append((copy, op))
        elif served:
            answered.append((copy, Status.LOST))
    deadline = time.monotonic() + timeout
    delay = 0.01
    while pending:
        unsure = []
        for (copy, op), result in zip(
            pending, await _run(invoker, [op for _, op in pending], deadline), strict=True
        ):
            if result.status in (Status.OK, Status.LOST):
                answered.append((copy, result.status))
            else:  # (no quorum there yet, a timeout: asked again)
                unsure.append((copy, op))
        if abandoned():
            outcome.left = [copy for copy, _ in unsure]
            break
        if unsure and time.monotonic() + delay > deadline:
            outcome.failed += len(unsure)
            log.warning("%d copies could not be merged: their owners did not answer", len(unsure))
            break
        pending = unsure
        if pending:
            await asyncio.sleep(delay)
            delay = min(delay * 2, retry_max)
    for index, (copy, status) in enumerate(answered):
        if abandoned():
            outcome.left += [c for c, _ in answered[index:]]
            return outcome
        deadline = time.monotonic() + timeout
        if status == Status.LOST:
            how = await _restore(copy, restore, deadline, retry_max, abandoned)
            if how == "restored":
                outcome.restored += 1
                continue
            if how != "served":
                outcome.failed += 1
                log.warning("partition %d could not be restored: its owner kept answering %r", copy.id, how)
                continue
        if copy.journal:
            await _send_changes(copy, True, invoker, batch, deadline, outcome, abandoned)
    return outcome


def _probe(copy: Partition) -> Op | None:
    """A cheap op that answers LOST where the survivor lost ``copy``'s partition (a SIZE of one
    of its maps), or None for a copy with nothing in it."""
    name = next(iter(copy.maps), None)
    if name is None:
        name = next((map_name for map_name, _ in (copy.journal or {})), None)
    return None if name is None else Op(Code.SIZE, copy.id, name)


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
