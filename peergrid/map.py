"""DistributedMap: the sync API of a map partitioned over the cluster.

Reads of keys whose partition this member owns are served from its own
memory, on the caller's thread, with no RPC and no thread hop. Everything else
goes to the partition's owner through the member's loop, coalesced with other
callers' operations bound for the same member.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from peergrid._mapcore import LocalMapStats, MapCore
from peergrid.config import reject_unknown
from peergrid.errors import OperationTimeoutError
from peergrid.invocation.invoker import Group
from peergrid.protocol import Code, Op, Result
from peergrid.serialization import Key

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
    ``PartitionLostError``, ``QuorumError``, ``GridClosedError``.
    """

    def __init__(self, node: Node, name: str, ttl: float | None = None) -> None:
        self._core = MapCore(node, name, ttl)
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

    # ------------------------------------------------------------------ reads
    def get(self, key: Key, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent or expired."""
        core = self._core
        if self._node.closed:
            self._node.ensure_open()
        encoded, partition = core.key(key)
        part = core.readable[partition]
        if part is not None:  # owner-local: a dict lookup on this thread
            store = part.maps.get(self.name)
            value = store.get(encoded) if store is not None else None
            return default if value is None else core.loads(value)
        result = self._run(Op(Code.GET, partition, self.name, encoded))
        return core.decoded(result, default)

    def contains_key(self, key: Key) -> bool:
        """True when ``key`` has a live value."""
        core = self._core
        self._node.ensure_open()
        encoded, partition = core.key(key)
        local, value = core.local_value(encoded, partition)
        if local:
            return value is not None
        return self._run(Op(Code.CONTAINS, partition, self.name, encoded)).found

    def get_all(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """The live values of ``keys`` (absent keys are left out): one RPC per owning member."""
        self._node.ensure_open()
        originals, ops, found = self._core.batch_ops(keys)
        for op, result in zip(ops, self._run_all(ops), strict=True):
            if result.found:
                found[originals[op.key]] = self._core.loads(result.value)
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
        op = core.keyed(Code.PUT, key, core.value(value), ttl=core.ttl(ttl))
        return core.decoded(self._run(op))

    def set(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> None:
        """Store ``value`` under ``key`` without returning the previous value (cheaper than put)."""
        reject_unknown("set", unknown, ("key", "value", "ttl"))
        core = self._core
        self._run(core.keyed(Code.SET, key, core.value(value), ttl=core.ttl(ttl)))

    def put_if_absent(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> Any:
        """Store ``value`` only if ``key`` has no live value; return the existing value or None."""
        reject_unknown("put_if_absent", unknown, ("key", "value", "ttl"))
        core = self._core
        return core.decoded(
            self._run(core.keyed(Code.PUT_IF_ABSENT, key, core.value(value), ttl=core.ttl(ttl)))
        )

    def replace(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> Any:
        """Store ``value`` only if ``key`` has a live value; return that previous value or None."""
        reject_unknown("replace", unknown, ("key", "value", "ttl"))
        core = self._core
        return core.decoded(self._run(core.keyed(Code.REPLACE, key, core.value(value), ttl=core.ttl(ttl))))

    def replace_if_same(self, key: Key, old: Any, new: Any, ttl: float | None = None, **unknown: Any) -> bool:
        """Store ``new`` only if ``key``'s live value equals ``old``; True if it did."""
        reject_unknown("replace_if_same", unknown, ("key", "old", "new", "ttl"))
        core = self._core
        op = core.keyed(Code.REPLACE_IF_SAME, key, core.value(new), core.value(old), core.ttl(ttl))
        return self._run(op).found

    def delete(self, key: Key) -> bool:
        """Remove ``key``; True if it had a live value."""
        return self._run(self._core.keyed(Code.DELETE, key)).found

    def put_all(self, mapping: Mapping[Key, Any], ttl: float | None = None, **unknown: Any) -> None:
        """Store every entry of ``mapping``: one RPC per owning member, in parallel.

        Every key and value is checked before anything is sent. Not atomic: on
        an error some entries may have been stored.
        """
        reject_unknown("put_all", unknown, ("mapping", "ttl"))
        self._node.ensure_open()
        self._run_all(self._core.put_ops(mapping, ttl))

    def clear(self) -> None:
        """Remove every entry of the map, on every member."""
        self._run_all(self._core.per_partition(Code.CLEAR))

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

    # ------------------------------------------------------------------ stats
    def local_stats(self) -> LocalMapStats:
        """What this member holds of this map (owned and backup entries and bytes)."""
        stats: LocalMapStats = self._node.run(_local_stats(self._node, self.name), timeout=self._core.timeout)
        return stats


def run_ops(node: Node, ops: list[Op], core: MapCore | None = None) -> list[Result]:
    """Run ops in parallel, one frame per owning member; wait for all; raise the first error."""
    core = core or MapCore(node, "-", None)
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


class _Missing:
    pass


_MISSING = _Missing()


async def _local_stats(node: Node, name: str) -> LocalMapStats:
    owned = backup = owned_bytes = backup_bytes = 0
    manager = node.manager
    for p, part in enumerate(manager.parts):
        store = part.maps.get(name) if part is not None else None
        if store is None:
            continue
        index = manager.table.replica_index(p, node.uuid)
        if index == 0:
            owned += store.count()
            owned_bytes += store.nbytes
        elif index is not None:
            backup += store.count()
            backup_bytes += store.nbytes
    return LocalMapStats(owned, backup, owned_bytes, backup_bytes)
