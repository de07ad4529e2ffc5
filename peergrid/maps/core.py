"""Every map operation, written once: what the sync and the async map both drive.

An operation checks and encodes its arguments, answers from the near cache or
this member's own partitions when it can (returning the value at once), else
returns ``Remote(flow)``: a generator that yields its remote steps (see
``peergrid.maps.flows``) and does the accounting, near-cache bookkeeping and
error mapping around them. ``DistributedMap`` and ``AsyncMap`` differ only in
how they run a step: on the calling thread, or awaited in the calling task.
So both APIs check, count and cache alike, by construction.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from peergrid.config import MapConfig, check_ttl, reject_unknown
from peergrid.errors import (
    ArgumentError,
    CapacityError,
    GridClosedError,
    IndeterminateWriteError,
    LimitExceededError,
    LockError,
    OperationTimeoutError,
    PartitionLostError,
    PeerGridError,
    ProcessorError,
    QuorumError,
    RemoteError,
    StoreError,
)
from peergrid.events.model import EventKind
from peergrid.events.nearcache import MISS
from peergrid.invocation.invoker import Call, Group
from peergrid.maps.flows import Flow, OnMember, Remote, flow
from peergrid.maps.locks import LockCalls, check_timeout
from peergrid.owner.processors import INCREMENT, check_name
from peergrid.partition import partition_of
from peergrid.protocol import MAX_NAME, REFILLS, WRITES, Code, Op, Result, Status
from peergrid.serialization import Key, decode_key, encode_key
from peergrid.stats import LocalMapStats, MapStats, aggregate

if TYPE_CHECKING:
    from peergrid.events.nearcache import Flight, NearCache
    from peergrid.member.node import Node

MARGIN = 1.0  # a caller waits this much past an operation's deadline for the loop's own verdict
_NAMES = {
    Code.GET: "get",
    Code.CONTAINS: "contains_key",
    Code.PUT: "put",
    Code.SET: "set",
    Code.PUT_IF_ABSENT: "put_if_absent",
    Code.REPLACE: "replace",
    Code.REPLACE_IF_SAME: "replace_if_same",
    Code.DELETE: "delete",
    Code.SIZE: "size",
    Code.CLEAR: "clear",
    Code.ENTRIES: "items",
    Code.KEYS: "keys",
    Code.FLUSH: "flush",
    Code.RECOVER: "recover_lost_partitions",
    Code.EXECUTE: "execute_on_key",
    Code.LOCK: "lock",
    Code.UNLOCK: "unlock",
    Code.LOCK_STATE: "is_locked",
}
RESERVED_MAP_PREFIX = "__peergrid."  # internal maps (locks); no user map may start so


class ListenerOptions(TypedDict, total=False):
    """The options of ``add_entry_listener`` (see ``DistributedMap.add_entry_listener``)."""

    on_added: Callable[..., Any] | None
    on_updated: Callable[..., Any] | None
    on_removed: Callable[..., Any] | None
    on_expired: Callable[..., Any] | None
    on_evicted: Callable[..., Any] | None
    key: Key | None
    include_value: bool
    local: bool
    on_gap: Callable[[list[int]], Any] | None


LISTENER_ARGS = tuple(ListenerOptions.__annotations__)


def check_map_name(name: object) -> str:
    """A valid map name, or ``ArgumentError``."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise ArgumentError(f"map names are non-empty str of at most {MAX_NAME} characters, got {name!r}")
    if name.startswith(RESERVED_MAP_PREFIX):
        raise ArgumentError(
            f"map names starting with {RESERVED_MAP_PREFIX!r} are peergrid's own, got {name!r}"
        )
    return name


def map_config(node: Node, name: str, options: dict[str, Any]) -> MapConfig:
    """Build map ``name``'s configuration from ``options`` and register it on the member."""
    check_map_name(name)
    base = node.registry.configured(name) or node.config.maps.get(name)
    config = MapConfig.from_options(name, base, **options)

    async def configure() -> None:
        node.maps.configure(name, config)

    node.run(configure(), timeout=10)
    return config


class Caller:
    """Calls of one named caller (a map, or the grid) on one member: deadlines and errors."""

    def __init__(self, node: Node, name: str, timeout: float | None = None, strict: bool = False) -> None:
        self.node = node
        self.name = name
        self.timeout = node.config.timing.operation_timeout if timeout is None else timeout
        # How long a caller waits for an answer: the deadline, and (unless strict) a margin
        # for the loop's own verdict (a timeout or an unknown outcome, said precisely).
        self.wait = self.timeout if strict else self.timeout + MARGIN

    def call(self, op: Op, on_done: Any = None, group: Group | None = None) -> Call:
        """A call for ``op`` with this caller's deadline (not started)."""
        self.node.ensure_open()
        return Call(self.node.invoker, op, time.monotonic() + self.timeout, group, on_done)

    def timed_out(self, op: Op) -> OperationTimeoutError:
        """The error for a call the caller stopped waiting for."""
        name = _NAMES.get(op.code, "operation")
        if op.code in WRITES:
            return IndeterminateWriteError(
                f"{self.name}.{name} got no answer within {self.timeout}s; the write may or may not "
                "have been applied"
            )
        return OperationTimeoutError(f"{self.name}.{name} got no answer within {self.timeout}s")

    def check(self, result: Result | None, op: Op) -> Result:
        """The result, or the error it carries."""
        if result is None:
            raise self.timed_out(op)
        status = result.status
        if status == Status.OK:
            return result
        name = f"{self.name}.{_NAMES.get(op.code, 'operation')}"
        message = result.message
        if status == Status.CLOSED:
            raise GridClosedError(f"{name}: this grid was shut down; create a new peergrid.Grid to continue")
        if status == Status.LOST:
            raise PartitionLostError(
                f"{name}: partition {op.partition} lost every copy (more than backup_count members "
                "failed at once); its entries are gone. grid.recover_lost_partitions() serves it "
                "again, empty",
                op.partition,
            )
        if status == Status.STORE:
            raise StoreError(f"{name} failed: {message}", retryable=message.endswith("(retryable)"))
        if status == Status.CAPACITY:
            raise CapacityError(f"{name} refused: {message}")
        if status == Status.PROCESSOR:
            raise ProcessorError(f"{name}: {message}", op.expect.decode("utf-8", "replace"))
        if status == Status.QUORUM:
            raise QuorumError(f"{name} refused: {message}")
        if status == Status.TIMEOUT:
            raise OperationTimeoutError(f"{name} did not complete within {self.timeout}s: {message}")
        if status == Status.INDETERMINATE:
            raise IndeterminateWriteError(
                f"{name}: the owner failed mid-call ({message}); the write may or may not have been applied"
            )
        if status == Status.INVALID:
            if "exceeds" in message:
                raise LimitExceededError(f"{name} refused by the owner: {message}")
            raise ArgumentError(f"{name} refused by the owner: {message}")
        raise RemoteError(f"{name} failed on the owner: {message or f'status {status}'}")

    def check_all(self, calls: Iterable[Call]) -> list[Result]:
        """Results of finished calls, raising the first error."""
        return [self.check(call.result, call.op) for call in calls]

    def on_member(self, coro: Any) -> OnMember:
        """The step running ``coro`` on the member's loop, within this caller's wait."""
        return OnMember(coro, self.wait)


@flow
def recover_lost_partitions(caller: Caller) -> Flow[list[Op], list[int]]:
    """Serve every lost partition again, empty; the partitions that serve again."""
    results = yield [Op(Code.RECOVER, p, "") for p in range(caller.node.config.partition_count)]
    return [p for p, result in enumerate(results) if result.found]


class MapCore(Caller):
    """One map on one member: each operation, for both APIs (see the module docstring)."""

    def __init__(
        self,
        node: Node,
        name: str,
        config: MapConfig | None = None,
        timeout: float | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(node, check_map_name(name), timeout, strict)
        self.config = config or MapConfig()
        self.default_ttl = check_ttl(self.config.ttl)
        self._jitter = self.config.ttl_jitter
        self.near: NearCache | None = node.maps.near_caches.get(name)
        self.store = self.config.store  # the map's database (MapStore): misses load from it on the owner
        self.counters = node.maps.counters_of(name)
        self.readable = node.manager.readable
        self.membership = node.membership  # its lease_until says whether owner-local reads may be served
        self.loads = node.serializer.loads
        self.dumps = node.serializer.dumps
        self._count = node.config.partition_count
        self._max_key = node.config.limits.max_key_bytes
        self._max_value = node.config.limits.max_value_bytes
        self.locks = LockCalls(self.name, node.uuid, node.config.timing, self.timeout, self.key)

    # ------------------------------------------------------------------ encoding
    def key(self, key: object) -> tuple[bytes, int]:
        """The encoded key and its partition."""
        encoded = self.encode(key)
        return encoded, partition_of(encoded, self._count)

    def encode(self, key: object) -> bytes:
        """The encoded key, within the size limit (a near-cache hit needs no partition)."""
        encoded = encode_key(key)
        if len(encoded) > self._max_key:
            raise LimitExceededError(
                f"key of {len(encoded)} bytes exceeds limits.max_key_bytes={self._max_key}"
            )
        return encoded

    def value(self, value: object) -> bytes:
        """The serialized value, within the size limit."""
        data = self.dumps(value)
        if len(data) > self._max_value:
            raise LimitExceededError(
                f"value of {len(data)} bytes exceeds limits.max_value_bytes={self._max_value}"
            )
        return data

    def ttl(self, ttl: object) -> float:
        """The TTL to send: the call's, else the map's default (spread by its jitter)."""
        if ttl is not None:
            return check_ttl(ttl)
        if self._jitter and self.default_ttl:
            return self.default_ttl * (1 + random.uniform(-self._jitter, self._jitter))  # noqa: S311
        return self.default_ttl

    def keyed(self, code: int, key: object, value: bytes = b"", expect: bytes = b"", ttl: float = 0.0) -> Op:
        """An op on one key."""
        encoded, partition = self.key(key)
        return Op(code, partition, self.name, encoded, value, expect, ttl)

    def per_partition(self, code: int) -> list[Op]:
        """One op per partition (size, clear, keys, items, flush)."""
        return [Op(code, p, self.name) for p in range(self._count)]

    def decoded(self, result: Result, default: Any = None) -> Any:
        """The value a result carries, or ``default``."""
        return self.loads(result.value) if result.found else default

    # ------------------------------------------------------------------ accounting
    def got(self, started: float, found: bool) -> None:
        """Count a get that began at ``started`` (perf_counter)."""
        counters = self.counters
        counters.gets += 1
        if found:
            counters.hits += 1
        else:
            counters.misses += 1
        counters.get_latency.record(time.perf_counter() - started)

    def _got_many(self, started: float, asked: int, found: int) -> None:
        counters = self.counters
        counters.gets += asked
        counters.hits += found
        counters.misses += asked - found
        counters.get_latency.record(time.perf_counter() - started)

    def _wrote(self, started: float, code: int, count: int = 1) -> None:
        counters = self.counters
        if code == Code.DELETE:
            counters.removes += count
        else:
            counters.puts += count
        counters.put_latency.record(time.perf_counter() - started)

    # ------------------------------------------------------------------ reads
    def _local(self, encoded: bytes, partition: int) -> tuple[bool, bytes | None]:
        """``(True, value-or-None)`` when this member answers for the key itself: it serves
        the partition, holds its owner lease, and a miss needs no load from the map's store;
        else ``(False, None)``."""
        part = self.readable[partition]
        if part is None or part.unacked or self.membership.lease_until <= time.monotonic():
            return False, None
        records = part.maps.get(self.name)
        value = records.get(encoded) if records is not None else None
        return (value is not None or self.store is None), value

    def get(self, key: Key, default: Any = None) -> Any:
        """``get``: the value, or ``Remote`` when the owner must be asked."""
        if self.node.closed:
            self.node.ensure_open()
        started = time.perf_counter()
        encoded = self.encode(key)
        near = self.near
        if near is not None:
            cached = near.lookup(encoded)
            if cached is not MISS:
                self.got(started, True)
                return cached
        partition = partition_of(encoded, self._count)
        part = self.readable[partition]
        if part is not None and not part.unacked and self.membership.lease_until > time.monotonic():
            # Owner-local: a dict lookup on this thread (while the owner lease holds: a member
            # that may have been declared dead meanwhile asks its loop, which waits to hear; and
            # while no write of the partition waits for its backups: the loop waits for it).
            records = part.maps.get(self.name)
            value = records.get(encoded) if records is not None else None
            if value is not None or self.store is None:
                self.got(started, value is not None)
                return default if value is None else self.loads(value)
            # A miss on a map with a store: this member, as owner, loads it (on its loop).
        return Remote(self._fetch(encoded, partition, default, started))

    def _fetch(self, encoded: bytes, partition: int, default: Any, started: float) -> Flow[Any, Any]:
        op = Op(Code.GET, partition, self.name, encoded)
        near = self.near
        if near is None:
            result = yield op
            self.got(started, result.found)
            return self.decoded(result, default)
        shared = near.shared(encoded)  # another caller is fetching this key: wait for its answer
        if shared is not None and (yield shared):
            self.got(started, shared.found)
            return shared.value if shared.found else default
        flight = near.begin(encoded)
        found, decoded, ok, version, ttl = False, None, False, 0, 0.0
        try:
            result = yield op
            found, version, ttl = result.found, result.version, result.ttl
            decoded = self.decoded(result)
            ok = True
        finally:
            near.end(encoded, partition, decoded, found, flight, ok, version, ttl)
        self.got(started, found)
        return decoded if found else default

    def contains_key(self, key: Key) -> bool | Remote[bool]:
        """``contains_key``."""
        self.node.ensure_open()
        encoded, partition = self.key(key)
        if self.near is not None and self.near.lookup(encoded) is not MISS:
            return True
        local, value = self._local(encoded, partition)
        if local:
            return value is not None
        return Remote(_found(Op(Code.CONTAINS, partition, self.name, encoded)))

    def get_all(self, keys: Iterable[Key]) -> dict[Key, Any] | Remote[dict[Key, Any]]:
        """``get_all``: near-cache hits and owner-local values now, the rest from their owners."""
        self.node.ensure_open()
        if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
            raise ArgumentError(f"get_all takes an iterable of keys, not {type(keys).__qualname__}")
        started = time.perf_counter()
        found: dict[Any, Any] = {}
        ops: list[Op] = []
        originals: dict[bytes, Any] = {}
        near = self.near
        for key in keys:
            encoded, partition = self.key(key)
            if encoded in originals:
                continue
            originals[encoded] = key
            if near is not None:
                cached = near.lookup(encoded)
                if cached is not MISS:
                    found[key] = cached
                    continue
            local, value = self._local(encoded, partition)
            if not local:
                ops.append(Op(Code.GET, partition, self.name, encoded))
            elif value is not None:
                found[key] = self.loads(value)
        if not ops:
            self._got_many(started, len(originals), len(found))
            return found
        return Remote(self._fetch_all(ops, originals, found, started))

    def _fetch_all(
        self, ops: list[Op], originals: dict[bytes, Any], found: dict[Any, Any], started: float
    ) -> Flow[Any, dict[Key, Any]]:
        near = self.near
        flights = [near.begin(op.key) for op in ops] if near is not None else []
        results: list[Result] = []
        try:
            results = yield ops
        finally:
            self._fetched(ops, results, flights, originals, found)
        self._got_many(started, len(originals), len(found))
        return found

    def _fetched(
        self,
        ops: list[Op],
        results: list[Result],
        flights: list[Flight],
        originals: dict[bytes, Any],
        found: dict[Any, Any],
    ) -> None:
        """Fetches of a batch ended (``results`` is empty if the batch failed): record what
        was found in ``found`` by original key, and tell the near cache."""
        near = self.near
        error: Exception | None = None
        for i, op in enumerate(ops):
            result = results[i] if i < len(results) else None
            ok = result is not None
            hit = result is not None and result.found
            value = None
            if hit and result is not None:
                try:
                    value = found[originals[op.key]] = self.decoded(result)
                except Exception as exc:  # noqa: BLE001 - re-raised once every other fetch landed
                    error, ok, hit = error or exc, False, False
            if near is not None:
                version, ttl = (result.version, result.ttl) if result is not None else (0, 0.0)
                near.end(op.key, op.partition, value, hit, flights[i], ok, version, ttl)
        if error is not None:
            raise error

    @flow
    def size(self) -> Flow[list[Op], int]:
        """``size``: live entries over every member."""
        return sum(result.count for result in (yield self.per_partition(Code.SIZE)))

    @flow
    def keys(self) -> Flow[list[Op], list[Key]]:
        """``keys``: every live key."""
        results = yield self.per_partition(Code.KEYS)
        return [decode_key(key) for result in results for key in (result.keys or ())]

    @flow
    def items(self) -> Flow[list[Op], list[tuple[Key, Any]]]:
        """``items``: every live ``(key, value)`` pair."""
        results = yield self.per_partition(Code.ENTRIES)
        return [
            (decode_key(key), self.loads(value))
            for result in results
            for key, value in zip(result.keys or (), result.values or (), strict=True)
        ]

    @flow
    def values(self) -> Flow[list[Op], list[Any]]:
        """``values``: every live value."""
        return [value for _, value in (yield from self.items().flow)]

    # ------------------------------------------------------------------ writes
    def _write(self, op: Op) -> Flow[Op, Result]:
        """A single-key write through this member. The near cache drops the key while it runs;
        an acknowledged ``set`` or ``put`` without TTL refills it with the value written
        (read-your-writes, no fetch); any other write leaves the key to be fetched again."""
        started = time.perf_counter()
        near = self.near
        if near is not None:
            near.write_begins(op.key)
        result: Result | None = None
        try:
            result = yield op
        finally:
            if near is not None:
                if result is not None and op.code in REFILLS and not op.ttl and result.version:
                    near.write_ends(op.key, op.partition, op.value, result.version, result.ttl)
                else:
                    near.write_ends(op.key, op.partition, None, 0)
        self._wrote(started, op.code)
        assert result is not None
        return result

    def _invalidating(self, ops: list[Op]) -> Flow[list[Op], list[Result]]:
        """Run ``ops``, keeping their keys out of the near cache before and after."""
        near = self.near
        if near is not None:
            for op in ops:
                near.invalidate(op.key)
        try:
            results: list[Result] = (yield ops) if ops else []
            return results
        finally:
            if near is not None:
                for op in ops:
                    near.invalidate(op.key)

    def _stores(self, code: int, key: Key, value: Any, ttl: object, unknown: Mapping[str, Any]) -> Op:
        """The op of a write storing ``value`` (put, set, put_if_absent, replace), checked."""
        reject_unknown(_NAMES[code], unknown, ("key", "value", "ttl"))
        return self.keyed(code, key, self.value(value), ttl=self.ttl(ttl))

    @flow
    def put(self, key: Key, value: Any, ttl: object, unknown: Mapping[str, Any]) -> Flow[Op, Any]:
        """``put``: the previous value or None."""
        return self.decoded((yield from self._write(self._stores(Code.PUT, key, value, ttl, unknown))))

    @flow
    def set(self, key: Key, value: Any, ttl: object, unknown: Mapping[str, Any]) -> Flow[Op, None]:
        """``set``."""
        yield from self._write(self._stores(Code.SET, key, value, ttl, unknown))

    @flow
    def put_if_absent(self, key: Key, value: Any, ttl: object, unknown: Mapping[str, Any]) -> Flow[Op, Any]:
        """``put_if_absent``: the existing value or None."""
        return self.decoded(
            (yield from self._write(self._stores(Code.PUT_IF_ABSENT, key, value, ttl, unknown)))
        )

    @flow
    def replace(self, key: Key, value: Any, ttl: object, unknown: Mapping[str, Any]) -> Flow[Op, Any]:
        """``replace``: the previous value or None."""
        return self.decoded((yield from self._write(self._stores(Code.REPLACE, key, value, ttl, unknown))))

    @flow
    def replace_if_same(
        self, key: Key, old: Any, new: Any, ttl: object, unknown: Mapping[str, Any]
    ) -> Flow[Op, bool]:
        """``replace_if_same``: True if it replaced."""
        reject_unknown("replace_if_same", unknown, ("key", "old", "new", "ttl"))
        op = self.keyed(Code.REPLACE_IF_SAME, key, self.value(new), self.value(old), self.ttl(ttl))
        return (yield from self._write(op)).found

    @flow
    def delete(self, key: Key) -> Flow[Op, bool]:
        """``delete``: True if the key had a live value."""
        return (yield from self._write(self.keyed(Code.DELETE, key))).found

    @flow
    def put_all(
        self, mapping: Mapping[Key, Any], ttl: object, unknown: Mapping[str, Any]
    ) -> Flow[list[Op], None]:
        """``put_all``: every key and value checked before any is sent."""
        reject_unknown("put_all", unknown, ("mapping", "ttl"))
        self.node.ensure_open()
        if not isinstance(mapping, Mapping):
            raise ArgumentError(f"put_all takes a mapping, not {type(mapping).__qualname__}")
        self.ttl(ttl)  # checked once, before anything is encoded
        # The ttl per entry: a map default with jitter spreads each entry's expiry.
        ops = [
            self.keyed(Code.SET, key, self.value(value), ttl=self.ttl(ttl)) for key, value in mapping.items()
        ]
        started = time.perf_counter()
        yield from self._invalidating(ops)
        self._wrote(started, Code.SET, len(ops))

    @flow
    def flush(self) -> Flow[list[Op], None]:
        """``flush``: every write still queued for the map's store, stored."""
        yield self.per_partition(Code.FLUSH)

    @flow
    def clear(self) -> Flow[list[Op], None]:
        """``clear``: every entry removed, on every member."""
        near = self.near
        if near is not None:
            near.clear()
        try:
            yield self.per_partition(Code.CLEAR)
        finally:
            if near is not None:
                near.clear()

    # ------------------------------------------------------------------ entry processors
    @flow
    def execute_on_key(self, key: Key, processor: str, args: tuple[Any, ...]) -> Flow[list[Op], Any]:
        """``execute_on_key``: the processor's result."""
        op = self.keyed(Code.EXECUTE, key, self.value(list(args)), check_name(processor).encode())
        results = yield from self._invalidating([op])
        return self.loads(results[0].value)

    @flow
    def execute_on_keys(
        self, keys: Iterable[Key], processor: str, args: tuple[Any, ...]
    ) -> Flow[list[Op], dict[Key, Any]]:
        """``execute_on_keys``: ``{key: result}``, one op per distinct key."""
        name = check_name(processor).encode()
        value = self.value(list(args))  # serialized once for every key
        ops: list[Op] = []
        originals: dict[bytes, Key] = {}
        for key in keys:
            encoded, partition = self.key(key)
            if encoded not in originals:
                originals[encoded] = key
                ops.append(Op(Code.EXECUTE, partition, self.name, encoded, value, name))
        results = yield from self._invalidating(ops)
        return {originals[op.key]: self.loads(r.value) for op, r in zip(ops, results, strict=True)}

    def increment(self, key: Key, delta: int, ttl: object) -> Remote[int]:
        """``increment``: the new count."""
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise ArgumentError(f"increment takes an int delta, got {delta!r}")
        seconds = check_ttl(ttl) if ttl is not None else None
        return self.execute_on_key(key, INCREMENT, (delta, seconds))

    # ------------------------------------------------------------------ locks
    @flow
    def lock(self, key: Key, holder: int, timeout: float | None, lease: object) -> Flow[Op, int]:
        """``lock``: the fencing token, or ``LockError`` once ``timeout`` passed."""
        token = yield from self.locks.acquire(key, holder, timeout, lease)
        if token is None:
            raise LockError(f"{self.name}.lock({key!r}) was not acquired within {timeout}s")
        return token

    def try_lock(self, key: Key, holder: int, timeout: object, lease: object) -> Remote[int | None]:
        """``try_lock``: the fencing token, or None once ``timeout`` passed."""
        return Remote(self.locks.acquire(key, holder, check_timeout(timeout, allow_none=False), lease))

    def unlock(self, key: Key, holder: int) -> Remote[None]:
        """``unlock``: ``LockError`` when ``holder`` holds none."""
        return Remote(self.locks.release(key, holder))

    def is_locked(self, key: Key) -> Remote[bool]:
        """``is_locked``."""
        return Remote(_found(self.locks.state(key)))

    # ------------------------------------------------------------------ listeners, stats
    @flow
    def add_entry_listener(
        self, loop: asyncio.AbstractEventLoop | None, options: dict[str, Any]
    ) -> Flow[OnMember, str]:
        """``add_entry_listener`` (callbacks run on ``loop``; None: a peergrid thread)."""
        unknown = {name: value for name, value in options.items() if name not in LISTENER_ARGS}
        reject_unknown("add_entry_listener", unknown, LISTENER_ARGS)
        registration = _registration(**options)
        timeout = self.wait + self.node.config.timing.rpc_timeout
        listener_id: str = yield OnMember(
            self.node.maps.add_listener(self.name, self.loads, registration, loop), timeout
        )
        return listener_id

    @flow
    def remove_entry_listener(self, listener_id: str) -> Flow[OnMember, bool]:
        """``remove_entry_listener``: True if it was registered."""
        removed: bool = yield self.on_member(self.node.maps.remove_listener(self.name, listener_id))
        return removed

    @flow
    def local_stats(self) -> Flow[OnMember, LocalMapStats]:
        """``local_stats``."""
        stats: LocalMapStats = yield self.on_member(_local_stats(self.node, self.name))
        return stats

    @flow
    def stats(self) -> Flow[OnMember, MapStats]:
        """``stats``: every member's, and their sum."""
        stats: MapStats = yield self.on_member(cluster_stats(self.node, self.name))
        return stats


def _found(op: Op) -> Flow[Op, bool]:
    return (yield op).found  # type: ignore[no-any-return]


def _registration(
    on_added: Callable[..., Any] | None = None,
    on_updated: Callable[..., Any] | None = None,
    on_removed: Callable[..., Any] | None = None,
    on_expired: Callable[..., Any] | None = None,
    on_evicted: Callable[..., Any] | None = None,
    key: Key | None = None,
    include_value: bool = True,
    local: bool = False,
    on_gap: Callable[[list[int]], Any] | None = None,
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


async def _local_stats(node: Node, name: str) -> LocalMapStats:
    return node.maps.local_stats(name)


async def cluster_stats(node: Node, name: str) -> MapStats:
    """Every member's statistics of ``name`` (members that do not answer are left out)."""
    members = node.members()
    others = [m for m in members if m.uuid != node.uuid]

    async def ask(address: str) -> dict[str, float] | None:
        try:
            return await node.peer(address).map_stats(name)
        except PeerGridError:
            return None

    answers = await asyncio.gather(*(ask(m.address) for m in others))
    per_member = {node.address: node.maps.local_stats(name).as_dict()}
    per_member.update({m.address: a for m, a in zip(others, answers, strict=True) if a is not None})
    return aggregate(per_member)
