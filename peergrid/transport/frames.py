"""Columnar frames <-> lists of ``Op`` and ``Result``.

A frame stores each field of its ops as one repeated column (see
``protos/map.proto``): building and parsing a few long repeated fields is C
work, where a sub-message per op costs microseconds each in Python. Optional
columns are sent only when some op in the frame uses them. Frames from the
network are untrusted: ``ops_from_pb`` raises ``ValueError`` when the columns
disagree or a map name is too long, and the caller refuses the whole frame.

The answer to a frame may be larger than one gRPC message may be (a ``get_all``
of large values, a scan of a full partition): ``replies_to_pb`` splits it into
messages under the limit, its results in order; the caller's pipe completes
each op as its result arrives and the frame once all did. A result that alone
cannot fit (one partition's scan) is answered ``Status.TOO_LARGE`` with its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from peergrid.protocol import Effect, Op, Result, Status, map_name_problem
from peergrid.transport._pb import map_pb2


def ops_to_pb(
    frame_id: int, cluster: str, table_version: int, sender: str, ops: Sequence[Op]
) -> map_pb2.Frame:
    """One frame carrying ``ops``."""
    if len(ops) == 1 and len(ops[0].effects) <= _FEW_EFFECTS:
        return _op_to_pb(frame_id, cluster, table_version, sender, ops[0])
    maps: dict[str, int] = {}
    index = [maps.setdefault(op.map, len(maps)) for op in ops]
    msg = map_pb2.Frame(
        id=frame_id,
        cluster=cluster,
        table_version=table_version,
        sender=sender,
        codes=[op.code for op in ops],
        partitions=[op.partition for op in ops],
        map_index=index,
        keys=[op.key for op in ops],
    )
    if any(op.value for op in ops):
        msg.values.extend([op.value for op in ops])
    if any(op.expect for op in ops):
        msg.expects.extend([op.expect for op in ops])
    if any(op.ttl for op in ops):
        msg.ttls.extend([op.ttl for op in ops])
    if any(op.version for op in ops):
        msg.versions.extend([op.version for op in ops])
    if any(op.effects for op in ops):
        _effects_to_pb(msg, ops, maps)
    msg.maps.extend(maps)
    return msg


_FEW_EFFECTS = 4  # a lone write's backup carries one or two; more go through the column lists


def _op_to_pb(frame_id: int, cluster: str, table_version: int, sender: str, op: Op) -> map_pb2.Frame:
    """A frame of one op with at most a few effects (a lone call, or the backup of a lone
    write: the common cases at rest): the same message as ``ops_to_pb`` builds, set field by
    field (upb's keyword constructor and the column scans cost more than the op's fields)."""
    msg = map_pb2.Frame()
    msg.id = frame_id
    msg.cluster = cluster
    msg.table_version = table_version
    msg.sender = sender
    msg.codes.append(op.code)
    msg.partitions.append(op.partition)
    msg.map_index.append(0)
    msg.keys.append(op.key)
    if op.value:
        msg.values.append(op.value)
    if op.expect:
        msg.expects.append(op.expect)
    if op.ttl:
        msg.ttls.append(op.ttl)
    if op.version:
        msg.versions.append(op.version)
    if not op.effects:
        msg.maps.append(op.map)
        return msg
    maps = {op.map: 0}
    msg.effect_counts.append(len(op.effects))
    stamped = False
    for effect in op.effects:
        msg.effect_kinds.append(effect.kind)
        msg.effect_maps.append(maps.setdefault(effect.map, len(maps)))
        msg.effect_keys.append(effect.key)
        msg.effect_values.append(effect.value)
        msg.effect_expiry.append(effect.expire_at)
        stamped = stamped or bool(effect.stamp)
    if stamped:
        msg.effect_stamps.extend([effect.stamp for effect in op.effects])
    msg.maps.extend(maps)
    return msg


def _effects_to_pb(msg: map_pb2.Frame, ops: Sequence[Op], maps: dict[str, int]) -> None:
    effects = [effect for op in ops for effect in op.effects]
    msg.effect_counts.extend([len(op.effects) for op in ops])
    msg.effect_kinds.extend([e.kind for e in effects])
    msg.effect_maps.extend([maps.setdefault(e.map, len(maps)) for e in effects])
    msg.effect_keys.extend([e.key for e in effects])
    msg.effect_values.extend([e.value for e in effects])
    msg.effect_expiry.extend([e.expire_at for e in effects])
    if any(e.stamp for e in effects):
        msg.effect_stamps.extend([e.stamp for e in effects])


def _column(column: Sequence[object], count: int, name: str, default: object) -> Sequence[object]:
    if not column:
        return [default] * count
    if len(column) != count:
        raise ValueError(f"frame column {name!r} has {len(column)} entries for {count} ops")
    return column


def ops_from_pb(msg: map_pb2.Frame) -> list[Op]:
    """The ops of a frame; ``ValueError`` when its columns disagree."""
    count = len(msg.codes)
    if count == 1:
        return [_op_from_pb(msg)]
    maps = list(msg.maps)
    for name in maps:
        # Empty: the ops that name no map (backups). The executor checks each op's own name.
        problem = map_name_problem(name, allow_empty=True)
        if problem is not None:
            raise ValueError(problem)
    partitions = _column(msg.partitions, count, "partitions", 0)
    index = _column(msg.map_index, count, "map_index", 0)
    keys = _column(msg.keys, count, "keys", b"")
    values = _column(msg.values, count, "values", b"")
    expects = _column(msg.expects, count, "expects", b"")
    ttls = _column(msg.ttls, count, "ttls", 0.0)
    versions = _column(msg.versions, count, "versions", 0)
    effects = _effects_from_pb(msg, count, maps)
    try:
        names = [maps[i] for i in index]  # type: ignore[call-overload]
    except IndexError:
        raise ValueError("frame op names a map index out of range") from None
    return [
        Op(*fields)
        for fields in zip(
            msg.codes, partitions, names, keys, values, expects, ttls, versions, effects, strict=True
        )
    ]


def _single(column: Sequence[Any], name: str, default: Any) -> Any:
    """The one entry of a one-op frame's column (``default`` when the column was left out)."""
    size = len(column)
    if size == 1:
        return column[0]
    if size:
        raise ValueError(f"frame column {name!r} has {size} entries for 1 ops")
    return default


def _op_from_pb(msg: map_pb2.Frame) -> Op:
    """The op of a frame of one op: ``ops_from_pb``'s checks, without its column lists."""
    maps = msg.maps
    for name in maps:
        problem = map_name_problem(name, allow_empty=True)
        if problem is not None:
            raise ValueError(problem)
    index = _single(msg.map_index, "map_index", 0)
    if not 0 <= index < len(maps):
        raise ValueError("frame op names a map index out of range")
    return Op(
        msg.codes[0],
        _single(msg.partitions, "partitions", 0),
        maps[index],
        _single(msg.keys, "keys", b""),
        _single(msg.values, "values", b""),
        _single(msg.expects, "expects", b""),
        _single(msg.ttls, "ttls", 0.0),
        _single(msg.versions, "versions", 0),
        _op_effects(msg, maps),
    )


def _op_effects(msg: map_pb2.Frame, maps: Sequence[str]) -> tuple[Effect, ...]:
    """The effects of a frame's one op: a few field by field, more as columns (an expiry's
    batch of deletes: zipping the columns is faster per effect than indexing them)."""
    if not msg.effect_counts:
        return ()
    if len(msg.effect_kinds) <= _FEW_EFFECTS:
        return _lone_effects(msg, maps)
    return tuple(_effects_from_pb(msg, 1, list(maps))[0])


def _lone_effects(msg: map_pb2.Frame, maps: Sequence[str]) -> tuple[Effect, ...]:
    """The effects of a frame's one op: ``_effects_from_pb``'s checks, field by field."""
    kinds, keys, values = msg.effect_kinds, msg.effect_keys, msg.effect_values
    expiry, index, stamps = msg.effect_expiry, msg.effect_maps, msg.effect_stamps
    total = len(kinds)
    if len(msg.effect_counts) != 1 or msg.effect_counts[0] != total:
        raise ValueError("frame column 'effect_counts' does not match the ops")
    if not len(keys) == len(values) == len(expiry) == len(index) == total or len(stamps) not in (0, total):
        raise ValueError("frame effect columns disagree in length")
    try:
        return tuple(
            Effect(kinds[i], maps[index[i]], keys[i], values[i], expiry[i], stamps[i] if stamps else 0)
            for i in range(total)
        )
    except IndexError:
        raise ValueError("frame effect names a map index out of range") from None


def _effects_from_pb(msg: map_pb2.Frame, count: int, maps: list[str]) -> Sequence[tuple[Effect, ...]]:
    counts = list(msg.effect_counts)
    if not counts:
        return [()] * count
    if len(counts) != count:
        raise ValueError("frame column 'effect_counts' does not match the ops")
    total = sum(counts)
    columns = (msg.effect_kinds, msg.effect_maps, msg.effect_keys, msg.effect_values, msg.effect_expiry)
    if any(len(column) != total for column in columns):
        raise ValueError("frame effect columns disagree in length")
    stamps = _column(msg.effect_stamps, total, "effect_stamps", 0)
    try:
        flat = [
            Effect(kind, maps[m], key, value, expiry, stamp)
            for kind, m, key, value, expiry, stamp in zip(*columns, stamps, strict=True)
        ]
    except IndexError:
        raise ValueError("frame effect names a map index out of range") from None
    grouped: list[tuple[Effect, ...]] = []
    start = 0
    for n in counts:
        grouped.append(tuple(flat[start : start + n]))
        start += n
    return grouped


def results_to_pb(frame_id: int, table_version: int, results: Sequence[Result]) -> map_pb2.FrameResult:
    """The answer to a frame."""
    if len(results) == 1 and results[0].keys is None:
        return _result_to_pb(frame_id, table_version, results[0])
    msg = map_pb2.FrameResult(
        id=frame_id,
        table_version=table_version,
        statuses=[r.status for r in results],
        found=[r.found for r in results],
    )
    if any(r.value for r in results):
        msg.values.extend([r.value for r in results])
    if any(r.count for r in results):
        msg.counts.extend([r.count for r in results])
    if any(r.message for r in results):
        msg.messages.extend([r.message for r in results])
    if any(r.version for r in results):
        msg.versions.extend([r.version for r in results])
    if any(r.ttl for r in results):
        msg.ttls.extend([r.ttl for r in results])
    if any(r.keys is not None for r in results):
        msg.key_counts.extend([len(r.keys or ()) for r in results])
        msg.value_counts.extend([len(r.values or ()) for r in results])
        for r in results:
            if r.keys:
                msg.scan_keys.extend(r.keys)
            if r.values:
                msg.scan_values.extend(r.values)
    return msg


def _result_to_pb(frame_id: int, table_version: int, r: Result) -> map_pb2.FrameResult:
    """The answer to a frame of one op (no scan): ``results_to_pb``'s message, field by field."""
    msg = map_pb2.FrameResult()
    msg.id = frame_id
    msg.table_version = table_version
    msg.statuses.append(r.status)
    msg.found.append(r.found)
    if r.value:
        msg.values.append(r.value)
    if r.count:
        msg.counts.append(r.count)
    if r.message:
        msg.messages.append(r.message)
    if r.version:
        msg.versions.append(r.version)
    if r.ttl:
        msg.ttls.append(r.ttl)
    return msg


#: Bytes a message may need beyond its results' data (ids, versions; generous).
_HEADROOM = 4096
#: Bytes a result may need beyond its data: status, found, count, version, ttl and the column
#: counts (each a varint or a double), and a tag and length for each of its byte strings.
_PER_RESULT = 64
_PER_BYTES = 6


def _result_size(result: Result) -> int:
    """What ``result`` adds to a message, at most."""
    size = _PER_RESULT + len(result.value) + len(result.message.encode("utf-8", "replace"))
    if result.keys:
        size += sum(map(len, result.keys)) + _PER_BYTES * len(result.keys)
    if result.values:
        size += sum(map(len, result.values)) + _PER_BYTES * len(result.values)
    return size


def replies_to_pb(
    frame_id: int, table_version: int, results: Sequence[Result], max_bytes: int
) -> list[map_pb2.FrameResult]:
    """The answer to a frame as messages of at most ``max_bytes`` each, its results in order.

    One message when it fits (the usual case, checked with a few C-level sums). A result
    that cannot fit a message on its own becomes ``Status.TOO_LARGE``, its size in ``count``.
    """
    budget = max_bytes - _HEADROOM
    # Quick bound: every result's small fields and every byte string, summed without a Python loop
    # per result where possible (a frame of small gets is the hot path).
    total = sum(map(len, [r.value for r in results])) + (_PER_RESULT + 1024) * len(results)
    if total <= budget and not any(r.keys for r in results):
        return [results_to_pb(frame_id, table_version, results)]
    chunks: list[list[Result]] = [[]]
    used = 0
    for result in results:
        size = _result_size(result)
        if size > budget:
            result = Result(  # noqa: PLW2901 - the result as sent
                Status.TOO_LARGE,
                count=size,
                message=f"an answer of {size} bytes exceeds limits.max_message_bytes={max_bytes}",
            )
            size = _result_size(result)
        if used + size > budget and chunks[-1]:
            chunks.append([])
            used = 0
        chunks[-1].append(result)
        used += size
    return [results_to_pb(frame_id, table_version, chunk) for chunk in chunks]


def results_from_pb(msg: map_pb2.FrameResult) -> tuple[int, int, list[Result]]:
    """``(frame id, table version, results)`` of a frame result."""
    count = len(msg.statuses)
    if count == 1 and not msg.key_counts:
        return msg.id, msg.table_version, [_result_from_pb(msg)]
    values = _column(msg.values, count, "values", b"")
    counts = _column(msg.counts, count, "counts", 0)
    messages = _column(msg.messages, count, "messages", "")
    found = _column(msg.found, count, "found", False)
    results = [
        Result(*fields)  # type: ignore[arg-type]
        for fields in zip(msg.statuses, values, found, counts, strict=True)
    ]
    for result, message in zip(results, messages, strict=True):
        if message:
            result.message = message  # type: ignore[assignment]
    if len(msg.versions):
        for result, version in zip(results, _column(msg.versions, count, "versions", 0), strict=True):
            result.version = version  # type: ignore[assignment]
    if len(msg.ttls):
        for result, ttl in zip(results, _column(msg.ttls, count, "ttls", 0.0), strict=True):
            result.ttl = ttl  # type: ignore[assignment]
    if len(msg.key_counts):
        _scans_from_pb(msg, results)
    return msg.id, msg.table_version, results


def _result_from_pb(msg: map_pb2.FrameResult) -> Result:
    """The result of a one-result message without scans: ``results_from_pb``'s checks, without
    its column lists."""
    result = Result(
        msg.statuses[0],
        _single(msg.values, "values", b""),
        _single(msg.found, "found", False),
        _single(msg.counts, "counts", 0),
    )
    message = _single(msg.messages, "messages", "")
    if message:
        result.message = message
    if msg.versions:
        result.version = _single(msg.versions, "versions", 0)
    if msg.ttls:
        result.ttl = _single(msg.ttls, "ttls", 0.0)
    return result


def _scans_from_pb(msg: map_pb2.FrameResult, results: list[Result]) -> None:
    keys, values = list(msg.scan_keys), list(msg.scan_values)
    k = v = 0
    for result, key_count, value_count in zip(results, msg.key_counts, msg.value_counts, strict=True):
        result.keys = keys[k : k + key_count]
        result.values = values[v : v + value_count] if value_count else None
        k += key_count
        v += value_count
