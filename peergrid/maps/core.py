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
import functools
import inspect
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar

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
    ResultTooLargeError,
    StoreError,
)
from peergrid.events.model import EventKind
from peergrid.events.nearcache import MISS
from peergrid.invocation.gets import Fetch, Gets
from peergrid.invocation.invoker import Call, Group
from peergrid.maps.entry import EntryView
from peergrid.maps.flows import Flow, OnMember, Remote, flow
from peergrid.maps.locks import LockCalls, check_timeout
from peergrid.owner.processors import INCREMENT, check_name
from peergrid.partition import partition_of
from peergrid.protocol import (
    MAX_NAME,
    MEMORY_ONLY,
    REFILLS,
    WRITES,
    Code,
    EntryRecord,
    Op,
    Result,
    Status,
)
from peergrid.serialization import Key, decode_key, encode_key
from peergrid.stats import LocalMapStats, MapStats, aggregate
from peergrid.storage.ops import entry_record, time_left

_random = random.Random()  # noqa: S311 - jitter and sampling; our own: the application's global state is not ours

if TYPE_CHECKING:
    from peergrid.events.nearcache import Flight, NearCache
    from peergrid.member.node import Node
    from peergrid.storage.partition import Partition
    from peergrid.storage.records import Records

_perf_counter = time.perf_counter  # bound once: the owner-local and near-cache reads use them
_monotonic = time.monotonic


def _unacked(part: Partition, name: str, encoded: bytes) -> bool:
    """Whether a write of the key (or of the whole map) applied here waits for its backups:
    a read of it must ask the loop, which waits for them (answered at once, the read could see
    a write that a failure then loses). Checked AFTER the read (``MapCore._stands``): the loop
    fences a key before it applies a write of it (``Executor._write``), so a value read before
    this says "no" was acknowledged, or not applied yet."""
    unacked = part.unacked
    return bool(unacked) and ((name, encoded) in unacked or (name, b"") in unacked)


MARGIN = 1.0  # a caller waits this much past an operation's deadline for the loop's own verdict
SCAN_FIRST = 8  # partitions in a scan's first step (keys(), values(), items(), iteration)
SCAN_ENTRIES = 4096  # entries a later step aims at, judged by the partitions read so far
SCAN_BYTES = 8 * 1024 * 1024  # and the bytes of keys and values it aims at
SCAN_GROWTH = 8  # a step reads at most this many times the partitions of the one before
BULK_FRAMES = 4  # frames' worth of ops a bulk call sends at a time, and of keys in a get_all's op
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
    Code.EXPIRE: "expire",
    Code.PERSIST: "persist",
    Code.TTL: "ttl",
    Code.ENTRY_VIEW: "entry_view",
    Code.REMOVE: "remove",
    Code.REMOVE_IF_SAME: "remove_if_same",
    Code.EVICT: "evict",
    Code.EVICT_ALL: "evict_all",
    Code.CONTAINS_VALUE: "contains_value",
    Code.DESTROY: "destroy",
    Code.GET_MANY: "get_all",
}
_REMOVES = frozenset({Code.DELETE, Code.REMOVE, Code.REMOVE_IF_SAME})
RESERVED_MAP_PREFIX = "__peergrid."  # internal maps (locks); no user map may start so
P = ParamSpec("P")
R = TypeVar("R")

#: What users of redis-py reach for, and what to write instead.
_REDIS_HINTS = {
    "ex": "ttl=... (seconds)",
    "px": "ttl=... (seconds: milliseconds / 1000)",
    "exat": "ttl=... (seconds from now)",
    "pxat": "ttl=... (seconds from now)",
    "nx": "if_absent=True",
    "xx": "if_present=True",
    "keepttl": "replace() or an entry processor (a write without ttl= gets the map's default TTL)",
    "get": "put() (it returns the previous value)",
    "timeout": "ttl=... (seconds)",
    "expire": "ttl=... (seconds)",
}


def unknown_option(where: str, key: str, known: Iterable[str]) -> ArgumentError:
    """The error for an unknown keyword ``key`` of ``where()``, with the nearest known one."""
    hint = _REDIS_HINTS.get(key.lower())
    if hint is not None:
        return ArgumentError(f"{where}() got an unknown option {key!r}; did you mean {hint}?")
    try:
        reject_unknown(where, {key: None}, tuple(known))
    except ArgumentError as exc:
        return exc
    return ArgumentError(f"{where}() got an unknown option {key!r}")  # pragma: no cover - always raised


def options_checked(fn: Callable[P, R]) -> Callable[P, R]:
    """A public method whose keyword typos are type errors (its signature has no ``**``) and, for
    callers no type checker saw, an ``ArgumentError`` naming the nearest option at run time
    (``ttl=`` for redis-py's ``ex=``). Other call errors stay Python's ``TypeError``."""
    known = [
        name
        for name, param in inspect.signature(fn).parameters.items()
        if name != "self" and param.kind is not inspect.Parameter.VAR_POSITIONAL
    ]

    def called(exc: TypeError, kwargs: Mapping[str, Any]) -> None:
        if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
            # Raised by the call itself (binding the arguments), not inside the method.
            for name in kwargs:
                if name not in known:
                    raise unknown_option(fn.__name__, name, known) from None

    if inspect.iscoroutinefunction(fn):  # stays one (inspect, and the callers who ask it, see so)

        @functools.wraps(fn)
        async def acall(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                awaitable = fn(*args, **kwargs)
            except TypeError as exc:
                called(exc, kwargs)
                raise
            return await awaitable

        return acall  # type: ignore[return-value]

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except TypeError as exc:
            called(exc, kwargs)
            raise

    return call


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


def check_types(key_type: object, value_type: object) -> None:
    """``get_map``'s ``key_type`` and ``value_type`` (for type checkers), or ``ArgumentError``."""
    if key_type is not None and not (isinstance(key_type, type) and issubclass(key_type, str | bytes | int)):
        raise ArgumentError(f"key_type must be str, bytes or int (the key types), got {key_type!r}")
    if value_type is not None and not callable(value_type):
        raise ArgumentError(f"value_type must be a type, got {value_type!r}")


def map_config(node: Node, name: str, options: dict[str, Any]) -> MapConfig:
    """Build map ``name``'s configuration from ``options`` and register it on the member."""
    check_map_name(name)
    base = node.registry.configured(name) or node.config.maps.get(name)
    config = MapConfig.from_options(name, base, **options)

    async def configure() -> None:
        node.maps.configure(name, config)

    node.run(configure(), timeout=10)
    return config


class _NoDefault:
    def __repr__(self) -> str:
        return "<no default>"


NO_DEFAULT: Any = _NoDefault()  # pop(key) without a default: KeyError when absent
NO_DEFAULT_QUIET: Any = _NoDefault()  # pop's default when the caller tells absence by identity


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
        if status == Status.TOO_LARGE:
            raise ResultTooLargeError(
                f"{name}: the answer for partition {op.partition} cannot be sent ({message}); "
                "raise limits.max_message_bytes on every member, or spread the keys over more "
                "partitions (fewer {tag} keys)",
                result.count,
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

    def fetch(self, gets: Gets, group: Group) -> Fetch:
        """A ``Gets`` step, started: its keys on their way to their owners."""
        self.node.ensure_open()
        fetch = Fetch(self.node.invoker, gets, time.monotonic() + self.timeout, group)
        limits = self.node.config.limits
        # A GET_MANY op of many keys is one op, run by its owner in one step: at most a bulk
        # call's part (see ``_invalidating``) of keys each; the pipe sends them a frame each.
        fetch.start(min(BULK_FRAMES * limits.frame_ops, limits.max_batch_ops))
        return fetch

    def check_fetch(self, fetch: Fetch) -> Fetch:
        """A finished fetch, or the error of its first key that failed (as ``check_all``)."""
        failed = fetch.failed_op()
        if failed is not None:
            self.check(*failed)
        return fetch

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
        self._count = self.partition_count = node.config.partition_count
        self._max_key = node.config.limits.max_key_bytes
        self._max_value = node.config.limits.max_value_bytes
        self.locks = LockCalls(self.name, node.uuid, node.config.timing, self.timeout, self.key)
        self.destroyed = False  # ``destroy`` ran through this map: ``get_map`` makes a new one

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
            return self.default_ttl * (1 + _random.uniform(-self._jitter, self._jitter))
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
        if code in _REMOVES:
            counters.removes += count
        elif code not in MEMORY_ONLY:  # a TTL changed or an entry evicted: neither put nor removed
            counters.puts += count
        counters.put_latency.record(time.perf_counter() - started)

    # ------------------------------------------------------------------ reads
    def _local(self, encoded: bytes, partition: int) -> tuple[bool, bytes | None]:
        """``(True, value-or-None)`` when this member answers for the key itself: it serves
        the partition, holds its owner lease, and a miss needs no load from the map's store;
        else ``(False, None)``."""
        part = self.readable[partition]
        if part is None:
            return False, None
        records = part.maps.get(self.name)
        value = records.get(encoded) if records is not None else None
        if not self._stands(part, partition, encoded):
            return False, None
        return (value is not None or self.store is None), value

    def _stands(self, part: Partition, partition: int, encoded: bytes) -> bool:
        """Whether an owner-local read of ``encoded`` from ``part``, made on a caller's thread
        just now, stands: checked AFTER the read, as the thread may have been paused anywhere
        before it (a switch of the GIL, SIGSTOP), for as long as a take-over or a migration
        takes. It stands if this member still holds its owner lease (a member paused past it
        may have been replaced), still serves the partition (the loop stops serving it before
        a new owner can write it), and no write of the key waits for its backups. (``get`` and
        ``get_all`` write the same checks inline: their hot path.)"""
        return (
            self.membership.lease_until > _monotonic()
            and self.readable[partition] is part
            and not _unacked(part, self.name, encoded)
        )

    def get(self, key: Key, default: Any = None) -> Any:
        """``get``: the value, or ``Remote`` when the owner must be asked."""
        if self.node.closed:
            self.node.ensure_open()
        started = _perf_counter()
        encoded = self.encode(key)
        near = self.near
        if near is not None:
            cached = near.lookup(encoded)
            if cached is not MISS:
                counters = self.counters  # got(started, True), inlined: the hot path
                counters.gets += 1
                counters.hits += 1
                counters.get_latency.record(_perf_counter() - started)
                return cached
        partition = partition_of(encoded, self._count)
        part = self.readable[partition]
        if part is not None:
            # Owner-local: a dict lookup on this thread. It stands if, after it, the owner lease
            # still holds (a member that may have been declared dead meanwhile asks its loop,
            # which waits to hear), the partition is still served here, and no write of the key
            # waits for its backups (the loop waits for it): ``_stands``, inlined.
            records = part.maps.get(self.name)
            value = records.get(encoded) if records is not None else None
            if (
                (value is not None or self.store is None)
                and self.membership.lease_until > _monotonic()
                and self.readable[partition] is part
                and (not part.unacked or not _unacked(part, self.name, encoded))
            ):
                if near is not None:
                    near.misses -= 1  # no near-cache miss: a key of this member's is never cached
                counters = self.counters  # _got_local, inlined: the hot path
                counters.gets += 1
                counters.owner_local_gets += 1
                if value is None:
                    counters.misses += 1
                    counters.get_latency.record(_perf_counter() - started)
                    return default
                counters.hits += 1
                counters.get_latency.record(_perf_counter() - started)
                return self.loads(value)
            # A miss on a map with a store: this member, as owner, loads it (on its loop); or a
            # read that did not stand (a write of the key awaits its backups, ...): asked there.
            if near is not None:
                near.misses -= 1  # not a near-cache miss either: a key of this member's
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
        near = self.near
        if near is not None and near.lookup(encoded) is not MISS:
            return True
        local, value = self._local(encoded, partition)
        if local:
            if near is not None:
                near.misses -= 1  # as in get: owner-local, not a near-cache miss
            return value is not None
        return Remote(_found(Op(Code.CONTAINS, partition, self.name, encoded)))

    def get_all(self, keys: Iterable[Any]) -> dict[Key, Any] | Remote[dict[Key, Any]]:
        """``get_all``: near-cache hits and owner-local values now, the rest from their owners."""
        self.node.ensure_open()
        if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
            raise ArgumentError(f"get_all takes an iterable of keys, not {type(keys).__qualname__}")
        started = time.perf_counter()
        found: dict[Any, Any] = {}
        remote: list[bytes] = []
        partitions: list[int] = []
        originals: dict[bytes, Any] = {}
        near = self.near
        # Bound once, and ``_local`` written out: per key, function calls are most of the cost.
        encode, loads, count, readable, membership = (
            self.encode,
            self.loads,
            self._count,
            self.readable,
            self.membership,
        )
        name, loaded = self.name, self.store is None  # loaded: a miss here is a miss (no store to read)
        locals_read = 0
        for key in keys:
            encoded = encode(key)
            if encoded in originals:
                continue
            originals[encoded] = key
            if near is not None:
                cached = near.lookup(encoded)
                if cached is not MISS:
                    found[key] = cached
                    continue
            partition = partition_of(encoded, count)
            part = readable[partition]
            if part is not None:
                records = part.maps.get(name)  # as get: it stands if, after it, ...
                value = records.get(encoded) if records is not None else None
                if (
                    (value is not None or loaded)  # ... no load is needed,
                    and membership.lease_until > _monotonic()  # ... the lease holds,
                    and readable[partition] is part  # ... the partition is still served here,
                    and (not part.unacked or not _unacked(part, name, encoded))  # ... no write waits
                ):
                    locals_read += 1
                    if value is not None:
                        found[key] = loads(value)
                    continue
            remote.append(encoded)
            partitions.append(partition)
        self.counters.owner_local_gets += locals_read
        if near is not None:
            near.misses -= locals_read  # as in get: owner-local, not a near-cache miss
        if not remote:
            self._got_many(started, len(originals), len(found))
            return found
        return Remote(self._fetch_all(Gets(self.name, remote, partitions), originals, found, started))

    def _fetch_all(
        self, gets: Gets, originals: dict[bytes, Any], found: dict[Any, Any], started: float
    ) -> Flow[Any, dict[Key, Any]]:
        near = self.near
        flights = [near.begin(key) for key in gets.keys] if near is not None else []
        fetched: Fetch | None = None
        try:
            fetched = yield gets
        finally:
            self._fetched(gets, fetched, flights, originals, found)
        self._got_many(started, len(originals), len(found))
        return found

    def _fetched(
        self,
        gets: Gets,
        fetched: Fetch | None,
        flights: list[Flight],
        originals: dict[bytes, Any],
        found: dict[Any, Any],
    ) -> None:
        """Fetches of a batch ended (``fetched`` is None if the batch failed): record what
        was found in ``found`` by original key, and tell the near cache."""
        near = self.near
        loads = self.loads
        error: Exception | None = None
        keys = gets.keys
        if fetched is None:
            if near is not None:
                for key, partition, flight in zip(keys, gets.partitions, flights, strict=True):
                    near.end(key, partition, None, False, flight, False, 0, 0.0)
            return
        values = fetched.values
        if near is None:
            for key, raw in zip(keys, values, strict=True):
                if raw is not None:
                    try:
                        found[originals[key]] = loads(raw)
                    except Exception as exc:  # noqa: BLE001 - re-raised once every other fetch landed
                        error = error or exc
        else:
            versions, ttls = fetched.versions, fetched.ttls
            for i, key in enumerate(keys):
                raw = values[i]
                ok, hit, value = True, raw is not None, None
                if raw is not None:
                    try:
                        value = found[originals[key]] = loads(raw)
                    except Exception as exc:  # noqa: BLE001 - as above
                        error, ok, hit = error or exc, False, False
                near.end(key, gets.partitions[i], value, hit, flights[i], ok, versions[i], ttls[i])
        if error is not None:
            raise error

    @flow
    def size(self) -> Flow[list[Op], int]:
        """``size``: live entries over every member."""
        return sum(result.count for result in (yield self.per_partition(Code.SIZE)))

    def scan(self, what: str) -> Scan:
        """``keys``, ``values`` or ``items`` (``what``), read a few partitions at a time."""
        return Scan(self, what)

    @flow
    def scan_chunk(self, partitions: list[int], what: str, scan: Scan) -> Flow[list[Op], list[Any]]:
        """One chunk of a scan: every live entry of ``partitions``, each partition read at once
        (a consistent read of it); an answer too large for one message is read again in parts."""
        code = Code.KEYS if what == "keys" else Code.ENTRIES
        try:
            results = yield [Op(code, p, self.name) for p in partitions]
        except ResultTooLargeError:
            if len(partitions) == 1:
                if code == Code.KEYS:
                    raise
                return (yield from self._scan_in_parts(partitions[0], what, scan))
            found: list[Any] = []
            for p in partitions:  # which one does not fit: each on its own
                found.extend((yield from self.scan_chunk([p], what, scan).flow))
            return found
        count = size = 0
        for result in results:
            keys = result.keys or ()
            count += len(keys)
            size += sum(map(len, keys)) + (sum(map(len, result.values)) if result.values else 0)
        scan.learn(len(partitions), count, size)
        if what == "keys":
            return [decode_key(key) for result in results for key in (result.keys or ())]
        loads = self.loads
        pairs = (kv for result in results for kv in zip(result.keys or (), result.values or (), strict=True))
        if what == "values":
            return [loads(value) for _, value in pairs]
        return [(decode_key(key), loads(value)) for key, value in pairs]

    def _scan_in_parts(self, partition: int, what: str, scan: Scan) -> Flow[list[Op], list[Any]]:
        """A partition whose entries do not fit one message: its keys, then their values a few
        at a time (not one consistent read: entries written meanwhile may or may not appear)."""
        (result,) = yield [Op(Code.KEYS, partition, self.name)]
        keys = list(result.keys or ())
        found: list[Any] = []
        batch = 1
        while keys:
            ops = [Op(Code.GET, partition, self.name, key) for key in keys[:batch]]
            del keys[:batch]
            results = yield ops
            size = sum(len(r.value) for r in results)
            for op, r in zip(ops, results, strict=True):
                if not r.found:
                    continue  # removed meanwhile
                if what == "values":
                    found.append(self.loads(r.value))
                else:
                    found.append((decode_key(op.key), self.loads(r.value)))
            batch = max(1, min(256, SCAN_BYTES * len(ops) // max(1, size)))
        return found

    # ------------------------------------------------------------------ writes
    def _write(self, op: Op) -> Flow[Op, Result]:
        """A single-key write through this member. The near cache serves the entry it holds
        while it runs (a read that overlaps the write may return the value before it); an
        acknowledged ``set`` or ``put`` without TTL refills it with the value written
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
                else:  # (the version it was applied at, if it was: older events change nothing)
                    near.write_ends(op.key, op.partition, None, result.version if result is not None else 0)
        self._wrote(started, op.code)
        assert result is not None
        return result

    def _invalidating(self, ops: list[Op]) -> Flow[list[Op], list[Result]]:
        """Run ``ops``, keeping their keys out of the near cache before and after.

        A bulk call runs in parts of ``BULK_FRAMES`` frames' worth of ops (``Limits.frame_ops``
        each), one part after another: other callers' ops to the same owners queue behind one
        part, not behind the whole call (a ``put_all`` of 30,000 entries held every other get to
        its owners for ~2 s), and each part's ops get the caller's whole deadline. On an error
        the parts not sent yet are not sent (the call was not atomic anyway).
        """
        near = self.near
        if near is not None:
            for op in ops:
                near.invalidate(op.key)
        part = BULK_FRAMES * self.node.config.limits.frame_ops
        try:
            results: list[Result] = []
            for start in range(0, len(ops), part):
                results += yield ops[start : start + part]
            return results
        finally:
            if near is not None:
                for op in ops:
                    near.invalidate(op.key)

    def _stores(self, code: int, key: Key, value: Any, ttl: object) -> Op:
        """The op of a write storing ``value`` (put, set, put_if_absent, replace), checked."""
        return self.keyed(code, key, self.value(value), ttl=self.ttl(ttl))

    @flow
    def put(self, key: Key, value: Any, ttl: object) -> Flow[Op, Any]:
        """``put``: the previous value or None."""
        return self.decoded((yield from self._write(self._stores(Code.PUT, key, value, ttl))))

    @flow
    def set(
        self, key: Key, value: Any, ttl: object, if_absent: object, if_present: object
    ) -> Flow[Op, bool | None]:
        """``set``: nothing (DESIGN.md: like put, returns nothing); with ``if_absent`` or
        ``if_present`` (redis's NX and XX), True if it wrote."""
        if if_absent and if_present:
            raise ArgumentError("set() takes if_absent=True or if_present=True, not both")
        if if_absent:  # put_if_absent; it wrote when there was nothing to answer with
            return not (yield from self._write(self._stores(Code.PUT_IF_ABSENT, key, value, ttl))).found
        if if_present:  # replace; it wrote when there was a previous value
            return bool((yield from self._write(self._stores(Code.REPLACE, key, value, ttl))).found)
        yield from self._write(self._stores(Code.SET, key, value, ttl))
        return None

    @flow
    def put_if_absent(self, key: Key, value: Any, ttl: object) -> Flow[Op, Any]:
        """``put_if_absent``: the existing value or None."""
        return self.decoded((yield from self._write(self._stores(Code.PUT_IF_ABSENT, key, value, ttl))))

    @flow
    def replace(self, key: Key, value: Any, ttl: object) -> Flow[Op, Any]:
        """``replace``: the previous value or None."""
        return self.decoded((yield from self._write(self._stores(Code.REPLACE, key, value, ttl))))

    @flow
    def replace_if_same(self, key: Key, old: Any, new: Any, ttl: object) -> Flow[Op, bool]:
        """``replace_if_same``: True if it replaced."""
        op = self.keyed(Code.REPLACE_IF_SAME, key, self.value(new), self.value(old), self.ttl(ttl))
        return (yield from self._write(op)).found

    @flow
    def delete(self, key: Key) -> Flow[Op, bool]:
        """``delete``: True if the key had a live value."""
        return (yield from self._write(self.keyed(Code.DELETE, key))).found

    # ------------------------------------------------------------------ the mapping protocol's writes
    @flow
    def pop(self, key: Key, default: Any) -> Flow[Any, Any]:
        """``pop``: remove ``key`` and return the value removed; ``default`` when it had none
        (``KeyError`` when ``default`` is ``NO_DEFAULT``).

        Atomic: one owner-side ``remove``, which answers with the value it removed.
        """
        result = yield from self._write(self.keyed(Code.REMOVE, key))
        if not result.found:
            if default is NO_DEFAULT:
                raise KeyError(key)
            return default
        return self.loads(result.value)

    @flow
    def popitem(self) -> Flow[Any, tuple[Any, Any]]:
        """``popitem``: remove some entry and return it; ``KeyError`` when the map is empty."""
        scan = self.scan("keys")
        while (step := scan.next()) is not None:
            for key in (yield from step.flow):
                value = yield from self.pop(key, NO_DEFAULT_QUIET).flow
                if value is not NO_DEFAULT_QUIET:
                    return key, value
        raise KeyError("popitem(): the map is empty")

    @flow
    def setdefault(self, key: Key, default: Any) -> Flow[Op, Any]:
        """``setdefault``: the live value of ``key``, else ``default``, stored (put_if_absent)."""
        result = yield from self._write(self._stores(Code.PUT_IF_ABSENT, key, default, None))
        return self.loads(result.value) if result.found else default  # found: a value, even None

    def update(self, other: Any, kwargs: Mapping[str, Any]) -> Remote[None]:
        """``update``: ``put_all`` of a mapping, or of an iterable of pairs, and of ``kwargs``."""
        entries: dict[Key, Any] = {}
        if isinstance(other, Mapping):
            entries.update(other.items())
        elif hasattr(other, "keys"):
            entries.update((k, other[k]) for k in other.keys())  # noqa: SIM118 - all such an object has
        else:
            if isinstance(other, str | bytes) or not isinstance(other, Iterable):
                raise ArgumentError(f"update takes a mapping or pairs, not {type(other).__qualname__}")
            for item in other:
                if not isinstance(item, tuple | list) or len(item) != 2:
                    raise ArgumentError(f"update takes (key, value) pairs, got {item!r}")
                entries[item[0]] = item[1]
        entries.update(kwargs)
        return self.put_all(entries, None)

    @flow
    def put_all(self, mapping: Mapping[Any, Any], ttl: object) -> Flow[list[Op], None]:
        """``put_all``: every key and value checked before any is sent."""
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

    # -- entries: TTL, removal, eviction, views of one entry (issue 15)
    def _read_here(
        self, partition: int, encoded: bytes, read: Callable[[Records | None], R]
    ) -> tuple[bool, R | None]:
        """``(True, read(the map's records or None))`` when this member answers for the key
        itself (it serves its partition, holds its owner lease, and no write of the key waits
        for its backups: the loop waits for those), else ``(False, None)``."""
        part = self.readable[partition]
        if part is None:
            return False, None
        found = read(part.maps.get(self.name))
        if not self._stands(part, partition, encoded):
            return False, None
        return True, found

    def ttl_of(self, key: Key) -> float | Remote[float | None] | None:
        """``ttl``: seconds left, None for no TTL; ``KeyError`` when ``key`` has no live entry."""
        self.node.ensure_open()
        encoded, partition = self.key(key)
        local, left = self._read_here(
            partition, encoded, lambda records: time_left(records, encoded) if records is not None else None
        )
        if local and (left is not None or self.store is None):  # (a miss may load from the store)
            return _seconds_left(key, left)
        return Remote(self._ttl_of(key, Op(Code.TTL, partition, self.name, encoded)))

    def _ttl_of(self, key: Key, op: Op) -> Flow[Op, float | None]:
        result = yield op
        return _seconds_left(key, result.ttl if result.found else None)

    @flow
    def expire(self, key: Key, seconds: object) -> Flow[Op, bool]:
        """``expire``: True if ``key`` had a live entry, which now expires in ``seconds``."""
        if seconds is None:
            raise ArgumentError("expire takes a number of seconds > 0, got None; persist(key) removes a TTL")
        op = self.keyed(Code.EXPIRE, key, ttl=check_ttl(seconds))
        return (yield from self._write(op)).found

    @flow
    def persist(self, key: Key) -> Flow[Op, bool]:
        """``persist``: True if ``key``'s live entry had a TTL, now removed."""
        return (yield from self._write(self.keyed(Code.PERSIST, key))).found

    @flow
    def remove(self, key: Key) -> Flow[Op, Any]:
        """``remove``: the previous value, or None."""
        return self.decoded((yield from self._write(self.keyed(Code.REMOVE, key))))

    @flow
    def remove_if_same(self, key: Key, value: Any) -> Flow[Op, bool]:
        """``remove_if_same``: True if it removed."""
        return (yield from self._write(self.keyed(Code.REMOVE_IF_SAME, key, expect=self.value(value)))).found

    @flow
    def evict(self, key: Key) -> Flow[Op, bool]:
        """``evict``: True if ``key`` had a live entry in memory, now dropped (never from the store)."""
        return (yield from self._write(self.keyed(Code.EVICT, key))).found

    @flow
    def evict_all(self) -> Flow[list[Op], None]:
        """``evict_all``: every entry dropped from memory, on every member (never from the store)."""
        yield from self._whole_map(Code.EVICT_ALL)

    def _whole_map(self, code: int) -> Flow[list[Op], None]:
        """One ``code`` op per partition, the near cache emptied before and after."""
        near = self.near
        if near is not None:
            near.clear()
        try:
            yield self.per_partition(code)
        finally:
            if near is not None:
                near.clear()

    def entry_view(self, key: Key) -> EntryView | Remote[EntryView | None] | None:
        """``entry_view``: the live entry's view, or None."""
        self.node.ensure_open()
        encoded, partition = self.key(key)
        local, record = self._read_here(partition, encoded, lambda records: entry_record(records, encoded))
        if local and (record is not None or self.store is None):  # (a miss may load from the store)
            return self._view(key, record)
        return Remote(self._entry_view(key, Op(Code.ENTRY_VIEW, partition, self.name, encoded)))

    def _entry_view(self, key: Key, op: Op) -> Flow[Op, EntryView | None]:
        result = yield op
        if not result.found:
            return None
        try:
            record = EntryRecord.decode(result.value)
        except ValueError as exc:
            raise RemoteError(
                f"{self.name}.entry_view: the owner answered a malformed entry: {exc}"
            ) from None
        return self._view(key, record)

    def _view(self, key: Key, record: EntryRecord | None) -> EntryView | None:
        if record is None:
            return None
        expire_at = record.expire_at or None
        return EntryView(
            key=key,
            value=self.loads(record.value),
            ttl=max(expire_at - time.time(), 0.0) if expire_at else None,
            expiration_time=expire_at,
            last_access_time=record.last_access or None,
        )

    @flow
    def contains_value(self, value: Any) -> Flow[list[Op], bool]:
        """``contains_value``: True if some live entry's value equals ``value``."""
        encoded = self.value(value)
        ops = [Op(Code.CONTAINS_VALUE, p, self.name, value=encoded) for p in range(self._count)]
        return any(result.found for result in (yield ops))

    @flow
    def is_empty(self) -> Flow[list[Op], bool]:
        """``is_empty``: True when no member holds a live entry."""
        return (yield from self.size().flow) == 0

    @flow
    def destroy(self) -> Flow[list[Op] | OnMember, None]:
        """``destroy``: the map's entries dropped on every member, and this member's listeners,
        near cache, statistics and ``get_map`` configuration of it forgotten."""
        if self.config.write_behind is not None:
            yield self.per_partition(Code.FLUSH)  # writes still queued for the store are stored
        yield from self._whole_map(Code.DESTROY)
        self.destroyed = True
        yield self.on_member(self.node.maps.destroy(self.name, self.node.config.maps.get(self.name)))


def _seconds_left(key: Key, left: float | None) -> float | None:
    """What ``ttl`` answers for an entry with ``left`` seconds (0.0: no TTL; None: absent)."""
    if left is None:
        raise KeyError(key)
    return left or None


class Scan:
    """A scan of one map (``keys``, ``values`` or ``items``), a few partitions at a time.

    ``next()`` is the next step (``Remote`` of a list), or None once every partition was read.
    Each step reads whole partitions, each at once on its owner: a consistent read of each
    partition, not of the map: entries written during the scan may or may not appear, and none
    appears twice (a key's partition is fixed, and each partition is read once). Steps grow
    while partitions are small, aiming at ``SCAN_ENTRIES`` entries and ``SCAN_BYTES`` bytes a
    step; the owner splits an answer into messages under the transport's limit.
    """

    def __init__(self, core: MapCore, what: str) -> None:
        self._core = core
        self._what = what
        self._left = list(range(core.partition_count))
        self._step = SCAN_FIRST

    def next(self) -> Remote[list[Any]] | None:
        """The next step, or None when the scan is complete."""
        if not self._left:
            return None
        chunk, self._left = self._left[: self._step], self._left[self._step :]
        return self._core.scan_chunk(chunk, self._what, self)

    def learn(self, partitions: int, count: int, size: int) -> None:
        """A step read ``count`` entries of ``size`` bytes from ``partitions`` partitions."""
        limit = float(partitions * SCAN_GROWTH)
        by_count = SCAN_ENTRIES * partitions / count if count else limit
        by_size = SCAN_BYTES * partitions / size if size else limit
        self._step = max(1, int(min(limit, by_count, by_size)))


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
