"""Near cache: hits without RPC, invalidation, read-your-writes, gaps, bounded staleness."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import threading
import time

import pytest

import peergrid
from peergrid import MapConfig, NearCacheConfig
from peergrid.errors import PeerGridError
from peergrid.events.model import EventBatch, EventKind
from peergrid.events.nearcache import MISS, NearCache
from peergrid.events.publisher import EventPublisher
from peergrid.events.subscriptions import Subscriptions, _StreamState
from peergrid.partition import partition_of
from peergrid.protocol import Member, MemberList, Status
from peergrid.serialization import encode_key
from peergrid.testing import cluster
from tests.conftest import wait_for

NEAR = {"near": MapConfig(near_cache=NearCacheConfig(max_entries=1000, max_staleness=1.0))}


def remote_keys(grid: peergrid.Grid, count: int) -> list[str]:
    keys, i = [], 0
    while len(keys) < count:
        if grid.owner_of(f"k{i}").uuid != grid.uuid:
            keys.append(f"k{i}")
        i += 1
    return keys


def frames(grid: peergrid.Grid) -> int:
    return sum(pipe.frames_sent for pipe in grid._node.pipes.open_calls().values())


def test_hits_cost_no_rpc_and_count(api) -> None:
    with cluster(2, maps=NEAR) as grids:
        reader = grids[1]
        m = api.map(reader, "near")
        keys = remote_keys(reader, 20)
        api.map(grids[0], "near").put_all({k: {"v": k} for k in keys})
        wait_for(
            lambda: len(reader._node.maps.near_caches["near"].leases) == 1, 5, message="lease from the owner"
        )
        for k in keys:
            assert m.get(k) == {"v": k}  # misses: fetched and kept
        before = frames(reader)
        for _ in range(5):
            for k in keys:
                assert m.get(k) == {"v": k}
        assert frames(reader) == before
        stats = m.local_stats()
        assert stats.near_cache_hits == 100
        assert stats.near_cache_misses >= 20
        assert stats.near_cache_entries == 20


def test_a_write_elsewhere_invalidates(api) -> None:
    with cluster(3, maps=NEAR) as grids:
        reader, writer = grids[1], grids[2]
        key = remote_keys(reader, 1)[0]
        api.map(writer, "near").put(key, "old")
        wait_for(
            lambda: api.map(reader, "near").get(key) == "old" and len(reader._node.maps.near_caches["near"]),
            5,
        )
        api.map(writer, "near").put(key, "new")
        wait_for(
            lambda: api.map(reader, "near").get(key) == "new", 2, message="invalidated within max_staleness"
        )
        api.map(writer, "near").delete(key)
        wait_for(lambda: api.map(reader, "near").get(key) is None, 2, message="delete invalidated")


def test_writes_through_the_same_member_are_read_back_at_once(api) -> None:
    with cluster(2, maps=NEAR) as grids:
        m = api.map(grids[1], "near")
        keys = remote_keys(grids[1], 50)
        m.put_all(dict.fromkeys(keys, 0))
        for i in range(1, 6):
            for k in keys:
                m.get(k)  # cache it
                m.set(k, i)
                assert m.get(k) == i  # read-your-writes, never the cached old value
        m.clear()
        assert all(m.get(k) is None for k in keys)


def test_a_dead_owner_stops_its_entries_being_served(api) -> None:
    with cluster(3, maps=NEAR) as grids:
        reader, owner = grids[0], grids[1]
        keys = [k for k in remote_keys(reader, 200) if reader.owner_of(k).uuid == owner.uuid][:10]
        api.map(reader, "near").put_all(dict.fromkeys(keys, "v1"))
        near = reader._node.maps.near_caches["near"]
        wait_for(lambda: owner.uuid in near.leases, 5, message="a lease from the owner")
        wait_for(
            lambda: all(api.map(reader, "near").get(k) == "v1" for k in keys) and len(near) >= len(keys), 5
        )
        grids.kill(owner)
        # The stream from the dead owner broke: its partitions' entries are dropped (a gap).
        wait_for(
            lambda: len(reader._node.maps.near_caches["near"]) == 0,
            5,
            message="entries of the dead owner dropped",
        )
        assert grids.wait_until_safe(30)
        api.map(grids[2], "near").put_all(dict.fromkeys(keys, "v2"))
        assert all(api.map(reader, "near").get(k) == "v2" for k in keys)


@pytest.mark.parametrize("fault", ["kill", "missed copies"])
def test_staleness_stays_within_the_bound_under_writers_and_a_kill(api, fault: str) -> None:
    """A write acknowledged on A is never followed, after the bound, by an old value on B: when
    a member dies, and when B's backup copy refuses some of the writes its near cache was to
    learn from it (B's near cache is sent no event of them: it must hear of the gap)."""
    staleness = 0.5
    config = {"near": MapConfig(near_cache=NearCacheConfig(max_entries=10_000, max_staleness=staleness))}
    with cluster(4, maps=config) as grids:
        writer_grid, reader_grid, victim = grids[0], grids[1], grids[3]
        keys = [f"s{i}" for i in range(40)]
        acked: dict[str, tuple[int, float]] = {}  # key -> (latest acknowledged value, when)
        lock = threading.Lock()
        stop = threading.Event()
        violations: list[tuple[str, int, int, float]] = []
        worst = [0.0]

        quiet = threading.Event()  # the writer stops; readers go on

        def write() -> None:
            m = api.map(writer_grid, "near")
            i = 0
            while not stop.is_set() and not quiet.is_set():
                key = keys[i % len(keys)]
                try:
                    m.set(key, i)
                except peergrid.PeerGridError:
                    i += 1
                    continue
                with lock:
                    acked[key] = (i, time.monotonic())
                i += 1

        def read() -> None:
            m = api.map(reader_grid, "near")
            while not stop.is_set():
                for key in keys:
                    with lock:
                        latest = acked.get(key)
                    try:
                        seen = m.get(key)
                    except peergrid.PeerGridError:
                        continue
                    if latest is None or seen is None:
                        continue
                    value, at = latest
                    if seen < value:  # an older value than one acknowledged before this read began
                        late = time.monotonic() - at
                        worst[0] = max(worst[0], late)
                        if late > staleness + 0.25:
                            violations.append((key, seen, value, late))

        threads = [
            threading.Thread(target=write),
            threading.Thread(target=read),
            threading.Thread(target=read),
        ]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(acked) == len(keys), 10)
            time.sleep(1.0)  # let the near cache fill and churn (pacing, not a check)
            if fault == "kill":
                grids.kill(victim)
                assert grids.wait_until_safe(30)
            else:
                manager = reader_grid._node.manager
                apply_backup, calls, refused = manager.apply_backup, itertools.count(), []

                def refuse_some(*args: object, **kwargs: object) -> int:
                    if next(calls) % 5 == 0:
                        refused.append(args)
                        return Status.GAP  # its owner repairs the copy with a whole partition
                    return apply_backup(*args, **kwargs)  # type: ignore[arg-type]

                manager.apply_backup = refuse_some  # type: ignore[method-assign]
                # (The write whose copy was refused waits for its partition's whole copy to be
                # sent again: one writer thread, so twenty refusals are twenty repairs in a row,
                # and on a slow machine they take more than ten seconds.)
                wait_for(lambda: len(refused) > 20, 60, message="backups refused")
                # Some keys' last writes are among those refused: their next write would
                # correct the reader's entry, so none comes.
                quiet.set()
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        stats = api.map(reader_grid, "near").local_stats()
        print(
            f"worst staleness seen: {worst[0] * 1000:.0f} ms (bound {staleness * 1000:.0f} ms); "
            f"near-cache hits {stats.near_cache_hits}, misses {stats.near_cache_misses}"
        )
        assert not violations, violations[:5]
        assert stats.near_cache_hits > 0


def test_a_heartbeat_never_counts_events_not_yet_sent() -> None:
    """Events published while a batch is being written go out after it; the heartbeat
    taken with that batch must not count them (a subscriber would see a false gap and
    drop the owner's entries)."""

    async def scenario() -> None:
        publisher = EventPublisher(4, owned=lambda: [0, 1], table_version=lambda: 1)
        stream = publisher.subscribe("m", values=False, entries=False, heartbeat_interval=0.0)
        first = await anext(stream)
        assert first.heartbeat
        sent: dict[int, int] = {}
        publisher.publish("m", 0, EventKind.ADDED, b"k1")
        for step in range(6):
            message = await anext(stream)
            if message.heartbeat:
                for p, seq in zip(message.owned, message.owned_seqs, strict=True):
                    assert seq == sent.get(p, 0), f"heartbeat counts unsent events of partition {p}"
            else:
                sent.update(zip(message.partitions, message.seqs, strict=True))
            # Another write lands while this message is on its way out.
            publisher.publish("m", step % 2, EventKind.UPDATED, b"k%d" % step)
        await stream.aclose()
        assert sent, "no event was sent"

    asyncio.run(scenario())


def test_an_owner_without_its_lease_vouches_for_nothing() -> None:
    """An owner that lost its owner lease (paused, cut off, without quorum) sends no heartbeat,
    so near caches elsewhere stop serving its entries after max_staleness: the events it may
    still send (or a stream that stays open) renew nothing."""

    async def scenario() -> None:
        leased = [False]
        publisher = EventPublisher(4, owned=lambda: [0], table_version=lambda: 1, leased=lambda: leased[0])
        stream = publisher.subscribe("m", values=False, entries=False, heartbeat_interval=0.01)
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.1)
        assert not first.done(), "a heartbeat without the lease"
        leased[0] = True
        assert (await asyncio.wait_for(first, 5)).heartbeat
        leased[0] = False
        publisher.publish("m", 0, EventKind.ADDED, b"k1")
        assert not (await asyncio.wait_for(anext(stream), 5)).heartbeat  # the event still goes out
        later = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.1)
        assert not later.done(), "a heartbeat without the lease"
        later.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await later
        await stream.aclose()

    asyncio.run(scenario())


def test_only_heartbeats_renew_an_owners_near_cache_lease() -> None:
    renewed: list[str] = []

    class Receiver:
        def on_alive(self, owner: str, now: float) -> None:
            renewed.append(owner)

        def on_events(self, owner: str, batch: EventBatch) -> None:
            pass

        def on_gap(self, owner: str, partitions: object) -> None:
            pass

    subscriptions = Subscriptions("me", lambda uuid: None, lambda coro: None, 1.0)  # type: ignore[arg-type,return-value]
    subscriptions.add("m", Receiver(), values=False, entries=False, heartbeat=1.0)
    state = _StreamState()
    events = EventBatch(kinds=[EventKind.ADDED], partitions=[0], seqs=[1], keys=[b"k"])
    subscriptions._deliver("owner", "m", state, events)
    assert renewed == []
    subscriptions._deliver("owner", "m", state, EventBatch(heartbeat=True, owned=[0], owned_seqs=[1]))
    assert renewed == ["owner"]


def standalone_near_cache() -> NearCache:
    near = NearCache("m", NearCacheConfig(max_entries=10), owner_of=lambda p: "owner", loads=bytes)
    near.on_alive("owner", time.monotonic())
    return near


def test_concurrent_misses_of_a_key_share_one_fetch_until_it_changes() -> None:
    near = standalone_near_cache()
    first = near.begin(b"k")
    waiter = near.shared(b"k")
    assert waiter is first
    near.end(b"k", 0, "v1", True, first)
    assert waiter.wait(1.0)
    assert (waiter.found, waiter.value) == (True, "v1")
    assert near.lookup(b"k") == "v1"
    near.invalidate(b"k")  # this member writes the key: before ...
    flight = near.begin(b"k")
    near.invalidate(b"k")  # ... and after the write; a reader from now on must not share
    assert near.shared(b"k") is None
    near.end(b"k", 0, "old", True, flight)
    assert near.lookup(b"k") is MISS


def test_a_failed_fetch_sends_its_waiters_to_fetch_for_themselves() -> None:
    near = standalone_near_cache()
    flight = near.begin(b"k")
    waiter = near.shared(b"k")
    assert waiter is not None
    near.end(b"k", 0, None, False, flight, ok=False)
    assert not waiter.wait(1.0)
    assert near.lookup(b"k") is MISS
    assert near.shared(b"k") is None


def test_on_a_hot_key_a_fetch_begun_after_the_last_change_is_kept() -> None:
    """Fetches of a hot key overlap without end; one that saw every change is kept, one
    that began before a change is not, whichever ends first."""
    near = standalone_near_cache()
    old = near.begin(b"k")
    near.invalidate(b"k")
    new = near.begin(b"k")  # after the change, while the old fetch is still in flight
    assert near.shared(b"k") is new
    near.end(b"k", 0, "new", True, new)
    assert near.lookup(b"k") == "new"
    near.end(b"k", 0, "old", True, old)  # answered before the change: not kept
    assert near.lookup(b"k") == "new"


def test_asyncio_readers_share_a_fetch_that_ends_on_another_thread() -> None:
    near = standalone_near_cache()
    flight = near.begin(b"k")
    waiter = near.shared(b"k")
    assert waiter is flight

    async def scenario() -> None:
        ending = threading.Timer(0.05, near.end, args=(b"k", 0, "v", True, flight))
        ending.start()
        try:
            assert await waiter.wait_async(5.0)
        finally:
            ending.join()
        assert (waiter.found, waiter.value) == (True, "v")
        assert await waiter.wait_async(5.0)  # landed already: at once
        stuck = near.begin(b"other")
        assert not await stuck.wait_async(0.05)  # never lands: the reader's deadline ends the wait
        near.end(b"other", 0, None, False, stuck, ok=False)

    asyncio.run(scenario())


def event(kind: int, key: bytes, value: bytes, version: int) -> EventBatch:
    return EventBatch(
        kinds=[kind],
        partitions=[0],
        seqs=[1],
        keys=[key],
        values=[value],
        old_values=[b""],
        versions=[version],
    )


def test_an_own_write_refills_unless_a_newer_change_was_seen() -> None:
    near = standalone_near_cache()
    near.write_begins(b"k")
    near.on_events("owner", event(EventKind.ADDED, b"k", b"mine", 5))  # our own write's event, early
    near.write_ends(b"k", 0, b"mine", 5)
    assert near.lookup(b"k") == b"mine"
    near.write_begins(b"k")
    assert near.lookup(b"k") == b"mine"  # served while the write runs: a read may come first
    near.on_events("owner", event(EventKind.UPDATED, b"k", b"theirs", 8))  # a later write elsewhere
    assert near.lookup(b"k") == b"theirs"
    near.write_ends(b"k", 0, b"mine again", 7)
    assert near.lookup(b"k") == b"theirs"  # the newer change is what it holds
    near.write_begins(b"k")
    near.write_ends(b"k", 0, None, 0)  # failed or unknown outcome: nothing held
    assert near.lookup(b"k") is MISS
    near.write_begins(b"k")
    near.on_events("owner", event(EventKind.UPDATED, b"k", b"theirs", 9))  # not held: nobody fetches
    near.write_ends(b"k", 0, b"mine", 8)
    assert near.lookup(b"k") is MISS  # the newer change is not held, and ours is older


def test_a_change_of_a_key_being_fetched_is_held_and_the_fetch_is_not() -> None:
    """On a hot key, fetches race its writes without end: the change an event brings is held
    at once (newer than the fetch's answer, which is not kept), so readers after it hit. A key
    no one fetches is not filled by events, nor by another owner's."""
    near = standalone_near_cache()
    fetch = near.begin(b"k")
    near.on_events("owner", event(EventKind.UPDATED, b"k", b"v6", 6))
    assert near.lookup(b"k") == b"v6"
    near.end(b"k", 0, b"v5", True, fetch, version=5)  # read before the change
    assert near.lookup(b"k") == b"v6"
    near.on_events("owner", event(EventKind.UPDATED, b"other", b"v7", 7))  # no reader
    assert near.lookup(b"other") is MISS
    fetch = near.begin(b"j")
    near.on_events("old owner", event(EventKind.UPDATED, b"j", b"v8", 8))
    near.end(b"j", 0, b"v8", True, fetch, version=8)  # the answer raced that event: not kept
    assert near.lookup(b"j") is MISS
    fetch = near.begin(b"j")
    near.on_events("owner", event(EventKind.REMOVED, b"j", b"", 9))
    near.end(b"j", 0, b"v8", True, fetch, version=8)
    assert near.lookup(b"j") is MISS


def test_changes_older_than_the_value_held_are_ignored() -> None:
    near = standalone_near_cache()
    near.write_begins(b"k")
    near.write_ends(b"k", 0, b"v5", 5)
    near.on_events("owner", event(EventKind.UPDATED, b"k", b"v4", 4))  # late: before our write
    near.on_events("owner", event(EventKind.REMOVED, b"k", b"", 3))
    assert near.lookup(b"k") == b"v5"
    fetch = near.begin(b"k")
    near.end(b"k", 0, b"v2", True, fetch, version=2)  # an answer read before our write
    assert near.lookup(b"k") == b"v5"
    near.on_events("owner", event(EventKind.UPDATED, b"k", b"v6", 6))
    assert near.lookup(b"k") == b"v6"
    near.on_events("owner", event(EventKind.REMOVED, b"k", b"", 7))
    assert near.lookup(b"k") is MISS


def test_a_set_through_a_member_is_read_back_from_its_near_cache_without_a_fetch(api) -> None:
    with cluster(2, maps=NEAR) as grids:
        writer = grids[1]
        m = api.map(writer, "near")
        keys = remote_keys(writer, 10)
        wait_for(
            lambda: len(writer._node.maps.near_caches["near"].leases) == 1, 5, message="lease from the owner"
        )
        for k in keys:
            m.set(k, {"v": k})
        before = frames(writer)
        for k in keys:
            assert m.get(k) == {"v": k}
        assert frames(writer) == before
        m.delete(keys[0])
        assert m.get(keys[0]) is None  # a delete is not refilled: fetched, found absent
        api.map(grids[0], "near").set(keys[1], "elsewhere")
        wait_for(
            lambda: m.get(keys[1]) == "elsewhere", 2, message="the owner's event updates the refilled entry"
        )


def _spy_on_events(grids: list[peergrid.Grid], owner: peergrid.Grid) -> dict[str, list[tuple[bytes, int]]]:
    """Every change each grid's near cache of "near" is told of, as (key, seq): seq 0 when its
    backup copy told it (``on_copy_changed``), the event's sequence number when an event did."""
    seen: dict[str, list[tuple[bytes, int]]] = {}
    for grid in grids:
        near = grid._node.maps.near_caches["near"]
        wait_for(lambda near=near: owner.uuid in near.leases, 5, message="lease from the owner")
        original = near.on_events
        changes = seen[grid.uuid] = []

        def spy(source: str, batch: EventBatch, changes=changes, original=original) -> None:
            changes.extend(zip(batch.keys, batch.seqs, strict=True))
            original(source, batch)

        near.on_events = spy  # type: ignore[method-assign]
    return seen


def _placed(grid: peergrid.Grid, owner: peergrid.Grid, backup: peergrid.Grid, prefix: str = "k") -> str:
    """A key that ``owner`` owns and ``backup`` backs up, in ``grid``'s table."""
    node = grid._node
    table, count = node.manager.table, node.config.partition_count
    for i in range(10_000):
        replicas = table.replicas[partition_of(encode_key(f"{prefix}{i}"), count)]
        if replicas[:2] == (owner.uuid, backup.uuid):
            return f"{prefix}{i}"
    raise AssertionError("no such key")


def test_an_own_set_is_not_sent_back_to_the_writers_near_cache_but_its_listeners_hear_it() -> None:
    """The owner sends a single-key write (a ``set``, ``put``, ``delete``...) to every near cache
    but its sender's, whose own write path refills or drops the entry: one event message less a
    write. Listeners hear every change."""
    with cluster(3, maps=NEAR) as grids:
        owner, writer, other = grids
        key = next(f"k{i}" for i in range(10_000) if owner.owner_of(f"k{i}").uuid == owner.uuid)
        marker = _placed(owner, owner, other, "m")  # so the writer hears of it by an event
        encoded, marked = b"s" + key.encode(), b"s" + marker.encode()
        seen = _spy_on_events([writer, other], owner)
        m = writer.get_map("near")
        for i in range(5):
            m.set(key, i)
        m.put(key, "last")
        other.get_map("near").set(marker, "from the other member")
        # One owner's events reach a subscriber in order: once the writer has the other member's
        # event, its own writes' events would have come before it.
        wait_for(lambda: any(k == marked and seq for k, seq in seen[writer.uuid]), 5, message="an event")
        wait_for(
            lambda: [k for k, _ in seen[other.uuid]].count(encoded) == 6,
            5,
            message="the third member hears every write (by event, or from its backup copy)",
        )
        assert not [seq for k, seq in seen[writer.uuid] if k == encoded and seq], "an event of its own write"
        before = frames(writer)
        assert m.get(key) == "last"  # refilled by its own write: no fetch
        assert frames(writer) == before
        assert other.get_map("near").get(key) == "last"
        # Any single-key write, not only a set or put: the writer drops the key meanwhile.
        assert m.delete(key)
        other.get_map("near").set(marker, "again")
        wait_for(lambda: [k for k, seq in seen[writer.uuid] if seq].count(marked) == 2, 5, message="an event")
        wait_for(lambda: [k for k, _ in seen[other.uuid]].count(encoded) == 7, 5, message="the delete")
        assert not [seq for k, seq in seen[writer.uuid] if k == encoded and seq], "an event of its own delete"
        assert m.get(key) is None
        assert other.get_map("near").get(key) is None

        heard: list[object] = []
        m.add_entry_listener(on_added=lambda event: heard.append(event.value))  # deleted above
        publisher = owner._node.publisher
        wait_for(lambda: publisher.wants_entries("near"), 5, message="the listener's subscription")
        m.set(key, "heard")
        wait_for(lambda: "heard" in heard, 5, message="the writer's listener hears its own set")


def test_a_backups_near_cache_takes_a_write_from_its_copy_and_hears_of_one_it_missed() -> None:
    """A sync backup's near caches take a write from the copy it applies (no event is sent to
    it); a write its copy did not take (refused, lost on the way) is reported as a gap, so the
    near cache drops the partition's entries rather than serve the old value."""
    with cluster(3, maps=NEAR) as grids:
        owner, backup, writer = grids
        key = _placed(owner, owner, backup)
        encoded = b"s" + key.encode()
        writer.get_map("near").set(key, "v0")
        near = backup._node.maps.near_caches["near"]
        seen = _spy_on_events([backup], owner)
        m = backup.get_map("near")
        assert m.get(key) == "v0"  # fetched, and kept
        assert near.lookup(encoded) == "v0"
        writer.get_map("near").set(key, "v1")
        assert near.lookup(encoded) == "v1"  # in place before the write was acknowledged
        assert seen[backup.uuid] == [(encoded, 0)]  # from the copy, not an event

        refused = []
        manager = backup._node.manager
        apply_backup = manager.apply_backup

        def refuse_once(*args: object, **kwargs: object) -> int:
            if not refused:
                refused.append(args)
                return Status.GAP  # the owner repairs the copy with a whole partition
            return apply_backup(*args, **kwargs)  # type: ignore[arg-type]

        manager.apply_backup = refuse_once  # type: ignore[method-assign]
        writer.get_map("near").set(key, "v2")
        assert refused
        assert owner.wait_until_safe(10)
        # Not in place: the next heartbeat (max_staleness / 3) reports the gap, and the entry
        # is dropped; the next read fetches the value.
        wait_for(lambda: near.lookup(encoded) is MISS, 2, message="the missed write reported as a gap")
        assert m.get(key) == "v2"


def test_get_all_serves_near_cached_keys_without_a_fetch(api) -> None:
    with cluster(2, maps=NEAR) as grids:
        reader = grids[1]
        m = api.map(reader, "near")
        keys = remote_keys(reader, 20)
        api.map(grids[0], "near").put_all({k: k.upper() for k in keys})
        wait_for(
            lambda: len(reader._node.maps.near_caches["near"].leases) == 1, 5, message="lease from the owner"
        )
        assert m.get_all(keys) == {k: k.upper() for k in keys}  # fetched, and kept
        before = frames(reader)
        hits = m.local_stats().near_cache_hits
        assert m.get_all(keys) == {k: k.upper() for k in keys}
        assert m.local_stats().near_cache_hits - hits == len(keys)
        assert frames(reader) == before
        api.map(grids[0], "near").set(keys[0], "changed")
        wait_for(lambda: m.get_all(keys[:1]) == {keys[0]: "changed"}, 2, message="the change reaches get_all")


def test_a_value_fetched_during_an_own_write_is_not_served_after_it_even_unrefilled() -> None:
    near = standalone_near_cache()
    near.write_begins(b"k")
    fetch = near.begin(b"k")  # began after the write did: nothing marks it stale
    near.end(b"k", 0, b"before", True, fetch, version=3)  # read before the write was applied
    near.leases.clear()  # the owner's lease lapses: the write's value cannot be held
    near.write_ends(b"k", 0, b"written", 5)
    near.on_alive("owner", time.monotonic())
    assert near.lookup(b"k") is MISS


def test_a_clear_or_a_gap_during_an_own_write_stops_its_refill() -> None:
    """A clear sends no event per key, and a gap may hide a change of the key: either may be
    newer than this member's write, so its acknowledgement must not refill the key."""
    near = standalone_near_cache()
    near.write_begins(b"k")
    near.on_events("owner", event(EventKind.ADDED, b"k", b"mine", 5))
    cleared = EventBatch(
        kinds=[EventKind.CLEARED], partitions=[0], seqs=[2], keys=[b""], values=[b""], old_values=[b""]
    )
    cleared.versions = [6]
    near.on_events("owner", cleared)  # another member's clear() of the map, applied after our set
    near.on_alive("owner", time.monotonic())
    near.write_ends(b"k", 0, b"mine", 5)
    assert near.lookup(b"k") is MISS
    near.write_begins(b"k")
    near.on_gap("owner", [0])
    near.on_alive("owner", time.monotonic())
    near.write_ends(b"k", 0, b"mine", 7)
    assert near.lookup(b"k") is MISS


def test_a_reader_never_shares_a_fetch_that_ends_stale_while_it_looks() -> None:
    """shared() reads the flight and the key's last change under the lock: a fetch that ends
    in between (and takes the key's change record with it) is not handed to a reader that
    began after this member's write."""
    near = standalone_near_cache()
    fetch = near.begin(b"k")  # reads the owner before the delete below
    near.write_begins(b"k")
    near.write_ends(b"k", 0, None, 0)  # this member deleted k
    ended = []

    class EndsOnLookup(dict[bytes, object]):
        def get(self, key: bytes, default: object = None) -> object:
            found = super().get(key, default)
            if not ended:  # the fetching thread runs end() right after this read
                ended.append(True)
                near._flights = dict(self)  # type: ignore[assignment]
                threading.Thread(target=near.end, args=(b"k", 0, b"OLD", True, fetch, True, 3)).start()
                time.sleep(0.05)  # the other thread blocks on the lock if shared() holds it
            return found

    near._flights = EndsOnLookup(near._flights)  # type: ignore[assignment]
    assert near.shared(b"k") is None
    assert fetch.wait(5.0)  # it did end, and was not kept
    assert near.lookup(b"k") is MISS


def test_an_undecodable_value_in_get_all_still_lands_every_fetch(api) -> None:
    """One value this member cannot decode fails get_all, but every fetch of the batch ends:
    readers waiting on a healthy key's fetch get its answer, and nothing stays in flight."""
    with cluster(2, maps=NEAR) as grids:
        reader = grids[1]
        m = api.map(reader, "near")
        good, bad = remote_keys(reader, 2)
        wait_for(
            lambda: len(reader._node.maps.near_caches["near"].leases) == 1, 5, message="lease from the owner"
        )
        api.map(grids[0], "near").put_all({good: "fine", bad: "garbled"})
        near = reader._node.maps.near_caches["near"]
        core = m._core
        loads = core.loads

        def picky(data: bytes) -> object:
            value = loads(data)
            if value == "garbled":
                raise peergrid.SerializationError("cannot decode this value")
            return value

        core.loads = picky  # type: ignore[method-assign]
        try:
            with __import__("pytest").raises(peergrid.SerializationError):
                m.get_all([bad, good])
        finally:
            core.loads = loads  # type: ignore[method-assign]
        assert not near._inflight
        assert not near._flights
        assert m.get(good) == "fine"


def test_a_broken_stream_drops_entries_of_partitions_its_owner_gained_since_its_heartbeat() -> None:
    """Owner A's last heartbeat listed partition 0; A then gained partition 1 and this member
    cached a key of it. A's stream breaks (A's change of the key is lost with it) and the
    next stream counts afresh: the entry must go with the break, not be served on."""

    async def scenario() -> None:
        table = {0: "A", 1: "B"}  # partition -> owner, as this member sees it
        near = NearCache("m", NearCacheConfig(max_entries=10), owner_of=table.get, loads=bytes)
        broken = asyncio.Event()
        streams = []

        class Source:
            def subscribe(self, name: str, values: bool, entries: bool, interval: float) -> object:
                streams.append(name)
                first = len(streams) == 1

                async def stream():  # type: ignore[no-untyped-def]
                    if first:
                        yield EventBatch(heartbeat=True, owned=[0], owned_seqs=[0])
                        await broken.wait()
                        raise PeerGridError("the stream broke")
                    yield EventBatch(heartbeat=True, owned=[0, 1], owned_seqs=[0, 0])
                    await asyncio.sleep(3600)

                return stream()

        def owned_by(owner: str) -> list[int]:
            return [p for p, o in table.items() if o == owner]

        loop = asyncio.get_running_loop()
        subs = Subscriptions("C", lambda owner: Source(), loop.create_task, 0.01, owned_by=owned_by)
        subs.add("m", near, values=True, entries=False, heartbeat=1.0)
        subs.on_members(MemberList(1, "A", (Member("A", "a:1"), Member("C", "c:1"))))
        try:
            await wait_async(lambda: "A" in near.leases)
            table[1] = "A"  # this member adopts a table where A owns partition 1 too
            near.on_table()
            fetch = near.begin(b"k1")
            near.end(b"k1", 1, b"old", True, fetch, version=5)
            assert near.lookup(b"k1") == b"old"
            broken.set()
            await wait_async(lambda: len(streams) == 2 and "A" in near.leases)
            assert near.lookup(b"k1") is MISS
        finally:
            await subs.stop()

    asyncio.run(scenario())


def test_a_broken_stream_whose_heartbeats_listed_no_partition_still_leaves_a_gap() -> None:
    """Owner A's stream was up before A owned anything (a member that just joined): its
    heartbeat listed no partition, yet renewed A's lease. A gains partition 0, this member
    caches a key of it; the stream breaks before its next heartbeat. The entry must go."""

    async def scenario() -> None:
        table: dict[int, str] = {0: "B"}
        near = NearCache("m", NearCacheConfig(max_entries=10), owner_of=table.get, loads=bytes)
        broken = asyncio.Event()
        streams = []

        class Source:
            def subscribe(self, name: str, values: bool, entries: bool, interval: float) -> object:
                streams.append(name)
                first = len(streams) == 1

                async def stream():  # type: ignore[no-untyped-def]
                    if first:
                        yield EventBatch(heartbeat=True, owned=[], owned_seqs=[])
                        await broken.wait()
                        raise PeerGridError("the stream broke")
                    yield EventBatch(heartbeat=True, owned=[0], owned_seqs=[0])
                    await asyncio.sleep(3600)

                return stream()

        loop = asyncio.get_running_loop()
        subs = Subscriptions(
            "C",
            lambda owner: Source(),
            loop.create_task,
            0.01,
            owned_by=lambda owner: [p for p, o in table.items() if o == owner],
        )
        subs.add("m", near, values=True, entries=False, heartbeat=1.0)
        subs.on_members(MemberList(1, "A", (Member("A", "a:1"), Member("C", "c:1"))))
        try:
            await wait_async(lambda: "A" in near.leases)
            table[0] = "A"  # A's first partition lands
            near.on_table()
            fetch = near.begin(b"k0")
            near.end(b"k0", 0, b"old", True, fetch, version=5)
            assert near.lookup(b"k0") == b"old"
            broken.set()  # A's change of k0 is lost with the stream
            await wait_async(lambda: len(streams) == 2 and "A" in near.leases)
            assert near.lookup(b"k0") is MISS
        finally:
            await subs.stop()

    asyncio.run(scenario())


async def wait_async(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_an_entry_is_never_served_from_a_near_cache_after_it_expired_on_its_owner(api) -> None:
    """The owner's answers and events say how long a value has left (TTL, max-idle); the near
    cache does not serve it past that, however long the owner's expiry sweep takes."""
    timing = dataclasses.replace(peergrid.Timing.fast(), expiry_sweep_interval=60.0)
    maps = {
        "near": NEAR["near"],
        "idle": MapConfig(max_idle=1.0, near_cache=NearCacheConfig(max_entries=100, max_staleness=1.0)),
    }
    with cluster(2, maps=maps, timing=timing) as grids:
        owner, reader = grids
        for name in maps:
            wait_for(lambda n=name: len(reader._node.maps.near_caches[n].leases) == 1, 5, message="a lease")
        fetched, updated, idle = remote_keys(reader, 3)
        m, near = api.map(reader, "near"), reader._node.maps.near_caches["near"]

        def held(key: str, value: str, name: str = "near") -> bool:
            reads = api.map(reader, name)
            return (
                reads.get(key) == value
                and reads._core.encode(key) in reader._node.maps.near_caches[name].data
            )

        api.map(owner, "near").set(fetched, "v", ttl=1.0)
        wait_for(lambda: held(fetched, "v"), 5, message="the value fetched and held")
        api.map(owner, "near").set(updated, "old")
        wait_for(lambda: held(updated, "old"), 5, message="the value fetched and held")
        api.map(owner, "near").set(updated, "new", ttl=1.0)  # the event updates the entry in place
        wait_for(lambda: near.lookup(m._core.encode(updated)) == "new", 5, message="the update")
        wait_for(lambda: m.get(fetched) is None and m.get(updated) is None, 5, message="expiry")
        assert api.map(owner, "near").get(fetched) is None
        # Unread on its owner for max_idle, an entry expires there (near-cache hits are not
        # reads the owner sees): the near cache stops serving it by then too.
        api.map(owner, "idle").set(idle, "v")
        wait_for(lambda: held(idle, "v", "idle"), 5, message="the value fetched and held")
        encoded = api.map(reader, "idle")._core.encode(idle)
        near_idle = reader._node.maps.near_caches["idle"]
        wait_for(lambda: near_idle.lookup(encoded) is MISS, 5, message="the near cache to stop serving it")
        assert api.map(reader, "idle").get(idle) is None
        assert api.map(owner, "idle").get(idle) is None


def test_an_event_value_that_cannot_be_decoded_drops_the_entry_and_events_go_on() -> None:
    def loads(data: bytes) -> bytes:
        if data == b"garbled":
            raise ValueError("cannot decode")
        return data

    near = NearCache("m", NearCacheConfig(max_entries=10), owner_of=lambda p: "owner", loads=loads)
    near.on_alive("owner", time.monotonic())
    for key in (b"a", b"b"):
        near.end(key, 0, b"v1", True, near.begin(key), version=1)
    batch = EventBatch(
        kinds=[EventKind.UPDATED, EventKind.UPDATED],
        partitions=[0, 0],
        seqs=[1, 2],
        keys=[b"a", b"b"],
        values=[b"garbled", b"v2"],
        old_values=[b"v1", b"v1"],
        versions=[2, 3],
    )
    near.on_events("owner", batch)
    assert near.lookup(b"a") is MISS
    assert near.lookup(b"b") == b"v2"
