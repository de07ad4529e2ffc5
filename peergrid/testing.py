"""In-process clusters for tests: yours and ours.

    from peergrid.testing import cluster

    def test_my_service():
        with cluster(size=3) as grids:
            a, b, c = grids
            a.get_map("m").put("k", 1)
            assert c.get_map("m").get("k") == 1

Members bind free loopback ports, use short timings (``Timing.fast()``) unless
you pass ``timing=``, and are joined, settled and safe when the block starts.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from peergrid.config import Timing
from peergrid.errors import PeerGridError
from peergrid.grid import Grid


class TestCluster(list[Grid]):
    """The members of an in-process cluster (a list of ``Grid``), with helpers."""

    __test__ = False  # not a pytest test class

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__()
        self.options = options

    def add(self, **overrides: Any) -> Grid:
        """Start one more member that joins through the live members."""
        seeds = [g.address for g in self if not g.closed]
        grid = Grid(**{**self.options, "members": seeds, **overrides})
        self.append(grid)
        return grid

    def live(self) -> list[Grid]:
        """Members not shut down or killed."""
        return [g for g in self if not g.closed]

    def kill(self, grid: Grid) -> None:
        """Stop ``grid`` at once, as if its process died (no hand-over)."""
        grid._node.kill()

    def wait_until_safe(self, timeout: float = 30.0) -> bool:
        """Wait until the live members report the cluster safe."""
        live = self.live()
        return bool(live) and live[0].wait_until_safe(timeout)

    def shutdown(self) -> None:
        """Stop every member (killing is faster than handing over at the end of a test)."""
        for grid in self:
            with contextlib.suppress(PeerGridError):
                grid._node.kill()


@contextlib.contextmanager
def cluster(size: int = 3, **grid_kwargs: Any) -> Iterator[TestCluster]:
    """Start ``size`` members on free loopback ports, joined, settled and safe; stop them after."""
    options: dict[str, Any] = {"cluster": f"test-{uuid.uuid4().hex[:8]}", "bind": "127.0.0.1:0"}
    options.setdefault("timing", Timing.fast())
    options.update(grid_kwargs)
    grids = TestCluster(options)
    try:
        for _ in range(size):
            grids.add()
        if not grids.wait_until_safe(timeout=30):
            raise PeerGridError(f"the test cluster of {size} members did not settle within 30s")
        yield grids
    finally:
        grids.shutdown()
