"""Members in separate OS processes: the CLI member, a hard kill, nothing acknowledged lost."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

import peergrid
from peergrid import Timing
from tests.processes import MemberProcess


@pytest.fixture
def cluster_name() -> str:
    return f"proc-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def local(cluster_name: str) -> Iterator[peergrid.Grid]:
    with peergrid.Grid(cluster=cluster_name, timing=Timing.fast()) as grid:
        yield grid


@pytest.mark.timeout(120)
def test_writes_through_each_process_are_read_through_the_others(cluster_name, local) -> None:
    procs = [MemberProcess(cluster_name, [local.address]) for _ in range(2)]
    try:
        assert local.wait_until_safe(30)
        assert len(local.members()) == 3
        m = local.get_map("shared")
        m.put_all({f"local:{i}": i for i in range(100)})
        for n, proc in enumerate(procs):
            for i in range(30):
                proc.command(op="set", map="shared", key=f"p{n}:{i}", value=[n, i])
        for n in range(2):
            assert m.get_all([f"p{n}:{i}" for i in range(30)]) == {f"p{n}:{i}": [n, i] for i in range(30)}
        for n, proc in enumerate(procs):
            other = 1 - n
            seen = proc.command(op="get_all", map="shared", keys=[f"p{other}:{i}" for i in range(30)])
            assert seen == {f"p{other}:{i}": [other, i] for i in range(30)}
            assert proc.command(op="get", map="shared", key="local:7") == 7
            assert proc.command(op="size", map="shared") == 160
    finally:
        for proc in procs:
            proc.stop()


class Writer(threading.Thread):
    """Writes new keys as fast as it can, recording every outcome."""

    def __init__(self, grid: peergrid.Grid) -> None:
        super().__init__(daemon=True)
        self.map = grid.get_map("load")
        self.acked: dict[str, int] = {}
        self.indeterminate: list[str] = []
        self.failed: list[str] = []
        self.stop_flag = threading.Event()
        self.progress = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop_flag.is_set():
            key = f"w{i}"
            try:
                self.map.set(key, i)
                self.acked[key] = i
                if len(self.acked) % 50 == 0:
                    self.progress.set()
            except peergrid.IndeterminateWriteError:
                self.indeterminate.append(key)
            except peergrid.PeerGridError:
                self.failed.append(key)
            i += 1

    def wait_for_more(self, count: int = 200, timeout: float = 30) -> None:
        target = len(self.acked) + count
        while len(self.acked) < target:
            self.progress.clear()
            assert self.progress.wait(timeout), "the writer made no progress"


def assert_all_acked_readable(grid: peergrid.Grid, writer: Writer) -> None:
    acked = dict(writer.acked)  # one snapshot: the writer keeps adding while we read
    found = grid.get_map("load").get_all(list(acked))
    missing = [k for k, v in acked.items() if found.get(k) != v]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


@pytest.mark.timeout(180)
def test_sigkill_mid_load_loses_no_acknowledged_write(cluster_name, local) -> None:
    procs = [MemberProcess(cluster_name, [local.address]) for _ in range(3)]
    writer = Writer(local)
    try:
        assert local.wait_until_safe(30)
        writer.start()
        writer.wait_for_more()
        procs[0].kill()
        writer.wait_for_more()
        assert local.wait_until_safe(60)
        assert_all_acked_readable(local, writer)
        # A second kill, after the cluster is safe again: still nothing lost.
        procs[1].kill()
        writer.wait_for_more()
        assert local.wait_until_safe(60)
        writer.stop_flag.set()
        writer.join(30)
        assert_all_acked_readable(local, writer)
        assert procs[2].command(op="size", map="load") >= len(writer.acked)
        assert len(writer.acked) > 600
    finally:
        writer.stop_flag.set()
        for proc in procs:
            proc.stop()
