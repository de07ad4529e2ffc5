"""The entries of one map in one partition.

Keys and values are kept encoded (``bytes``), so a remote get sends stored
bytes without re-encoding, and memory is counted in serialized bytes. The
layout is two plain dicts, chosen for memory: ``values`` maps key -> value
(~120 bytes of overhead per entry with the two ``bytes`` headers), and
``expiry`` holds an absolute wall-clock deadline only for entries that have a
TTL. Reads may come from any thread (a dict lookup is atomic under the GIL and
values are immutable); writes happen only on the member's loop thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator


class RecordStore:
    """Encoded key -> encoded value, with optional per-entry expiry."""

    __slots__ = ("expiry", "nbytes", "values")

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.expiry: dict[bytes, float] = {}
        self.nbytes = 0  # sum of len(key) + len(value) over stored entries

    def get(self, key: bytes) -> bytes | None:
        """The live value of ``key``, or None (absent or expired)."""
        value = self.values.get(key)
        if value is not None and self.expiry:
            deadline = self.expiry.get(key)
            if deadline is not None and deadline <= time.time():
                return None
        return value

    def put(self, key: bytes, value: bytes, expire_at: float = 0.0) -> None:
        """Store ``value`` under ``key``, replacing any previous value and expiry."""
        old = self.values.get(key)
        self.nbytes += len(value) - (len(old) if old is not None else -len(key))
        self.values[key] = value
        if expire_at:
            self.expiry[key] = expire_at
        elif self.expiry:
            self.expiry.pop(key, None)

    def delete(self, key: bytes) -> bytes | None:
        """Remove ``key``; return the value it had (expired or not), or None."""
        old = self.values.pop(key, None)
        if old is not None:
            self.nbytes -= len(key) + len(old)
            if self.expiry:
                self.expiry.pop(key, None)
        return old

    def clear(self) -> int:
        """Remove every entry; return how many live entries there were."""
        live = self.count()
        self.values.clear()
        self.expiry.clear()
        self.nbytes = 0
        return live

    def count(self) -> int:
        """Number of live entries."""
        if not self.expiry:
            return len(self.values)
        now = time.time()
        return len(self.values) - sum(1 for deadline in self.expiry.values() if deadline <= now)

    def items(self) -> Iterator[tuple[bytes, bytes, float]]:
        """Live ``(key, value, expire_at)`` triples (expire_at 0 = never)."""
        now = time.time()
        expiry = self.expiry
        for key, value in list(self.values.items()):
            deadline = expiry.get(key, 0.0) if expiry else 0.0
            if not deadline or deadline > now:
                yield key, value, deadline

    def sweep(self, now: float) -> list[bytes]:
        """Drop expired entries; return their keys."""
        expired = [key for key, deadline in self.expiry.items() if deadline <= now]
        for key in expired:
            self.delete(key)
        return expired

    def __len__(self) -> int:
        return len(self.values)
