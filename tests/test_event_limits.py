"""Event subscriptions within bounds: buffers, caps, subscribers that fall behind or leave.

An owner holds a bounded amount for each subscriber; one that falls behind is
dropped and hears of it as a gap (listeners' ``on_gap``, near caches drop what
may be stale), then subscribes again. A member that leaves the cluster has its
subscriptions ended even if its connections stay open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

import grpc
import pytest

from peergrid import Limits, MapConfig, NearCacheConfig
from peergrid.errors import ClusterError, LimitExceededError
from peergrid.events.model import EventBatch, EventKind
from peergrid.events.publisher import EventPublisher
from peergrid.partition import partition_of
from peergrid.serialization import encode_key
from peergrid.testing import cluster
from tests.conftest import wait_for
from tests.rawgrpc import RawPeer
from tests.test_hostile import open_subscription, subscription
from tests.test_listeners import Recorder

SMALL = Limits(max_subscription_buffer_events=5, max_subscriptions=3, max_subscriptions_per_peer=2)


def publisher(limits: Limits = SMALL) -> EventPublisher:
    return EventPublisher(4, owned=lambda: [0, 1], table_version=lambda: 1, limits=limits)


def flood(events: EventPublisher, count: int) -> None:
    for i in range(count):
        events.publish("m", i % 2, EventKind.ADDED, b"k%d" % i)


# -- the publisher alone ---------------------------------------------------------------------------


def test_events_that_follow_a_batch_within_the_interval_go_together() -> None:
    """``Timing.event_batch_interval``: an event after a quiet spell goes at once; those that
    come while the interval since the last batch runs wait for it and go as one batch."""

    async def scenario() -> None:
        events = EventPublisher(4, owned=lambda: [0, 1], table_version=lambda: 1, batch_interval=2.0)
        stream = events.subscribe("m", values=False, entries=False, heartbeat_interval=60.0, peer="p")
        assert (await anext(stream)).heartbeat
        events.publish("m", 0, EventKind.ADDED, b"a")
        first = await asyncio.wait_for(anext(stream), 1.0)  # not held: far under the interval
        assert first.keys == [b"a"]
        events.publish("m", 1, EventKind.ADDED, b"b")
        pending = asyncio.ensure_future(anext(stream))
        for _ in range(10):  # loop passes: an unheld stream would have written b alone by now
            await asyncio.sleep(0)
        assert not pending.done()
        events.publish("m", 0, EventKind.UPDATED, b"c")
        batch = await asyncio.wait_for(pending, 10.0)
        assert batch.keys == [b"b", b"c"]
        assert batch.seqs == [1, 2]  # per partition: b is partition 1's first, c partition 0's second
        await stream.aclose()

    asyncio.run(scenario())


def test_a_subscriber_waiting_for_events_is_told_when_it_fell_behind() -> None:
    async def scenario() -> None:
        events = publisher()
        stream = events.subscribe("m", values=False, entries=False, heartbeat_interval=60.0, peer="p")
        assert (await anext(stream)).heartbeat
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)  # the stream now waits for events
        flood(events, 6)  # one more than it may hold
        with pytest.raises(LimitExceededError, match="max_subscription_buffer_events=5"):
            await pending
        assert events.subscriptions() == 0
        assert not events.interested("m")

    asyncio.run(scenario())


def test_a_subscriber_stuck_in_a_write_is_cancelled_and_holds_nothing() -> None:
    async def scenario() -> None:
        events = publisher()
        stream = events.subscribe("m", values=True, entries=False, heartbeat_interval=60.0, peer="p")
        never = asyncio.Event()

        async def stuck_writer() -> None:
            async for _ in stream:
                await never.wait()  # as grpc waits for a peer that stopped reading

        writer = asyncio.ensure_future(stuck_writer())
        await asyncio.sleep(0.01)
        flood(events, 6)
        with pytest.raises(asyncio.CancelledError):
            await writer
        await stream.aclose()
        assert events.subscriptions() == 0
        assert events.dropped == 1

    asyncio.run(scenario())


def test_dropping_one_subscriber_loses_no_event_of_the_next() -> None:
    async def scenario() -> None:
        events = publisher(Limits(max_subscription_buffer_bytes=1000))
        small = events.subscribe("m", values=True, entries=False, heartbeat_interval=60.0, peer="a")
        whole = events.subscribe("m", values=False, entries=False, heartbeat_interval=60.0, peer="b")
        await anext(small)
        await anext(whole)
        small_next, whole_next = asyncio.ensure_future(anext(small)), asyncio.ensure_future(anext(whole))
        await asyncio.sleep(0)  # both wait for events
        events.publish("m", 0, EventKind.ADDED, b"k", b"v" * 2000)  # too big for "a" only
        batch = await whole_next
        assert (batch.keys, batch.seqs) == ([b"k"], [1])
        with pytest.raises(LimitExceededError):
            await small_next

    asyncio.run(scenario())


def test_bytes_are_bounded_like_events() -> None:
    async def scenario() -> None:
        events = publisher(Limits(max_subscription_buffer_bytes=10_000))
        stream = events.subscribe("m", values=True, entries=False, heartbeat_interval=60.0, peer="p")
        await anext(stream)
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        events.publish("m", 0, EventKind.ADDED, b"k", b"v" * 6_000, b"", 1)
        events.publish("m", 0, EventKind.UPDATED, b"k", b"w" * 6_000, b"v" * 6_000, 2)
        with pytest.raises(LimitExceededError, match="max_subscription_buffer_bytes=10000"):
            await pending

    asyncio.run(scenario())


def test_subscriptions_are_capped_per_member_and_per_peer() -> None:
    async def read(stream: AsyncGenerator[EventBatch, None]) -> None:
        async for _ in stream:
            pass

    async def scenario() -> None:
        events = publisher()
        readers = [asyncio.ensure_future(read(events.subscribe("m", False, False, 60.0, p))) for p in "aab"]
        await asyncio.sleep(0.01)  # registered by their first step
        with pytest.raises(LimitExceededError, match="max_subscriptions_per_peer=2"):
            events.subscribe("m", False, False, 60.0, "a")
        with pytest.raises(LimitExceededError, match="max_subscriptions=3"):
            events.subscribe("m", False, False, 60.0, "c")
        readers[0].cancel()
        await asyncio.sleep(0.01)
        assert events.subscriptions("a") == 1
        events.drop_peer("b")
        with pytest.raises(ClusterError, match="no longer a member"):
            await readers[2]
        assert events.subscriptions() == 1
        readers[1].cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        assert events.subscriptions() == 0

    asyncio.run(scenario())


# -- in a cluster ----------------------------------------------------------------------------------


def test_a_listener_that_falls_behind_hears_of_the_gap_and_keeps_listening(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="peergrid.events")
    with cluster(2, limits=Limits(max_subscription_buffer_events=5)) as grids:
        seen = Recorder()
        grids[0].get_map("ev").add_entry_listener(**seen.callbacks(), on_gap=seen.gap)
        remote = [k for k in (f"k{i}" for i in range(400)) if grids[0].owner_of(k).uuid == grids[1].uuid]
        grids[1].get_map("ev").put_all(dict.fromkeys(remote[:50], 1))  # 50 events at once
        wait_for(lambda: seen.gaps, 10, message="the gap reported")
        assert grids[1]._node.publisher.dropped >= 1
        assert any("fell behind" in r.getMessage() for r in caplog.records)
        # Subscribed again: later events of the same owner arrive.
        later = remote[60]

        def delivered() -> bool:
            grids[1].get_map("ev").set(later, "x")
            return later in {e.key for e in list(seen.events)}

        wait_for(delivered, 10, interval=0.2, message="events after the gap delivered")


def test_a_near_cache_whose_owner_dropped_it_serves_nothing_stale() -> None:
    near = {"near": MapConfig(near_cache=NearCacheConfig(max_staleness=2.0))}
    with cluster(3, maps=near, limits=Limits(max_subscription_buffer_events=5)) as grids:
        reader, writer = grids[0].get_map("near"), grids[1].get_map("near")
        # Not backed up by the reader: a backup's near cache is told of writes by its copy.
        table, count = grids[0]._node.manager.table, grids[0]._node.config.partition_count
        owned = (grids[1].uuid, grids[2].uuid)
        names = (f"k{i}" for i in range(1000))
        keys = [k for k in names if table.replicas[partition_of(encode_key(k), count)] == owned][:50]
        assert len(keys) == 50
        writer.put_all(dict.fromkeys(keys, "old"))
        assert reader.get_all(keys) == dict.fromkeys(keys, "old")  # now cached on the reader
        writer.put_all(dict.fromkeys(keys, "new"))  # more events than the owner holds for it
        assert grids[1]._node.publisher.dropped >= 1
        wait_for(
            lambda: reader.get_all(keys) == dict.fromkeys(keys, "new"),
            10,
            message="the reader sees the new values",
        )


def test_the_subscriptions_of_a_member_that_left_are_ended() -> None:
    with cluster(3) as grids:
        leaver = grids[2].uuid
        request_fields = {"map": "m", "heartbeat_interval": 1.0, "subscriber": leaver}
        with RawPeer(grids[0].address) as peer:
            # A subscription in the leaving member's name whose connection outlives it.
            call = open_subscription(peer, subscription(grids, **request_fields))
            assert grids[0]._node.publisher.subscriptions(leaver) == 1
            grids[2].shutdown()
            with pytest.raises(grpc.RpcError) as ended:
                for _ in call:
                    pass
        assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no longer a member" in str(ended.value.details())
        assert grids[0]._node.publisher.subscriptions() == 0
