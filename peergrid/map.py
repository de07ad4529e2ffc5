"""DistributedMap: the sync API of a map partitioned over the cluster.

Reads of keys whose partition this member owns are served from its own
memory, on the caller's thread, with no RPC and no thread hop; so are hits in
the map's near cache, if it has one. Everything else goes to the partition's
owner through the member's loop, coalesced with other callers' operations
bound for the same member.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from peergrid._flows import drive
from peergrid._mapcore import MapCore
from peergrid.config import MapConfig, reject_unknown
from peergrid.errors import ArgumentError, LockError, OperationTimeoutError, PeerGridError
from peergrid.events.model import EventKind
from peergrid.invocation.invoker import Group
from peergrid.locks import LockCalls, LockHandle, check_timeout, thread_holder
from peergrid.nearcache import MISS
from peergrid.processors import INCREMENT, increment_args, processor_op, processor_ops
from peergrid.protocol import Code, Op, Result
from peergrid.serialization import Key, encode_key
from peergrid.stats import LocalMapStats, MapStats, aggregate

if TYPE_CHECKING:
    from peergrid.node import Node

_MARGIN = 1.0  # the caller waits this much past the deadline for the loop's own verdict


class DistributedMap:
    """A map whose entries are spread over every member of the cluster.

    Get one with ``grid.get_map(name)``: the same name is the same map on every
    member. Keys are ``str``, ``bytes`` or ``int``; values are whatever the
    grid's serializer carries (by default None, bool, int, float, str, bytes,
    list and dict, nested). Every method may raise a ``PeerGridError``:
    ``OperationTimeoutError`` when the owner cannot be reached within the
    deadline, ``IndeterminateWriteError`` when a write's outcome is unknown,
    ``PartitionLostError``, ``QuorumError``, ``CapacityError``, ``GridClosedError``.
    """

    def __init__(self, node: Node, name: str, config: MapConfig | None = None) -> None:
        self._core = MapCore(node, name, config)
        self._node = node
        self.name = self._core.name

    def __repr__(self) -> str:
        return f"DistributedMap({self.name!r})"

    # ------------------------------------------------------------------ plumbing
    def _run(self, op: Op) -> Result:
        core = self._core
        call = core.call(op)
        self._node.invoker.start(call)
        return core.check(call.wait(core.timeout + _MARGIN), op)

    def _run_all(self, ops: list[Op]) -> list[Result]:
        return run_ops(self._node, ops, self._core)

    def _write(self, op: Op) -> Result:
        core = self._core
        started = time.perf_counter()
        core.write_begins(op)
        result = None
        try:
            result = self._run(op)
        finally:
            core.write_ends(op, result)
        core.wrote(started, op.code)
        return result

    # ------------------------------------------------------------------ reads
    def get(self, key: Key, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent or expired."""
        core = self._core
        if self._node.closed:
            self._node.ensure_open()
        started = time.perf_counter()
        encoded = core.encode(key)
        near = core.near
        if near is not None:
            cached = near.lookup(encoded)
            if cached is not MISS:
                core.got(started, True)
                return cached
        partition = core.partition(encoded)
        part = core.readable[partition]
        if part is not None and core.membership.lease_until > time.monotonic():
            # Owner-local: a dict lookup on this thread (while the owner lease holds: a member
            # that may have been declared dead meanwhile asks its loop, which waits to hear).
            store = part.maps.get(self.name)
            value = store.get(encoded) if store is not None else None
            if value is not None or core.store is None:
                core.got(started, value is not None)
                return default if value is None else core.loads(value)
            # A miss on a map with a store: this member, as owner, loads it (on its loop).
        if near is None:
            result = self._run(Op(Code.GET, partition, self.name, encoded))
            core.got(started, result.found)
            return core.decoded(result, default)
        shared = near.shared(encoded)  # another thread is fetching this key: wait for its answer
        if shared is not None and shared.wait(core.timeout + _MARGIN):
            core.got(started, shared.found)
            return shared.value if shared.found else default
        flight = near.begin(encoded)
        found, decoded, ok, version, ttl = False, None, False, 0, 0.0
        try:
            result = self._run(Op(Code.GET, partition, self.name, encoded))
            found, version, ttl = result.found, result.version, result.ttl
            decoded = core.decoded(result)
            ok = True
        finally:
            near.end(encoded, partition, decoded, found, flight, ok, version, ttl)
        core.got(started, found)
        return decoded if found else default

    def contains_key(self, key: Key) -> bool:
        """True when ``key`` has a live value."""
        core = self._core
        self._node.ensure_open()
        encoded, partition = core.key(key)
        if core.near is not None and core.near.lookup(encoded) is not MISS:
            return True
        local, value = core.local_value(encoded, partition)
        if local and (value is not None or core.store is None):
            return value is not None
        return self._run(Op(Code.CONTAINS, partition, self.name, encoded)).found

    def get_all(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """The live values of ``keys`` (absent keys are left out): one RPC per owning member."""
        self._node.ensure_open()
        core = self._core
        started = time.perf_counter()
        originals, ops, found = core.batch_ops(keys)
        flights = core.begin_fetches(ops)
        results: list[Result] = []
        try:
            results = self._run_all(ops) if ops else []
        finally:
            core.end_fetches(ops, results, flights, originals, found)
        counters = core.counters
        counters.gets += len(originals)
        counters.hits += len(found)
        counters.misses += len(originals) - len(found)
        counters.get_latency.record(time.perf_counter() - started)
        return found

    def size(self) -> int:
        """Live entries in the whole map (a count over every member)."""
        return sum(result.count for result in self._run_all(self._core.per_partition(Code.SIZE)))

    def keys(self) -> list[Key]:
        """Every live key (a snapshot gathered from every member)."""
        return self._core.keys_of(self._run_all(self._core.per_partition(Code.KEYS)))

    def items(self) -> list[tuple[Key, Any]]:
        """Every live ``(key, value)`` pair (a snapshot gathered from every member)."""
        return self._core.entries(self._run_all(self._core.per_partition(Code.ENTRIES)))

    def values(self) -> list[Any]:
        """Every live value (a snapshot gathered from every member)."""
        return [value for _, value in self.items()]

    # ------------------------------------------------------------------ writes
    def put(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> Any:
        """Store ``value`` under ``key``; return the previous value or None.

        ``ttl`` is in seconds; None means the map's default (no expiry unless set).
        """
        reject_unknown("put", unknown, ("key", "value", "ttl"))
        core = self._core
        return core.decoded(self._write(core.keyed(Code.PUT, key, core.value(value), ttl=core.ttl(ttl))))

    def set(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> None:
        """Store ``value`` under ``key`` without returning the previous value (cheaper than put)."""
        reject_unknown("set", unknown, ("key", "value", "ttl"))
        core = self._core
        self._write(core.keyed(Code.SET, key, core.value(value), ttl=core.ttl(ttl)))

    def put_if_absent(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> Any:
        """Store ``value`` only if ``key`` has no live value; return the existing value or None."""
        reject_unknown("put_if_absent", unknown, ("key", "value", "ttl"))
        core = self._core
        op = core.keyed(Code.PUT_IF_ABSENT, key, core.value(value), ttl=core.ttl(ttl))
        return core.decoded(self._write(op))

    def replace(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> Any:
        """Store ``value`` only if ``key`` has a live value; return that previous value or None."""
        reject_unknown("replace", unknown, ("key", "value", "ttl"))
        core = self._core
        return core.decoded(self._write(core.keyed(Code.REPLACE, key, core.value(value), ttl=core.ttl(ttl))))

    def replace_if_same(self, key: Key, old: Any, new: Any, ttl: float | None = None, **unknown: Any) -> bool:
        """Store ``new`` only if ``key``'s live value equals ``old``; True if it did."""
        reject_unknown("replace_if_same", unknown, ("key", "old", "new", "ttl"))
        core = self._core
        op = core.keyed(Code.REPLACE_IF_SAME, key, core.value(new), core.value(old), core.ttl(ttl))
        return self._write(op).found

    def delete(self, key: Key) -> bool:
        """Remove ``key``; True if it had a live value."""
        return self._write(self._core.keyed(Code.DELETE, key)).found

    def put_all(self, mapping: Mapping[Key, Any], ttl: float | None = None, **unknown: Any) -> None:
        """Store every entry of ``mapping``: one RPC per owning member, in parallel.

        Every key and value is checked before anything is sent. Not atomic: on
        an error some entries may have been stored.
        """
        reject_unknown("put_all", unknown, ("mapping", "ttl"))
        self._node.ensure_open()
        core = self._core
        ops = core.put_ops(mapping, ttl)
        started = time.perf_counter()
        for op in ops:
            core.invalidate(op.key)
        try:
            self._run_all(ops)
        finally:
            for op in ops:
                core.invalidate(op.key)
        core.counters.puts += len(ops)
        core.counters.put_latency.record(time.perf_counter() - started)

    def flush(self) -> None:
        """Store every write still queued for this map's store (write-behind), on every owner."""
        self._run_all(self._core.per_partition(Code.FLUSH))

    def clear(self) -> None:
        """Remove every entry of the map, on every member."""
        near = self._core.near
        if near is not None:
            near.clear()
        try:
            self._run_all(self._core.per_partition(Code.CLEAR))
        finally:
            if near is not None:
                near.clear()

    # ------------------------------------------------------------------ mapping protocol
    def __getitem__(self, key: Key) -> Any:
        missing = _MISSING
        value = self.get(key, missing)
        if value is missing:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Key, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: Key) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return self.contains_key(key)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.size()

    def __iter__(self) -> Iterator[Key]:
        return iter(self.keys())

    # ------------------------------------------------------------------ listeners
    def add_entry_listener(
        self,
        on_added: Callable[..., Any] | None = None,
        on_updated: Callable[..., Any] | None = None,
        on_removed: Callable[..., Any] | None = None,
        on_expired: Callable[..., Any] | None = None,
        on_evicted: Callable[..., Any] | None = None,
        key: Key | None = None,
        include_value: bool = True,
        local: bool = False,
        on_gap: Callable[[list[int]], Any] | None = None,
        **unknown: Any,
    ) -> str:
        """Call back on changes to this map's entries; return the listener's id.

        Each callback receives an ``EntryEvent`` (kind, map, key, value,
        old_value). ``key`` limits events to one key; ``include_value=False``
        leaves values out (cheaper); ``local=True`` hears only of entries this
        member owns. Events of one key arrive in order. Callbacks run one at a
        time on a peergrid thread. ``on_gap(partitions)`` hears of events that
        may have been missed (an owner died, a connection broke). Once this
        returns, no later change is missed (barring such gaps).
        """
        reject_unknown("add_entry_listener", unknown, _LISTENER_ARGS)
        registration = _listener_registration(
            on_added, on_updated, on_removed, on_expired, on_evicted, key, include_value, local, on_gap
        )
        return self._node.run(  # type: ignore[no-any-return]
            add_listener(self._node, self.name, self._core.loads, registration, None),
            timeout=self._core.timeout + self._node.config.timing.rpc_timeout,
        )

    def remove_entry_listener(self, listener_id: str) -> bool:
        """Stop a listener; True if it was registered."""
        return self._node.run(remove_listener(self._node, self.name, listener_id), timeout=10)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ stats
    def local_stats(self) -> LocalMapStats:
        """What this member holds of this map, and what it counted (see ``LocalMapStats``)."""
        return self._node.run(_local_stats(self._node, self.name), timeout=self._core.timeout)  # type: ignore[no-any-return]

    def stats(self) -> MapStats:
        """This map's statistics on every member, and their sum."""
        return self._node.run(cluster_stats(self._node, self.name), timeout=self._core.timeout)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ compute: locks, entry processors
    @functools.cached_property
    def _locks(self) -> LockCalls:
        return LockCalls(self._core)

    def lock(self, key: Key, lease: float | None = None, timeout: float | None = None) -> LockHandle:
        """Acquire ``key``'s lock for the calling thread, waiting as long as it takes.

        Use it as ``with m.lock(key) as token:`` (released when the block ends)
        or call ``m.unlock(key)`` later from the same thread. Reentrant: the
        holder may lock again (same token) and must unlock as many times.
        ``lease`` (seconds) releases the lock by itself when it ends, whatever
        the holder does; ``timeout`` (seconds) bounds the wait (``LockError``
        when it passes). The lock is released too when this member leaves or
        dies. The returned handle's ``token`` is the grant's fencing token. See
        ``docs/locks.md`` for the exact semantics.
        """
        wait = check_timeout(timeout, allow_none=True)
        token = drive(self._locks.acquire(key, thread_holder(), wait, lease), self._run)
        if token is None:
            raise LockError(f"{self.name}.lock({key!r}) was not acquired within {timeout}s")
        return LockHandle(self, key, token)

    def try_lock(self, key: Key, timeout: float = 0.0, lease: float | None = None) -> int | None:
        """Acquire ``key``'s lock for the calling thread if it is free within ``timeout`` seconds.

        Returns the fencing token, or None when another holder kept it. See ``lock``.
        """
        wait = check_timeout(timeout, allow_none=False)
        return drive(self._locks.acquire(key, thread_holder(), wait, lease), self._run)

    def unlock(self, key: Key) -> None:
        """Release one hold of ``key``'s lock by the calling thread.

        Raises ``LockError`` when this thread does not hold it, saying why (never
        held, held by another, its lease ended).
        """
        drive(self._locks.release(key, thread_holder()), self._run)

    def is_locked(self, key: Key) -> bool:
        """True when some holder (anywhere) holds ``key``'s lock."""
        return self._run(self._locks.state(key)).found

    def execute_on_key(self, key: Key, processor: str, *args: Any) -> Any:
        """Run entry processor ``processor(entry, *args)`` atomically on ``key``'s owner; return its result.

        Only the name and the arguments travel; the processor must be registered
        on every member (``@peergrid.entry_processor`` or
        ``grid.register_processor``). A change it makes is replicated and
        published like any write. Raises ``ProcessorError`` when the owner has
        no such processor or it raised (the entry is then unchanged).
        """
        core = self._core
        op = processor_op(core, key, processor, args)
        core.invalidate(op.key)
        try:
            result = self._run(op)
        finally:
            core.invalidate(op.key)
        return core.loads(result.value)

    def execute_on_keys(self, keys: Iterable[Key], processor: str, *args: Any) -> dict[Key, Any]:
        """Run ``processor`` on each of ``keys`` (each atomically, on its owner, one frame per owner,
        in parallel); return ``{key: result}``. Not atomic across keys: on an error some keys may
        have been processed."""
        core = self._core
        ops, originals = processor_ops(core, keys, processor, args)
        if not ops:
            return {}
        for op in ops:
            core.invalidate(op.key)
        try:
            results = self._run_all(ops)
        finally:
            for op in ops:
                core.invalidate(op.key)
        return {originals[op.key]: core.loads(r.value) for op, r in zip(ops, results, strict=True)}

    def increment(self, key: Key, delta: int = 1, ttl: float | None = None) -> int:
        """Add ``delta`` to the int counter at ``key`` atomically; return the new count.

        A missing counter counts from 0 and, when created, gets ``ttl`` (an
        existing counter keeps its expiry: a fixed window for rate limiting).
        Raises ``ProcessorError`` when the value is not an int.
        """
        delta, seconds = increment_args(delta, ttl)
        return self.execute_on_key(key, INCREMENT, delta, seconds)  # type: ignore[no-any-return]


class _Missing:
    pass


_MISSING = _Missing()
_LISTENER_ARGS = (
    "on_added",
    "on_updated",
    "on_removed",
    "on_expired",
    "on_evicted",
    "key",
    "include_value",
    "local",
    "on_gap",
)


def _listener_registration(
    on_added: Any,
    on_updated: Any,
    on_removed: Any,
    on_expired: Any,
    on_evicted: Any,
    key: Key | None,
    include_value: bool,
    local: bool,
    on_gap: Any,
) -> dict[str, Any]:
    callbacks = {
        kind: fn
        for kind, fn in (
            (EventKind.ADDED, on_added),
            (EventKind.UPDATED, on_updated),
            (EventKind.REMOVED, on_removed),
            (EventKind.EXPIRED, on_expired),
            (EventKind.EVICTED, on_evicted),
        )
        if fn is not None
    }
    if not callbacks:
        raise ArgumentError(
            "add_entry_listener needs at least one of on_added, on_updated, on_removed, "
            "on_expired, on_evicted"
        )
    for fn in (*callbacks.values(), on_gap):
        if fn is not None and not callable(fn):
            raise ArgumentError(f"listener callbacks must be callable, got {fn!r}")
    return {
        "callbacks": callbacks,
        "key": encode_key(key) if key is not None else None,
        "include_value": bool(include_value),
        "local": bool(local),
        "on_gap": on_gap,
    }


async def add_listener(
    node: Node,
    name: str,
    loads: Callable[[bytes], Any],
    registration: dict[str, Any],
    loop: asyncio.AbstractEventLoop | None,
) -> str:
    """Register a listener on the member's loop; wait until the event streams are up."""
    hub = node.hub(name, loads)
    fresh = not hub.listeners
    listener = hub.add(loop=loop, **registration)
    if fresh:
        node.publisher.add_local(name, hub.on_local)
    if not listener.local:
        if not any(not other.local for other in hub.listeners.values() if other is not listener):
            # Always with values: a later listener that wants them must not restart the streams
            # (events in flight then are lost to every listener, and reported as a gap).
            node.subscriptions.add(
                name, hub, values=True, entries=True, heartbeat=node.config.timing.heartbeat_interval
            )
        if not await node.subscriptions.ready(name, node.config.timing.rpc_timeout * 2):
            await remove_listener(node, name, listener.id)
            raise OperationTimeoutError(
                f"{name}.add_entry_listener: could not subscribe to every member's events in time"
            )
    return listener.id


async def remove_listener(node: Node, name: str, listener_id: str) -> bool:
    """Unregister a listener on the member's loop."""
    hub = node.hubs.get(name)
    if hub is None or hub.listeners.pop(listener_id, None) is None:
        return False
    if not hub.listeners:
        node.publisher.remove_local(name, hub.on_local)
        node.subscriptions.remove(name, hub)
        del node.hubs[name]
    elif not hub.wants_remote:
        node.subscriptions.remove(name, hub)
    return True


def run_ops(node: Node, ops: list[Op], core: MapCore | None = None) -> list[Result]:
    """Run ops in parallel, one frame per owning member; wait for all; raise the first error."""
    core = core or MapCore(node, "-")
    node.ensure_open()
    group = Group(len(ops))
    calls = [core.call(op, group=group) for op in ops]
    node.invoker.start_many(calls)
    if not group.wait(core.timeout + _MARGIN):
        raise core.timed_out(ops[0]) if ops else OperationTimeoutError("timed out")
    return core.check_all(calls)


def recover_ops(node: Node) -> list[Op]:
    """One RECOVER op per partition, for ``recover_lost_partitions``."""
    return [Op(Code.RECOVER, p, "") for p in range(node.config.partition_count)]


def recovered(results: list[Result]) -> list[int]:
    """The partitions RECOVER results say serve again."""
    return [p for p, result in enumerate(results) if result.found]


async def _local_stats(node: Node, name: str) -> LocalMapStats:
    return node.local_stats(name)


async def cluster_stats(node: Node, name: str) -> MapStats:
    """Every member's statistics of ``name`` (members that do not answer are left out)."""
    members = node.membership.members.members
    others = [m for m in members if m.uuid != node.uuid]

    async def ask(address: str) -> dict[str, float] | None:
        try:
            return await node.replica_client(address).map_stats(name)
        except PeerGridError:
            return None

    answers = await asyncio.gather(*(ask(m.address) for m in others))
    per_member = {node.address: node.local_stats(name).as_dict()}
    per_member.update({m.address: a for m, a in zip(others, answers, strict=True) if a is not None})
    return aggregate(per_member)
