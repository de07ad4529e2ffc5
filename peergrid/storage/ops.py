"""Map operations on a partition, as the owner executes them.

Each function takes the partition and the op, changes the partition, and
returns the result with the effects the backups must apply to follow. Pure
apart from the partition it is given and the clock; the caller (the owner's
executor) bumps the version and replicates the effects.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from peergrid.protocol import Code, Effect, EffectKind, Op, Result, Status
from peergrid.storage.partition import Partition

Outcome = tuple[Result, tuple[Effect, ...]]
ValuesEqual = Callable[[bytes, bytes], bool]
_NONE: tuple[Effect, ...] = ()


def _expire_at(op: Op) -> float:
    return time.time() + op.ttl if op.ttl > 0 else 0.0


def _put(part: Partition, op: Op) -> Effect:
    expire_at = _expire_at(op)
    part.store(op.map).put(op.key, op.value, expire_at)
    return Effect(EffectKind.PUT, op.map, op.key, op.value, expire_at)


def _current(part: Partition, op: Op) -> bytes | None:
    store = part.maps.get(op.map)
    return store.get(op.key) if store is not None else None


def get(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    old = _current(part, op)
    return (Result(value=old, found=True) if old is not None else Result()), _NONE


def contains(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    return Result(found=_current(part, op) is not None), _NONE


def put(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    old = _current(part, op)
    effect = _put(part, op)
    return (Result(value=old, found=True) if old is not None else Result()), (effect,)


def set_(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    return Result(), (_put(part, op),)


def put_if_absent(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    old = _current(part, op)
    if old is not None:
        return Result(value=old, found=True), _NONE
    return Result(), (_put(part, op),)


def replace(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    old = _current(part, op)
    if old is None:
        return Result(), _NONE
    return Result(value=old, found=True), (_put(part, op),)


def replace_if_same(part: Partition, op: Op, eq: ValuesEqual) -> Outcome:
    old = _current(part, op)
    if old is None or not eq(old, op.expect):
        return Result(found=False), _NONE
    return Result(found=True), (_put(part, op),)


def delete(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    store = part.maps.get(op.map)
    if store is None or store.get(op.key) is None:
        # An expired leftover is the sweep's to free: it counts, replicates and tells listeners.
        return Result(found=False), _NONE
    store.delete(op.key)
    return Result(found=True), (Effect(EffectKind.DELETE, op.map, op.key),)


def size(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    store = part.maps.get(op.map)
    return Result(count=store.count() if store is not None else 0), _NONE


def clear(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    store = part.maps.pop(op.map, None)
    if store is None:
        return Result(count=0), _NONE
    return Result(count=store.count()), (Effect(EffectKind.CLEAR, op.map),)


def entries(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    store = part.maps.get(op.map)
    keys: list[bytes] = []
    values: list[bytes] = []
    if store is not None:
        for key, value, _ in store.items():
            keys.append(key)
            values.append(value)
    return Result(keys=keys, values=values, count=len(keys)), _NONE


def keys(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    store = part.maps.get(op.map)
    found = [key for key, _, _ in store.items()] if store is not None else []
    return Result(keys=found, count=len(found)), _NONE


HANDLERS: dict[int, Callable[[Partition, Op, ValuesEqual], Outcome]] = {
    Code.GET: get,
    Code.CONTAINS: contains,
    Code.PUT: put,
    Code.SET: set_,
    Code.PUT_IF_ABSENT: put_if_absent,
    Code.REPLACE: replace,
    Code.REPLACE_IF_SAME: replace_if_same,
    Code.DELETE: delete,
    Code.SIZE: size,
    Code.CLEAR: clear,
    Code.ENTRIES: entries,
    Code.KEYS: keys,
}


def execute(part: Partition, op: Op, eq: ValuesEqual) -> Outcome:
    """Run one map op on the owner's partition."""
    handler = HANDLERS.get(op.code)
    if handler is None:
        return Result(Status.INVALID, message=f"unknown operation code {op.code}"), _NONE
    return handler(part, op, eq)
