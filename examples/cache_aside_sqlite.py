"""A service's cache in front of SQLite: read-through and write-through, in two members.

    python examples/cache_aside_sqlite.py

The "users" map is backed by a SQLite table: a get that misses loads from
the database (once, however many callers miss at the same time), and a put
writes the database before it returns. The service code only talks to the map.
"""

import tempfile
from pathlib import Path

import peergrid
from peergrid.stores import SQLiteStore

with tempfile.TemporaryDirectory() as tmp:
    database = Path(tmp) / "users.db"
    seed = SQLiteStore(database, "users")  # the system of record, as the rest of the company sees it
    seed.store_all({f"user:{i}": {"id": i, "name": f"user {i}"} for i in range(100)})

    def users_map() -> peergrid.MapConfig:
        # Each member opens the database itself, as separate service processes would.
        return peergrid.MapConfig(store=SQLiteStore(database, "users"), ttl=300)

    with (
        peergrid.Grid(cluster="cache-aside", maps={"users": users_map()}) as a,
        peergrid.Grid(cluster="cache-aside", members=[a.address], maps={"users": users_map()}) as b,
    ):
        users = a.get_map("users")
        print("read through the cache:", users.get("user:42"))
        print("batch read:", len(b.get_map("users").get_all([f"user:{i}" for i in range(100)])), "users")
        b.get_map("users").put("user:42", {"id": 42, "name": "renamed"})
        print("written through to SQLite:", seed.load("user:42"))
        print("loads from SQLite so far:", users.stats().total.store_loads)
    seed.close()
