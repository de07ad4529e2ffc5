"""Reads while a partition moves: the new owner reads from the copy on its way to it.

In-process clusters over real gRPC. The members' transfers are held (their ``handle_fetch``
waits for the test) so that a newcomer owns partitions it cannot serve yet; gets of them must
still answer, from the member the copy comes from, and writes must wait for the copy.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import peergrid
from peergrid.partition import partition_of
from peergrid.protocol import Code, Op, Result, Status
from peergrid.replication.manager import PARALLEL_TRANSFERS
from peergrid.serialization import encode_key
from peergrid.testing import TestCluster, cluster
from tests.conftest import wait_for

KEYS = [f"k{i}" for i in range(2000)]
HOLD_S = 60.0  # the most a held transfer waits for the test to let it go


def partition(key: str) -> int:
    return partition_of(encode_key(key), 271)


def hold_transfers(grids: TestCluster) -> threading.Event:
    """Make every member's copies wait, before their first chunk, until the event is set."""
    release = threading.Event()
    for grid in grids:
        manager = grid._node.manager
        original = manager.handle_fetch

        async def held(members: Any, p: int, original: Any = original) -> AsyncIterator[Any]:
            await asyncio.get_running_loop().run_in_executor(None, release.wait, HOLD_S)
            async for chunk in original(members, p):
                yield chunk

        manager.handle_fetch = held  # type: ignore[method-assign]
    return release


@pytest.fixture
def moving() -> Iterator[tuple[TestCluster, peergrid.Grid, dict[str, int], set[int], threading.Event]]:
    """Three members holding KEYS, and a fourth that owns partitions whose copies are held."""
    with cluster(3) as grids:
        data = {k: i for i, k in enumerate(KEYS)}
        grids[0].get_map("data").put_all(data)
        release = hold_transfers(grids)
        try:
            newcomer = grids.add()
            manager = newcomer._node.manager
            # Every partition the newcomer takes over waits for its copy (a slot, then the transfer).
            wait_for(lambda: len(manager.handoffs) >= 10, message="the newcomer copying its partitions")
            yield grids, newcomer, data, set(manager.handoffs), release
        finally:
            release.set()


def test_gets_of_a_moving_partition_answer_from_the_copy_on_its_way(moving: Any) -> None:
    grids, newcomer, data, handed, _ = moving
    keys = [k for k in KEYS if partition(k) in handed]
    assert keys
    for grid in grids.live():
        m = grid.get_map("data")
        assert {k: m.get(k) for k in keys} == {k: data[k] for k in keys}
        assert m.contains_key(keys[0])
        assert m.get_all(KEYS) == data  # a get_all's keys of moving partitions, from the same copies
    absent = next(k for k in (f"absent{i}" for i in range(100_000)) if partition(k) in handed)
    assert newcomer.get_map("data").get(absent) is None
    assert not grids[0].get_map("data").contains_key(absent)
    # Still held: none of that came from a copy the newcomer serves.
    assert all(newcomer._node.manager.readable[p] is None for p in {partition(k) for k in keys})


def test_a_write_of_a_moving_partition_waits_for_the_copy_and_is_read_after(moving: Any) -> None:
    grids, newcomer, data, handed, release = moving
    key = next(k for k in KEYS if partition(k) in handed)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            grids[1].get_map("data").put(key, -1)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    assert newcomer.get_map("data").get(key) == data[key]  # the write cannot be acknowledged yet
    release.set()
    writer.join(30)
    assert not writer.is_alive()
    assert not errors
    assert grids.wait_until_safe(30)
    for grid in grids.live():
        assert grid.get_map("data").get(key) == -1
        assert grid.get_map("data").get_all(KEYS) == {**data, key: -1}


def _ask(grid: peergrid.Grid, op: Op, caller_version: int, sender: str) -> Result:
    async def run() -> Result:
        outcome = grid._node.executor.execute(op, caller_version, sender)
        return await outcome if isinstance(outcome, asyncio.Future) else outcome

    result: Result = grid._node.run(run(), timeout=10)
    return result


def test_a_source_answers_a_handoff_read_only_for_its_copy_at_the_askers_table() -> None:
    """The checks on the member asked (``Executor._handoff_get``): same member list, the asker
    owns the partition there, the copy is at the version the asker decided to copy."""
    with cluster(3) as grids:
        data = {k: i for i, k in enumerate(KEYS[:200])}
        grids[0].get_map("data").put_all(data)
        assert grids.wait_until_safe(30)
        by_uuid = {g.uuid: g for g in grids}
        table = grids[0]._node.manager.table
        key = KEYS[0]
        p = partition(key)
        owner, backup = table.replicas[p][0], table.replicas[p][1]
        other = next(g.uuid for g in grids if g.uuid not in (owner, backup))
        source = by_uuid[backup]
        copy = source._node.manager.parts[p]
        assert copy is not None
        encoded = encode_key(key)

        def ask(version: int, table_version: int, sender: str, key: bytes = encoded) -> Result:
            return _ask(source, Op(Code.HANDOFF_GET, p, "data", key, version=version), table_version, sender)

        answered = ask(copy.version, table.version, owner)
        assert answered.status == Status.OK
        assert answered.found
        assert answered.version == copy.version
        assert source._node.serializer.loads(answered.value) == data[key]
        refusals = {
            "an older copy": ask(copy.version - 1, table.version, owner),
            "a newer copy": ask(copy.version + 1, table.version, owner),
            "not the owner": ask(copy.version, table.version, other),
            "an older table": ask(copy.version, table.version - 1, owner),
            "a newer table": ask(copy.version, table.version + 1, owner),
        }
        assert {why: r.status for why, r in refusals.items()} == dict.fromkeys(refusals, Status.RETRY)
        assert all(r.message for r in refusals.values())
        assert ask(copy.version, table.version, owner, key=b"").status == Status.INVALID


def test_a_write_to_a_partition_queued_for_its_copy_does_not_wait_for_the_others() -> None:
    """The new owner copies ``PARALLEL_TRANSFERS`` partitions at a time. A write to one further
    back in the queue waited for every copy before it (most of a join's migration); a partition
    a caller waits for now goes first, in a slot of its own (``TransferSlots.hurry``)."""
    with cluster(3) as grids:
        data = {k: i for i, k in enumerate(KEYS)}
        grids[0].get_map("data").put_all(data)
        release = threading.Event()
        held: set[int] = set()  # partitions whose copies are held
        let_go: set[int] = set()  # partitions whose copies are not
        for grid in grids:
            manager = grid._node.manager
            original = manager.handle_fetch

            async def held_unless_let_go(
                members: Any, p: int, original: Any = original
            ) -> AsyncIterator[Any]:
                if p not in let_go:
                    held.add(p)
                    await asyncio.get_running_loop().run_in_executor(None, release.wait, HOLD_S)
                async for chunk in original(members, p):
                    yield chunk

            manager.handle_fetch = held_unless_let_go  # type: ignore[method-assign]
        try:
            newcomer = grids.add()
            manager = newcomer._node.manager
            wait_for(lambda: len(held) >= PARALLEL_TRANSFERS, message="the newcomer's transfer slots taken")
            queued = sorted(set(manager.handoffs) - held)
            assert queued, "no partition waits for a transfer slot"
            p = queued[-1]
            let_go.add(p)
            key = next(k for k in (f"w{i}" for i in range(100_000)) if partition(k) == p)
            grids[1].get_map("data").put(key, -1)  # before: no slot until a held copy ends
            assert manager.readable[p] is not None
            assert newcomer.get_map("data").get(key) == -1
            assert all(manager.readable[q] is None for q in held)  # the others are still held
        finally:
            release.set()
        assert grids.wait_until_safe(30)
        assert grids[2].get_map("data").get_all([*KEYS, key]) == {**data, key: -1}


@pytest.mark.parametrize("backup", ["acks", "fails"])
def test_a_write_waiting_for_its_backup_when_its_partition_moves(backup: str) -> None:
    """A join moved a partition while a write to it waited for its backup's ack: its old owner
    ended the write INDETERMINATE at once, although its own copy (the newest, the one the new
    owner takes) held the write, and the backup's would once the ack on its way arrived. It
    now waits for that ack; a backup that fails the write instead, no longer the old owner's
    to repair, ends it INDETERMINATE then (not at its deadline)."""
    with cluster(3) as grids:
        keys = [f"w{i}" for i in range(80)]  # some move to the newcomer: each does with p ~ 1/4
        release_transfers = hold_transfers(grids)
        held: list[tuple[asyncio.AbstractEventLoop, Any, Any]] = []
        holding = True
        for grid in grids:
            replicator = grid._node.manager.replicator

            def hold(send: Any, original: Any = replicator._send, loop: Any = grid._node.loop) -> None:
                if holding and send.waiter is not None:
                    held.append((loop, original, send))
                else:
                    original(send)

            replicator._send = hold  # type: ignore[method-assign]
        outcome: list[str] = []

        def write() -> None:
            try:
                grids[1].get_map("w").put_all(dict.fromkeys(keys, 1))  # one write per key
                outcome.append("ok")
            except peergrid.PeerGridError as exc:
                outcome.append(str(exc))

        writer = threading.Thread(target=write)
        try:
            writer.start()
            wait_for(lambda: len(held) == len(keys), message="every write waiting for its backup")
            newcomer = grids.add()
            table = newcomer._node.manager.table
            wait_for(
                lambda: all(g._node.manager.table.version >= table.version for g in grids),
                message="every member on the newcomer's table",
            )
            moved = {p for p in map(partition, keys) if table.owner(p) == newcomer.uuid}
            assert moved, "no written partition moved to the newcomer: the test proved nothing"
            holding = False
            failure = Result(Status.ERROR, message="failed by the test")
            for loop, original, send in held:
                if backup == "acks" or send.op.partition not in moved:
                    loop.call_soon_threadsafe(original, send)
                else:
                    loop.call_soon_threadsafe(send.handle, failure)
            writer.join(30)
            assert not writer.is_alive()
        finally:
            holding = False
            release_transfers.set()
        if backup == "acks":
            assert outcome == ["ok"]
        else:
            assert "moved before every backup acknowledged" in outcome[0]
        assert grids.wait_until_safe(30)
        for grid in grids.live():  # applied either way: the new owner took the old owner's copy
            assert grid.get_map("w").get_all(keys) == dict.fromkeys(keys, 1)
