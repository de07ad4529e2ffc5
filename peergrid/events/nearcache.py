"""Near cache: other members' entries of one map, decoded, kept in this member.

A hit is a dict lookup on the caller's thread: no RPC, no decode. Entries
take the new value when their owner says they changed (its event stream; for a
write this member's backup copy applies, the copy: ``on_copy_changed``), and
are dropped when a gap in that stream means an event may have been missed,
and when their partition gets a new owner. Every entry holds the partition version of its
value (from the owner's answer or event), so a change older than the value
held is ignored, whatever order answers and events arrive in. A ``set`` or
``put`` through this member refills the entry with the written value once
acknowledged, unless a newer change of the key was seen meanwhile
(read-your-writes; until then the entry held is served: a read that overlaps
the write may return the value before it); other writes through it drop the
entry. An entry
is served only while its owner's *lease* holds: every message from the owner
renews it for ``max_staleness`` seconds, so a silent owner (a dropped stream,
a partition) cannot leave old values served for longer than that after a
write was acknowledged.

A fetch that races an invalidation of the same key is not cached: each fetch
(a ``Flight``) notes a tick when it begins, an invalidation of a key with
fetches in flight records the tick it happened at, and a fetch that ends
after an invalidation it did not see is returned but not kept. (Per fetch,
not per key: on a hot key, fetches overlap without end, and a fetch begun
after the last change is good to keep.) Concurrent misses of one key on this
member share one fetch, unless the key changed after it began: a reader that
began after this member's write of the key must not get an answer fetched
before it. Values are shared between callers: treat what ``get`` returns
from a near-cached map as read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from peergrid.config import NearCacheConfig
from peergrid.events.model import EventBatch, EventKind
from peergrid.protocol import Effect, EffectKind

MISS = object()
_FOREVER = float("inf")
_NEWEST = 1 << 63  # the version of a change whose version was not sent


class Flight:
    """A fetch of one key in flight, whose answer other readers on this member may share."""

    __slots__ = ("_done", "_waiters", "found", "ok", "start", "value")

    def __init__(self, start: int) -> None:
        self.start = start  # the near cache's tick when the fetch began
        self._done = threading.Event()
        self._waiters: list[Callable[[], None]] = []
        self.found = False
        self.ok = False  # False: the fetch failed; a reader waiting for it fetches for itself
        self.value: Any = None

    def wait(self, timeout: float) -> bool:
        """Block until the fetch ended; True when it answered (``found``, ``value``)."""
        return self._done.wait(timeout) and self.ok

    async def wait_async(self, timeout: float) -> bool:
        """``wait`` for asyncio callers: the fetch ends on another thread."""
        loop = asyncio.get_running_loop()
        landed = loop.create_future()

        def settle() -> None:  # the caller's loop
            if not landed.done():
                landed.set_result(None)

        def wake() -> None:  # any thread, possibly twice
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                loop.call_soon_threadsafe(settle)

        self._waiters.append(wake)
        if self._done.is_set():  # landed before the append: nobody will call wake
            wake()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await landed
        return self._done.is_set() and self.ok

    def land(self, value: Any, found: bool, ok: bool) -> None:
        self.value, self.found, self.ok = value, found, ok
        self._done.set()
        for wake in self._waiters:
            wake()


def _release(counts: dict[bytes, int], key: bytes, ledger: dict[bytes, int]) -> None:
    """One fewer of ``key`` in flight in ``counts``; at none, ``key`` leaves ``ledger`` too."""
    left = counts.get(key, 1) - 1
    if left:
        counts[key] = left
    else:
        counts.pop(key, None)
        ledger.pop(key, None)


class NearCache:
    """The near cache of one map on one member."""

    def __init__(
        self,
        name: str,
        config: NearCacheConfig,
        owner_of: Callable[[int], str | None],
        loads: Callable[[bytes], Any],
    ) -> None:
        self.name = name
        self.config = config
        self._owner_of = owner_of
        self._loads = loads
        #: encoded key -> (decoded value, partition, owner uuid, deadline in monotonic seconds,
        #: partition version of the value or 0 when not known)
        self.data: OrderedDict[bytes, tuple[Any, int, str, float, int]] = OrderedDict()
        #: owner uuid -> monotonic time until which its entries may be served
        self.leases: dict[str, float] = {}
        self._lock = threading.Lock()  # guards inserts against invalidations (not hits)
        self._inflight: dict[bytes, int] = {}  # key -> fetches in flight
        self._flights: dict[bytes, Flight] = {}  # key -> the newest fetch, to share
        self._tick = 0
        self._changed: dict[bytes, int] = {}  # key with fetches in flight -> tick of its last change
        #: partition -> the newest version an answer brought (a fetch's, an own write's): an
        #: event that is not newer, late on its stream, may be older than a change of its key
        #: this member saw in such an answer, so it fills nothing (``on_events``)
        self._answered: dict[int, int] = {}
        self._writing: dict[bytes, int] = {}  # key -> this member's writes of it in flight
        self._seen: dict[bytes, int] = {}  # key being written -> newest version an event brought
        self.hits = 0
        self.misses = 0
        self.invalidations = 0

    # ------------------------------------------------------------------ caller side
    def lookup(self, key: bytes) -> Any:
        """The cached value, or ``MISS``."""
        entry = self.data.get(key)
        if entry is not None:
            now = time.monotonic()
            if now < entry[3] and now < self.leases.get(entry[2], 0.0):
                try:  # noqa: SIM105 - a bare try is cheaper than suppress() on this hot path
                    self.data.move_to_end(key)
                except KeyError:  # invalidated meanwhile: the value was still current a moment ago
                    pass
                self.hits += 1
                return entry[0]
        self.misses += 1
        return MISS

    def shared(self, key: bytes) -> Flight | None:
        """A fetch of ``key`` in flight that a reader starting now may wait for instead of
        fetching itself, or None (none in flight, or the key changed since it began)."""
        with self._lock:  # end() may pop the flight and its key's change in between
            flight = self._flights.get(key)
            if flight is None or self._changed.get(key, 0) > flight.start:
                return None
            return flight

    def begin(self, key: bytes) -> Flight:
        """A fetch of ``key`` starts: pass what this returns to ``end``, whatever happens."""
        with self._lock:
            self._inflight[key] = self._inflight.get(key, 0) + 1
            flight = Flight(self._tick)
            current = self._flights.get(key)
            if current is None or self._changed.get(key, 0) > current.start:
                self._flights[key] = flight  # the one later readers share
            return flight

    def end(
        self,
        key: bytes,
        partition: int,
        value: Any,
        found: bool,
        flight: Flight,
        ok: bool = True,
        version: int = 0,
        ttl: float = 0.0,
    ) -> None:
        """A fetch of ``key`` finished (``ok``: it answered, at partition ``version``, with
        ``ttl`` seconds left before the value expires on its owner, 0 for never); keep its
        value unless the key changed since it began, and hand the answer to readers waiting
        on it."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
            stale = self._changed.get(key, 0) > flight.start
            self._answer(partition, version)
            _release(self._inflight, key, self._changed)
            if ok and found and not stale:
                self._keep(key, partition, value, version, ttl)
        flight.land(value, found, ok)

    def _keep(self, key: bytes, partition: int, value: Any, version: int, ttl: float = 0.0) -> None:
        """Hold ``value`` unless a newer one is held (lock held), at most until it expires on
        its owner (``ttl`` seconds from now, 0 for never). Only other members' partitions
        are held: only they send events (and leases)."""
        owner = self._owner_of(partition)
        now = time.monotonic()
        if owner is None or self.leases.get(owner, 0.0) <= now:
            return
        held = self.data.get(key)
        if held is not None and version and held[4] >= version:
            return
        self.data[key] = (value, partition, owner, self._deadline(now, ttl), version)
        self.data.move_to_end(key)
        while len(self.data) > self.config.max_entries:
            self.data.popitem(last=False)

    def _deadline(self, now: float, ttl: float) -> float:
        """Until when a value may be held: the near cache's own ``ttl``, and the value's
        time left on its owner (an entry that expired there is never served here)."""
        own = self.config.ttl
        deadline = now + own if own else _FOREVER
        return min(deadline, now + ttl) if ttl else deadline

    def _answer(self, partition: int, version: int) -> None:
        """An answer showed ``partition`` at ``version`` (lock held)."""
        if version > self._answered.get(partition, 0):
            self._answered[partition] = version

    def _changing(self, keys: Iterable[bytes]) -> None:
        """``keys`` changed: fetches of them in flight now must not be kept (lock held)."""
        self._tick += 1
        for key in keys:
            self._changed[key] = self._tick

    def invalidate(self, key: bytes) -> None:
        """Drop ``key`` (a change elsewhere, or a write through this member)."""
        with self._lock:
            self._drop_key(key)

    def write_begins(self, key: bytes) -> None:
        """This member starts a write of ``key``: note newer changes until it ends. The entry
        held is still served (a read that overlaps the write may return the value before
        it); a fetch in flight, which may bring back either, is not kept."""
        with self._lock:
            if key in self._inflight:
                self._changing((key,))
            self._writing[key] = self._writing.get(key, 0) + 1

    def write_ends(
        self, key: bytes, partition: int, encoded: bytes | None, version: int, ttl: float = 0.0
    ) -> None:
        """This member's write of ``key`` ended: with ``encoded`` (the value written, applied
        at partition ``version``, ``ttl`` seconds left on the owner, 0 for never), hold it
        unless a newer change was seen; else drop the key."""
        with self._lock:
            seen = self._seen.get(key, 0)
            _release(self._writing, key, self._seen)
            self._answer(partition, version)
            if key in self._writing:
                # Other writes of the key through this member still run (other threads): their
                # answers may come after this one, and must not refill below it. (Unknown: it
                # may have been applied after them.)
                self._seen[key] = max(self._seen.get(key, 0), version or _NEWEST)
            if encoded is None or not version or seen > version:
                held = self.data.get(key)
                if encoded is not None and version and held is not None and held[4] >= seen:
                    return  # the newer change seen is the value held (an event brought it)
                self._drop_key(key)  # a fetch that raced the write must not be kept either
                return
            if key in self._inflight:
                self._changing((key,))
            held = self.data.get(key)
            if held is not None and held[4] < version:
                del self.data[key]  # older than this write, whether or not the write is held
            self._keep(key, partition, self._loads(encoded), version, ttl)

    def _unsure_writes(self) -> None:
        """Changes this member did not see key by key (a clear, a gap, a new owner) may be
        newer than its writes in flight: none of them may refill its key (lock held)."""
        for key in self._writing:
            self._seen[key] = _NEWEST

    def _drop_key(self, key: bytes) -> None:
        self.data.pop(key, None)
        self.invalidations += 1
        if key in self._inflight:
            self._changing((key,))

    def drop_partitions(self, partitions: Iterable[int], owner: str | None = None) -> None:
        """Drop every entry of ``partitions`` (of ``owner``'s, if given)."""
        wanted = set(partitions)
        with self._lock:
            for key, entry in list(self.data.items()):
                if entry[1] in wanted and (owner is None or entry[2] == owner):
                    self.data.pop(key, None)
            # Fetches and own writes in flight for these partitions must not be kept either.
            self._changing(self._inflight)
            self._unsure_writes()

    def on_table(self) -> None:
        """The partition table changed: drop entries whose partition has another owner now."""
        with self._lock:
            for key, entry in list(self.data.items()):
                if self._owner_of(entry[1]) != entry[2]:
                    self.data.pop(key, None)
            self._changing(self._inflight)
            self._unsure_writes()

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self.data.clear()
            self._changing(self._inflight)
            self._unsure_writes()

    # ------------------------------------------------------------------ event receiver
    def on_alive(self, owner: str, now: float) -> None:
        """``owner`` was heard from at ``now``: its entries may be served a while longer."""
        self.leases[owner] = now + self.config.max_staleness

    def on_events(self, owner: str, batch: EventBatch) -> None:
        """Changes from ``owner``: cached entries take the new value, or are dropped.

        Events of one owner arrive in the order it applied the writes, so the
        last value received is the owner's latest. A fetch in flight for the
        key is not kept (its answer may predate this change).
        """
        values = batch.values
        versions = batch.versions
        ttls = batch.ttls
        now = time.monotonic()
        with self._lock:
            for i, (kind, partition, key) in enumerate(
                zip(batch.kinds, batch.partitions, batch.keys, strict=True)
            ):
                if kind == EventKind.CLEARED:
                    for cached, held in list(self.data.items()):
                        if held[1] == partition:
                            self.data.pop(cached, None)
                    self._changing(self._inflight)
                    self._unsure_writes()  # a clear sends no event per key
                    continue
                version = versions[i] if versions is not None else 0
                # Held only where a reader is fetching it (see below), and when newer than any
                # answer showed the partition at (an own delete acknowledged before this event
                # came, say: events come late).
                fills = bool(version) and key in self._inflight and version > self._answered.get(partition, 0)
                if key in self._writing:  # unknown versions count as newer than any write
                    self._seen[key] = max(self._seen.get(key, 0), version or _NEWEST)
                entry = self.data.get(key)
                if entry is not None and version and entry[4] >= version and entry[2] == owner:
                    if key in self._inflight:  # a change we hold already (our own write's event)
                        self._changing((key,))
                    continue
                if entry is not None:
                    takes = entry[2] == owner
                else:
                    takes = fills and self._owner_of(partition) == owner
                if takes and values is not None and kind in (EventKind.ADDED, EventKind.UPDATED):
                    try:
                        value = self._loads(values[i])
                    except Exception:  # noqa: BLE001 - a value this member cannot decode is dropped
                        self._drop_key(key)  # (the stream of events must go on)
                        continue
                    ttl = ttls[i] if ttls is not None else 0.0
                    if key in self._inflight:
                        self._changing((key,))
                    if entry is None:
                        # A reader is fetching the key: the change is newer than anything this
                        # member was answered of its partition (``fills``), so readers after it
                        # need not fetch again; the fetch's answer, which may predate it, is not
                        # kept. (A hot key's fetches race its writes without end.)
                        self._keep(key, partition, value, version, ttl)
                        continue
                    deadline = min(entry[3], now + ttl) if ttl else entry[3]
                    self.data[key] = (value, entry[1], owner, deadline, version)
                    self.invalidations += 1
                else:
                    self._drop_key(key)

    def on_copy_changed(self, owner: str, partition: int, version: int, effects: Sequence[Effect]) -> None:
        """``owner``'s write of ``partition`` at ``version``, as this member's backup copy of
        it applies it (``effects``, of any map): the event of it is not sent here. A value's
        time left comes from its deadline on the owner's wall clock, as the copy's own expiry
        reads it (members' clocks are assumed close, as a promoted backup assumes)."""
        batch = EventBatch(values=[], versions=[], ttls=[])
        now = time.time()
        for effect in effects:
            if effect.map != self.name:
                continue
            ttl = 0.0
            if effect.kind == EffectKind.PUT:
                kind = EventKind.UPDATED
                if effect.expire_at:
                    ttl = effect.expire_at - now
                    if ttl <= 0:
                        kind = EventKind.REMOVED  # expired already
            elif effect.kind == EffectKind.DELETE:
                kind = EventKind.REMOVED
            elif effect.kind == EffectKind.CLEAR:
                kind = EventKind.CLEARED
            else:
                continue
            batch.kinds.append(kind)
            batch.partitions.append(partition)
            batch.seqs.append(0)
            batch.keys.append(effect.key)
            batch.values.append(effect.value)  # type: ignore[union-attr]
            batch.versions.append(version)  # type: ignore[union-attr]
            batch.ttls.append(ttl)  # type: ignore[union-attr]
        if batch.kinds:
            self.on_events(owner, batch)

    def on_gap(self, owner: str, partitions: Iterable[int]) -> None:
        """Events from ``owner`` may have been missed: drop what they would have invalidated."""
        self.leases.pop(owner, None)
        self.drop_partitions(partitions, owner)

    def __len__(self) -> int:
        return len(self.data)
