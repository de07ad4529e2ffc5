"""The MapStore contract, run against every built-in store on real databases.

The PostgreSQL cases need a server: ``PEERGRID_TEST_POSTGRES_DSN`` names one
(``.ci/run`` starts one and sets it). Unset, the tests try a local default and
skip, saying why, when nothing answers there; set but unreachable, they fail.
"""

from __future__ import annotations

import enum
import os
import socket
import sqlite3
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import peergrid
from peergrid.serialization import encode_key
from peergrid.stores import BaseMapStore, DictStore, MapStore, SQLiteStore, StoreError
from tests.conftest import wait_for
from tests.strategies import keys, values

DSN_ENV = "PEERGRID_TEST_POSTGRES_DSN"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

examples = settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- helpers ----------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1, 1.0 and True are three values here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)  # keeps -0.0 apart from 0.0
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return same_dict(a, b)
    return bool(a == b)


def same_dict(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    """Same keys (by type too) mapped to same values, in any order."""
    return set(map(repr, a)) == set(map(repr, b)) and all(same(a[k], b[k]) for k in a)


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the stores under test ----------------------------------------------------


@dataclass
class Backend:
    """How to open one database's store; ``open`` again reaches the same data."""

    name: str
    open: Callable[[], Any]


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """A reachable server's DSN, or a skip (unset variable) / failure (set but unreachable)."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]'")
    from peergrid.stores.postgres import redacted

    given_dsn = os.environ.get(DSN_ENV)
    dsn = given_dsn or DEFAULT_DSN
    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        if given_dsn:
            pytest.fail(f"{DSN_ENV} names {redacted(dsn)!r}, which cannot be reached: {reason}")
        pytest.skip(
            f"no PostgreSQL server at {redacted(dsn)!r} ({reason}); set {DSN_ENV} to a server's DSN "
            "to run these tests (.ci/run starts one)"
        )
    return dsn


@pytest.fixture
def pg_table(postgres_dsn: str) -> Iterator[str]:
    """A table name no other test uses, dropped afterwards."""
    import psycopg

    table = f"peergrid_test_{uuid.uuid4().hex[:12]}"
    yield table
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def pg_store(dsn: str, table: str, **kwargs: Any) -> Any:
    from peergrid.stores.postgres import PostgresStore

    return PostgresStore(dsn, table=table, connect_timeout=3, **kwargs)


@pytest.fixture(params=["dict", "sqlite-memory", "sqlite-file", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    kind = request.param
    if kind == "dict":
        one = DictStore()
        make: Callable[[], Any] = lambda: one  # noqa: E731
    elif kind == "sqlite-memory":
        make = SQLiteStore
    elif kind == "sqlite-file":
        path = tmp_path / "stores.db"
        make = lambda: SQLiteStore(path, "users")  # noqa: E731
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        table = request.getfixturevalue("pg_table")
        make = lambda: pg_store(dsn, table)  # noqa: E731
    opened: list[Any] = []

    def open_store() -> Any:
        opened.append(make())
        return opened[-1]

    yield Backend(kind, open_store)
    for each in opened:  # close() is safe to call twice
        if hasattr(each, "close"):
            each.close()


@pytest.fixture
def store(backend: Backend) -> Iterator[Any]:
    opened = backend.open()
    yield opened
    if hasattr(opened, "close"):
        opened.close()


# -- the contract ---------------------------------------------------------------


def test_every_store_is_a_map_store(store) -> None:
    assert isinstance(store, MapStore)


@examples
@given(key=keys, value=values)
def test_round_trip_of_every_key_and_value_type(store, key, value) -> None:
    store.store(key, value)
    assert same(store.load(key), value)
    found = store.load_all([key])
    assert list(found) == [key]
    assert same(found[key], value)


@examples
@given(entries=st.dictionaries(keys, values, max_size=8), absent=st.lists(keys, max_size=4))
def test_batches_round_trip(store, entries, absent) -> None:
    absent = [k for k in absent if k not in entries]
    store.delete_all(absent)
    store.store_all(entries)
    assert same_dict(store.load_all([*entries, *absent]), entries)
    gone = list(entries)[::2]
    store.delete_all(gone)
    kept = {k: v for k, v in entries.items() if k not in gone}
    assert same_dict(store.load_all(list(entries)), kept)


def test_absent_keys(store) -> None:
    assert store.load("nobody") is None
    assert store.load_all(["nobody", b"nobody", 404]) == {}


def test_keys_of_different_types_are_different_keys(store) -> None:
    store.store_all({"1": "str", b"1": "bytes", 1: "int"})
    assert store.load_all([1, "1", b"1"]) == {1: "int", "1": "str", b"1": "bytes"}
    assert store.load(1) == "int"


def test_a_stored_none_loads_as_none_and_load_all_tells_it_from_absence(store) -> None:
    store.store("k", None)
    assert store.load("k") is None
    assert store.load_all(["k", "absent"]) == {"k": None}
    store.store_all({"n": None})
    assert store.load_all(["n"]) == {"n": None}


def test_empty_batches_change_nothing(store) -> None:
    store.store("k", 1)
    store.store_all({})
    store.delete_all([])
    assert store.load_all([]) == {}
    assert store.load("k") == 1


def test_overwrite(store) -> None:
    store.store("k", 1)
    store.store("k", "two")
    assert store.load("k") == "two"
    store.store_all({"k": [3], "j": 4})
    assert store.load_all(["k", "j"]) == {"k": [3], "j": 4}


def test_delete_of_absent_keys_is_quiet(store) -> None:
    store.delete("absent")
    store.store_all({"a": 1, "b": 2})
    store.delete_all(["absent", "a", "a"])
    assert store.load_all(["a", "b"]) == {"b": 2}
    store.delete("b")
    store.delete("b")
    assert store.load("b") is None


def test_duplicate_keys_in_a_batch(store) -> None:
    store.store("k", 1)
    assert store.load_all(["k", "k", "k"]) == {"k": 1}


def test_results_are_keyed_by_the_callers_keys(store) -> None:
    class Color(enum.StrEnum):
        RED = "red"

    store.store("red", 1)
    found = store.load_all([Color.RED])
    assert found == {"red": 1}
    assert type(next(iter(found))) is Color


def test_bad_keys_and_values_write_nothing(store) -> None:
    for bad_key in (1.5, None, True, ("t",)):
        with pytest.raises(peergrid.KeyTypeError):
            store.store(bad_key, 1)
        with pytest.raises(peergrid.KeyTypeError):
            store.load(bad_key)
    with pytest.raises(peergrid.SerializationError, match="complex"):
        store.store("k", complex(1, 2))
    with pytest.raises(peergrid.SerializationError):
        store.store_all({"a": 1, "b": object()})
    with pytest.raises(peergrid.SerializationError):
        store.store("big", 2**64)
    assert store.load_all(["k", "a", "b", "big"]) == {}


def test_a_store_keeps_a_copy_and_values_keep_their_types(store) -> None:
    value = {"a": [1]}
    store.store("k", value)
    value["a"].append(2)
    assert store.load("k") == {"a": [1]}
    store.store("t", (1, ("x", b"y")))
    assert store.load("t") == (1, ("x", b"y"))
    assert type(store.load("t")) is tuple


def test_concurrent_use_from_threads(store) -> None:
    workers, rounds = 8, 40
    start = threading.Barrier(workers)

    def work(worker: int) -> None:
        start.wait(timeout=10)
        for i in range(rounds):
            key = f"w{worker}:{i}"
            store.store(key, [worker, i])
            assert store.load(key) == [worker, i]
            store.store_all({f"w{worker}:batch": i, "shared": [worker, i]})
            assert store.load_all([key, f"w{worker}:batch"]) == {key: [worker, i], f"w{worker}:batch": i}
            if i % 2:
                store.delete(key)

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(work, w) for w in range(workers)]:
            future.result(timeout=60)

    expected = {f"w{w}:{i}": [w, i] for w in range(workers) for i in range(0, rounds, 2)}
    expected |= {f"w{w}:batch": rounds - 1 for w in range(workers)}
    wanted = [*expected, *(f"w{w}:{i}" for w in range(workers) for i in range(1, rounds, 2))]
    assert store.load_all(wanted) == expected
    worker, i = store.load("shared")
    assert 0 <= worker < workers
    assert 0 <= i < rounds


@pytest.mark.parametrize("backend", ["sqlite-file", "postgres"], indirect=True)
def test_data_persists_across_reopen(backend: Backend) -> None:
    first = backend.open()
    try:
        first.store_all({"a": {"n": 1}, 2: None, b"c": [1.5]})
        first.store("d", "gone")
        first.delete("d")
    finally:
        first.close()
    second = backend.open()
    try:
        assert same_dict(second.load_all(["a", 2, b"c", "d"]), {"a": {"n": 1}, 2: None, b"c": [1.5]})
    finally:
        second.close()


@pytest.mark.parametrize("backend", ["sqlite-memory", "sqlite-file", "postgres"], indirect=True)
def test_a_closed_store_refuses_calls_and_closes_twice(backend: Backend) -> None:
    closed = backend.open()
    closed.store("k", 1)
    closed.close()
    closed.close()
    for call in (lambda: closed.load("k"), lambda: closed.store("k", 2), lambda: closed.load_all(["k"])):
        with pytest.raises(StoreError, match="closed") as caught:
            call()
        assert not caught.value.retryable


# -- DictStore and BaseMapStore ----------------------------------------------------


def test_dict_store_counts_calls_and_shows_its_contents() -> None:
    store = DictStore({"seed": 1})
    store.load("seed")
    store.load("x")
    store.store_all({"a": [1]})
    assert store.calls == {"load": 2, "store_all": 1}
    assert store.snapshot() == {"seed": 1, "a": [1]}
    assert len(store) == 2


class _Upper(BaseMapStore):
    """A store over a plain dict, with only the three single-key methods written."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}

    def load(self, key):
        return self.data.get(key)

    def store(self, key, value):
        self.data[key] = value

    def delete(self, key):
        self.data.pop(key, None)


def test_base_map_store_builds_the_batch_methods() -> None:
    store = _Upper()
    assert isinstance(store, MapStore)
    store.store_all({"a": 1, "b": None, "c": 3})
    assert store.load_all(["a", "b", "c", "x"]) == {"a": 1, "c": 3}  # None is "not found" via load
    store.delete_all(["a", "x"])
    assert store.data == {"b": None, "c": 3}


def test_base_map_store_needs_the_single_key_methods() -> None:
    class Incomplete(BaseMapStore):
        def load(self, key):
            return None

    with pytest.raises(TypeError, match="store"):
        Incomplete()  # type: ignore[abstract]


# -- SQLite ------------------------------------------------------------------------


def test_sqlite_table_layout(tmp_path) -> None:
    path = tmp_path / "layout.db"
    with SQLiteStore(path, "users") as store:
        store.store_all({"user:1": {"name": "Alice"}, 7: "seven", b"\x00\xff": None})
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        rows = conn.execute("SELECT key, key_text, value FROM peergrid_users ORDER BY key_text").fetchall()
    assert rows == [
        (encode_key(b"\x00\xff"), "00ff", msgpack.packb(None)),
        (encode_key(7), "7", msgpack.packb("seven")),
        (encode_key("user:1"), "user:1", msgpack.packb({"name": "Alice"})),
    ]


def test_sqlite_maps_share_a_file_in_their_own_tables(tmp_path) -> None:
    path = tmp_path / "shared.db"
    with SQLiteStore(path, "users") as users, SQLiteStore(path, table="my orders") as orders:
        users.store("k", "user")
        orders.store("k", "order")
        assert (users.load("k"), orders.load("k")) == ("user", "order")


def test_sqlite_two_connections_write_one_file_at_once(tmp_path) -> None:
    path = tmp_path / "busy.db"
    with SQLiteStore(path, "m") as one, SQLiteStore(path, "m") as two:
        start = threading.Barrier(2)

        def write(store: SQLiteStore, tag: str) -> None:
            start.wait(timeout=10)
            for i in range(50):
                store.store_all({f"{tag}{i}": i, f"{tag}{i}b": i})

        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(write, one, "x"), pool.submit(write, two, "y")]:
                future.result(timeout=60)
        assert len(one.load_all([f"{t}{i}" for t in "xy" for i in range(50)])) == 100


def test_sqlite_a_held_lock_is_a_retryable_store_error(tmp_path) -> None:
    path = tmp_path / "locked.db"
    with SQLiteStore(path, "m", busy_timeout=0.05) as store:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match="locked") as caught:
                store.store_all({"a": 1})
            assert caught.value.retryable
            other.execute("ROLLBACK")
            store.store_all({"a": 1})  # the same call passes once the lock is gone
        finally:
            other.close()
        assert store.load("a") == 1


def test_sqlite_a_path_that_cannot_be_opened(tmp_path) -> None:
    path = tmp_path / "missing-dir" / "x.db"
    with pytest.raises(StoreError, match="missing-dir") as caught:
        SQLiteStore(path)
    assert not caught.value.retryable
    not_a_db = tmp_path / "text.db"
    not_a_db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a database"):
        SQLiteStore(not_a_db)


def test_sqlite_a_row_that_is_not_msgpack(tmp_path) -> None:
    path = tmp_path / "foreign.db"
    with SQLiteStore(path, "m") as store:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("INSERT INTO peergrid_m VALUES (?, 'k', ?)", (encode_key("k"), b"\xc1"))
        with pytest.raises(StoreError, match="'k' does not hold a msgpack value"):
            store.load("k")


def test_sqlite_load_all_of_more_keys_than_sqlite_takes_parameters() -> None:
    with SQLiteStore() as store:
        many = {i: i for i in range(40_000)}
        store.store_all(many)
        assert store.load_all(list(many)) == many
        store.delete_all(list(many))
        assert store.load_all(list(many)) == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"table": ""}, "non-empty"),
        ({"table": "a\x00b"}, "NUL"),
        ({"map_name": "m" * 60}, "longer than 63 bytes"),
        ({"busy_timeout": -1}, "busy_timeout"),
    ],
)
def test_sqlite_bad_configuration(kwargs, match) -> None:
    with pytest.raises(peergrid.ConfigError, match=match):
        SQLiteStore(**kwargs)


# -- PostgreSQL --------------------------------------------------------------------


def test_postgres_unreachable_server_is_a_retryable_store_error_without_the_password() -> None:
    pytest.importorskip("psycopg")
    from peergrid.stores.postgres import redacted

    port = free_port()
    store = pg_store(f"postgresql://app:s3cret@127.0.0.1:{port}/app", "t")
    with store, pytest.raises(StoreError) as caught:
        store.load("k")
    error = caught.value
    assert error.retryable
    assert "cannot connect to PostgreSQL" in str(error)
    assert f"port={port}" in str(error)
    assert "127.0.0.1" in str(error)
    assert "s3cret" not in str(error) + error.store + repr(store)
    assert "pw" not in redacted("postgresql://u:pw@h/d?sslpassword=pw&sslmode=require")
    assert isinstance(error, peergrid.PeerGridError)


def test_postgres_wrong_credentials_or_database_are_final(postgres_dsn) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(postgres_dsn)
    if "password" not in params:
        pytest.skip("the test server takes no password")
    with pg_store(make_conninfo(postgres_dsn, password="wrong"), "t") as store:
        with pytest.raises(StoreError, match="password authentication failed") as caught:
            store.load("k")
        assert not caught.value.retryable
        assert "wrong" not in str(caught.value)
    with pg_store(make_conninfo(postgres_dsn, dbname="no_such_db"), "t") as store:
        with pytest.raises(StoreError, match="no_such_db") as caught:
            store.load("k")
        assert not caught.value.retryable


def test_postgres_bad_dsn_and_configuration() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(peergrid.ConfigError, match="connection string"):
        pg_store("nonsense", "t")
    with pytest.raises(peergrid.ConfigError, match="pool_size"):
        pg_store("host=localhost", "t", pool_size=0)
    with pytest.raises(peergrid.ConfigError, match="statement_timeout"):
        pg_store("host=localhost", "t", statement_timeout=0)


def test_postgres_table_layout(postgres_dsn, pg_table) -> None:
    import psycopg

    with pg_store(postgres_dsn, pg_table) as store:
        store.store_all({"user:1": {"name": "Alice"}, 7: "seven", "nul\x00key": 1})
    with psycopg.connect(postgres_dsn) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position",
            (pg_table,),
        ).fetchall()
        rows = conn.execute(f'SELECT key, key_text, value FROM "{pg_table}" ORDER BY key_text').fetchall()
    assert columns == [("key", "bytea"), ("key_text", "text"), ("value", "bytea")]
    assert rows == [
        (encode_key(7), "7", msgpack.packb("seven")),
        (encode_key("nul\x00key"), "nul\ufffdkey", msgpack.packb(1)),
        (encode_key("user:1"), "user:1", msgpack.packb({"name": "Alice"})),
    ]


def test_postgres_a_table_of_another_shape_is_a_final_error(postgres_dsn, pg_table) -> None:
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{pg_table}" (id int)')
    with pg_store(postgres_dsn, pg_table) as store, pytest.raises(StoreError, match=pg_table) as caught:
        store.load("k")
    assert not caught.value.retryable
    assert str(caught.value).endswith('load failed: column "value" does not exist')


def test_postgres_uses_a_table_made_for_it_in_a_schema_it_may_not_create_in(postgres_dsn) -> None:
    import psycopg
    from psycopg.conninfo import make_conninfo

    schema = f"peergrid_ro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            admin.execute(
                f'CREATE TABLE "{schema}".peergrid_users '
                "(key BYTEA PRIMARY KEY, key_text TEXT NOT NULL, value BYTEA NOT NULL)"
            )
            admin.execute(f'REVOKE CREATE ON SCHEMA "{schema}" FROM CURRENT_USER')
            dsn = make_conninfo(postgres_dsn, options=f"-csearch_path={schema}")
            with pg_store(dsn, "peergrid_users") as store:
                store.store("k", 1)
                assert store.load("k") == 1
            denied = pytest.raises(StoreError, match="permission denied")
            with pg_store(dsn, "peergrid_orders") as store, denied:
                store.load("k")  # its table is missing, and may not be created
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_postgres_members_creating_one_table_at_once(postgres_dsn, pg_table) -> None:
    stores = [pg_store(postgres_dsn, pg_table) for _ in range(6)]
    start = threading.Barrier(len(stores))

    def first_call(i: int) -> None:
        start.wait(timeout=10)
        stores[i].store(i, i)

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            for future in [pool.submit(first_call, i) for i in range(len(stores))]:
                future.result(timeout=60)
        assert stores[0].load_all(range(6)) == {i: i for i in range(6)}
    finally:
        for s in stores:
            s.close()


def test_postgres_connections_dropped_by_the_server_are_replaced(postgres_dsn, pg_table) -> None:
    import psycopg
    from psycopg.conninfo import make_conninfo

    app = f"peergrid-test-{uuid.uuid4().hex[:8]}"
    sessions = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
    waiting = sessions + " AND wait_event_type = 'Lock'"
    with (
        pg_store(make_conninfo(postgres_dsn, application_name=app), pg_table, pool_size=3) as store,
        psycopg.connect(postgres_dsn, autocommit=True) as admin,
    ):
        store.store("k", 1)
        # Fill the pool: three loads at once, held on a lock until all three wait.
        with psycopg.connect(postgres_dsn) as locker, ThreadPoolExecutor(3) as pool:
            locker.execute(f'LOCK TABLE "{pg_table}" IN ACCESS EXCLUSIVE MODE')
            loads = [pool.submit(store.load, "k") for _ in range(3)]
            wait_for(lambda: len(admin.execute(waiting, (app,)).fetchall()) == 3, message="three loads wait")
            locker.rollback()
            assert [f.result(timeout=10) for f in loads] == [1, 1, 1]
        # As after a server restart: every pooled connection is gone.
        pids = [pid for (pid,) in admin.execute(sessions, (app,)).fetchall()]
        assert len(pids) == 3
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: not admin.execute(sessions, (app,)).fetchall(), message="backends gone")
        assert store.load("k") == 1
        assert len(admin.execute(sessions, (app,)).fetchall()) == 1


def test_postgres_statement_timeout_is_retryable(postgres_dsn, pg_table) -> None:
    import psycopg

    with pg_store(postgres_dsn, pg_table, statement_timeout=0.2) as store:
        store.store("k", 1)
        with psycopg.connect(postgres_dsn) as locker:
            locker.execute(f'LOCK TABLE "{pg_table}" IN ACCESS EXCLUSIVE MODE')
            with pytest.raises(StoreError, match="statement timeout") as caught:
                store.load("k")
            assert caught.value.retryable
            locker.rollback()
        assert store.load("k") == 1


def test_postgres_a_busy_pool_is_retryable(postgres_dsn, pg_table) -> None:
    import psycopg
    from psycopg.conninfo import make_conninfo

    app = f"peergrid-test-{uuid.uuid4().hex[:8]}"
    dsn = make_conninfo(postgres_dsn, application_name=app)
    with pg_store(dsn, pg_table, pool_size=1, pool_timeout=0.2) as store:
        store.store("k", 1)
        with psycopg.connect(postgres_dsn) as locker, ThreadPoolExecutor(1) as pool:
            locker.execute(f'LOCK TABLE "{pg_table}" IN ACCESS EXCLUSIVE MODE')
            first = pool.submit(store.load, "k")  # holds the only connection, waiting for the lock
            waiting = (
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
            )
            with psycopg.connect(postgres_dsn, autocommit=True) as admin:
                wait_for(lambda: admin.execute(waiting, (app,)).fetchall(), message="the first load waits")
            with pytest.raises(StoreError, match="busy") as caught:
                store.load("k")
            assert caught.value.retryable
            locker.rollback()
            assert first.result(timeout=10) == 1
        assert store.load("k") == 1
