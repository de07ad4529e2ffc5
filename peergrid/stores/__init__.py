"""Map stores: the database behind a map, for read-through, write-through and write-behind.

``MapStore`` is the protocol a store implements (``load``, ``load_all``,
``store``, ``store_all``, ``delete``, ``delete_all``); ``BaseMapStore`` builds
the batch methods from the single-key ones. Built in: ``DictStore`` (memory,
for tests) and ``SQLiteStore`` (a file or ``:memory:``).
"""

from __future__ import annotations

from peergrid.errors import StoreError
from peergrid.stores.base import BaseMapStore, MapStore
from peergrid.stores.memory import DictStore
from peergrid.stores.sqlite import SQLiteStore

__all__ = ["BaseMapStore", "DictStore", "MapStore", "SQLiteStore", "StoreError"]
