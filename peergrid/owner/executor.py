"""The owner's side of an operation: check it, run it, replicate it.

Every operation that reaches this member, from a peer's frame or from this
member's own callers, comes through ``execute`` on the loop thread. Anything
a peer sends is checked here (codes, partitions, sizes) before it touches a
partition; a bad op gets INVALID and changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from peergrid.config import GridConfig
from peergrid.events.publisher import EventPublisher
from peergrid.multiget import pack_got, unpack_keys
from peergrid.owner.stores import StoreOps
from peergrid.owner.writes import OwnerWrites
from peergrid.protocol import (
    COMPUTE,
    KEYED,
    KNOWN,
    MAX_NAME,
    MEMORY_ONLY,
    REFILLS,
    WRITES,
    Code,
    Effect,
    EffectKind,
    Op,
    Result,
    Status,
    settled,
)
from peergrid.replication import PartitionManager
from peergrid.storage import Partition, journal
from peergrid.storage import ops as storage_ops
from peergrid.storage.records import Records
from peergrid.storage.registry import MapRegistry


class Compute(Protocol):
    """Entry processors and locks, as the executor hands them their ops."""

    def execute(self, op: Op, caller_version: int) -> Result | asyncio.Future[Result]:
        """Run one checked compute op."""

    def add(
        self, part: Partition, name: str, key: bytes, amount: int, contributor: str
    ) -> Result | asyncio.Future[Result]:
        """Add ``amount`` to the counter at ``key``, counted as ``contributor``'s."""


READ_THROUGH = frozenset({Code.GET, Code.CONTAINS, Code.TTL, Code.ENTRY_VIEW})
_HANDED_OFF = frozenset({Code.GET, Code.CONTAINS})  # read from the copy on its way while migrating
_UNSTORED = frozenset({Code.EVICT, Code.EVICT_ALL, Code.DESTROY})  # writes that never touch the store
_CONDITIONAL = frozenset({Code.PUT_IF_ABSENT, Code.REPLACE, Code.REPLACE_IF_SAME})
_JOURNALED = frozenset({EffectKind.PUT, EffectKind.DELETE, EffectKind.CLEAR})
_MERGED = _JOURNALED | {EffectKind.DELTA}
_WHOLE_MAP = frozenset({Code.CLEAR, Code.EVICT_ALL, Code.DESTROY})
_UNJOURNALED = frozenset({Code.EVICT, Code.EVICT_ALL})  # evictions, as the owner's own: memory only
_UNNAMED = frozenset({Code.BACKUP, Code.RECOVER, Code.TOUCH})  # partition-wide: no map, no key
# Single-key writes of a map (set, put, delete, replace, expire, ... not entry processors or
# locks): callers send them only from ``MapCore._write`` (and ``put_all``'s SETs from
# ``_invalidating``), which keep the key out of their near cache around them, so the owner
# sends the sender no event of them.
_OWN_ENTRY = (WRITES & KEYED) - COMPUTE
_INFINITY = float("inf")


def _time_left(part: Partition, op: Op, result: Result) -> None:
    """Tell a reader (a near cache) how long the value of ``op``'s key has left here."""
    store = part.maps.get(op.map)
    if store is not None and store.may_expire:
        result.ttl = store.time_left(op.key)


def _found_only(forwarded: asyncio.Future[Result]) -> asyncio.Future[Result]:
    """A CONTAINS answered from a GET's ``forwarded`` result: whether the key was found."""
    done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

    def answer(future: asyncio.Future[Result]) -> None:
        result = future.result()
        done.set_result(Result(found=result.found) if result.status == Status.OK else result)

    forwarded.add_done_callback(answer)
    return done


class Executor:
    """Runs operations as this member's partitions' owner. Loop thread only."""

    def __init__(
        self,
        config: GridConfig,
        manager: PartitionManager,
        table_version: Callable[[], int],
        has_quorum: Callable[[], bool],
        has_lease: Callable[[], bool],
        values_equal: storage_ops.ValuesEqual,
        registry: MapRegistry,
        publisher: EventPublisher,
        owner: OwnerWrites,
        stores: StoreOps,
        window: journal.Window,
        compute: Callable[[Executor], Compute],
    ) -> None:
        self._window = window
        self._stores = stores
        self._registry = registry
        self._publisher = publisher
        self._owner = owner
        self._config = config
        self._limits = config.limits
        self._partition_count = config.partition_count
        self._max_key = config.limits.max_key_bytes
        self._max_value = config.limits.max_value_bytes
        self._max_keys = config.limits.max_batch_ops  # of a GET_MANY op
        self._manager = manager
        self._table_version = table_version
        self._has_quorum = has_quorum
        self._has_lease = has_lease
        self._equal = values_equal
        self.compute = compute(self)  # entry processors and locks, on this write path
        # Hands a write's result, carried by this member's backup copy of it, to the call of
        # this member that waits for it (``protocol.with_reply``): the member wires it.
        self.take_reply: Callable[[str, Op], bool] = lambda sender, op: False

    def check(self, op: Op) -> str | None:
        """Why ``op`` is malformed or over a limit, or None.

        Run for every op a peer sends (a frame of a get_all: once a key), so its limits are read
        once, in ``__init__`` (the config is frozen), and the ttl is looked at only when set.
        """
        code = op.code
        if code not in KNOWN:
            return f"unknown operation code {code}"
        if not 0 <= op.partition < self._partition_count:
            return f"partition {op.partition} is out of range 0..{self._partition_count - 1}"
        if code in _UNNAMED:
            return None
        name = op.map
        if code == Code.FLUSH:
            return None if name else "flush names a map"
        if code == Code.MERGE and any(e.map != name or e.kind not in _MERGED for e in op.effects):
            return "a merge carries puts, deletes and clears of its own map only"
        if not name or len(name) > MAX_NAME:
            return f"map names must have 1 to {MAX_NAME} characters"
        if code == Code.GET_MANY:
            return None  # its keys are checked as it unpacks them (_get_many)
        key = op.key
        if not key and code in KEYED:
            return "the operation needs a key"
        if len(key) > self._max_key:
            return f"key of {len(key)} bytes exceeds limits.max_key_bytes={self._max_key}"
        if len(op.value) > self._max_value or len(op.expect) > self._max_value:
            return f"value exceeds limits.max_value_bytes={self._max_value}"
        ttl = op.ttl
        if ttl:  # NaN is true too, and refused below
            if not ttl >= 0 or ttl == _INFINITY:
                return f"ttl must be a finite number of seconds >= 0, got {ttl}"
        elif code == Code.EXPIRE:
            return "expire needs a ttl > 0 seconds"
        return None

    def execute(
        self, op: Op, caller_version: int, sender: str = "", frame_id: int = 0, index: int = 0
    ) -> Result | asyncio.Future[Result]:
        """Run one op (``sender``: the uuid of the member that sent it, if a peer did, as op
        ``index`` of its frame ``frame_id`` on a stream, 0 otherwise); a future when it waits
        for backups."""
        problem = self.check(op)
        if problem is not None:
            return Result(Status.INVALID, message=problem)
        if op.code in COMPUTE:
            return self.compute.execute(op, caller_version)
        if op.code == Code.BACKUP:
            status = self._manager.apply_backup(op.partition, op.version, op.effects, caller_version, sender)
            if op.key and status == Status.OK:
                # The copy carries the result of a write this member's caller sent: found says
                # whether the call took it (``Replicator.replicate``).
                return Result(status, found=self.take_reply(sender, op))
            return Result(status)
        if op.code == Code.RECOVER:
            return self._recover(op.partition, caller_version)
        if op.code == Code.TOUCH:
            self._manager.apply_touch(op.partition, op.effects, caller_version, sender)
            return Result()
        if op.code == Code.GET_MANY:
            return self._get_many(op, caller_version, sender)
        if op.code == Code.HANDOFF_GET:
            return self._handoff_get(op, caller_version, sender)
        write = op.code in WRITES
        part = self.admit(op, caller_version)
        if isinstance(part, Result):
            migrating = part.status == Status.RETRY and caller_version <= self._table_version()
            if migrating and op.code in _HANDED_OFF:
                # Read from the copy on its way here (PartitionManager.handoff_read), if any.
                forwarded = self._manager.handoff_read(op)
                if forwarded is not None:
                    return forwarded if op.code == Code.GET else _found_only(forwarded)
            if migrating:
                self._manager.hurry(op.partition)  # the caller retries: its copy goes first
            return part
        if op.code == Code.FLUSH:
            return asyncio.ensure_future(self._stores.flush(part, op.map))
        if op.code == Code.MERGE:
            return self._merge(part, op)
        if not write:
            if part.unacked:
                fence = part.unacked.get((op.map, op.key)) or part.unacked.get((op.map, b""))
                if fence is not None:
                    return asyncio.ensure_future(self._after_unacked(fence, op, caller_version, sender))
            result = storage_ops.execute(part, op, self._equal)[0]
            result.version = part.version
            if result.found and op.code == Code.GET:
                _time_left(part, op, result)
            if not result.found and op.code in READ_THROUGH and self._stores.backed(op.map):
                return self._stores.read(part, op, lambda: storage_ops.execute(part, op, self._equal)[0])
            return result
        config = self._registry.config(op.map)
        if config.store is not None and op.code not in _UNSTORED:
            return self._stores.write(part, op, config, lambda: self._write(part, op, origin=sender))
        if frame_id and op.code in _OWN_ENTRY:
            return self._write(part, op, origin=sender, reply=(sender, frame_id, index))
        return self._write(part, op, origin=sender)

    def _get_many(self, op: Op, caller_version: int, sender: str) -> Result | asyncio.Future[Result]:
        """A get_all's keys of one map (``peergrid.multiget``), each answered as a GET would be.

        The checks of ``admit`` run once per op (quorum, lease: a refusal answers the whole op,
        and the caller asks key by key, hearing why) and once per partition (served here, the
        caller's table version): a key of a partition not served here is answered with that
        status, and its caller asks for it again as a lone GET. A key that a lone GET would
        not answer at once (a write of it awaits its backups, or a miss loads from the map's
        store) runs as that GET, and the answer waits for it.
        """
        try:
            keys, partitions = unpack_keys(op, self._max_key, self._partition_count, self._max_keys)
        except ValueError as exc:
            return Result(Status.INVALID, message=str(exc))
        if not self._has_quorum() or not self._has_lease():
            # Refused whole: the caller asks key by key, and each lone GET hears why (admit).
            return Result(Status.RETRY, message="this member serves no partition now (quorum or lease)")
        name = op.map
        backed = self._stores.backed(name) is not None
        behind = caller_version > self._table_version()
        readable = self._manager.readable
        handoffs = self._manager.handoffs
        n = len(keys)
        versions = [0] * n
        ttls = [0.0] * n
        values: list[bytes | None] = [None] * n
        statuses = bytearray(n)
        waiting: list[tuple[int, asyncio.Future[Result]]] = []
        refused: dict[int, int] = {}  # partition -> status, for those not served here
        for i in range(n):
            p = partitions[i]
            part = readable[p]
            key = keys[i]
            if part is None or behind:
                status = refused.get(p)
                if status is None:
                    status = refused[p] = self._not_serving(p, caller_version).status
                if behind or status != Status.RETRY or p not in handoffs:
                    statuses[i] = status
                    continue
                # Migrating here: the lone GET reads the copy on its way (see execute).
            elif part.unacked and ((name, key) in part.unacked or (name, b"") in part.unacked):
                pass  # a write of it awaits its backups: the lone GET waits for it
            else:
                store = part.maps.get(name)
                value = store.get(key) if store is not None else None
                if value is not None or not backed:
                    versions[i] = part.version
                    if value is not None:
                        values[i] = value
                        if store is not None and store.may_expire:
                            ttls[i] = store.time_left(key)
                    continue
            outcome = self.execute(Op(Code.GET, p, name, key), caller_version, sender)
            if isinstance(outcome, Result):
                self._got_one(i, outcome, versions, ttls, values, statuses)
            else:
                waiting.append((i, outcome))
        if not waiting:
            return Result(value=pack_got(versions, ttls, values, statuses), found=True, count=n)
        return self._many_later(waiting, versions, ttls, values, statuses)

    def _handoff_get(self, op: Op, caller_version: int, sender: str) -> Result:
        """A new owner's GET of a partition it is copying from this member
        (``PartitionManager.handoff_read``): read from our copy, only if it is still the copy at
        ``op.version`` and we run the same member list, in which the sender owns the partition.
        Then no write of it can have been acknowledged since that copy was the newest (no one
        serves it: the owner waits for the copy, and any later owner must first ask us, moving
        us to its list), so the read is as fresh as the owner's own would be."""
        manager = self._manager
        table = manager.table
        p = op.partition
        part = manager.parts[p]
        if not self._has_quorum() or not self._has_lease():
            why = "this member serves nothing now (quorum or lease)"
        elif caller_version != table.version or caller_version != self._table_version():
            why = f"the asker's member list ({caller_version}) is not this member's ({table.version})"
        elif table.owner(p) != sender:
            why = f"the asker does not own partition {p} in this member's table"
        elif part is None or part.version != op.version:
            why = f"this member's copy of partition {p} is not at version {op.version}"
        elif part.unacked and ((op.map, op.key) in part.unacked or (op.map, b"") in part.unacked):
            why = "a write of this key is not acknowledged by its backups yet"
        else:
            result = storage_ops.execute(part, Op(Code.GET, p, op.map, op.key), self._equal)[0]
            if result.found or self._stores.backed(op.map) is None:
                result.version = part.version
                if result.found:
                    _time_left(part, op, result)
                return result
            why = "a miss loads from the map's store, which its owner does once it serves"
        return Result(Status.RETRY, message=why)

    def _many_later(
        self,
        waiting: list[tuple[int, asyncio.Future[Result]]],
        versions: list[int],
        ttls: list[float],
        values: list[bytes | None],
        statuses: bytearray,
    ) -> asyncio.Future[Result]:
        """A GET_MANY's answer once the lone GETs of some of its keys (``waiting``) ended."""
        n = len(values)
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        left = len(waiting)

        def one(i: int, future: asyncio.Future[Result]) -> None:
            nonlocal left
            self._got_one(i, settled(future), versions, ttls, values, statuses)
            left -= 1
            if left == 0 and not done.done():
                done.set_result(Result(value=pack_got(versions, ttls, values, statuses), found=True, count=n))

        for i, future in waiting:
            future.add_done_callback(lambda f, i=i: one(i, f))  # type: ignore[misc]
        return done

    @staticmethod
    def _got_one(
        i: int,
        result: Result,
        versions: list[int],
        ttls: list[float],
        values: list[bytes | None],
        statuses: bytearray,
    ) -> None:
        """Key ``i`` of a GET_MANY, answered by a lone GET: its ``result`` in the columns."""
        if result.status != Status.OK:
            statuses[i] = result.status
            return
        versions[i] = result.version
        ttls[i] = result.ttl
        if result.found:
            values[i] = result.value

    async def _after_unacked(
        self, fence: asyncio.Future[Result], op: Op, caller_version: int, sender: str
    ) -> Result:
        """Read ``op``'s key once the write of it that the backups have not acknowledged is:
        answered before, the read could return a value that a split then loses (the write ends
        INDETERMINATE and a backup beyond the split is promoted without it). If that write does
        not end acknowledged, the caller asks again (the backups may be repaired meanwhile, or
        this member lose its lease)."""
        try:
            written = await asyncio.shield(fence)
        except Exception:  # noqa: BLE001 - any failure of the write: the read is retried
            written = None
        if written is None or written.status != Status.OK:
            return Result(Status.RETRY, message="a write of this key is not acknowledged by its backups yet")
        outcome = self.execute(op, caller_version, sender)
        return await outcome if isinstance(outcome, asyncio.Future) else outcome

    def admit(self, op: Op, caller_version: int) -> Partition | Result:
        """The partition to run a checked ``op`` on, or the result refusing it (quorum, lease,
        not served here). Reads and writes alike: a read served without them could miss the
        latest acknowledged write."""
        if not self._has_quorum():
            # Checked first: on the minority side of a split, nothing is served, whatever the partition.
            return Result(
                Status.QUORUM,
                message=f"this member sees fewer than min_cluster_size={self._config.min_cluster_size} "
                "members",
            )
        part = self._manager.readable[op.partition]
        if part is None or caller_version > self._table_version():
            return self._not_serving(op.partition, caller_version)
        if not self._has_lease():
            # Others may have declared this member dead (it was paused, or cut off) and serve the
            # partition now: it must not answer until it hears it is still a member.
            return Result(
                Status.RETRY,
                message="this member's owner lease ran out: it has not been confirmed a member lately",
            )
        return part

    def apply_write(
        self, part: Partition, op: Op, delta: tuple[str, int] | None = None
    ) -> Result | asyncio.Future[Result]:
        """Run a map write (SET, DELETE, ...) that another owner-side module computed, on ``part``
        (served here, admitted, in the key's store order if the map has a store): bounds, version,
        backups, events and eviction as for any write. ``delta``: the SET is an increment of a
        counter, ``(contributor, amount)`` (journaled as such, so a merge adds it)."""
        return self._write(part, op, delta=delta)

    def _write(
        self,
        part: Partition,
        op: Op,
        stamp: int = 0,
        delta: tuple[str, int] | None = None,
        origin: str = "",
        reply: tuple[str, int, int] | None = None,
    ) -> Result | asyncio.Future[Result]:
        """``_apply`` with the key fenced from before it changes: owner-local reads run on
        callers' threads, unlocked, and look for a fence after they read the records
        (``MapCore``'s ``_unacked``): one that read the new value must find it fenced, until
        the backups acknowledged it (``_fence`` replaces this mark with the write's outcome;
        a write that waits for none removes it)."""
        key = (op.map, op.key)
        before = part.unacked.get(key)
        part.unacked[key] = _APPLYING
        try:
            return self._apply(part, op, stamp, delta, origin, reply)
        finally:
            if part.unacked.get(key) is _APPLYING:
                if before is None:
                    del part.unacked[key]
                else:
                    part.unacked[key] = before

    def _apply(
        self,
        part: Partition,
        op: Op,
        stamp: int,
        delta: tuple[str, int] | None,
        origin: str,
        reply: tuple[str, int, int] | None = None,
    ) -> Result | asyncio.Future[Result]:
        """Run a map write on ``part``: bounds, version, journal, backups, events, eviction.

        ``stamp``: the journal stamp of a merged change (see ``_merge``); other writes are
        stamped by this member's clock while it journals (``peergrid.storage.journal``).
        ``origin``: the uuid of the member whose caller sent the op, "" when none did.
        ``reply``: where the op's answer goes (``Replicator.replicate``), if its sender may take
        it from its backup copy.
        """
        name = op.map
        config = self._registry.config(name)
        store = part.maps.get(name)
        behind = config.write_behind is not None and op.code not in MEMORY_ONLY
        if behind and op.code == Code.CLEAR and store is not None:
            cleared_keys: list[bytes] = list(store.values)
        else:
            cleared_keys = []
        old: bytes | None = None
        cleared: list[tuple[bytes, bytes]] | None = None
        if store is not None and self._publisher.interested(name):
            # Events carry the value an entry had before this write.
            if op.code in _WHOLE_MAP:
                if op.code != Code.DESTROY and self._publisher.wants_entries(name):
                    cleared = [(key, value) for key, value, _ in store.items()]
            else:
                old = store.peek(op.key)
        size_before = (0, 0)
        if config.bounded:
            self._owner.usage(name)  # recount first if the table moved, so this write's delta counts once
            refused = self._owner.refuse(part, op, config) if self._writes(store, op) else None
            if refused is not None:
                return refused
            size_before = (len(store), store.nbytes) if store is not None else (0, 0)
        result, effects = storage_ops.execute(part, op, self._equal)
        if not effects:
            return result
        if stamp or (self._window.active() and op.code not in _UNJOURNALED):
            effects = self._journal(part, effects, stamp, delta)
        elif delta is not None:
            # Unstamped, it journals nothing; should journaling begin before the backups acked
            # it, the owner journals it as the increment it is (``journal_pending``).
            effects = (*effects, Effect(EffectKind.DELTA, op.map, op.key, journal.encode_delta(*delta)))
        part.version += 1
        result.version = part.version
        if op.code in REFILLS:
            _time_left(part, op, result)
        if behind:
            # Queued in the same versioned change: backups hold the pending write with the value.
            effects = (*effects, *self._stores.enqueue(part, name, effects, cleared_keys))
        replicator = self._manager.replicator
        outcome = replicator.replicate(op.partition, part.version, effects, result, reply)
        skip: tuple[str, ...] = ()
        if isinstance(outcome, asyncio.Future):
            _fence(part, (name, op.key), outcome)
            # Events a near cache learns otherwise, not sent to it (a message less each):
            # - a sync backup's near caches take the change from the write's copy as it applies
            #   it, before it acknowledges it (``NearCache.on_copy_changed``); a backup that
            #   does not take it is told of a gap (``Replicator.failed``);
            skip = replicator.sync_backups(op.partition)
        if origin and op.code in _OWN_ENTRY:
            # - the sender's write path refills or drops its entry once a single-key write
            #   ends (``MapCore._write``, ``NearCache.write_ends``).
            skip = (*skip, origin)
        if config.bounded or self._publisher.interested(name):
            self._owner.written(part, op, config, effects, old, cleared, size_before, skip)
        return outcome

    def _journal(
        self, part: Partition, effects: tuple[Effect, ...], stamp: int, delta: tuple[str, int] | None
    ) -> tuple[Effect, ...]:
        """Stamp a write's changes and journal them (the backups journal them as they apply). An
        increment journals as such: a DELTA effect after its unstamped SET."""
        stamped = []
        for effect in effects:
            if effect.kind in _JOURNALED:
                mine = part.stamp_after(effect, stamp or self._window.clock.now())
                if delta is not None and effect.kind == EffectKind.PUT:
                    stamped.append(effect)
                    who, amount = delta
                    total = (part.contributions(effect.map, effect.key) or {}).get(who, 0) + amount
                    value = journal.encode_delta(who, total)
                    effect = Effect(  # noqa: PLW2901 - the journal's record of it follows it
                        EffectKind.DELTA, effect.map, effect.key, value, 0.0, mine
                    )
                else:
                    effect = effect._replace(stamp=mine)  # noqa: PLW2901 - the stamped copy replaces it
                part.note(effect)
            stamped.append(effect)
        return tuple(stamped)

    def _merge(self, part: Partition, op: Op) -> Result | asyncio.Future[Result]:
        """Apply a merging member's changes of one map in one partition, by the map's policy.

        Each change that wins becomes an ordinary write here (versioned, replicated, published,
        journaled with the change's own stamp). ``op.version`` is the merging side's version of
        the partition: ours is raised to it first, so lock tokens granted here from now on exceed
        every token granted on either side (the backups answer the jump with GAP and are sent
        the whole partition). ``count`` says how many changes won.
        """
        policy = self._registry.config(op.map).merge_policy
        part.version = max(part.version, op.version)
        pending: list[asyncio.Future[Result]] = []
        won = 0
        for change in op.effects:
            if change.stamp:
                self._window.clock.observe(change.stamp)
            if change.kind == EffectKind.DELTA:
                added = self._merge_increment(part, op, change, policy)
                if added is not None:
                    won += 1
                    if isinstance(added, asyncio.Future):
                        pending.append(added)
                continue
            for write in self._merged_writes(part, op, change, policy):
                won += 1
                outcome = self._write(part, write, change.stamp)
                if isinstance(outcome, asyncio.Future):
                    pending.append(outcome)
                elif outcome.status != Status.OK:
                    return outcome
        result = Result(count=won)
        if not pending:
            return result
        return _first_failure(pending, result)

    def _merge_increment(
        self, part: Partition, op: Op, change: Effect, policy: str
    ) -> Result | asyncio.Future[Result] | None:
        """A counter the merging side only incremented (``change``: one contributor's count of
        it): add what this side does not count yet, if it did not set or delete the key
        meanwhile (then every increment of both sides counts once), by the map's policy; None
        when nothing is added (or the value here is no int counter)."""
        if policy == "discard":
            return None
        store = part.maps.get(op.map)
        present = store is not None and store.peek(change.key) is not None
        counts = part.contributions(op.map, change.key)
        if policy == "put_if_absent" and present:
            return None
        if policy == "latest_update" and counts is None and part.journaled(op.map, change.key) is not None:
            return None  # set or deleted here while split: that write stands
        try:
            who, total = journal.decode_delta(change.value)
        except ValueError:
            return None
        missing = total - (counts or {}).get(who, 0)
        if missing <= 0:
            return None
        added = self.compute.add(part, op.map, change.key, missing, who)
        if isinstance(added, Result) and added.status != Status.OK:
            return None  # not an int counter here: left as it is
        return added

    def _merged_writes(self, part: Partition, op: Op, change: Effect, policy: str) -> list[Op]:
        """The writes that apply ``change`` here, if it wins (none if it does not)."""
        store = part.maps.get(op.map)
        if change.kind == EffectKind.CLEAR:
            if store is None or not journal.applies(policy, change.stamp, None, True):
                return []
            # Keys not changed here after the clear go (a later change here wins).
            return [
                Op(Code.DELETE, part.id, op.map, key)
                for key, _, _ in list(store.items())
                if (rec := part.journaled(op.map, key)) is None or journal.stamp_in(rec) < change.stamp
            ]
        present = store is not None and store.peek(change.key) is not None
        if not journal.applies(policy, change.stamp, part.journaled(op.map, change.key), present):
            return []
        if change.kind == EffectKind.DELETE:
            return [Op(Code.DELETE, part.id, op.map, change.key)] if present else []
        ttl = 0.0
        if change.expire_at:
            ttl = change.expire_at - time.time()
            if ttl <= 0:
                return []  # expired meanwhile
        return [Op(Code.SET, part.id, op.map, change.key, change.value, ttl=ttl)]

    def _writes(self, store: Records | None, op: Op) -> bool:
        """Whether a conditional write would change anything (one that would not is never
        refused for capacity: it answers as it would on a map with room)."""
        code = op.code
        if code not in _CONDITIONAL:
            return True
        current = store.peek(op.key) if store is not None else None
        if code == Code.PUT_IF_ABSENT:
            return current is None
        if code == Code.REPLACE:
            return current is not None
        return current is not None and self._equal(current, op.expect)  # REPLACE_IF_SAME

    def _recover(self, p: int, caller_version: int) -> Result:
        if caller_version > self._table_version() or self._manager.table.owner(p) != self._manager.uuid:
            return self._not_serving(p, caller_version)
        if p not in self._manager.lost and self._manager.readable[p] is None:
            return Result(Status.RETRY, message=f"partition {p} is migrating to this member")
        return Result(found=self._manager.recover(p))

    def _not_serving(self, p: int, caller_version: int) -> Result:
        mine = self._table_version()
        if caller_version > mine:
            return Result(
                Status.RETRY,
                message=f"this member's table ({mine}) is behind the caller's ({caller_version})",
            )
        if p in self._manager.lost:
            return Result(Status.LOST, message=f"partition {p} lost every copy")
        if self._manager.table.owner(p) == self._manager.uuid:
            return Result(Status.RETRY, message=f"partition {p} is migrating to this member")
        return Result(Status.MOVED, message=f"this member does not own partition {p}")


#: ``Partition.unacked``'s mark of a key while the loop applies a write of it (never awaited:
#: the loop's own readers cannot run meanwhile).
_APPLYING = object()


def _fence(part: Partition, key: tuple[str, bytes], outcome: asyncio.Future[Result]) -> None:
    """Until ``outcome`` (a write of ``key``: b"" for the whole map) is acknowledged, reads of
    the key wait for it (``Executor._after_unacked``)."""
    part.unacked[key] = outcome

    def done(_: asyncio.Future[Result]) -> None:
        if part.unacked.get(key) is outcome:
            del part.unacked[key]

    outcome.add_done_callback(done)


def _first_failure(pending: list[asyncio.Future[Result]], result: Result) -> asyncio.Future[Result]:
    """A future of ``result`` once every write of a merge ended, or of the first that failed."""
    done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
    left = len(pending)

    def one(future: asyncio.Future[Result]) -> None:
        nonlocal left
        left -= 1
        outcome = settled(future)
        if done.done():
            return
        if outcome.status != Status.OK:
            done.set_result(outcome)
        elif left == 0:
            done.set_result(result)

    for future in pending:
        future.add_done_callback(one)
    return done
