"""One partition's data on one member: a record store per map, and a version.

The version counts the writes the partition's owner has applied; an owner and
its backups that have the same version hold the same data. Only the member's
loop thread changes a partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from peergrid.protocol import Effect, EffectKind
from peergrid.storage.records import RecordStore, StorePolicy

Policies = Callable[[str], StorePolicy | None]


def _no_policy(_name: str) -> None:
    return None


class Partition:
    """The maps' entries of one partition, and the version they are at."""

    __slots__ = ("id", "maps", "policies", "version")

    def __init__(self, partition_id: int, version: int = 0, policies: Policies = _no_policy) -> None:
        self.id = partition_id
        self.version = version
        self.maps: dict[str, RecordStore] = {}
        self.policies = policies

    def store(self, name: str) -> RecordStore:
        """The record store of map ``name``, created empty on first use."""
        store = self.maps.get(name)
        if store is None:
            store = self.maps[name] = RecordStore(self.policies(name))
        return store

    def apply(self, effects: Iterable[Effect]) -> None:
        """Apply effects shipped by the owner (on a backup, or when installing)."""
        for effect in effects:
            if effect.kind == EffectKind.PUT:
                self.store(effect.map).put(effect.key, effect.value, effect.expire_at)
            elif effect.kind == EffectKind.DELETE:
                store = self.maps.get(effect.map)
                if store is not None:
                    store.delete(effect.key)
            elif effect.kind == EffectKind.CLEAR:
                self.maps.pop(effect.map, None)
            elif effect.kind == EffectKind.TOUCH:
                store = self.maps.get(effect.map)
                if store is not None:
                    store.touch(effect.key, effect.expire_at)
            elif effect.kind == EffectKind.ACCESS:
                store = self.maps.get(effect.map)
                if store is not None:
                    store.set_access(effect.key, effect.expire_at)

    def snapshot(self) -> Iterator[Effect]:
        """Every live entry as a PUT effect, to rebuild this partition elsewhere; where access
        is tracked, each followed by its last access (a copy must not restart idle clocks)."""
        for name, store in list(self.maps.items()):
            last = store.access.last if store.access is not None else None
            for key, value, expire_at in store.items():
                yield Effect(EffectKind.PUT, name, key, value, expire_at)
                if last is not None and key in last:
                    yield Effect(EffectKind.ACCESS, name, key, b"", last[key])

    def entry_count(self) -> int:
        """Live entries over every map."""
        return sum(store.count() for store in self.maps.values())

    def nbytes(self) -> int:
        """Key and value bytes over every map."""
        return sum(store.nbytes for store in self.maps.values())

    def sweep(self, now: float) -> list[tuple[str, bytes, bytes]]:
        """Drop expired entries of every map; return them as ``(map, key, value)``."""
        return [
            (name, key, value) for name, store in list(self.maps.items()) for key, value in store.sweep(now)
        ]
