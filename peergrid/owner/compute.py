"""The owner's side of entry processors and locks.

Both are read-modify-write steps that run on the key's owner, on the loop
thread, between two other operations on the partition: what they read cannot
change before their write is applied. Neither writes a partition by itself:
each computes an ordinary map write (SET or DELETE) and hands it to the
executor's write path, so it is versioned, shipped to the backups, published
to listeners and near caches, and counted for eviction like any other write.
On a map with a store, a processor runs in the key's write order, on the value
loaded from the store if memory misses it, and its write goes through the
store (or the write-behind queue) first (``StoreOps.compute``).

Locks live in the partition, in an internal map per user map
(``__peergrid.maps.locks.<map>``): encoded key -> a ``LockRecord``. So a lock is
replicated with its partition's other writes, survives its owner's death on
the backups and moves with the partition. A lease is the record's TTL. A lock
whose holder's member is no longer in the member list is free (and the record
is dropped by its owner when the list changes). A grant's fencing token is the
partition's version before the grant plus one: greater than the version after
every earlier write to the partition, every earlier grant included, on this
owner or any before it (a new owner starts from the highest surviving
version, which holds every acknowledged grant).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import msgpack

from peergrid.config import check_ttl
from peergrid.errors import PeerGridError
from peergrid.owner.processors import INCREMENT, Entry, ProcessorRegistry
from peergrid.protocol import Code, LockRequest, MemberList, Op, Result, Status, unpack_fields
from peergrid.serialization import Serializer, decode_key
from peergrid.storage import Partition
from peergrid.storage.registry import MapRegistry

if TYPE_CHECKING:
    from peergrid.owner.stores import StoreOps
    from peergrid.owner.writes import OwnerWrites
    from peergrid.replication import PartitionManager

log = logging.getLogger("peergrid.compute")

LOCKS_PREFIX = "__peergrid.maps.locks."
"""Internal maps of lock records: ``LOCKS_PREFIX + map name``. User map names may not start with
``__peergrid.``."""


def lock_map(name: str) -> str:
    """The internal map holding the locks of map ``name``."""
    return LOCKS_PREFIX + name


class LockRecord(NamedTuple):
    """A held lock, as its partition stores it."""

    member: str
    holder: int
    holds: int  # reentrant holds
    token: int  # the fencing token of this grant
    nonce: int  # the last lock or unlock call applied (its retries change nothing)

    def encode(self) -> bytes:
        """The stored value."""
        return msgpack.packb(list(self), use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes) -> LockRecord:
        """Parse a stored record; ``ValueError`` when malformed."""
        member, holder, holds, token, nonce = unpack_fields(data, 5)
        if not isinstance(member, str) or not all(isinstance(n, int) for n in (holder, holds, token, nonce)):
            raise ValueError("a lock record is [member uuid, holder id, holds, token, nonce]")
        return cls(member, holder, holds, token, nonce)

    def held_by(self, request: LockRequest) -> bool:
        """True when ``request`` comes from this record's holder."""
        return self.member == request.member and self.holder == request.holder


class WritePath(Protocol):
    """The owner's write path (``Executor``) as compute ops use it."""

    def admit(self, op: Op, caller_version: int) -> Partition | Result:
        """The partition to run ``op`` on, or the result refusing it."""
        ...

    def apply_write(
        self, part: Partition, op: Op, delta: tuple[str, int] | None = None
    ) -> Result | asyncio.Future[Result]:
        """Run a computed map write on ``part`` like any write."""
        ...


class ComputeOps:
    """Runs entry processors and lock operations as this member's partitions' owner. Loop thread only."""

    def __init__(
        self,
        executor: WritePath,
        stores: StoreOps,
        processors: ProcessorRegistry,
        serializer: Serializer,
        registry: MapRegistry,
        manager: PartitionManager,
        owner: OwnerWrites,
        members: Callable[[], MemberList],
        max_value_bytes: int,
        contributor: Callable[[], str],
    ) -> None:
        self._executor = executor
        self._contributor = contributor  # whose increments this member's are, in a counter's journal
        self._stores = stores
        self._processors = processors
        self._loads = serializer.loads
        self._dumps = serializer.dumps
        self._registry = registry
        self._manager = manager
        self._owner = owner
        self._members = members
        self._max_value = max_value_bytes
        # (the member list, its uuids): keyed by the list itself, not its version: a member that
        # re-joined another instance of the cluster can meet the same version number again.
        self._present: tuple[MemberList | None, frozenset[str]] = (None, frozenset())
        self._sweep_scheduled = False

    def execute(self, op: Op, caller_version: int) -> Result | asyncio.Future[Result]:
        """Run one checked compute op (``Code.EXECUTE``, ``LOCK``, ``UNLOCK``, ``LOCK_STATE``)."""
        part = self._executor.admit(op, caller_version)
        if isinstance(part, Result):
            return part
        if op.code == Code.EXECUTE:
            return self._process(part, op)
        if op.code == Code.LOCK_STATE:
            record = self._lock_of(part, op)
            return Result(found=record is not None, count=record.token if record is not None else 0)
        try:
            request = LockRequest.decode(op.value)
        except ValueError as exc:
            return Result(Status.INVALID, message=f"malformed lock request: {exc}")
        if op.code == Code.LOCK:
            return self._lock(part, op, request)
        return self._unlock(part, op, request)

    # ------------------------------------------------------------------ entry processors
    def add(
        self, part: Partition, name: str, key: bytes, amount: int, contributor: str
    ) -> Result | asyncio.Future[Result]:
        """Increment the counter at ``key`` of map ``name`` by ``amount`` here, as ``increment``
        does, counted as ``contributor``'s (a merge adds the other side's increments this way)."""
        op = Op(Code.EXECUTE, part.id, name, key, self._dumps([amount, None]), _INCREMENT)
        return self._process(part, op, contributor)

    def _process(
        self, part: Partition, op: Op, contributor: str | None = None
    ) -> Result | asyncio.Future[Result]:
        config = self._stores.backed(op.map)
        if config is None:
            write, answer = self._run_processor(part, op)
            if write is None:
                return answer
            amount = _increment_of(op, write, self._loads)
            delta = (contributor or self._contributor(), amount) if amount is not None else None
            return _then(self._executor.apply_write(part, write, delta), answer)
        # A map with a store: the processor runs in the key's write order, on the stored value.
        answers: list[Result] = []

        def decide() -> Op | Result:
            write, answer = self._run_processor(part, op)
            answers.append(answer)
            return answer if write is None else write

        def apply(write: Op) -> Result | asyncio.Future[Result]:
            return _then(self._executor.apply_write(part, write), answers[0])

        return self._stores.compute(part, op, config, decide, apply)

    def _run_processor(self, part: Partition, op: Op) -> tuple[Op | None, Result]:
        """Run the processor on the entry as it is now: the write it calls for (None: nothing to
        write), and the answer to send back (or the failure, with no write)."""
        name = op.expect.decode("utf-8", "replace")
        fn = self._processors.get(name)
        if fn is None:
            return None, _failed(
                name,
                f"no entry processor {name!r} is registered on the key's owner; register it on every "
                "member (@peergrid.entry_processor or grid.register_processor)",
            )
        try:
            args = self._loads(op.value)
            key = decode_key(op.key)
        except PeerGridError as exc:
            return None, Result(Status.INVALID, message=f"entry processor {name!r}: malformed call: {exc}")
        if not isinstance(args, list):
            return None, Result(Status.INVALID, message=f"entry processor {name!r}: arguments must be a list")
        store = part.maps.get(op.map)
        raw = store.get(op.key) if store is not None else None
        entry = Entry(key, raw, self._loads)
        try:
            returned = fn(entry, *args)
            answer = self._dumps(returned)
        except Exception as exc:
            log.debug("entry processor %r failed on %r", name, entry.key, exc_info=True)
            return None, _failed(name, f"entry processor {name!r} raised {type(exc).__name__}: {exc}")
        if len(answer) > self._max_value:
            return None, _failed(
                name,
                f"entry processor {name!r} returned {len(answer)} bytes, over "
                f"limits.max_value_bytes={self._max_value}",
            )
        if not entry.written:
            return None, Result(value=answer, found=True)
        write = self._write_of(part, op, entry, raw is not None)
        if isinstance(write, Result):
            return None, write
        return write, Result(value=answer, found=True)

    def _write_of(self, part: Partition, op: Op, entry: Entry, existed: bool) -> Op | Result:
        """The SET or DELETE that makes the entry what the processor left it as."""
        name = op.expect.decode("utf-8", "replace")
        if entry.value is None:
            return Op(Code.DELETE, part.id, op.map, op.key)
        try:
            value = self._dumps(entry.value)
        except PeerGridError as exc:
            return _failed(name, f"entry processor {name!r} assigned a value that cannot be stored: {exc}")
        if len(value) > self._max_value:
            return Result(
                Status.INVALID,
                message=f"entry processor {name!r}: value of {len(value)} bytes exceeds "
                f"limits.max_value_bytes={self._max_value}",
            )
        if entry.ttl is not None:
            try:
                seconds = check_ttl(entry.ttl)
            except PeerGridError as exc:
                return _failed(name, f"entry processor {name!r} set entry.ttl: {exc}")
        elif existed:
            seconds = _remaining(part, op.map, op.key)
        else:
            seconds = self._registry.config(op.map).ttl or 0.0
        return Op(Code.SET, part.id, op.map, op.key, value, ttl=seconds)

    # ------------------------------------------------------------------ locks
    def _lock_of(self, part: Partition, op: Op) -> LockRecord | None:
        """The live lock on ``op.key`` (lease not ended, holder's member still present), or None."""
        store = part.maps.get(lock_map(op.map))
        raw = store.get(op.key) if store is not None else None
        if raw is None:
            return None
        try:
            record = LockRecord.decode(raw)
        except ValueError:
            log.warning("dropping a malformed lock record of %r in map %r", op.key, op.map)
            return None
        return record if record.member in self._present_members() else None

    def _lock(self, part: Partition, op: Op, request: LockRequest) -> Result | asyncio.Future[Result]:
        if request.member not in self._present_members():
            # A grant to a member our list does not hold would be void on arrival (``_lock_of``
            # counts its record free): the next holder would get the lock while this one holds
            # it. The caller was removed and does not know yet, or its admission has not reached
            # us; either way it may ask again once our lists agree.
            log.info(
                "refused a lock of %r in map %r to member %s: not in this member's list (version %d)",
                op.key,
                op.map,
                request.member,
                self._members().version,
            )
            return Result(
                Status.RETRY,
                message="the locking member is not in the lock owner's member list (it was removed, "
                "or its admission has not reached the owner yet)",
            )
        current = self._lock_of(part, op)
        name = lock_map(op.map)
        if current is None:
            record = LockRecord(request.member, request.holder, 1, part.version + 1, request.nonce)
            lease = op.ttl
        elif not current.held_by(request):
            return Result(found=False, count=current.token)
        elif current.nonce == request.nonce:
            # A retry of a grant already applied: answered once its write is acknowledged (the
            # first attempt may still wait for its backups; answered before, the grant could be
            # lost in a split and its token granted again by the next owner).
            return _acked(part, (name, op.key), Result(found=True, count=current.token))
        else:
            record = current._replace(holds=current.holds + 1, nonce=request.nonce)
            lease = op.ttl or _remaining(part, name, op.key)
        write = Op(Code.SET, part.id, name, op.key, record.encode(), ttl=lease)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "lock %r of map %r: granted to %s/%d, token %d (partition %d at version %d)",
                op.key,
                op.map,
                request.member,
                request.holder,
                record.token,
                part.id,
                part.version,
            )
        return _then(self._executor.apply_write(part, write), Result(found=True, count=record.token))

    def _unlock(self, part: Partition, op: Op, request: LockRequest) -> Result | asyncio.Future[Result]:
        current = self._lock_of(part, op)
        if current is None or not current.held_by(request):
            return Result(found=False, count=current.token if current is not None else 0)
        if request.token not in (0, current.token):
            # The token fences unlocks that arrive late: an attempt the caller gave up on (its
            # outcome unknown), delivered after the partition healed, must not release the next
            # grant the same holder took meanwhile.
            log.info(
                "ignored an unlock of %r in map %r naming token %d: the holder holds token %d now",
                op.key,
                op.map,
                request.token,
                current.token,
            )
            return Result(found=False, count=current.token)
        name = lock_map(op.map)
        if current.nonce == request.nonce:  # a retry of an unlock already applied (see _lock)
            return _acked(part, (name, op.key), Result(found=True, count=current.token))
        if current.holds <= 1:
            write = Op(Code.DELETE, part.id, name, op.key)
        else:
            record = current._replace(holds=current.holds - 1, nonce=request.nonce)
            write = Op(Code.SET, part.id, name, op.key, record.encode(), ttl=_remaining(part, name, op.key))
        return _then(self._executor.apply_write(part, write), Result(found=True, count=current.token))

    def _present_members(self) -> frozenset[str]:
        members = self._members()
        if self._present[0] is not members:
            self._present = (members, frozenset(members.uuids))
        return self._present[1]

    # ------------------------------------------------------------------ departed holders
    def members_changed(self) -> None:
        """The member list or the served partitions changed: drop departed members' locks soon.

        Coalesced: a migration serving many partitions one by one costs one sweep.
        """
        if not self._sweep_scheduled:
            self._sweep_scheduled = True
            asyncio.get_running_loop().call_soon(self.drop_departed)

    def drop_departed(self) -> int:
        """Release, as owner, every lock whose holder's member left the list; return how many.

        Not without quorum or lease (``PartitionManager.may_change``), as no write is taken
        then: a version bumped alone could name another write on the other side of a split
        (and a merge carries the partition's version over). Until the next sweep such a lock
        counts as free anyway (``_lock_of``), and its lease ends it."""
        self._sweep_scheduled = False
        if not self._manager.may_change():
            return 0
        present = self._present_members()
        dropped = 0
        for part in self._manager.readable:
            if part is None:
                continue
            for name, store in list(part.maps.items()):
                if not name.startswith(LOCKS_PREFIX):
                    continue
                for key, raw, _ in list(store.items()):
                    try:
                        member = LockRecord.decode(raw).member
                    except ValueError:
                        member = ""
                    if member not in present:
                        self._owner.delete(part, name, key, 0)  # internal: no event
                        dropped += 1
        if dropped:
            log.info("released %d locks of members that left the cluster", dropped)
        return dropped


def _remaining(part: Partition, name: str, key: bytes) -> float:
    """Seconds left before the entry expires (0: it does not expire)."""
    store = part.maps.get(name)
    expire_at = store.expiry.get(key, 0.0) if store is not None else 0.0
    if not expire_at:
        return 0.0
    return max(expire_at - time.time(), 1e-6)


def _failed(name: str, message: str) -> Result:
    return Result(Status.PROCESSOR, message=message)


def _acked(part: Partition, key: tuple[str, bytes], answer: Result) -> Result | asyncio.Future[Result]:
    """``answer`` once the write of ``key`` that the backups have not acknowledged yet (if any)
    is; that write's own result if it fails."""
    fence = part.unacked.get(key)
    return answer if fence is None else _then(fence, answer)


def _then(outcome: Result | asyncio.Future[Result], answer: Result) -> Result | asyncio.Future[Result]:
    """``answer`` once the write ``outcome`` succeeded; the write's own result if it did not."""
    if isinstance(outcome, Result):
        return answer if outcome.status == Status.OK else outcome
    done: asyncio.Future[Result] = outcome.get_loop().create_future()

    def finish(future: asyncio.Future[Result]) -> None:
        if done.done():
            return
        if future.cancelled():
            done.set_result(Result(Status.ERROR, message="the write was cancelled on the owner"))
        elif future.exception() is not None:
            done.set_result(Result(Status.ERROR, message=f"{future.exception()!r}"))
        else:
            result = future.result()
            done.set_result(answer if result.status == Status.OK else result)

    outcome.add_done_callback(finish)
    return done


def _increment_of(op: Op, write: Op, loads: Callable[[bytes], Any]) -> int | None:
    """The delta of an ``increment`` whose write is ``write`` (a SET), else None: journaled as an
    increment, a merge after a split adds it to the other side's count."""
    if op.expect != _INCREMENT or write.code != Code.SET:
        return None
    try:
        delta = loads(op.value)[0]
    except (PeerGridError, LookupError, TypeError):
        return None
    return delta if isinstance(delta, int) and not isinstance(delta, bool) else None


_INCREMENT = INCREMENT.encode()
