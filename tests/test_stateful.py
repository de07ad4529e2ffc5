"""Stateful properties: random operations through random members, checked against a model.

The model holds, per key, the set of states the key may be in (None = absent):
one state after every acknowledged operation, more after an indeterminate
write (it may or may not have been applied). A read narrows the set to what it
saw. The fault machine also adds members, kills them hard (at most
``backup_count`` between safe points) and lets them leave gracefully, and after
every settle checks the replication invariants of DESIGN.md.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import peergrid
from peergrid.testing import TestCluster, cluster

KEYS = [f"key:{i}" for i in range(10)] + [b"bin", 7, "{tag}:a", "{tag}:b"]
keys = st.sampled_from(KEYS)
vals = st.integers(min_value=0, max_value=20)
MAP = "model"
log = logging.getLogger("tests.stateful")

Transition = Callable[[Any], tuple[Any, Any]]  # state -> (what the call returns, new state)


class MapModel(RuleBasedStateMachine):
    """Random map operations through random members of a settled cluster."""

    SIZE = 3
    GRID_OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        # Steps go to the log: when a failure depends on timing and hypothesis cannot
        # replay it, the captured log still tells the sequence that led there.
        log.warning("--- new example: %s(size=%d, %s)", type(self).__name__, self.SIZE, self.GRID_OPTIONS)
        self._cm = cluster(self.SIZE, **self.GRID_OPTIONS)
        self.grids: TestCluster = self._cm.__enter__()
        self.possible: dict[Any, set[Any]] = {}
        self.rng = random.Random(0)

    def teardown(self) -> None:
        self._cm.__exit__(None, None, None)

    # ------------------------------------------------------------------ helpers
    def states(self, key: Any) -> set[Any]:
        return self.possible.get(key, {None})

    def via(self, index: int) -> peergrid.DistributedMap:
        live = self.grids.live()
        return live[index % len(live)].get_map(MAP)

    def apply(self, key: Any, call: Callable[[], Any], transition: Transition) -> Any:
        """Run ``call`` on ``key``, check what it returned against the model; return it (None
        when the write's outcome is unknown)."""
        log.warning("step on %r", key)
        before = self.states(key)
        try:
            returned = call()
        except peergrid.IndeterminateWriteError:
            self.possible[key] = before | {transition(s)[1] for s in before}
            return None
        allowed = {repr(transition(s)[0]) for s in before}
        assert repr(returned) in allowed, f"{key!r}: got {returned!r}, allowed {allowed} from states {before}"
        self.possible[key] = {transition(s)[1] for s in before if repr(transition(s)[0]) == repr(returned)}
        return returned

    # ------------------------------------------------------------------ rules
    @rule(member=st.integers(0, 9), key=keys, value=vals)
    def put(self, member: int, key: Any, value: int) -> None:
        self.apply(key, lambda: self.via(member).put(key, value), lambda s: (s, value))

    @rule(member=st.integers(0, 9), key=keys, value=vals)
    def set_(self, member: int, key: Any, value: int) -> None:
        self.apply(key, lambda: self.via(member).set(key, value), lambda s: (None, value))

    @rule(member=st.integers(0, 9), key=keys)
    def get(self, member: int, key: Any) -> None:
        self.apply(key, lambda: self.via(member).get(key), lambda s: (s, s))

    @rule(member=st.integers(0, 9), key=keys)
    def delete(self, member: int, key: Any) -> None:
        self.apply(key, lambda: self.via(member).delete(key), lambda s: (s is not None, None))

    @rule(member=st.integers(0, 9), key=keys, value=vals)
    def put_if_absent(self, member: int, key: Any, value: int) -> None:
        self.apply(
            key,
            lambda: self.via(member).put_if_absent(key, value),
            lambda s: (s, s) if s is not None else (None, value),
        )

    @rule(member=st.integers(0, 9), key=keys, value=vals)
    def replace(self, member: int, key: Any, value: int) -> None:
        self.apply(
            key,
            lambda: self.via(member).replace(key, value),
            lambda s: (s, value) if s is not None else (None, None),
        )

    @rule(member=st.integers(0, 9), key=keys, old=vals, new=vals)
    def replace_if_same(self, member: int, key: Any, old: int, new: int) -> None:
        self.apply(
            key,
            lambda: self.via(member).replace_if_same(key, old, new),
            lambda s: (True, new) if s == old else (False, s),
        )

    @rule(member=st.integers(0, 9), key=keys)
    def remove(self, member: int, key: Any) -> None:
        self.apply(key, lambda: self.via(member).remove(key), lambda s: (s, None))

    @rule(member=st.integers(0, 9), key=keys, value=vals)
    def remove_if_same(self, member: int, key: Any, value: int) -> None:
        self.apply(
            key,
            lambda: self.via(member).remove_if_same(key, value),
            lambda s: (True, None) if s == value else (False, s),
        )

    @rule(member=st.integers(0, 9), key=keys)
    def expire_and_persist(self, member: int, key: Any) -> None:
        """A TTL given, read and removed: the value stays. (No other rule sets a TTL, and this
        one's would end in an hour: every rule begins with no TTL that can end meanwhile.)"""
        m = self.via(member)
        had = self.apply(key, lambda: m.expire(key, 3600), lambda s: (s is not None, s))
        try:
            if had:
                assert 3500 < m.ttl(key) <= 3600
                assert m.persist(key)
                assert m.ttl(key) is None
            elif had is not None:
                with pytest.raises(KeyError):
                    m.ttl(key)
        except peergrid.IndeterminateWriteError:
            pass  # (a TTL of an hour may stay: it changes no value the model checks)

    @rule(member=st.integers(0, 9), key=keys)
    def contains(self, member: int, key: Any) -> None:
        self.apply(key, lambda: self.via(member).contains_key(key), lambda s: (s is not None, s))

    @rule(member=st.integers(0, 9), entries=st.dictionaries(keys, vals, max_size=5))
    def put_all(self, member: int, entries: dict[Any, int]) -> None:
        try:
            self.via(member).put_all(entries)
        except peergrid.IndeterminateWriteError:
            for key, value in entries.items():
                self.possible[key] = self.states(key) | {value}
            return
        for key, value in entries.items():
            self.possible[key] = {value}

    @rule(member=st.integers(0, 9), chosen=st.lists(keys, max_size=6))
    def get_all(self, member: int, chosen: list[Any]) -> None:
        found = self.via(member).get_all(chosen)
        for key in set(chosen):
            seen = found.get(key)
            assert seen in self.states(key), f"{key!r}: get_all saw {seen!r}, allowed {self.states(key)}"
            self.possible[key] = {seen}

    @rule(member=st.integers(0, 9))
    def size(self, member: int) -> None:
        size = self.via(member).size()
        low = sum(1 for states in self.possible.values() if None not in states)
        high = sum(1 for states in self.possible.values() if states != {None})
        assert low <= size <= high

    @rule(member=st.integers(0, 9))
    def clear(self, member: int) -> None:
        try:
            self.via(member).clear()
        except peergrid.IndeterminateWriteError:
            # Some partitions may have been cleared, others not.
            self.possible = {key: states | {None} for key, states in self.possible.items()}
            return
        self.possible = {key: {None} for key in self.possible}


MapModel.TestCase.settings = settings(max_examples=12, stateful_step_count=30, deadline=None)
TestMapModel = MapModel.TestCase


class FaultModel(MapModel):
    """The same operations while members join, leave gracefully, and die."""

    SIZE = 3
    GRID_OPTIONS: ClassVar[dict[str, Any]] = {"backup_count": 1}
    MAX_MEMBERS = 5

    def __init__(self) -> None:
        super().__init__()
        self.kills_since_safe = 0
        self.backup_count = self.GRID_OPTIONS.get("backup_count", 1)
        # Copies every partition is guaranteed to have: 1 + backup_count, fewer with fewer
        # members. Joins add copies only once the cluster is safe again; a leave hands its
        # copies over but may leave fewer members than copies.
        self.copies = min(1 + self.backup_count, self.SIZE)

    @precondition(lambda self: len(self.grids.live()) < self.MAX_MEMBERS)
    @rule()
    def add_member(self) -> None:
        grid = self.grids.add()
        log.warning("step: added %s", grid.address)

    @precondition(lambda self: self.kills_since_safe < self.copies - 1)
    @rule(member=st.integers(0, 9))
    def kill(self, member: int) -> None:
        live = self.grids.live()
        log.warning("step: kill %s", live[member % len(live)].address)
        self.grids.kill(live[member % len(live)])
        self.kills_since_safe += 1

    @precondition(lambda self: len(self.grids.live()) > 1)
    @rule(member=st.integers(0, 9))
    def leave(self, member: int) -> None:
        live = self.grids.live()
        log.warning("step: leave %s", live[member % len(live)].address)
        live[member % len(live)].shutdown()
        self.copies = min(self.copies, len(self.grids.live()))

    @rule()
    def settle(self) -> None:
        log.warning("step: settle")
        assert self.grids.wait_until_safe(timeout=60), "the cluster did not become safe"
        self.kills_since_safe = 0
        self.copies = min(1 + self.backup_count, len(self.grids.live()))
        self.check_replicas()
        self.check_every_key()

    def check_replicas(self) -> None:
        live = self.grids.live()
        tables = {g._node.manager.table.version for g in live}
        assert len(tables) == 1, f"members disagree on the table: {tables}"
        table = live[0]._node.manager.table
        by_uuid = {g.uuid: g for g in live}
        wanted = min(1 + self.backup_count, len(live))
        for p, replicas in enumerate(table.replicas):
            holders = {uuid for uuid, g in by_uuid.items() if g._node.manager.parts[p] is not None}
            assert holders == set(replicas), f"partition {p}: held by {holders}, replicas {replicas}"
            assert len(replicas) == wanted
            versions = {by_uuid[u]._node.manager.parts[p].version for u in replicas}
            assert len(versions) == 1, f"partition {p}: replica versions differ: {versions}"

    def check_every_key(self) -> None:
        if not self.possible:
            return
        found = self.via(0).get_all(list(self.possible))
        for key, states in self.possible.items():
            assert found.get(key) in states, f"{key!r}: {found.get(key)!r} not in {states} after settle"

    @invariant()
    def quorum_of_one(self) -> None:
        assert self.grids.live()


FaultModel.TestCase.settings = settings(max_examples=8, stateful_step_count=25, deadline=None)
TestFaultModel = FaultModel.TestCase


class FaultModelTwoBackups(FaultModel):
    """backup_count=2: two members may die at once between safe points."""

    SIZE = 4
    GRID_OPTIONS: ClassVar[dict[str, Any]] = {"backup_count": 2}


FaultModelTwoBackups.TestCase.settings = settings(max_examples=4, stateful_step_count=20, deadline=None)
TestFaultModelTwoBackups = FaultModelTwoBackups.TestCase
