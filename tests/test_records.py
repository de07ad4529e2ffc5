"""The record store and the owner's operations on a partition."""

from __future__ import annotations

import time

from peergrid.protocol import Code, Effect, EffectKind, Op
from peergrid.storage import Partition, Records
from peergrid.storage import ops as storage_ops


def same(a: bytes, b: bytes) -> bool:
    return a == b


def run(
    part: Partition, code: int, key: bytes = b"sk", value: bytes = b"", expect: bytes = b"", ttl: float = 0.0
):
    return storage_ops.execute(part, Op(code, 0, "m", key, value, expect, ttl), same)


def test_put_get_delete_and_byte_count() -> None:
    store = Records()
    store.put(b"k", b"vvv")
    assert store.get(b"k") == b"vvv"
    assert store.nbytes == 4
    store.put(b"k", b"v")
    assert store.nbytes == 2
    assert store.delete(b"k") == b"v"
    assert store.nbytes == 0
    assert store.get(b"k") is None


def test_expired_entries_are_invisible_then_swept() -> None:
    store = Records()
    store.put(b"old", b"1", expire_at=time.time() - 1)
    store.put(b"new", b"2", expire_at=time.time() + 60)
    store.put(b"forever", b"3")
    assert store.get(b"old") is None
    assert store.count() == 2
    assert [k for k, _, _ in store.items()] == [b"new", b"forever"]
    assert store.sweep(time.time()) == [(b"old", b"1")]
    assert len(store) == 2


def test_a_put_without_ttl_clears_the_old_ttl() -> None:
    store = Records()
    store.put(b"k", b"1", expire_at=time.time() - 1)
    store.put(b"k", b"2")
    assert store.get(b"k") == b"2"


def test_operations_return_results_and_effects() -> None:
    part = Partition(0)
    result, effects = run(part, Code.PUT, value=b"1")
    assert not result.found
    assert effects == (Effect(EffectKind.PUT, "m", b"sk", b"1", 0.0),)
    result, effects = run(part, Code.PUT_IF_ABSENT, value=b"2")
    assert (result.found, result.value, effects) == (True, b"1", ())
    result, effects = run(part, Code.REPLACE_IF_SAME, value=b"3", expect=b"nope")
    assert (result.found, effects) == (False, ())
    result, _ = run(part, Code.REPLACE_IF_SAME, value=b"3", expect=b"1")
    assert result.found
    assert run(part, Code.GET)[0].value == b"3"
    result, effects = run(part, Code.DELETE)
    assert result.found
    assert effects == (Effect(EffectKind.DELETE, "m", b"sk"),)
    result, effects = run(part, Code.DELETE)
    assert (result.found, effects) == (False, ())
    assert run(part, Code.REPLACE, value=b"x")[0].found is False


def test_backups_replay_effects_to_the_same_state() -> None:
    owner, backup = Partition(0), Partition(0)
    for code, key, value in [
        (Code.PUT, b"sa", b"1"),
        (Code.SET, b"sb", b"2"),
        (Code.DELETE, b"sa", b""),
        (Code.SET, b"sc", b"3"),
    ]:
        _, effects = run(owner, code, key, value)
        backup.apply(effects)
    assert list(owner.snapshot()) == list(backup.snapshot())
    _, effects = run(owner, Code.CLEAR)
    backup.apply(effects)
    assert owner.entry_count() == backup.entry_count() == 0


def test_unknown_codes_are_invalid() -> None:
    result, effects = run(Partition(0), 999)
    assert result.status != 0
    assert effects == ()
