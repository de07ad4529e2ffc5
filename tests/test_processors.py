"""Entry processors and the built-in counter: atomic on the owner, replicated, published, no code sent."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import peergrid
from peergrid import MapConfig, NearCacheConfig, Timing
from peergrid.owner.processors import Entry, ProcessorRegistry
from peergrid.partition import partition_of
from peergrid.serialization import encode_key
from peergrid.stores import DictStore
from peergrid.testing import TestCluster, cluster
from tests.conftest import wait_for


@peergrid.entry_processor("tests.add_tag")
def add_tag(entry: Entry, tag: str) -> bool:
    tags = entry.value or []
    if tag in tags:
        return False
    entry.value = [*tags, tag]
    return True


@peergrid.entry_processor("tests.peek")
def peek(entry: Entry) -> object:
    return {"key": entry.key, "value": entry.value, "exists": entry.exists}


@peergrid.entry_processor("tests.pop")
def pop(entry: Entry) -> object:
    value = entry.value
    entry.delete()
    return value


@peergrid.entry_processor("tests.explode")
def explode(entry: Entry, message: str) -> None:
    entry.value = "half-done"
    raise ValueError(message)


@peergrid.entry_processor("tests.with_ttl")
def with_ttl(entry: Entry, value: object, ttl: float | None) -> None:
    entry.value = value
    entry.ttl = ttl


def version(grids: TestCluster, key: object) -> int:
    """The version of ``key``'s partition on its owner."""
    p = partition_of(encode_key(key), 271)
    owner = grids[0].owner_of(key)
    assert owner is not None
    return next(g for g in grids if g.uuid == owner.uuid)._node.manager.parts[p].version


# ---------------------------------------------------------------------- unit
def test_entry_reads_lazily_and_records_what_the_processor_did() -> None:
    decoded: list[bytes] = []

    def loads(data: bytes) -> object:
        decoded.append(data)
        return data.decode()

    entry = Entry("k", b"v", loads)
    assert not decoded
    assert not entry.written
    assert entry.value == "v"
    assert entry.exists
    assert decoded == [b"v"]
    entry.value = "w"
    assert entry.written
    assert entry.value == "w"
    entry.delete()
    assert entry.written
    assert entry.value is None
    assert not entry.exists
    absent = Entry(7, None, loads)
    assert absent.value is None
    assert not absent.exists
    assert not absent.written


def test_registry_names() -> None:
    registry = ProcessorRegistry()
    registry.register("mine", add_tag)
    registry.register("mine", add_tag)  # the same function again: fine
    with pytest.raises(peergrid.ArgumentError, match="already registered"):
        registry.register("mine", pop)
    with pytest.raises(peergrid.ArgumentError, match="peergrid's own"):
        registry.register("peergrid.increment", pop)
    with pytest.raises(peergrid.ArgumentError, match="callable"):
        registry.register("other", "not a function")  # type: ignore[arg-type]
    with pytest.raises(peergrid.ArgumentError):
        peergrid.entry_processor("")
    assert registry.get("mine") is add_tag
    assert registry.get("tests.pop") is pop  # process-wide ones too
    assert registry.get("nobody") is None
    with pytest.raises(peergrid.ArgumentError, match="already registered"):
        peergrid.entry_processor("tests.pop")(add_tag)


# ---------------------------------------------------------------------- on a cluster
def test_a_processor_runs_on_the_owner_and_its_change_is_replicated(
    api, grids3: TestCluster, name: str
) -> None:
    grids = grids3
    a, b, c = grids
    assert api.map(a, name).execute_on_key("u", "tests.add_tag", "x") is True
    assert api.map(b, name).execute_on_key("u", "tests.add_tag", "x") is False
    assert api.map(c, name).execute_on_key("u", "tests.add_tag", "y") is True
    assert api.map(a, name).get("u") == ["x", "y"]
    assert grids.wait_until_safe()
    p = partition_of(encode_key("u"), 271)
    by_uuid = {g.uuid: g for g in grids}
    for uuid in a._node.manager.table.replicas[p]:
        assert by_uuid[uuid]._node.manager.parts[p].maps[name].get(encode_key("u")) is not None
    assert api.map(c, name).execute_on_key("u", "tests.peek") == {
        "key": "u",
        "value": ["x", "y"],
        "exists": True,
    }


def test_a_processor_that_assigns_nothing_writes_nothing(api, grids3: TestCluster, name: str) -> None:
    grids = grids3
    m = api.map(grids[1], name)
    m.put("k", 1)
    before = version(grids, "k")
    assert m.execute_on_key("k", "tests.peek") == {"key": "k", "value": 1, "exists": True}
    assert m.execute_on_key("absent", "tests.peek") == {"key": "absent", "value": None, "exists": False}
    assert version(grids, "k") == before


def test_delete_and_assigning_none_remove_the_entry(api, grids3: TestCluster, name: str) -> None:
    grids = grids3
    m = api.map(grids[0], name)
    m.put(5, "five")
    assert api.map(grids[2], name).execute_on_key(5, "tests.pop") == "five"
    assert m.get(5) is None
    assert not m.contains_key(5)
    assert m.execute_on_key(5, "tests.pop") is None
    m.put("n", 1)
    m.execute_on_key("n", "tests.with_ttl", None, None)
    assert not m.contains_key("n")


def test_an_exception_leaves_the_entry_unchanged_and_names_processor_and_error(
    api, grids3: TestCluster, name: str
) -> None:
    grids = grids3
    m = api.map(grids[2], name)
    m.put("k", "before")
    before = version(grids, "k")
    with pytest.raises(peergrid.ProcessorError, match=r"'tests.explode' raised ValueError: boom") as info:
        m.execute_on_key("k", "tests.explode", "boom")
    assert info.value.processor == "tests.explode"
    assert m.get("k") == "before"
    assert version(grids, "k") == before


def test_unknown_processor_and_unregistered_elsewhere(api, grids3: TestCluster, name: str) -> None:
    grids = grids3
    a = grids[0]
    with pytest.raises(peergrid.ProcessorError, match="no entry processor 'nope'"):
        api.map(a, name).execute_on_key("k", "nope")
    # Registered on one member only: it runs where that member owns the key, fails elsewhere.
    a.register_processor("only-on-a", lambda entry: "ran")
    mine = [k for k in (f"k{i}" for i in range(60)) if a.owner_of(k).uuid == a.uuid]
    theirs = [k for k in (f"k{i}" for i in range(60)) if a.owner_of(k).uuid != a.uuid]
    assert api.map(a, name).execute_on_key(mine[0], "only-on-a") == "ran"
    with pytest.raises(peergrid.ProcessorError, match="no entry processor 'only-on-a'"):
        api.map(a, name).execute_on_key(theirs[0], "only-on-a")
    with pytest.raises(peergrid.ArgumentError):
        api.map(a, name).execute_on_key("k", "")


def test_results_and_values_the_serializer_cannot_carry(api, grids3: TestCluster, name: str) -> None:
    grids = grids3
    a = grids[0]
    a.register_processor("returns-a-set", lambda entry: complex(1, 2))  # not carried
    a.register_processor("stores-a-set", lambda entry: setattr(entry, "value", complex(1, 2)))
    keys = [k for k in (f"k{i}" for i in range(50)) if a.owner_of(k).uuid == a.uuid][:1]
    m = api.map(a, name)
    with pytest.raises(peergrid.ProcessorError, match="returns-a-set"):
        m.execute_on_key(keys[0], "returns-a-set")
    with pytest.raises(peergrid.ProcessorError, match="cannot be stored"):
        m.execute_on_key(keys[0], "stores-a-set")
    assert m.get(keys[0]) is None
    with pytest.raises(peergrid.SerializationError):
        m.execute_on_key("k", "tests.peek", object())  # arguments are checked by the caller


def test_ttl_of_new_values_and_kept_expiry_of_existing_ones(api, grids3: TestCluster, name: str) -> None:
    grids = grids3
    m = api.map(grids[1], name)
    m.execute_on_key("short", "tests.with_ttl", "v", 0.3)
    m.put("kept", ["v"], ttl=0.3)
    m.execute_on_key("kept", "tests.add_tag", "x")  # assigns without a ttl: the expiry stays
    m.put("forever", "v")
    m.execute_on_key("forever", "tests.with_ttl", "w", None)
    assert m.get("short") == "v"
    assert m.get("kept") == ["v", "x"]
    wait_for(lambda: m.get("short") is None and m.get("kept") is None, 5, message="both expired")
    assert m.get("forever") == "w"


def test_execute_on_keys_runs_on_every_owner_in_one_frame_each(api, grids3: TestCluster, name: str) -> None:
    grids = grids3
    a = grids[0]
    keys = [f"k{i}" for i in range(60)]
    m = api.map(a, name)
    frames_before = {pipe.address: pipe.frames_sent for pipe in a._node.pipes.open_calls().values()}
    results = m.execute_on_keys([*keys, "k0"], "tests.add_tag", "t")
    assert results == dict.fromkeys(keys, True)
    frames_after = {pipe.address: pipe.frames_sent for pipe in a._node.pipes.open_calls().values()}
    assert all(frames_after[addr] - frames_before.get(addr, 0) <= 2 for addr in frames_after)
    assert m.get_all(keys) == {k: ["t"] for k in keys}
    assert m.execute_on_keys([], "tests.add_tag", "t") == {}


def test_increment_counts_from_zero_keeps_the_window_and_refuses_non_ints(
    api, grids3: TestCluster, name: str
) -> None:
    grids = grids3
    a, b, _ = grids
    m = api.map(a, name)
    assert m.increment("c") == 1
    assert api.map(b, name).increment("c", 10) == 11
    assert m.increment("c", -12) == -1
    assert m.increment("window", ttl=0.4) == 1
    assert m.increment("window", ttl=30) == 2  # an existing counter keeps its expiry
    wait_for(lambda: m.get("window") is None, 5, message="the window ended")
    assert m.increment("window", ttl=30) == 1
    m.put("s", "text")
    with pytest.raises(peergrid.ProcessorError, match="not an int"):
        m.increment("s")
    assert m.get("s") == "text"
    with pytest.raises(peergrid.ArgumentError):
        m.increment("c", 1.5)  # type: ignore[arg-type]
    with pytest.raises(peergrid.ArgumentError):
        m.increment("c", True)
    with pytest.raises(peergrid.ArgumentError):
        m.increment("c", ttl=-1)


def test_concurrent_increments_from_every_member_are_never_lost(api, grids3: TestCluster, name: str) -> None:
    grids = grids3
    keys = ["hot", "{t}:a", "{t}:b"]

    def work(grid: peergrid.Grid) -> None:
        m = api.map(grid, name)
        for _ in range(100):
            for key in keys:
                m.increment(key)

    threads = [threading.Thread(target=work, args=(g,)) for g in grids for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert api.map(grids[1], name).get_all(keys) == dict.fromkeys(keys, 900)


def test_changes_are_published_and_refresh_near_caches(api) -> None:
    near = {"near": MapConfig(near_cache=NearCacheConfig(max_entries=100, max_staleness=1.0))}
    with cluster(2, maps=near) as grids:
        a, b = grids
        key = next(k for k in (f"k{i}" for i in range(100)) if a.owner_of(k).uuid == a.uuid)
        seen: list[peergrid.EntryEvent] = []
        api.map(b, "near").add_entry_listener(on_added=seen.append, on_updated=seen.append)
        api.map(b, "near").put(key, ["a"])
        assert api.map(b, "near").get(key) == ["a"]  # now near-cached on b
        api.map(a, "near").execute_on_key(key, "tests.add_tag", "b")
        wait_for(lambda: api.map(b, "near").get(key) == ["a", "b"], 3, message="b's near cache refreshed")
        api.map(b, "near").execute_on_key(key, "tests.add_tag", "c")
        assert api.map(b, "near").get(key) == ["a", "b", "c"]  # read-your-writes through the near cache
        wait_for(lambda: [e.kind for e in seen] == ["added", "updated", "updated"], 3, message="events")
        assert seen[-1].value == ["a", "b", "c"]
        assert seen[-1].old_value == ["a", "b"]


def test_bounded_maps_count_and_evict_what_processors_write(api) -> None:
    with cluster(1, maps={"small": MapConfig(max_entries=10)}) as grids:
        m = api.map(grids[0], "small")
        for i in range(40):
            m.increment(f"c{i}")
        assert m.local_stats().owned_entries == 10
        assert m.local_stats().evictions == 30
    with cluster(1, maps={"full": MapConfig(max_entries=2, eviction="none")}) as grids:
        m = api.map(grids[0], "full")
        m.increment("a")
        m.increment("b")
        with pytest.raises(peergrid.CapacityError):
            m.increment("c")
        assert m.increment("a") == 2  # replacing a value fits


def test_the_change_survives_the_owner_dying(api) -> None:
    with cluster(3, backup_count=1) as grids:
        a = grids[0]
        keys = [f"k{i}" for i in range(40)]
        for key in keys:
            api.map(a, "m").increment(key, 7)
        owner = next(g for g in grids[1:] if any(a.owner_of(k).uuid == g.uuid for k in keys))
        grids.kill(owner)
        assert grids.wait_until_safe()
        assert api.map(a, "m").get_all(keys) == dict.fromkeys(keys, 7)
        assert api.map(a, "m").execute_on_keys(keys, "peergrid.increment", 1, None) == dict.fromkeys(keys, 8)


def test_async_forms() -> None:
    async def main() -> None:
        options = {"cluster": f"proc-{time.time_ns()}", "timing": Timing.fast()}
        async with (
            peergrid.AsyncGrid(**options) as a,
            peergrid.AsyncGrid(**options, members=[a.address]) as b,
        ):
            assert await b.wait_until_safe(10)
            ma, mb = a.get_map("m"), b.get_map("m")
            assert await ma.execute_on_key("u", "tests.add_tag", "x") is True
            assert await mb.execute_on_keys(["u", "v"], "tests.add_tag", "x") == {"u": False, "v": True}
            counts = await asyncio.gather(*(mb.increment("n") for _ in range(50)))
            assert sorted(counts) == list(range(1, 51))
            with pytest.raises(peergrid.ProcessorError, match="ValueError: x"):
                await ma.execute_on_key("k", "tests.explode", "x")

    asyncio.run(main())


# ---------------------------------------------------------------------- maps with a store
class SlowWrites(DictStore):
    """A DictStore whose writes take a while (writes to one key overlap), and fail on demand."""

    broken = False

    def store(self, key: object, value: object) -> None:
        time.sleep(0.01)
        if self.broken:
            raise peergrid.StoreError("the database is down", retryable=True)
        super().store(key, value)


def test_processors_on_a_write_through_map_load_store_and_keep_key_order(api) -> None:
    store = SlowWrites({"loaded": 41, "tags": ["a"]})
    with cluster(3, maps={"db": MapConfig(store=store)}) as grids:
        m = api.map(grids[0], "db")
        assert m.increment("loaded") == 42  # read through: the stored 41, not a missing 0
        assert store.load("loaded") == 42  # written through before the answer
        assert m.execute_on_key("tags", "tests.add_tag", "b") is True
        assert store.load("tags") == ["a", "b"]
        with pytest.raises(peergrid.ProcessorError):
            m.execute_on_key("tags", "tests.explode", "no")
        assert store.load("tags") == ["a", "b"]
        assert m.execute_on_key("tags", "tests.pop") == ["a", "b"]
        assert store.load("tags") is None
        store.broken = True
        with pytest.raises(peergrid.StoreError, match="database is down"):
            m.increment("loaded")
        store.broken = False
        assert m.get("loaded") == 42

        # Writes of one key wait for each other's store call: none is computed from a stale value.
        def work(grid: peergrid.Grid) -> None:
            for _ in range(10):
                api.map(grid, "db").increment("hot")
                api.map(grid, "db").put("other", 1)

        threads = [threading.Thread(target=work, args=(g,)) for g in grids for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert m.get("hot") == 60
        assert store.load("hot") == 60


def test_processors_on_a_write_behind_map_are_queued_and_flushed(api) -> None:
    store = DictStore({"n": 1})
    config = MapConfig(store=store, write_behind=peergrid.WriteBehindConfig(delay=60))
    with cluster(2, maps={"wb": config}) as grids:
        m = api.map(grids[1], "wb")
        assert m.increment("n", 5) == 6
        assert m.increment("new") == 1
        assert store.load("n") == 1  # not yet
        m.flush()
        assert store.load("n") == 6
        assert store.load("new") == 1
