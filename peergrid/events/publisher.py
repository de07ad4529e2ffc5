"""The owner's side of events: what changed in the partitions it owns, to whom.

Each subscription (a member, a map) has its own per-partition sequence
numbers, counting from 1 the events sent for that partition. Events gather
during one loop iteration and go out as one batch, and a batch follows the one before by
``Timing.event_batch_interval`` at least (events that come sooner wait and go together:
under many writes, a message to each subscriber per interval, not per write); a heartbeat every
``heartbeat_interval`` lists the partitions this member owns and the last
sequence sent for each, so a subscriber can tell a gap (a missed event, a new
owner) from silence, and knows the owner is still talking to it.

What a subscription holds is bounded (``Limits.max_subscription_buffer_bytes``
and ``max_subscription_buffer_events``, the batch being written included): a
subscriber that falls further behind (it stopped reading, or its network is
slower than the writes) is dropped, never buffered for. Its stream ends (with
an error it can read, or cancelled when a write to it is stuck), and the
subscriber treats that as any broken stream: a gap in every partition of this
owner, then a new subscription. How many subscriptions this member serves, and
one peer may hold, is capped too (``max_subscriptions``,
``max_subscriptions_per_peer``); so are a departed member's subscriptions
ended (``drop_peer``).

This member's own listeners get the same events directly (``local`` sinks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Collection, Sequence

from peergrid.config import Limits
from peergrid.errors import ClusterError, LimitExceededError, PeerGridError
from peergrid.events.model import EventBatch

log = logging.getLogger("peergrid.events")

LocalSink = Callable[[EventBatch], None]

EVENT_OVERHEAD = 64
"""Bytes an event is counted for besides its key and values (its other columns, list slots)."""


class _Subscription:
    """One subscriber's view of one map on this owner."""

    def __init__(
        self, name: str, peer: str, values: bool, entries: bool, partition_count: int, limits: Limits
    ) -> None:
        self.name = name
        self.peer = peer  # whom it counts against (``max_subscriptions_per_peer``)
        self.values = values
        self.entries = entries
        self.seqs = [0] * partition_count
        self.batch = self._empty()
        self.ready = asyncio.Event()
        self.max_bytes = limits.subscription_buffer_bytes
        self.max_events = limits.max_subscription_buffer_events
        self.waiting = [0, 0]  # bytes and events in ``batch``
        self.in_flight = [0, 0]  # bytes and events of the batch being written to the subscriber
        self.dropped: PeerGridError | None = None  # why this subscription was dropped, once it is
        self.writing = False  # the stream is suspended in a write to the subscriber
        self.task: asyncio.Task[object] | None = None  # the task that writes to the subscriber

    def _empty(self) -> EventBatch:
        values = self.values
        return EventBatch(
            values=[] if values else None,
            old_values=[] if values else None,
            versions=[],
            ttls=[] if values else None,
        )

    def add(self, kind: int, p: int, key: bytes, value: bytes, old: bytes, version: int, ttl: float) -> bool:
        """Hold one event for the subscriber; False, holding nothing, when it would go over a limit."""
        size = len(key) + EVENT_OVERHEAD + (len(value) + len(old) if self.values else 0)
        waiting, in_flight = self.waiting, self.in_flight
        if waiting[0] + in_flight[0] + size > self.max_bytes or waiting[1] + in_flight[1] >= self.max_events:
            return False
        waiting[0] += size
        waiting[1] += 1
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
        return True

    def take(self) -> EventBatch | None:
        """The events waiting, as the next batch to write (counted until ``written``)."""
        if not self.batch.kinds:
            return None
        batch = self.batch
        self.batch = self._empty()
        self.in_flight, self.waiting = self.waiting, [0, 0]
        return batch

    def written(self) -> None:
        """The batch being written left this member."""
        self.in_flight = [0, 0]

    def drop(self, reason: PeerGridError) -> None:
        """Forget the events waiting: the stream ends, raising ``reason``.

        A stream suspended in a write to the subscriber (a peer that stopped
        reading: the write waits for it forever) is cancelled, which frees the
        batch being written too; any other wakes up and ends with the reason.
        """
        self.dropped = reason
        self.batch = self._empty()
        self.waiting = [0, 0]
        self.ready.set()
        if self.writing and self.task is not None:
            self.task.cancel()


class EventPublisher:
    """Routes owner-side changes to subscriptions and local sinks. Loop thread only."""

    def __init__(
        self,
        partition_count: int,
        owned: Callable[[], Sequence[int]],
        table_version: Callable[[], int],
        limits: Limits | None = None,
        leased: Callable[[], bool] = lambda: True,
        batch_interval: float = 0.0,
    ) -> None:
        self._count = partition_count
        self._batch_interval = batch_interval  # shortest time between two batches to one subscriber
        self._owned = owned
        self._table_version = table_version
        self._limits = limits or Limits()
        self._leased = leased  # heartbeats vouch for this member's entries only while it holds its lease
        self._subscriptions: dict[str, list[_Subscription]] = {}
        self._per_peer: Counter[str] = Counter()  # open subscriptions by peer
        self._local: dict[str, list[LocalSink]] = {}
        self._local_batches: dict[str, EventBatch] = {}
        self._flush_scheduled = False
        self.dropped = 0  # subscriptions dropped for falling behind, for statistics

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

    def subscriptions(self, peer: str | None = None) -> int:
        """How many subscriptions this member serves (of ``peer``, when given)."""
        if peer is not None:
            return self._per_peer[peer]
        return sum(self._per_peer.values())

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
        skip: Collection[str] = (),
    ) -> None:
        """Record one event of map ``name`` in partition ``p``, a change at partition ``version``
        (``ttl``: seconds the new value has left, 0 for none). ``skip``: members whose near
        caches learn of this change otherwise (their own write; the backup copy the write
        waits for): their subscriptions, unless they also carry listeners, do not get the
        event (nor a sequence number for it). See ``missed`` for when that other way fails."""
        behind = [
            subscription
            for subscription in self._subscriptions.get(name, ())
            if not (skip and subscription.peer in skip and not subscription.entries)
            and not subscription.add(kind, p, key, value, old, version, ttl)
        ]
        for subscription in behind:  # not while iterating: dropping one changes the list
            self._overflow(subscription)
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

    def missed(self, p: int, peer: str) -> None:
        """``peer`` may not hold a write of partition ``p`` that its near caches were told of
        through its backup copy rather than by an event (``publish``'s ``skip``): count one
        event more in its near-cache subscriptions of ``p``, unsent, so its next heartbeat (or
        event of ``p``) shows a gap, and its near caches drop what they hold of ``p``."""
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                if subscription.peer == peer and not subscription.entries:
                    subscription.seqs[p] += 1

    def _flush_local(self) -> None:
        self._flush_scheduled = False
        batches, self._local_batches = self._local_batches, {}
        for name, batch in batches.items():
            for sink in list(self._local.get(name, ())):
                sink(batch)

    def _overflow(self, subscription: _Subscription) -> None:
        limits = self._limits
        reason = LimitExceededError(
            f"the event subscription to map {subscription.name!r} fell behind by more than "
            f"limits.max_subscription_buffer_bytes={limits.subscription_buffer_bytes} or "
            f"max_subscription_buffer_events={limits.max_subscription_buffer_events}: "
            "its events were dropped; subscribe again (every partition of this member has a gap)"
        )
        log.warning(
            "dropped the event subscription of %s to map %r: it fell behind",
            subscription.peer,
            subscription.name,
        )
        self.dropped += 1
        self._forget(subscription)
        subscription.drop(reason)

    def drop_peer(self, peer: str) -> None:
        """End every subscription ``peer`` holds here (a member that left the cluster)."""
        for subscriptions in list(self._subscriptions.values()):
            for subscription in [s for s in subscriptions if s.peer == peer]:
                self._forget(subscription)
                subscription.drop(ClusterError(f"member {peer} is no longer a member of this cluster"))

    def heartbeat(self, subscription: _Subscription) -> EventBatch:
        """A heartbeat for ``subscription``: owned partitions and their last seqs."""
        owned = list(self._owned())
        return EventBatch(
            heartbeat=True,
            owned=owned,
            owned_seqs=[subscription.seqs[p] for p in owned],
            table_version=self._table_version(),
        )

    # ------------------------------------------------------------------ subscribing
    def subscribe(
        self, name: str, values: bool, entries: bool, heartbeat_interval: float, peer: str = ""
    ) -> AsyncGenerator[EventBatch, None]:
        """Batches of ``name``'s events for one subscriber, with heartbeats, until it goes away.

        ``peer`` is whom the subscription counts against. Raises ``LimitExceededError`` at once
        when this member serves ``max_subscriptions`` or ``peer`` holds
        ``max_subscriptions_per_peer`` already. The subscription is registered by the stream's
        first step (iterate at once: the caps are checked here) and released however the stream
        ends; the stream raises ``LimitExceededError`` when the subscriber falls behind (see the
        module's docstring), ``ClusterError`` when ``peer`` leaves the cluster.
        """
        self._admit(peer)
        return self._stream(
            _Subscription(name, peer, values, entries, self._count, self._limits), heartbeat_interval
        )

    def _admit(self, peer: str) -> None:
        limits = self._limits
        held = self._per_peer[peer]
        if held >= limits.max_subscriptions_per_peer:
            raise LimitExceededError(
                f"peer {peer} holds {held} event subscriptions on this member, "
                f"limits.max_subscriptions_per_peer={limits.max_subscriptions_per_peer}: "
                "remove near caches or entry listeners there, or raise the limit"
            )
        total = self.subscriptions()
        if total >= limits.max_subscriptions:
            raise LimitExceededError(
                f"this member serves {total} event subscriptions, limits.max_subscriptions="
                f"{limits.max_subscriptions}: remove near caches or entry listeners elsewhere, "
                "or raise the limit"
            )

    def _forget(self, subscription: _Subscription) -> None:
        subscriptions = self._subscriptions.get(subscription.name, [])
        if subscription not in subscriptions:
            return
        subscriptions.remove(subscription)
        if not subscriptions:
            self._subscriptions.pop(subscription.name, None)
        self._per_peer[subscription.peer] -= 1
        if self._per_peer[subscription.peer] <= 0:
            del self._per_peer[subscription.peer]

    async def _stream(
        self, subscription: _Subscription, heartbeat_interval: float
    ) -> AsyncGenerator[EventBatch, None]:
        loop = asyncio.get_running_loop()
        subscription.task = asyncio.current_task()
        self._subscriptions.setdefault(subscription.name, []).append(subscription)
        self._per_peer[subscription.peer] += 1
        try:
            # The first heartbeat vouches for our entries too. The lease is a deadline that
            # heartbeats renew, not an event: look again at the heartbeat interval.
            while not self._leased():  # noqa: ASYNC110
                await asyncio.sleep(heartbeat_interval)
            subscription.writing = True
            yield self.heartbeat(subscription)
            subscription.writing = False
            next_heartbeat = loop.time() + heartbeat_interval
            sent = -math.inf  # when the last batch of events was written
            while True:
                if not subscription.ready.is_set():
                    # A timer instead of wait_for: no task per wait, which adds up over many streams.
                    timer = loop.call_at(next_heartbeat, subscription.ready.set)
                    try:
                        await subscription.ready.wait()
                    finally:
                        timer.cancel()
                now = loop.time()
                hold = sent + self._batch_interval - now
                # Not when a heartbeat is due: it renews near caches' leases, and goes at once.
                waiting = subscription.batch.kinds and not subscription.dropped
                if waiting and hold > 0 and now < next_heartbeat:
                    await asyncio.sleep(hold)  # events that come meanwhile go in this batch
                subscription.ready.clear()
                if subscription.dropped is not None:
                    raise subscription.dropped
                # In a list, so that nothing here refers to the batch while it is written.
                taken = subscription.take()
                out = [taken] if taken is not None else []
                del taken
                heartbeat = None
                if loop.time() >= next_heartbeat:
                    # Taken together with the batch, before the yield: events published
                    # while the batch is being written go to the next batch, and a
                    # heartbeat counting them before they were sent would look like a gap.
                    # None without the owner lease: near caches must stop serving our entries.
                    heartbeat = self.heartbeat(subscription) if self._leased() else None
                    next_heartbeat = loop.time() + heartbeat_interval
                subscription.writing = True
                if out:
                    yield out.pop()
                    subscription.written()
                    sent = loop.time()
                if heartbeat is not None:
                    yield heartbeat
                subscription.writing = False
        finally:
            subscription.writing = False
            subscription.task = None
            self._forget(subscription)
