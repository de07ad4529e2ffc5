"""The maps as one member holds them: configurations, near caches, listener hubs, statistics.

Loop thread only, but for ``counters_of`` (callers count on their own threads;
a counter's fields are plain ints, updated under the GIL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from peergrid.config import MapConfig, Timing
from peergrid.errors import OperationTimeoutError
from peergrid.events.listeners import Dispatcher, ListenerHub
from peergrid.events.nearcache import NearCache
from peergrid.events.publisher import EventPublisher
from peergrid.events.subscriptions import Subscriptions
from peergrid.member.metrics import Snapshot
from peergrid.owner.stores import StoreOps
from peergrid.owner.writes import OwnerWrites
from peergrid.protocol import Effect
from peergrid.replication import PartitionManager
from peergrid.serialization import Serializer
from peergrid.stats import LocalMapStats, MapCounters, counters_in
from peergrid.storage.registry import MapRegistry


class Maps:
    """Every map of one member: what is configured, cached, listened to and counted here."""

    def __init__(
        self,
        uuid: str,
        registry: MapRegistry,
        manager: PartitionManager,
        owner: OwnerWrites,
        stores: StoreOps,
        publisher: EventPublisher,
        subscriptions: Subscriptions,
        serializer: Serializer,
        counters: dict[str, MapCounters],
        timing: Timing,
    ) -> None:
        self._uuid = uuid
        self._registry = registry
        self._manager = manager
        self._owner = owner
        self._stores = stores
        self._publisher = publisher
        self._subscriptions = subscriptions
        self._loads = serializer.loads
        self._timing = timing
        self.counters = counters
        self.dispatcher = Dispatcher(f"peergrid-events-{uuid[:8]}")
        self.near_caches: dict[str, NearCache] = {}
        self.hubs: dict[str, ListenerHub] = {}

    def configure(self, name: str, config: MapConfig) -> None:
        """Register a map's configuration here: policies, near cache."""
        if self._registry.configure(name, config):
            policy = self._registry.policy(name)
            for part in self._manager.parts:
                store = part.maps.get(name) if part is not None else None
                if store is not None:
                    store.set_policy(policy)
            self._owner.usage_dirty = True
        if config.near_cache is not None and name not in self.near_caches:
            near_cache = NearCache(name, config.near_cache, self._owner_of, self._loads)
            self.near_caches[name] = near_cache
            interval = config.near_cache.max_staleness / 3
            # With values, an owner's change updates cached entries in place: a hot key written
            # elsewhere stays a hit here instead of costing a fetch after every write.
            self._subscriptions.add(name, near_cache, values=True, entries=False, heartbeat=interval)

    def copy_changed(self, owner: str, partition: int, version: int, effects: Sequence[Effect]) -> None:
        """This member's backup copy of ``partition`` took ``owner``'s write (``effects`` at
        ``version``): its near caches take the change, as the owner sends them no event of it."""
        for near_cache in self.near_caches.values():
            near_cache.on_copy_changed(owner, partition, version, effects)

    def _owner_of(self, partition: int) -> str | None:
        return self._manager.table.owner(partition)  # the table current now, not when asked first

    def on_table(self) -> None:
        """The partition table changed: near caches drop what their owners' leases no longer cover."""
        for near_cache in self.near_caches.values():
            near_cache.on_table()

    # ------------------------------------------------------------------ listeners
    async def add_listener(
        self, name: str, loads: Callable[[bytes], Any], registration: dict[str, Any], loop: Any
    ) -> str:
        """Register a listener; wait until the event streams are up (``OperationTimeoutError``)."""
        hub = self.hubs.get(name)
        if hub is None:
            hub = self.hubs[name] = ListenerHub(name, self._uuid, loads, self.dispatcher)
        fresh = not hub.listeners
        listener = hub.add(loop=loop, **registration)
        if fresh:
            self._publisher.add_local(name, hub.on_local)
        if not listener.local:
            if not any(not other.local for other in hub.listeners.values() if other is not listener):
                # Always with values: a later listener that wants them must not restart the streams
                # (events in flight then are lost to every listener, and reported as a gap).
                heartbeat = self._timing.heartbeat_interval
                self._subscriptions.add(name, hub, values=True, entries=True, heartbeat=heartbeat)
            if not await self._subscriptions.ready(name, self._timing.rpc_timeout * 2):
                await self.remove_listener(name, listener.id)
                raise OperationTimeoutError(
                    f"{name}.add_entry_listener: could not subscribe to every member's events in time"
                )
        return listener.id

    async def remove_listener(self, name: str, listener_id: str) -> bool:
        """Unregister a listener; True if it was registered."""
        hub = self.hubs.get(name)
        if hub is None or hub.listeners.pop(listener_id, None) is None:
            return False
        if not hub.listeners:
            self._publisher.remove_local(name, hub.on_local)
            self._subscriptions.remove(name, hub)
            del self.hubs[name]
        elif not hub.wants_remote:
            self._subscriptions.remove(name, hub)
        return True

    # ------------------------------------------------------------------ destroy
    async def destroy(self, name: str, base: MapConfig | None) -> None:
        """Forget map ``name`` on this member (after ``destroy`` dropped its entries everywhere):
        its listeners here, its statistics, and the configuration ``get_map`` gave it (back to
        ``base``, the grid configuration's, if any). Its near cache is emptied but stays
        subscribed: other handles of the map on this member may still read through it."""
        hub = self.hubs.pop(name, None)
        if hub is not None:
            hub.listeners.clear()
            self._publisher.remove_local(name, hub.on_local)
            self._subscriptions.remove(name, hub)
        near_cache = self.near_caches.get(name)
        if near_cache is not None:
            near_cache.clear()
        self.counters.pop(name, None)
        self._registry.reset(name, base)
        self._owner.usage_dirty = True

    # ------------------------------------------------------------------ statistics
    def counters_of(self, name: str) -> MapCounters:
        """This member's counters for map ``name`` (made on first use)."""
        return counters_in(self.counters, name)

    def names(self) -> list[str]:
        """Every map this member counts, caches or holds a copy of."""
        names = set(self.counters) | set(self.near_caches)
        for part in self._manager.parts:
            if part is not None:
                names.update(part.maps)
        return sorted(names)

    def local_stats(self, name: str) -> LocalMapStats:
        """This member's statistics of map ``name``; creates nothing for a map it does not know
        (a peer may ask about any name)."""
        owned = backup = owned_bytes = backup_bytes = 0
        manager = self._manager
        for p, part in enumerate(manager.parts):
            store = part.maps.get(name) if part is not None else None
            if store is None:
                continue
            index = manager.table.replica_index(p, self._uuid)
            if index == 0:
                owned += store.count()
                owned_bytes += store.nbytes
            elif index is not None:
                backup += store.count()
                backup_bytes += store.nbytes
        counters = self.counters.get(name) or MapCounters()
        near_cache = self.near_caches.get(name)
        return LocalMapStats(
            owned_entries=owned,
            backup_entries=backup,
            owned_bytes=owned_bytes,
            backup_bytes=backup_bytes,
            gets=counters.gets,
            hits=counters.hits,
            misses=counters.misses,
            puts=counters.puts,
            removes=counters.removes,
            get_latency_p50=counters.get_latency.percentile(0.5),
            get_latency_p99=counters.get_latency.percentile(0.99),
            put_latency_p50=counters.put_latency.percentile(0.5),
            put_latency_p99=counters.put_latency.percentile(0.99),
            evictions=counters.evictions,
            expirations=counters.expirations,
            near_cache_entries=len(near_cache) if near_cache is not None else 0,
            near_cache_hits=near_cache.hits if near_cache is not None else 0,
            near_cache_misses=near_cache.misses if near_cache is not None else 0,
            backup_lag=manager.replicator.lag(),
            store_loads=counters.store_loads,
            store_writes=counters.store_writes,
            store_failures=counters.store_failures,
            write_behind_pending=self._stores.pending(name),
            owner_local_gets=counters.owner_local_gets,
        )

    async def snapshot(self, address: str, members: int) -> Snapshot:
        """What a metrics scrape reads of this member (as a coroutine: run it on the loop)."""
        owned = len(self._manager.table.owned_by(self._uuid))
        return Snapshot(address, members, owned, {name: self.local_stats(name) for name in self.names()})
