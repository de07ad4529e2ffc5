"""Value serializers.

The default, msgpack, never executes code while decoding (beyond the decoders of
types the user registered): it carries None, bool, int (64-bit), float, str,
bytes, list and dict as plain msgpack, and tuple, set, frozenset, datetime,
date, time, timedelta, UUID, Decimal and registered types as msgpack extension
types (``peergrid.serialization.extensions``), nested. Pickle carries any Python
object but runs code while loading, so it is an explicit opt-in that a Grid
accepts only with mutual TLS on.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from typing import Any, Protocol

import msgpack

from peergrid.errors import ConfigError, PeerGridError, SerializationError
from peergrid.serialization.extensions import CARRIED, decode_extension, new_packer


class Serializer(Protocol):
    """Turns values into bytes and back. Must be the same on every member."""

    name: str

    def dumps(self, value: object) -> bytes:
        """Encode a value; raise ``SerializationError`` if it cannot be carried."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes made by ``dumps``."""
        ...


class MsgpackSerializer:
    """The safe default: msgpack, with binary and text kept apart, and extension types for
    tuples, sets, dates and times, UUIDs, Decimals and registered types.

    Each value reads back with the type it was stored with (an unregistered subclass of a
    carried type, such as a namedtuple or an IntEnum, as its base type). Bytes written
    before extension types existed decode as they always did.
    """

    name = "msgpack"

    def __init__(self) -> None:
        # A Packer is ~3x cheaper than msgpack.packb but not thread-safe: one per thread.
        self._local = threading.local()

    def _packer(self) -> Any:
        try:
            return self._local.packer
        except AttributeError:
            self._local.packer = new_packer()
            return self._local.packer

    def dumps(self, value: object) -> bytes:
        """Encode a value; raise ``SerializationError`` (naming the type) if it cannot be carried.
        Nothing is written anywhere if it fails."""
        packer = self._packer()
        try:
            data: bytes = packer.pack(value)
        except SerializationError:
            packer.reset()
            raise
        except (OverflowError, ValueError, TypeError, RecursionError) as exc:
            # The packer keeps a buffer between calls: drop the half-packed value.
            packer.reset()
            raise SerializationError(
                f"cannot serialize value: {exc} (the default serializer carries {CARRIED})"
            ) from exc
        return data

    def loads(self, data: bytes) -> Any:
        """Decode; runs no code but registered types' decoders. Raises ``SerializationError``
        for anything malformed or of an extension type not registered here."""
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=decode_extension)
        except SerializationError:
            raise
        except Exception as exc:  # hostile bytes: whatever msgpack or a type raised
            raise SerializationError(f"stored value cannot be decoded: {type(exc).__name__}: {exc}") from exc


class PickleSerializer:
    """Any picklable object. Unpickling runs code: only with mutual TLS between members."""

    name = "pickle"

    def dumps(self, value: object) -> bytes:
        """Pickle a value with the highest protocol."""
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(
                f"cannot pickle a value of type {type(value).__qualname__}: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        """Unpickle (runs code: the data came from an authenticated member)."""
        return pickle.loads(data)  # noqa: S301 - opt-in, TLS-only (see GridConfig.validate)


def serializer_named(name: str) -> Serializer:
    """The serializer a config names."""
    if name == "msgpack":
        return MsgpackSerializer()
    if name == "pickle":
        return PickleSerializer()
    raise ConfigError(f"unknown serializer {name!r}: use 'msgpack' or 'pickle'")


def values_equal(serializer: Serializer) -> Callable[[bytes, bytes], bool]:
    """Whether two encoded values decode equal (``replace_if_same`` compares values, not their
    encodings: a dict's keys may come in another order); undecodable ones are not equal."""
    loads = serializer.loads

    def equal(a: bytes, b: bytes) -> bool:
        if a == b:
            return True
        try:
            return bool(loads(a) == loads(b))
        except PeerGridError:
            return False

    return equal
