"""A write whose caller's member is its backup is answered by its copy: one round trip.

The owner sends the copy with the write's result (``protocol.with_reply``); the caller's member
applies the copy, hands the result to the call waiting for it (``Pipe.forwarded``) and says so
in the copy's ack; the owner then sends no answer of its own (``Answered``). What must hold:
the call ends only once the copy exists, and only within the owner's lease; a read anywhere
after it returns the write; and when the copy does not answer, the owner's answer does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from peergrid import Timing
from peergrid.partition.hashing import partition_of
from peergrid.protocol import Code, Op, reply_of
from peergrid.serialization.keys import encode_key
from peergrid.testing import cluster
from peergrid.transport import server


def _remote_keys(grid: Any, backup: bool, count: int) -> list[str]:
    """Keys another member owns whose backup is (or is not) ``grid``'s member."""
    node = grid._node
    keys = []
    for i in range(10_000):
        key = f"k{i}"
        replicas = node.manager.table.replicas[partition_of(encode_key(key), grid.config.partition_count)]
        if replicas[0] != grid.uuid and (replicas[1] == grid.uuid) == backup:
            keys.append(key)
            if len(keys) == count:
                return keys
    raise AssertionError("not enough keys")


@contextmanager
def _counted(grid: Any) -> Iterator[dict[str, int]]:
    """Counts of the results ``grid``'s member took from copies, and of frames whose owners
    left their answer out (every member of the process)."""
    counts = {"offered": 0, "taken": 0, "unanswered": 0}
    executor = grid._node.executor
    take = executor.take_reply
    answer = server._Answering._answer

    def taking(sender: str, op: Any) -> bool:
        took = take(sender, op)
        counts["offered"] += 1
        counts["taken"] += took
        return took

    def answering(self: Any, frame_id: int, results: list[Any]) -> None:
        counts["unanswered"] += all(isinstance(r, server.Answered) for r in results)
        answer(self, frame_id, results)

    executor.take_reply = taking
    server._Answering._answer = answering  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        executor.take_reply = take
        server._Answering._answer = answer  # type: ignore[method-assign]


def test_a_write_whose_caller_is_its_backup_is_answered_by_the_copy() -> None:
    with cluster(3, backup_count=1, timing=Timing.fast()) as grids:
        a = grids[0]
        a.wait_until_safe(30)
        m = a.get_map("answers")
        others = [g.get_map("answers") for g in grids[1:]]
        mine, theirs = _remote_keys(a, True, 40), _remote_keys(a, False, 20)
        with _counted(a) as counts:
            for i, key in enumerate(mine):
                m.set(key, i)
                # Right after the call: the owner may not have the copy's ack yet, so its reads
                # of the key wait for it; none returns the value before.
                assert [o.get(key) for o in others] == [i, i]
                assert m.get(key) == i
                assert m.put(key, -i) == i  # the old value travels with the copy too
                assert m.delete(key) is True
                assert [o.get(key) for o in others] == [None, None]
            assert counts["offered"] == counts["taken"] == counts["unanswered"] == 3 * len(mine)
            for key in theirs:  # another member holds the copy: the owner answers
                m.set(key, "x")
                assert [o.get(key) for o in others] == ["x", "x"]
            assert counts["taken"] == 3 * len(mine)


@pytest.mark.parametrize("lapse", ["owner", "caller"])
def test_a_copy_that_cannot_vouch_for_the_write_leaves_the_answer_to_the_owner(lapse: str) -> None:
    """The owner had almost no lease left when it sent the copy: the caller cannot be sure the
    owner still held it once the copy applied. Or the caller's member holds no lease itself (the
    master may have removed it, and its copy no longer counts). Either way the call waits for
    the owner's answer (which the owner gives only if its lease held at the ack)."""
    with cluster(3, backup_count=1, timing=Timing.fast()) as grids:
        a = grids[0]
        a.wait_until_safe(30)
        m = a.get_map("answers")
        keys = _remote_keys(a, True, 10)
        if lapse == "owner":
            for g in grids[1:]:
                g._node.lease_left = lambda: 1e-9  # type: ignore[method-assign]
        else:
            a._node.membership.holds_lease = lambda: False  # type: ignore[method-assign]
        with _counted(a) as counts:
            for i, key in enumerate(keys):
                m.set(key, i)
                assert m.get(key) == i
        assert counts == {"offered": len(keys), "taken": 0, "unanswered": 0}


@pytest.mark.parametrize("api", ["put_all", "set_many_threads"])
def test_frames_of_many_writes_mix_copies_and_answers(api: str) -> None:
    """A frame of writes, some of whose copies the caller holds: those take their results from
    the copies, the rest from the owner's answer; every write lands."""
    import concurrent.futures

    with cluster(3, backup_count=1, timing=Timing.fast()) as grids:
        a = grids[0]
        a.wait_until_safe(30)
        m = a.get_map("answers")
        keys = [f"p{i}" for i in range(300)]
        with _counted(a) as counts:
            if api == "put_all":
                m.put_all({k: i for i, k in enumerate(keys)})
            else:
                with concurrent.futures.ThreadPoolExecutor(16) as pool:
                    list(pool.map(lambda ik: m.set(ik[1], ik[0]), enumerate(keys)))
        assert counts["taken"] > 0
        for g in grids:
            assert g.get_map("answers").get_all(keys) == {k: i for i, k in enumerate(keys)}


@pytest.mark.parametrize(
    ("key", "lease"),
    [(b"short", 1.0), (b"x" * 30, float("nan")), (b"x" * 30, float("inf")), (b"x" * 30, 0.0)],
    ids=["packing", "nan-lease", "infinite-lease", "no-lease"],
)
def test_a_malformed_reply_with_a_copy_is_refused_not_taken(key: bytes, lease: float) -> None:
    """What a BACKUP op carries as a reply is checked before a call takes it: a packing of the
    wrong size, or a lease left that is not a positive finite number (a NaN would pass any
    comparison with the time elapsed)."""
    op = Op(Code.BACKUP, 0, "", key, b"", ttl=lease, version=1)
    with pytest.raises(ValueError, match="reply"):
        reply_of(op)
