"""Fuzz every servicer method of a live member: generated protobuf messages and raw bytes.

Messages are generated from the message descriptors (every field, random
values including huge, negative, NaN and garbage), biased towards values that
get past the first checks (the right cluster name, partitions in range,
consistent frame columns), so the deeper paths are reached too. Random bytes
go through a channel with identity serializers.

After every request: the member still answers valid requests, no member
logged an error (a handler bug), and a request that was refused, or that
can only read, changed no data and no member list on any member.

CI runs ``FUZZ_CASES`` messages and a third as many raw byte strings
(``CI=true``: 1200 and 400); local runs are shorter.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from peergrid import Limits
from peergrid.partition import partition_of
from peergrid.protocol import KNOWN, Code, Op, Status
from peergrid.testing import TestCluster, cluster
from peergrid.transport import frames
from peergrid.transport._pb import map_pb2
from tests.rawgrpc import METHODS, Method, RawPeer, members_of

FUZZ_CASES = 1200 if os.environ.get("CI") else 200
RAW_CASES = FUZZ_CASES // 3

LIMITS = Limits(
    max_key_bytes=1024,
    max_value_bytes=16 * 1024,
    max_batch_ops=10,
    max_message_bytes=256 * 1024,
    max_transfer_bytes=64 * 1024,
)

# Requests that must change nothing, whatever they carry: they only read, or (Publish, Leave)
# would need a real member's uuid, which generated values never are.
READ_ONLY = {
    "Membership.Publish",
    "Membership.Heartbeat",
    "Membership.GetMembers",
    "Membership.SafeState",
    "Replication.Fetch",
    "Replication.Versions",
    "Replication.Release",  # a settled member holds no copy it may release
    "Events.Subscribe",
    "Events.MapStats",
    "Membership.Leave",  # the uuids generated are never a member's
}

U32 = 2**32 - 1
U64 = 2**64 - 1


class _Errors(logging.Handler):
    """Collects ERROR records of peergrid's and grpc's loggers: each is a handler bug."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Target:
    grids: TestCluster
    errors: _Errors
    peers: dict[str, RawPeer]

    @property
    def cluster(self) -> str:
        return str(self.grids.options["cluster"])


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    errors = _Errors()
    loggers = [logging.getLogger("peergrid"), logging.getLogger("grpc")]
    for logger in loggers:
        logger.addHandler(errors)
    try:
        with cluster(2, limits=LIMITS, backup_count=1) as grids:
            grids[0].get_map("m").put_all({f"k{i}": i for i in range(50)})
            assert grids.wait_until_safe()
            peers = {g.address: RawPeer(g.address) for g in grids}
            yield Target(grids, errors, peers)
            for peer in peers.values():
                peer.close()
            assert grids.wait_until_safe(), "the cluster did not settle after the fuzzing"
    finally:
        for logger in loggers:
            logger.removeHandler(errors)


# -- strategies --------------------------------------------------------------------------------

_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, U32),
    FieldDescriptor.TYPE_FIXED32: (0, U32),
    FieldDescriptor.TYPE_UINT64: (0, U64),
    FieldDescriptor.TYPE_FIXED64: (0, U64),
}


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (0, 1, low, high, high - 1, 2**31 - 1, 2**32 - 1) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INTS:
        return _ints(*_INTS[kind])
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=40)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.binary(min_size=1000, max_size=20_000))
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.one_of(st.sampled_from(list(field.enum_type.values_by_number)), _ints(-(2**31), 2**31 - 1))
    raise AssertionError(f"no strategy for field type {kind}")  # pragma: no cover


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` about 4 times in 5. (``one_of(good, good, good, good, bad)`` is not: hypothesis
    spreads its choices to find new cases, and a constant ``good`` soon looks exhausted.)"""
    return st.integers(0, 255).flatmap(lambda i: bad if i % 5 == 4 else good)


def _biased(field: FieldDescriptor, target: Target) -> st.SearchStrategy[Any] | None:
    """Values that get a request past the first checks, for some field names."""
    grids = target.grids
    version = grids[0]._node.membership.members.version
    uuids = [g.uuid for g in grids]
    addresses = [g.address for g in grids]
    name = field.name
    if name == "cluster":
        # Mostly right: a request of another cluster is refused before it reaches anything.
        return _mostly(st.just(target.cluster), st.text(max_size=10))
    if name in ("partition", "partitions"):
        return st.one_of(st.integers(0, 280), _ints(0, U32))
    if name == "partition_count":
        return _mostly(st.just(271), _ints(0, U32))
    if name == "serializer":
        return _mostly(st.sampled_from(["msgpack", "pickle"]), st.text(max_size=10))
    if name == "address":
        fixed = ["127.0.0.1:1", "0.0.0.0:1", "[::1]:1", "localhost:1", *addresses]
        return st.one_of(st.sampled_from(fixed), st.text(max_size=30))
    if name in ("table_version", "list_version", "version"):
        return _mostly(st.sampled_from([0, version, version + 1]), _ints(0, U64))
    if name == "sender":
        return st.one_of(st.sampled_from(uuids), st.text(max_size=40))
    if name == "codes":
        return st.one_of(st.sampled_from(sorted(KNOWN)), _ints(0, U32))
    if name in ("keys", "key", "effect_keys"):
        return st.one_of(st.binary(max_size=8).map(lambda b: b"s" + b), st.binary(max_size=2000))
    if name in ("maps", "map"):
        return st.one_of(st.sampled_from(["m", "fuzz", ""]), st.text(max_size=300))
    if name in ("ttls",):
        # No short positive TTLs: an entry expiring mid-test would look like a change.
        return st.one_of(st.sampled_from([0.0, -1.0, math.nan, math.inf, 1e9]), st.floats(max_value=0.0))
    return None


def field_values(field: FieldDescriptor, target: Target, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        one = messages(field.message_type, target, depth + 1)
    else:
        one = _biased(field, target)
        if one is None:
            one = _scalar(field)
    if field.is_repeated:
        return st.lists(one, max_size=12 if depth == 0 else 4)
    return one


def messages(descriptor: Descriptor, target: Target, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of this type: each field absent, or any value its type allows."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    fields = {f.name: field_values(f, target, depth) for f in descriptor.fields}
    required = {name: fields.pop(name) for name in ("cluster",) if name in fields}
    return st.fixed_dictionaries(required, optional=fields).map(lambda kwargs: cls(**kwargs))


@st.composite
def consistent_frames(draw: st.DrawFn, target: Target) -> map_pb2.Frame:
    """Frames whose columns mostly agree and whose ops are mostly valid, so they reach storage."""
    version = target.grids[0]._node.membership.members.version
    fields = map_pb2.Frame.DESCRIPTOR.fields_by_name
    maps = draw(
        st.lists(_mostly(st.sampled_from(["m", "fuzz"]), st.text(max_size=300)), min_size=1, max_size=3)
    )
    frame = map_pb2.Frame(
        id=draw(_ints(0, U64)),
        cluster=draw(_mostly(st.just(target.cluster), st.text(max_size=5))),
        table_version=draw(_mostly(st.just(version), _ints(0, U64))),
        sender=draw(st.text(max_size=40)),
        maps=maps,
    )
    count = draw(st.integers(0, 12))
    columns = {
        "codes": _mostly(st.sampled_from(sorted(KNOWN)), _ints(0, U32)),
        "partitions": _mostly(st.integers(0, 270), _ints(0, U32)),
        "map_index": _mostly(st.integers(0, len(maps) - 1), _ints(0, U32)),
        "keys": _mostly(st.binary(min_size=1, max_size=8).map(lambda b: b"s" + b), _scalar(fields["keys"])),
        "values": _scalar(fields["values"]),
        "expects": _scalar(fields["expects"]),
        "ttls": _mostly(st.sampled_from([0.0, 1e9]), _biased(fields["ttls"], target)),
        "versions": _mostly(st.integers(0, 5), _ints(0, U64)),
    }
    for name, one in columns.items():
        length = draw(_mostly(st.just(count), st.sampled_from([0, count + 1])))
        getattr(frame, name).extend(draw(st.lists(one, min_size=length, max_size=length)))
    return frame


_USER_CODES = sorted(KNOWN - {Code.BACKUP, Code.RECOVER})


@st.composite
def mutated_frames(draw: st.DrawFn, target: Target) -> map_pb2.Frame:
    """Frames of valid map operations, then maybe one field of one op set to anything."""
    version = target.grids[0]._node.membership.members.version
    ops = []
    for _ in range(draw(st.integers(1, 8))):
        key = b"s" + draw(st.binary(min_size=1, max_size=6))
        ops.append(
            Op(
                draw(st.sampled_from(_USER_CODES)),
                partition_of(key, 271),
                draw(st.sampled_from(["m", "fuzz"])),
                key,
                draw(st.binary(max_size=20)),
                draw(st.binary(max_size=4)),
            )
        )
    frame = frames.ops_to_pb(draw(_ints(0, U64)), target.cluster, version, "fuzzer", ops)
    if draw(st.booleans()):
        fields = map_pb2.Frame.DESCRIPTOR.fields_by_name
        name = draw(st.sampled_from(["codes", "partitions", "map_index", "keys", "values", "expects"]))
        column = getattr(frame, name)
        if len(column):
            column[draw(st.integers(0, len(column) - 1))] = draw(_scalar(fields[name]))
    return frame


def requests(method: Method, target: Target) -> st.SearchStrategy[Any]:
    one = messages(method.request, target)
    if method.request.full_name == "peergrid.v1.Frame":
        one = st.one_of(one, consistent_frames(target), mutated_frames(target))
    if method.client_streaming:
        return st.lists(one, min_size=0, max_size=3)
    return one


# -- checks ------------------------------------------------------------------------------------


def stable_data(grids: TestCluster) -> dict[str, Any]:
    """Every member's copies (versions and entries), leaving out entries that expire soon."""
    horizon = time.time() + 3600
    state = {}
    for grid in grids:
        copies = {}
        for p, part in enumerate(grid._node.manager.parts):
            if part is None:
                continue
            entries = {
                (name, key): value
                for name, store in part.maps.items()
                for key, value, expire_at in store.items()
                if not 0 < expire_at < horizon
            }
            copies[p] = (part.version, entries)
        state[grid.uuid] = copies
    return state


def still_serving(target: Target) -> None:
    a, b = target.grids
    key = f"probe-{uuid.uuid4().hex[:8]}"
    a.get_map("fuzz-probe").set(key, 1)
    assert b.get_map("fuzz-probe").get(key) == 1
    assert b.get_map("fuzz-probe").delete(key)


def _accepted(name: str, answer: Any) -> bool:
    """Whether a request that got an answer may have changed data (a write that was applied)."""
    if name in READ_ONLY:
        return False
    if name in ("MapService.Execute", "MapService.Stream"):
        results = answer if isinstance(answer, list) else [answer]
        return any(Status.OK in r.statuses for r in results)
    if name == "Membership.Join":
        return bool(answer.status == 0)  # ACCEPTED
    return True  # Publish, Install: a valid one is applied


# A call that ended with one of these (a loaded machine) says nothing about the request's fate;
# still_serving() then checks the member is not wedged.
_UNKNOWN_OUTCOME = frozenset(
    {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE}
)


def exercise(
    target: Target,
    address: str,
    name: str,
    send: Callable[[RawPeer], Any],
    raw: bool,
    messages_sent: int = 1,
) -> None:
    grids = target.grids
    before_data, before_members = stable_data(grids), members_of(grids)
    errors_before = len(target.errors.records)
    code, details = grpc.StatusCode.OK, ""
    try:
        answer = send(target.peers[address])
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()
    assert code != grpc.StatusCode.UNKNOWN, f"{name}: a handler raised: {details}"
    if code in _UNKNOWN_OUTCOME or (
        name == "MapService.Stream" and code != grpc.StatusCode.OK and messages_sent > 1
    ):
        # The request may have been applied before the call gave up; or a frame stream was
        # refused at a later frame, after earlier ones were applied.
        changed = True
    else:
        changed = code == grpc.StatusCode.OK and not raw and _accepted(name, answer)
    event(f"{name}: {'applied' if changed and code == grpc.StatusCode.OK else code.name}")
    if code == grpc.StatusCode.OK and name.startswith("MapService") and not raw:
        for result in answer if isinstance(answer, list) else [answer]:
            for status in set(result.statuses):
                event(f"op status {status}")
    if not changed:
        assert stable_data(grids) == before_data, f"{name}: a refused request changed data"
        assert members_of(grids) == before_members, f"{name}: a refused request changed the members"
    still_serving(target)
    new_errors = target.errors.records[errors_before:]
    assert not new_errors, f"{name}: the member logged {[r.getMessage() for r in new_errors]}"


# -- the fuzz tests ---------------------------------------------------------------------------

_FUZZ_SETTINGS = settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.mark.timeout(900)
@_FUZZ_SETTINGS
@given(data=st.data())
def test_generated_messages_against_every_method(target: Target, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(METHODS)), label="method")
    method = METHODS[name]
    address = data.draw(st.sampled_from([g.address for g in target.grids]), label="member")
    request = data.draw(requests(method, target), label="request")
    sent = 1
    if method.client_streaming:
        sent = len(request)
        request = iter(request)
    exercise(target, address, name, lambda peer: peer.call(name, request, timeout=10), False, sent)


@pytest.mark.timeout(900)
@settings(_FUZZ_SETTINGS, max_examples=RAW_CASES)
@given(data=st.data())
def test_random_bytes_against_every_method(target: Target, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(METHODS)), label="method")
    address = data.draw(st.sampled_from([g.address for g in target.grids]), label="member")
    payload = st.one_of(st.binary(max_size=200), st.binary(min_size=1000, max_size=50_000))
    if METHODS[name].client_streaming:
        chunks = data.draw(st.lists(payload, max_size=3), label="messages")
        request: Any = iter(chunks)
    else:
        request = data.draw(payload, label="bytes")
    exercise(target, address, name, lambda peer: peer.call_bytes(name, request, timeout=10), True)


def test_every_method_is_fuzzed() -> None:
    # The fuzz draws from METHODS, built from the descriptors: a new RPC is covered without an edit.
    assert len(METHODS) >= 14
    assert {m.split(".")[0] for m in METHODS} == {"Membership", "MapService", "Replication", "Events"}
