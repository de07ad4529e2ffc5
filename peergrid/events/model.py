"""What events are: kinds, batches, and the entry event users receive."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peergrid.serialization import Key


class EventKind:
    """Event kinds, as they travel."""

    ADDED = 1
    UPDATED = 2
    REMOVED = 3
    EXPIRED = 4
    EVICTED = 5
    CLEARED = 6  # every entry of the map in this partition is gone (near caches drop them)
    TTL_CHANGED = 7  # expire/persist changed an entry's TTL, not its value (near caches drop it;
    # entry listeners hear nothing)


KIND_NAMES = {
    EventKind.ADDED: "added",
    EventKind.UPDATED: "updated",
    EventKind.REMOVED: "removed",
    EventKind.EXPIRED: "expired",
    EventKind.EVICTED: "evicted",
    EventKind.CLEARED: "cleared",
    EventKind.TTL_CHANGED: "ttl_changed",
}


@dataclass
class EventBatch:
    """Events of one map from one owner, columnar (entry i of each list is event i)."""

    kinds: list[int] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] | None = None
    old_values: list[bytes] | None = None
    heartbeat: bool = False
    owned: list[int] = field(default_factory=list)
    owned_seqs: list[int] = field(default_factory=list)
    table_version: int = 0
    versions: list[int] | None = None  # the partition version of each change (None: not sent)
    ttls: list[float] | None = None  # seconds each new value has left (0: no expiry; None: not sent)


@dataclass(frozen=True)
class EntryEvent:
    """A change to one entry of a map, as an entry listener receives it."""

    kind: str
    """``"added"``, ``"updated"``, ``"removed"``, ``"expired"`` or ``"evicted"``."""
    map: str
    key: Key
    value: Any = None
    """The new value (added, updated), when the listener asked for values."""
    old_value: Any = None
    """The value before the change (updated, removed, expired, evicted), when asked for."""
    partition: int = 0
