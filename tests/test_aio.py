"""AsyncGrid: the same API for asyncio code, over the same members."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

import peergrid
from peergrid import Timing


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_async_cluster_every_operation() -> None:
    async def main() -> None:
        async with (
            peergrid.AsyncGrid(cluster="aio", timing=Timing.fast()) as a,
            peergrid.AsyncGrid(cluster="aio", members=[a.address], timing=Timing.fast()) as b,
        ):
            assert await a.wait_until_safe(10)
            ma, mb = a.get_map("m"), b.get_map("m")
            assert await ma.put("k", 1) is None
            assert await mb.put("k", 2) == 1
            await mb.set("s", {"x": [1]})
            assert await ma.get("s") == {"x": [1]}
            assert await ma.get("nope", "dflt") == "dflt"
            assert await ma.put_if_absent("k", 9) == 2
            assert await mb.replace("k", 3) == 2
            assert await ma.replace_if_same("k", 3, 4)
            assert await mb.contains_key("k")
            await ma.put_all({f"b{i}": i for i in range(50)})
            assert await mb.get_all([f"b{i}" for i in range(50)]) == {f"b{i}": i for i in range(50)}
            assert await mb.size() == 52
            assert sorted(await ma.keys())[:2] == ["b0", "b1"]
            assert len(await mb.items()) == len(await mb.values()) == 52
            assert await ma.delete("k")
            stats = [await m.local_stats() for m in (ma, mb)]
            assert sum(s.owned_entries for s in stats) == 51
            await mb.clear()
            assert await ma.size() == 0
            assert [m.address for m in b.members()] == [a.address, b.address]
            owners = {a.owner_of(f"o{i}").uuid for i in range(50)}
            assert owners == {a.uuid, b.uuid}  # (no I/O: the table each member holds)
            assert all(a.owner_of(f"o{i}") == b.owner_of(f"o{i}") for i in range(50))

    run(main())


def test_await_style_start_and_concurrent_callers() -> None:
    async def main() -> None:
        a = await peergrid.AsyncGrid(cluster="aio2", timing=Timing.fast())
        b = await peergrid.AsyncGrid(cluster="aio2", members=[a.address], timing=Timing.fast())
        try:
            m = b.get_map("many")
            await asyncio.gather(*(m.set(f"k{i}", i) for i in range(300)))
            values = await asyncio.gather(*(a.get_map("many").get(f"k{i}") for i in range(300)))
            assert values == list(range(300))
        finally:
            await b.shutdown()
            await a.shutdown()
            await a.shutdown()  # safe twice
        with pytest.raises(peergrid.GridClosedError):
            await m.get("k1")

    run(main())


def test_async_errors_are_the_same_errors() -> None:
    async def main() -> None:
        async with peergrid.AsyncGrid(cluster="aio3", timing=Timing.fast()) as grid:
            m = grid.get_map("m")
            with pytest.raises(peergrid.KeyTypeError):
                await m.get(1.5)
            with pytest.raises(peergrid.SerializationError):
                await m.put("k", complex(1, 2))
            with pytest.raises(peergrid.ArgumentError):
                await m.put("k", 1, tll=2)

    run(main())


def test_an_unstarted_async_grid_says_how_to_start_it() -> None:
    grid = peergrid.AsyncGrid(cluster="x")
    with pytest.raises(peergrid.ConfigError, match="async with"):
        grid.get_map("m")


def test_tasks_started_in_one_pass_send_their_calls_in_one_frame() -> None:
    # Sixty-four tasks that each await a remote get, started together, hand their calls to the
    # member's loop together at the end of the application loop's pass: one frame to the owner
    # (before, each call woke the member's thread on its own, and while that thread was busy
    # with the previous frame most of them went out in small frames).
    async def main() -> None:
        async with (
            peergrid.AsyncGrid(cluster="aio-pass", timing=Timing.fast()) as a,
            peergrid.AsyncGrid(cluster="aio-pass", members=[a.address], timing=Timing.fast()) as b,
        ):
            assert await a.wait_until_safe(10)
            remote = [k for k in (f"k{i}" for i in range(2000)) if a.owner_of(k).uuid == b.uuid][:64]
            await b.get_map("m").put_all({k: k for k in remote})
            m = a.get_map("m")
            assert await m.get(remote[0]) == remote[0]  # the pipe to b is open
            pipe = a.node.pipes.calls(b.uuid)
            before = pipe.frames_sent
            assert await asyncio.gather(*(m.get(k) for k in remote)) == remote
            assert pipe.frames_sent - before == 1

            async def task(i: int) -> None:
                for n in range(20):
                    assert await m.get(remote[(i + n) % 64]) == remote[(i + n) % 64]

            # And in steady state: the tasks a frame's results wake send their next gets together
            # (one frame a round; each call on its own made 84-94 frames for these 20 rounds).
            before = pipe.frames_sent
            await asyncio.gather(*(task(i) for i in range(64)))
            assert pipe.frames_sent - before <= 30

    # On one CPU, as in the benchmarks (and on a busy host), where the member's thread contends
    # for the GIL with the application's: the threads made in main() inherit the main thread's
    # CPUs. Every thread gets all of them back after (grpc's own may have started meanwhile).
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        run(main())
    finally:
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(tid), cpus)
