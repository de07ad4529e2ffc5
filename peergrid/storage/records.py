"""The entries of one map in one partition.

Keys and values are kept encoded (``bytes``), so a remote get sends stored
bytes without re-encoding, and memory is counted in serialized bytes. The
layout is plain dicts, chosen for memory: ``values`` maps key -> value (~120
bytes of overhead per entry with the two ``bytes`` headers), and ``expiry``
holds an absolute wall-clock deadline only for entries that have a TTL.

Maps with a max-idle time or a size bound also keep access metadata
(``_Access``): the last access of each entry, a Redis-style logarithmic
frequency counter, and a list of keys to sample eviction candidates from in
O(1). Maps without them pay nothing for it.

Reads may come from any thread (a dict lookup is atomic under the GIL and
values are immutable); writes happen only on the member's loop thread. An
access-time update from a reading thread is a single dict store: the worst a
race can do is record a slightly older access.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

LFU_INITIAL = 5  # a new key's counter, so it is not evicted before it had a chance (as Redis)
LFU_LOG_FACTOR = 10  # higher: the counter grows more slowly with hits
LFU_DECAY_SECONDS = 60.0  # the counter loses one per this many idle seconds
SAMPLE_SIZE = 5  # eviction candidates sampled per victim (as Redis' maxmemory-samples)


@dataclass(frozen=True)
class StorePolicy:
    """What a map's record stores must track on this member."""

    max_idle: float | None = None
    """Entries unread and unwritten this long are expired."""
    track_access: bool = False
    """Keep access metadata (max-idle, or eviction under a bound)."""
    lfu: bool = False
    """Count access frequency (LFU eviction)."""


class _Access:
    """Access metadata of a map's entries in one partition."""

    __slots__ = ("freq", "keys", "last", "slots", "touched")

    def __init__(self) -> None:
        self.last: dict[bytes, float] = {}  # key -> last read or write, wall-clock seconds
        self.freq: dict[bytes, int] = {}  # key -> logarithmic access counter (LFU only)
        self.keys: list[bytes] = []  # every key, for O(1) random sampling
        self.slots: dict[bytes, int] = {}  # key -> index in keys
        self.touched: set[bytes] = set()  # read since the last touch sync to backups

    def add(self, key: bytes) -> None:
        if key not in self.slots:
            self.slots[key] = len(self.keys)
            self.keys.append(key)

    def remove(self, key: bytes) -> None:
        # Metadata first: a read on another thread may record an access of a key just deleted.
        self.last.pop(key, None)
        self.freq.pop(key, None)
        self.touched.discard(key)
        slot = self.slots.pop(key, None)
        if slot is None:
            return
        last = self.keys.pop()
        if slot < len(self.keys):
            self.keys[slot] = last
            self.slots[last] = slot


class Records:
    """Encoded key -> encoded value, with optional expiry, idle expiry and access tracking."""

    __slots__ = ("access", "expiry", "nbytes", "policy", "values")

    def __init__(self, policy: StorePolicy | None = None) -> None:
        self.values: dict[bytes, bytes] = {}
        self.expiry: dict[bytes, float] = {}
        self.nbytes = 0  # sum of len(key) + len(value) over stored entries
        self.policy: StorePolicy | None = None
        self.access: _Access | None = None
        if policy is not None:
            self.set_policy(policy)

    def set_policy(self, policy: StorePolicy | None) -> None:
        """Start (or stop) tracking what ``policy`` needs, for the entries already here too."""
        self.policy = policy if policy is not None and (policy.track_access or policy.max_idle) else None
        if self.policy is None:
            self.access = None
            return
        if self.access is None:
            self.access = _Access()
            now = time.time()
            for key in self.values:
                self.access.add(key)
                self.access.last[key] = now

    # ------------------------------------------------------------------ reads
    def get(self, key: bytes) -> bytes | None:
        """The live value of ``key``, or None (absent or expired). Counts as an access."""
        value = self.values.get(key)
        if value is None or (not self.expiry and self.access is None):
            return value
        now = time.time()
        if self.expiry:
            deadline = self.expiry.get(key)
            if deadline is not None and deadline <= now:
                return None
        access = self.access
        if access is not None:
            policy = self.policy
            assert policy is not None
            if policy.max_idle is not None and now - access.last.get(key, now) > policy.max_idle:
                return None
            access.last[key] = now
            access.touched.add(key)
            if policy.lfu:
                access.freq[key] = _lfu_increment(access.freq.get(key, LFU_INITIAL))
        return value

    def peek(self, key: bytes) -> bytes | None:
        """The live value of ``key`` without counting an access."""
        value = self.values.get(key)
        if value is None:
            return None
        now = time.time()
        deadline = self.expiry.get(key) if self.expiry else None
        if deadline is not None and deadline <= now:
            return None
        idle = self.policy.max_idle if self.policy is not None else None
        if self.access is not None and idle is not None and now - self.access.last.get(key, now) > idle:
            return None
        return value

    @property
    def may_expire(self) -> bool:
        """Entries here can expire: some has a TTL, or the map has max-idle."""
        return bool(self.expiry) or (self.policy is not None and self.policy.max_idle is not None)

    def time_left(self, key: bytes) -> float:
        """Seconds until ``key`` expires by its TTL or, unread, by max-idle; 0.0 when it never
        does (an expired key gets a tiny positive time: it must not be served any longer)."""
        now = time.time()
        left = float("inf")
        if self.expiry:
            deadline = self.expiry.get(key)
            if deadline:
                left = deadline - now
        idle = self.policy.max_idle if self.policy is not None else None
        if idle is not None and self.access is not None:
            left = min(left, self.access.last.get(key, now) + idle - now)
        if left == float("inf"):
            return 0.0
        return max(left, 1e-9)

    # ------------------------------------------------------------------ writes
    def put(self, key: bytes, value: bytes, expire_at: float = 0.0) -> None:
        """Store ``value`` under ``key``, replacing any previous value and expiry."""
        old = self.values.get(key)
        self.nbytes += len(value) - (len(old) if old is not None else -len(key))
        self.values[key] = value
        if expire_at:
            self.expiry[key] = expire_at
        elif self.expiry:
            self.expiry.pop(key, None)
        access = self.access
        if access is not None:
            access.add(key)
            access.last[key] = time.time()
            if self.policy is not None and self.policy.lfu:
                access.freq[key] = _lfu_increment(access.freq.get(key, LFU_INITIAL))

    def delete(self, key: bytes) -> bytes | None:
        """Remove ``key``; return the value it had (expired or not), or None."""
        old = self.values.pop(key, None)
        if old is not None:
            self.nbytes -= len(key) + len(old)
            if self.expiry:
                self.expiry.pop(key, None)
        if self.access is not None:
            self.access.remove(key)  # also a record a racing read left behind
        return old

    def touch(self, key: bytes, when: float) -> None:
        """Record an access at ``when`` (an owner's read, synced to this backup)."""
        access = self.access
        if access is not None and key in self.values and when > access.last.get(key, 0.0):
            access.last[key] = when

    def set_access(self, key: bytes, when: float) -> None:
        """Set the last access of ``key`` to ``when`` (a copied entry keeps its idle clock)."""
        if self.access is not None and key in self.values:
            self.access.last[key] = when

    def take_touched(self) -> list[tuple[bytes, float]]:
        """Keys read since the last call, with their last access (for backups' idle clocks)."""
        access = self.access
        if access is None or not access.touched:
            return []
        touched, access.touched = access.touched, set()
        return [(key, access.last[key]) for key in touched if key in access.last]

    def clear(self) -> int:
        """Remove every entry; return how many live entries there were."""
        live = self.count()
        self.values.clear()
        self.expiry.clear()
        self.nbytes = 0
        if self.access is not None:
            self.access = _Access()
        return live

    # ------------------------------------------------------------------ scans
    def count(self) -> int:
        """Number of live entries."""
        if not self.expiry and (self.policy is None or self.policy.max_idle is None):
            return len(self.values)
        return sum(1 for _ in self.items())

    def items(self) -> Iterator[tuple[bytes, bytes, float]]:
        """Live ``(key, value, expire_at)`` triples (expire_at 0 = never)."""
        now = time.time()
        expiry = self.expiry
        idle = self.policy.max_idle if self.policy is not None else None
        last = self.access.last if self.access is not None else {}
        for key, value in list(self.values.items()):
            deadline = expiry.get(key, 0.0) if expiry else 0.0
            if deadline and deadline <= now:
                continue
            if idle is not None and now - last.get(key, now) > idle:
                continue
            yield key, value, deadline

    def expired(self, now: float) -> list[bytes]:
        """Keys whose TTL passed or that were idle too long (still stored)."""
        expired = [key for key, deadline in self.expiry.items() if deadline <= now]
        if self.policy is not None and self.policy.max_idle is not None and self.access is not None:
            idle = self.policy.max_idle
            stored = self.values  # a racing read may leave an access record of a deleted key
            last = self.access.last
            expired.extend(key for key, seen in last.items() if now - seen > idle and key in stored)
        return list(dict.fromkeys(expired))

    def sweep(self, now: float) -> list[tuple[bytes, bytes]]:
        """Drop expired and idle-expired entries; return them as ``(key, value)``."""
        gone = []
        for key in self.expired(now):
            value = self.delete(key)
            if value is not None:
                gone.append((key, value))
        return gone

    # ------------------------------------------------------------------ eviction
    def sample(self) -> bytes | None:
        """A random key (O(1)), or None when empty or untracked."""
        access = self.access
        if access is None or not access.keys:
            return None
        return access.keys[random.randrange(len(access.keys))]  # noqa: S311 - sampling, not security

    def score(self, key: bytes, lfu: bool) -> float | None:
        """Eviction score of ``key`` (lower goes first), or None when it is gone.

        LRU: the last access time. LFU: the logarithmic counter decayed by idle
        minutes, as Redis does; ties go to the least recently used.
        """
        access = self.access
        if access is None or key not in self.values:
            return None
        last = access.last.get(key, 0.0)
        if not lfu:
            return last
        decayed = access.freq.get(key, LFU_INITIAL) - (time.time() - last) / LFU_DECAY_SECONDS
        return decayed + last / 1e12

    def __len__(self) -> int:
        return len(self.values)


def _lfu_increment(counter: int) -> int:
    """Redis' logarithmic counter: the more hits, the less likely one more counts."""
    if counter >= 255:
        return 255
    base = max(counter - LFU_INITIAL, 0)
    if random.random() < 1.0 / (base * LFU_LOG_FACTOR + 1):  # noqa: S311
        return counter + 1
    return counter
