"""Entry listeners: every kind of event, filters, order, async callbacks, owner failure, gaps."""

from __future__ import annotations

import asyncio
import threading

import pytest

import peergrid
from peergrid import MapConfig, Timing
from peergrid.aio import AsyncMap
from peergrid.stores import DictStore
from peergrid.testing import cluster
from tests.conftest import wait_for


class Recorder:
    """Collects events from callbacks (called on the dispatcher thread)."""

    def __init__(self) -> None:
        self.events: list[peergrid.EntryEvent] = []
        self.gaps: list[list[int]] = []
        self._lock = threading.Lock()

    def __call__(self, event: peergrid.EntryEvent) -> None:
        with self._lock:
            self.events.append(event)

    def gap(self, partitions: list[int]) -> None:
        with self._lock:
            self.gaps.append(partitions)

    def kinds(self, key: object = None) -> list[str]:
        with self._lock:
            return [e.kind for e in self.events if key is None or e.key == key]

    def callbacks(self) -> dict[str, object]:
        return dict.fromkeys(("on_added", "on_updated", "on_removed", "on_expired", "on_evicted"), self)


def test_every_kind_of_event_from_every_member(api) -> None:
    with cluster(3, maps={"ev": MapConfig(max_entries=1000, eviction="lru")}) as grids:
        seen = Recorder()
        listener = api.map(grids[0], "ev").add_entry_listener(**seen.callbacks(), on_gap=seen.gap)
        m = api.map(grids[2], "ev")
        keys = [f"k{i}" for i in range(30)]  # spread over every member's partitions
        for key in keys:
            m.put(key, 1)
            m.put(key, 2)
            m.delete(key)
        m.put("ttl", "x", ttl=0.2)
        wait_for(lambda: len(seen.events) >= 3 * len(keys) + 2, 10, message="every event delivered")
        for key in keys:
            assert seen.kinds(key) == ["added", "updated", "removed"]  # in order, per key
        updated = next(e for e in seen.events if e.key == "k3" and e.kind == "updated")
        assert (updated.value, updated.old_value, updated.map) == (2, 1, "ev")
        removed = next(e for e in seen.events if e.key == "k3" and e.kind == "removed")
        assert removed.old_value == 2
        assert seen.kinds("ttl") == ["added", "expired"]
        assert not seen.gaps
        assert api.map(grids[0], "ev").remove_entry_listener(listener)
        assert not api.map(grids[0], "ev").remove_entry_listener(listener)
        m.put("after", 1)
        m.delete("after")
        assert seen.kinds("after") == []


def test_evicted_events_and_key_filters_and_no_values(api) -> None:
    with cluster(2, maps={"small": MapConfig(max_entries=10)}) as grids:
        evicted = Recorder()
        only_k1 = Recorder()
        api.map(grids[1], "small").add_entry_listener(on_evicted=evicted, include_value=False)
        api.map(grids[1], "small").add_entry_listener(on_added=only_k1, on_updated=only_k1, key="k1")
        m = api.map(grids[0], "small")
        for i in range(60):
            m.set(f"k{i}", i)
        m.set("k1", "again")
        wait_for(lambda: len(evicted.events) >= 30, 10, message="evictions reported")
        assert all(e.kind == "evicted" and e.value is None and e.old_value is None for e in evicted.events)
        wait_for(lambda: only_k1.kinds() in (["added", "updated"], ["added", "added"]), 5)
        assert all(e.key == "k1" for e in only_k1.events)


def test_local_listeners_hear_only_of_entries_this_member_owns(api) -> None:
    with cluster(2) as grids:
        local = Recorder()
        api.map(grids[0], "loc").add_entry_listener(on_added=local, local=True)
        m = api.map(grids[1], "loc")
        keys = [f"k{i}" for i in range(40)]
        for key in keys:
            m.set(key, 1)
        mine = [k for k in keys if grids[0].owner_of(k).uuid == grids[0].uuid]
        wait_for(lambda: len(local.events) == len(mine), 5)
        assert sorted(e.key for e in local.events) == sorted(mine)


def test_a_listener_keeps_receiving_after_the_owner_dies_and_reports_the_gap(api) -> None:
    with cluster(3) as grids:
        seen = Recorder()
        api.map(grids[0], "f").add_entry_listener(on_added=seen, on_updated=seen, on_gap=seen.gap)
        victim = grids[1]
        keys = [f"k{i}" for i in range(60) if grids[0].owner_of(f"k{i}").uuid == victim.uuid][:5]
        m = api.map(grids[2], "f")
        for key in keys:
            m.set(key, 1)
        wait_for(lambda: len(seen.events) == len(keys), 5)
        grids.kill(victim)
        wait_for(lambda: seen.gaps, 5, message="the broken stream reported as a gap")
        assert grids.wait_until_safe(30)
        for key in keys:
            m.set(key, 2)  # the new owners (promoted backups) publish now
        wait_for(lambda: len(seen.events) == 2 * len(keys), 5, message="events from the new owners")
        assert [e.kind for e in seen.events[len(keys) :]] == ["updated"] * len(keys)


def test_async_callbacks_run_on_the_registering_loop() -> None:
    async def main() -> None:
        timing = Timing.fast()
        async with (
            peergrid.AsyncGrid(cluster="aio-ev", timing=timing) as a,
            peergrid.AsyncGrid(cluster="aio-ev", members=[a.address], timing=timing) as b,
        ):
            loop = asyncio.get_running_loop()
            got: list[tuple[str, object, bool]] = []
            done = asyncio.Event()

            async def on_added(event: peergrid.EntryEvent) -> None:
                got.append((event.kind, event.key, asyncio.get_running_loop() is loop))
                await asyncio.sleep(0)
                if len(got) == 10:
                    done.set()

            listener = await a.get_map("am").add_entry_listener(on_added=on_added)
            m = b.get_map("am")
            for i in range(10):
                await m.set(f"k{i}", i)
            await asyncio.wait_for(done.wait(), 10)
            assert sorted(k for _, k, _ in got) == sorted(f"k{i}" for i in range(10))
            assert all(on_loop for _, _, on_loop in got)
            assert await a.get_map("am").remove_entry_listener(listener)

    asyncio.run(main())


def test_listener_arguments_are_checked(api) -> None:
    with cluster(1) as grids:
        m = api.map(grids[0], "x")
        with pytest.raises(peergrid.ArgumentError, match="at least one"):
            m.add_entry_listener()
        with pytest.raises(peergrid.ArgumentError, match="callable"):
            m.add_entry_listener(on_added="not a function")
        with pytest.raises(peergrid.ArgumentError, match="on_added"):
            m.add_entry_listener(on_add=print)


def test_a_failing_callback_does_not_stop_the_others(api, caplog) -> None:
    with cluster(1) as grids:
        seen = Recorder()

        def boom(event: peergrid.EntryEvent) -> None:
            raise RuntimeError("listener bug")

        m = api.map(grids[0], "boom")
        m.add_entry_listener(on_added=boom)
        m.add_entry_listener(on_added=seen)
        m.set("a", 1)
        m.set("b", 2)
        wait_for(lambda: len(seen.events) == 2, 5)
        assert any("listener bug" in r.getMessage() or r.exc_info for r in caplog.records)


def test_an_event_that_cannot_be_decoded_is_logged_and_later_events_still_arrive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from peergrid.events.listeners import ListenerHub
    from peergrid.events.model import EventBatch, EventKind

    def loads(data: bytes) -> object:
        if data == b"garbled":
            raise ValueError("cannot decode")
        return data

    got: list[object] = []
    hub = ListenerHub("m", "me", loads, DispatchNow())
    hub.add({EventKind.ADDED: got.append}, key=None, include_value=True, local=False, on_gap=None, loop=None)
    batch = EventBatch(
        kinds=[EventKind.ADDED, EventKind.ADDED],
        partitions=[0, 0],
        seqs=[1, 2],
        keys=[b"sa", b"sb"],
        values=[b"garbled", b"fine"],
        old_values=[b"", b""],
    )
    hub.on_events("owner", batch)
    assert [event.key for event in got] == ["b"]  # type: ignore[attr-defined]
    assert "cannot be decoded" in caplog.text


class DispatchNow:
    def submit(self, callback: object, *args: object) -> None:
        callback(*args)  # type: ignore[operator]


def test_listeners_with_and_without_values_each_get_what_they_asked_for(api) -> None:
    with cluster(2) as grids:
        bare, full = Recorder(), Recorder()
        api.map(grids[0], "iv").add_entry_listener(**bare.callbacks(), include_value=False)
        api.map(grids[0], "iv").add_entry_listener(**full.callbacks(), include_value=True)
        m = api.map(grids[1], "iv")
        keys = [f"k{i}" for i in range(6)]  # on both members
        for key in keys:
            m.put(key, "v1")
            m.put(key, "v2")
            m.delete(key)
        wait_for(lambda: len(full.events) >= 18 and len(bare.events) >= 18, 10, message="every event")
        assert all(e.value is None and e.old_value is None for e in bare.events)
        for key in keys:
            assert [(e.kind, e.value, e.old_value) for e in full.events if e.key == key] == [
                ("added", "v1", None),
                ("updated", "v2", "v1"),
                ("removed", None, "v2"),
            ]


def test_adding_a_listener_loses_no_event_of_the_others(api) -> None:
    """A second listener (wanting values the first did not) does not restart the event
    streams: the first one's events keep flowing, with no gap."""
    with cluster(2) as grids:
        first, second = Recorder(), Recorder()
        m0 = api.map(grids[0], "rg")
        m0.add_entry_listener(**first.callbacks(), include_value=False, on_gap=first.gap)
        writer = api.map(grids[1], "rg")
        stop = threading.Event()
        written = []

        def write() -> None:
            i = 0
            while not stop.is_set():
                writer.put(f"k{i % 50}", i)
                written.append(i)
                i += 1

        thread = threading.Thread(target=write)
        thread.start()
        try:
            wait_for(lambda: len(first.events) > 50, 10, message="events flowing")
            m0.add_entry_listener(**second.callbacks(), include_value=True)
            wait_for(lambda: len(second.events) > 50, 10, message="the second listener's events")
        finally:
            stop.set()
            thread.join()
        wait_for(lambda: len(first.events) == len(written), 10, message="every write's event")
        assert not first.gaps


def test_write_behind_maps_send_one_event_per_change(api) -> None:
    """A write-behind map's queue entries travel with each write; they are not the map's events."""
    config = {"wb": MapConfig(store=DictStore(), write_behind=peergrid.WriteBehindConfig(delay=60))}
    with cluster(2, maps=config) as grids:
        seen = Recorder()
        api.map(grids[0], "wb").add_entry_listener(**seen.callbacks())
        m = api.map(grids[1], "wb")
        m.put("a", 1)
        m.put("a", 2)
        m.delete("a")
        m.put("b", 3)
        wait_for(lambda: len(seen.events) >= 4, 10, message="the events")
        m.put("end", 0)
        wait_for(lambda: seen.kinds("end") == ["added"], 10, message="a last event")
        events = [(e.kind, e.key, e.value) for e in seen.events]
        assert len(events) == 5, events  # one event per change, none for the queue's entries
        # In order per key. Keys of different owners come over different streams, each batched
        # (Timing.event_batch_interval): "b" may overtake "a"'s last event.
        a = [("added", "a", 1), ("updated", "a", 2), ("removed", "a", None)]
        assert [e for e in events if e[1] == "a"] == a
        assert [e for e in events if e[1] != "a"] == [("added", "b", 3), ("added", "end", 0)]


def test_a_listener_dropped_with_its_closed_loop_leaves_no_duplicate_delivery(api) -> None:
    with cluster(2) as grids:
        m0 = api.map(grids[0], "cl")
        events: list[object] = []

        async def register() -> None:
            await AsyncMap(grids[0]._node, "cl").add_entry_listener(on_added=events.append)

        asyncio.run(register())  # its loop is closed when run() returns
        writer = api.map(grids[1], "cl")
        writer.put("first", 1)  # the hub finds the loop closed and drops the listener
        wait_for(lambda: not grids[0]._node.maps.hubs["cl"].listeners, 10, message="the listener dropped")
        seen = Recorder()
        m0.add_entry_listener(**seen.callbacks())
        keys = [f"k{i}" for i in range(6)]
        for key in keys:
            writer.put(key, 1)
        wait_for(lambda: len(seen.events) >= len(keys), 10, message="the events")
        writer.put("end", 0)
        wait_for(lambda: seen.kinds("end") == ["added"], 10, message="a last event")
        assert sorted(e.key for e in seen.events) == sorted([*keys, "end"])
