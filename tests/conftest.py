"""Shared fixtures: in-process clusters, unique names, hypothesis profiles, leak checks."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

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
    from peergrid.node import Node

    yield
    running = [node.address for node in Node.instances if not node.closed]
    assert not running, f"members still running after the tests: {running}"
