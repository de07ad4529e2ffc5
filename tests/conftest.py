"""Shared fixtures: in-process clusters, unique names, hypothesis profiles, leak checks."""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import peergrid
from peergrid.aio import AsyncMap
from peergrid.maps.core import map_config
from peergrid.testing import TestCluster, cluster

settings.register_profile(
    "default", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="module")
def grids3() -> Iterator[TestCluster]:
    """Three settled members, shared by a module's tests (use a unique map name per test)."""
    with cluster(3) as grids:
        yield grids


@pytest.fixture
def name() -> str:
    """A map name no other test uses."""
    return f"m-{uuid.uuid4().hex[:8]}"


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``condition`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{message} not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture(scope="session", autouse=True)
def no_member_left_running() -> Iterator[None]:
    """Every member started by the tests is stopped by the end of the run."""
    from peergrid.member.node import Node

    yield
    running = [node.address for node in Node.instances if not node.closed]
    assert not running, f"members still running after the tests: {running}"


class AsyncDriven:
    """An ``AsyncMap`` used from sync test code: each coroutine method is awaited, as its own
    task, on the test loop's thread; everything else is the async map's own."""

    def __init__(self, amap: AsyncMap, loop: asyncio.AbstractEventLoop) -> None:
        self._map = amap
        self._loop = loop

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._map, attr)
        if not inspect.iscoroutinefunction(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(value(*args, **kwargs), self._loop).result(timeout=60)

        return call

    def __repr__(self) -> str:
        return f"AsyncDriven({self._map!r})"


class Api:
    """Which API a test drives: ``api.map(grid, name, **options)`` is the sync map, or the
    async one (driven by ``AsyncDriven``), of that member."""

    def __init__(self, kind: str, loop: asyncio.AbstractEventLoop) -> None:
        self.kind = kind
        self._loop = loop

    def map(self, grid: peergrid.Grid, name: str, **options: Any) -> Any:
        if self.kind == "sync":
            return grid.get_map(name, **options)
        node = grid._node
        return AsyncDriven(AsyncMap(node, name, map_config(node, name, options)), self._loop)

    def __repr__(self) -> str:
        return self.kind


@pytest.fixture(scope="session")
def test_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An application's event loop, on a thread of its own, for the async API."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, test_loop: asyncio.AbstractEventLoop) -> Api:
    """Each test using it runs against the sync API and against the async API."""
    return Api(request.param, test_loop)
