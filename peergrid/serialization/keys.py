"""The key codec: ``str``, ``bytes`` and ``int`` keys to canonical bytes.

The encoded form is what partitions are hashed from and what record stores are
keyed by, so it must be the same on every member and for every equal key: one
type byte, then the UTF-8 text, the raw bytes, or the decimal digits. Keys of
different types never collide (``1``, ``"1"`` and ``b"1"`` are three keys).
"""

from __future__ import annotations

from peergrid.errors import KeyTypeError, SerializationError

Key = str | bytes | int

_STR = 0x73  # "s"
_BYTES = 0x62  # "b"
_INT = 0x69  # "i"


def encode_key(key: object) -> bytes:
    """Encode a key; raise ``KeyTypeError`` for any other type (``bool`` included)."""
    kind = type(key)
    if kind is str:
        try:
            return b"s" + key.encode()  # type: ignore[attr-defined,no-any-return]
        except UnicodeEncodeError as exc:
            raise KeyTypeError(f"key {key!r} is not valid Unicode text: {exc.reason}") from exc
    if kind is bytes:
        return b"b" + key  # type: ignore[operator]
    if kind is int:
        return b"i%d" % key  # type: ignore[str-format]
    return _encode_subclass(key)


def _encode_subclass(key: object) -> bytes:
    # Subclasses (a StrEnum, an IntEnum) are keyed by their plain value, so the
    # same key reads back whatever class the caller used. bool is refused: True
    # and 1 are equal in Python, and silently sharing a key would surprise.
    if isinstance(key, bool):
        raise KeyTypeError("bool keys are not supported: use an int or a str")
    if isinstance(key, str):
        return encode_key(str(key))
    if isinstance(key, bytes | bytearray | memoryview):
        return b"b" + bytes(key)
    if isinstance(key, int):
        return encode_key(int(key))
    raise KeyTypeError(f"keys must be str, bytes or int, not {type(key).__qualname__}")


def decode_key(data: bytes) -> Key:
    """Decode bytes made by ``encode_key``."""
    if not data:
        raise SerializationError("empty encoded key")
    kind, body = data[0], data[1:]
    if kind == _STR:
        return body.decode()
    if kind == _BYTES:
        return bytes(body)
    if kind == _INT:
        return int(body)
    raise SerializationError(f"encoded key starts with an unknown type byte {kind:#x}")
