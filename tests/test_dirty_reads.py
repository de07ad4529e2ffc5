"""A read never returns a write its backups have not acknowledged.

An owner applies a write, then waits for its backups. A read answered in between could return
a value that a split then loses: the write ends INDETERMINATE, a backup beyond the split is
promoted without it, and the value read never existed (found by the Jepsen split-2-3 run with
quorum: a delete read as done on the minority side, then the majority read the old value).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from peergrid import Timing
from peergrid.maps.flows import Remote
from peergrid.partition.hashing import partition_of
from peergrid.protocol import Code, Op, Result, Status
from peergrid.serialization.keys import encode_key
from peergrid.testing import cluster
from tests.conftest import wait_for


def test_a_read_of_a_key_waits_for_the_backups_of_its_pending_write() -> None:
    with cluster(2, backup_count=1, timing=Timing.fast()) as (a, _):
        m = a.get_map("fence")
        key = next(f"k{i}" for i in range(1000) if a.owner_of(f"k{i}").uuid == a.uuid)
        m.put(key, "old")
        node = a._node
        held: list[asyncio.Future[Result]] = []
        replicate = node.manager.replicator.replicate

        def hold(p: int, version: int, effects: Any, result: Result, *reply: Any) -> Any:
            outcome = replicate(p, version, effects, result, *reply)
            if not isinstance(outcome, asyncio.Future):
                return outcome
            gate: asyncio.Future[Result] = node.loop.create_future()
            outcome.add_done_callback(lambda f: held.append(gate))  # acked, but held back
            return gate

        node.manager.replicator.replicate = hold  # type: ignore[method-assign]
        setter = asyncio.run_coroutine_threadsafe(_put(a, key), node.loop)
        wait_for(lambda: held, 10, message="the backup acknowledged the write")
        encoded = encode_key(key)
        op = Op(Code.GET, partition_of(encoded, node.config.partition_count), "fence", encoded)

        async def read() -> Any:
            return node.executor.execute(op, node.membership.members.version)

        outcome = asyncio.run_coroutine_threadsafe(read(), node.loop).result(5)
        assert isinstance(outcome, asyncio.Future)  # it waits for the write
        assert not outcome.done()
        # The application thread's owner-local read does not answer from the dict either: it
        # asks the loop, which waits too.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            local = pool.submit(m.get, key)
            node.loop.call_soon_threadsafe(held[0].set_result, Result())
            result = asyncio.run_coroutine_threadsafe(_wait(outcome), node.loop).result(5)
            assert result.status == Status.OK
            assert result.found
            assert local.result(10) == "new"
        setter.result(10)
        node.manager.replicator.replicate = replicate  # type: ignore[method-assign]


def test_an_owner_local_read_between_a_writes_apply_and_its_fence_asks_the_loop() -> None:
    """Owner-local reads run on the application's threads, unlocked, and may run at any point
    of the loop's write (a switch of the GIL): one that reads the records after the write
    applied them, before the write is fenced, must not answer from them. The partition's other
    keys are still read here meanwhile (the fence is the key's)."""
    with cluster(2, backup_count=1, timing=Timing.fast()) as (a, _):
        m = a.get_map("fence")
        node = a._node
        count = node.config.partition_count
        mine = [f"k{i}" for i in range(5000) if a.owner_of(f"k{i}").uuid == a.uuid]
        key = mine[0]
        partition = partition_of(encode_key(key), count)
        other = next(k for k in mine[1:] if partition_of(encode_key(k), count) == partition)
        m.put(key, "old")
        m.put(other, "other")
        core = m._core
        seen: list[tuple[Any, Any]] = []
        replicate = node.manager.replicator.replicate

        def read_meanwhile(p: int, version: int, effects: Any, result: Result, *reply: Any) -> Any:
            # Applied, its backups not asked yet: what an application thread reads right now.
            seen.append((core.get(key), core.get(other)))
            return replicate(p, version, effects, result, *reply)

        node.manager.replicator.replicate = read_meanwhile  # type: ignore[method-assign]
        try:
            m.put(key, "new")
        finally:
            node.manager.replicator.replicate = replicate  # type: ignore[method-assign]
        ((during, beside),) = seen
        assert isinstance(during, Remote)  # it asks the loop, which waits for the backups
        assert beside == "other"
        assert m.get(key) == "new"


async def _put(grid: Any, key: str) -> None:
    await asyncio.get_running_loop().run_in_executor(None, grid.get_map("fence").put, key, "new")


async def _wait(future: asyncio.Future[Result]) -> Result:
    return await future
