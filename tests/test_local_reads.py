"""An owner-local read is checked after it is made.

Owner-local reads run on the application's threads, without a lock, and such a thread may
stop anywhere in its read (a switch of the GIL; the whole process paused by SIGSTOP, after
which its loop may run first) while the member's loop goes on: it may stop serving the
partition (a take-over found on resume, a migration), then clear it or install another copy
in its place. A read checked only before the lookup could answer from such a partition. So a
read stands only if, after it, the member still holds its owner lease, still serves the
partition, and no write of the key waits for its backups (``MapCore._stands``; the fence:
tests/test_dirty_reads.py): its answer is then a value the member served, under its lease,
when it was read.
Each test stops the reading thread at the read itself, in the one place that read can be hooked:
the partition's dict of maps.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import peergrid.maps.core
from peergrid import Timing
from peergrid.maps.flows import Remote
from peergrid.partition.hashing import partition_of
from peergrid.serialization.keys import encode_key
from peergrid.testing import cluster


class _Stops(dict[str, Any]):
    """A partition's maps, which run ``meanwhile`` when the reading thread reads them (once)."""

    def __init__(self, maps: dict[str, Any], meanwhile: Callable[[], None]) -> None:
        super().__init__(maps)
        self.reader = threading.get_ident()
        self.meanwhile: Callable[[], None] | None = meanwhile

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        if self.meanwhile is not None and threading.get_ident() == self.reader:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return super().get(name, default)


@contextlib.contextmanager
def _stopped_at_the_read(part: Any, meanwhile: Callable[[], None]) -> Iterator[None]:
    maps = part.maps
    part.maps = _Stops(maps, meanwhile)
    try:
        yield
    finally:
        part.maps = maps


def _lease_ran_out() -> Callable[[], None]:
    """The thread was paused past any lease: the clock the read's checks use jumps ahead."""

    def meanwhile() -> None:
        peergrid.maps.core._monotonic = lambda: float("inf")  # type: ignore[attr-defined]

    return meanwhile


@pytest.mark.parametrize("paused_for", ["the lease", "a migration"])
def test_an_owner_local_read_does_not_stand_when_the_member_lost_the_key_meanwhile(paused_for: str) -> None:
    with cluster(2, backup_count=1, timing=Timing.fast()) as (a, _):
        m = a.get_map("reads")
        node = a._node
        key = next(f"k{i}" for i in range(1000) if a.owner_of(f"k{i}").uuid == a.uuid)
        m.put(key, "v1")
        core = m._core
        p = partition_of(encode_key(key), node.config.partition_count)
        readable = node.manager.readable
        part = readable[p]
        assert core.get(key) == "v1"  # owner-local: answered on this thread
        assert core.get_all([key]) == {key: "v1"}
        clock = peergrid.maps.core._monotonic  # type: ignore[attr-defined]
        if paused_for == "the lease":
            meanwhile = _lease_ran_out()
        else:

            def meanwhile() -> None:  # the loop stopped serving it: a new owner may write it
                readable[p] = None

        reads: list[Any] = []
        try:
            for read in (core.get, core.get_all, core.contains_key, core.ttl_of, core.entry_view):
                arg = [key] if read == core.get_all else key
                with _stopped_at_the_read(part, meanwhile):
                    reads.append(read(arg))
                readable[p] = part
                peergrid.maps.core._monotonic = clock  # type: ignore[attr-defined]
        finally:
            readable[p] = part
            peergrid.maps.core._monotonic = clock  # type: ignore[attr-defined]
        assert all(isinstance(r, Remote) for r in reads), reads  # each asks the loop
        assert m.get(key) == "v1"
