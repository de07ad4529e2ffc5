"""Cache features: expiry (TTL, max-idle, jitter), eviction (LRU, LFU, none) by entries and bytes."""

from __future__ import annotations

import dataclasses
import time

import pytest

import peergrid
from peergrid import MapConfig
from peergrid.partition import partition_of
from peergrid.serialization import encode_key
from peergrid.stores import DictStore
from peergrid.testing import cluster
from tests.conftest import wait_for


def owned_keys(grid: peergrid.Grid, count: int, prefix: str = "k") -> list[str]:
    keys = []
    i = 0
    while len(keys) < count:
        key = f"{prefix}{i}"
        if grid.owner_of(key).uuid == grid.uuid:
            keys.append(key)
        i += 1
    return keys


def totals(grids, name: str) -> tuple[int, int, int]:
    stats = [g.get_map(name).local_stats() for g in grids.live()]
    return (
        sum(s.owned_entries for s in stats),
        sum(s.backup_entries for s in stats),
        max(s.owned_bytes for s in stats),
    )


# ---------------------------------------------------------------------- expiry
def test_map_default_ttl_with_jitter_spreads_expiries() -> None:
    with cluster(1) as grids:
        m = grids[0].get_map("jittery", ttl=1.0, ttl_jitter=0.5)
        m.put_all({f"k{i}": i for i in range(200)})
        part_deadlines = [
            deadline
            for part in grids[0]._node.manager.parts
            if part is not None and "jittery" in part.maps
            for deadline in part.maps["jittery"].expiry.values()
        ]
        assert len(part_deadlines) == 200
        assert max(part_deadlines) - min(part_deadlines) > 0.3  # spread, not all at once
        wait_for(lambda: m.size() == 0, 5, message="every entry expired")


def test_max_idle_expires_unread_entries_and_keeps_read_ones() -> None:
    with cluster(2, maps={"idle": MapConfig(max_idle=0.6)}) as grids:
        m = grids[0].get_map("idle")
        m.put_all({"hot": 1, "cold": 2})
        started = time.monotonic()

        def only_hot_left() -> bool:
            assert m.get("hot") == 1  # reading keeps it alive, through whichever member
            assert grids[1].get_map("idle").get("hot") == 1
            # size() counts live entries without touching them (a get would keep "cold" alive).
            return m.size() == 1 and time.monotonic() - started > 1.0

        wait_for(only_hot_left, 5, interval=0.05, message="the unread entry expired, the read one lives")
        assert m.get("cold") is None


def test_expired_entries_are_never_returned_by_a_promoted_backup() -> None:
    with cluster(3) as grids:
        a = grids[0]
        key = owned_keys(grids[1], 1)[0]
        a.get_map("e").put(key, "soon gone", ttl=0.4)
        a.get_map("e").put("forever", 1)
        wait_for(lambda: a.get_map("e").get(key) is None, 5)
        grids.kill(grids[1])  # the owner: its backup is promoted
        assert grids.wait_until_safe(30)
        assert a.get_map("e").get(key) is None
        assert a.get_map("e").get("forever") == 1


def test_expiry_frees_memory_and_counts() -> None:
    with cluster(2) as grids:
        m = grids[0].get_map("sweep")
        m.put_all({f"k{i}": "x" * 100 for i in range(300)}, ttl=0.3)

        def swept() -> bool:
            stats = [g.get_map("sweep").local_stats() for g in grids]
            return all(s.owned_bytes == 0 and s.backup_bytes == 0 for s in stats)

        wait_for(swept, 10, message="swept on owners and backups")
        stats = m.stats()
        assert stats.total.expirations == 300
        assert stats.total.owned_bytes == 0


# ---------------------------------------------------------------------- eviction
def test_max_entries_per_member_with_lru_keeps_the_recently_used() -> None:
    with cluster(2, maps={"lru": MapConfig(max_entries=50, eviction="lru")}) as grids:
        a = grids[0]
        m = a.get_map("lru")
        keys = owned_keys(a, 80)
        for key in keys[:50]:
            m.set(key, 1)
        for _ in range(3):
            for key in keys[:10]:
                assert m.get(key) == 1  # recently used
        for key in keys[50:]:
            m.set(key, 2)
        stats = m.local_stats()
        assert stats.owned_entries == 50
        assert stats.evictions == 30
        kept = [k for k in keys[:10] if m.get(k) is not None]
        assert len(kept) >= 8  # sampled LRU evicts the 40 unread keys first, mostly
        # Evicting on the owner evicts on its backups too.
        wait_for(lambda: totals(grids, "lru")[1] == totals(grids, "lru")[0], 5, message="backups follow")


def test_lfu_keeps_the_frequently_used() -> None:
    with cluster(1, maps={"lfu": MapConfig(max_entries=40, eviction="lfu")}) as grids:
        m = grids[0].get_map("lfu")
        m.put_all({f"hot{i}": i for i in range(10)})
        # Redis' logarithmic counter counts a hit only with probability 1/(10*(n-5)+1): 100
        # rounds lift every hot key above a new key's counter (30 left one behind ~6% of runs).
        for _ in range(100):
            m.get_all([f"hot{i}" for i in range(10)])
        for i in range(200):
            m.set(f"cold{i}", i)
        hot = m.get_all([f"hot{i}" for i in range(10)])
        assert len(hot) >= 8
        assert m.size() == 40


def test_max_bytes_holds_with_values_of_very_different_sizes() -> None:
    limit = 50_000
    with cluster(2, maps={"bytes": MapConfig(max_bytes=limit)}) as grids:
        m = grids[0].get_map("bytes")
        sizes = [10, 50_00, 100, 20_000, 1, 3_000, 7, 15_000]
        for i in range(400):
            m.set(f"k{i}", "v" * sizes[i % len(sizes)])
            if i % 50 == 0:
                owned = [g.get_map("bytes").local_stats().owned_bytes for g in grids]
                assert max(owned) <= limit, owned
        stats = [g.get_map("bytes").local_stats() for g in grids]
        assert max(s.owned_bytes for s in stats) <= limit
        assert sum(s.owned_bytes for s in stats) > limit  # it evicts what it must, not everything
        assert sum(s.evictions for s in stats) > 0


def test_eviction_none_raises_capacity_error_and_changes_nothing() -> None:
    with cluster(1, maps={"full": MapConfig(max_entries=5, eviction="none")}) as grids:
        m = grids[0].get_map("full")
        m.put_all({f"k{i}": i for i in range(5)})
        with pytest.raises(peergrid.CapacityError, match="max_entries=5"):
            m.put("k5", 5)
        m.put("k0", "replaced")  # replacing an entry does not grow the map
        assert m.size() == 5
        assert m.get("k5") is None
        assert m.get("k0") == "replaced"
        m.delete("k1")
        m.put("k5", 5)
        assert m.size() == 5


def test_map_options_are_validated_and_configured_once() -> None:
    with cluster(1) as grids:
        grid = grids[0]
        with pytest.raises(peergrid.ConfigError, match="eviction"):
            grid.get_map("x", max_entries=10, eviction="random")
        with pytest.raises(peergrid.ArgumentError, match="max_entries"):
            grid.get_map("x", max_entrys=10)
        grid.get_map("y", max_entries=10)
        assert grid.get_map("y") is grid.get_map("y")
        with pytest.raises(peergrid.ConfigError, match="already configured"):
            grid.get_map("y", max_entries=20)


def test_bounds_are_recounted_after_a_migration() -> None:
    with cluster(2, maps={"b": MapConfig(max_entries=100)}) as grids:
        grids[0].get_map("b").put_all({f"k{i}": i for i in range(150)})
        assert grids.wait_until_safe(20)
        grids.add(maps={"b": MapConfig(max_entries=100)})
        assert grids.wait_until_safe(20)
        for grid in grids:
            grid.get_map("b").set(f"after-{grid.uuid}", 1)
        stats = [g.get_map("b").local_stats() for g in grids]
        assert all(s.owned_entries <= 100 for s in stats)
        p = partition_of(encode_key("k1"), 271)
        assert 0 <= p < 271


def test_a_sparse_map_still_evicts_down_to_its_bound() -> None:
    # One entry in 271 partitions: random samples rarely find it, eviction must anyway.
    with cluster(1, maps={"tiny": MapConfig(max_entries=1)}) as grids:
        m = grids[0].get_map("tiny")
        for i in range(20):
            m.set(f"k{i}", i)
            assert m.size() == 1
        assert m.get("k19") == 19


def test_a_full_map_answers_conditional_writes_that_change_nothing() -> None:
    maps = {"n": MapConfig(max_entries=1, eviction="none"), "b": MapConfig(max_bytes=40, eviction="none")}
    with cluster(1, maps=maps) as grids:
        full = grids[0].get_map("n")
        full.set("a", 1)
        assert full.replace("absent", 2) is None
        assert full.replace_if_same("absent", 1, 2) is False
        assert full.put_if_absent("a", 9) == 1
        with pytest.raises(peergrid.CapacityError):
            full.put_if_absent("other", 9)  # this one would write
        by_bytes = grids[0].get_map("b")
        by_bytes.set("k", "x" * 20)
        assert by_bytes.put_if_absent("k", "y" * 30) == "x" * 20
        assert by_bytes.replace_if_same("k", "nope", "y" * 30) is False
        assert by_bytes.get("k") == "x" * 20


def test_expired_entries_do_not_hold_a_full_map_or_drift_its_count() -> None:
    """Deleting an entry that expired but was not swept yet, or writing to a map full of
    such entries, neither leaves the bound's count wrong nor refuses a write that fits."""
    timing = dataclasses.replace(peergrid.Timing.fast(), expiry_sweep_interval=60.0)
    with cluster(1, timing=timing, maps={"m": MapConfig(max_entries=2, eviction="none")}) as grids:
        m = grids[0].get_map("m")
        m.set("a", 1, ttl=0.2)
        m.set("b", 2)
        wait_for(lambda: m.get("a") is None, 5, message="a to expire")
        assert m.delete("a") is False
        m.set("c", 3)  # fits: "a" expired
        with pytest.raises(peergrid.CapacityError):
            m.set("d", 4)
        assert sorted(m.keys()) == ["b", "c"]
        m.delete("b")
        m.set("d", 4)
        assert m.local_stats().expirations == 1


def test_an_entry_loaded_from_the_store_counts_once_toward_the_bound() -> None:
    store = DictStore({"x": 1})
    with cluster(1, maps={"m": MapConfig(store=store, max_entries=3, eviction="none")}) as grids:
        m = grids[0].get_map("m")
        assert m.get("x") == 1  # loaded from the store as the member's first write to the map
        m.set("a", 1)
        m.set("b", 2)  # three entries: at the bound, not past it
        with pytest.raises(peergrid.CapacityError):
            m.set("c", 3)
        assert m.local_stats().owned_entries == 3


def test_an_access_recorded_for_a_deleted_key_is_never_expired_again() -> None:
    from peergrid.storage.records import Records, StorePolicy

    store = Records(StorePolicy(max_idle=0.01, track_access=True))
    store.put(b"k", b"v")
    store.delete(b"k")
    assert store.access is not None
    store.access.last[b"k"] = time.time() - 1  # what a read racing the delete leaves behind
    assert store.expired(time.time()) == []
    store.delete(b"k")
    assert b"k" not in store.access.last


def test_a_partition_copy_keeps_its_entries_idle_clocks() -> None:
    """Entries that move to a joining member expire by max_idle from their last access,
    not from when they moved (early is allowed, late is not)."""
    idle = 3.0
    with cluster(1, maps={"idle": MapConfig(max_idle=idle)}) as grids:
        m = grids[0].get_map("idle")
        started = time.monotonic()
        m.put_all({f"k{i}": i for i in range(200)})
        time.sleep(1.2)  # the entries age (no condition to wait for: time itself is the point)
        newcomer = grids.add()
        assert grids.wait_until_safe(30)
        assert newcomer.get_map("idle").local_stats().owned_entries > 0 or m.size() == 0
        left = started + idle + 0.5 - time.monotonic()
        assert left > 0, "the join took too long to tell"
        wait_for(lambda: m.size() == 0, left, message="every entry to expire by max_idle")
