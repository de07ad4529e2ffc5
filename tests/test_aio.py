"""AsyncGrid: the same API for asyncio code, over the same members."""

from __future__ import annotations

import asyncio

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
