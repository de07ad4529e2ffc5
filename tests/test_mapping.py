"""The map as a Python developer expects it: a MutableMapping, typed, with views read lazily,
options checked by type checkers and named at run time, and honest statistics."""

from __future__ import annotations

import asyncio
import collections.abc
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import peergrid
from peergrid import MapConfig, NearCacheConfig
from peergrid.aio import AsyncMap
from peergrid.errors import ArgumentError
from peergrid.testing import cluster
from tests.conftest import wait_for
from tests.strategies import keys, values

ROOT = Path(__file__).resolve().parents[1]


def test_the_maps_are_generic_and_the_sync_one_a_mutable_mapping() -> None:
    assert issubclass(peergrid.DistributedMap, collections.abc.MutableMapping)
    assert peergrid.DistributedMap[str, int] is not None  # subscriptable at run time
    assert peergrid.AsyncMap[str, int] is not None


def test_mapping_methods(api, grids3, name) -> None:
    m, other = api.map(grids3[0], name), api.map(grids3[1], name)
    assert sorted(m.keys()) == []
    m.update({"a": 1, "b": 2}, c=3)
    m.update([("d", 4)])
    assert sorted(other.items()) == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
    assert sorted(other.values()) == [1, 2, 3, 4]
    assert other.pop("a") == 1
    assert other.pop("a", "gone") == "gone"
    with pytest.raises(KeyError):
        other.pop("a")
    assert m.setdefault("b", 20) == 2
    assert m.setdefault("e", 5) == 5
    assert other.get("e") == 5
    left = {"b": 2, "c": 3, "d": 4, "e": 5}
    while left:
        key, value = m.popitem()
        assert left.pop(key) == value
    with pytest.raises(KeyError):
        other.popitem()
    with pytest.raises(ArgumentError, match="iterable of keys"):
        m.get_all("abc")
    with pytest.raises(ArgumentError, match="mapping or pairs"):
        m.update(5)


def test_sync_views_equality_and_iteration(grids3, name) -> None:
    m = grids3[0].get_map(name)
    assert m == {}
    assert m != {"a": 1}
    m.update(a=1, b=[1, 2])
    assert m == {"a": 1, "b": [1, 2]}
    assert m == grids3[2].get_map(name)
    assert m != {"a": 1, "b": [1, 3]}
    keys, values, items = m.keys(), m.values(), m.items()
    assert isinstance(keys, collections.abc.KeysView)
    assert isinstance(values, collections.abc.ValuesView)
    assert isinstance(items, collections.abc.ItemsView)
    assert len(keys) == len(values) == len(items) == 2
    assert "a" in keys
    assert "z" not in keys
    assert [1, 2] in values
    assert 3 not in values
    assert ("a", 1) in items
    assert ("a", 2) not in items
    assert keys & {"a", "z"} == {"a"}
    assert sorted(iter(m)) == ["a", "b"]
    m["c"] = 3  # a view is live: each iteration reads the map again
    assert sorted(keys) == ["a", "b", "c"]


def test_views_read_a_few_partitions_at_a_time(grids3, name) -> None:
    m = grids3[0].get_map(name)
    m.put_all({f"k{i}": i for i in range(300)})
    core = m._core
    steps: list[list[int]] = []
    original = core.scan_chunk

    def recording(partitions: list[int], what: str, scan: Any) -> Any:
        steps.append(list(partitions))
        return original(partitions, what, scan)

    core.scan_chunk = recording  # type: ignore[method-assign]
    try:
        it = iter(m.items())
        next(it)
        assert len(steps) == 1
        assert len(steps[0]) < core.partition_count  # not everything in one reply
        rest = list(it)
    finally:
        del core.scan_chunk
    assert len(rest) == 299
    assert len(steps) > 1
    read = sorted(p for step in steps for p in step)
    assert read == list(range(core.partition_count))  # every partition once


def test_async_views_iterate_lazily_and_await_to_lists(grids3, name, test_loop) -> None:
    grids3[0].get_map(name).put_all({f"k{i}": i for i in range(50)})

    async def scenario() -> None:
        amap: AsyncMap[str, int] = AsyncMap(grids3[1]._node, name)
        assert sorted(await amap.keys()) == sorted(f"k{i}" for i in range(50))
        seen = [key async for key in amap]
        assert len(seen) == 50
        assert sorted([value async for value in amap.values()]) == list(range(50))
        assert dict(await amap.items()) == {f"k{i}": i for i in range(50)}

    asyncio.run_coroutine_threadsafe(scenario(), test_loop).result(60)


def test_set_if_absent_or_if_present(api, grids3, name) -> None:
    m = api.map(grids3[0], name)
    assert m.set("a", 1) is None  # DESIGN.md: set returns nothing
    assert m.set("a", 2, if_absent=True) is False
    assert m.get("a") == 1
    assert m.set("b", 2, if_absent=True) is True
    assert m.set("c", 3, if_present=True) is False
    assert m.get("c") is None
    assert m.set("a", 10, if_present=True, ttl=60) is True
    assert m.get("a") == 10
    with pytest.raises(ArgumentError, match="not both"):
        m.set("a", 1, if_absent=True, if_present=True)


@pytest.mark.parametrize(
    ("method", "option", "hint"),
    [
        ("put", "tll", "did you mean 'ttl'"),
        ("set", "ex", "unknown option 'ex'; did you mean ttl=... (seconds)?"),
        ("set", "px", "did you mean ttl="),
        ("set", "nx", "did you mean if_absent=True?"),
        ("set", "xx", "did you mean if_present=True?"),
        ("put_if_absent", "ttls", "did you mean 'ttl'"),
        ("replace", "EX", "did you mean ttl="),
    ],
)
def test_unknown_options_name_the_nearest(api, grids3, name, method, option, hint) -> None:
    m = api.map(grids3[0], name)
    with pytest.raises(ArgumentError) as error:
        getattr(m, method)("k", 1, **{option: 5})
    assert hint in str(error.value)
    assert isinstance(error.value, TypeError)  # what Python raises for a bad keyword, too
    with pytest.raises(ArgumentError, match="did you mean 'ttl'"):
        m.put_all({"k": 1}, tl=5)
    with pytest.raises(ArgumentError, match="did you mean 'ttl'"):
        m.replace_if_same("k", 1, 2, tttl=5)
    assert m.get("k") is None  # nothing was written


def test_a_type_error_inside_a_call_stays_itself(grids3, name) -> None:
    with pytest.raises(ArgumentError, match="ttl must be"):
        grids3[0].get_map(name).put("k", 1, ttl="soon")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="positional"):
        grids3[0].get_map(name).put("k", 1, 2, 3)  # type: ignore[call-arg]


def test_get_map_types(grids3, name) -> None:
    typed = grids3[0].get_map(name, key_type=str, value_type=dict)
    typed["k"] = {"a": 1}
    assert typed.get("k") == {"a": 1}
    assert grids3[0].get_map(name) is typed  # types are no options: the same handle
    with pytest.raises(ArgumentError, match="key_type"):
        grids3[0].get_map(name, key_type=float)


NEAR = {"near": MapConfig(near_cache=NearCacheConfig(max_entries=1000, max_staleness=1.0))}


def test_owner_local_gets_are_counted_apart_from_the_near_cache(api) -> None:
    with cluster(2, maps=NEAR) as grids:
        reader = grids[1]
        m = api.map(reader, "near")
        mine = [k for k in (f"k{i}" for i in range(60)) if reader.owner_of(k).uuid == reader.uuid][:5]
        theirs = [k for k in (f"k{i}" for i in range(60)) if reader.owner_of(k).uuid != reader.uuid][:5]
        api.map(grids[0], "near").put_all({k: k for k in mine + theirs})
        wait_for(
            lambda: len(reader._node.maps.near_caches["near"].leases) == 1, 5, message="lease from the owner"
        )
        # The writer holds the copies and took its answers from them: the owner's fence on each
        # write lifts when the copy's ack arrives, which may be just after put_all returned (a
        # read meanwhile waits for it on the loop, and is no owner-local get).
        parts = reader._node.manager.parts
        wait_for(lambda: not any(part is not None and part.unacked for part in parts), 5, message="acks")
        for k in mine:
            assert m.get(k) == k
        assert m.get_all(mine) == {k: k for k in mine}
        stats = m.local_stats()
        assert (stats.owner_local_gets, stats.near_cache_hits, stats.near_cache_misses) == (10, 0, 0)
        for k in theirs:
            assert m.get(k) == k  # fetched, then cached
        for k in theirs:
            assert m.get(k) == k  # hits
        stats = m.local_stats()
        assert stats.owner_local_gets == 10
        assert stats.near_cache_hits == 5
        assert stats.near_cache_misses == 5
        assert stats.gets == 20


def _mypy(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--no-color-output",
            *map(str, files),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.timeout(300)
def test_the_typed_example_passes_mypy_strict_and_misuse_does_not(tmp_path: Path) -> None:
    misuse = tmp_path / "misuse.py"
    misuse.write_text(
        textwrap.dedent(
            """
            import peergrid

            def use(grid: peergrid.Grid) -> None:
                scores = grid.get_map("scores", key_type=str, value_type=int)
                scores.put("a", 1, tll=5)
                scores.set("a", "one")
                name: str | None = scores.get("a")
                scores.set("a", 1, ex=5)
                untyped = grid.get_map("anything")
                reveal_type(untyped)
            """
        )
    )
    done = _mypy(ROOT / "examples" / "typed_map.py", misuse)
    out = done.stdout
    assert "typed_map.py" not in out, out  # the example is clean
    lines = {int(n) for n in re.findall(r"misuse\.py:(\d+): error", out)}
    assert 'Unexpected keyword argument "tll"' in out, out
    assert 'Unexpected keyword argument "ex"' in out, out
    assert {6, 7, 8, 9} <= lines, out  # each misuse is an error
    assert "DistributedMap[Any, Any]" in out, out


mapping_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), keys, values),
        st.tuples(st.just("pop"), keys, values),
        st.tuples(st.just("setdefault"), keys, values),
        st.tuples(st.just("if_absent"), keys, values),
        st.tuples(st.just("if_present"), keys, values),
        st.tuples(st.just("delete"), keys, st.none()),
        st.tuples(st.just("update"), st.dictionaries(keys, values, max_size=4), st.none()),
    ),
    max_size=12,
)


@settings(max_examples=25, deadline=None)
@given(ops=mapping_ops)
def test_the_map_behaves_as_a_dict(grids3, ops) -> None:
    """Every mapping method answers as a dict would, and leaves the same entries."""
    m = grids3[1].get_map(f"prop-{uuid.uuid4().hex[:8]}")
    model: dict[Any, Any] = {}
    for op, key, value in ops:
        if op == "set":
            m[key] = value
            model[key] = value
        elif op == "pop":
            assert m.pop(key, "absent") == model.pop(key, "absent")
        elif op == "setdefault":
            assert m.setdefault(key, value) == model.setdefault(key, value)
        elif op == "if_absent":
            assert m.set(key, value, if_absent=True) is (key not in model)
            model.setdefault(key, value)
        elif op == "if_present":
            assert m.set(key, value, if_present=True) is (key in model)
            if key in model:
                model[key] = value
        elif op == "delete":
            assert m.delete(key) is (model.pop(key, _GONE) is not _GONE)
        else:
            m.update(key)
            model.update(key)
    assert m == model
    assert len(m.keys()) == len(model)
    while model:
        key, value = m.popitem()
        assert model.pop(key) == value
    assert m == {}


_GONE = object()
