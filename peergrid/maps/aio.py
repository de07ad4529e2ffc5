"""AsyncMap: the asyncio API of a map, driving the operations of ``peergrid.maps.core``.

The member still runs on its own loop thread (so a busy application loop
cannot delay its heartbeats); an awaited operation completes the caller's
future from there. Owner-local reads return without any hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from peergrid.config import MapConfig
from peergrid.errors import GridClosedError
from peergrid.events.nearcache import Flight
from peergrid.invocation.gets import Fetch, Gets
from peergrid.invocation.invoker import Call, Group
from peergrid.maps.core import NO_DEFAULT, Caller, ListenerOptions, MapCore, options_checked
from peergrid.maps.entry import EntryView
from peergrid.maps.flows import OnMember, Remote, drive_async
from peergrid.maps.locks import AsyncLockHandle, check_lease, check_timeout, task_holder
from peergrid.protocol import Code, Op, Result
from peergrid.serialization import Key
from peergrid.stats import LocalMapStats, MapStats

if TYPE_CHECKING:
    from typing import Unpack

    from _typeshed import SupportsKeysAndGetItem

    from peergrid.member.node import Node

T = TypeVar("T")
D = TypeVar("D")
K = TypeVar("K", bound=Key)
V = TypeVar("V")


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class _Handover:
    """Crossings between one application loop and the member's loop, batched per pass.

    Waking another thread's loop costs a system call and a thread switch, and the self-pipe
    write releases the GIL: the member's thread takes it, sends a frame of the one op queued so
    far, and the next task's op goes alone too. So calls that tasks start during one pass of
    the application's loop cross together at the end of it (sixty-four tasks woken by one
    frame's results send one frame, from the first call; a lone task pays one loop pass), and
    a frame's results, which complete many calls at once, cross back together.
    """

    def __init__(
        self, target: asyncio.AbstractEventLoop, runtime: asyncio.AbstractEventLoop, node: Node
    ) -> None:
        self._target = target
        self._runtime = runtime
        self._node = node
        self._pending: list[asyncio.Future[None]] = []
        self._starts: list[tuple[list[Call], asyncio.Future[None]]] = []

    def start(self, calls: list[Call], done: asyncio.Future[None]) -> None:
        """Send ``calls`` once this pass of the application's loop ends (its thread)."""
        if not self._starts:
            self._target.call_soon(self._start_all)
        self._starts.append((calls, done))

    def _start_all(self) -> None:
        starts, self._starts = self._starts, []
        try:
            self._node.invoker.start_many([call for calls, _ in starts for call in calls])
        except RuntimeError:  # the member's loop closed meanwhile: no task waits for its timeout
            for _, done in starts:
                if not done.done():
                    done.set_exception(GridClosedError(self._node.closed_reason))

    def add(self, future: asyncio.Future[None]) -> None:
        """Complete ``future`` on its loop, soon (runtime thread)."""
        if not self._pending:
            self._runtime.call_soon(self._flush)
        self._pending.append(future)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        with contextlib.suppress(RuntimeError):  # the application's loop is closed: nobody waits
            self._target.call_soon_threadsafe(_resolve, batch)


class AsyncDriver:
    """Runs operations' steps in the calling task; completions cross from the member's loop in
    batches (``_Handover``)."""

    def __init__(self, caller: Caller) -> None:
        self._caller = caller
        self._node = caller.node
        self._handovers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Handover] = (
            weakref.WeakKeyDictionary()
        )

    async def do(self, outcome: Remote[T]) -> T:
        """The value of an operation that needs steps: its flow, run in this task."""
        return await drive_async(outcome.flow, self._step)

    async def _step(self, step: Any) -> Any:
        kind = step.__class__
        if kind is Op:
            return (await self._calls([step]))[0]
        if kind is list:
            return await self._calls(step)
        if kind is Gets:
            return await self._gets(step)
        if kind is Flight:  # another caller's fetch of the key: True once it ended
            return await step.wait_async(self._caller.wait)
        if kind is OnMember:
            self._node.ensure_open()
            future = asyncio.run_coroutine_threadsafe(step.coro, self._node.loop)
            async with asyncio.timeout(step.timeout):
                return await asyncio.wrap_future(future)
        raise TypeError(f"not a step: {step!r}")

    def _group(self, done: asyncio.Future[None]) -> Group:
        """A group that completes ``done`` on the calling task's loop (through its handover)."""
        loop = done.get_loop()
        handover = self._handovers.get(loop)
        if handover is None:
            handover = self._handovers[loop] = _Handover(loop, self._node.loop, self._node)
        return Group(1, lambda: handover.add(done))

    async def _gets(self, gets: Gets) -> Fetch:
        caller = self._caller
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fetch = caller.fetch(gets, self._group(done))
        try:
            async with asyncio.timeout(caller.wait):
                await done
        except TimeoutError:
            raise caller.timed_out(Op(Code.GET, gets.partitions[0], gets.name, gets.keys[0])) from None
        return caller.check_fetch(fetch)

    async def _calls(self, ops: list[Op]) -> list[Result]:
        caller = self._caller
        self._node.ensure_open()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        handover = self._handovers.get(loop)
        if handover is None:
            handover = self._handovers[loop] = _Handover(loop, self._node.loop, self._node)
        group = Group(len(ops), lambda: handover.add(done))
        calls = [caller.call(op, group=group) for op in ops]
        handover.start(calls, done)
        try:
            async with asyncio.timeout(caller.wait):
                await done
        except TimeoutError:
            raise caller.timed_out(ops[0]) from None
        return caller.check_all(calls)


class AsyncView(Generic[T]):
    """``AsyncMap.keys()``, ``values()`` or ``items()``: ``async for`` reads lazily, a few
    partitions at a time; ``await`` gives a list of everything."""

    def __init__(self, amap: AsyncMap[Any, Any], what: str) -> None:
        self._map = amap
        self._what = what

    def __aiter__(self) -> AsyncIterator[T]:
        return self._map.scan(self._what)

    def __await__(self) -> Generator[Any, None, list[T]]:
        return self._all().__await__()

    async def _all(self) -> list[T]:
        return [item async for item in self]

    def __repr__(self) -> str:
        return f"AsyncView({self._map!r}, {self._what!r})"


class AsyncMap(Generic[K, V]):
    """A distributed map for asyncio code; see ``DistributedMap`` for the semantics.

    Every operation is the sync map's (``peergrid.maps.core``), its remote steps
    awaited in the calling task. Owner-local reads and near-cache hits return
    without any hop. Generic like ``DistributedMap``
    (``grid.get_map("users", key_type=str, value_type=dict)``).

    Not a ``collections.abc.MutableMapping``: its operations are awaited. It has the mapping
    methods that can be: ``await m.pop(k)``, ``popitem``, ``setdefault``, ``update``;
    ``keys()``, ``values()`` and ``items()`` are views to ``async for`` over (read lazily, a
    few partitions at a time) or to ``await`` (a list); ``async for key in m``. What needs a
    plain call has none: ``m[k]``, ``len(m)``, ``k in m`` and ``m == other`` (use ``get``,
    ``size``, ``contains_key``, and compare ``dict(await m.items())``).
    """

    def __init__(self, node: Node, name: str, config: MapConfig | None = None, **core: Any) -> None:
        self._core = MapCore(node, name, config, **core)
        self._do = AsyncDriver(self._core).do
        self.name = self._core.name

    def __repr__(self) -> str:
        return f"AsyncMap({self.name!r})"

    @overload
    async def get(self, key: K) -> V | None: ...
    @overload
    async def get(self, key: K, default: V | D) -> V | D: ...
    async def get(self, key: K, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        outcome = self._core.get(key, default)
        return outcome if outcome.__class__ is not Remote else await self._do(outcome)

    async def contains_key(self, key: K) -> bool:
        """True when ``key`` has a live value."""
        outcome = self._core.contains_key(key)
        return await self._do(outcome) if isinstance(outcome, Remote) else outcome

    async def get_all(self, keys: Iterable[K]) -> dict[K, V]:
        """The live values of ``keys``: one RPC per owning member and 1,024 of its keys (see
        ``DistributedMap.get_all``)."""
        outcome: Any = self._core.get_all(keys)
        return await self._do(outcome) if isinstance(outcome, Remote) else outcome

    # Options are named parameters only (see ``DistributedMap``): a typo is a type error, and
    # an ``ArgumentError`` naming the nearest option when the call is made.
    @options_checked
    async def put(self, key: K, value: V, ttl: float | None = None) -> V | None:
        """Store ``value``; return the previous value or None."""
        previous: V | None = await self._do(self._core.put(key, value, ttl))
        return previous

    @overload
    async def set(self, key: K, value: V, ttl: float | None = None) -> None: ...
    @overload
    async def set(self, key: K, value: V, ttl: float | None = None, *, if_absent: Literal[True]) -> bool: ...
    @overload
    async def set(self, key: K, value: V, ttl: float | None = None, *, if_present: Literal[True]) -> bool: ...
    @overload
    async def set(
        self, key: K, value: V, ttl: float | None = None, *, if_absent: bool = False, if_present: bool = False
    ) -> bool | None: ...
    @options_checked
    async def set(
        self,
        key: K,
        value: V,
        ttl: float | None = None,
        *,
        if_absent: bool = False,
        if_present: bool = False,
    ) -> bool | None:
        """Store ``value`` without returning the previous one. ``if_absent`` / ``if_present`` as
        ``DistributedMap.set`` (redis's NX / XX): then True if it stored, else False."""
        written: bool | None = await self._do(self._core.set(key, value, ttl, if_absent, if_present))
        return written

    @options_checked
    async def put_if_absent(self, key: K, value: V, ttl: float | None = None) -> V | None:
        """Store only if absent; return the existing value or None."""
        previous: V | None = await self._do(self._core.put_if_absent(key, value, ttl))
        return previous

    @options_checked
    async def replace(self, key: K, value: V, ttl: float | None = None) -> V | None:
        """Store only if present; return the previous value or None."""
        previous: V | None = await self._do(self._core.replace(key, value, ttl))
        return previous

    @options_checked
    async def replace_if_same(self, key: K, old: V, new: V, ttl: float | None = None) -> bool:
        """Store ``new`` only if the live value equals ``old``."""
        return await self._do(self._core.replace_if_same(key, old, new, ttl))

    async def delete(self, key: K) -> bool:
        """Remove ``key``; True if it had a live value."""
        return await self._do(self._core.delete(key))

    @options_checked
    async def put_all(self, mapping: Mapping[K, V], ttl: float | None = None) -> None:
        """Store every entry: in parallel over the owners, a large mapping in parts (see
        ``DistributedMap.put_all``)."""
        await self._do(self._core.put_all(mapping, ttl))

    # ------------------------------------------------------------------ mapping methods
    @overload
    async def pop(self, key: K) -> V: ...
    @overload
    async def pop(self, key: K, default: V) -> V: ...
    @overload
    async def pop(self, key: K, default: T) -> V | T: ...
    async def pop(self, key: K, default: Any = NO_DEFAULT) -> Any:
        """Remove ``key`` and return its value; ``default`` if it had none (``KeyError`` without
        one). Atomic: the value returned is the one removed."""
        return await self._do(self._core.pop(key, default))

    async def popitem(self) -> tuple[K, V]:
        """Remove some entry and return it; ``KeyError`` when the map is empty."""
        item: tuple[K, V] = await self._do(self._core.popitem())
        return item

    @overload
    async def setdefault(self: AsyncMap[K, T | None], key: K, default: None = None) -> T | None: ...
    @overload
    async def setdefault(self, key: K, default: V) -> V: ...
    async def setdefault(self, key: K, default: Any = None) -> Any:
        """The live value of ``key``; if none, store ``default`` and return it (atomic)."""
        return await self._do(self._core.setdefault(key, default))

    @overload
    async def update(self, other: SupportsKeysAndGetItem[K, V], /, **kwargs: V) -> None: ...
    @overload
    async def update(self, other: Iterable[tuple[K, V]], /, **kwargs: V) -> None: ...
    @overload
    async def update(self, /, **kwargs: V) -> None: ...
    async def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Store the entries of a mapping or of pairs, and ``kwargs``: one ``put_all``."""
        await self._do(self._core.update(other, kwargs))

    def __aiter__(self) -> AsyncIterator[K]:
        """``async for key in m``: the keys, read lazily (see ``keys()``)."""
        return self.scan("keys")

    async def size(self) -> int:
        """Live entries in the whole map."""
        return await self._do(self._core.size())

    async def flush(self) -> None:
        """Store every write still queued for this map's store (write-behind), on every owner."""
        await self._do(self._core.flush())

    async def clear(self) -> None:
        """Remove every entry."""
        await self._do(self._core.clear())

    def keys(self) -> AsyncView[K]:
        """The keys: ``async for k in m.keys()`` reads them lazily, a few partitions at a time
        (each partition read consistently; entries written meanwhile may or may not appear);
        ``await m.keys()`` reads them all into a list."""
        return AsyncView(self, "keys")

    def items(self) -> AsyncView[tuple[K, V]]:
        """The ``(key, value)`` pairs, as ``keys()``."""
        return AsyncView(self, "items")

    def values(self) -> AsyncView[V]:
        """The values, as ``keys()``."""
        return AsyncView(self, "values")

    async def scan(self, what: str) -> AsyncIterator[Any]:
        """Keys, values or items (``what``), read a step of a few partitions at a time."""
        scan = self._core.scan(what)
        while (step := scan.next()) is not None:
            for item in await self._do(step):
                yield item

    async def add_entry_listener(self, **options: Unpack[ListenerOptions]) -> str:
        """Like ``DistributedMap.add_entry_listener``; callbacks (plain or ``async def``) run on this loop."""
        return await self._do(self._core.add_entry_listener(asyncio.get_running_loop(), dict(options)))

    async def remove_entry_listener(self, listener_id: str) -> bool:
        """Stop a listener; True if it was registered."""
        return await self._do(self._core.remove_entry_listener(listener_id))

    async def local_stats(self) -> LocalMapStats:
        """What this member holds of this map, and what it counted."""
        return await self._do(self._core.local_stats())

    async def stats(self) -> MapStats:
        """This map's statistics on every member, and their sum."""
        return await self._do(self._core.stats())

    # ------------------------------------------------------------------ compute: locks, entry processors
    def lock(self, key: Key, lease: float | None = None, timeout: float | None = None) -> AsyncLockHandle:
        """``key``'s lock for the current task: ``async with m.lock(key) as token:``.

        Or ``token = await m.lock(key)``, then ``await m.unlock(key)`` from the
        same task. The holder is the task: reentrant for it, exclusive against
        every other task and thread anywhere. See ``DistributedMap.lock``.
        """
        check_lease(lease)
        wait = check_timeout(timeout, allow_none=True)
        return AsyncLockHandle(
            self.name, key, lambda: self._do(self._core.lock(key, task_holder(), wait, lease)), self.unlock
        )

    async def try_lock(self, key: Key, timeout: float = 0.0, lease: float | None = None) -> int | None:
        """The lock for the current task if free within ``timeout`` seconds: its token, or None."""
        return await self._do(self._core.try_lock(key, task_holder(), timeout, lease))

    async def unlock(self, key: Key) -> None:
        """Release one hold by the current task; ``LockError`` (saying why) when it holds none."""
        await self._do(self._core.unlock(key, task_holder()))

    async def is_locked(self, key: Key) -> bool:
        """True when some holder (anywhere) holds ``key``'s lock."""
        return await self._do(self._core.is_locked(key))

    async def execute_on_key(self, key: Key, processor: str, *args: Any) -> Any:
        """Run entry processor ``processor`` atomically on ``key``'s owner; see
        ``DistributedMap.execute_on_key``."""
        return await self._do(self._core.execute_on_key(key, processor, args))

    async def execute_on_keys(self, keys: Iterable[Key], processor: str, *args: Any) -> dict[Key, Any]:
        """Run ``processor`` on each key's owner in parallel; ``{key: result}``."""
        return await self._do(self._core.execute_on_keys(keys, processor, args))

    async def increment(self, key: Key, delta: int = 1, ttl: float | None = None) -> int:
        """Add ``delta`` to the int counter at ``key``; see ``DistributedMap.increment``."""
        return await self._do(self._core.increment(key, delta, ttl))

    # -- entries: TTL, removal, eviction, views of one entry (issue 15)
    async def ttl(self, key: K) -> float | None:
        """Seconds left of ``key``'s TTL, None for no TTL; ``KeyError`` when it has no live
        entry. See ``DistributedMap.ttl``."""
        outcome = self._core.ttl_of(key)
        return await self._do(outcome) if isinstance(outcome, Remote) else outcome

    async def expire(self, key: K, seconds: float) -> bool:
        """Give ``key``'s entry a TTL of ``seconds`` (> 0); True if it had a live entry. See
        ``DistributedMap.expire``."""
        return await self._do(self._core.expire(key, seconds))

    async def persist(self, key: K) -> bool:
        """Remove the TTL of ``key``'s entry; True if it had one."""
        return await self._do(self._core.persist(key))

    async def remove(self, key: K) -> V | None:
        """Remove ``key``; return the value it had, or None."""
        return await self._do(self._core.remove(key))

    async def remove_if_same(self, key: K, value: V) -> bool:
        """Remove ``key`` only if its live value equals ``value``; True if it did."""
        return await self._do(self._core.remove_if_same(key, value))

    async def evict(self, key: K) -> bool:
        """Drop ``key``'s entry from memory only (not from the map's store); True if there was
        one. See ``DistributedMap.evict``."""
        return await self._do(self._core.evict(key))

    async def evict_all(self) -> None:
        """Drop every entry from memory, on every member (not from the map's store)."""
        await self._do(self._core.evict_all())

    async def entry_view(self, key: K) -> EntryView | None:
        """A snapshot of ``key``'s live entry, or None. See ``DistributedMap.entry_view``."""
        outcome = self._core.entry_view(key)
        return await self._do(outcome) if isinstance(outcome, Remote) else outcome

    async def contains_value(self, value: V) -> bool:
        """True if some live entry's value equals ``value``."""
        return await self._do(self._core.contains_value(value))

    async def is_empty(self) -> bool:
        """True when the map has no live entry on any member."""
        return await self._do(self._core.is_empty())

    async def destroy(self) -> None:
        """Drop the map everywhere; see ``DistributedMap.destroy``."""
        await self._do(self._core.destroy())

    @property
    def destroyed(self) -> bool:
        """True once ``destroy()`` ran through this handle."""
        return self._core.destroyed
