"""DistributedMap: the sync API of a map partitioned over the cluster.

Every operation is written once, in ``peergrid.maps.core``; this module only
runs its remote steps on the calling thread. Reads of keys whose partition
this member owns are served from its own memory, on the caller's thread, with
no RPC and no thread hop; so are hits in the map's near cache, if it has one.
Everything else goes to the partition's owner through the member's loop,
coalesced with other callers' operations bound for the same member.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, MutableMapping, ValuesView
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from peergrid.config import MapConfig
from peergrid.events.nearcache import Flight
from peergrid.invocation.gets import Fetch, Gets
from peergrid.invocation.invoker import Group
from peergrid.maps.core import NO_DEFAULT, Caller, ListenerOptions, MapCore, options_checked
from peergrid.maps.entry import EntryView
from peergrid.maps.flows import OnMember, Remote, drive
from peergrid.maps.locks import LockHandle, check_timeout, thread_holder
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


class SyncDriver:
    """Runs operations' steps on the calling thread, waiting for the member's loop."""

    def __init__(self, caller: Caller) -> None:
        self._caller = caller
        self._node = caller.node

    def do(self, outcome: Remote[T]) -> T:
        """The value of an operation that needs steps: its flow, run on this thread."""
        return drive(outcome.flow, self._step)

    def _step(self, step: Any) -> Any:
        kind = step.__class__
        if kind is Op:
            return self._one(step)
        if kind is list:
            return self._many(step)
        if kind is Gets:
            return self._gets(step)
        if kind is Flight:  # another caller's fetch of the key: True once it ended
            return step.wait(self._caller.wait)
        if kind is OnMember:
            return self._node.run(step.coro, timeout=step.timeout)
        raise TypeError(f"not a step: {step!r}")

    def _one(self, op: Op) -> Result:
        caller = self._caller
        call = caller.call(op)
        self._node.invoker.start(call)
        return caller.check(call.wait(caller.wait), op)

    def _gets(self, gets: Gets) -> Fetch:
        """Read keys from their owners, one op per owning member; wait; raise the first error."""
        caller = self._caller
        group = Group(1)
        fetch = caller.fetch(gets, group)
        if not group.wait(caller.wait):
            raise caller.timed_out(Op(Code.GET, gets.partitions[0], gets.name, gets.keys[0]))
        return caller.check_fetch(fetch)

    def _many(self, ops: list[Op]) -> list[Result]:
        """Run ops in parallel, one frame per owning member; wait for all; raise the first error."""
        caller = self._caller
        self._node.ensure_open()
        group = Group(len(ops))
        calls = [caller.call(op, group=group) for op in ops]
        self._node.invoker.start_many(calls)
        if not group.wait(caller.wait):
            raise caller.timed_out(ops[0])
        return caller.check_all(calls)


class MapKeys(KeysView[K]):
    """``DistributedMap.keys()``: ``len()`` and ``in`` ask the cluster; iteration reads the map
    lazily, a few partitions at a time (``DistributedMap.keys``)."""

    _mapping: DistributedMap[K, Any]

    def __init__(self, mapping: DistributedMap[K, Any]) -> None:
        super().__init__(mapping)

    def __iter__(self) -> Iterator[K]:
        return self._mapping.scan("keys")

    def __repr__(self) -> str:
        return f"MapKeys({self._mapping!r})"


class MapValues(ValuesView[V]):
    """``DistributedMap.values()``: ``len()``, ``in`` and iteration, read lazily."""

    _mapping: DistributedMap[Any, V]

    def __init__(self, mapping: DistributedMap[Any, V]) -> None:
        super().__init__(mapping)

    def __iter__(self) -> Iterator[V]:
        return self._mapping.scan("values")

    def __contains__(self, value: object) -> bool:
        # A scan of the values, not a get per key (as ValuesView's own would do).
        return any(v is value or v == value for v in self)

    def __repr__(self) -> str:
        return f"MapValues({self._mapping!r})"


class MapItems(ItemsView[K, V]):
    """``DistributedMap.items()``: ``len()``, ``in`` (one get) and iteration, read lazily."""

    _mapping: DistributedMap[K, V]

    def __init__(self, mapping: DistributedMap[K, V]) -> None:
        super().__init__(mapping)

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return self._mapping.scan("items")

    def __repr__(self) -> str:
        return f"MapItems({self._mapping!r})"


class DistributedMap(MutableMapping[K, V]):
    """A map whose entries are spread over every member of the cluster.

    Get one with ``grid.get_map(name)``: the same name is the same map on every
    member. Keys are ``str``, ``bytes`` or ``int``; values are whatever the
    grid's serializer carries (by default None, bool, int, float, str, bytes,
    list and dict, nested). Every method may raise a ``PeerGridError``:
    ``OperationTimeoutError`` when the owner cannot be reached within the
    deadline, ``IndeterminateWriteError`` when a write's outcome is unknown,
    ``PartitionLostError``, ``QuorumError``, ``CapacityError``, ``GridClosedError``.

    A ``collections.abc.MutableMapping``: ``m[k]``, ``m[k] = v``, ``del m[k]``,
    ``k in m``, ``len(m)``, iteration, ``pop``, ``popitem``, ``setdefault``,
    ``update``, ``==`` (compares entries, like a dict), and ``keys()``,
    ``values()``, ``items()`` views read lazily a few partitions at a time.
    Generic in its key and value types: ``grid.get_map("users", key_type=str,
    value_type=dict)`` is a ``DistributedMap[str, dict]`` to a type checker (nothing
    is checked at run time); plain ``grid.get_map("users")`` is ``DistributedMap[Any, Any]``.
    """

    def __init__(self, node: Node, name: str, config: MapConfig | None = None, **core: Any) -> None:
        self._core = MapCore(node, name, config, **core)
        self._do = SyncDriver(self._core).do
        self.name = self._core.name

    def __repr__(self) -> str:
        return f"DistributedMap({self.name!r})"

    # ------------------------------------------------------------------ reads
    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D) -> V | D: ...
    def get(self, key: K, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent or expired."""
        outcome = self._core.get(key, default)
        # (not isinstance: the hot path)
        return outcome if outcome.__class__ is not Remote else self._do(outcome)

    def contains_key(self, key: K) -> bool:
        """True when ``key`` has a live value."""
        outcome = self._core.contains_key(key)
        return self._do(outcome) if isinstance(outcome, Remote) else outcome

    def get_all(self, keys: Iterable[K]) -> dict[K, V]:
        """The live values of ``keys`` (absent keys are left out): one RPC per owning member
        (per 1,024 of its keys: four frames' worth, ``Limits.max_frame_ops``), in parallel.

        Raises ``ArgumentError`` for a ``str`` or ``bytes`` (a key, not an iterable of keys).
        Large answers come back in several messages under ``limits.max_message_bytes``.
        """
        outcome: Any = self._core.get_all(keys)
        return self._do(outcome) if isinstance(outcome, Remote) else outcome

    def size(self) -> int:
        """Live entries in the whole map (a count over every member)."""
        return self._do(self._core.size())

    def keys(self) -> MapKeys[K]:
        """A view of the keys: ``len()``, ``in``, iteration (and set operations, as a dict's).

        Iterating reads the map a few partitions at a time (``MapCore.scan``): each partition is
        read at once, consistently; entries written meanwhile may or may not appear. Each
        iteration reads the map again.
        """
        return MapKeys(self)

    def items(self) -> MapItems[K, V]:
        """A view of the ``(key, value)`` pairs, read lazily like ``keys()``."""
        return MapItems(self)

    def values(self) -> MapValues[V]:
        """A view of the values, read lazily like ``keys()``."""
        return MapValues(self)

    def scan(self, what: str) -> Iterator[Any]:
        """Keys, values or items (``what``), read a step of a few partitions at a time."""
        scan = self._core.scan(what)
        while (step := scan.next()) is not None:
            yield from self._do(step)

    # ------------------------------------------------------------------ writes
    # Options are named parameters only: a typo is a type error, and at run time an
    # ``ArgumentError`` naming the nearest option (``options_checked``).
    @options_checked
    def put(self, key: K, value: V, ttl: float | None = None) -> V | None:
        """Store ``value`` under ``key``; return the previous value or None.

        ``ttl`` is in seconds; None means the map's default (no expiry unless set).
        """
        previous: V | None = self._do(self._core.put(key, value, ttl))
        return previous

    @overload
    def set(self, key: K, value: V, ttl: float | None = None) -> None: ...
    @overload
    def set(self, key: K, value: V, ttl: float | None = None, *, if_absent: Literal[True]) -> bool: ...
    @overload
    def set(self, key: K, value: V, ttl: float | None = None, *, if_present: Literal[True]) -> bool: ...
    @overload
    def set(
        self, key: K, value: V, ttl: float | None = None, *, if_absent: bool = False, if_present: bool = False
    ) -> bool | None: ...
    @options_checked
    def set(
        self,
        key: K,
        value: V,
        ttl: float | None = None,
        *,
        if_absent: bool = False,
        if_present: bool = False,
    ) -> bool | None:
        """Store ``value`` under ``key`` without returning the previous value (cheaper than put).

        ``if_absent=True`` stores only if ``key`` has no live value (``put_if_absent``; redis's
        ``NX``), ``if_present=True`` only if it has one (``replace``; redis's ``XX``); not both
        (``ArgumentError``). With either, returns True if it stored, else False; without,
        returns None.
        """
        written: bool | None = self._do(self._core.set(key, value, ttl, if_absent, if_present))
        return written

    @options_checked
    def put_if_absent(self, key: K, value: V, ttl: float | None = None) -> V | None:
        """Store ``value`` only if ``key`` has no live value; return the existing value or None."""
        previous: V | None = self._do(self._core.put_if_absent(key, value, ttl))
        return previous

    @options_checked
    def replace(self, key: K, value: V, ttl: float | None = None) -> V | None:
        """Store ``value`` only if ``key`` has a live value; return that previous value or None."""
        previous: V | None = self._do(self._core.replace(key, value, ttl))
        return previous

    @options_checked
    def replace_if_same(self, key: K, old: V, new: V, ttl: float | None = None) -> bool:
        """Store ``new`` only if ``key``'s live value equals ``old``; True if it did."""
        return self._do(self._core.replace_if_same(key, old, new, ttl))

    def delete(self, key: K) -> bool:
        """Remove ``key``; True if it had a live value."""
        return self._do(self._core.delete(key))

    @options_checked
    def put_all(self, mapping: Mapping[K, V], ttl: float | None = None) -> None:
        """Store every entry of ``mapping``: in parallel over the owning members.

        Every key and value is checked before anything is sent. A large mapping goes in parts of
        a few frames' worth of entries (``Limits.max_frame_ops`` each), one part after another,
        so that other calls to the same owners are not held behind it; each part has the whole
        ``operation_timeout``. Not atomic: on an error some entries may have been stored, and
        the parts after the failed one are not sent.
        """
        self._do(self._core.put_all(mapping, ttl))

    def flush(self) -> None:
        """Store every write still queued for this map's store (write-behind), on every owner."""
        self._do(self._core.flush())

    def clear(self) -> None:
        """Remove every entry of the map, on every member."""
        self._do(self._core.clear())

    # ------------------------------------------------------------------ mapping protocol
    def __getitem__(self, key: K) -> V:
        missing: Any = _MISSING
        value = self.get(key, missing)
        if value is missing:
            raise KeyError(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        self.set(key, value)

    def __delitem__(self, key: K) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return self.contains_key(key)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.size()

    def __iter__(self) -> Iterator[K]:
        """The keys, read lazily (see ``keys()``)."""
        return self.scan("keys")

    def __eq__(self, other: object) -> bool:
        """True when ``other`` is a mapping with the same entries (``m == {}``: m is empty).

        Reads the whole map (after comparing sizes): meant for tests and small maps."""
        if other is self:
            return True
        if not isinstance(other, Mapping):
            return NotImplemented
        if self.size() != len(other):
            return False
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by contents, as a dict

    @overload
    def pop(self, key: K) -> V: ...
    @overload
    def pop(self, key: K, default: V) -> V: ...
    @overload
    def pop(self, key: K, default: T) -> V | T: ...
    def pop(self, key: K, default: Any = NO_DEFAULT) -> Any:
        """Remove ``key`` and return its value; ``default`` if it had none (``KeyError`` without
        one). Atomic: the value returned is the one removed."""
        return self._do(self._core.pop(key, default))

    def popitem(self) -> tuple[K, V]:
        """Remove some entry and return it as ``(key, value)``; ``KeyError`` when the map is empty.

        Which entry is unspecified (the first a scan finds that no one else removes first)."""
        item: tuple[K, V] = self._do(self._core.popitem())
        return item

    @overload
    def setdefault(self: DistributedMap[K, T | None], key: K, default: None = None) -> T | None: ...
    @overload
    def setdefault(self, key: K, default: V) -> V: ...
    def setdefault(self, key: K, default: Any = None) -> Any:
        """The live value of ``key``; if it has none, store ``default`` and return it (atomic on
        the owner: ``put_if_absent``)."""
        return self._do(self._core.setdefault(key, default))

    @overload
    def update(self, other: SupportsKeysAndGetItem[K, V], /, **kwargs: V) -> None: ...
    @overload
    def update(self, other: Iterable[tuple[K, V]], /, **kwargs: V) -> None: ...
    @overload
    def update(self, /, **kwargs: V) -> None: ...
    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Store the entries of a mapping or of ``(key, value)`` pairs, and ``kwargs``: one
        ``put_all`` (in parallel over the owners; not atomic)."""
        self._do(self._core.update(other, kwargs))

    # ------------------------------------------------------------------ listeners, stats
    def add_entry_listener(self, **options: Unpack[ListenerOptions]) -> str:
        """Call back on changes to this map's entries; return the listener's id.

        Options (keywords): ``on_added``, ``on_updated``, ``on_removed``,
        ``on_expired``, ``on_evicted`` (at least one), each called with an
        ``EntryEvent`` (kind, map, key, value, old_value). ``key`` limits events
        to one key; ``include_value=False`` leaves values out (cheaper);
        ``local=True`` hears only of entries this member owns. Events of one key
        arrive in order. Callbacks run one at a time on a peergrid thread.
        ``on_gap(partitions)`` hears of events that may have been missed (an
        owner died, a connection broke). Once this returns, no later change is
        missed (barring such gaps).
        """
        return self._do(self._core.add_entry_listener(None, dict(options)))

    def remove_entry_listener(self, listener_id: str) -> bool:
        """Stop a listener; True if it was registered."""
        return self._do(self._core.remove_entry_listener(listener_id))

    def local_stats(self) -> LocalMapStats:
        """What this member holds of this map, and what it counted (see ``LocalMapStats``)."""
        return self._do(self._core.local_stats())

    def stats(self) -> MapStats:
        """This map's statistics on every member, and their sum."""
        return self._do(self._core.stats())

    # ------------------------------------------------------------------ compute: locks, entry processors
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
        token = self._do(self._core.lock(key, thread_holder(), wait, lease))
        return LockHandle(self.name, key, token, self.unlock)

    def try_lock(self, key: Key, timeout: float = 0.0, lease: float | None = None) -> int | None:
        """Acquire ``key``'s lock for the calling thread if it is free within ``timeout`` seconds.

        Returns the fencing token, or None when another holder kept it. See ``lock``.
        """
        return self._do(self._core.try_lock(key, thread_holder(), timeout, lease))

    def unlock(self, key: Key) -> None:
        """Release one hold of ``key``'s lock by the calling thread.

        Raises ``LockError`` when this thread does not hold it, saying why (never
        held, held by another, its lease ended).
        """
        self._do(self._core.unlock(key, thread_holder()))

    def is_locked(self, key: Key) -> bool:
        """True when some holder (anywhere) holds ``key``'s lock."""
        return self._do(self._core.is_locked(key))

    def execute_on_key(self, key: Key, processor: str, *args: Any) -> Any:
        """Run entry processor ``processor(entry, *args)`` atomically on ``key``'s owner; return its result.

        Only the name and the arguments travel; the processor must be registered
        on every member (``@peergrid.entry_processor`` or
        ``grid.register_processor``). A change it makes is replicated and
        published like any write. Raises ``ProcessorError`` when the owner has
        no such processor or it raised (the entry is then unchanged).
        """
        return self._do(self._core.execute_on_key(key, processor, args))

    def execute_on_keys(self, keys: Iterable[Key], processor: str, *args: Any) -> dict[Key, Any]:
        """Run ``processor`` on each of ``keys`` (each atomically, on its owner, one frame per owner,
        in parallel; many keys in parts, as ``put_all``); return ``{key: result}``. Not atomic
        across keys: on an error some keys may have been processed."""
        return self._do(self._core.execute_on_keys(keys, processor, args))

    def increment(self, key: Key, delta: int = 1, ttl: float | None = None) -> int:
        """Add ``delta`` to the int counter at ``key`` atomically; return the new count.

        A missing counter counts from 0 and, when created, gets ``ttl`` (an
        existing counter keeps its expiry: a fixed window for rate limiting).
        Raises ``ProcessorError`` when the value is not an int.
        """
        return self._do(self._core.increment(key, delta, ttl))

    # -- entries: TTL, removal, eviction, views of one entry (issue 15)
    def ttl(self, key: K) -> float | None:
        """Seconds left before ``key``'s entry expires by its TTL, or None when it has no TTL.

        Raises ``KeyError`` when ``key`` has no live entry (as ``m[key]`` does; redis' ``TTL``
        answers -2 there). Max-idle expiry is not counted. Not an access (no idle clock or
        eviction score changes).
        """
        outcome = self._core.ttl_of(key)
        return self._do(outcome) if isinstance(outcome, Remote) else outcome

    def expire(self, key: K, seconds: float) -> bool:
        """Give ``key``'s entry a TTL of ``seconds`` (> 0) from now, keeping its value.

        Returns True if ``key`` had a live entry (it now has that TTL), False if not.
        Replicated like a write (a backup promoted after a failover has the same
        expiry). Raises ``ArgumentError`` unless ``seconds`` is a number > 0
        (``persist`` removes a TTL, ``delete`` the entry).
        """
        return self._do(self._core.expire(key, seconds))

    def persist(self, key: K) -> bool:
        """Remove the TTL of ``key``'s entry (it no longer expires); True if it had one."""
        return self._do(self._core.persist(key))

    def remove(self, key: K) -> V | None:
        """Remove ``key``; return the value it had, or None (``delete`` returns a bool)."""
        previous: V | None = self._do(self._core.remove(key))
        return previous

    def remove_if_same(self, key: K, value: V) -> bool:
        """Remove ``key`` only if its live value equals ``value``; True if it did."""
        return self._do(self._core.remove_if_same(key, value))

    def evict(self, key: K) -> bool:
        """Drop ``key``'s entry from memory (on its owner and backups); True if there was one.

        Unlike ``delete``, the map's store (``store=``) is not told: a later ``get``
        loads the key from it again. Entry listeners hear ``on_evicted``.
        """
        return self._do(self._core.evict(key))

    def evict_all(self) -> None:
        """Drop every entry of the map from memory, on every member; the map's store keeps
        them (``clear`` deletes them from it). Entry listeners hear ``on_evicted`` per entry."""
        self._do(self._core.evict_all())

    def entry_view(self, key: K) -> EntryView | None:
        """A snapshot of ``key``'s live entry (value, TTL left, expiration time, last access
        where tracked), or None when it has none. Not an access; a miss loads from the map's
        store, as ``get`` does."""
        outcome = self._core.entry_view(key)
        return self._do(outcome) if isinstance(outcome, Remote) else outcome

    def contains_value(self, value: V) -> bool:
        """True if some live entry's value equals ``value`` (a scan of every partition)."""
        return self._do(self._core.contains_value(value))

    def is_empty(self) -> bool:
        """True when the map has no live entry on any member."""
        return self._do(self._core.is_empty())

    def destroy(self) -> None:
        """Drop the map: its entries on every member (from memory; its store keeps them, and
        writes queued for it are stored first), and on this member its listeners, statistics
        and the options ``get_map`` gave it. ``grid.get_map(name)`` then returns a new, empty
        map; do not use this handle again. Listeners registered on other members stay."""
        self._do(self._core.destroy())

    @property
    def destroyed(self) -> bool:
        """True once ``destroy()`` ran through this handle."""
        return self._core.destroyed


class _Missing:
    pass


_MISSING = _Missing()
