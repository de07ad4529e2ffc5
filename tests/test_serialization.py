"""Keys and values to bytes and back."""

from __future__ import annotations

import datetime
import enum

import pytest
from hypothesis import given

import peergrid
from peergrid.serialization import MsgpackSerializer, PickleSerializer, decode_key, encode_key
from tests.strategies import keys, values


@given(key=keys)
def test_keys_round_trip(key: object) -> None:
    assert decode_key(encode_key(key)) == key
    assert type(decode_key(encode_key(key))) is type(key)


def test_keys_of_different_types_never_collide() -> None:
    assert len({encode_key(1), encode_key("1"), encode_key(b"1")}) == 3


def test_key_subclasses_are_keyed_by_their_plain_value() -> None:
    class Color(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    assert encode_key(Color.RED) == encode_key("red")
    assert encode_key(Level.HIGH) == encode_key(3)


@pytest.mark.parametrize("bad", [True, 1.5, None, ("a",), ["a"], object()])
def test_bad_keys_raise_key_type_error_naming_the_type(bad: object) -> None:
    with pytest.raises(peergrid.KeyTypeError) as info:
        encode_key(bad)
    assert isinstance(info.value, peergrid.PeerGridError)
    assert isinstance(info.value, TypeError)


@given(value=values)
def test_values_round_trip(value: object) -> None:
    codec = MsgpackSerializer()
    assert codec.loads(codec.dumps(value)) == value


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (object(), "object"),
        ([1, {"x": object()}], "object"),
        (2**70, "64 bits"),
        ((1, [2, object()]), "object"),
    ],
)
def test_unsupported_values_name_the_type(bad: object, named: str) -> None:
    codec = MsgpackSerializer()
    with pytest.raises(peergrid.SerializationError, match=named):
        codec.dumps(bad)
    # The packer is reusable after a failure: nothing half-written leaks into the next value.
    assert codec.loads(codec.dumps("ok")) == "ok"


def test_decoding_garbage_raises_serialization_error() -> None:
    with pytest.raises(peergrid.SerializationError):
        MsgpackSerializer().loads(b"\xc1")


def test_pickle_carries_anything() -> None:
    codec = PickleSerializer()
    value = {"when": datetime.date(2024, 1, 1), "tags": {1, 2}, "opaque": complex(1, 2)}
    assert codec.loads(codec.dumps(value)) == value
