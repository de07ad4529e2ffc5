"""Map stores: the database behind a map, for read-through, write-through and write-behind.

``MapStore`` is the protocol a store implements (``load``, ``load_all``,
``store``, ``store_all``, ``delete``, ``delete_all``); ``BaseMapStore`` builds
the batch methods from the single-key ones. Built in: ``DictStore`` (memory,
for tests), ``SQLiteStore`` (a file or ``:memory:``) and ``PostgresStore``
(psycopg 3, the ``postgres`` extra; imported on first use). See
``docs/stores.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peergrid.errors import StoreError
from peergrid.stores.base import BaseMapStore, MapStore
from peergrid.stores.memory import DictStore
from peergrid.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from peergrid.stores.postgres import PostgresStore

__all__ = ["BaseMapStore", "DictStore", "MapStore", "PostgresStore", "SQLiteStore", "StoreError"]


def __getattr__(name: str) -> Any:
    # PostgresStore needs psycopg, an optional dependency: import it only when asked for.
    if name == "PostgresStore":
        try:
            from peergrid.stores.postgres import PostgresStore
        except ModuleNotFoundError as exc:
            if exc.name not in {"psycopg", "psycopg_binary"}:
                raise
            raise ImportError(
                "PostgresStore needs psycopg 3: pip install 'peergrid[postgres]'", name=exc.name
            ) from exc
        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
