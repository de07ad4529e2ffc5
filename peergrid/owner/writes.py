"""What an owner does around each write: bounds, eviction, events; and expiry sweeps.

For a map with a size bound, the owner keeps a count of the entries and
key+value bytes it owns (recounted after the table changes) and, after a
write, evicts sampled least-recently or least-frequently used entries until
the map fits again; each eviction is a versioned delete shipped to the
backups like any write. With ``eviction="none"`` a write that would exceed
the bound is refused (CAPACITY) and nothing changes.

For a map someone listens to (a near cache elsewhere, an entry listener),
every change becomes an event for the publisher, with the old value when
listeners want values.

Expiry sweeps run on the member's loop, in slices: each store hands out only
its due entries (a queue, see ``peergrid.storage.records``), a few dozen at a
time, and the sweep pauses once it has held the loop ``Timing.expiry_sweep_slice``
seconds, so a million entries expiring at once delay no request by more than a slice. A
backlog is freed at a quarter of the loop at most (``expiry_sweep_pause``): memory and
EXPIRED events may lag the deadlines under a mass expiry, reads never do (they check the
deadline).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from peergrid.config import MapConfig, Timing
from peergrid.events.model import EventKind
from peergrid.events.publisher import EventPublisher
from peergrid.protocol import Code, Effect, EffectKind, Op, Result, Status
from peergrid.stats import MapCounters
from peergrid.storage import Partition
from peergrid.storage.records import SAMPLE_SIZE
from peergrid.storage.registry import MapRegistry, Usage

_random = random.Random()  # noqa: S311 - jitter and sampling; our own: the application's global state is not ours

if TYPE_CHECKING:
    from peergrid.replication import PartitionManager

SWEEP_BATCH = 32  # due heap pairs per store between two reads of the clock (~0.3 ms of deletes)
_EXPIRE_SCAN_INTERVAL = 0.05  # a full map refusing writes frees its expired entries this often at most
_SIZED = frozenset({Code.PUT, Code.SET, Code.PUT_IF_ABSENT, Code.REPLACE, Code.REPLACE_IF_SAME})
_POOL_SIZE = 16  # eviction candidates kept between evictions (as Redis' eviction pool)
_EVICTS = frozenset({Code.EVICT, Code.EVICT_ALL})
_TTL_CHANGES = frozenset({Code.EXPIRE, Code.PERSIST})


class OwnerWrites:
    """Bounds, eviction, events and expiry on the partitions this member owns. Loop thread only."""

    def __init__(
        self,
        registry: MapRegistry,
        manager: PartitionManager,
        publisher: EventPublisher,
        counters: Callable[[str], MapCounters],
        timing: Timing,
    ) -> None:
        self._sweep_slice = timing.expiry_sweep_slice
        self._sweep_pause = timing.expiry_sweep_pause
        self._registry = registry
        self._manager = manager
        self._publisher = publisher
        self._counters = counters
        self.usage_dirty = True  # recount owned usage before the next bounded write
        self._pools: dict[str, dict[bytes, int]] = {}  # map -> eviction candidates: key -> partition
        self._scanned: dict[str, float] = {}  # map -> when a full map was last scanned for expired entries

    # ------------------------------------------------------------------ before a write
    def refuse(self, part: Partition, op: Op, config: MapConfig) -> Result | None:
        """CAPACITY when ``op`` would take a map with ``eviction="none"`` past its bound."""
        if config.eviction != "none" or op.code not in _SIZED:
            return None
        if not self._fits(part, op, config) and (
            not self._expire_owned(op.map) or not self._fits(part, op, config)
        ):
            # Full, even once the expired entries the sweep has not freed yet are.
            return Result(
                Status.CAPACITY,
                message=f"map {op.map!r} is full on its owner (max_entries={config.max_entries}, "
                f"max_bytes={config.max_bytes}, eviction='none')",
            )
        return None

    def _fits(self, part: Partition, op: Op, config: MapConfig) -> bool:
        usage = self.usage(op.map)
        store = part.maps.get(op.map)
        old = store.values.get(op.key) if store is not None else None
        entries = usage.entries + (0 if old is not None else 1)
        nbytes = usage.nbytes + len(op.value) + (-len(old) if old is not None else len(op.key))
        return (config.max_entries is None or entries <= config.max_entries) and (
            config.max_bytes is None or nbytes <= config.max_bytes
        )

    def usage(self, name: str) -> Usage:
        """Owned entries and bytes of a bounded map (recounted after table changes)."""
        if self.usage_dirty:
            self._recount()
        usage = self._registry.usage.get(name)
        if usage is None:
            usage = self._registry.usage[name] = self._count(name)
        return usage

    def _recount(self) -> None:
        self.usage_dirty = False
        for name in self._registry.bounded():
            self._registry.usage[name] = self._count(name)

    def _count(self, name: str) -> Usage:
        usage = Usage()
        for part in self._manager.readable:
            store = part.maps.get(name) if part is not None else None
            if store is not None:
                usage.entries += len(store)
                usage.nbytes += store.nbytes
        return usage

    # ------------------------------------------------------------------ after a write
    def written(
        self,
        part: Partition,
        op: Op,
        config: MapConfig,
        effects: Sequence[Effect],
        old: bytes | None,
        cleared: list[tuple[bytes, bytes]] | None,
        size_before: tuple[int, int],
        skip: Collection[str] = (),
    ) -> None:
        """Account, publish and evict after ``op`` changed ``part``; ``skip``: members whose
        near caches learn of the change otherwise (``EventPublisher.publish``)."""
        name = op.map
        if config.bounded:
            store = part.maps.get(name)
            usage = self.usage(name)
            usage.entries += (len(store) if store is not None else 0) - size_before[0]
            usage.nbytes += (store.nbytes if store is not None else 0) - size_before[1]
        if self._publisher.interested(name):
            self._publish(name, part, effects, old, cleared, op.code, skip)
        if config.bounded and config.eviction != "none":
            self._evict(name, config, op.key)

    def _publish(
        self,
        name: str,
        part: Partition,
        effects: Sequence[Effect],
        old: bytes | None,
        cleared: list[tuple[bytes, bytes]] | None,
        code: int = Code.PUT,
        skip: Collection[str] = (),
    ) -> None:
        publish = self._publisher.publish
        # What a change is to listeners: an evict is EVICTED, not REMOVED; a TTL changed by
        # expire/persist changes no value (listeners hear nothing; near caches drop the entry).
        gone = EventKind.EVICTED if code in _EVICTS else EventKind.REMOVED
        silent = code == Code.DESTROY
        p, version = part.id, part.version
        store = part.maps.get(name)
        timed = store is not None and store.may_expire
        for effect in effects:
            if effect.map != name:
                continue  # a write-behind map's queue entries travel with the write: not events
            if effect.kind == EffectKind.PUT:
                kind = EventKind.UPDATED if old is not None else EventKind.ADDED
                if code in _TTL_CHANGES:
                    kind = EventKind.TTL_CHANGED
                ttl = store.time_left(effect.key) if timed and store is not None else 0.0
                publish(name, p, kind, effect.key, effect.value, old or b"", version, ttl, skip)
            elif effect.kind == EffectKind.DELETE:
                publish(name, p, gone, effect.key, b"", old or b"", version, skip=skip)
            elif effect.kind == EffectKind.CLEAR:
                for key, value in () if silent else cleared or ():
                    publish(name, p, gone, key, b"", value, version, skip=skip)
                publish(name, p, EventKind.CLEARED, b"", version=version, skip=skip)

    def _evict(self, name: str, config: MapConfig, spare: bytes) -> None:
        usage = self.usage(name)
        lfu = config.eviction == "lfu"
        owned = self._manager.table.owned_by(self._manager.uuid)
        while owned and _over(usage, config):
            victim = self._pick(name, owned, lfu, spare)
            if victim is None:
                return
            part, key = victim
            if self.delete(part, name, key, EventKind.EVICTED, usage):
                self._counters(name).evictions += 1

    def _pick(
        self, name: str, owned: Sequence[int], lfu: bool, spare: bytes
    ) -> tuple[Partition, bytes] | None:
        """The best eviction candidate: Redis' sampled eviction with a pool.

        Each eviction samples a few random keys over the owned partitions into
        a per-map pool of the best candidates seen so far; the pool is
        re-scored (an entry read since it was pooled is no longer a good
        victim) and its best entry goes.
        """
        readable = self._manager.readable
        pool = self._pools.setdefault(name, {})
        sampled = 0
        for _ in range(SAMPLE_SIZE * 8):
            if sampled >= SAMPLE_SIZE:
                break
            part = readable[_random.choice(owned)]
            store = part.maps.get(name) if part is not None else None
            key = store.sample() if store is not None else None
            if part is not None and key is not None and key != spare:
                pool[key] = part.id
                sampled += 1
        scored = []
        for key, p in pool.items():
            part = readable[p]
            store = part.maps.get(name) if part is not None else None
            score = store.score(key, lfu) if store is not None and key != spare else None
            if score is not None:
                scored.append((score, p, key))
        scored.sort()
        self._pools[name] = {key: p for _, p, key in scored[1:_POOL_SIZE]}
        if not scored:
            return self._any_entry(name, owned, spare)
        _, p, key = scored[0]
        part = readable[p]
        return (part, key) if part is not None else None

    def _any_entry(self, name: str, owned: Sequence[int], spare: bytes) -> tuple[Partition, bytes] | None:
        """Any owned entry but ``spare``: when a sparse map leaves random samples empty-handed,
        eviction must still make the map fit."""
        for p in owned:
            part = self._manager.readable[p]
            store = part.maps.get(name) if part is not None else None
            if part is not None and store is not None:
                for key in store.values:
                    if key != spare:
                        return part, key
        return None

    def keep(
        self, part: Partition, name: str, key: bytes, value: bytes, expire_at: float, config: MapConfig
    ) -> None:
        """Hold a value loaded from the map's store as owner: versioned and replicated, not stored again."""
        # Recount first if the table moved, so the loaded entry counts once.
        usage = self.usage(name) if config.bounded else None
        store = part.store(name)
        size_before = (len(store), store.nbytes)
        store.put(key, value, expire_at)
        part.version += 1
        self._manager.replicator.replicate(
            part.id, part.version, (Effect(EffectKind.PUT, name, key, value, expire_at),), Result()
        )
        if usage is not None:
            usage.entries += len(store) - size_before[0]
            usage.nbytes += store.nbytes - size_before[1]
            if config.eviction != "none":
                self._evict(name, config, key)

    def delete(self, part: Partition, name: str, key: bytes, kind: int, usage: Usage | None = None) -> bool:
        """Remove an entry as owner (eviction, expiry): versioned, replicated, published.
        False when there was none."""
        store = part.maps.get(name)
        value = store.delete(key) if store is not None else None
        if value is None:
            return False
        if usage is not None:
            usage.entries -= 1
            usage.nbytes -= len(key) + len(value)
        part.version += 1
        self._manager.replicator.replicate(
            part.id, part.version, (Effect(EffectKind.DELETE, name, key),), Result()
        )
        if kind and self._publisher.interested(name):
            self._publisher.publish(name, part.id, kind, key, b"", value, part.version)
        return True

    # ------------------------------------------------------------------ sweeps
    async def sweep(self) -> int:
        """Free expired entries: owners expire, replicate and publish; backups drop the entries
        whose TTL passed by their clock or by their owner's last EXPIRED (its watermark, see
        ``Records.expire_through``). Yields to the loop every ``Timing.expiry_sweep_slice``;
        returns how many entries this member expired as owner."""
        swept = 0
        until = time.perf_counter() + self._sweep_slice
        may_change = self._manager.may_change()
        p = 0
        while p < len(self._manager.parts):
            # Read again after every yield: the table may have moved, the partition gone.
            part = self._manager.parts[p]
            owned = part is not None and self._manager.readable[p] is part
            if owned and not may_change:
                # Without quorum or lease an owner changes nothing, expiry included: a version
                # it bumped alone could collide with the one the others' owner gives a write.
                # Reads check deadlines, so nothing expired is served meanwhile.
                p += 1
                continue
            more = False
            if part is not None:
                done, more = self._sweep_some(part, owned, until)
                swept += done
            if time.perf_counter() >= until:
                await asyncio.sleep(self._sweep_pause)
                until = time.perf_counter() + self._sweep_slice
                may_change = self._manager.may_change()
            if not more:
                p += 1
        return swept

    def _sweep_some(self, part: Partition, owned: bool, until: float) -> tuple[int, bool]:
        """Sweep ``part``'s maps: as owner, until the slice ends at ``until`` (perf_counter),
        one replicated write per map; as backup, up to ``SWEEP_BATCH`` due pairs per map.
        Returns (expired as owner, more due)."""
        now = time.time()
        swept, more = 0, False
        for name, store in list(part.maps.items()):
            if not store.due(now, idle=owned):
                continue
            if owned:
                swept += self._expire(part, name, now, SWEEP_BATCH, until)
            else:
                store.sweep(now, SWEEP_BATCH, idle=False)
            more = more or store.due(now, idle=owned)
        return swept, more

    def _expire(
        self, part: Partition, name: str, now: float, limit: int | None = None, until: float = 0.0
    ) -> int:
        """Free map ``name``'s expired entries in ``part`` (owned), looking at ``limit`` due
        ones at a time (None: all), until none is due or ``until`` (perf_counter) passed; how
        many were freed.

        The entries freed together are one write: one version, one BACKUP of their effects
        (``Partition.expire``: one for all those past their TTL), and an EXPIRED event each
        at that version (as a clear publishes). One replicated write per entry made the
        backups and the acknowledgements the stall: a million entries expiring queued a
        million backup writes, applied and answered in frames of thousands in one loop step
        each. One per batch of 32 still sent a member's backups ~2,000 writes a second under
        a mass expiry, and a remote get waited behind them on the pipe they share."""
        store = part.maps.get(name)
        if store is None or not store.may_expire:
            return 0
        gone, effects = part.expire(name, now, limit, until)
        if not gone:
            return 0
        config = self._registry.config(name)
        if config.bounded:
            usage = self.usage(name)
            usage.entries -= len(gone)
            usage.nbytes -= sum(len(key) + len(value) for key, value in gone)
        part.version += 1
        self._manager.replicator.replicate(part.id, part.version, effects, Result())
        if self._publisher.interested(name):
            for key, value in gone:
                self._publisher.publish(name, part.id, EventKind.EXPIRED, key, b"", value, part.version)
        self._counters(name).expirations += len(gone)
        return len(gone)

    def _expire_owned(self, name: str) -> int:
        """Free map ``name``'s expired entries in every partition this member serves (a scan
        of the map: at most every ``_EXPIRE_SCAN_INTERVAL`` seconds per map)."""
        now = time.time()
        if now - self._scanned.get(name, 0.0) < _EXPIRE_SCAN_INTERVAL:
            return 0
        self._scanned[name] = now
        return sum(self._expire(part, name, now) for part in self._manager.readable if part is not None)

    def touches(self) -> None:
        """Send backups the access times of entries read since last time (their idle clocks)."""
        readable = self._manager.readable
        for p in self._manager.table.owned_by(self._manager.uuid):
            part = readable[p]
            if part is None:
                continue
            effects = [
                Effect(EffectKind.TOUCH, name, key, b"", when)
                for name, store in part.maps.items()
                if store.access is not None
                for key, when in store.take_touched()
            ]
            if effects:
                self._manager.replicator.touch(p, effects)


def _over(usage: Usage, config: MapConfig) -> bool:
    return (config.max_entries is not None and usage.entries > config.max_entries) or (
        config.max_bytes is not None and usage.nbytes > config.max_bytes
    )
