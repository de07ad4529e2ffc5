"""A near cache against a model of its owner, in every order hypothesis finds.

This member's own writes (begun, applied by the owner, acknowledged or not), other members'
writes and their events (in the owner's order, sent late), fetches (begun, answered by the
owner at some moment, landed) and readers sharing a fetch in flight interleave freely. Whatever
the near cache serves (a hit, or a shared fetch's answer) must be a value the owner held that
is not older than the newest change this member knew of when the read began: its own
acknowledged writes (read-your-writes) and the events it was sent (bounded staleness).
"""

from __future__ import annotations

import time
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from peergrid import NearCacheConfig
from peergrid.events.model import EventBatch, EventKind
from peergrid.events.nearcache import MISS, Flight, NearCache

KEYS = (b"a", b"b")


class NearCacheAgainstItsOwner(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        config = NearCacheConfig(max_entries=10, max_staleness=3600.0)
        self.near = NearCache("m", config, owner_of=lambda p: "owner", loads=bytes)
        self.near.on_alive("owner", time.monotonic())
        self.version = 0  # the owner's partition version
        self.state: dict[bytes, bytes | None] = dict.fromkeys(KEYS)
        self.history: dict[bytes, list[int]] = {k: [] for k in KEYS}  # versions that changed k
        self.events: list[tuple[int, bytes, bytes, int]] = []  # sent to this member, not arrived
        self.floor = dict.fromkeys(KEYS, 0)  # the newest change of k this member knows of
        self.writes: list[list[Any]] = []  # own writes in flight: [key, delete, applied at]
        self.fetches: list[list[Any]] = []  # [key, flight, the owner's answer or None]
        self.sharing: list[tuple[bytes, Flight, int]] = []  # readers waiting on a fetch

    # ------------------------------------------------------------------ the owner
    def _apply(self, key: bytes, delete: bool) -> bytes | None:
        self.version += 1
        value = None if delete else key + b"@%d" % self.version
        self.state[key] = value
        self.history[key].append(self.version)
        return value

    @rule(key=st.sampled_from(KEYS), delete=st.booleans())
    def another_member_writes(self, key: bytes, delete: bool) -> None:
        value = self._apply(key, delete)
        kind = EventKind.REMOVED if delete else EventKind.UPDATED
        self.events.append((kind, key, value or b"", self.version))

    @precondition(lambda self: self.events)
    @rule()
    def an_event_arrives(self) -> None:
        kind, key, value, version = self.events.pop(0)  # in the owner's order
        batch = EventBatch(
            kinds=[kind], partitions=[0], seqs=[0], keys=[key], values=[value], versions=[version], ttls=[0.0]
        )
        self.near.on_events("owner", batch)
        self.floor[key] = max(self.floor[key], version)

    # ------------------------------------------------------------------ this member's writes
    @rule(key=st.sampled_from(KEYS), delete=st.booleans())
    def this_member_starts_a_write(self, key: bytes, delete: bool) -> None:
        self.near.write_begins(key)
        self.writes.append([key, delete, None])

    @precondition(lambda self: any(w[2] is None for w in self.writes))
    @rule(data=st.data())
    def the_owner_applies_it(self, data: st.DataObject) -> None:
        write = data.draw(st.sampled_from([w for w in self.writes if w[2] is None]))
        self._apply(write[0], write[1])  # no event to its sender: it learns from the answer
        write[2] = self.version

    @precondition(lambda self: self.writes)
    @rule(data=st.data(), answered=st.booleans())
    def it_ends(self, data: st.DataObject, answered: bool) -> None:
        write = data.draw(st.sampled_from(self.writes))
        self.writes.remove(write)
        key, delete, applied = write
        if applied is None or not answered:  # failed, or its outcome unknown
            self.near.write_ends(key, 0, None, 0)
            return
        self.near.write_ends(key, 0, None if delete else key + b"@%d" % applied, applied)
        self.floor[key] = max(self.floor[key], applied)

    # ------------------------------------------------------------------ readers
    @rule(key=st.sampled_from(KEYS))
    def a_reader_misses(self, key: bytes) -> None:
        shared = self.near.shared(key)
        if shared is not None:
            self.sharing.append((key, shared, self.floor[key]))
        else:
            self.fetches.append([key, self.near.begin(key), None])

    @precondition(lambda self: any(f[2] is None for f in self.fetches))
    @rule(data=st.data())
    def the_owner_answers_a_fetch(self, data: st.DataObject) -> None:
        fetch = data.draw(st.sampled_from([f for f in self.fetches if f[2] is None]))
        fetch[2] = (self.state[fetch[0]], self.version)

    @precondition(lambda self: any(f[2] is not None for f in self.fetches))
    @rule(data=st.data())
    def a_fetch_lands(self, data: st.DataObject) -> None:
        fetch = data.draw(st.sampled_from([f for f in self.fetches if f[2] is not None]))
        self.fetches.remove(fetch)
        key, flight, (value, version) = fetch
        self.near.end(key, 0, value, value is not None, flight, True, version)
        for waiter in [w for w in self.sharing if w[1] is flight]:
            self.sharing.remove(waiter)
            self._check(key, value if value is not None else MISS, waiter[2], "a shared fetch")

    @rule(key=st.sampled_from(KEYS))
    def a_reader_looks(self, key: bytes) -> None:
        self._check(key, self.near.lookup(key), self.floor[key], "a hit")

    def _check(self, key: bytes, got: Any, floor: int, what: str) -> None:
        """``got`` (a value ``key@version``, or MISS) was current at the change ``floor`` or later."""
        if got is MISS:
            return
        written = int(got.split(b"@")[1])
        assert written in self.history[key], f"{what} served {got!r}, which the owner never held"
        newer = [v for v in self.history[key] if v > written]
        assert not newer or newer[0] > floor, (
            f"{what} served {got!r}, replaced at version {newer[0]}, though this member knew of "
            f"version {floor} of {key!r}"
        )


NearCacheAgainstItsOwner.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_the_near_cache_against_its_owner = NearCacheAgainstItsOwner.TestCase
