"""AsyncGrid and AsyncMap: the same API for asyncio code.

The member still runs on its own loop thread (so a busy application loop
cannot delay its heartbeats); an awaited operation completes the caller's
future from there. Owner-local reads return without any hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import weakref
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from peergrid._flows import drive_async
from peergrid._mapcore import MapCore
from peergrid.config import GridConfig, MapConfig, reject_unknown
from peergrid.errors import ArgumentError, ConfigError
from peergrid.grid import cluster_safe, map_config
from peergrid.invocation.invoker import Group
from peergrid.locks import AsyncLockHandle, LockCalls, check_lease, check_timeout, task_holder
from peergrid.map import (
    _LISTENER_ARGS,
    _listener_registration,
    _local_stats,
    add_listener,
    cluster_stats,
    recover_ops,
    recovered,
    remove_listener,
)
from peergrid.nearcache import MISS
from peergrid.node import Node
from peergrid.processors import INCREMENT, increment_args, processor_op, processor_ops
from peergrid.protocol import Code, Member, Op, Result
from peergrid.serialization import Key
from peergrid.stats import LocalMapStats, MapStats

_MARGIN = 1.0
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class _Handover:
    """Completions bound for one application loop, handed over once per runtime-loop iteration.

    Waking another thread's loop costs a system call and a thread switch; a
    frame's results complete many calls at once, so they cross together.
    """

    def __init__(self, target: asyncio.AbstractEventLoop, runtime: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._runtime = runtime
        self._pending: list[asyncio.Future[None]] = []

    def add(self, future: asyncio.Future[None]) -> None:
        """Complete ``future`` on its loop, soon (runtime thread)."""
        if not self._pending:
            self._runtime.call_soon(self._flush)
        self._pending.append(future)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        with contextlib.suppress(RuntimeError):  # the application's loop is closed: nobody waits
            self._target.call_soon_threadsafe(_resolve, batch)


class AsyncMap:
    """A distributed map for asyncio code; see ``DistributedMap`` for the semantics."""

    def __init__(self, node: Node, name: str, config: MapConfig | None = None) -> None:
        self._core = MapCore(node, name, config)
        self._node = node
        self.name = self._core.name
        self._handovers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Handover] = (
            weakref.WeakKeyDictionary()
        )

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
        handover = self._handovers.get(loop)
        if handover is None:
            handover = self._handovers[loop] = _Handover(loop, self._node.loop)
        group = Group(len(ops), lambda: handover.add(done))
        calls = [core.call(op, group=group) for op in ops]
        self._node.invoker.start_many(calls)
        try:
            async with asyncio.timeout(core.timeout + _MARGIN):
                await done
        except TimeoutError:
            raise core.timed_out(ops[0]) from None
        return core.check_all(calls)

    async def _write(self, op: Op) -> Result:
        core = self._core
        started = time.perf_counter()
        core.write_begins(op)
        result = None
        try:
            result = await self._run(op)
        finally:
            core.write_ends(op, result)
        core.wrote(started, op.code)
        return result

    async def get(self, key: Key, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        core = self._core
        self._node.ensure_open()
        started = time.perf_counter()
        encoded, partition = core.key(key)
        near = core.near
        if near is not None:
            cached = near.lookup(encoded)
            if cached is not MISS:
                core.got(started, True)
                return cached
        local, value = core.local_value(encoded, partition)
        if local and (value is not None or core.store is None):
            core.got(started, value is not None)
            return default if value is None else core.loads(value)
        shared = near.shared(encoded) if near is not None else None  # another caller is fetching it
        if shared is not None and await shared.wait_async(core.timeout + _MARGIN):
            core.got(started, shared.found)
            return shared.value if shared.found else default
        flight = near.begin(encoded) if near is not None else None
        found, decoded, ok, version, ttl = False, None, False, 0, 0.0
        try:
            result = await self._run(Op(Code.GET, partition, self.name, encoded))
            found, version, ttl = result.found, result.version, result.ttl
            decoded = core.decoded(result)
            ok = True
        finally:
            if near is not None and flight is not None:
                near.end(encoded, partition, decoded, found, flight, ok, version, ttl)
        core.got(started, found)
        return decoded if found else default

    async def contains_key(self, key: Key) -> bool:
        """True when ``key`` has a live value."""
        core = self._core
        self._node.ensure_open()
        encoded, partition = core.key(key)
        if core.near is not None and core.near.lookup(encoded) is not MISS:
            return True
        local, value = core.local_value(encoded, partition)
        if local and (value is not None or core.store is None):
            return value is not None
        return (await self._run(Op(Code.CONTAINS, partition, self.name, encoded))).found

    async def get_all(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """The live values of ``keys``: one RPC per owning member."""
        self._node.ensure_open()
        core = self._core
        originals, ops, found = core.batch_ops(keys)
        if not ops:
            return found
        flights = core.begin_fetches(ops)
        results: list[Result] = []
        try:
            results = await self._run_all(ops)
        finally:
            core.end_fetches(ops, results, flights, originals, found)
        return found

    async def put(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> Any:
        """Store ``value``; return the previous value or None."""
        reject_unknown("put", unknown, ("key", "value", "ttl"))
        core = self._core
        return core.decoded(
            await self._write(core.keyed(Code.PUT, key, core.value(value), ttl=core.ttl(ttl)))
        )

    async def set(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> None:
        """Store ``value`` without returning the previous one."""
        reject_unknown("set", unknown, ("key", "value", "ttl"))
        core = self._core
        await self._write(core.keyed(Code.SET, key, core.value(value), ttl=core.ttl(ttl)))

    async def put_if_absent(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> Any:
        """Store only if absent; return the existing value or None."""
        reject_unknown("put_if_absent", unknown, ("key", "value", "ttl"))
        core = self._core
        op = core.keyed(Code.PUT_IF_ABSENT, key, core.value(value), ttl=core.ttl(ttl))
        return core.decoded(await self._write(op))

    async def replace(self, key: Key, value: Any, ttl: float | None = None, **unknown: Any) -> Any:
        """Store only if present; return the previous value or None."""
        reject_unknown("replace", unknown, ("key", "value", "ttl"))
        core = self._core
        op = core.keyed(Code.REPLACE, key, core.value(value), ttl=core.ttl(ttl))
        return core.decoded(await self._write(op))

    async def replace_if_same(
        self, key: Key, old: Any, new: Any, ttl: float | None = None, **unknown: Any
    ) -> bool:
        """Store ``new`` only if the live value equals ``old``."""
        reject_unknown("replace_if_same", unknown, ("key", "old", "new", "ttl"))
        core = self._core
        op = core.keyed(Code.REPLACE_IF_SAME, key, core.value(new), core.value(old), core.ttl(ttl))
        return (await self._write(op)).found

    async def delete(self, key: Key) -> bool:
        """Remove ``key``; True if it had a live value."""
        return (await self._write(self._core.keyed(Code.DELETE, key))).found

    async def put_all(self, mapping: Mapping[Key, Any], ttl: float | None = None, **unknown: Any) -> None:
        """Store every entry: one RPC per owning member, in parallel."""
        reject_unknown("put_all", unknown, ("mapping", "ttl"))
        self._node.ensure_open()
        core = self._core
        ops = core.put_ops(mapping, ttl)
        if not ops:
            return
        for op in ops:
            core.invalidate(op.key)
        try:
            await self._run_all(ops)
        finally:
            for op in ops:
                core.invalidate(op.key)
        core.counters.puts += len(ops)

    async def size(self) -> int:
        """Live entries in the whole map."""
        return sum(r.count for r in await self._run_all(self._core.per_partition(Code.SIZE)))

    async def flush(self) -> None:
        """Store every write still queued for this map's store (write-behind), on every owner."""
        await self._run_all(self._core.per_partition(Code.FLUSH))

    async def clear(self) -> None:
        """Remove every entry."""
        near = self._core.near
        if near is not None:
            near.clear()
        try:
            await self._run_all(self._core.per_partition(Code.CLEAR))
        finally:
            if near is not None:
                near.clear()

    async def keys(self) -> list[Key]:
        """Every live key."""
        return self._core.keys_of(await self._run_all(self._core.per_partition(Code.KEYS)))

    async def items(self) -> list[tuple[Key, Any]]:
        """Every live ``(key, value)`` pair."""
        return self._core.entries(await self._run_all(self._core.per_partition(Code.ENTRIES)))

    async def values(self) -> list[Any]:
        """Every live value."""
        return [value for _, value in await self.items()]

    async def add_entry_listener(
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
        """Like ``DistributedMap.add_entry_listener``; callbacks (plain or ``async def``) run on this loop."""
        reject_unknown("add_entry_listener", unknown, _LISTENER_ARGS)
        registration = _listener_registration(
            on_added, on_updated, on_removed, on_expired, on_evicted, key, include_value, local, on_gap
        )
        loop = asyncio.get_running_loop()
        return await self._on_member(
            add_listener(self._node, self.name, self._core.loads, registration, loop)
        )

    async def remove_entry_listener(self, listener_id: str) -> bool:
        """Stop a listener; True if it was registered."""
        return await self._on_member(remove_listener(self._node, self.name, listener_id))

    async def local_stats(self) -> LocalMapStats:
        """What this member holds of this map, and what it counted."""
        return await self._on_member(_local_stats(self._node, self.name))

    async def stats(self) -> MapStats:
        """This map's statistics on every member, and their sum."""
        return await self._on_member(cluster_stats(self._node, self.name))

    async def _on_member(self, coro: Coroutine[Any, Any, T]) -> T:
        self._node.ensure_open()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._node.loop))

    # ------------------------------------------------------------------ compute: locks, entry processors
    @functools.cached_property
    def _locks(self) -> LockCalls:
        return LockCalls(self._core)

    def lock(self, key: Key, lease: float | None = None, timeout: float | None = None) -> AsyncLockHandle:
        """``key``'s lock for the current task: ``async with m.lock(key) as token:``.

        Or ``token = await m.lock(key)``, then ``await m.unlock(key)`` from the
        same task. The holder is the task: reentrant for it, exclusive against
        every other task and thread anywhere. See ``DistributedMap.lock``.
        """
        check_lease(lease)
        return AsyncLockHandle(self, key, lease, check_timeout(timeout, allow_none=True))

    async def _acquire(self, key: Key, timeout: float | None, lease: float | None) -> int | None:
        return await drive_async(self._locks.acquire(key, task_holder(), timeout, lease), self._run)

    async def try_lock(self, key: Key, timeout: float = 0.0, lease: float | None = None) -> int | None:
        """The lock for the current task if free within ``timeout`` seconds: its token, or None."""
        return await self._acquire(key, check_timeout(timeout, allow_none=False), lease)

    async def unlock(self, key: Key) -> None:
        """Release one hold by the current task; ``LockError`` (saying why) when it holds none."""
        await drive_async(self._locks.release(key, task_holder()), self._run)

    async def is_locked(self, key: Key) -> bool:
        """True when some holder (anywhere) holds ``key``'s lock."""
        return (await self._run(self._locks.state(key))).found

    async def execute_on_key(self, key: Key, processor: str, *args: Any) -> Any:
        """Run entry processor ``processor`` atomically on ``key``'s owner; see
        ``DistributedMap.execute_on_key``."""
        core = self._core
        op = processor_op(core, key, processor, args)
        core.invalidate(op.key)
        try:
            result = await self._run(op)
        finally:
            core.invalidate(op.key)
        return core.loads(result.value)

    async def execute_on_keys(self, keys: Iterable[Key], processor: str, *args: Any) -> dict[Key, Any]:
        """Run ``processor`` on each key's owner in parallel; ``{key: result}``."""
        core = self._core
        ops, originals = processor_ops(core, keys, processor, args)
        if not ops:
            return {}
        for op in ops:
            core.invalidate(op.key)
        try:
            results = await self._run_all(ops)
        finally:
            for op in ops:
                core.invalidate(op.key)
        return {originals[op.key]: core.loads(r.value) for op, r in zip(ops, results, strict=True)}

    async def increment(self, key: Key, delta: int = 1, ttl: float | None = None) -> int:
        """Add ``delta`` to the int counter at ``key``; see ``DistributedMap.increment``."""
        delta, seconds = increment_args(delta, ttl)
        return await self.execute_on_key(key, INCREMENT, delta, seconds)  # type: ignore[no-any-return]


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

    def get_map(self, name: str, **options: Any) -> AsyncMap:
        """The distributed map ``name``; options as ``Grid.get_map`` (``peergrid.MapConfig``)."""
        node = self.node
        node.ensure_open()
        existing = self._maps.get(name)
        if existing is not None and not options:
            return existing
        handle = AsyncMap(node, name, map_config(node, name, options))
        self._maps[name] = handle
        return handle

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

    # ------------------------------------------------------------------ compute
    def register_processor(self, name: str, fn: Callable[..., Any]) -> None:
        """Register ``fn`` as entry processor ``name`` on this member.

        ``fn(entry, *args)`` runs on the owner of the key it is called for, so
        register it under the same name on every member (or use the
        module-level ``@peergrid.entry_processor``, which registers it for
        every member of the process). See ``peergrid.processors``.
        """
        self.node.processors.register(name, fn)

    def cached(
        self, map_name: str, ttl: float | None = None, *, timeout: float = 1.0, claim_ttl: float = 30.0
    ) -> Callable[[F], F]:
        """Cache the decorated ``async def`` functions' results in map ``map_name``, keyed by their arguments.

        ``ttl`` (seconds) bounds how long a result is served (None: the map's
        default, or until evicted). Concurrent misses of one key, from any
        member, run the function once (``claim_ttl`` bounds how long the others
        wait for a claimer). Exceptions are not cached. Each grid call waits at
        most ``timeout`` seconds: when the grid cannot answer in time the function
        runs directly (a *bypass*, logged and counted). The wrapper's
        ``cache_info()`` returns the counts, ``cache_key(*args, **kwargs)`` the
        map key of a call (to delete it). See ``peergrid.cached``.
        """
        from peergrid.cached import cached_async

        return cached_async(self.node, map_name, ttl, timeout, claim_ttl)
