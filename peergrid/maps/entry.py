"""EntryView: one entry of a map as its owner holds it (``m.entry_view(key)``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peergrid.serialization import Key


@dataclass(frozen=True)
class EntryView:
    """A snapshot of one live entry, as its owner tracked it when asked.

    Only what the owner's record store keeps per entry is here: the value, the
    expiry, and (for maps that track access: ``max_idle`` or a size bound) the
    last access. Hazelcast's per-entry version, creation and update times and
    hit count are not kept (they would cost more memory than a small entry;
    ``docs/entries.md``). Times are wall-clock seconds (``time.time()``) on
    the owner.
    """

    key: Key
    value: Any
    ttl: float | None
    """Seconds the entry had left when it was read (None: no TTL). Max-idle is not counted."""
    expiration_time: float | None
    """When its TTL ends, wall-clock seconds (None: no TTL)."""
    last_access_time: float | None
    """Its last read or write, wall-clock seconds; None when the map does not track access
    (maps with ``max_idle`` or ``max_entries``/``max_bytes`` do)."""
