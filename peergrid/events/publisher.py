"""The owner's side of events: what changed in the partitions it owns, to whom.

Each subscription (a member, a map) has its own per-partition sequence
numbers, counting from 1 the events sent for that partition. Events gather
during one loop iteration and go out as one batch; a heartbeat every
``heartbeat_interval`` lists the partitions this member owns and the last
sequence sent for each, so a subscriber can tell a gap (a missed event, a new
owner) from silence, and knows the owner is still talking to it.

This member's own listeners get the same events directly (``local`` sinks).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from peergrid.events.model import EventBatch

LocalSink = Callable[[EventBatch], None]


class _Subscription:
    """One subscriber's view of one map on this owner."""

    def __init__(self, values: bool, entries: bool, partition_count: int) -> None:
        self.values = values
        self.entries = entries
        self.seqs = [0] * partition_count
        self.batch = self._empty()
        self.ready = asyncio.Event()

    def _empty(self) -> EventBatch:
        values = self.values
        return EventBatch(
            values=[] if values else None,
            old_values=[] if values else None,
            versions=[],
            ttls=[] if values else None,
        )

    def add(self, kind: int, p: int, key: bytes, value: bytes, old: bytes, version: int, ttl: float) -> None:
        self.seqs[p] += 1
        batch = self.batch
        batch.kinds.append(kind)
        batch.partitions.append(p)
        batch.seqs.append(self.seqs[p])
        batch.keys.append(key)
        assert batch.versions is not None
        batch.versions.append(version)
        if batch.values is not None and batch.old_values is not None and batch.ttls is not None:
            batch.values.append(value)
            batch.old_values.append(old)
            batch.ttls.append(ttl)
        self.ready.set()

    def take(self) -> EventBatch | None:
        if not self.batch.kinds:
            return None
        batch = self.batch
        self.batch = self._empty()
        return batch


class EventPublisher:
    """Routes owner-side changes to subscriptions and local sinks. Loop thread only."""

    def __init__(
        self,
        partition_count: int,
        owned: Callable[[], Sequence[int]],
        table_version: Callable[[], int],
        leased: Callable[[], bool] = lambda: True,
    ) -> None:
        self._count = partition_count
        self._owned = owned
        self._table_version = table_version
        self._leased = leased  # heartbeats vouch for this member's entries only while it holds its lease
        self._subscriptions: dict[str, list[_Subscription]] = {}
        self._local: dict[str, list[LocalSink]] = {}
        self._local_batches: dict[str, EventBatch] = {}
        self._flush_scheduled = False

    # ------------------------------------------------------------------ who listens
    def interested(self, name: str) -> bool:
        """True when some subscriber or local sink wants events of map ``name``."""
        return name in self._subscriptions or name in self._local

    def wants_values(self, name: str) -> bool:
        """True when some receiver of ``name``'s events wants values."""
        return name in self._local or any(s.values for s in self._subscriptions.get(name, ()))

    def wants_entries(self, name: str) -> bool:
        """True when some receiver wants one event per entry when the map is cleared."""
        return name in self._local or any(s.entries for s in self._subscriptions.get(name, ()))

    def add_local(self, name: str, sink: LocalSink) -> None:
        """Deliver events of ``name`` on partitions this member owns to ``sink`` (loop thread)."""
        sinks = self._local.setdefault(name, [])
        if sink not in sinks:
            sinks.append(sink)

    def remove_local(self, name: str, sink: LocalSink) -> None:
        """Stop delivering to ``sink``."""
        sinks = self._local.get(name, [])
        with contextlib.suppress(ValueError):
            sinks.remove(sink)
        if not sinks:
            self._local.pop(name, None)

    # ------------------------------------------------------------------ publishing
    def publish(
        self,
        name: str,
        p: int,
        kind: int,
        key: bytes,
        value: bytes = b"",
        old: bytes = b"",
        version: int = 0,
        ttl: float = 0.0,
    ) -> None:
        """Record one event of map ``name`` in partition ``p``, a change at partition ``version``
        (``ttl``: seconds the new value has left, 0 for none)."""
        for subscription in self._subscriptions.get(name, ()):
            subscription.add(kind, p, key, value, old, version, ttl)
        if name in self._local:
            batch = self._local_batches.get(name)
            if batch is None:
                batch = self._local_batches[name] = EventBatch(values=[], old_values=[])
            batch.kinds.append(kind)
            batch.partitions.append(p)
            batch.seqs.append(0)
            batch.keys.append(key)
            assert batch.values is not None
            assert batch.old_values is not None
            batch.values.append(value)
            batch.old_values.append(old)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_local)

    def _flush_local(self) -> None:
        self._flush_scheduled = False
        batches, self._local_batches = self._local_batches, {}
        for name, batch in batches.items():
            for sink in list(self._local.get(name, ())):
                sink(batch)

    def heartbeat(self, subscription: _Subscription) -> EventBatch:
        """A heartbeat for ``subscription``: owned partitions and their last seqs."""
        owned = list(self._owned())
        return EventBatch(
            heartbeat=True,
            owned=owned,
            owned_seqs=[subscription.seqs[p] for p in owned],
            table_version=self._table_version(),
        )

    async def subscribe(
        self, name: str, values: bool, entries: bool, heartbeat_interval: float
    ) -> AsyncIterator[EventBatch]:
        """Batches of ``name``'s events for one subscriber, with heartbeats, until it goes away."""
        subscription = _Subscription(values, entries, self._count)
        self._subscriptions.setdefault(name, []).append(subscription)
        loop = asyncio.get_running_loop()
        try:
            # The first heartbeat vouches for our entries too. The lease is a deadline that
            # heartbeats renew, not an event: look again at the heartbeat interval.
            while not self._leased():  # noqa: ASYNC110
                await asyncio.sleep(heartbeat_interval)
            yield self.heartbeat(subscription)
            last_heartbeat = loop.time()
            while True:
                wait = max(0.0, last_heartbeat + heartbeat_interval - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(subscription.ready.wait(), wait)
                subscription.ready.clear()
                batch = subscription.take()
                heartbeat = None
                if loop.time() - last_heartbeat >= heartbeat_interval:
                    # Taken together with the batch, before the yield: events published
                    # while the batch is being written go to the next batch, and a
                    # heartbeat counting them before they were sent would look like a gap.
                    # None without the owner lease: near caches must stop serving our entries.
                    heartbeat = self.heartbeat(subscription) if self._leased() else None
                    last_heartbeat = loop.time()
                if batch is not None:
                    yield batch  # any batch also tells the subscriber we are alive
                if heartbeat is not None:
                    yield heartbeat
        finally:
            subscriptions = self._subscriptions.get(name, [])
            with contextlib.suppress(ValueError):
                subscriptions.remove(subscription)
            if not subscriptions:
                self._subscriptions.pop(name, None)
