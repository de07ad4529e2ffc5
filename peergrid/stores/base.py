"""The ``MapStore`` protocol: how a map reads from and writes to the system of record.

A map configured with a store loads the keys it misses from it (read-through)
and passes its writes on to it (write-through or write-behind). The grid calls
a store's methods on worker threads, never on its event loop, so they are plain
blocking methods and a store must be safe to call from several threads at once.

Keys are the user's keys (``str``, ``bytes`` or ``int``) and values the user's
values (what the default serializer carries: None, bool, int, float, str,
bytes, list, dict, tuple, set, frozenset, datetime, date, time, timedelta,
UUID, Decimal and registered types, nested), never peergrid's encoded bytes.

``None`` means "no value", as ``null`` does for Hazelcast's ``MapLoader``:
``load`` returns None for a key the store does not hold, so a key stored with
the value None loads as None too, and the grid treats both as a miss. The batch
form is exact: ``load_all`` leaves out the keys it does not hold and maps a key
stored with the value None to None. Whoever must tell a stored None from an
absent key asks ``load_all([key])`` and tests ``key in result``. The built-in
stores keep that distinction; ``BaseMapStore.load_all``, built on ``load``,
cannot, and leaves such keys out.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping
from typing import Any, Protocol, runtime_checkable

from peergrid.serialization import Key


@runtime_checkable
class MapStore(Protocol):
    """The database behind a map. Every method may be called from several threads at once.

    Failures are raised as ``peergrid.StoreError`` (with ``retryable`` set),
    bad keys as ``KeyTypeError`` and values the store cannot hold as
    ``SerializationError``; other exceptions are treated as bugs in the store.
    Every method must be idempotent: the grid may repeat a call after a
    failure whose outcome it could not see.
    """

    def load(self, key: Key) -> Any:
        """The value stored under ``key``, or None when the store holds none."""
        ...

    def load_all(self, keys: Collection[Key]) -> dict[Key, Any]:
        """The stored values of those of ``keys`` the store holds (absent keys left out)."""
        ...

    def store(self, key: Key, value: Any) -> None:
        """Store ``value`` under ``key``, replacing any value stored there."""
        ...

    def store_all(self, entries: Mapping[Key, Any]) -> None:
        """Store every entry; all or none of them if the store has transactions."""
        ...

    def delete(self, key: Key) -> None:
        """Remove ``key``; nothing happens when it is absent."""
        ...

    def delete_all(self, keys: Collection[Key]) -> None:
        """Remove every one of ``keys``; absent keys are skipped."""
        ...


class BaseMapStore(abc.ABC):
    """A ``MapStore`` from three single-key methods: subclass it and write ``load``, ``store``, ``delete``.

    The batch methods call the single-key ones in a loop, one key at a time
    and without a transaction: override them when the system of record has a
    batch form (an ``IN`` query, ``executemany``, a multi-get). ``load_all``
    leaves out the keys whose ``load`` returned None.
    """

    @abc.abstractmethod
    def load(self, key: Key) -> Any:
        """The value stored under ``key``, or None when the store holds none."""

    @abc.abstractmethod
    def store(self, key: Key, value: Any) -> None:
        """Store ``value`` under ``key``, replacing any value stored there."""

    @abc.abstractmethod
    def delete(self, key: Key) -> None:
        """Remove ``key``; nothing happens when it is absent."""

    def load_all(self, keys: Collection[Key]) -> dict[Key, Any]:
        """``load`` for each key; the keys that loaded as None are left out."""
        found: dict[Key, Any] = {}
        for key in keys:
            value = self.load(key)
            if value is not None:
                found[key] = value
        return found

    def store_all(self, entries: Mapping[Key, Any]) -> None:
        """``store`` for each entry, in the mapping's order."""
        for key, value in entries.items():
            self.store(key, value)

    def delete_all(self, keys: Collection[Key]) -> None:
        """``delete`` for each key."""
        for key in keys:
            self.delete(key)
