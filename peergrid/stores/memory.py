"""``DictStore``: a ``MapStore`` in a dict, for tests, examples and docs."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

from peergrid.serialization import Key, decode_key
from peergrid.stores._rows import RowCodec


class DictStore:
    """A ``MapStore`` that keeps its entries in memory, as a database would: serialized.

    Values are stored as msgpack bytes, so a store holds a copy (changing a
    dict after storing it changes nothing stored), refuses the values the
    default serializer cannot carry, and loads values back with their types
    (a tuple as a tuple), exactly like the SQL stores. ``calls`` counts the
    calls per method name (a test can check that concurrent misses caused
    one ``load``). Thread-safe; every batch is applied atomically.
    """

    def __init__(self, entries: Mapping[Key, Any] | None = None) -> None:
        """Start with a copy of ``entries`` (which ``calls`` does not count)."""
        self._codec = RowCodec("DictStore")
        self._lock = threading.Lock()
        self._data: dict[bytes, bytes] = {}  # encoded key -> msgpack value; guarded by _lock
        #: Calls so far, by method name: ``store.calls["load"]``.
        self.calls: Counter[str] = Counter()
        for encoded, _, value in self._codec.rows(entries or {}):
            self._data[encoded] = value

    def load(self, key: Key) -> Any:
        """The stored value of ``key``, or None when absent (or stored as None)."""
        encoded = self._codec.key(key)
        with self._lock:
            self.calls["load"] += 1
            data = self._data.get(encoded)
        return None if data is None else self._codec.value(encoded, data)

    def load_all(self, keys: Collection[Key]) -> dict[Key, Any]:
        """The stored values of those of ``keys`` held here; a stored None is included."""
        wanted = self._codec.keys(keys)
        with self._lock:
            self.calls["load_all"] += 1
            rows = [(key, self._data[key]) for key in wanted if key in self._data]
        return self._codec.found(rows, wanted)

    def store(self, key: Key, value: Any) -> None:
        """Store a copy of ``value`` under ``key``."""
        encoded, _, data = self._codec.row(key, value)
        with self._lock:
            self.calls["store"] += 1
            self._data[encoded] = data

    def store_all(self, entries: Mapping[Key, Any]) -> None:
        """Store every entry, atomically (nothing when one cannot be serialized)."""
        rows = self._codec.rows(entries)
        with self._lock:
            self.calls["store_all"] += 1
            for encoded, _, data in rows:
                self._data[encoded] = data

    def delete(self, key: Key) -> None:
        """Remove ``key`` if present."""
        encoded = self._codec.key(key)
        with self._lock:
            self.calls["delete"] += 1
            self._data.pop(encoded, None)

    def delete_all(self, keys: Collection[Key]) -> None:
        """Remove every one of ``keys`` that is present, atomically."""
        encoded = self._codec.keys(keys)
        with self._lock:
            self.calls["delete_all"] += 1
            for key in encoded:
                self._data.pop(key, None)

    def snapshot(self) -> dict[Key, Any]:
        """Everything stored, decoded: what a test would read from the database."""
        with self._lock:
            rows = list(self._data.items())
        return {decode_key(key): self._codec.value(key, data) for key, data in rows}

    def __len__(self) -> int:
        """How many keys are stored."""
        with self._lock:
            return len(self._data)

    def __repr__(self) -> str:
        return f"DictStore({len(self)} entries)"
