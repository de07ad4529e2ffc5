"""Values keep their Python type through the default serializer: extension types, the
registration hook, old bytes, subclasses, hostile bytes; and through a cluster."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import decimal
import enum
import threading
import uuid
import zoneinfo
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import peergrid
from peergrid import MapConfig, NearCacheConfig
from peergrid.serialization import MsgpackSerializer
from peergrid.serialization.extensions import MAX_DEPTH
from peergrid.testing import cluster
from tests.conftest import wait_for
from tests.registered_types import Color, Level, Money, Pair, Point
from tests.strategies import typed_values, values

codec = MsgpackSerializer()


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (tzinfo, fold and Decimal digits too)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        pairs = [(k, next((j for j in b if j == k), object())) for k in a]
        return len(a) == len(b) and all(same(k, j) and same(a[k], b[j]) for k, j in pairs)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(x == y and same(x, y) for y in b) for x in a)
    if isinstance(a, Point):
        return same(dataclasses.astuple(a), dataclasses.astuple(b))
    if isinstance(a, datetime.datetime | datetime.time):
        return a == b and a.fold == b.fold and same_tz(a.tzinfo, b.tzinfo)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    return bool(a == b)


def same_tz(a: datetime.tzinfo | None, b: datetime.tzinfo | None) -> bool:
    if a is None or b is None:
        return a is b
    return type(a) is type(b) and a == b and a.tzname(None) == b.tzname(None)


def round_trip(value: object) -> Any:
    return codec.loads(codec.dumps(value))


# ---------------------------------------------------------------------- round trips
@given(value=typed_values)
@example(value=(1, (2, [3, (4,)])))
@example(value={(1, 2): frozenset({datetime.date(2024, 1, 1)}), "s": {uuid.UUID(int=7), Level.HIGH}})
def test_every_carried_type_round_trips_nested(value: object) -> None:
    assert same(round_trip(value), value)


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.UTC),
        datetime.datetime(
            2024, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=-3, microseconds=5), "X")
        ),
        datetime.time(23, 59, 59, 999999, tzinfo=datetime.timezone(datetime.timedelta(hours=5))),
        datetime.datetime.max,
        datetime.date.min,
        datetime.timedelta.min,
        decimal.Decimal("-0.00"),
        decimal.Decimal("-Infinity"),
        decimal.Decimal("1E+999999"),
        uuid.UUID(int=0),
        Money(-5, "EUR"),
    ],
    ids=repr,
)
def test_edge_values_round_trip(value: object) -> None:
    assert same(round_trip(value), value)


def test_a_decimal_nan_round_trips_and_a_signaling_one_is_refused() -> None:
    assert round_trip(decimal.Decimal("NaN")).is_qnan()
    with pytest.raises(peergrid.SerializationError, match="signaling"):
        codec.dumps(decimal.Decimal("sNaN"))
    with pytest.raises(peergrid.SerializationError, match="signaling"):
        codec.loads(msgpack.packb(msgpack.ExtType(9, b"sNaN")))


def test_fixed_offset_and_zoneinfo_zones_are_kept_other_tzinfos_refused() -> None:
    zone = zoneinfo.ZoneInfo("Europe/Paris")
    assert round_trip(datetime.datetime(2024, 7, 1, tzinfo=zone)).tzinfo is zone
    assert round_trip(datetime.datetime(2024, 7, 1, tzinfo=datetime.UTC)).tzinfo is datetime.UTC

    class Custom(datetime.tzinfo):
        def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
            return datetime.timedelta(0)

    with pytest.raises(peergrid.SerializationError, match=r"Custom.*zoneinfo"):
        codec.dumps(datetime.datetime(2024, 1, 1, tzinfo=Custom()))
    with open(zoneinfo.TZPATH[0] + "/Europe/Paris", "rb") as file:
        keyless = zoneinfo.ZoneInfo.from_file(file)
    with pytest.raises(peergrid.SerializationError, match="ZoneInfo"):
        codec.dumps(datetime.datetime(2024, 1, 1, tzinfo=keyless))


# ---------------------------------------------------------------------- old bytes
@given(value=values)
def test_plain_values_encode_as_they_always_did(value: object) -> None:
    """Plain values are plain msgpack, byte for byte, and old bytes decode to the same types."""
    old = msgpack.packb(value, use_bin_type=True)
    assert codec.dumps(value) == old
    assert same(codec.loads(old), msgpack.unpackb(old, raw=False, strict_map_key=False))


def test_tuples_stored_before_extension_types_still_read_as_lists() -> None:
    old = msgpack.packb({"t": (1, (2, 3))}, use_bin_type=True)  # what the old serializer wrote
    assert same(codec.loads(old), {"t": [1, [2, 3]]})


# ---------------------------------------------------------------------- subclasses
def test_registered_subclasses_of_plain_types_keep_their_type() -> None:
    for value in (Level.HIGH, Pair(1, (2,)), Color.BLUE, [Level.LOW, {"p": Pair("a", None)}]):
        assert same(round_trip(value), value)


def test_unregistered_subclasses_of_carried_types_read_back_as_the_base_type() -> None:
    class Plain(enum.IntEnum):
        A = 7

    class Name(enum.StrEnum):
        BOB = "bob"

    class Text(str):
        pass

    class Ratio(float):
        pass

    Row = collections.namedtuple("Row", "a b")
    cases = [
        (Plain.A, 7),
        (Name.BOB, "bob"),
        (Text("hi"), "hi"),
        (Ratio(0.5), 0.5),
        (Row(1, [2]), (1, [2])),
        (collections.OrderedDict(b=1, a=2), {"b": 1, "a": 2}),
        (collections.defaultdict(list, {"k": [1]}), {"k": [1]}),
        (collections.Counter("aab"), {"a": 2, "b": 1}),
        (bytearray(b"xy"), b"xy"),
    ]
    for value, plain in cases:
        assert same(round_trip(value), plain), value
        assert round_trip(value) == value  # equal to what was stored, never another value


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (enum.Enum("Loose", "A").A, "Loose"),
        (dataclasses.make_dataclass("Unregistered", ["x"])(1), "Unregistered"),
        (dataclasses.make_dataclass("Child", [], bases=(Point,), frozen=True)(1), "Child"),
        (type("Stamp", (datetime.datetime,), {})(2024, 1, 1), "Stamp"),
        (complex(1, 2), "complex"),
    ],
    ids=repr,
)
def test_types_not_registered_are_refused_saying_how_to_register(value: object, named: str) -> None:
    with pytest.raises(peergrid.SerializationError, match=rf"{named}.*register_type"):
        codec.dumps({"nested": [value]})
    assert codec.loads(codec.dumps("ok")) == "ok"  # nothing half-packed is left behind


# ---------------------------------------------------------------------- registration
def test_a_dataclass_gains_a_field_with_a_default_and_old_entries_still_read() -> None:
    @dataclasses.dataclass
    class Account:
        a: int
        b: str = "new"

    peergrid.register_type(Account, code=110)
    written_before_b = msgpack.packb(msgpack.ExtType(110, msgpack.packb({"a": 1})))
    assert codec.loads(written_before_b) == Account(1, "new")
    assert round_trip(Account(2, "x")) == Account(2, "x")
    with pytest.raises(peergrid.SerializationError, match="Account"):
        codec.loads(msgpack.packb(msgpack.ExtType(110, msgpack.packb({"a": 1, "gone": 2}))))
    with pytest.raises(peergrid.SerializationError, match="Account"):
        codec.loads(msgpack.packb(msgpack.ExtType(110, msgpack.packb([1]))))


def test_registering_again_with_the_same_code_is_allowed() -> None:
    peergrid.register_type(Point, code=100)
    assert same(round_trip(Point(1, 2)), Point(1, 2))


@pytest.mark.parametrize(
    ("cls", "options", "says"),
    [
        (Point, {"code": 5}, "from 32 to 127"),
        (Point, {"code": 128}, "from 32 to 127"),
        (Point, {"code": True}, "from 32 to 127"),
        (Point, {"code": 101}, "registered for tests.registered_types.Color"),
        (Point, {"code": 109}, "registered with code 100"),
        (tuple, {"code": 109}, "carries tuple already"),
        (int, {"code": 109}, "carries int already"),
        (datetime.datetime, {"code": 109}, "carries datetime already"),
        (complex, {"code": 109}, "give encode="),
        (complex, {"code": 109, "encode": str}, "both encode= and decode="),
        (Point(1), {"code": 109}, "takes a class"),
    ],
)
def test_bad_registrations_are_config_errors_saying_what_to_do(cls: Any, options: Any, says: str) -> None:
    with pytest.raises(peergrid.ConfigError, match=says):
        peergrid.register_type(cls, **options)


def test_a_failing_encoder_or_decoder_is_a_serialization_error() -> None:
    class Broken:
        pass

    peergrid.register_type(Broken, code=111, encode=lambda b: 1 / 0, decode=lambda v: 1 / 0)
    with pytest.raises(peergrid.SerializationError, match=r"encoder registered for .*Broken"):
        codec.dumps([Broken()])
    with pytest.raises(peergrid.SerializationError, match=r"decode a stored .*Broken"):
        codec.loads(msgpack.packb(msgpack.ExtType(111, msgpack.packb(1))))


# ---------------------------------------------------------------------- hostile bytes
@pytest.mark.parametrize("code", [0, 10, 31, 32, 127])
def test_an_unknown_extension_code_is_a_serialization_error(code: int) -> None:
    with pytest.raises(peergrid.SerializationError, match=f"extension type {code}"):
        codec.loads(msgpack.packb([1, msgpack.ExtType(code, b"")]))


@given(code=st.integers(0, 127), payload=st.binary(max_size=40) | values.map(msgpack.packb))
def test_any_payload_under_any_code_decodes_or_raises_serialization_error(code: int, payload: bytes) -> None:
    with contextlib.suppress(peergrid.SerializationError):
        codec.loads(msgpack.packb({"v": msgpack.ExtType(code, payload)}))


@given(data=st.binary(max_size=60))
def test_random_bytes_decode_or_raise_serialization_error(data: bytes) -> None:
    with contextlib.suppress(peergrid.SerializationError):
        codec.loads(data)


@pytest.mark.parametrize(
    ("codes", "payload"),
    [
        ((1, 2, 3), msgpack.packb("not an array")),  # as a tuple, a str would be its letters
        ((2, 3), msgpack.packb([[1], [2]])),  # a set of lists: unhashable
        ((1, 2, 3), msgpack.packb([1]) + b"\x01"),  # bytes after the value
        ((1, 2, 3), msgpack.packb([1, 2])[:-1]),  # cut short
    ],
)
def test_malformed_container_payloads_are_refused(codes: tuple[int, ...], payload: bytes) -> None:
    for code in codes:
        with pytest.raises(peergrid.SerializationError):
            codec.loads(msgpack.packb(msgpack.ExtType(code, payload)))
    assert round_trip((1, {2})) == (1, {2})  # the pooled unpackers are still sound


@pytest.mark.parametrize(
    ("code", "fields"),
    [
        (4, [2024, 13, 1, 0, 0, 0, 0, 0, None]),
        (4, [2024, 1, 1, 0, 0, 0, 0, 0, "No/Such_Zone"]),
        (4, [2024, 1, 1, 0, 0, 0, 0, 0, "../../etc/passwd"]),
        (4, [2024, 1, 1, 0, 0, 0, 0, 0, 1.5]),
        (4, [2024, 1, 1]),
        (5, [2024, 1, 1.0]),
        (6, [25, 0, 0, 0, 0, None]),
        (7, [10**10, 0, 0]),
    ],
)
def test_malformed_dates_and_times_are_refused(code: int, fields: list[object]) -> None:
    with pytest.raises(peergrid.SerializationError):
        codec.loads(msgpack.packb(msgpack.ExtType(code, msgpack.packb(fields))))


def test_nesting_is_bounded_and_hostile_depth_cannot_exhaust_a_small_thread_stack() -> None:
    deep: object = 1
    for _ in range(MAX_DEPTH):
        deep = (deep,)
    assert round_trip(deep) == deep
    with pytest.raises(peergrid.SerializationError, match="nest more than"):
        codec.dumps((deep,))
    crafted = msgpack.packb(1)
    for _ in range(10 * MAX_DEPTH):
        crafted = msgpack.packb(msgpack.ExtType(1, crafted))
    outcome: list[object] = []

    def decode() -> None:
        try:
            codec.loads(crafted)
        except peergrid.SerializationError as exc:
            outcome.append(exc)

    size = threading.stack_size(512 * 1024)
    try:
        thread = threading.Thread(target=decode)
        thread.start()
    finally:
        threading.stack_size(size)
    thread.join(10)
    assert len(outcome) == 1
    assert "nest more than" in str(outcome[0])


def test_codecs_are_safe_to_share_between_threads() -> None:
    value = {"t": (1, {2}, [Point(3, label=(4,))]), "when": datetime.date(2024, 1, 1)}
    failures: list[object] = []

    def work() -> None:
        failures.extend(value for _ in range(300) if not same(round_trip(value), value))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []


# ---------------------------------------------------------------------- through a cluster
SAMPLES: dict[str, object] = {
    "tuple": (1, ("a", b"b"), [2.5, None]),
    "set": {1, "two", (3, 4)},
    "frozenset": frozenset({Level.LOW, datetime.date(2024, 2, 29)}),
    "datetime-naive": datetime.datetime(2024, 2, 29, 12, 30, 1, 5),
    "datetime-utc": datetime.datetime(2024, 2, 29, 12, tzinfo=datetime.UTC),
    "datetime-zone": datetime.datetime(2024, 2, 29, 12, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")),
    "date": datetime.date(1999, 12, 31),
    "time": datetime.time(8, 15, tzinfo=datetime.timezone(datetime.timedelta(hours=-7))),
    "timedelta": datetime.timedelta(days=2, seconds=3, microseconds=4),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "decimal": decimal.Decimal("19.99"),
    "dataclass": Point(1, 2, label={"nested": (Color.RED,)}),
    "enum": Color.BLUE,
    "intenum": Level.HIGH,
    "namedtuple": Pair(Money(100, "USD"), None),
    "list-stays-a-list": [1, [2]],
}


def keys_owned_by(grid: peergrid.Grid, owner: peergrid.Grid, count: int) -> list[str]:
    found, i = [], 0
    while len(found) < count:
        if grid.owner_of(f"k{i}").uuid == owner.uuid:
            found.append(f"k{i}")
        i += 1
    return found


def test_each_type_written_through_one_member_reads_back_through_another(api) -> None:
    near = {"near": MapConfig(near_cache=NearCacheConfig(max_entries=100, max_staleness=1.0))}
    with cluster(2, maps=near) as (writer, reader):
        keys = dict(zip(SAMPLES, keys_owned_by(reader, writer, len(SAMPLES)), strict=True))
        for map_name in ("plain", "near"):
            api.map(writer, map_name).put_all({keys[kind]: value for kind, value in SAMPLES.items()})
        plain, cached_map = api.map(reader, "plain"), api.map(reader, "near")
        for kind, value in SAMPLES.items():
            assert same(plain.get(keys[kind]), value), kind  # a remote get
            assert same(api.map(writer, "plain").get(keys[kind]), value), kind  # owner-local
        got = plain.get_all(list(keys.values()))
        assert all(same(got[keys[kind]], value) for kind, value in SAMPLES.items())
        wait_for(lambda: len(reader._node.maps.near_caches["near"].leases) == 1, 5, message="near lease")
        for kind, value in SAMPLES.items():
            assert same(cached_map.get(keys[kind]), value), kind  # a miss, then kept
        hits = cached_map.local_stats().near_cache_hits
        for kind, value in SAMPLES.items():
            assert same(cached_map.get(keys[kind]), value), kind  # a near-cache hit
        assert cached_map.local_stats().near_cache_hits == hits + len(SAMPLES)


def test_entry_listeners_receive_typed_values(api) -> None:
    with cluster(2) as (writer, reader):
        seen: list[peergrid.EntryEvent] = []
        api.map(reader, "ev").add_entry_listener(on_added=seen.append, on_updated=seen.append)
        key = keys_owned_by(reader, writer, 1)[0]
        api.map(writer, "ev").put(key, SAMPLES["tuple"])
        api.map(writer, "ev").put(key, SAMPLES["dataclass"])
        wait_for(lambda: len(seen) == 2, message="two events")
        assert same(seen[0].value, SAMPLES["tuple"])
        assert same(seen[1].value, SAMPLES["dataclass"])
        assert same(seen[1].old_value, SAMPLES["tuple"])


def test_a_cached_function_returns_a_tuple_on_a_miss_and_on_a_hit(grids3: Any, name: str) -> None:
    calls: list[int] = []

    def body(x: int) -> tuple[int, datetime.date, frozenset[int]]:
        calls.append(x)
        return (x, datetime.date(2024, 1, x), frozenset({x}))

    first, second = (grid.cached(name)(body) for grid in grids3[:2])
    miss = first(3)
    hit = second(3)
    assert calls == [3]
    assert same(miss, (3, datetime.date(2024, 1, 3), frozenset({3})))
    assert same(hit, miss)
    assert second.cache_info().hits == 1
