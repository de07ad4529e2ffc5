"""Entries (issue 15): TTL per entry (ttl, expire, persist), remove and remove_if_same, evict
and evict_all, entry_view, contains_value, is_empty, destroy; through both APIs, on keys this
member owns and keys another member owns."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given

import peergrid
from peergrid import MapConfig, NearCacheConfig, Timing, WriteBehindConfig
from peergrid.partition import partition_of
from peergrid.protocol import Code, EffectKind, Op, Status
from peergrid.serialization import encode_key
from peergrid.storage import Partition
from peergrid.storage import ops as storage_ops
from peergrid.stores import DictStore
from peergrid.testing import cluster
from tests.conftest import wait_for
from tests.strategies import owner_ops
from tests.test_listeners import Recorder


def owned_by(grid: peergrid.Grid, prefix: str = "k") -> str:
    """A key whose partition ``grid`` owns."""
    return next(f"{prefix}{i}" for i in range(10_000) if grid.owner_of(f"{prefix}{i}").uuid == grid.uuid)


def within(left: float | None, seconds: float, since: float) -> bool:
    """``left`` is what a TTL of ``seconds`` given after ``since`` (monotonic) can have left now."""
    return left is not None and seconds - (time.monotonic() - since) - 0.01 <= left <= seconds


def test_ttl_expire_and_persist_on_local_and_remote_keys(api, grids3, name) -> None:
    ma, mb = api.map(grids3[0], name), api.map(grids3[1], name)
    key = owned_by(grids3[0])  # local to ma, remote to mb
    for m in (ma, mb):
        with pytest.raises(KeyError):
            m.ttl(key)
        assert not m.expire(key, 10)
        assert not m.persist(key)
    ma.set(key, "v")
    for m in (ma, mb):
        assert m.ttl(key) is None
        assert not m.persist(key)  # it has no TTL
    for m, other in ((ma, mb), (mb, ma)):
        since = time.monotonic()
        assert m.expire(key, 100)
        assert within(other.ttl(key), 100, since)
        assert other.get(key) == "v"  # the value stays
        assert other.persist(key)
        assert m.ttl(key) is None
        assert not m.persist(key)
    since = time.monotonic()
    mb.set(key, "w", ttl=50)
    assert within(ma.ttl(key), 50, since)
    ma.set(key, "x")  # a write without ttl ends the TTL, as redis' SET does
    assert mb.ttl(key) is None
    assert mb.expire(key, 0.2)  # a short TTL ends: the entry is gone everywhere
    wait_for(lambda: ma.get(key) is None and mb.get(key) is None, message="the entry expired")
    with pytest.raises(KeyError):
        mb.ttl(key)
    for bad in (0, -1, None, float("inf"), "5", True):
        with pytest.raises(peergrid.ArgumentError):
            ma.expire(key, bad)


def test_remove_returns_the_value_and_remove_if_same_compares(api, grids3, name) -> None:
    ma, mb = api.map(grids3[0], name), api.map(grids3[1], name)
    for key in (owned_by(grids3[0]), owned_by(grids3[1])):
        assert ma.remove(key) is None
        ma.set(key, {"n": 1})
        assert mb.remove(key) == {"n": 1}
        assert not ma.contains_key(key)
        assert mb.remove(key) is None
        ma.set(key, {"a": 1, "b": 2})
        assert not mb.remove_if_same(key, {"a": 1})
        assert ma.get(key) == {"a": 1, "b": 2}
        assert mb.remove_if_same(key, {"b": 2, "a": 1})  # equal values, whatever the encoding
        assert ma.get(key) is None
        assert not ma.remove_if_same(key, {"a": 1, "b": 2})
    stats = ma.local_stats()
    assert stats.removes >= 4


def test_evict_entry_view_contains_value_and_is_empty(api, grids3, name) -> None:
    ma, mb = api.map(grids3[0], name), api.map(grids3[2], name)
    assert ma.is_empty()
    assert mb.entry_view("nothing") is None
    assert not mb.contains_value(1)
    local, remote = owned_by(grids3[0]), owned_by(grids3[1])
    for key in (local, remote):
        before, since = time.time(), time.monotonic()
        mb.set(key, [1, 2], ttl=100)
        for m in (ma, mb):
            view = m.entry_view(key)
            assert view is not None
            assert view.key == key
            assert view.value == [1, 2]
            assert within(view.ttl, 100, since)
            assert before + 100 <= view.expiration_time <= time.time() + 100
            assert view.last_access_time is None  # a plain map does not track access
            with pytest.raises(AttributeError):
                view.value = 3  # type: ignore[misc]
        assert mb.persist(key)
        view = ma.entry_view(key)
        assert view is not None
        assert view.ttl is view.expiration_time is None
    assert not ma.is_empty()
    assert ma.contains_value([1, 2])
    assert not ma.contains_value([2, 1])
    assert ma.evict(local)
    assert not mb.evict(local)
    assert mb.get(local) is None
    assert mb.size() == 1
    ma.set("more", 3)
    mb.evict_all()
    assert ma.is_empty()
    assert mb.is_empty()
    assert not ma.contains_value([1, 2])


def test_entry_view_has_the_last_access_where_the_map_tracks_it(api, grids3, name) -> None:
    m = [api.map(g, name, max_idle=60) for g in grids3][1]  # configured on every member
    key = owned_by(grids3[0])
    before = time.time()
    m.set(key, 1)
    view = m.entry_view(key)
    assert view is not None
    assert view.last_access_time is not None
    assert before <= view.last_access_time <= time.time()


def test_evict_leaves_the_store_alone_and_remove_deletes_from_it(api) -> None:
    store = DictStore({"a": 1, "b": 2, "c": 3})
    with cluster(2, maps={"db": MapConfig(store=store)}) as grids:
        m, other = api.map(grids[0], "db"), api.map(grids[1], "db")
        assert m.get("a") == 1  # loaded
        assert other.evict("a")
        assert store.load("a") == 1
        assert "delete" not in store.calls
        assert m.get("a") == 1  # loaded again
        assert other.remove("b") == 2  # loaded, to be returned, then deleted from the store too
        assert store.load("b") is None
        assert not m.remove_if_same("c", 4)
        assert store.load("c") == 3
        assert m.remove_if_same("c", 3)
        assert store.load("c") is None
        m.set("d", 4)
        m.evict_all()
        assert m.is_empty()
        assert store.load("d") == 4
        assert "delete_all" not in store.calls
        since = time.monotonic()
        assert m.expire("d", 100)  # loaded, given a TTL in memory; not stored again
        assert within(other.ttl("d"), 100, since)
        assert store.calls["store"] == 1
        assert other.evict("d")
        assert m.ttl("d") is None  # loaded again (a read-through sets only the map's ttl)
        assert other.entry_view("a").value == 1


def test_listeners_hear_removed_and_evicted_and_nothing_of_a_ttl(grids3, name) -> None:
    seen = Recorder()
    grids3[1].get_map(name).add_entry_listener(**seen.callbacks())
    m = grids3[0].get_map(name)
    keys = [owned_by(g, "e") for g in grids3]
    for key in keys:
        m.set(key, 1)
        m.expire(key, 100)
        m.persist(key)
        m.remove(key)
        m.set(key, 2)
        m.remove_if_same(key, 2)
        m.set(key, 3)
        m.evict(key)
    m.set("last", 4)
    m.evict_all()
    wait_for(lambda: len(seen.kinds("last")) == 2, message="every event delivered")
    for key in keys:
        assert seen.kinds(key) == ["added", "removed", "added", "removed", "added", "evicted"]
    assert seen.kinds("last") == ["added", "evicted"]
    assert [e.old_value for e in seen.events if e.key == keys[0]][1::2] == [1, 2, 3]


def test_near_caches_see_removals_evictions_and_ttl_changes(api) -> None:
    near = MapConfig(near_cache=NearCacheConfig(max_entries=100, max_staleness=30.0))
    with cluster(2, maps={"near": near}) as grids:
        writer, reader = api.map(grids[0], "near"), api.map(grids[1], "near")
        keys = [owned_by(grids[0], f"n{i}-") for i in range(4)]
        for key in keys:
            writer.set(key, "v")
            assert reader.get(key) == "v"  # cached on the reader now
            assert reader.get(key) == "v"
        writer.remove(keys[0])
        writer.remove_if_same(keys[1], "v")
        writer.evict(keys[2])
        writer.expire(keys[3], 0.3)
        for key in keys:
            wait_for(lambda key=key: reader.get(key) is None, message=f"the reader's near cache let {key} go")
        writer.set("x", 1)
        assert reader.get("x") == 1
        writer.evict_all()
        wait_for(lambda: reader.get("x") is None, message="evict_all reached the near cache")


def test_destroy_drops_the_map_everywhere_and_get_map_makes_a_new_one() -> None:
    with cluster(2) as grids:
        m = grids[0].get_map("gone", ttl=100)
        other = grids[1].get_map("gone")
        seen = Recorder()
        m.add_entry_listener(on_added=seen)
        for i in range(20):
            other.set(i, i)
        wait_for(lambda: len(seen.events) == 20, message="events before destroy")
        m.destroy()
        assert m.destroyed
        assert other.is_empty()
        fresh = grids[0].get_map("gone", max_entries=5)  # other options than before: a new map
        assert fresh is not m
        assert grids[0].get_map("gone") is fresh
        assert fresh.is_empty()
        assert fresh.local_stats().puts == 0
        fresh.set("a", 1)
        assert fresh.ttl("a") is None  # the old default ttl went with the old map
        assert other.get("a") == 1
        assert len(seen.events) == 20  # its listener went too


def test_destroy_through_the_async_grid() -> None:
    async def main() -> None:
        async with peergrid.AsyncGrid(cluster="destroy", timing=Timing.fast()) as grid:
            m = grid.get_map("gone", ttl=100)
            await m.set("a", 1)
            await m.destroy()
            assert m.destroyed
            fresh = grid.get_map("gone")
            assert fresh is not m
            assert await fresh.is_empty()
            await fresh.set("a", 1)
            assert await fresh.ttl("a") is None

    asyncio.run(main())


def test_evict_and_destroy_leave_writes_queued_behind_to_be_stored() -> None:
    store = DictStore()
    behind = MapConfig(store=store, write_behind=WriteBehindConfig(delay=3600))
    with cluster(2, maps={"wb": behind}) as grids:
        m = grids[0].get_map("wb")
        m.set("a", 1)
        m.set("b", 2)
        assert m.evict("b")  # memory only: its write stays queued for the store
        assert sum(g.get_map("wb").local_stats().write_behind_pending for g in grids) == 2
        m.destroy()
        assert store.load("a") == 1
        assert store.load("b") == 2


def test_an_expire_or_persist_survives_the_owner_dying() -> None:
    with cluster(3, backup_count=1) as grids:
        owner = grids[2]
        survivor = grids[0].get_map("ttl")
        timed, kept = owned_by(owner, "t"), owned_by(owner, "p")
        survivor.set(timed, 1)
        survivor.set(kept, 2, ttl=100)
        since = time.monotonic()
        assert survivor.expire(timed, 300)
        assert survivor.persist(kept)
        grids.kill(owner)
        assert grids.wait_until_safe()
        assert within(survivor.ttl(timed), 300, since)
        assert survivor.ttl(kept) is None
        assert grids[1].get_map("ttl").get(kept) == 2


@given(owner_ops)
def test_a_backup_applying_the_effects_holds_the_owners_values_and_expiries(ops) -> None:
    """Property: whatever the writes (TTL changes and removals included), a copy that applies
    the effects the owner ships holds the same values with the same expiry deadlines."""
    owner, backup = Partition(0), Partition(0)
    for name, key, value, ttl in ops:
        code = getattr(Code, name.upper())
        expect = value if name.endswith("_if_same") else b""
        op = Op(code, 0, "m", key, b"" if name == "remove_if_same" else value, expect, ttl)
        result, effects = storage_ops.execute(owner, op, bytes.__eq__)
        assert result.status == Status.OK
        backup.apply(effects)
    mine, theirs = owner.maps.get("m"), backup.maps.get("m")
    assert (mine.values if mine else {}) == (theirs.values if theirs else {})
    assert (mine.expiry if mine else {}) == (theirs.expiry if theirs else {})


def test_ttl_changes_are_journaled_for_a_merge_and_evictions_are_not(grids3, name) -> None:
    """While a split may be on, expire and persist are journaled as the writes they are (a merge
    carries the new expiry), on the owner and its backups; evictions, as the owner's own, are not."""
    m = grids3[1].get_map(name)
    count = grids3[0].config.partition_count
    keys = {owned_by(grids3[0], prefix): prefix for prefix in ("jt", "jp", "je")}
    timed, kept, evicted = keys
    for key in keys:
        m.set(key, 1, ttl=100)

    def records() -> dict[tuple[str, str], int | None]:
        """Each key's journal record in each of its copies, by (member, key)."""
        by_uuid = {g.uuid: g for g in grids3}
        found = {}
        for key in keys:
            p = partition_of(encode_key(key), count)
            for uuid in grids3[1]._node.manager.table.replicas[p]:
                part = by_uuid[uuid]._node.manager.parts[p]
                assert part is not None
                found[uuid, key] = part.journaled(name, encode_key(key))
        return found

    for grid in grids3:
        grid._node.journal.open()
    try:
        journaled = records()
        started = time.time()
        assert m.expire(timed, 300)
        assert m.persist(kept)
        assert m.evict(evicted)
        after = records()
        assert len(after) == 2 * len(keys)  # the owner's and its backup's copy of each
        for (uuid, key), rec in after.items():
            if key == evicted:
                assert rec == journaled[uuid, key]
            else:
                assert rec is not None
                assert rec != journaled[uuid, key]
        # The copy a merge sends carries the new expiry.
        owner = grids3[1].owner_of(timed)
        assert owner is not None
        part = next(g for g in grids3 if g.uuid == owner.uuid)._node.manager.parts[
            partition_of(encode_key(timed), count)
        ]
        assert part is not None
        puts = {e.key: e.expire_at for e in part.snapshot() if e.kind == EffectKind.PUT and e.map == name}
        assert started + 300 <= puts[encode_key(timed)] <= time.time() + 300
    finally:
        for grid in grids3:
            grid._node.journal.until = 0.0
