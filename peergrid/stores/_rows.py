"""Keys and values to the columns the built-in stores keep, and back.

Every built-in store keeps a row per key: ``key``, the canonical encoded key
(``peergrid.serialization.encode_key``, the same bytes the grid partitions
by); ``key_text``, the key as text for people reading the table; and
``value``, the msgpack bytes of the value. Everything is encoded before any of
it is written, so a bad key or value in a batch writes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from peergrid.errors import ConfigError, SerializationError, StoreError
from peergrid.serialization import Key, MsgpackSerializer, decode_key, encode_key

#: PostgreSQL cuts longer identifiers short; refusing them keeps a table's name
#: the same in every database.
_MAX_TABLE_BYTES = 63

Row = tuple[bytes, str, bytes]


def table_name(map_name: str, table: str | None) -> str:
    """The table a store uses: ``table`` if given, else ``peergrid_<map_name>``."""
    name = table if table is not None else f"peergrid_{map_name}"
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigError(f"a store's table name must be a non-empty str without NUL, got {name!r}")
    if len(name.encode()) > _MAX_TABLE_BYTES:
        raise ConfigError(
            f"table name {name!r} is longer than {_MAX_TABLE_BYTES} bytes: pass a shorter table=..."
        )
    return name


def key_text(encoded: bytes) -> str:
    """The key as text: a str as itself, an int in decimal, bytes in hex (NUL shown as U+FFFD)."""
    key = decode_key(encoded)
    if isinstance(key, bytes):
        return key.hex()
    return str(key).replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL


class RowCodec:
    """Encodes keys and values for a store's rows; safe to share between threads."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._values = MsgpackSerializer()

    def key(self, key: Key) -> bytes:
        """The encoded key (``KeyTypeError`` for a key of another type)."""
        return encode_key(key)

    def keys(self, keys: Collection[Key]) -> dict[bytes, Key]:
        """Encoded key -> the caller's key, without duplicates, in the caller's order."""
        return {encode_key(key): key for key in keys}

    def row(self, key: Key, value: Any) -> Row:
        """``(key, key_text, value)`` for one entry."""
        encoded = encode_key(key)
        return encoded, key_text(encoded), self._values.dumps(value)

    def rows(self, entries: Mapping[Key, Any]) -> list[Row]:
        """The rows of every entry; raises before returning any if one cannot be encoded."""
        return [self.row(key, value) for key, value in entries.items()]

    def value(self, encoded_key: bytes, data: bytes) -> Any:
        """Decode a stored value; a row that is not msgpack is a ``StoreError``."""
        try:
            return self._values.loads(bytes(data))
        except SerializationError as exc:
            raise StoreError(
                f"{self._where}: the row for key {key_text(encoded_key)!r} does not hold a msgpack "
                f"value (was the table written by something else?): {exc}",
                store=self._where,
            ) from exc

    def found(self, rows: Iterable[tuple[bytes, bytes]], wanted: Mapping[bytes, Key]) -> dict[Key, Any]:
        """The caller's keys -> decoded values, for the ``(key, value)`` rows a query found."""
        values = {bytes(key): data for key, data in rows}
        return {wanted[key]: self.value(key, values[key]) for key in wanted if key in values}
