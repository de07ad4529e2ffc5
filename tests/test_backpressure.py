"""Writes through every member at once never wait on each other in a cycle.

An owner answers a frame of writes once its backups acknowledged them. If the
backup writes travelled in the same pipes as callers' writes, two members
writing to each other's partitions could each fill the other's pipe with
frames waiting for backup acks queued behind them: a deadlock broken only by
the frame timeout. Backup traffic has pipes of its own.
"""

from __future__ import annotations

import threading

import peergrid
from peergrid import Limits, Timing
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
