"""Keys and values to bytes and back: the key codec and the value serializers."""

from peergrid.serialization.codec import (
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
    serializer_named,
)
from peergrid.serialization.extensions import register_type
from peergrid.serialization.keys import Key, decode_key, encode_key

__all__ = [
    "Key",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "decode_key",
    "encode_key",
    "register_type",
    "serializer_named",
]
