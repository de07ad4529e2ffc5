"""@grid.cached: shared results, keys, single flight across members, exceptions, bypasses, async."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import peergrid
from peergrid import Timing
from peergrid.partition import partition_of
from peergrid.serialization import encode_key
from peergrid.testing import TestCluster, cluster
from tests.conftest import wait_for


class Calls:
    """Counts calls of a function, from any thread."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self.count += 1
            return self.count


def cached_everywhere(
    grids: TestCluster, map_name: str, body: Callable[..., Any], **options: Any
) -> list[Callable[..., Any]]:
    """The same function decorated on every member (as every process would)."""
    return [grid.cached(map_name, **options)(body) for grid in grids]


def test_results_are_cached_and_shared_across_members(grids3: TestCluster, name: str) -> None:
    calls = Calls()

    def load(user_id: int, detail: str = "short") -> dict[str, Any]:
        calls()
        return {"id": user_id, "detail": detail}

    a, b, c = cached_everywhere(grids3, name, load, ttl=60)
    assert a(1) == {"id": 1, "detail": "short"}
    assert b(1) == c(user_id=1) == b(1, "short") == {"id": 1, "detail": "short"}
    assert calls.count == 1
    assert c(1, detail="long") == {"id": 1, "detail": "long"}
    assert calls.count == 2
    assert a.cache_info() == peergrid.CacheInfo(hits=0, misses=1, bypasses=0, uncacheable=0)
    assert b.cache_info().hits == 2
    assert a.cache_key(1) == b.cache_key(user_id=1) != a.cache_key(2)
    assert a.cache_key(1).startswith("tests.test_cached.test_results_are_cached_and_shared_across_members")
    assert a.__name__ == "load"
    grids3[0].get_map(name).delete(a.cache_key(1))  # invalidation by hand
    assert b(1) == {"id": 1, "detail": "short"}
    assert calls.count == 3


def test_kwargs_order_and_dict_order_give_the_same_key(grids3: TestCluster, name: str) -> None:
    @grids3[0].cached(name)
    def f(*args: Any, **kwargs: Any) -> int:
        return 1

    assert f.cache_key(x=1, y=2) == f.cache_key(y=2, x=1)
    assert f.cache_key({"a": 1, "b": 2}) == f.cache_key({"b": 2, "a": 1})
    assert f.cache_key((1, 2)) == f.cache_key([1, 2])
    assert f.cache_key(1) != f.cache_key("1") != f.cache_key(True)


def test_results_expire_after_the_ttl(grids3: TestCluster, name: str) -> None:
    calls = Calls()
    f = grids3[1].cached(name, ttl=0.3)(lambda x: calls())
    assert f(1) == 1
    assert f(1) == 1
    wait_for(lambda: f(1) == 2, 5, message="recomputed after the ttl")


def test_one_call_for_a_hundred_concurrent_callers_on_three_members(grids3: TestCluster, name: str) -> None:
    calls = Calls()

    def slow(x: int) -> int:
        calls()
        time.sleep(0.3)
        return x * 10

    wrappers = cached_everywhere(grids3, name, slow)
    results: list[int] = []
    start = threading.Barrier(100)

    def caller(i: int) -> None:
        start.wait()
        results.append(wrappers[i % 3](7))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [70] * 100
    assert calls.count == 1
    infos = [w.cache_info() for w in wrappers]
    assert sum(i.misses for i in infos) == 1
    assert sum(i.hits for i in infos) == 99
    assert sum(i.bypasses for i in infos) == 0


def test_exceptions_are_not_cached_and_a_waiter_takes_over(grids3: TestCluster, name: str) -> None:
    calls = Calls()

    def flaky(x: int) -> int:
        number = calls()
        time.sleep(0.2)
        if number == 1:
            raise RuntimeError("first call fails")
        return x

    wrappers = cached_everywhere(grids3, name, flaky)
    outcomes: list[object] = []
    start = threading.Barrier(10)

    def caller(i: int) -> None:
        start.wait()
        try:
            outcomes.append(wrappers[i % 3](5))
        except RuntimeError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(o, RuntimeError) for o in outcomes) == 1
    assert outcomes.count(5) == 9
    assert calls.count == 2
    assert wrappers[0](5) == 5
    assert calls.count == 2


def test_a_claim_of_a_member_that_left_or_a_stray_value_is_taken_over(grids3: TestCluster, name: str) -> None:
    calls = Calls()
    f = grids3[2].cached(name, claim_ttl=60)(lambda x: calls())
    m = grids3[0].get_map(name)
    m.put(f.cache_key(1), [1, "a-member-that-left", 42], ttl=60)
    m.put(f.cache_key(2), "written by someone else")
    started = time.monotonic()
    assert f(1) == 1
    assert f(2) == 2
    assert time.monotonic() - started < 1
    assert f(1) == 1


def test_calls_the_serializer_cannot_carry_run_uncached_with_one_warning(
    grids3: TestCluster, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls()

    class Thing:
        pass

    f = grids3[0].cached(name)(lambda x: calls())
    caplog.set_level(logging.WARNING, "peergrid.maps.cached")
    assert f(Thing()) == 1
    assert f(Thing()) == 2
    assert f.cache_key(Thing()) is None
    assert caplog.text.count("run uncached") == 1
    g = grids3[0].cached(name)(lambda x: complex(x, 1))  # the serializer cannot store a complex
    assert g(1) == complex(1, 1)
    assert g(1) == complex(1, 1)
    assert f.cache_info().uncacheable == 2
    assert g.cache_info().uncacheable == 2
    assert grids3[1].get_map(name).get(g.cache_key(1)) is None  # no claim left behind
    with pytest.raises(TypeError):
        f()  # arguments that do not bind: the function's own error


def test_the_function_runs_directly_when_the_owner_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    slow_detection = dataclasses.replace(Timing.fast(), failure_timeout=30.0)
    with cluster(3, timing=slow_detection) as grids:
        caller, _, doomed = grids
        calls = Calls()
        f = caller.cached("cache", timeout=0.5)(lambda x: calls())
        arg = next(i for i in range(1000) if caller.owner_of(f.cache_key(i)).uuid == doomed.uuid)
        grids.kill(doomed)  # still in the member list: calls go to it and fail
        caplog.set_level(logging.WARNING, "peergrid.maps.cached")
        started = time.monotonic()
        assert f(arg) == 1
        assert f(arg) == 2
        elapsed = time.monotonic() - started
        assert elapsed < 2 * 0.5 + 0.5, elapsed
        assert f.cache_info() == peergrid.CacheInfo(hits=0, misses=0, bypasses=2, uncacheable=0)
        assert caplog.text.count("did not answer within 0.5s") == 1
        table = caller._node.manager.table
        other = next(
            i
            for i in range(1000)
            if doomed.uuid not in table.replicas[partition_of(encode_key(f.cache_key(i)), 271)]
        )
        assert f(other) == f(other) == 3  # keys whose replicas are all alive are still cached


def test_a_shut_down_grid_bypasses(name: str) -> None:
    with cluster(1) as grids:
        calls = Calls()
        f = grids[0].cached(name)(calls)
        assert f() == f() == 1
        grids[0].shutdown()
        assert f() == 2
        assert f.cache_info().bypasses == 1


def test_options_and_kinds_of_functions_are_checked(grids3: TestCluster) -> None:
    grid = grids3[0]
    with pytest.raises(peergrid.ArgumentError, match="ttl"):
        grid.cached("m", ttl=0)
    with pytest.raises(peergrid.ArgumentError, match="timeout"):
        grid.cached("m", timeout=-1)
    with pytest.raises(peergrid.ArgumentError, match="peergrid's own"):
        grid.cached("__peergrid.x")

    async def coroutine() -> None:
        pass

    with pytest.raises(peergrid.ArgumentError, match=r"AsyncGrid\.cached"):
        grid.cached("m")(coroutine)


def test_async_form() -> None:
    async def main() -> None:
        options = {"cluster": f"cached-{time.time_ns()}", "timing": Timing.fast()}
        async with (
            peergrid.AsyncGrid(**options) as a,
            peergrid.AsyncGrid(members=[a.address], **options) as b,
        ):
            assert await b.wait_until_safe(10)
            calls = Calls()
            wrappers = []
            for grid in (a, b):

                async def load(x: int) -> int:
                    number = calls()
                    await asyncio.sleep(0.2)
                    if number == 1 and x == 0:
                        raise ValueError("not cached")
                    return x + 100

                wrappers.append(grid.cached("cache", ttl=60)(load))
            results = await asyncio.gather(*(wrappers[i % 2](1) for i in range(40)))
            assert results == [101] * 40
            assert calls.count == 1
            calls.count = 0
            with pytest.raises(ValueError, match="not cached"):
                await wrappers[0](0)
            assert await wrappers[1](0) == 100
            assert calls.count == 2
            assert sum(w.cache_info().hits for w in wrappers) == 39
            with pytest.raises(peergrid.ArgumentError, match=r"Grid\.cached"):
                a.cached("cache")(lambda: 1)

    asyncio.run(main())


def test_cache_clear_deletes_this_functions_results_only(grids3: TestCluster, name: str) -> None:
    calls = Calls()

    def same(x: int) -> int:
        calls()
        return x

    def negated(x: int) -> int:  # another function: a key of another name, in the same map
        return -x

    a, b = cached_everywhere(grids3, name, same)[:2]
    other = grids3[2].cached(name)(negated)
    assert [a(i) for i in range(5)] == list(range(5))
    assert other(1) == -1
    assert calls.count == 5
    assert b.cache_clear() == 5  # on every member: a's results, cleared through b
    assert grids3[0].get_map(name).size() == 1  # other's result stays
    assert a(1) == 1
    assert calls.count == 6
    assert grids3[0].get_map(name).get(other.cache_key(1)) is not None
    # A map holding nothing else is cleared in one go.
    only = grids3[1].cached(f"{name}-only")(lambda x: x)
    assert [only(i) for i in range(3)] == [0, 1, 2]
    assert only.cache_clear() == 3
    assert grids3[1].get_map(f"{name}-only").size() == 0
    assert only.cache_clear() == 0


def test_key_function_makes_the_key(grids3: TestCluster, name: str) -> None:
    calls = Calls()

    @grids3[0].cached(name, key=lambda user_id, verbose=False: user_id)
    def load(user_id: int, verbose: bool = False) -> str:
        calls()
        return f"user {user_id}"

    assert load(1) == load(1, verbose=True) == "user 1"  # verbose is not part of the key
    assert calls.count == 1
    assert load.cache_key(1) == load.cache_key(1, True) != load.cache_key(2)


def test_methods_are_cached_per_instance_through_a_key_function(grids3: TestCluster, name: str) -> None:
    calls = Calls()
    grid = grids3[1]

    class Users:
        def __init__(self, tenant: str) -> None:
            self.tenant = tenant

        @grid.cached(name, key=lambda self, user_id: [self.tenant, user_id])
        def load(self, user_id: int) -> str:
            calls()
            return f"{self.tenant}/{user_id}"

    acme, other_acme, globex = Users("acme"), Users("acme"), Users("globex")
    assert acme.load(1) == other_acme.load(1) == "acme/1"  # same tenant, same key
    assert globex.load(1) == "globex/1"
    assert calls.count == 2
    assert acme.load.cache_info().hits == 1  # bound methods share the wrapper's counts


def test_methods_without_a_key_function_warn_naming_key(
    grids3: TestCluster, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    grid = grids3[0]

    class Users:
        @grid.cached(name)
        def load(self, user_id: int) -> int:
            return user_id

    with caplog.at_level(logging.WARNING, logger="peergrid.maps.cached"):
        assert Users().load(1) == 1
    assert any("key=lambda self" in r.getMessage() for r in caplog.records)


def test_typed_keeps_equal_arguments_of_other_types_apart(grids3: TestCluster, name: str) -> None:
    def show(x: Any) -> str:
        return repr(x)

    untyped = grids3[0].cached(name)(show)
    typed = grids3[0].cached(f"{name}-typed", typed=True)(show)
    # As functools.lru_cache: arguments that compare equal share an entry unless typed=True.
    assert untyped.cache_key(1) == untyped.cache_key(1.0) == untyped.cache_key(True)
    assert untyped.cache_key([1]) == untyped.cache_key((1.0,))
    assert untyped.cache_key(1) != untyped.cache_key(1.5) != untyped.cache_key("1")
    assert typed.cache_key(1) != typed.cache_key(1.0) != typed.cache_key(True)
    assert typed(1) == "1"
    assert typed(1.0) == "1.0"
    with pytest.raises(peergrid.ArgumentError, match="typed"):
        grids3[0].cached(name, typed="yes")
    with pytest.raises(peergrid.ArgumentError, match="key"):
        grids3[0].cached(name, key="user_id")


def test_async_cache_clear_key_and_typed() -> None:
    async def main() -> None:
        options = {"cluster": f"cached-{time.time_ns()}", "timing": Timing.fast()}
        async with peergrid.AsyncGrid(**options) as grid:
            calls = Calls()

            @grid.cached("cache", key=lambda x, *, note="": x, typed=True)
            async def load(x: Any, *, note: str = "") -> str:
                calls()
                return repr(x)

            assert await load(1) == await load(1, note="n") == "1"
            assert await load(1.0) == "1.0"
            assert calls.count == 2
            assert await load.cache_clear() == 2
            assert await load(1) == "1"
            assert calls.count == 3

    asyncio.run(main())
