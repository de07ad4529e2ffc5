"""Maps with a store: read-through, single-flight loads, write-through, write-behind."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import peergrid
from peergrid import MapConfig
from peergrid.owner.stores import queue_name
from peergrid.partition.hashing import partition_of
from peergrid.serialization import encode_key
from peergrid.storage.partition import Partition
from peergrid.stores import DictStore, SQLiteStore
from peergrid.testing import cluster
from tests.conftest import wait_for
from tests.test_stores import pg_store, pg_table, postgres_dsn  # noqa: F401 - fixtures


class SlowStore(DictStore):
    """A DictStore whose loads take a while (so concurrent misses overlap) and can fail on demand."""

    def __init__(self, entries: Mapping[Any, Any] | None = None, delay: float = 0.3) -> None:
        super().__init__(entries)
        self.delay = delay
        self.broken = threading.Event()

    def load_all(self, keys: Collection[Any]) -> dict[Any, Any]:
        time.sleep(self.delay)
        if self.broken.is_set():
            raise peergrid.StoreError("the database is down", retryable=True)
        return super().load_all(keys)

    def store(self, key: Any, value: Any) -> None:
        if self.broken.is_set():
            raise peergrid.StoreError("the database is down", retryable=True)
        super().store(key, value)

    def store_all(self, entries: Mapping[Any, Any]) -> None:
        if self.broken.is_set():
            raise peergrid.StoreError("the database is down", retryable=True)
        super().store_all(entries)


def maps(**config: Any) -> dict[str, MapConfig]:
    return {"users": MapConfig(**config)}


def test_read_through_loads_a_miss_once_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    seed = SQLiteStore(path, "users")
    seed.store_all({f"user:{i}": {"name": f"n{i}"} for i in range(50)})
    seed.close()
    # Each member opens its own store on the same database, as separate processes would.
    with SQLiteStore(path, "users") as store, cluster(3, maps=maps(store=store)) as grids:
        m = grids[0].get_map("users")
        assert m.get("user:7") == {"name": "n7"}
        assert grids[2].get_map("users").get_all([f"user:{i}" for i in range(50)]) == {
            f"user:{i}": {"name": f"n{i}"} for i in range(50)
        }
        assert m.get("nobody") is None
        assert not m.contains_key("nobody")
        loads = m.stats().total.store_loads
        assert 50 <= loads <= 52  # every key once (a miss stays a miss: "nobody" is asked again)
        assert m.get("user:7") == {"name": "n7"}
        assert grids[1].get_map("users").get("user:3") == {"name": "n3"}
        assert m.stats().total.store_loads == loads  # held in memory now, and replicated
        assert m.stats().total.backup_entries == 50


def test_a_read_through_that_fails_inside_the_member_is_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the load (here: keeping the loaded value) is answered, as an error the
    caller can read, not left for the read to wait on until its timeout."""
    store = DictStore({"user:1": {"name": "one"}})
    with cluster(1, maps=maps(store=store)) as grids:
        stores = grids[0]._node.executor._stores

        def broken(*_: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(stores, "_keep", broken)
        with pytest.raises(peergrid.RemoteError, match="internal error"):
            grids[0].get_map("users").get("user:1")
        monkeypatch.undo()
        assert grids[0].get_map("users").get("user:1") == {"name": "one"}


def test_concurrent_misses_from_every_member_cause_one_load() -> None:
    store = SlowStore({"hot": "value"})
    with cluster(3, maps=maps(store=store)) as grids:
        results: list[Any] = []
        lock = threading.Lock()

        def read(grid: peergrid.Grid) -> None:
            value = grid.get_map("users").get("hot")
            with lock:
                results.append(value)

        threads = [threading.Thread(target=read, args=(grids[i % 3],)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == ["value"] * 100
        assert store.calls["load_all"] + store.calls["load"] == 1


def test_write_through_stores_before_it_acknowledges() -> None:
    store = SlowStore(delay=0)
    with cluster(2, maps=maps(store=store)) as grids:
        m = grids[1].get_map("users")
        m.put("a", 1)
        assert store.snapshot() == {"a": 1}
        m.put_all({"b": 2, "c": 3})
        assert store.snapshot() == {"a": 1, "b": 2, "c": 3}
        assert m.put_if_absent("a", 9) == 1
        assert m.replace_if_same("b", 2, 20)
        assert m.delete("c")
        assert store.snapshot() == {"a": 1, "b": 20}
        store.broken.set()
        with pytest.raises(peergrid.StoreError, match="down") as info:
            m.put("a", "lost")
        assert info.value.retryable
        store.broken.clear()
        assert m.get("a") == 1  # memory unchanged by the failed write
        m.clear()
        assert store.snapshot() == {}


def test_put_if_absent_sees_what_only_the_store_has() -> None:
    store = SlowStore({"only-in-db": "db value"}, delay=0)
    with cluster(2, maps=maps(store=store)) as grids:
        m = grids[0].get_map("users")
        assert m.put_if_absent("only-in-db", "new") == "db value"
        assert m.put("only-in-db", "newer") == "db value"
        assert store.snapshot()["only-in-db"] == "newer"


def test_write_behind_coalesces_and_flushes_after_the_delay() -> None:
    store = DictStore()
    config = maps(store=store, write_behind=peergrid.WriteBehindConfig(delay=0.5, batch_size=100))
    with cluster(2, maps=config) as grids:
        m = grids[0].get_map("users")
        for i in range(10):
            m.set("counter", i)  # acknowledged at once, stored later, once
        m.put_all({f"k{i}": i for i in range(30)})
        m.delete("k0")
        assert store.snapshot() == {}
        assert m.stats().total.write_behind_pending == 31
        wait_for(lambda: len(store.snapshot()) == 30, 10, message="written behind")
        assert store.snapshot()["counter"] == 9
        assert "k0" not in store.snapshot()
        wait_for(lambda: m.stats().total.write_behind_pending == 0, 10, message="queue drained")
        writes = store.calls["store_all"] + store.calls["store"]
        assert writes <= 6  # batched and coalesced, not one call per write


def test_flush_forces_pending_writes_out() -> None:
    store = DictStore()
    config = maps(store=store, write_behind=peergrid.WriteBehindConfig(delay=60))
    with cluster(3, maps=config) as grids:
        grids[1].get_map("users").put_all({f"k{i}": i for i in range(40)})
        assert store.snapshot() == {}
        grids[2].get_map("users").flush()
        assert store.snapshot() == {f"k{i}": i for i in range(40)}


def test_a_dead_owners_pending_writes_are_flushed_by_its_successor() -> None:
    store = DictStore()
    config = maps(store=store, write_behind=peergrid.WriteBehindConfig(delay=60))
    with cluster(3, maps=config) as grids:
        victim = grids[1]
        keys = [f"k{i}" for i in range(200) if grids[0].owner_of(f"k{i}").uuid == victim.uuid][:20]
        grids[0].get_map("users").put_all(dict.fromkeys(keys, "pending"))
        grids.kill(victim)
        assert grids.wait_until_safe(30)
        grids[0].get_map("users").flush()
        assert store.snapshot() == dict.fromkeys(keys, "pending")


def test_a_failing_store_is_retried_and_reported_never_dropped(caplog) -> None:
    store = SlowStore(delay=0)
    store.broken.set()
    config = maps(
        store=store, write_behind=peergrid.WriteBehindConfig(delay=0.1, retry_initial=0.1, retry_max=0.2)
    )
    with cluster(1, maps=config) as grids:
        m = grids[0].get_map("users")
        m.put_all({f"k{i}": i for i in range(10)})
        wait_for(lambda: m.local_stats().store_failures >= 2, 10, message="retried")
        assert store.snapshot() == {}
        assert m.local_stats().write_behind_pending == 10
        assert any("down" in r.getMessage() for r in caplog.records)
        store.broken.clear()
        wait_for(lambda: len(store.snapshot()) == 10, 10, message="stored once the store is back")
        store.broken.set()
        m.set("during the outage", 1)
        with pytest.raises(peergrid.StoreError, match="down"):
            m.flush()  # the caller hears of the failure; the entry stays queued
        assert m.local_stats().write_behind_pending == 1


def test_read_and_write_through_postgresql(postgres_dsn: str, pg_table: str) -> None:  # noqa: F811
    seed = pg_store(postgres_dsn, pg_table)
    seed.store_all({"pg:1": {"a": 1}})
    seed.close()
    with pg_store(postgres_dsn, pg_table) as store, cluster(2, maps=maps(store=store)) as grids:
        m = grids[1].get_map("users")
        assert m.get("pg:1") == {"a": 1}
        m.put("pg:2", [1, 2, 3])
        check = pg_store(postgres_dsn, pg_table)
        try:
            assert check.load("pg:2") == [1, 2, 3]
        finally:
            check.close()


def test_store_configuration_is_checked() -> None:
    with pytest.raises(peergrid.ConfigError, match="lacks"):
        MapConfig(store=object()).validate()
    with pytest.raises(peergrid.ConfigError, match="needs a store"):
        MapConfig(write_behind=peergrid.WriteBehindConfig()).validate()
    with cluster(1) as grids, pytest.raises(peergrid.ArgumentError, match="__peergrid"):
        grids[0].get_map("__peergrid.wb.x")


class GatedStore(DictStore):
    """A DictStore whose loads and writes wait for ``gate`` (so a test can change the cluster
    while a member waits on its store); ``entered`` is set once one is waiting."""

    def __init__(self, entries: Mapping[Any, Any] | None = None) -> None:
        super().__init__(entries)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def _wait(self) -> None:
        self.entered.set()
        if not self.gate.wait(30):
            raise peergrid.StoreError("the test never opened the gate", retryable=True)

    def load_all(self, keys: Collection[Any]) -> dict[Any, Any]:
        self._wait()
        return super().load_all(keys)

    def store(self, key: Any, value: Any) -> None:
        self._wait()
        super().store(key, value)

    def store_all(self, entries: Mapping[Any, Any]) -> None:
        self._wait()
        super().store_all(entries)


@contextlib.contextmanager
def _alone_while_the_store_answers(
    store: GatedStore, config: dict[str, MapConfig], call: Callable[[peergrid.Grid, str], Any]
) -> Iterator[tuple[peergrid.Grid, str, Callable[[], Partition], int, Any]]:
    """Run ``call(survivor, key)`` on a key the survivor owns. While it waits on the store, the
    survivor's only peer dies, and it loses quorum (min_cluster_size=2); then the store answers.
    Yields, inside the cluster: the survivor, the key, its partition (read now), the
    partition's version when the store answered, and what ``call`` returned or raised."""
    with cluster(2, maps=config, min_cluster_size=2) as grids:
        survivor, peer = grids
        keys = (f"user:{i}" for i in range(1000))
        key = next(k for k in keys if survivor.owner_of(k).uuid == survivor.uuid)
        node = survivor._node
        p = partition_of(encode_key(key), node.config.partition_count)

        def part() -> Partition:
            found = node.manager.readable[p]
            assert found is not None
            return found

        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(call(survivor, key))
            except peergrid.PeerGridError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        try:
            assert store.entered.wait(10)
            grids.kill(peer)
            wait_for(lambda: len(survivor.members()) == 1, 10, message="the dead peer removed")
            version = part().version
        finally:
            store.gate.set()
            worker.join(60)
        assert not worker.is_alive()
        yield survivor, key, part, version, outcome[0]


def test_a_value_loaded_after_quorum_was_lost_is_not_kept() -> None:
    # Keeping a loaded value is a write (a version, a backup write): a member that lost quorum or
    # its lease while the store answered may not make it alone (a version bumped on a minority
    # could name another write beyond the split). The read is asked again, and refused.
    store = GatedStore({f"user:{i}": i for i in range(1000)})
    with _alone_while_the_store_answers(store, maps(store=store), lambda g, k: g.get_map("users").get(k)) as (
        _,
        key,
        part,
        version,
        outcome,
    ):
        assert isinstance(outcome, peergrid.PeerGridError), outcome
        assert part().version == version
        assert part().maps.get("users") is None or part().maps["users"].peek(encode_key(key)) is None


def test_a_write_through_that_lost_quorum_during_its_store_call_is_not_applied() -> None:
    store = GatedStore()
    with _alone_while_the_store_answers(
        store, maps(store=store), lambda g, k: g.get_map("users").set(k, "new")
    ) as (_, key, part, version, outcome):
        assert isinstance(outcome, peergrid.PeerGridError), outcome
        assert part().version == version
        assert part().maps.get("users") is None or part().maps["users"].peek(encode_key(key)) is None
        assert store.snapshot() == {key: "new"}  # the store call was made: repeated when retried


def test_written_behind_entries_stay_queued_when_quorum_was_lost_during_the_store_call() -> None:
    store = GatedStore()
    config = maps(store=store, write_behind=peergrid.WriteBehindConfig(delay=0.05))
    with _alone_while_the_store_answers(store, config, lambda g, k: g.get_map("users").set(k, "behind")) as (
        survivor,
        key,
        part,
        _,
        outcome,
    ):
        assert outcome is None  # acknowledged before the store call: written behind
        wait_for(lambda: store.snapshot() == {key: "behind"}, 10, message="stored")
        version = part().version
        # Dequeuing is a write: without quorum the entry stays queued.
        assert survivor.get_map("users").local_stats().write_behind_pending == 1
        assert part().maps[queue_name("users")].peek(encode_key(key)) is not None
        assert part().version == version
        # Nor does a member without quorum store its queue again: the majority's owners hold it
        # too and store it, and a value written there since must not be overwritten from here.
        stores = store.calls["store_all"]

        async def flush() -> None:
            await survivor._node.stores.flush_due()

        survivor._node.run(flush(), timeout=10)
        assert store.calls["store_all"] == stores
        assert survivor.get_map("users").local_stats().write_behind_pending == 1
