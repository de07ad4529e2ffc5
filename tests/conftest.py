"""Shared fixtures: in-process clusters, unique names, hypothesis profiles, leak checks."""

from __future__ import annotations

import asyncio
import concurrent.futures
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
from peergrid.maps.aio import AsyncView
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
    """An ``AsyncMap`` used from sync test code. Each calling thread gets one task on the test
    loop that awaits its calls in turn: a thread is one lock holder in the sync API, and its
    task is one in the async API (so ``lock`` then ``unlock`` from one thread work, and other
    threads are other holders). ``lock`` gives a handle usable in a ``with`` block."""

    _threads = threading.local()  # each thread's inbox (its task's queue), by loop

    def __init__(self, amap: AsyncMap, loop: asyncio.AbstractEventLoop) -> None:
        self._map = amap
        self._loop = loop

    def _run(self, make: Any) -> Any:
        """Await ``make()`` in this thread's task on the test loop; its result."""
        inboxes = AsyncDriven._threads.__dict__.setdefault("inboxes", {})
        inbox = inboxes.get(id(self._loop))
        if inbox is None:
            inbox = asyncio.run_coroutine_threadsafe(_inbox(), self._loop).result(10)
            inboxes[id(self._loop)] = inbox
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(inbox.put_nowait, (make, done))
        return done.result(timeout=120)

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._map, attr)
        if not callable(value):
            return value
        if not inspect.iscoroutinefunction(value):
            # keys(), values(), items(): an awaitable view, awaited (a list) as a sync caller
            # would read it; anything else as it is.
            def plain(*args: Any, **kwargs: Any) -> Any:
                result = value(*args, **kwargs)
                if isinstance(result, AsyncView):
                    return self._run(lambda: _awaited(result))
                return result

            return plain

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._run(lambda: value(*args, **kwargs))

        return call

    def lock(self, key: Any, lease: float | None = None, timeout: float | None = None) -> Any:
        handle = self._map.lock(key, lease=lease, timeout=timeout)
        return _HeldLock(self, key, handle, self._run(handle.__aenter__))

    def __repr__(self) -> str:
        return f"AsyncDriven({self._map!r})"


class _HeldLock:
    """An async lock handle, acquired, as a sync test uses it (``with``, ``token``, ``unlock()``):
    its ``async with`` exit runs in the holder's task."""

    def __init__(self, owner: AsyncDriven, key: Any, handle: Any, token: int) -> None:
        self._owner, self._key, self._handle, self.token = owner, key, handle, token

    def unlock(self) -> None:
        self._owner.unlock(self._key)

    def __enter__(self) -> int:
        return self.token

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        self._owner._run(lambda: self._handle.__aexit__(kind, value, tb))


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


async def _inbox() -> asyncio.Queue[Any]:
    """A queue and the task that awaits what is put in it, one at a time."""
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    async def serve() -> None:
        while True:
            make, done = await inbox.get()
            try:
                result = await make()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(result)

    _SERVERS.add(asyncio.get_running_loop().create_task(serve()))
    return inbox


_SERVERS: set[Any] = set()


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
