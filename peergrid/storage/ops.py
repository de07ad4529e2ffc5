"""Map operations on a partition, as the owner executes them.

Each function takes the partition and the op, changes the partition, and
returns the result with the effects the backups must apply to follow. Pure
apart from the partition it is given and the clock; the caller (the owner's
executor) bumps the version and replicates the effects.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from peergrid.protocol import Code, Effect, EffectKind, EntryRecord, Op, Result, Status
from peergrid.storage.partition import Partition
from peergrid.storage.records import Records

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


# ---------------------------------------------------------------- entries (issue 15)
def expire(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    """Give a live entry the TTL ``op.ttl``: its value stored again with the new expiry, so
    backups, transfers and the journal carry it as any put."""
    old = _current(part, op)
    if old is None:
        return Result(found=False), _NONE
    expire_at = _expire_at(op)
    part.store(op.map).put(op.key, old, expire_at)
    return Result(found=True), (Effect(EffectKind.PUT, op.map, op.key, old, expire_at),)


def persist(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    """Remove a live entry's TTL; ``found`` if it had one."""
    store = part.maps.get(op.map)
    old = store.peek(op.key) if store is not None else None
    if store is None or old is None or not store.expiry.get(op.key):
        return Result(found=False), _NONE
    store.put(op.key, old)
    return Result(found=True), (Effect(EffectKind.PUT, op.map, op.key, old),)


def ttl(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    """``found`` if the entry is live; ``ttl``: its TTL left (0: none)."""
    store = part.maps.get(op.map)
    left = time_left(store, op.key) if store is not None else None
    result = Result(found=left is not None)
    result.ttl = left or 0.0
    return result, _NONE


def time_left(store: Records, key: bytes) -> float | None:
    """Seconds until ``key``'s TTL ends (0.0: it has none), or None when it is not live. Not
    an access, and max-idle is not counted (an entry read in time never idles out)."""
    if store.peek(key) is None:
        return None
    deadline = store.expiry.get(key) if store.expiry else None
    return max(deadline - time.time(), 1e-9) if deadline else 0.0


def entry_record(store: Records | None, key: bytes) -> EntryRecord | None:
    """What ``store`` tracks of ``key``'s live entry (not counted as an access), or None."""
    value = store.peek(key) if store is not None else None
    if store is None or value is None:
        return None
    last = store.access.last.get(key, 0.0) if store.access is not None else 0.0
    return EntryRecord(value, store.expiry.get(key, 0.0) if store.expiry else 0.0, last)


def entry_view(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    """``found`` if the entry is live; its ``EntryRecord`` in ``value``."""
    record = entry_record(part.maps.get(op.map), op.key)
    if record is None:
        return Result(found=False), _NONE
    return Result(value=record.encode(), found=True), _NONE


def remove(part: Partition, op: Op, _eq: ValuesEqual) -> Outcome:
    """Delete a live entry, answering its value."""
    old = _current(part, op)
    if old is None:
        return Result(found=False), _NONE
    return Result(value=old, found=True), _drop(part, op)


def remove_if_same(part: Partition, op: Op, eq: ValuesEqual) -> Outcome:
    """Delete a live entry whose value equals ``op.expect``; ``found`` if it did."""
    old = _current(part, op)
    if old is None or not eq(old, op.expect):
        return Result(found=False), _NONE
    return Result(found=True), _drop(part, op)


def _drop(part: Partition, op: Op) -> tuple[Effect, ...]:
    store = part.maps.get(op.map)
    if store is not None:
        store.delete(op.key)
    return (Effect(EffectKind.DELETE, op.map, op.key),)


def contains_value(part: Partition, op: Op, eq: ValuesEqual) -> Outcome:
    """``found`` if a live entry's value equals ``op.value`` (as decoded values compare)."""
    store = part.maps.get(op.map)
    if store is None:
        return Result(found=False), _NONE
    target = op.value
    values = [value for _, value, _ in store.items()]
    # Equal encodings first (cheap); only then decode, for values equal but encoded apart.
    found = target in values or any(eq(value, target) for value in values)
    return Result(found=found), _NONE


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
    Code.EXPIRE: expire,
    Code.PERSIST: persist,
    Code.TTL: ttl,
    Code.ENTRY_VIEW: entry_view,
    Code.REMOVE: remove,
    Code.REMOVE_IF_SAME: remove_if_same,
    Code.EVICT: delete,  # the executor keeps it from the store, and publishes EVICTED
    Code.EVICT_ALL: clear,
    Code.CONTAINS_VALUE: contains_value,
    Code.DESTROY: clear,
}


def execute(part: Partition, op: Op, eq: ValuesEqual) -> Outcome:
    """Run one map op on the owner's partition."""
    handler = HANDLERS.get(op.code)
    if handler is None:
        return Result(Status.INVALID, message=f"unknown operation code {op.code}"), _NONE
    return handler(part, op, eq)
