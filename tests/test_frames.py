"""Frames on the wire: a frame of one op (encoded and decoded by a shorter path) and a frame of
many carry the same fields, and a malformed one-op frame is refused as a many-op one is."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peergrid.protocol import Op, Result
from peergrid.transport import frames
from peergrid.transport._pb import map_pb2
from tests.strategies import wire_ops, wire_results

OP_FIELDS = ("code", "partition", "map", "key", "value", "expect", "ttl", "version", "effects")
RESULT_FIELDS = ("status", "value", "found", "count", "message", "version", "ttl", "keys", "values")


def _result(
    status: int, value: bytes, found: bool, count: int, message: str, version: int, ttl: float
) -> Result:
    result = Result(status, value, found, count, message=message, version=version)
    result.ttl = ttl
    return result


@given(st.lists(wire_ops, min_size=1, max_size=4))
def test_ops_survive_a_frame_of_one_or_many(fields: list[tuple]) -> None:
    ops = [Op(*f) for f in fields]
    wire = frames.ops_to_pb(7, "c", 3, "sender", ops).SerializeToString()
    back = frames.ops_from_pb(map_pb2.Frame.FromString(wire))
    assert [[getattr(o, f) for f in OP_FIELDS] for o in back] == [
        [getattr(o, f) for f in OP_FIELDS] for o in ops
    ]


@given(st.lists(wire_results, min_size=1, max_size=4))
def test_results_survive_an_answer_of_one_or_many(fields: list[tuple]) -> None:
    results = [_result(*f) for f in fields]
    [reply] = frames.replies_to_pb(7, 3, results, 1 << 20)
    frame_id, version, back = frames.results_from_pb(
        map_pb2.FrameResult.FromString(reply.SerializeToString())
    )
    assert (frame_id, version) == (7, 3)
    expected = [[getattr(r, f) for f in RESULT_FIELDS] for r in results]
    assert [[getattr(r, f) for f in RESULT_FIELDS] for r in back] == expected


@pytest.mark.parametrize("column", ["partitions", "keys", "values", "expects", "versions"])
def test_a_one_op_frame_with_a_longer_column_is_refused(column: str) -> None:
    msg = frames.ops_to_pb(1, "c", 3, "sender", [Op(1, 2, "m", b"k", b"v", b"e", version=4)])
    getattr(msg, column).append(getattr(msg, column)[0])
    with pytest.raises(ValueError, match=column):
        frames.ops_from_pb(msg)


def test_a_one_op_frame_naming_a_missing_map_is_refused() -> None:
    msg = frames.ops_to_pb(1, "c", 3, "sender", [Op(1, 2, "m", b"k")])
    msg.map_index[0] = 5
    with pytest.raises(ValueError, match="map index"):
        frames.ops_from_pb(msg)


def test_a_one_result_answer_with_a_longer_column_is_refused() -> None:
    msg = frames.results_to_pb(1, 3, [Result(found=True, value=b"v", version=2)])
    msg.versions.append(9)
    with pytest.raises(ValueError, match="versions"):
        frames.results_from_pb(msg)
