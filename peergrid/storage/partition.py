"""One partition's data on one member: a record store per map, and a version.

The version counts the writes the partition's owner has applied; an owner and
its backups that have the same version hold the same data. Only the member's
loop thread changes a partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from peergrid.protocol import Effect, EffectKind
from peergrid.storage import journal
from peergrid.storage.records import Records, StorePolicy

Policies = Callable[[str], StorePolicy | None]


def _no_policy(_name: str) -> None:
    return None


class Partition:
    """The maps' entries of one partition, and the version they are at."""

    __slots__ = ("deltas", "id", "journal", "maps", "policies", "unacked", "version")

    def __init__(self, partition_id: int, version: int = 0, policies: Policies = _no_policy) -> None:
        self.id = partition_id
        self.version = version
        self.maps: dict[str, Records] = {}
        self.policies = policies
        #: (map, key) -> journal record of changes made while the cluster may be split, oldest
        #: first; None when there are none (see ``peergrid.storage.journal``).
        self.journal: dict[tuple[str, bytes], int] | None = None
        #: (map, key) -> member uuid -> what that member added to a key the journal saw only
        #: incremented (a grow-only count per contributor).
        self.deltas: dict[tuple[str, bytes], dict[str, int]] | None = None
        #: (map, key) -> the outcome of the latest write of that key (key b"": of the whole map)
        #: applied here but not yet acknowledged by the backups (owner only). A read of such a
        #: key waits for it: answered at once, it could see a write that a split then loses.
        self.unacked: dict[tuple[str, bytes], Any] = {}

    def store(self, name: str) -> Records:
        """The record store of map ``name``, created empty on first use."""
        store = self.maps.get(name)
        if store is None:
            store = self.maps[name] = Records(self.policies(name))
        return store

    def apply(self, effects: Iterable[Effect]) -> None:
        """Apply effects shipped by the owner (on a backup, or when installing)."""
        for effect in effects:
            if effect.stamp:
                self.note(effect)
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
            elif effect.kind == EffectKind.EXPIRED:
                store = self.maps.get(effect.map)
                if store is not None:
                    store.expire_through(effect.expire_at)

    def snapshot(self) -> Iterator[Effect]:
        """Every live entry as a PUT effect, to rebuild this partition elsewhere; where access
        is tracked, each followed by its last access (a copy must not restart idle clocks); then
        the journal, oldest first."""
        for name, store in list(self.maps.items()):
            last = store.access.last if store.access is not None else None
            for key, value, expire_at in store.items():
                yield Effect(EffectKind.PUT, name, key, value, expire_at)
                if last is not None and key in last:
                    yield Effect(EffectKind.ACCESS, name, key, b"", last[key])
        deltas = self.deltas or {}
        for (name, key), rec in list((self.journal or {}).items()):
            counts = deltas.get((name, key))
            if counts is None:
                yield journal_effect(name, key, rec)
            for who, count in list((counts or {}).items()):
                stamp = journal.stamp_in(rec)
                yield Effect(EffectKind.DELTA, name, key, journal.encode_delta(who, count), 0.0, stamp)

    # ------------------------------------------------------------------ journal
    def note(self, effect: Effect) -> None:
        """Journal a stamped change (a PUT, DELETE, CLEAR or DELTA effect), or a JOURNAL entry copied."""
        key = (effect.map, effect.key if effect.kind != EffectKind.CLEAR else journal.WHOLE_MAP)
        if effect.kind == EffectKind.DELTA:
            self._note_delta(key, effect)
            return
        if self.journal is not None and effect.kind == EffectKind.JOURNAL:
            kept = self.journal.get(key)
            if kept is not None and journal.stamp_in(kept) >= effect.stamp:
                return  # a record copied from elsewhere replaces no later one here
        if self.deltas is not None:
            if effect.kind == EffectKind.CLEAR:
                for held in [k for k in self.deltas if k[0] == effect.map]:
                    del self.deltas[held]
            else:
                self.deltas.pop(key, None)  # no longer changed by increments only
        if effect.kind == EffectKind.JOURNAL:
            rec = journal.record(effect.stamp, effect.value == b"d")
        elif effect.kind == EffectKind.CLEAR:
            rec = journal.record(effect.stamp, True)
        else:
            rec = journal.record(effect.stamp, effect.kind == EffectKind.DELETE)
        if self.journal is None:
            self.journal = {}
        self.journal.pop(key, None)  # re-inserted: the oldest change stays first
        self.journal[key] = rec

    def stamp_after(self, effect: Effect, stamp: int) -> int:
        """``stamp`` for ``effect``, or one past its key's journaled stamp if that is not
        earlier: a key's stamps only grow."""
        key = effect.key if effect.kind != EffectKind.CLEAR else journal.WHOLE_MAP
        rec = self.journaled(effect.map, key)
        if rec is not None and journal.stamp_in(rec) >= stamp:
            return journal.stamp_in(rec) + 1
        return stamp

    def _note_delta(self, key: tuple[str, bytes], effect: Effect) -> None:
        try:
            who, count = journal.decode_delta(effect.value)
        except ValueError:
            return  # (a malformed increment from a peer journals nothing)
        if self.journal is None:
            self.journal = {}
        if self.deltas is None:
            self.deltas = {}
        if key not in self.journal or key in self.deltas:  # only incremented since the journal began
            counts = self.deltas.setdefault(key, {})
            counts[who] = max(counts.get(who, 0), count)
        self.journal.pop(key, None)
        self.journal[key] = journal.record(effect.stamp, False)

    def contributions(self, name: str, key: bytes) -> dict[str, int] | None:
        """What each member added to ``key`` if the journal saw it changed by increments only."""
        return self.deltas.get((name, key)) if self.deltas is not None else None

    def journaled(self, name: str, key: bytes) -> int | None:
        """The journal record of ``key`` in map ``name`` (or of a clear of the map), or None."""
        if self.journal is None:
            return None
        rec = self.journal.get((name, key))
        cleared = self.journal.get((name, journal.WHOLE_MAP))
        if cleared is not None and (rec is None or journal.stamp_in(cleared) > journal.stamp_in(rec)):
            return cleared
        return rec

    def prune_journal(self, oldest: int, most: int) -> None:
        """Drop journal records stamped before ``oldest``, and the oldest beyond ``most``."""
        entries = self.journal
        if entries is None:
            return
        while entries:
            first = next(iter(entries))
            if len(entries) <= most and journal.stamp_in(entries[first]) >= oldest:
                break
            del entries[first]
            if self.deltas is not None:
                self.deltas.pop(first, None)
        if not entries:
            self.journal = None
            self.deltas = None

    def entry_count(self) -> int:
        """Live entries over every map."""
        return sum(store.count() for store in self.maps.values())

    def nbytes(self) -> int:
        """Key and value bytes over every map."""
        return sum(store.nbytes for store in self.maps.values())

    def expire(
        self, name: str, now: float, limit: int | None = None, until: float = 0.0
    ) -> tuple[list[tuple[bytes, bytes]], tuple[Effect, ...]]:
        """Drop map ``name``'s entries expired by ``now`` (looking at ``limit`` due ones at a
        time, None: all; again while some are due and ``time.perf_counter()`` is before
        ``until``), as their owner; return them as ``(key, value)``, and the effects that
        make a backup follow.

        The entries whose TTL passed travel as one ``EXPIRED`` effect up to ``now`` (or the
        watermark a promoted backup kept from its old owner, if later): a backup holds the
        same deadlines, and its sweeps drop them whatever its own clock says
        (``Records.expire_through``). One effect per entry, built, encoded, decoded and
        applied, was most of a mass expiry's cost, and its garbage the collector's work.
        Those idle too long go as a DELETE each: only the owner sees every read."""
        store = self.maps.get(name)
        if store is None:
            return [], ()
        timed, idled = store.sweep_apart(now, limit)
        while limit is not None and time.perf_counter() < until and store.due(now):
            more_timed, more_idled = store.sweep_apart(now, limit)
            timed += more_timed
            idled += more_idled
        effects = tuple(Effect(EffectKind.DELETE, name, key) for key, _ in idled)
        if timed:
            # (a promoted backup may hold its old owner's watermark, ahead of its own clock)
            through = max(now, store.expired_through)
            effects = (Effect(EffectKind.EXPIRED, name, b"", b"", through), *effects)
        return (timed + idled if idled else timed), effects


def journal_effect(name: str, key: bytes, rec: int) -> Effect:
    """A journal record as it travels (in a transfer, or a merge)."""
    return Effect(
        EffectKind.JOURNAL, name, key, b"d" if journal.is_delete(rec) else b"", 0.0, journal.stamp_in(rec)
    )
