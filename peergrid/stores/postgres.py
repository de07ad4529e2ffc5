"""``PostgresStore``: a ``MapStore`` in a PostgreSQL table, over psycopg 3.

Needs the ``postgres`` extra: ``pip install 'peergrid[postgres]'``. One table
per map, created on first use if missing::

    CREATE TABLE peergrid_users (
        key      BYTEA PRIMARY KEY,  -- peergrid.serialization.encode_key(key)
        key_text TEXT NOT NULL,      -- the key as text, for people reading the table
        value    BYTEA NOT NULL      -- msgpack
    )

The store keeps a few connections (``pool_size``) and lends each call one of
them for its whole duration, so calls from different threads run in parallel.
Nothing connects until the first call: a store made while the database is down
raises its retryable ``StoreError`` on use, not at construction.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any, Self, TypeVar

import psycopg
from psycopg import conninfo, sql

from peergrid.errors import ConfigError, StoreError
from peergrid.serialization import Key
from peergrid.stores._rows import Row, RowCodec, table_name

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

#: SQLSTATE classes of operational errors that retrying does not cure: the
#: credentials (28) or the database name (3D) are wrong.
_FINAL_SQLSTATE_CLASSES = ("28", "3D")
#: The same for failed connections, which libpq reports without a SQLSTATE:
#: PostgreSQL's (English) words for them.
_FINAL_CONNECT_ERRORS = (
    "authentication failed",
    "no password supplied",
    "no pg_hba.conf entry",
    "does not exist",  # the database or the role
)


def _parse(dsn: str) -> dict[str, Any]:
    try:
        return conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"not a PostgreSQL connection string or URL: {exc}") from exc


def redacted(dsn: str) -> str:
    """``dsn`` as ``key=value`` pairs without the passwords, for messages and logs.

    Raises ``ConfigError`` when ``dsn`` is not a connection string or URL.
    """
    params = _parse(dsn)
    params.pop("password", None)
    params.pop("sslpassword", None)  # the client key's passphrase
    return conninfo.make_conninfo("", **params)


class _Pool:
    """At most ``size`` connections, lent out one call at a time."""

    def __init__(self, connect: Callable[[], Connection], size: int, timeout: float, name: str) -> None:
        self._connect = connect
        self.size = size
        self._timeout = timeout
        self._name = name
        self._cond = threading.Condition()
        self._idle: list[Connection] = []  # guarded by _cond
        self._open = 0  # connections idle or lent out (or being opened); guarded by _cond
        self._closed = False  # guarded by _cond

    def acquire(self) -> tuple[Connection, bool]:
        """A connection and whether it was used before; opens one when none is idle."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._closed or self._idle or self._open < self.size, self._timeout
            ):
                raise StoreError(
                    f"{self._name}: all {self.size} connections stayed busy for {self._timeout}s "
                    f"(raise pool_size or pool_timeout)",
                    retryable=True,
                    store=self._name,
                )
            if self._closed:
                raise StoreError(f"{self._name} is closed", store=self._name)
            if self._idle:
                return self._idle.pop(), True
            self._open += 1
        try:
            return self._connect(), False
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def release(self, conn: Connection) -> None:
        """Take a connection back; a broken one, or one still in a transaction, is closed."""
        healthy = not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._cond:
            keep = healthy and not self._closed
            if keep:
                self._idle.append(conn)
            else:
                self._open -= 1
            self._cond.notify()
        if not keep:
            conn.close()

    def close(self) -> None:
        """Close the idle connections now, and each lent one when it comes back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()


class PostgresStore:
    """A ``MapStore`` in a PostgreSQL table.

    ``dsn`` is a libpq connection string or URL
    (``"postgresql://app:secret@db.internal:5432/app"``). ``map_name`` names the
    table, ``peergrid_<map_name>``, unless ``table`` is given; it lives in the
    connection's ``search_path`` (set another schema with
    ``options=-csearch_path=myschema`` in the DSN). Timings are in seconds:
    ``connect_timeout`` bounds each connection attempt, ``statement_timeout``
    each statement (None: no limit), and ``pool_timeout`` the wait for a free
    connection when all ``pool_size`` are in use.

    Every failure is a ``StoreError`` naming the server (never the password),
    retryable when the server was unreachable, restarting or busy. Pooled
    connections the server has dropped (after a restart) are replaced and the
    call run again, which is safe because every call is idempotent. Batches run in one
    transaction. Thread-safe. ``close()`` (also on leaving a ``with`` block)
    closes the connections; it is safe to call twice.
    """

    def __init__(
        self,
        dsn: str,
        map_name: str = "default",
        *,
        table: str | None = None,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = 30.0,
        pool_timeout: float = 30.0,
    ) -> None:
        if pool_size < 1:
            raise ConfigError(f"pool_size must be at least 1, got {pool_size!r}")
        for label, seconds in (("connect_timeout", connect_timeout), ("pool_timeout", pool_timeout)):
            if not seconds > 0:
                raise ConfigError(f"{label} must be a positive number of seconds, got {seconds!r}")
        if statement_timeout is not None and not statement_timeout > 0:
            raise ConfigError(
                f"statement_timeout must be positive seconds or None, not {statement_timeout!r}"
            )
        self.table = table_name(map_name, table)
        self.server = redacted(dsn)
        # Name the connections in pg_stat_activity, unless the DSN already does.
        name = {} if "application_name" in _parse(dsn) else {"application_name": "peergrid"}
        whole_seconds = max(1, math.ceil(connect_timeout))  # what libpq takes
        self._conninfo = conninfo.make_conninfo(dsn, connect_timeout=whole_seconds, **name)
        # 0 turns PostgreSQL's statement timeout off.
        self._statement_timeout_ms = (
            0 if statement_timeout is None else max(1, round(statement_timeout * 1000))
        )
        self._name = f"PostgreSQL store {self.table!r} at {self.server!r}"
        self._codec = RowCodec(self._name)
        self._pool = _Pool(self._connect, pool_size, pool_timeout, self._name)
        self._table_ready = False  # set once, under _table_lock
        self._table_lock = threading.Lock()
        ident = sql.Identifier(self.table)
        self._select_one = sql.SQL("SELECT value FROM {} WHERE key = %s").format(ident)
        self._select_many = sql.SQL("SELECT key, value FROM {} WHERE key = ANY(%s)").format(ident)
        self._upsert = sql.SQL(
            "INSERT INTO {} (key, key_text, value) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET key_text = EXCLUDED.key_text, value = EXCLUDED.value"
        ).format(ident)
        self._delete_one = sql.SQL("DELETE FROM {} WHERE key = %s").format(ident)
        self._delete_many = sql.SQL("DELETE FROM {} WHERE key = ANY(%s)").format(ident)
        self._create = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} "
            "(key BYTEA PRIMARY KEY, key_text TEXT NOT NULL, value BYTEA NOT NULL)"
        ).format(ident)

    # -- connections -------------------------------------------------------

    def _connect(self) -> Connection:
        try:
            # autocommit: single statements commit; batches open a transaction.
            conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._error(f"cannot connect to PostgreSQL at {self.server!r}", exc) from exc
        try:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)", (str(self._statement_timeout_ms),)
            )
        except psycopg.Error as exc:
            conn.close()
            raise self._error(f"{self._name}: setting up a connection failed", exc) from exc
        return conn

    def _ensure_table(self, conn: Connection) -> None:
        if self._table_ready:
            return
        with self._table_lock:
            if self._table_ready:
                return
            # Look before creating: CREATE ... IF NOT EXISTS needs the CREATE
            # privilege even when the table is there, and an application may
            # own its table while its role may not create one.
            exists = conn.execute("SELECT to_regclass(quote_ident(%s))", (self.table,)).fetchone()
            if exists is None or exists[0] is None:
                with conn.transaction():
                    # Members starting together would race on the catalog; one at a time.
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("peergrid:" + self.table,))
                    conn.execute(self._create)
            self._table_ready = True

    def _run(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on a pooled connection, translating psycopg's errors."""
        # A restarted server leaves every idle connection dead; each attempt
        # that finds one closes it, so a fresh connection comes after at most
        # `size` of them. Running a call again is safe: every call is idempotent.
        for _ in range(self._pool.size + 1):
            conn, reused = self._pool.acquire()
            try:
                self._ensure_table(conn)
                result = work(conn)
            except psycopg.Error as exc:
                self._pool.release(conn)
                if reused and conn.closed:
                    continue  # the server dropped this idle connection: try another
                raise self._error(f"{self._name}: {what} failed", exc) from exc
            except BaseException:
                conn.close()
                self._pool.release(conn)
                raise
            self._pool.release(conn)
            return result
        raise StoreError(  # pragma: no cover - only if the pool hands out dead connections forever
            f"{self._name}: {what} failed: every pooled connection was dropped",
            retryable=True,
            store=self._name,
        )

    def _error(self, message: str, exc: psycopg.Error) -> StoreError:
        # The server's own message when there is one (str(exc) adds the query
        # and a caret); else libpq's, which spans lines.
        detail = exc.diag.message_primary or " ".join(str(exc).split())
        if exc.sqlstate:
            final = exc.sqlstate.startswith(_FINAL_SQLSTATE_CLASSES)
        else:
            final = any(words in detail for words in _FINAL_CONNECT_ERRORS)
        retryable = isinstance(exc, psycopg.OperationalError) and not final
        return StoreError(f"{message}: {detail}", retryable=retryable, store=self._name)

    # -- the MapStore methods ----------------------------------------------

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
        rows = self._run("load_all", lambda conn: conn.execute(self._select_many, (list(wanted),)).fetchall())
        return self._codec.found(rows, wanted)

    def store(self, key: Key, value: Any) -> None:
        """Store ``value`` under ``key`` (an upsert)."""
        row = self._codec.row(key, value)
        self._run("store", lambda conn: conn.execute(self._upsert, row))

    def store_all(self, entries: Mapping[Key, Any]) -> None:
        """Store every entry in one transaction (nothing when one cannot be serialized)."""
        rows = self._codec.rows(entries)
        if rows:
            self._run("store_all", lambda conn: self._store_rows(conn, rows))

    def _store_rows(self, conn: Connection, rows: list[Row]) -> None:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(self._upsert, rows)

    def delete(self, key: Key) -> None:
        """Remove ``key`` if present."""
        encoded = self._codec.key(key)
        self._run("delete", lambda conn: conn.execute(self._delete_one, (encoded,)))

    def delete_all(self, keys: Collection[Key]) -> None:
        """Remove every one of ``keys`` that is present, in one statement."""
        encoded = list(self._codec.keys(keys))
        if encoded:
            self._run("delete_all", lambda conn: conn.execute(self._delete_many, (encoded,)))

    def close(self) -> None:
        """Close the connections; later calls raise ``StoreError``. Safe to call twice."""
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.server!r}, table={self.table!r})"
