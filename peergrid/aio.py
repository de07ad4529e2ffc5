"""AsyncGrid and AsyncMap: the same API for asyncio code.

The member still runs on its own loop thread (so a busy application loop
cannot delay its heartbeats); an awaited operation completes the caller's
future from there. Owner-local reads return without any hop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Iterable, Mapping
from types import TracebackType
from typing import Any

from peergrid._mapcore import LocalMapStats, MapCore
from peergrid.config import GridConfig, reject_unknown
from peergrid.errors import ArgumentError, ConfigError
from peergrid.grid import cluster_safe
from peergrid.invocation.invoker import Group
from peergrid.map import _local_stats, recover_ops, recovered
from peergrid.node import Node
from peergrid.protocol import Code, Member, Op, Result
from peergrid.serialization import Key

_MARGIN = 1.0


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AsyncMap:
    """A distributed map for asyncio code; see ``DistributedMap`` for the semantics."""

    def __init__(self, node: Node, name: str, ttl: float | None = None) -> None:
        self._core = MapCore(node, name, ttl)
        self._node = node
        self.name = self._core.name

    def __repr__(self) -> str:
        return f"AsyncMap({self.name!r})"

    async def _run(self, op: Op) -> Result:
        results = await self._run_all([op])
        return results[0]

    async def _run_all(self, ops: list[Op]) -> list[Result]:
        core = self._core
        self._node.ensure_open()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            loop.call_soon_threadsafe(_resolve, done)

        group = Group(len(ops), resolve)
        calls = [core.call(op, group=group) for op in ops]
        self._node.invoker.start_many(calls)
        try:
            async with asyncio.timeout(core.timeout + _MARGIN):
                await done
        except TimeoutError:
            raise core.timed_out(ops[0]) from None
        return core.check_all(calls)

    async def get(self, key: Key, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        core = self._core
        self._node.ensure_open()
        encoded, partition = core.key(key)
        local, value = core.local_value(encoded, partition)
        if local:
            return default if value is None else core.loads(value)
        return core.decoded(await self._run(Op(Code.GET, partition, self.name, encoded)), default)

    async def contains_key(self, key: Key) -> bool:
        """True when ``key`` has a live value."""
        core = self._core
        self._node.ensure_open()
        encoded, partition = core.key(key)
        local, value = core.local_value(encoded, partition)
        if local:
            return value is not None
        return (await self._run(Op(Code.CONTAINS, partition, self.name, encoded))).found

    async def get_all(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """The live values of ``keys``: one RPC per owning member."""
        self._node.ensure_open()
        originals, ops, found = self._core.batch_ops(keys)
        if ops:
            for op, result in zip(ops, await self._run_all(ops), strict=True):
                if result.found:
                    found[originals[op.key]] = self._core.loads(result.value)
        return found

    async def put(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> Any:
        """Store ``value``; return the previous value or None."""
        reject_unknown("put", unknown, ("key", "value", "ttl"))
        core = self._core
        return core.decoded(await self._run(core.keyed(Code.PUT, key, core.value(value), ttl=core.ttl(ttl))))

    async def set(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> None:
        """Store ``value`` without returning the previous one."""
        reject_unknown("set", unknown, ("key", "value", "ttl"))
        core = self._core
        await self._run(core.keyed(Code.SET, key, core.value(value), ttl=core.ttl(ttl)))

    async def put_if_absent(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> Any:
        """Store only if absent; return the existing value or None."""
        reject_unknown("put_if_absent", unknown, ("key", "value", "ttl"))
        core = self._core
        op = core.keyed(Code.PUT_IF_ABSENT, key, core.value(value), ttl=core.ttl(ttl))
        return core.decoded(await self._run(op))

    async def replace(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> Any:
        """Store only if present; return the previous value or None."""
        reject_unknown("replace", unknown, ("key", "value", "ttl"))
        core = self._core
        return core.decoded(
            await self._run(core.keyed(Code.REPLACE, key, core.value(value), ttl=core.ttl(ttl)))
        )

    async def replace_if_same(
        self, key: Key, old: Any, new: Any, ttl: float | None = None, **unknown: Any
    ) -> bool:
        """Store ``new`` only if the live value equals ``old``."""
        reject_unknown("replace_if_same", unknown, ("key", "old", "new", "ttl"))
        core = self._core
        op = core.keyed(Code.REPLACE_IF_SAME, key, core.value(new), core.value(old), core.ttl(ttl))
        return (await self._run(op)).found

    async def delete(self, key: Key) -> bool:
        """Remove ``key``; True if it had a live value."""
        return (await self._run(self._core.keyed(Code.DELETE, key))).found

    async def put_all(self, mapping: Mapping[Key, Any], ttl: float | None = None, **unknown: Any) -> None:
        """Store every entry: one RPC per owning member, in parallel."""
        reject_unknown("put_all", unknown, ("mapping", "ttl"))
        self._node.ensure_open()
        ops = self._core.put_ops(mapping, ttl)
        if ops:
            await self._run_all(ops)

    async def size(self) -> int:
        """Live entries in the whole map."""
        return sum(r.count for r in await self._run_all(self._core.per_partition(Code.SIZE)))

    async def clear(self) -> None:
        """Remove every entry."""
        await self._run_all(self._core.per_partition(Code.CLEAR))

    async def keys(self) -> list[Key]:
        """Every live key."""
        return self._core.keys_of(await self._run_all(self._core.per_partition(Code.KEYS)))

    async def items(self) -> list[tuple[Key, Any]]:
        """Every live ``(key, value)`` pair."""
        return self._core.entries(await self._run_all(self._core.per_partition(Code.ENTRIES)))

    async def values(self) -> list[Any]:
        """Every live value."""
        return [value for _, value in await self.items()]

    async def local_stats(self) -> LocalMapStats:
        """What this member holds of this map."""
        self._node.ensure_open()
        future = asyncio.run_coroutine_threadsafe(_local_stats(self._node, self.name), self._node.loop)
        return await asyncio.wrap_future(future)


class AsyncGrid:
    """A member for asyncio code: ``async with peergrid.AsyncGrid(...) as grid:``.

    Also ``grid = await peergrid.AsyncGrid(...)``. Starting (binding and
    joining) runs off the caller's loop, so it does not stall the application.
    """

    def __init__(self, config: GridConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError("pass either config=GridConfig(...) or keyword options, not both")
        self.config = config if config is not None else GridConfig.from_kwargs(**options)
        self.config.validate()
        self._node: Node | None = None
        self._maps: dict[str, AsyncMap] = {}

    async def start(self) -> AsyncGrid:
        """Bind, join and return self (idempotent)."""
        if self._node is None:
            node = Node(self.config)
            await asyncio.to_thread(node.start)
            self._node = node
        return self

    def __await__(self) -> Generator[Any, None, AsyncGrid]:
        return self.start().__await__()

    async def __aenter__(self) -> AsyncGrid:
        return await self.start()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    @property
    def node(self) -> Node:
        if self._node is None:
            raise ConfigError("the AsyncGrid is not started: use 'async with' or 'await AsyncGrid(...)'")
        return self._node

    @property
    def address(self) -> str:
        """``host:port`` this member is bound to."""
        return self.node.address

    @property
    def uuid(self) -> str:
        """This member's uuid."""
        return self.node.uuid

    def members(self) -> list[Member]:
        """The current member list, oldest first."""
        return list(self.node.membership.members.members)

    def get_map(self, name: str, ttl: float | None = None, **unknown: Any) -> AsyncMap:
        """The distributed map ``name``."""
        reject_unknown("get_map", unknown, ("name", "ttl"))
        self.node.ensure_open()
        if ttl is not None:
            return AsyncMap(self.node, name, ttl)
        if name not in self._maps:
            self._maps[name] = AsyncMap(self.node, name)
        return self._maps[name]

    async def wait_until_safe(self, timeout: float = 10.0) -> bool:
        """True once no migration runs and every backup is in sync; False after ``timeout``."""
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
            raise ArgumentError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        node = self.node
        node.ensure_open()
        future = asyncio.run_coroutine_threadsafe(cluster_safe(node, timeout), node.loop)
        return await asyncio.wrap_future(future)

    def add_partition_lost_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(partition)`` when a partition this member owns lost every copy."""
        self.node.add_partition_lost_listener(listener)

    async def recover_lost_partitions(self) -> list[int]:
        """Serve every lost partition again, empty (see ``Grid.recover_lost_partitions``)."""
        node = self.node
        return recovered(await AsyncMap(node, "-")._run_all(recover_ops(node)))

    async def shutdown(self) -> None:
        """Hand partitions over, leave and stop (safe to call twice)."""
        if self._node is not None:
            await asyncio.to_thread(self._node.shutdown)

    close = shutdown
