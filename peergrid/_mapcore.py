"""What the sync and async maps share: argument checks, encoding, results.

A map call is: check and encode the arguments (here), run the op (locally for
an owner-local read, else through the invoker; the sync and async maps differ
only there), then decode the result or raise the error it carries (here).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from peergrid.config import MapConfig
from peergrid.errors import (
    ArgumentError,
    CapacityError,
    GridClosedError,
    IndeterminateWriteError,
    LimitExceededError,
    OperationTimeoutError,
    PartitionLostError,
    ProcessorError,
    QuorumError,
    RemoteError,
    StoreError,
)
from peergrid.invocation.invoker import Call, Group
from peergrid.nearcache import MISS
from peergrid.partition import partition_of
from peergrid.protocol import MAX_NAME, WRITES, Code, Op, Result, Status
from peergrid.serialization import Key, decode_key, encode_key

_REFILLS = frozenset({Code.SET, Code.PUT})  # writes that always store op.value when acknowledged

if TYPE_CHECKING:
    from peergrid.nearcache import Flight, NearCache
    from peergrid.node import Node

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
    Code.RECOVER: "recover_lost_partitions",
    Code.EXECUTE: "execute_on_key",
    Code.LOCK: "lock",
    Code.UNLOCK: "unlock",
    Code.LOCK_STATE: "is_locked",
}
RESERVED_MAP_PREFIX = "__peergrid."  # internal maps (locks); no user map may start so


def check_map_name(name: object) -> str:
    """A valid map name, or ``ArgumentError``."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise ArgumentError(f"map names are non-empty str of at most {MAX_NAME} characters, got {name!r}")
    if name.startswith(RESERVED_MAP_PREFIX):
        raise ArgumentError(
            f"map names starting with {RESERVED_MAP_PREFIX!r} are peergrid's own, got {name!r}"
        )
    return name


def check_ttl(ttl: object) -> float:
    """TTL seconds as the wire carries it (0 = none), or ``ArgumentError``."""
    if ttl is None:
        return 0.0
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise ArgumentError(f"ttl must be a positive number of seconds (or None for no expiry), got {ttl!r}")
    return float(ttl)


class MapCore:
    """Encoding and decoding for one map on one member."""

    def __init__(self, node: Node, name: str, config: MapConfig | None = None) -> None:
        self.node = node
        self.name = check_map_name(name)
        self.config = config or MapConfig()
        self.default_ttl = check_ttl(self.config.ttl)
        self._jitter = self.config.ttl_jitter
        self.near: NearCache | None = node.near_caches.get(name)
        self.store = self.config.store  # a map with a store loads misses on its owner
        self.counters = node.counters_of(name)
        self.readable = node.manager.readable
        self.membership = node.membership  # its lease_until says whether owner-local reads may be served
        self.loads = node.serializer.loads
        self.dumps = node.serializer.dumps
        self._count = node.config.partition_count
        self._max_key = node.config.limits.max_key_bytes
        self._max_value = node.config.limits.max_value_bytes
        self.timeout = node.config.timing.operation_timeout

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

    def partition(self, encoded: bytes) -> int:
        """The partition of an encoded key."""
        return partition_of(encoded, self._count)

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

    def wrote(self, started: float, code: int) -> None:
        """Count a write that began at ``started``."""
        counters = self.counters
        if code == Code.DELETE:
            counters.removes += 1
        else:
            counters.puts += 1
        counters.put_latency.record(time.perf_counter() - started)

    def begin_fetches(self, ops: list[Op]) -> list[Flight]:
        """Fetches of ``ops``' keys start (near cache): their flights, for ``end_fetches``."""
        near = self.near
        return [near.begin(op.key) for op in ops] if near is not None else []

    def end_fetches(
        self,
        ops: list[Op],
        results: list[Result],
        flights: list[Flight],
        originals: dict[bytes, Any],
        found: dict[Any, Any],
    ) -> None:
        """Fetches of a batch ended (``results`` is short if the batch failed): record what
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

    def write_begins(self, op: Op) -> None:
        """A single-key write through this member starts (near cache: drop the key)."""
        if self.near is not None:
            self.near.write_begins(op.key)

    def write_ends(self, op: Op, result: Result | None) -> None:
        """It ended (``result``: acknowledged; None: failed or unknown). A ``set`` or ``put``
        without TTL refills the near cache with the value written (read-your-writes, no
        fetch); any other write leaves the key to be fetched again."""
        near = self.near
        if near is None:
            return
        if result is not None and op.code in _REFILLS and not op.ttl and result.version:
            near.write_ends(op.key, op.partition, op.value, result.version, result.ttl)
        else:
            near.write_ends(op.key, op.partition, None, 0)

    def invalidate(self, key: bytes) -> None:
        """A write through this member: drop the near-cached key (read-your-writes)."""
        if self.near is not None:
            self.near.invalidate(key)

    def keyed(self, code: int, key: object, value: bytes = b"", expect: bytes = b"", ttl: float = 0.0) -> Op:
        """An op on one key."""
        encoded, partition = self.key(key)
        return Op(code, partition, self.name, encoded, value, expect, ttl)

    def per_partition(self, code: int) -> list[Op]:
        """One op per partition (size, clear, keys, items)."""
        return [Op(code, p, self.name) for p in range(self._count)]

    def local_value(self, encoded: bytes, partition: int) -> tuple[bool, bytes | None]:
        """``(True, value-or-None)`` when this member serves the partition (and holds its owner
        lease), else ``(False, None)``."""
        part = self.readable[partition]
        if part is None or self.membership.lease_until <= time.monotonic():
            return False, None
        store = part.maps.get(self.name)
        return True, (store.get(encoded) if store is not None else None)

    # ------------------------------------------------------------------ calls
    def call(self, op: Op, on_done: Any = None, group: Group | None = None) -> Call:
        """A call for ``op`` with this map's deadline (not started)."""
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

    # ------------------------------------------------------------------ decoding
    def decoded(self, result: Result, default: Any = None) -> Any:
        """The value a result carries, or ``default``."""
        return self.loads(result.value) if result.found else default

    def batch_ops(self, keys: Iterable[object]) -> tuple[dict[bytes, Any], list[Op], dict[Any, Any]]:
        """For get_all: near-cache hits and owner-local values decoded now, ops for the rest."""
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
            local, value = self.local_value(encoded, partition)
            if local and (value is not None or self.store is None):
                if value is not None:
                    found[key] = self.loads(value)
            else:
                ops.append(Op(Code.GET, partition, self.name, encoded))
        return originals, ops, found

    def put_ops(self, mapping: Mapping[Any, Any], ttl: object) -> list[Op]:
        """SET ops for put_all, every key and value checked before any is sent."""
        if not isinstance(mapping, Mapping):
            raise ArgumentError(f"put_all takes a mapping, not {type(mapping).__qualname__}")
        self.ttl(ttl)  # checked once, before anything is encoded
        # The ttl per entry: a map default with jitter spreads each entry's expiry.
        return [
            self.keyed(Code.SET, key, self.value(value), ttl=self.ttl(ttl)) for key, value in mapping.items()
        ]

    def entries(self, results: Iterable[Result]) -> list[tuple[Key, Any]]:
        """Decoded ``(key, value)`` pairs of ENTRIES results."""
        pairs: list[tuple[Key, Any]] = []
        for result in results:
            for key, value in zip(result.keys or (), result.values or (), strict=True):
                pairs.append((decode_key(key), self.loads(value)))
        return pairs

    def keys_of(self, results: Iterable[Result]) -> list[Key]:
        """Decoded keys of KEYS results."""
        return [decode_key(key) for result in results for key in (result.keys or ())]
