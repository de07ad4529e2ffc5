"""Frames on the wire: a frame of one op (encoded and decoded by a shorter path) and a frame of
many carry the same fields, and a malformed one-op frame is refused as a many-op one is."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peergrid import multiget
from peergrid.protocol import Code, Effect, EffectKind, Op, Result
from peergrid.transport import frames
from peergrid.transport._pb import map_pb2
from tests.strategies import get_many_answers, get_many_keys, wire_ops, wire_results

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


EFFECT_COLUMNS = ("kinds", "maps", "keys", "values", "expiry", "stamps")


@pytest.mark.parametrize("column", [f"effect_{name}" for name in EFFECT_COLUMNS])
def test_a_one_op_frame_whose_effect_columns_disagree_is_refused(column: str) -> None:
    effect = Effect(EffectKind.PUT, "m", b"k", b"v", 0.0, 9)
    msg = frames.ops_to_pb(1, "c", 3, "sender", [Op(Code.BACKUP, 2, "", version=4, effects=(effect,))])
    getattr(msg, column).append(getattr(msg, column)[0])
    with pytest.raises(ValueError, match="effect"):
        frames.ops_from_pb(msg)


def test_a_one_op_frame_whose_effect_names_a_missing_map_or_miscounts_is_refused() -> None:
    effect = Effect(EffectKind.PUT, "m", b"k", b"v")
    msg = frames.ops_to_pb(1, "c", 3, "sender", [Op(Code.BACKUP, 2, "", version=4, effects=(effect,))])
    msg.effect_maps[0] = 7
    with pytest.raises(ValueError, match="map index"):
        frames.ops_from_pb(msg)
    msg.effect_maps[0] = 1
    msg.effect_counts[0] = 2
    with pytest.raises(ValueError, match="effect_counts"):
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


# ---------------------------------------------------------------- GET_MANY (peergrid/multiget.py)


@given(get_many_keys)
def test_get_many_keys_survive_their_buffers_and_a_frame(pairs: list[tuple[bytes, int]]) -> None:
    keys, partitions = [k for k, _ in pairs], [p for _, p in pairs]
    blob, header = multiget.pack_keys(keys, partitions)
    op = Op(Code.GET_MANY, partitions[0], "m", blob, header)
    [back] = frames.ops_from_pb(
        map_pb2.Frame.FromString(frames.ops_to_pb(1, "c", 1, "s", [op]).SerializeToString())
    )
    assert multiget.unpack_keys(back, 64 * 1024, 271, 10_000) == (keys, partitions)


@given(get_many_keys, st.data())
def test_get_many_keys_over_a_limit_or_cut_are_refused_with_a_value_error(
    pairs: list[tuple[bytes, int]], data: st.DataObject
) -> None:
    keys, partitions = [k for k, _ in pairs], [p for _, p in pairs]
    blob, header = multiget.pack_keys(keys, partitions)
    longest = max(map(len, keys))
    limits = [(longest - 1, 271, 10_000), (longest, max(partitions), 10_000), (longest, 271, len(keys) - 1)]
    for max_key, count, max_keys in limits:
        with pytest.raises(ValueError):
            multiget.unpack_keys(Op(Code.GET_MANY, 0, "m", blob, header), max_key, count, max_keys)
    cut = data.draw(st.integers(0, len(blob) + len(header) - 1))
    for key, value in ((blob[:cut], header), (blob, header[:cut])):
        if (key, value) != (blob, header):
            with pytest.raises(ValueError):
                multiget.unpack_keys(Op(Code.GET_MANY, 0, "m", key, value), 1 << 20, 1 << 20, 1 << 20)


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_get_many_keys_from_any_bytes_unpack_or_raise_a_value_error(key: bytes, value: bytes) -> None:
    try:
        keys, partitions = multiget.unpack_keys(Op(Code.GET_MANY, 0, "m", key, value), 1 << 20, 271, 100)
    except ValueError:
        return
    assert b"".join(keys) == key
    assert len(keys) == len(partitions) == len(value) // 8
    assert all(0 <= p < 271 for p in partitions)


@given(get_many_answers)
def test_get_many_answers_survive_their_buffer_and_a_reply(answers: list[tuple]) -> None:
    versions, ttls, values, statuses = (list(column) for column in zip(*answers, strict=True))
    blob = multiget.pack_got(versions, ttls, values, bytes(statuses))
    [reply] = frames.replies_to_pb(7, 3, [Result(value=blob, found=True, count=len(answers))], 1 << 20)
    _, _, [result] = frames.results_from_pb(map_pb2.FrameResult.FromString(reply.SerializeToString()))
    got = multiget.Got(result.value, result.count)
    assert (list(got.versions), list(got.ttls), got.values) == (versions, ttls, values)
    assert list(got.statuses) == statuses
    assert multiget.not_ok(got) == [i for i, s in enumerate(statuses) if s != 0]


@given(get_many_answers, st.data())
def test_a_get_many_answer_cut_or_miscounted_raises_a_value_error(
    answers: list[tuple], data: st.DataObject
) -> None:
    versions, ttls, values, statuses = (list(column) for column in zip(*answers, strict=True))
    blob = multiget.pack_got(versions, ttls, values, bytes(statuses))
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(ValueError):
        multiget.Got(blob[:cut], len(answers))
    with pytest.raises(ValueError):
        multiget.Got(blob, -1)
    with pytest.raises(ValueError):
        multiget.Got(blob + b"x", len(answers))
