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

Expiry finds its due entries without scanning the store: a min-priority queue
of ``(deadline, key)`` pairs per store (``timers``, a ``Deadlines``), with lazy
deletion. A write that gives a key a new deadline pushes a new pair and leaves
the old one; a delete leaves its pair too; a popped pair whose deadline is no
longer the key's is skipped. A sweep therefore costs O(log n) per entry due,
however many entries wait, and can stop after any number of entries (the owner
sweeps in slices). Idle expiry has its own queue of ``(last access + max_idle,
key)`` that reads do not touch (they run on any thread): a popped key read since
is pushed back at its new idle deadline, so each live key is looked at about
once per max-idle period. A priority queue was chosen over a timer wheel because
a store holds a few thousand keys at most (a map is cut into 271 partitions),
too few to fill a wheel's buckets, and over Redis' sampled expiry because it
frees every due entry on time (events and statistics say when) rather than most
of them. A pair costs ~75 bytes of RSS (a 2-tuple, its slot; the deadline float
is the one the ``expiry`` dict holds); stale pairs are dropped by rebuilding a
queue when it grows past twice the keys it tracks, so they never hold more than
that. Only the loop thread reads or changes the queues.

The queue is not a ``heapq`` list of every pair, because Python's cyclic GC
walks every item of every list on each full collection: with a million TTL'd
entries a member's full collections held its loop 50-200 ms (the pairs
themselves are untracked, but each one's header is read, a cache miss apiece).
Tuples of untracked objects are untracked, and the GC never walks them; so
``Deadlines`` keeps all but its newest pairs in sorted tuples ("runs", each read
from a cursor, merged as a binary counter merges: O(log n) runs, each pair copied
O(log n) times over its life), and only the newest few dozen in a small heap
list. The values and deadlines are dicts of bytes and floats, which the GC
untracks too: a store's entries cost the GC nothing, TTL or not.

Reads may come from any thread (a dict lookup is atomic under the GIL and
values are immutable); writes happen only on the member's loop thread. An
access-time update from a reading thread is a single dict store: the worst a
race can do is record a slightly older access.
"""

from __future__ import annotations

import bisect
import heapq
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter

_random = random.Random()  # noqa: S311 - jitter and sampling; our own: the application's global state is not ours

LFU_INITIAL = 5  # a new key's counter, so it is not evicted before it had a chance (as Redis)
LFU_LOG_FACTOR = 10  # higher: the counter grows more slowly with hits
LFU_DECAY_SECONDS = 60.0  # the counter loses one per this many idle seconds
SAMPLE_SIZE = 5  # eviction candidates sampled per victim (as Redis' maxmemory-samples)
HEAP_SLACK = 64  # a queue is rebuilt when it holds more than twice its live keys plus this
FRESH_PAIRS = 64  # a queue's newest pairs kept in a heap list (GC-walked) before they settle in a run

Pair = tuple[float, bytes]  # (deadline, key)
_deadline = itemgetter(0)


class _Run:
    """Pairs sorted ascending in a tuple (untracked by the GC), read from ``at`` on."""

    __slots__ = ("at", "pairs")

    def __init__(self, pairs: tuple[Pair, ...]) -> None:
        self.pairs = pairs
        self.at = 0

    def __len__(self) -> int:
        return len(self.pairs) - self.at

    def rest(self) -> tuple[Pair, ...]:
        return self.pairs[self.at :] if self.at else self.pairs


class Deadlines:
    """A min-priority queue of ``(deadline, key)`` pairs whose size costs Python's cyclic GC
    nothing: the newest ``FRESH_PAIRS`` in a heap list, the rest in sorted tuples (see the
    module docstring). Push O(log n) amortized, pop O(number of runs) = O(log n)."""

    __slots__ = ("fresh", "runs", "size")

    def __init__(self, pairs: list[Pair] | None = None) -> None:
        self.fresh: list[Pair] = []  # a heapq heap
        self.runs: tuple[_Run, ...] = ()  # largest (oldest) first; none empty (a tuple: no list per store)
        self.size = 0
        if pairs:
            pairs.sort()
            self.runs = (_Run(tuple(pairs)),)
            self.size = len(pairs)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def push(self, deadline: float, key: bytes) -> None:
        heapq.heappush(self.fresh, (deadline, key))
        self.size += 1
        if len(self.fresh) >= FRESH_PAIRS:
            self._settle()

    def first(self) -> float | None:
        """The earliest deadline held, or None when empty."""
        first = self.fresh[0][0] if self.fresh else None
        for run in self.runs:
            deadline = run.pairs[run.at][0]
            if first is None or deadline < first:
                first = deadline
        return first

    def pop(self) -> Pair:
        """Remove and return the earliest pair (the queue must not be empty)."""
        pair = self.pop_due(float("inf"))
        assert pair is not None
        return pair

    def pop_due(self, now: float) -> Pair | None:
        """Remove and return the earliest pair if it is due by ``now``, else None."""
        fresh = self.fresh
        best = fresh[0] if fresh else None
        source: _Run | None = None
        for run in self.runs:
            head = run.pairs[run.at]
            if best is None or head < best:
                best, source = head, run
        if best is None or best[0] > now:
            return None
        self.size -= 1
        if source is None:
            return heapq.heappop(fresh)
        source.at += 1
        if source.at == len(source.pairs):
            self.runs = tuple(run for run in self.runs if run is not source)
        elif source.at > FRESH_PAIRS and 2 * source.at > len(source.pairs):
            source.pairs, source.at = source.pairs[source.at :], 0  # the popped ones are let go
        return best

    def take_due(self, now: float, limit: int | None = None) -> list[Pair]:
        """Remove and return pairs due by ``now``, up to ``limit`` (None: all), in no
        particular order: a run's due pairs are found by bisection and taken as a slice."""
        taken: list[Pair] = []
        left = self.size if limit is None else limit
        fresh = self.fresh
        while left and fresh and fresh[0][0] <= now:
            taken.append(heapq.heappop(fresh))
            left -= 1
        if left and self.runs:
            kept = []
            for run in self.runs:
                pairs, at = run.pairs, run.at
                if left:
                    end = bisect.bisect_right(pairs, now, at, min(len(pairs), at + left), key=_deadline)
                    taken += pairs[at:end]
                    left -= end - at
                    run.at = at = end
                if at == len(pairs):
                    continue
                if at > FRESH_PAIRS and 2 * at > len(pairs):
                    run.pairs, run.at = pairs[at:], 0  # the taken ones are let go
                kept.append(run)
            if len(kept) != len(self.runs):
                self.runs = tuple(kept)
        self.size -= len(taken)
        return taken

    def due(self, now: float) -> Iterator[Pair]:
        """The pairs due by ``now``, without removing them (O(due pairs))."""
        yield from _due(self.fresh, now)
        for run in self.runs:
            pairs = run.pairs
            for i in range(run.at, len(pairs)):
                if pairs[i][0] > now:
                    break
                yield pairs[i]

    def _settle(self) -> None:
        """The fresh pairs become a run; runs of like size merge (sizes at least halve down
        the list, so there are O(log n) of them)."""
        self.fresh.sort()
        pairs = tuple(self.fresh)
        self.fresh = []
        runs = list(self.runs)
        while runs and len(runs[-1]) <= 2 * len(pairs):
            older = runs.pop().rest()
            if older[-1] <= pairs[0]:  # the usual case (one TTL for all writes): no overlap
                pairs = older + pairs
            else:
                merged = list(older)
                merged += pairs
                merged.sort()  # two sorted runs: timsort merges them in O(n)
                pairs = tuple(merged)
        runs.append(_Run(pairs))
        self.runs = tuple(runs)


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

    __slots__ = ("due", "freq", "keys", "last", "slots", "touched")

    def __init__(self) -> None:
        self.last: dict[bytes, float] = {}  # key -> last read or write, wall-clock seconds
        self.freq: dict[bytes, int] = {}  # key -> logarithmic access counter (LFU only)
        self.keys: list[bytes] = []  # every key, for O(1) random sampling
        self.slots: dict[bytes, int] = {}  # key -> index in keys
        self.touched: set[bytes] = set()  # read since the last touch sync to backups
        self.due = Deadlines()  # (idle deadline when pushed, key), max-idle maps only

    def add(self, key: bytes) -> bool:
        """Track ``key``; True when it was not tracked yet."""
        if key in self.slots:
            return False
        self.slots[key] = len(self.keys)
        self.keys.append(key)
        return True

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

    __slots__ = ("access", "expired_through", "expiry", "nbytes", "policy", "timers", "values")

    def __init__(self, policy: StorePolicy | None = None) -> None:
        self.values: dict[bytes, bytes] = {}
        self.expiry: dict[bytes, float] = {}
        #: (deadline, key) for every entry of ``expiry`` (and stale pairs): see the module docstring
        self.timers = Deadlines()
        self.nbytes = 0  # sum of len(key) + len(value) over stored entries
        #: On a backup: its owner dropped every entry whose TTL passed by this time (the
        #: owner's clock); reads, sweeps and scans count them expired whatever our clock says.
        self.expired_through = 0.0
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
        self._rebuild_idle()

    # ------------------------------------------------------------------ reads
    def get(self, key: bytes) -> bytes | None:
        """The live value of ``key``, or None (absent or expired). Counts as an access."""
        value = self.values.get(key)
        if value is None or (not self.expiry and self.access is None):
            return value
        now = time.time()
        if self.expiry:
            deadline = self.expiry.get(key)
            if deadline is not None and (deadline <= now or deadline <= self.expired_through):
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
        if deadline is not None and (deadline <= now or deadline <= self.expired_through):
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
                left = deadline - max(now, self.expired_through)
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
            if expire_at <= self.expired_through:
                self.expired_through = 0.0  # the owner's clock went back: ours decides again
            if self.expiry.get(key) != expire_at:
                self.expiry[key] = expire_at
                self.timers.push(expire_at, key)
                if len(self.timers) > 2 * len(self.expiry) + HEAP_SLACK:
                    self._rebuild_timers()
        elif self.expiry:
            self.expiry.pop(key, None)
        access = self.access
        if access is not None:
            now = time.time()
            idle = self.policy.max_idle if self.policy is not None else None
            # A new key, or an access earlier than the last (a touch synced from an owner whose
            # clock runs ahead), is due before any pair already queued for it.
            if (access.add(key) or now < access.last.get(key, now)) and idle is not None:
                self._push_idle(access, key, now + idle)
            access.last[key] = now
            if self.policy is not None and self.policy.lfu:
                access.freq[key] = _lfu_increment(access.freq.get(key, LFU_INITIAL))

    def delete(self, key: bytes) -> bytes | None:
        """Remove ``key``; return the value it had (expired or not), or None."""
        old = self.values.pop(key, None)
        if old is not None:
            self.nbytes -= len(key) + len(old)
            # Its heap pair stays until due (skipped then), unless stale pairs pile up.
            if (
                self.expiry
                and self.expiry.pop(key, None) is not None
                and len(self.timers) > 2 * len(self.expiry) + HEAP_SLACK
            ):
                self._rebuild_timers()
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
        access = self.access
        if access is not None and key in self.values:
            idle = self.policy.max_idle if self.policy is not None else None
            if idle is not None and when < access.last.get(key, when):
                self._push_idle(access, key, when + idle)  # due before the pair its put pushed
            access.last[key] = when

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
        self.timers = Deadlines()
        self.nbytes = 0
        if self.access is not None:
            self.access = _Access()
        return live

    # ------------------------------------------------------------------ scans
    def count(self) -> int:
        """Number of live entries: all but the expired ones not swept yet, found by walking
        the heaps' due pairs (O(due), not a scan)."""
        if not self.may_expire:
            return len(self.values)
        return len(self.values) - len(self.expired(time.time()))

    def items(self) -> Iterator[tuple[bytes, bytes, float]]:
        """Live ``(key, value, expire_at)`` triples (expire_at 0 = never)."""
        now = time.time()
        through = max(now, self.expired_through)
        expiry = self.expiry
        idle = self.policy.max_idle if self.policy is not None else None
        last = self.access.last if self.access is not None else {}
        for key, value in list(self.values.items()):
            deadline = expiry.get(key, 0.0) if expiry else 0.0
            if deadline and deadline <= through:
                continue
            if idle is not None and now - last.get(key, now) > idle:
                continue
            yield key, value, deadline

    def expired(self, now: float) -> list[bytes]:
        """Keys whose TTL passed or that were idle too long (still stored), without removing
        them: walks only the heaps' due pairs."""
        through = max(now, self.expired_through)
        expired = [key for deadline, key in self.timers.due(through) if self.expiry.get(key) == deadline]
        access = self.access
        idle = self.policy.max_idle if self.policy is not None else None
        if idle is not None and access is not None:
            stored = self.values  # a racing read may leave an access record of a deleted key
            for _, key in access.due.due(now):
                if key in stored and now - access.last.get(key, now) > idle:
                    expired.append(key)
        return list(dict.fromkeys(expired))

    def sweep(self, now: float, limit: int | None = None, idle: bool = True) -> list[tuple[bytes, bytes]]:
        """Drop entries whose TTL passed and, with ``idle``, those idle too long; return them
        as ``(key, value)``. Looks at up to ``limit`` due heap pairs (None: every due pair),
        so a sweep costs O(log n) per pair and can stop anywhere; ``due`` says whether any
        are left."""
        timed, idled = self.sweep_apart(now, limit, idle)
        return timed + idled if idled else timed

    def sweep_apart(
        self, now: float, limit: int | None = None, idle: bool = True
    ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
        """``sweep``, with the entries dropped for their TTL and those dropped for idling
        apart: a backup drops the first by itself, the second only as the owner says."""
        gone: list[tuple[bytes, bytes]] = []
        left = limit
        expiry, values, access = self.expiry, self.values, self.access
        through = max(now, self.expired_through)
        freed = 0
        while left is None or left > 0:
            # The queue is not rebuilt meanwhile (``delete`` may): the pairs taken leave it.
            pairs = self.timers.take_due(through, left)
            if not pairs:
                break
            if left is not None:
                left -= len(pairs)
            for deadline, key in pairs:
                if expiry.get(key) == deadline:  # else stale: deleted, or given another deadline
                    # ``delete``, inlined: a mass expiry runs this a million times
                    del expiry[key]
                    value = values.pop(key)
                    freed += len(key) + len(value)
                    if access is not None:
                        access.remove(key)
                    gone.append((key, value))
        self.nbytes -= freed
        budget = -1 if left is None else left
        max_idle = self.policy.max_idle if self.policy is not None else None
        idled: list[tuple[bytes, bytes]] = []
        if not idle or max_idle is None or access is None:
            return gone, idled
        due, later = access.due, []
        while budget and (pair := due.pop_due(now)) is not None:
            budget -= 1
            key = pair[1]
            if key not in self.values:
                continue  # deleted (or expired by its TTL above): the pair was stale
            seen = access.last.get(key, now)
            if now - seen > max_idle:
                idled.append((key, self._drop(key)))
            else:
                # Read since: due again when idle again (strictly later, or popped again now).
                later.append((max(seen + max_idle, now + 1e-6), key))
        for deadline, key in later:  # pushed after the loop: a pair due exactly now is not popped twice
            self._push_idle(access, key, deadline)
        return gone, idled

    def due(self, now: float, idle: bool = True) -> bool:
        """Some heap pair is due by ``now`` (the next ``sweep`` has work; O(1))."""
        if _first_due(self.timers, max(now, self.expired_through)):
            return True
        access = self.access
        return idle and access is not None and _first_due(access.due, now)

    def expire_through(self, deadline: float) -> None:
        """Our owner dropped every entry whose TTL passed by ``deadline`` (its clock): so do
        our next sweeps, whatever our clock says. O(1): a backup applies this inside the
        frame that carries it, which a remote get may share; the sweep drops the entries in
        its slices."""
        self.expired_through = max(self.expired_through, deadline)

    def _drop(self, key: bytes) -> bytes:
        value = self.delete(key)
        assert value is not None  # only called for stored keys
        return value

    def _push_idle(self, access: _Access, key: bytes, deadline: float) -> None:
        access.due.push(deadline, key)
        if len(access.due) > 2 * len(self.values) + HEAP_SLACK:
            self._rebuild_idle()

    def _rebuild_timers(self) -> None:
        """One pair per key with a TTL again (stale pairs piled up: deletes, changed TTLs)."""
        self.timers = Deadlines([(deadline, key) for key, deadline in self.expiry.items()])

    def _rebuild_idle(self) -> None:
        """One idle pair per stored key (max-idle maps), from the recorded accesses."""
        access = self.access
        idle = self.policy.max_idle if self.policy is not None else None
        if access is None:
            return
        if idle is None:
            access.due = Deadlines()
            return
        now = time.time()
        access.due = Deadlines([(access.last.get(key, now) + idle, key) for key in self.values])

    # ------------------------------------------------------------------ eviction
    def sample(self) -> bytes | None:
        """A random key (O(1)), or None when empty or untracked."""
        access = self.access
        if access is None or not access.keys:
            return None
        return access.keys[_random.randrange(len(access.keys))]

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


def _first_due(queue: Deadlines, now: float) -> bool:
    """Some pair of ``queue`` is due by ``now``."""
    first = queue.first()
    return first is not None and first <= now


def _due(heap: list[Pair], now: float) -> Iterator[Pair]:
    """The pairs of ``heap`` due by ``now``, without popping them: a walk down the heap that
    stops at the first pair not due on each branch (O(due pairs))."""
    stack = [0] if heap and heap[0][0] <= now else []
    while stack:
        i = stack.pop()
        yield heap[i]
        stack.extend(child for child in (2 * i + 1, 2 * i + 2) if child < len(heap) and heap[child][0] <= now)


def _lfu_increment(counter: int) -> int:
    """Redis' logarithmic counter: the more hits, the less likely one more counts."""
    if counter >= 255:
        return 255
    base = max(counter - LFU_INITIAL, 0)
    if _random.random() < 1.0 / (base * LFU_LOG_FACTOR + 1):
        return counter + 1
    return counter
