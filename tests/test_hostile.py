"""Hostile requests, one path at a time: refused with the right status, nothing changed.

Each test speaks raw gRPC to a member of a real two-member cluster, as an
untrusted peer would, then checks that every member's data and member list
are exactly what they were, and that the member still serves.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from peergrid import Limits
from peergrid.multiget import Got, pack_keys
from peergrid.partition import partition_of
from peergrid.protocol import Code, Effect, Op, Status
from peergrid.serialization import encode_key
from peergrid.testing import TestCluster, cluster
from peergrid.transport import frames
from peergrid.transport._pb import common_pb2, events_pb2, map_pb2, membership_pb2, replication_pb2
from tests.conftest import wait_for
from tests.rawgrpc import METHODS, RawPeer, data_of, members_of

LIMITS = Limits(
    max_key_bytes=1024,
    max_value_bytes=16 * 1024,
    max_batch_ops=10,
    max_message_bytes=256 * 1024,
    max_transfer_bytes=64 * 1024,
    max_subscriptions=4,
    max_subscriptions_per_peer=2,
)


@pytest.fixture(scope="module")
def pair() -> Iterator[TestCluster]:
    with cluster(2, limits=LIMITS, backup_count=1) as grids:
        grids[0].get_map("m").put_all({f"k{i}": i for i in range(50)})
        assert grids.wait_until_safe()
        yield grids


@pytest.fixture
def unchanged(pair: TestCluster) -> Iterator[None]:
    """The test's requests change no data and no member list; the members still serve."""
    data, members = data_of(pair), members_of(pair)
    yield
    assert data_of(pair) == data
    assert members_of(pair) == members
    probe = f"probe-{uuid.uuid4().hex[:6]}"
    pair[0].get_map(probe).put("k", 1)
    assert pair[1].get_map(probe).get("k") == 1
    pair[0].get_map(probe).clear()


def cluster_name(grids: TestCluster) -> str:
    return str(grids.options["cluster"])


def puts(count: int, name: str = "m") -> list[Op]:
    ops = []
    for i in range(count):
        key = encode_key(f"hostile-{i}")
        ops.append(Op(Code.PUT, partition_of(key, 271), name, key, b"\x01"))
    return ops


def frame(grids: TestCluster, ops: list[Op], frame_id: int = 1) -> map_pb2.Frame:
    """A frame in a member's name (without TLS a peer can claim any uuid; a frame from a uuid that
    is no member is refused whole, which would hide what these tests look at)."""
    version = grids[0]._node.membership.members.version
    return frames.ops_to_pb(frame_id, cluster_name(grids), version, grids[1].uuid, ops)


def test_a_frame_from_no_member_is_refused_whole(pair: TestCluster, name: str) -> None:
    version = pair[0]._node.membership.members.version
    stranger = frames.ops_to_pb(1, cluster_name(pair), version, uuid.uuid4().hex, puts(3, name))
    with RawPeer(pair[0].address) as peer:
        answer = peer.call("MapService.Execute", stranger)
    assert set(answer.statuses) == {Status.RETRY}
    assert pair[1].get_map(name).size() == 0


def status_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


# -- frames ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["MapService.Stream", "MapService.Execute"])
@pytest.mark.parametrize(
    ("code", "status"), [(Code.GET, Status.ERROR), (Code.PUT, Status.INDETERMINATE)], ids=["read", "write"]
)
def test_an_op_that_fails_inside_the_member_is_answered_with_its_frame(
    pair: TestCluster, method: str, code: Code, status: Status, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An op whose future ends in an exception (a bug, a store's error not caught) is answered
    at once, and the frame's other ops with their results: the frame is not left unanswered
    until its caller's timeout resets the stream and everything on it. A read is answered
    ERROR; a write INDETERMINATE, as it may have been applied."""
    executor = pair[0]._node.executor
    run = executor.execute
    doomed = encode_key("doomed")

    def execute(op: Op, caller_version: int, sender: str = "", *where: int) -> object:
        if op.key != doomed:
            return run(op, caller_version, sender, *where)
        failed = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(failed.set_exception, RuntimeError("a bug"))
        return failed

    monkeypatch.setattr(executor, "execute", execute)
    other = encode_key("k1")
    ops = [
        Op(code, partition_of(doomed, 271), "m", doomed, b"\x01" if code == Code.PUT else b""),
        Op(Code.GET, partition_of(other, 271), "m", other),
    ]
    with RawPeer(pair[0].address) as peer:
        answer = peer.call(method, frame(pair, ops), timeout=5.0)
    [answer] = answer if isinstance(answer, list) else [answer]
    assert answer.statuses[0] == status
    assert "internal error" in answer.messages[0]
    assert len(answer.statuses) == 2
    assert answer.statuses[1] != Status.ERROR


def test_a_get_all_key_whose_lone_get_fails_inside_the_member_is_answered(
    pair: TestCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GET_MANY key that runs as a lone GET (a miss on a map with a store) and fails inside
    the member gets ERROR in the answer's statuses; the op is answered, not left waiting."""
    executor = pair[0]._node.executor
    run = executor.execute
    served = pair[0]._node.manager.readable
    doomed = next(
        key for i in range(1000) if served[partition_of(key := encode_key(f"doomed-{i}"), 271)] is not None
    )

    def execute(op: Op, caller_version: int, sender: str = "", *where: int) -> object:
        if op.code != Code.GET or op.key != doomed:
            return run(op, caller_version, sender, *where)
        failed = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(failed.set_exception, RuntimeError("a bug"))
        return failed

    monkeypatch.setattr(executor, "execute", execute)
    monkeypatch.setattr(executor._stores, "backed", lambda name: object())  # misses read through
    blob, header = pack_keys([doomed], [partition_of(doomed, 271)])
    op = Op(Code.GET_MANY, partition_of(doomed, 271), "m", blob, header)
    with RawPeer(pair[0].address) as peer:
        [answer] = peer.call("MapService.Stream", frame(pair, [op]), timeout=5.0)
    [result] = frames.results_from_pb(answer)[2]
    assert result.status == Status.OK
    assert list(Got(result.value, 1).statuses) == [Status.ERROR]


@pytest.mark.usefixtures("unchanged")
def test_a_unary_frame_over_max_batch_ops_is_refused_whole(pair: TestCluster) -> None:
    with RawPeer(pair[0].address) as peer:
        code = status_of(lambda: peer.call("MapService.Execute", frame(pair, puts(11))))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.usefixtures("unchanged")
def test_a_streamed_frame_over_max_batch_ops_gets_every_op_invalid(pair: TestCluster) -> None:
    with RawPeer(pair[0].address) as peer:
        [answer] = peer.call("MapService.Stream", frame(pair, puts(11)))
    assert list(answer.statuses) == [5] * 11  # Status.INVALID
    assert "max_batch_ops=10" in answer.messages[0]


@pytest.mark.usefixtures("unchanged")
def test_a_frame_with_more_backup_effects_than_max_batch_ops_is_refused(pair: TestCluster) -> None:
    effects = tuple(Effect(1, "m", b"sx", b"\x01") for _ in range(11))
    op = Op(Code.BACKUP, 0, "m", version=10**6, effects=effects)
    with RawPeer(pair[1].address) as peer:
        code = status_of(lambda: peer.call("MapService.Execute", frame(pair, [op])))
        [answer] = peer.call("MapService.Stream", frame(pair, [op]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert list(answer.statuses) == [5]


def test_a_frame_at_max_batch_ops_is_served(pair: TestCluster, name: str) -> None:
    # The refusals above are about the count, not a frame the test got wrong.
    with RawPeer(pair[0].address) as peer:
        answer = peer.call("MapService.Execute", frame(pair, puts(10, name)))
    assert set(answer.statuses) <= {0, 1}  # OK, or MOVED where the other member owns the key
    assert 0 in set(answer.statuses)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("method", ["MapService.Execute", "Membership.GetMembers", "Replication.Fetch"])
def test_garbage_instead_of_a_request_gets_invalid_argument(pair: TestCluster, method: str) -> None:
    # Not UNKNOWN with a server-side traceback: a peer's garbage is not this member's bug.
    with RawPeer(pair[0].address) as peer:
        code = status_of(lambda: peer.call_bytes(method, b"zf\xc4"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.usefixtures("unchanged")
def test_garbage_on_the_frame_stream_closes_it_with_invalid_argument(pair: TestCluster) -> None:
    with RawPeer(pair[0].address) as peer:
        code = status_of(lambda: peer.call_bytes("MapService.Stream", b"\xff\xfe not a frame"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# -- replication -------------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
def test_partition_lists_longer_than_the_partitions_are_refused(pair: TestCluster) -> None:
    name = cluster_name(pair)
    with RawPeer(pair[0].address) as peer:
        versions = replication_pb2.VersionsRequest(cluster=name, partitions=[1] * 272)
        release = replication_pb2.ReleaseRequest(cluster=name, list_version=1, partitions=[1] * 272)
        assert status_of(lambda: peer.call("Replication.Versions", versions)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        assert status_of(lambda: peer.call("Replication.Release", release)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("partition", [271, 2**32 - 1])
def test_fetching_a_partition_out_of_range_is_refused(pair: TestCluster, partition: int) -> None:
    request = replication_pb2.FetchRequest(cluster=cluster_name(pair), partition=partition)
    with RawPeer(pair[0].address) as peer:
        assert status_of(lambda: peer.call("Replication.Fetch", request)) == grpc.StatusCode.INVALID_ARGUMENT


def backup_partition(grids: TestCluster) -> int:
    """A partition member 1 holds as a backup, with entries."""
    manager = grids[1]._node.manager
    return next(
        p
        for p, part in enumerate(manager.parts)
        if part is not None and manager.table.replica_index(p, grids[1].uuid) == 1 and part.entry_count()
    )


def chunk(grids: TestCluster, partition: int, last: bool, size: int = 0) -> replication_pb2.PartitionChunk:
    entries = [map_pb2.Effect(kind=1, map="m", key=b"sforged", value=b"\x00" * size)] if size else []
    return replication_pb2.PartitionChunk(
        cluster=cluster_name(grids), partition=partition, version=10**9, entries=entries, last=last
    )


@pytest.mark.usefixtures("unchanged")
def test_an_install_without_its_last_chunk_installs_nothing(pair: TestCluster) -> None:
    p = backup_partition(pair)
    with RawPeer(pair[1].address) as peer:
        code = status_of(lambda: peer.call("Replication.Install", iter([chunk(pair, p, False, 10)])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.usefixtures("unchanged")
def test_an_install_mixing_partitions_installs_nothing(pair: TestCluster) -> None:
    p = backup_partition(pair)
    chunks = [chunk(pair, p, False, 10), chunk(pair, (p + 1) % 271, True, 10)]
    with RawPeer(pair[1].address) as peer:
        code = status_of(lambda: peer.call("Replication.Install", iter(chunks)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("partition", [271, 2**32 - 1])
def test_an_install_out_of_range_is_refused(pair: TestCluster, partition: int) -> None:
    with RawPeer(pair[1].address) as peer:
        code = status_of(lambda: peer.call("Replication.Install", iter([chunk(pair, partition, True)])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("unchanged")
def test_an_install_that_never_ends_is_cut_off_at_max_transfer_bytes(pair: TestCluster) -> None:
    p = backup_partition(pair)
    sent = itertools.count()

    def forever() -> Iterator[replication_pb2.PartitionChunk]:
        while True:
            next(sent)
            yield chunk(pair, p, False, 8 * 1024)

    with RawPeer(pair[1].address) as peer:
        code = status_of(lambda: peer.call("Replication.Install", forever(), timeout=30))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert next(sent) < 100  # cut off near 64 KiB, not at the deadline


# -- membership ----------------------------------------------------------------------------------


def join_request(grids: TestCluster, member: common_pb2.MemberInfo) -> membership_pb2.JoinRequest:
    return membership_pb2.JoinRequest(
        cluster=cluster_name(grids), member=member, partition_count=271, serializer="msgpack"
    )


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "member",
    [
        {"uuid": "a" * 32, "address": "127.0.0.1:1", "weight": float("nan")},
        {"uuid": "a" * 32, "address": "127.0.0.1:1", "weight": float("inf")},
        {"uuid": "a" * 32, "address": "127.0.0.1:1", "weight": -1.0},
        {"uuid": "a" * 32, "address": "127.0.0.1:1", "weight": 1e9},
        {"uuid": "", "address": "127.0.0.1:1"},
        {"uuid": "a.b", "address": "127.0.0.1:1"},
        {"uuid": "a" * 64, "address": "127.0.0.1:1"},
        {"uuid": "a" * 32, "address": "no-port"},
        {"uuid": "a" * 32, "address": "host:99999"},
        {"uuid": "a" * 32, "address": "host:\u00b2"},
    ],
)
def test_a_join_with_a_malformed_member_is_refused(pair: TestCluster, member: dict) -> None:
    request = join_request(pair, common_pb2.MemberInfo(**member))
    with RawPeer(pair[0].address) as peer:
        assert status_of(lambda: peer.call("Membership.Join", request)) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.usefixtures("unchanged")
def test_a_joiner_that_cannot_be_called_back_is_not_admitted(pair: TestCluster) -> None:
    master = pair[0]
    with RawPeer(master.address) as peer:
        # Nobody serves on port 1.
        nobody = common_pb2.MemberInfo(uuid="b" * 32, address="127.0.0.1:1")
        unreachable = peer.call("Membership.Join", join_request(pair, nobody))
        # Member 1 serves at this address, under another uuid.
        someone_else = common_pb2.MemberInfo(uuid="c" * 32, address=pair[1].address)
        impostor = peer.call("Membership.Join", join_request(pair, someone_else))
    assert unreachable.status == membership_pb2.JoinResponse.UNREACHABLE
    assert "127.0.0.1:1" in unreachable.reason
    assert impostor.status == membership_pb2.JoinResponse.REFUSED
    assert pair[1].uuid in impostor.reason


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("placement", "differs"),
    [
        (
            {"backup_count": 0, "async_backup_count": 0, "vnodes": 512},
            "backup_count differs: cluster {!r} uses 1, ",
        ),
        ({"backup_count": 1, "async_backup_count": 2, "vnodes": 512}, "async_backup_count differs"),
        ({"backup_count": 1, "async_backup_count": 0, "vnodes": 64}, "vnodes differs"),
    ],
)
def test_a_joiner_that_places_partitions_otherwise_is_refused_saying_how(
    pair: TestCluster, placement: dict, differs: str
) -> None:
    # Every member derives the partition table by itself: one that places replicas otherwise
    # would disagree with the others on who owns and who backs up each partition.
    request = join_request(pair, common_pb2.MemberInfo(uuid="d" * 32, address="127.0.0.1:1"))
    request.placement.CopyFrom(membership_pb2.Placement(**placement))
    for grid in pair:  # any member refuses, the master or not
        with RawPeer(grid.address) as peer:
            reply = peer.call("Membership.Join", request)
        assert reply.status == membership_pb2.JoinResponse.REFUSED
        assert differs.format(cluster_name(pair)) in reply.reason


@pytest.mark.usefixtures("unchanged")
def test_a_joiner_is_compared_on_the_terms_it_sends(pair: TestCluster) -> None:
    # A member from before the placement and liveness were sent: only its partition_count and
    # serializer are compared. Past the checks it is called back, and nobody serves at its address.
    nobody = common_pb2.MemberInfo(uuid="e" * 32, address="127.0.0.1:1")
    same = join_request(pair, nobody)
    placed = join_request(pair, nobody)
    placed.placement.CopyFrom(membership_pb2.Placement(backup_count=1, async_backup_count=0, vnodes=512))
    other = join_request(pair, nobody)
    other.partition_count = 64
    slower = join_request(pair, nobody)
    slower.liveness.CopyFrom(
        membership_pb2.Liveness(heartbeat_interval=1.0, failure_timeout=10.0, owner_lease=6.0)
    )
    quorate = join_request(pair, nobody)
    quorate.min_cluster_size = 1  # (the pair's: compared, and equal)
    stricter = join_request(pair, nobody)
    stricter.min_cluster_size = 3
    with RawPeer(pair[0].address) as peer:
        requests = (same, placed, other, slower, quorate, stricter)
        replies = [peer.call("Membership.Join", request) for request in requests]
    assert [reply.status for reply in replies] == [
        membership_pb2.JoinResponse.UNREACHABLE,
        membership_pb2.JoinResponse.UNREACHABLE,
        membership_pb2.JoinResponse.REFUSED,
        membership_pb2.JoinResponse.REFUSED,
        membership_pb2.JoinResponse.UNREACHABLE,
        membership_pb2.JoinResponse.REFUSED,
    ]
    assert "partition_count differs" in replies[2].reason
    assert "timing.failure_timeout differs" in replies[3].reason
    assert "timing.owner_lease differs" in replies[3].reason
    assert "min_cluster_size differs" in replies[5].reason


@pytest.mark.usefixtures("unchanged")
def test_a_member_list_from_an_unknown_master_is_not_adopted(pair: TestCluster) -> None:
    name = cluster_name(pair)
    forged = common_pb2.MemberList(
        version=10**6,
        master_uuid="f" * 32,
        members=[common_pb2.MemberInfo(uuid="f" * 32, address="127.0.0.1:1")],
        cluster=name,
    )
    with RawPeer(pair[1].address) as peer:
        publish = membership_pb2.PublishRequest(cluster=name, members=forged)
        assert status_of(lambda: peer.call("Membership.Publish", publish)) == (
            grpc.StatusCode.FAILED_PRECONDITION
        )
        # A list carried by a replication request is not adopted either (the answer is harmless).
        versions = replication_pb2.VersionsRequest(cluster=name, members=forged, partitions=[0])
        peer.call("Replication.Versions", versions)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("to", [0, 1])
def test_a_member_list_in_the_masters_name_is_not_adopted(pair: TestCluster, to: int) -> None:
    # A newer list naming a real member master, dropping the other one: what a peer (or a member
    # with a certificate) would send to remove a member. Not confirmed by the members that may
    # vouch for it (the master, a majority), it is adopted nowhere.
    name = cluster_name(pair)
    current = pair[0]._node.membership.members
    for master, kept in ((pair[0], pair[0]), (pair[1], pair[1])):
        forged = common_pb2.MemberList(
            version=current.version + 10,
            master_uuid=master.uuid,
            members=[common_pb2.MemberInfo(uuid=kept.uuid, address=kept.address, weight=1.0)],
            cluster=name,
            origin=current.origin,
        )
        with RawPeer(pair[to].address) as peer:
            peer.call("Membership.Publish", membership_pb2.PublishRequest(cluster=name, members=forged))
            versions = replication_pb2.VersionsRequest(cluster=name, members=forged, partitions=[0])
            assert status_of(lambda v=versions: peer.call("Replication.Versions", v)) is not None
        time.sleep(0.3)  # the publication is confirmed in the background: give it time to go wrong


@pytest.mark.usefixtures("unchanged")
def test_a_leave_in_another_members_name_is_refused(pair: TestCluster) -> None:
    name = cluster_name(pair)
    with RawPeer(pair[0].address) as peer:
        for final in (False, True):
            leave = membership_pb2.LeaveRequest(cluster=name, uuid=pair[1].uuid, final=final)
            assert status_of(lambda r=leave: peer.call("Membership.Leave", r)) is not None


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("problem", ["duplicate", "master-missing", "nan-weight", "empty"])
def test_a_malformed_member_list_is_refused(pair: TestCluster, problem: str) -> None:
    name = cluster_name(pair)
    a = common_pb2.MemberInfo(uuid=pair[0].uuid, address=pair[0].address)
    lists = {
        "duplicate": common_pb2.MemberList(version=99, master_uuid=a.uuid, members=[a, a]),
        "master-missing": common_pb2.MemberList(version=99, master_uuid="x" * 32, members=[a]),
        "nan-weight": common_pb2.MemberList(
            version=99,
            master_uuid=a.uuid,
            members=[common_pb2.MemberInfo(uuid=a.uuid, address=a.address, weight=float("nan"))],
        ),
        "empty": common_pb2.MemberList(version=99),
    }
    with RawPeer(pair[1].address) as peer:
        publish = membership_pb2.PublishRequest(cluster=name, members=lists[problem])
        assert status_of(lambda: peer.call("Membership.Publish", publish)) == grpc.StatusCode.INVALID_ARGUMENT


# -- names and uuids -----------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("length", [0, 256, 100_000])
def test_map_stats_of_a_name_no_map_can_have_are_refused(pair: TestCluster, length: int) -> None:
    request = events_pb2.MapStatsRequest(cluster=cluster_name(pair), map="x" * length)
    with RawPeer(pair[0].address) as peer:
        assert status_of(lambda: peer.call("Events.MapStats", request)) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.usefixtures("unchanged")
def test_map_stats_of_maps_nobody_used_are_zeros_and_create_nothing(pair: TestCluster) -> None:
    node = pair[0]._node
    known = set(node.counters)
    with RawPeer(pair[0].address) as peer:
        answers = [
            peer.call("Events.MapStats", events_pb2.MapStatsRequest(cluster=cluster_name(pair), map=f"n{i}"))
            for i in range(50)
        ]
    assert all(
        value == 0 for answer in answers for name, value in answer.values.items() if name != "backup_lag"
    )
    assert set(node.counters) == known


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("uuid_", ["", "a.b", "a" * 64, "a" * 100_000])
def test_heartbeats_and_leaves_naming_no_possible_member_are_refused(pair: TestCluster, uuid_: str) -> None:
    name = cluster_name(pair)
    with RawPeer(pair[0].address) as peer:
        heartbeat = membership_pb2.HeartbeatRequest(cluster=name, uuid=uuid_, list_version=1)
        leave = membership_pb2.LeaveRequest(cluster=name, uuid=uuid_, final=True)
        assert status_of(lambda: peer.call("Membership.Heartbeat", heartbeat)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        assert status_of(lambda: peer.call("Membership.Leave", leave)) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("problem", ["long map", "malformed sender"])
def test_frames_naming_no_possible_map_or_member_are_refused_whole(pair: TestCluster, problem: str) -> None:
    ops = puts(2, "x" * 256) if problem == "long map" else puts(2)
    request = frame(pair, ops)
    if problem == "malformed sender":
        request.sender = "not a uuid"
    with RawPeer(pair[0].address) as peer:
        answer = peer.call("MapService.Execute", request)
        [streamed] = peer.call("MapService.Stream", request)
    for result in (answer, streamed):
        assert list(result.statuses) == [5, 5]  # Status.INVALID
        assert "malformed frame" in result.messages[0]


@pytest.mark.usefixtures("unchanged")
def test_an_install_naming_no_possible_map_installs_nothing(pair: TestCluster) -> None:
    p = backup_partition(pair)
    last = chunk(pair, p, True, 10)
    last.entries[0].map = "x" * 256
    with RawPeer(pair[1].address) as peer:
        code = status_of(lambda: peer.call("Replication.Install", iter([last])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# -- event subscriptions ---------------------------------------------------------------------


def subscription(grids: TestCluster, **fields: object) -> events_pb2.SubscribeRequest:
    request = {"cluster": cluster_name(grids), "map": "m", "heartbeat_interval": 1.0, **fields}
    return events_pb2.SubscribeRequest(**request)  # type: ignore[arg-type]


def open_subscription(peer: RawPeer, request: events_pb2.SubscribeRequest) -> grpc.Call:
    """A subscription held open (its first heartbeat read); raises ``grpc.RpcError`` if refused."""
    method = METHODS["Events.Subscribe"]
    stub = peer.channel.unary_stream(
        method.path,
        request_serializer=events_pb2.SubscribeRequest.SerializeToString,
        response_deserializer=events_pb2.EventBatch.FromString,
    )
    call = stub(request, timeout=60)
    assert next(call).heartbeat
    return call


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "fields",
    [
        {"map": ""},
        {"map": "x" * 256},
        {"subscriber": "a.b"},
        {"heartbeat_interval": 0.0},  # the field left out
        {"heartbeat_interval": 0.01},  # below limits.min_heartbeat_interval
        {"heartbeat_interval": float("nan")},
        {"heartbeat_interval": 61.0},
    ],
    ids=lambda fields: "-".join(f"{k}={str(v)[:8]}" for k, v in fields.items()),
)
def test_malformed_subscriptions_are_refused(pair: TestCluster, fields: dict) -> None:
    with RawPeer(pair[0].address) as peer, pytest.raises(grpc.RpcError) as refused:
        open_subscription(peer, subscription(pair, **fields))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed subscription" in refused.value.details()


@pytest.mark.usefixtures("unchanged")
def test_subscriptions_over_the_caps_are_refused_and_closing_one_frees_its_place(pair: TestCluster) -> None:
    publisher = pair[0]._node.publisher
    calls = []

    def refusal(**fields: object) -> str:
        with pytest.raises(grpc.RpcError) as refused:
            open_subscription(peer, subscription(pair, **fields))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return str(refused.value.details())

    with RawPeer(pair[0].address) as peer:
        calls += [open_subscription(peer, subscription(pair)) for _ in range(2)]  # by address
        assert "limits.max_subscriptions_per_peer=2" in refusal()
        calls += [open_subscription(peer, subscription(pair, subscriber=s)) for s in ("a" * 32, "b" * 32)]
        assert "limits.max_subscriptions=4" in refusal(subscriber="c" * 32)
        calls.pop(0).cancel()
        wait_for(lambda: publisher.subscriptions() == 3, message="a cancelled subscription released")
        calls.append(open_subscription(peer, subscription(pair)))
        for call in calls:
            call.cancel()
        wait_for(lambda: publisher.subscriptions() == 0, message="every subscription released")
    assert not publisher.interested("m")


def test_a_frame_sent_to_a_members_earlier_self_is_refused(name: str) -> None:
    # A frame held up by a cut (in TCP retransmission) reaches its member after that member was
    # declared dead and joined again; its sender's call ended long before. Applied then, a LOCK
    # granted a lock to a holder that had been answered otherwise, and that holder's next lock
    # was a reentrant hold of it (found by the Jepsen split-2-3 run with quorum). A frame stamped
    # with a member list older than the one its member (re)joined at is refused.
    with cluster(2, backup_count=1) as grids:
        a, b = grids
        b._node.run(b._node.merging.into(None), timeout=30)  # as after being declared dead
        wait_for(lambda: b._node.membership.joined_version > 1, 10, message="b joined again")
        assert grids.wait_until_safe(20)
        key = next(encode_key(f"k{i}") for i in range(1000) if b.owner_of(f"k{i}").uuid == b.uuid)
        stale = Op(Code.PUT, partition_of(key, 271), name, key, b"\x01")
        old = b._node.membership.joined_version - 1  # a list from before b's (re)join
        with RawPeer(b.address) as peer:
            answer = peer.call(
                "MapService.Execute", frames.ops_to_pb(1, cluster_name(grids), old, a.uuid, [stale])
            )
        assert set(answer.statuses) == {Status.RETRY}
        assert "before this member re-joined" in answer.messages[0]
        assert b.get_map(name).size() == 0


def test_a_frame_its_sender_sent_before_it_was_admitted_again_is_refused(name: str) -> None:
    # The other side of the test above: the frame was held up on its way from a member that was
    # then declared dead and admitted again (same uuid), to a member that stayed. A late UNLOCK
    # released the lock its holder had taken again meanwhile (Jepsen split-2-3 with quorum: one
    # lock, two holders). Frames stamped with a list older than the sender's latest admission in
    # the receiver's list are refused.
    with cluster(2, backup_count=1) as grids:
        a, b = grids
        before = a._node.membership.since[b.uuid]
        assert a._node.membership.is_master

        async def remove_b() -> None:  # as the master does when b was not heard from in time
            a._node.membership._remove({b.uuid}, a.uuid, 5.0)

        a._node.run(remove_b(), timeout=10)
        wait_for(lambda: a._node.membership.since.get(b.uuid, 0) > before, 20, message="b admitted again")
        assert grids.wait_until_safe(20)
        since = a._node.membership.since[b.uuid]
        assert since > a._node.membership.joined_version
        key = next(encode_key(f"k{i}") for i in range(1000) if a.owner_of(f"k{i}").uuid == a.uuid)
        op = Op(Code.PUT, partition_of(key, 271), name, key, b"\x01")
        with RawPeer(a.address) as peer:
            stale = peer.call(
                "MapService.Execute", frames.ops_to_pb(1, cluster_name(grids), since - 1, b.uuid, [op])
            )
            assert set(stale.statuses) == {Status.RETRY}
            assert "before its sender was admitted again" in stale.messages[0]
            assert a.get_map(name).size() == 0
            now = a._node.membership.members.version
            fresh = peer.call(
                "MapService.Execute", frames.ops_to_pb(2, cluster_name(grids), now, b.uuid, [op])
            )
            assert set(fresh.statuses) == {Status.OK}  # the same sender, stamped with its list
        assert a.get_map(name).size() == 1
