"""Writes through every member at once never wait on each other in a cycle.

An owner answers a frame of writes once its backups acknowledged them. If the
backup writes travelled in the same pipes as callers' writes, two members
writing to each other's partitions could each fill the other's pipe with
frames waiting for backup acks queued behind them: a deadlock broken only by
the frame timeout. Backup traffic has pipes of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import peergrid
from peergrid import Limits, Timing
from peergrid.invocation.pipe import Pipe
from peergrid.maps.core import BULK_FRAMES
from peergrid.maps.sync import SyncDriver
from peergrid.protocol import Code, Op, Result
from peergrid.testing import cluster


def test_cross_member_writes_with_one_frame_in_flight_do_not_deadlock() -> None:
    timing = Timing(**{**Timing.fast().__dict__, "operation_timeout": 4.0})
    with cluster(3, limits=Limits(max_inflight_frames=1), timing=timing) as grids:
        keys = [f"k{i}" for i in range(12)]  # owned by every member
        errors: list[BaseException] = []

        def work(grid: peergrid.Grid) -> None:
            m = grid.get_map("m")
            try:
                for i in range(25):
                    for key in keys:
                        m.set(key, i)
            except peergrid.PeerGridError as exc:
                errors.append(exc)

        for _ in range(2):
            threads = [threading.Thread(target=work, args=(g,)) for g in grids for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors[0]


# -- bulk calls in frames of max_frame_ops, and in parts


def test_a_member_sends_frames_of_at_most_max_frame_ops() -> None:
    # The owner runs a frame in one step of its loop: a put_all of 30,000 entries in frames of
    # 10,000 held each owner's loop for seconds, long enough for its owner lease to run out.
    sizes: list[int] = []
    take = Pipe._take

    def recorded(pipe: Pipe) -> list:
        items = take(pipe)
        sizes.append(len(items))
        return items

    with cluster(2, limits=Limits(max_frame_ops=8), timing=Timing.fast()) as (a, b):
        remote = [k for k in (f"k{i}" for i in range(400)) if a.owner_of(k).uuid == b.uuid]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Pipe, "_take", recorded)
            a.get_map("m").put_all({k: k for k in remote})
        assert max(sizes, default=0) == 8  # the owner's backups to a go in frames of 8 too
        assert sum(sizes) >= 2 * len(remote)  # each write, and its backup
        assert b.get_map("m").get_all(remote) == {k: k for k in remote}


def test_a_lower_max_batch_ops_lowers_the_frames_too() -> None:
    assert Limits().frame_ops == 256
    assert Limits(max_batch_ops=10).frame_ops == 10
    assert Limits(max_frame_ops=1).frame_ops == 1
    with pytest.raises(peergrid.ConfigError, match="max_frame_ops"):
        Limits(max_frame_ops=0).validate()


@peergrid.entry_processor("tests.backpressure.add")
def _add(entry: peergrid.Entry, amount: int) -> int:
    entry.value += amount
    return int(entry.value)


def _parts(recorded: list[int]) -> Callable[[SyncDriver, list[Op]], list[Result]]:
    many = SyncDriver._many

    def counted(driver: SyncDriver, ops: list[Op]) -> list[Result]:
        recorded.append(len(ops))
        return many(driver, ops)

    return counted


@pytest.mark.parametrize("call", ["put_all", "execute_on_keys"])
def test_a_bulk_call_sends_its_ops_in_parts_one_after_another(call: str) -> None:
    # Other callers' ops to the same owners queue behind one part, not the whole call (a
    # put_all of 30,000 entries held every other get to its owners for ~2 s).
    parts: list[int] = []
    with cluster(2, limits=Limits(max_frame_ops=8), timing=Timing.fast()) as (a, _):
        m = a.get_map("m")
        keys = [f"k{i}" for i in range(100)]
        m.put_all(dict.fromkeys(keys, 1))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SyncDriver, "_many", _parts(parts))
            if call == "put_all":
                m.put_all(dict.fromkeys(keys, 2))
            else:
                assert m.execute_on_keys(keys, "tests.backpressure.add", 1) == dict.fromkeys(keys, 2)
        assert parts == [BULK_FRAMES * 8] * 3 + [100 - 3 * BULK_FRAMES * 8]
        assert m.get_all(keys) == dict.fromkeys(keys, 2)


def test_a_bulk_call_stops_at_the_first_part_that_fails() -> None:
    parts: list[int] = []
    counted = _parts(parts)

    def failing(driver: SyncDriver, ops: list[Op]) -> list[Result]:
        if parts:
            parts.append(len(ops))
            raise peergrid.QuorumError("refused: this member sees fewer than min_cluster_size members")
        return counted(driver, ops)

    with cluster(1, limits=Limits(max_frame_ops=8), timing=Timing.fast()) as (a,):
        m = a.get_map("m")
        keys = [f"k{i}" for i in range(100)]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SyncDriver, "_many", failing)
            with pytest.raises(peergrid.QuorumError):
                m.put_all(dict.fromkeys(keys, 1))
        assert parts == [BULK_FRAMES * 8] * 2  # the first stored, the second refused, no third
        assert len(m) == BULK_FRAMES * 8


def test_a_large_get_all_goes_as_get_many_ops_of_a_part_each_one_to_a_frame() -> None:
    # A GET_MANY op is one op, run by its owner in one step: a get_all of 30,000 keys as ops of
    # 10,000 keys held each owner's loop ~20 ms. Now an op carries at most a part's worth of
    # keys, and weighs its keys in the pipe's frame budget (KEYS_PER_OP to an op).
    frames: list[list[Op]] = []
    take = Pipe._take

    def recorded(pipe: Pipe) -> list:
        items = take(pipe)
        frames.append([item.op for item in items])
        return items

    with cluster(2, limits=Limits(max_frame_ops=8), timing=Timing.fast()) as (a, b):
        remote = [k for k in (f"k{i}" for i in range(600)) if a.owner_of(k).uuid == b.uuid]
        b.get_map("m").put_all({k: k for k in remote})
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Pipe, "_take", recorded)
            assert a.get_map("m").get_all(remote) == {k: k for k in remote}
    many = [frame for frame in frames if any(op.code == Code.GET_MANY for op in frame)]
    keys = [len(op.value) // 8 for frame in many for op in frame]
    assert sum(keys) == len(remote)
    assert max(keys) == BULK_FRAMES * 8  # a part's worth of keys an op
    assert all(len(frame) == 1 for frame in many)  # 32 keys weigh 8 ops: a frame's worth
    assert len(many) == -(-len(remote) // (BULK_FRAMES * 8))
