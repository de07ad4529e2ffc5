"""The msgpack extension types of the default serializer, and the registry users add theirs to.

Plain values (None, bool, int, float, str, bytes, list, dict) are plain msgpack, byte for
byte what peergrid has always written, so entries stored before extension types existed
read back unchanged (a list stays a list). Everything else travels as a msgpack
extension value: a type code (0-127) and a payload. Codes 0-31 are peergrid's own:

====  ============================  =========================================================
code  type                          payload
====  ============================  =========================================================
1     ``tuple``                     msgpack array of the items
2     ``set``                       msgpack array of the items (in iteration order)
3     ``frozenset``                 msgpack array of the items
4     ``datetime.datetime``         ``[year, month, day, hour, minute, second, us, fold, tz]``
5     ``datetime.date``             ``[year, month, day]``
6     ``datetime.time``             ``[hour, minute, second, us, fold, tz]``
7     ``datetime.timedelta``        ``[days, seconds, us]``
8     ``uuid.UUID``                 the 16 bytes
9     ``decimal.Decimal``           ``str(value)`` as ASCII
====  ============================  =========================================================

``tz`` is nil (naive), an int (a ``datetime.timezone``: its offset in microseconds), a pair
``[offset_us, name]`` (a ``timezone`` given a name), or a str (a ``zoneinfo.ZoneInfo`` key).

Codes 32-127 are the user's, given out by :func:`register_type`. A registered type's
encoder turns an instance into any value the serializer carries (registered types
included); its decoder gets that value back and rebuilds the instance. Decoding runs no
code but these decoders: an unknown code or a malformed payload raises
``SerializationError``.

Nested packing and unpacking happen inside msgpack's own callbacks, so each thread keeps
a small pool of packers and unpackers (msgpack's are not reentrant), and extension values
nest at most ``MAX_DEPTH`` deep: msgpack's C unpacker keeps ~40 KiB on the C stack per
nested call, and hostile bytes must not be able to exhaust a thread's stack.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import threading
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any

import msgpack

from peergrid.errors import ConfigError, PeerGridError, SerializationError

#: Codes 0..FIRST_USER_CODE-1 are peergrid's; users register FIRST_USER_CODE..127.
FIRST_USER_CODE = 32
LAST_CODE = 127
#: How deep extension values may nest inside each other (a tuple in a tuple is depth 2).
MAX_DEPTH = 64
#: Pooled packers and unpackers whose payload was bigger than this are dropped, not kept.
_POOL_MAX_BYTES = 1 << 20

CARRIED = (
    "None, bool, int (64-bit), float, str, bytes, list, dict, tuple, set, frozenset, "
    "datetime, date, time, timedelta, UUID, Decimal"
)
_HOW_TO_REGISTER = "or register the type on every member with peergrid.register_type(cls, code=...)"

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]


class _Pools(threading.local):
    """Per thread: free packers and unpackers for nested payloads, and the nesting depth."""

    def __init__(self) -> None:
        self.depth = 0
        self.packers: list[Any] = []
        self.unpackers: list[Any] = []


_pools = _Pools()


def new_packer() -> Any:
    """A packer for the default serializer: extension values through ``encode_extension``.

    ``strict_types`` makes a subclass of a plain type (a namedtuple, an IntEnum, an
    OrderedDict) reach ``encode_extension`` rather than being packed as its base type, so a
    registered subclass keeps its type; an unregistered one is carried as its base type."""
    return msgpack.Packer(use_bin_type=True, strict_types=True, default=encode_extension)


def _enter() -> None:
    if _pools.depth >= MAX_DEPTH:
        raise SerializationError(
            f"extension values (tuples, sets, registered types) nest more than {MAX_DEPTH} deep"
        )
    _pools.depth += 1


def pack_nested(value: object) -> bytes:
    """The msgpack of ``value``, packed from inside a packer's ``default`` callback."""
    _enter()
    try:
        packers = _pools.packers
        packer = packers.pop() if packers else new_packer()
        data: bytes = packer.pack(value)  # on failure the packer is dropped with its half-buffer
    finally:
        _pools.depth -= 1
    if len(data) <= _POOL_MAX_BYTES:
        packers.append(packer)
    return data


def unpack_nested(data: bytes) -> Any:
    """The value of one whole msgpack object, unpacked from inside an ``ext_hook``."""
    _enter()
    try:
        unpackers = _pools.unpackers
        unpacker = (
            unpackers.pop()
            if unpackers
            else msgpack.Unpacker(
                raw=False, strict_map_key=False, ext_hook=decode_extension, max_buffer_size=0
            )
        )
        start = unpacker.tell()
        unpacker.feed(data)
        value = unpacker.unpack()  # on failure the unpacker is dropped with what it holds
        if unpacker.tell() - start != len(data):
            raise SerializationError("extension payload has bytes after its value")
    finally:
        _pools.depth -= 1
    if len(data) <= _POOL_MAX_BYTES:
        unpackers.append(unpacker)
    return value


# ---------------------------------------------------------------------- the built-in types
def _items(value: Any) -> bytes:
    return pack_nested(list(value))


def _list_of(data: bytes, what: str) -> list[Any]:
    items = unpack_nested(data)
    if type(items) is not list:
        raise SerializationError(f"malformed {what}: its payload is not an array")
    return items


def _fields(data: bytes, what: str, count: int) -> list[Any]:
    # Field types are checked by the constructors (datetime(2024, 1.5, 1) is a TypeError).
    fields = _list_of(data, what)
    if len(fields) != count:
        raise SerializationError(f"malformed {what}: {len(fields)} fields, not {count}")
    return fields


def _encode_tz(tz: datetime.tzinfo | None) -> object:
    if tz is None:
        return None
    if type(tz) is datetime.timezone:
        offset = tz.utcoffset(None)
        micros = offset // datetime.timedelta(microseconds=1)
        name = tz.tzname(None)
        return micros if name == datetime.timezone(offset).tzname(None) else [micros, name]
    if type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        return tz.key
    raise SerializationError(
        f"cannot serialize a datetime or time whose tzinfo is a {type(tz).__qualname__}: use "
        "datetime.timezone (fixed offsets, UTC) or zoneinfo.ZoneInfo(key), or convert to UTC"
    )


def _decode_tz(tz: object) -> datetime.tzinfo | None:
    if tz is None:
        return None
    if type(tz) is int:
        return datetime.timezone(datetime.timedelta(microseconds=tz))
    if type(tz) is list and len(tz) == 2 and type(tz[0]) is int and type(tz[1]) is str:
        return datetime.timezone(datetime.timedelta(microseconds=tz[0]), tz[1])
    if type(tz) is str:
        try:
            return zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise SerializationError(
                f"time zone {tz!r} is not known on this member (install tzdata?): {exc}"
            ) from exc
    raise SerializationError(f"malformed time zone {tz!r}")


def _encode_datetime(v: datetime.datetime) -> bytes:
    tz = _encode_tz(v.tzinfo)
    return pack_nested([v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold, tz])


def _decode_datetime(data: bytes) -> datetime.datetime:
    y, mo, d, h, mi, s, us, fold, tz = _fields(data, "datetime", 9)
    return datetime.datetime(y, mo, d, h, mi, s, us, tzinfo=_decode_tz(tz), fold=fold)


def _encode_time(v: datetime.time) -> bytes:
    return pack_nested([v.hour, v.minute, v.second, v.microsecond, v.fold, _encode_tz(v.tzinfo)])


def _decode_time(data: bytes) -> datetime.time:
    h, mi, s, us, fold, tz = _fields(data, "time", 6)
    return datetime.time(h, mi, s, us, tzinfo=_decode_tz(tz), fold=fold)


def _decode_date(data: bytes) -> datetime.date:
    year, month, day = _fields(data, "date", 3)
    return datetime.date(year, month, day)


def _decode_timedelta(data: bytes) -> datetime.timedelta:
    days, seconds, micros = _fields(data, "timedelta", 3)
    if type(days) is not int or type(seconds) is not int or type(micros) is not int:
        raise SerializationError(f"malformed timedelta: {[days, seconds, micros]!r}")  # floats pass
    return datetime.timedelta(days=days, seconds=seconds, microseconds=micros)


def _decode_uuid(data: bytes) -> uuid.UUID:
    if len(data) != 16:
        raise SerializationError(f"malformed UUID: {len(data)} bytes, not 16")
    return uuid.UUID(bytes=data)


def _encode_decimal(v: decimal.Decimal) -> bytes:
    if v.is_snan():
        raise SerializationError("cannot serialize a signaling NaN Decimal: store Decimal('NaN')")
    return str(v).encode("ascii")


def _decode_decimal(data: bytes) -> decimal.Decimal:
    try:
        value = decimal.Decimal(data.decode("ascii"))
    except (UnicodeDecodeError, ArithmeticError) as exc:
        raise SerializationError(f"malformed Decimal {data[:40]!r}") from exc
    if value.is_snan():  # it raises on ==, and on hash in a set: never hand one out
        raise SerializationError("malformed Decimal: a signaling NaN")
    return value


_BUILTIN: dict[type, tuple[int, Encoder, Decoder]] = {
    tuple: (1, _items, lambda d: tuple(_list_of(d, "tuple"))),
    set: (2, _items, lambda d: set(_list_of(d, "set"))),
    frozenset: (3, _items, lambda d: frozenset(_list_of(d, "frozenset"))),
    datetime.datetime: (4, _encode_datetime, _decode_datetime),
    datetime.date: (5, lambda v: pack_nested([v.year, v.month, v.day]), _decode_date),
    datetime.time: (6, _encode_time, _decode_time),
    datetime.timedelta: (7, lambda v: pack_nested([v.days, v.seconds, v.microseconds]), _decode_timedelta),
    uuid.UUID: (8, lambda v: v.bytes, _decode_uuid),
    decimal.Decimal: (9, _encode_decimal, _decode_decimal),
}


# ---------------------------------------------------------------------- the registry
@dataclasses.dataclass(frozen=True)
class _Registered:
    """One carried type: its code and its functions to and from the extension payload."""

    cls: type
    code: int
    to_payload: Callable[[Any], bytes]
    from_payload: Callable[[bytes], Any]


def _user_entry(cls: type, code: int, encode: Encoder, decode: Decoder) -> _Registered:
    """A registered type: the user's functions, between its instances and a carried value."""

    def to_payload(value: object) -> bytes:
        try:
            plain = encode(value)
        except PeerGridError:
            raise
        except Exception as exc:  # the user's encoder: any failure is theirs to see
            raise SerializationError(
                f"the encoder registered for {_name(cls)} raised {type(exc).__name__}: {exc}"
            ) from exc
        return pack_nested(plain)

    def from_payload(data: bytes) -> Any:
        plain = unpack_nested(data)
        try:
            return decode(plain)
        except PeerGridError:
            raise
        except Exception as exc:  # the user's decoder, on bytes from anywhere
            raise SerializationError(
                f"cannot decode a stored {_name(cls)} (extension code {code}): its decoder raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    return _Registered(cls, code, to_payload, from_payload)


# Replaced whole (copy on write, under _lock) so that readers never take a lock.
_by_type: dict[type, _Registered] = {cls: _Registered(cls, *spec) for cls, spec in _BUILTIN.items()}
_by_code: dict[int, _Registered] = {entry.code: entry for entry in _by_type.values()}
_lock = threading.Lock()

#: Types msgpack packs itself (or that are refused as registrations for another reason).
_NATIVE = (type(None), bool, int, float, str, bytes, bytearray, memoryview, list, dict)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_type(
    cls: type,
    *,
    code: int,
    encode: Encoder | None = None,
    decode: Decoder | None = None,
) -> None:
    """Let the default (msgpack) serializer carry instances of ``cls``, as extension ``code``.

    Register before storing or reading such values, with the same code on every member
    (and in every process that reads the map's store): the registry is per process,
    shared by every ``Grid`` in it, and usable before any is created. A member that
    lacks a registration cannot decode the values (``SerializationError``).

    ``encode(instance)`` returns any value the serializer carries (other registered
    types included); ``decode(value)`` rebuilds the instance from it. Both may be left
    out for:

    - a dataclass: its ``init`` fields by name, rebuilt with ``cls(**fields)`` (a field
      with ``init=False`` is not carried: ``__init__``/``__post_init__`` recompute it;
      a new field with a default keeps older entries readable);
    - an ``enum.Enum`` (``IntEnum``, ``StrEnum``, ``Flag`` too): its ``value``, rebuilt
      with ``cls(value)``;
    - a namedtuple: its fields by name, rebuilt with ``cls(**fields)``.

    Exactly ``cls`` is matched: a subclass needs a registration of its own. Registering
    the same class with the same code again replaces its functions.

    Raises ``ConfigError`` when ``code`` is not an int from 32 to 127 (0-31 are
    peergrid's own), when it is taken by another type or ``cls`` has another code, when
    ``cls`` is a type the serializer already carries, or when ``encode``/``decode`` are
    missing for a class that is not a dataclass, enum or namedtuple.
    """
    global _by_type, _by_code
    if not isinstance(cls, type):
        raise ConfigError(f"register_type() takes a class, not {cls!r}")
    if isinstance(code, bool) or not isinstance(code, int) or not FIRST_USER_CODE <= code <= LAST_CODE:
        raise ConfigError(
            f"register_type({cls.__qualname__}, code={code!r}): the code must be an int from "
            f"{FIRST_USER_CODE} to {LAST_CODE} (0-{FIRST_USER_CODE - 1} are peergrid's own), the "
            "same on every member"
        )
    if cls in _NATIVE or cls in _BUILTIN or cls in (msgpack.ExtType, msgpack.Timestamp):
        raise ConfigError(
            f"register_type({cls.__qualname__}): the serializer carries {cls.__qualname__} already"
        )
    encode, decode = _functions(cls, encode, decode)
    with _lock:
        taken = _by_code.get(code)
        if taken is not None and taken.cls is not cls:
            raise ConfigError(
                f"register_type({cls.__qualname__}, code={code}): code {code} is registered for "
                f"{_name(taken.cls)} already; choose another code (and use it on every member)"
            )
        known = _by_type.get(cls)
        if known is not None and known.code != code:
            raise ConfigError(
                f"register_type({cls.__qualname__}, code={code}): {_name(cls)} is registered with "
                f"code {known.code} already; a type has one code, the same on every member"
            )
        entry = _user_entry(cls, code, encode, decode)
        _by_type = {**_by_type, cls: entry}
        _by_code = {**_by_code, code: entry}


def _functions(cls: type, encode: Encoder | None, decode: Decoder | None) -> tuple[Encoder, Decoder]:
    """The given encode/decode, or the ones inferred for a dataclass, enum or namedtuple."""
    if encode is not None and decode is not None:
        if not callable(encode) or not callable(decode):
            raise ConfigError(f"register_type({cls.__qualname__}): encode and decode must be callables")
        return encode, decode
    if encode is not None or decode is not None:
        raise ConfigError(
            f"register_type({cls.__qualname__}): give both encode= and decode=, or neither (for a "
            "dataclass, enum or namedtuple)"
        )
    if issubclass(cls, enum.Enum):
        return (lambda member: member.value), cls
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls) if f.init)
        return (lambda v: {n: getattr(v, n) for n in names}), lambda fields: cls(**_fields_of(cls, fields))
    if issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple):
        return (lambda v: v._asdict()), lambda fields: cls(**_fields_of(cls, fields))
    raise ConfigError(
        f"register_type({cls.__qualname__}): give encode= (an instance to a value the serializer "
        "carries) and decode= (that value back to an instance); they are inferred only for "
        "dataclasses, enums and namedtuples"
    )


def _fields_of(cls: type, fields: object) -> dict[str, Any]:
    if type(fields) is not dict or not all(type(k) is str for k in fields):
        raise SerializationError(f"malformed {_name(cls)}: {fields!r:.80} is not a map of field names")
    return fields


# ---------------------------------------------------------------------- msgpack's callbacks
def encode_extension(value: object) -> object:
    """The packer's ``default``: an extension value for a registered (or built-in) type, the
    plain base value of an unregistered subclass of a carried type, else ``SerializationError``."""
    entry = _by_type.get(type(value))
    if entry is not None:
        return msgpack.ExtType(entry.code, entry.to_payload(value))
    return _as_base_type(value)


def _as_base_type(value: object) -> object:
    # An unregistered subclass reads back as its base type, equal to what was stored (as
    # before extension types: msgpack packed subclasses as their base). A namedtuple is a
    # tuple again, an IntEnum an int, an OrderedDict or defaultdict a dict.
    if isinstance(value, int) and not isinstance(value, bool):
        plain = int.__int__(value)
        if not -(2**63) <= plain < 2**64:
            raise SerializationError(f"integer {value} does not fit in 64 bits: store it as a str")
        return plain
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, bytes | bytearray):
        return bytes(memoryview(value))
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    for base in (tuple, set, frozenset):
        if isinstance(value, base):
            entry = _by_type[base]
            return msgpack.ExtType(entry.code, entry.to_payload(value))
    raise SerializationError(
        f"cannot serialize a value of type {_name(type(value))}: the default serializer carries "
        f"{CARRIED}; store it as one of those, {_HOW_TO_REGISTER}"
    )


def decode_extension(code: int, data: bytes) -> Any:
    """The unpacker's ``ext_hook``: the value of extension ``code``, or ``SerializationError``."""
    entry = _by_code.get(code)
    if entry is None:
        raise SerializationError(
            f"stored value holds extension type {code}, which no type is registered for on this "
            f"member: register it with peergrid.register_type(cls, code={code}) on every member"
            if code >= FIRST_USER_CODE
            else f"stored value holds extension type {code}, which this version of peergrid does "
            "not know (written by a newer member?)"
        )
    return entry.from_payload(data)
