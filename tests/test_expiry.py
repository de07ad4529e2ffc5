"""Expiry without scans: the record store's queues of deadlines, against a model.

The model is a dict of deadlines (and of last accesses, for max-idle): after any sequence of
writes, deletes, TTL changes, touches and sweeps, a sweep frees exactly the stored keys whose
deadline passed (or that idled too long), each once, and no live key. The queue itself
(``Deadlines``) is checked against ``heapq``, and for what Python's cyclic GC walks of it: a
store's size must cost a full collection nothing (those held a member's loop for 50-200 ms
with a million TTL'd entries in heap lists).
"""

from __future__ import annotations

import gc
import heapq
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from hypothesis import example, given, settings

import peergrid
from peergrid.protocol import Effect, EffectKind
from peergrid.storage import records
from peergrid.storage.partition import Partition
from peergrid.storage.records import FRESH_PAIRS, HEAP_SLACK, Deadlines, Records, StorePolicy
from peergrid.testing import cluster
from tests.conftest import wait_for
from tests.strategies import deadline_steps, expiry_steps

IDLE = 10.0
SKEW = 5.0  # how far a backup's clock runs behind its owner's, in check_copies


class Model:
    """What the store must hold: values, deadlines (absolute), last accesses (relative)."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.deadlines: dict[bytes, float] = {}  # seconds after the start
        self.last: dict[bytes, float] = {}  # seconds after the start

    def due(self, now: float, idle: bool) -> set[bytes]:
        ttl = {k for k, d in self.deadlines.items() if d <= now}
        idled = {k for k, seen in self.last.items() if idle and now - seen > IDLE}
        return ttl | idled


def check(steps: list[tuple[str, object, int]], policy: StorePolicy | None) -> None:
    start = time.time()  # a put records its access now: within a half second of the start
    store = Records(policy)
    model = Model()
    now = 0.5
    version = 0
    for step, arg, n in steps:
        key = arg if isinstance(arg, bytes) else b""
        if step == "put":
            version += 1
            value = b"v%d" % version
            store.put(key, value, start + (now + n) if n else 0.0)
            model.values[key] = value
            if n:
                model.deadlines[key] = now + n
            else:
                model.deadlines.pop(key, None)
            if policy is not None:
                model.last[key] = 0.0  # (the store's clock: the real time of the put)
        elif step == "delete":
            assert (store.delete(key) is not None) == (key in model.values)
            model.values.pop(key, None)
            model.deadlines.pop(key, None)
            model.last.pop(key, None)
        elif step in ("touch", "access"):
            when = float(n)
            if step == "touch":
                store.touch(key, start + when)
            else:
                store.set_access(key, start + when)
            if policy is not None and key in model.values and (step == "access" or when > model.last[key]):
                model.last[key] = when
        else:
            assert isinstance(arg, int)
            now += arg
            idle = step == "sweep"
            expected = model.due(now, idle and policy is not None)
            swept: list[tuple[bytes, bytes]] = []
            while store.due(start + now, idle):
                swept += store.sweep(start + now, n or None, idle)
            assert len(swept) == len({k for k, _ in swept}), "a key swept twice"
            assert {k for k, _ in swept} == expected, "swept keys differ from the model's due ones"
            assert all(model.values[k] == v for k, v in swept)
            assert store.sweep(start + now, None, idle) == []
            for k in expected:
                model.values.pop(k)
                model.deadlines.pop(k, None)
                model.last.pop(k, None)
        assert store.values == model.values
        assert store.expiry == {k: start + d for k, d in model.deadlines.items()}
        assert store.nbytes == sum(len(k) + len(v) for k, v in model.values.items())
        if store.access is not None:
            assert set(store.access.last) <= set(store.values), "access kept for a key freed"


def check_copies(steps: list[tuple[str, object, int]], policy: StorePolicy | None) -> None:
    """An owner's partition sweeps (``Partition.expire``), a backup's applies what it ships
    and sweeps its TTLs itself, as backups do, by a clock ``SKEW`` seconds behind the owner's:
    after each owner sweep and the backup's next, both hold the same entries and deadlines,
    though the TTL'd ones travel as one EXPIRED effect per sweep."""
    start = time.time()
    owner, backup = Partition(0, policies=lambda _: policy), Partition(0, policies=lambda _: policy)
    now = 0.5
    for version, (step, arg, n) in enumerate(steps):
        key = arg if isinstance(arg, bytes) else b""
        if step == "put":
            effect = Effect(EffectKind.PUT, "m", key, b"v%d" % version, start + (now + n) if n else 0.0)
            owner.apply([effect])
            backup.apply([effect])
        elif step == "delete":
            effect = Effect(EffectKind.DELETE, "m", key)
            owner.apply([effect])
            backup.apply([effect])
        elif step in ("touch", "access"):
            kind = EffectKind.TOUCH if step == "touch" else EffectKind.ACCESS
            effect = Effect(kind, "m", key, b"", start + float(n))
            owner.apply([effect])
            backup.apply([effect])
        elif step == "backup-sweep":
            assert isinstance(arg, int)
            now += arg
            if "m" in backup.maps:
                backup.maps["m"].sweep(start + now - SKEW, n or None, idle=False)
        else:
            assert isinstance(arg, int)
            now += arg
            store = owner.maps.get("m")
            while store is not None and store.due(start + now):
                gone, effects = owner.expire("m", start + now, n or None)
                timed = [e for e in effects if e.kind == EffectKind.EXPIRED]
                assert len(timed) <= 1, "one EXPIRED effect per sweep, whatever it frees"
                assert all(e.kind == EffectKind.DELETE for e in effects if e not in timed)
                assert len(effects) - len(timed) <= len(gone)
                backup.apply(effects)
            if "m" in backup.maps:
                backup.maps["m"].sweep(start + now - SKEW, None, idle=False)
            mine, theirs = owner.maps.get("m"), backup.maps.get("m")
            assert (mine.values if mine else {}) == (theirs.values if theirs else {})
            assert (mine.expiry if mine else {}) == (theirs.expiry if theirs else {})


@settings(max_examples=200, deadline=None)
@given(expiry_steps)
def test_a_backup_following_an_owners_sweeps_holds_what_the_owner_holds(steps) -> None:
    check_copies(steps, None)
    check_copies(steps, StorePolicy(max_idle=IDLE, track_access=True))
    with fresh_pairs(2):
        check_copies(steps, StorePolicy(max_idle=IDLE, track_access=True))


def test_a_backup_drops_what_its_owner_expired_until_the_owners_clock_goes_back() -> None:
    """``expire_through`` (an owner's EXPIRED effect) makes a backup's sweeps, scans and reads
    count the entries due by the owner's time expired, ahead of the backup's clock; a put due before
    that time (the owner's clock went back) hands the decision back to the backup's clock."""
    now = time.time()
    store = Records()
    store.put(b"due", b"v", now + 100)
    store.put(b"later", b"v", now + 300)
    assert not store.due(now)
    store.expire_through(now + 200)
    assert store.count() == 1
    assert [key for key, _, _ in store.items()] == [b"later"]
    assert store.get(b"due") is None  # (as a promoted backup reads)
    assert store.peek(b"due") is None
    assert store.time_left(b"due") == 1e-9
    assert store.due(now)
    assert store.sweep(now) == [(b"due", b"v")]
    store.put(b"back", b"v", now + 150)  # put by an owner whose clock went back
    assert not store.due(now)
    assert store.sweep(now) == []
    assert sorted(store.values) == [b"back", b"later"]


def test_a_promoted_backup_passes_its_old_owners_watermark_on() -> None:
    """A backup promoted with its old owner's watermark ahead of its own clock drops what the
    watermark covers, and its EXPIRED tells its own backups the same time."""
    now = time.time()
    part, backup = Partition(0), Partition(0)
    for copy in (part, backup):
        copy.apply([Effect(EffectKind.PUT, "m", b"k", b"v", now + 100)])
    part.apply([Effect(EffectKind.EXPIRED, "m", b"", b"", now + 200)])  # from its old owner
    gone, effects = part.expire("m", now)
    assert gone == [(b"k", b"v")]
    backup.apply(effects)
    assert backup.maps["m"].sweep(now) == [(b"k", b"v")]


@contextmanager
def fresh_pairs(n: int) -> Iterator[None]:
    """Queues keep only ``n`` pairs in their heap: short step lists reach runs and merges."""
    with mock.patch.object(records, "FRESH_PAIRS", n):
        yield


@settings(max_examples=300, deadline=None)
@given(expiry_steps)
def test_a_sweep_frees_exactly_the_keys_whose_ttl_passed_once_each(steps) -> None:
    check(steps, None)
    with fresh_pairs(2):
        check(steps, None)


@settings(max_examples=300, deadline=None)
@given(expiry_steps)
# read (touched) after its idle pair was pushed: the sweep that pops the pair must push it back
@example([("put", b"ea", 0), ("touch", b"ea", 5), ("sweep", 10, 0), ("sweep", 6, 0)])
# a copy's idle clock set earlier than its put: due before the pair the put pushed
@example([("put", b"ea", 0), ("access", b"ea", -5), ("sweep", 6, 0)])
# a put after a later-stamped touch (an owner's clock ahead of ours): due from the put, not the touch
@example(
    [
        ("put", b"eb", 0),
        ("touch", b"eb", 1),
        ("sweep", 1, 0),
        ("sweep", 9, 0),
        ("put", b"eb", 0),
        ("sweep", 0, 0),
    ]
)
def test_a_sweep_frees_exactly_the_keys_idle_too_long_or_past_their_ttl(steps) -> None:
    check(steps, StorePolicy(max_idle=IDLE, track_access=True))
    with fresh_pairs(2):
        check(steps, StorePolicy(max_idle=IDLE, track_access=True))


def check_queue(steps: list[tuple[str, int, bytes]]) -> None:
    queue, model = Deadlines(), []
    for step, n, key in steps:
        if step == "push":
            queue.push(float(n), key)
            heapq.heappush(model, (float(n), key))
        elif step == "pop":
            for _ in range(min(n, len(model))):
                assert queue.pop() == heapq.heappop(model)
        elif step == "take":  # up to ``limit`` of the pairs due by n, any of them
            limit = key[0] or None
            due = sorted(p for p in model if p[0] <= n)
            taken = queue.take_due(float(n), limit)
            assert len(taken) == min(limit or len(due), len(due))
            for pair in taken:
                due.remove(pair)  # (raises if it was not due, or taken twice)
                model.remove(pair)
            heapq.heapify(model)
        else:
            assert sorted(queue.due(float(n))) == sorted(p for p in model if p[0] <= n)
        assert len(queue) == len(model)
        assert queue.first() == (min(model)[0] if model else None)
    assert [queue.pop() for _ in range(len(model))] == sorted(model)
    assert not queue
    assert queue.first() is None


@settings(max_examples=200, deadline=None)
@given(deadline_steps)
def test_the_deadline_queue_pops_in_order_as_a_heap_does(steps) -> None:
    with fresh_pairs(3):
        check_queue(steps)
    check_queue(steps)


def gc_walked(root: object) -> int:
    """References a full collection follows from ``root``: every referent of every tracked
    object reachable from it through tracked objects (each one a memory read per collection),
    classes left out (through them, the whole program)."""
    seen, stack, walked = {id(root)}, [root], 0
    while stack:
        referents = [obj for obj in gc.get_referents(stack.pop()) if not isinstance(obj, type)]
        walked += len(referents)
        for obj in referents:
            if gc.is_tracked(obj) and id(obj) not in seen:
                seen.add(id(obj))
                stack.append(obj)
    return walked


def test_a_stores_entries_and_deadlines_cost_the_gc_nothing_per_entry() -> None:
    """A full collection walks a bounded number of references of a store, however many
    entries it has, TTL'd, max-idle or neither: values and deadlines are untracked dicts,
    settled pairs untracked tuples (a list of them would be walked pair by pair)."""
    walked = {}
    for n in (1_000, 20_000):
        for name, policy in (("ttl", None), ("idle", StorePolicy(max_idle=IDLE))):
            store = Records(policy)
            now = time.time()
            for i in range(n):
                store.put(b"k%d" % i, b"v", now + 60 + (i * 7919) % n)  # deadlines out of order
            for i in range(0, n, 3):
                store.put(b"k%d" % i, b"w", now + 30 + i)  # a new deadline: a stale pair each
            gc.collect()  # a tuple is untracked by a collection that finds its items untracked:
            gc.collect()  # the pairs by the first, the runs holding them by the second
            assert not gc.is_tracked(store.values)
            assert not gc.is_tracked(store.expiry)
            assert all(not gc.is_tracked(run.pairs) for run in store.timers.runs)
            assert len(store.timers.runs) <= math.log2(n) + 1
            walked[name, n] = gc_walked(store) - (len(store.access.keys) if store.access else 0)
    for name in ("ttl", "idle"):
        # the fresh heaps and a run per halving of the size: logarithmic, not linear, in n
        assert walked[name, 20_000] <= walked[name, 1_000] + 4 * 2 * (FRESH_PAIRS + 6), walked


def test_expired_entries_are_invisible_before_the_sweep_frees_them() -> None:
    store = Records(StorePolicy(max_idle=IDLE, track_access=True))
    store.put(b"ttl", b"1", time.time() - 1)
    store.put(b"idle", b"2")
    store.set_access(b"idle", time.time() - IDLE - 1)
    store.put(b"live", b"3", time.time() + 60)
    for key in (b"ttl", b"idle"):
        assert store.get(key) is None
        assert store.peek(key) is None
    assert store.get(b"live") == b"3"
    assert sorted(store.expired(time.time())) == [b"idle", b"ttl"]  # listed, still stored
    assert len(store) == 3
    assert store.count() == 1  # live ones only: counted from the due pairs, no scan
    assert sorted(store.sweep(time.time())) == [(b"idle", b"2"), (b"ttl", b"1")]


def test_a_sweep_stops_after_its_limit_and_says_more_is_due() -> None:
    store = Records()
    now = time.time()
    for i in range(10):
        store.put(b"k%d" % i, b"v", now - 10 + i)
    assert len(store.sweep(now, 4)) == 4
    assert store.due(now)
    assert len(store.sweep(now, None)) == 6
    assert not store.due(now)


def test_stale_heap_pairs_never_pile_up() -> None:
    """Deadlines changed over and over, and deletes, leave at most twice the live pairs."""
    store = Records(StorePolicy(max_idle=IDLE, track_access=True))
    now = time.time()
    for i in range(5000):
        store.put(b"hot", b"v", now + 1000 + i)  # a new deadline each time: a stale pair each
        store.put(b"k%d" % (i % 50), b"v", now + 500 + i)
        store.delete(b"k%d" % ((i + 25) % 50))
    assert store.access is not None
    assert len(store.timers) <= 2 * len(store.expiry) + HEAP_SLACK
    assert len(store.access.due) <= 2 * len(store) + HEAP_SLACK + 1


# ---------------------------------------------------------------------- in a cluster
def test_entries_expire_with_their_events_and_backups_on_a_cluster() -> None:
    """Many entries in one partition (swept in several batches) and across every partition:
    each expires once, with one EXPIRED event, on its owner and its backup; entries whose TTL
    was lifted or pushed back live on."""
    with cluster(3) as grids:
        seen = Recorder()
        grids[0].get_map("exp").add_entry_listener(on_expired=seen)
        m = grids[1].get_map("exp")
        doomed = [f"{{one}}k{i}" for i in range(100)] + [f"k{i}" for i in range(600)]
        m.put_all(dict.fromkeys(doomed, "v"), ttl=0.5)
        m.put_all({"lifted": "v", "pushed": "v", "{one}lifted": "v"}, ttl=2)
        lifted_at = time.monotonic()
        assert m.persist("lifted")
        assert m.persist("{one}lifted")
        assert m.expire("pushed", 60)

        def swept() -> bool:
            stats = [g.get_map("exp").local_stats() for g in grids]
            return sum(s.owned_entries for s in stats) == 3 and sum(s.backup_entries for s in stats) == 3

        wait_for(swept, 20, message="expired entries freed on owners and backups")
        wait_for(lambda: len(seen.keys()) >= len(doomed), 20, message="an EXPIRED event per entry")
        assert sorted(seen.keys()) == sorted(doomed)  # each once, none of the live ones
        wait_for(lambda: time.monotonic() > lifted_at + 2.5, 10, message="the lifted TTLs' old deadline")
        assert swept()
        assert m.stats().total.expirations == len(doomed)
        assert m.get_all(["lifted", "pushed", "{one}lifted", "k1"]) == dict.fromkeys(
            ["lifted", "pushed", "{one}lifted"], "v"
        )


class Recorder:
    """The keys of the events a listener got (called on the dispatcher thread)."""

    def __init__(self) -> None:
        self._keys: list[object] = []
        self._lock = threading.Lock()

    def __call__(self, event: peergrid.EntryEvent) -> None:
        with self._lock:
            self._keys.append(event.key)

    def keys(self) -> list[object]:
        with self._lock:
            return list(self._keys)
