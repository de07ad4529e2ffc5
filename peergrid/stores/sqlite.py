"""``SQLiteStore``: the embedded default ``MapStore``, over Python's ``sqlite3``.

One table per map::

    CREATE TABLE "peergrid_users" (
        key      BLOB PRIMARY KEY,  -- peergrid.serialization.encode_key(key)
        key_text TEXT NOT NULL,     -- the key as text, for people reading the table
        value    BLOB NOT NULL      -- msgpack
    ) WITHOUT ROWID

One connection per store, shared by every thread under a lock: SQLite runs
one writer at a time anyway, and a ``:memory:`` database exists only inside
its one connection. A file database is put in WAL mode, so other processes
may read it while this one writes; writers wait up to ``busy_timeout`` for one
another.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any, Self, TypeVar

from peergrid.errors import ConfigError, StoreError
from peergrid.serialization import Key
from peergrid.stores._rows import RowCodec, table_name

T = TypeVar("T")

#: SQLite result codes after which the same call may pass: another connection
#: holds the lock (SQLITE_BUSY, SQLITE_LOCKED).
_RETRYABLE_CODES = frozenset({5, 6})


class SQLiteStore:
    """A ``MapStore`` in a SQLite database: a file path, or ``":memory:"`` (the default).

    ``map_name`` names the table, ``peergrid_<map_name>``, unless ``table`` is
    given; it is created if missing, so several maps can share one file.
    ``busy_timeout`` is how long, in seconds, a write waits for another
    connection's write to finish before it fails with a retryable
    ``StoreError``. Batches run in one transaction. Thread-safe. ``close()``
    (also on leaving a ``with`` block) closes the connection; it is safe to
    call twice.

    Raises ``StoreError`` when the database cannot be opened (a missing
    directory, no permission, a file that is not a database).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        map_name: str = "default",
        *,
        table: str | None = None,
        busy_timeout: float = 5.0,
    ) -> None:
        if busy_timeout < 0:
            raise ConfigError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        self.path = os.fspath(path)
        self.table = table_name(map_name, table)
        self._name = f"SQLite store {self.table!r} in {self.path!r}"
        self._codec = RowCodec(self._name)
        self._lock = threading.Lock()  # guards _conn and every use of it
        self._conn: sqlite3.Connection | None = None
        quoted = '"' + self.table.replace('"', '""') + '"'
        # The table name is a quoted identifier written by the application,
        # never data, so formatting it into the statements is safe.
        self._create = (
            f"CREATE TABLE IF NOT EXISTS {quoted} "
            "(key BLOB PRIMARY KEY, key_text TEXT NOT NULL, value BLOB NOT NULL) WITHOUT ROWID"
        )
        self._select_one = f"SELECT value FROM {quoted} WHERE key = ?"  # noqa: S608
        self._select_many = f"SELECT key, value FROM {quoted} WHERE key IN "  # noqa: S608
        self._upsert = (
            f"INSERT INTO {quoted} (key, key_text, value) VALUES (?, ?, ?) "  # noqa: S608
            "ON CONFLICT (key) DO UPDATE SET key_text = excluded.key_text, value = excluded.value"
        )
        self._delete = f"DELETE FROM {quoted} WHERE key = ?"  # noqa: S608
        self._conn = self._open(busy_timeout)

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            # isolation_level=None: statements autocommit; batches BEGIN IMMEDIATE
            # themselves, so a batch takes the write lock before it reads anything.
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(self._create)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise self._error("open", exc) from exc
        return conn

    def _run(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the connection, under the lock, translating SQLite's errors."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"{self._name} is closed", store=self._name)
            try:
                return work(self._conn)
            except sqlite3.Error as exc:
                raise self._error(what, exc) from exc

    def _error(self, what: str, exc: sqlite3.Error) -> StoreError:
        code = getattr(exc, "sqlite_errorcode", None)
        retryable = code is not None and code & 0xFF in _RETRYABLE_CODES
        return StoreError(f"{self._name}: {what} failed: {exc}", retryable=retryable, store=self._name)

    @staticmethod
    def _batch(conn: sqlite3.Connection, sql: str, rows: list[Any]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def load(self, key: Key) -> Any:
        """The stored value of ``key``, or None when absent (or stored as None)."""
        encoded = self._codec.key(key)
        row = self._run("load", lambda conn: conn.execute(self._select_one, (encoded,)).fetchone())
        return None if row is None else self._codec.value(encoded, row[0])

    def load_all(self, keys: Collection[Key]) -> dict[Key, Any]:
        """The stored values of those of ``keys`` held here; a stored None is included."""
        wanted = self._codec.keys(keys)
        if not wanted:
            return {}

        def select(conn: sqlite3.Connection) -> list[tuple[bytes, bytes]]:
            # At most as many keys per query as SQLite takes parameters.
            step = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            encoded = list(wanted)
            rows: list[tuple[bytes, bytes]] = []
            for start in range(0, len(encoded), step):
                chunk = encoded[start : start + step]
                sql = self._select_many + "(" + ",".join("?" * len(chunk)) + ")"
                rows.extend(conn.execute(sql, chunk).fetchall())
            return rows

        return self._codec.found(self._run("load_all", select), wanted)

    def store(self, key: Key, value: Any) -> None:
        """Store ``value`` under ``key`` (an upsert)."""
        row = self._codec.row(key, value)
        self._run("store", lambda conn: conn.execute(self._upsert, row))

    def store_all(self, entries: Mapping[Key, Any]) -> None:
        """Store every entry in one transaction (nothing when one cannot be serialized)."""
        rows = self._codec.rows(entries)
        if rows:
            self._run("store_all", lambda conn: self._batch(conn, self._upsert, rows))

    def delete(self, key: Key) -> None:
        """Remove ``key`` if present."""
        encoded = self._codec.key(key)
        self._run("delete", lambda conn: conn.execute(self._delete, (encoded,)))

    def delete_all(self, keys: Collection[Key]) -> None:
        """Remove every one of ``keys`` that is present, in one transaction."""
        rows = [(encoded,) for encoded in self._codec.keys(keys)]
        if rows:
            self._run("delete_all", lambda conn: self._batch(conn, self._delete, rows))

    def close(self) -> None:
        """Close the connection; later calls raise ``StoreError``. Safe to call twice."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, table={self.table!r})"
