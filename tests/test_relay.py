"""Heartbeat relays (``cluster.relay``): the tree is arithmetic on the member list; relayed
beats renew leases in a real cluster; a relay that dies or pauses costs its children nothing
but a few direct beats to the master; a slow master is not flooded with direct beats; a
malformed relay request is refused, not obeyed."""

from __future__ import annotations

import math

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peergrid.cluster.relay import MASTER_FANOUT, Relaying, relay_parent
from peergrid.config import Timing
from peergrid.protocol import UNANSWERED, HeartbeatReply, HeartbeatStatus
from peergrid.testing import cluster
from peergrid.transport._pb import membership_pb2, membership_pb2_grpc
from peergrid.transport.client import _heartbeat_reply
from tests.conftest import wait_for
from tests.simulation import relay_faults, slow_master

UUIDS = [f"m{i:02d}" for i in range(20)]  # oldest first: m00 is the master


def test_four_beat_the_master_and_the_others_an_older_member_up_to_fanout_each() -> None:
    # fanout 5: m01-m04 beat the master; m05-m09 beat m01, m10-m14 m02, m15-m19 m03.
    parents = {u: relay_parent(UUIDS, "m00", u, 5) for u in UUIDS}
    assert MASTER_FANOUT == 4
    assert [u for u, p in parents.items() if p is None] == ["m00", "m01", "m02", "m03", "m04"]
    assert [u for u, p in parents.items() if p == "m01"] == ["m05", "m06", "m07", "m08", "m09"]
    assert [u for u, p in parents.items() if p == "m02"] == ["m10", "m11", "m12", "m13", "m14"]
    assert [u for u, p in parents.items() if p == "m03"] == ["m15", "m16", "m17", "m18", "m19"]


def test_the_fanout_oldest_beat_the_master_and_the_others_an_older_member() -> None:
    # fanout 3: m01-m03 beat the master; m04-m06 beat m01, m07-m09 m02, m10-m12 m03, m13 m04.
    parents = {u: relay_parent(UUIDS[:14], "m00", u, 3) for u in UUIDS[:14]}
    assert parents == {
        "m00": None,
        "m01": None,
        "m02": None,
        "m03": None,
        "m04": "m01",
        "m05": "m01",
        "m06": "m01",
        "m07": "m02",
        "m08": "m02",
        "m09": "m02",
        "m10": "m03",
        "m11": "m03",
        "m12": "m03",
        "m13": "m04",
    }


def test_the_tree_is_rooted_at_the_master_wherever_it_stands() -> None:
    # After a take-over the master is the oldest live member; a list that names a younger one
    # (never made by peergrid, but a list is data) still roots the tree there.
    assert relay_parent(UUIDS[:4], "m02", "m00", 1) is None
    assert relay_parent(UUIDS[:4], "m02", "m01", 1) == "m00"
    assert relay_parent(UUIDS[:4], "m02", "m03", 1) == "m01"
    assert relay_parent(UUIDS[:4], "m02", "m02", 1) is None
    assert relay_parent(UUIDS[:4], "m02", "stranger", 1) is None


@given(n=st.integers(1, 400), fanout=st.integers(1, 40))
def test_every_member_reaches_the_master_and_no_member_relays_for_more_than_fanout(
    n: int, fanout: int
) -> None:
    uuids = [f"u{i:04d}" for i in range(n)]
    parents = {u: relay_parent(uuids, uuids[0], u, fanout) for u in uuids}
    children: dict[str, int] = {}
    for u, parent in parents.items():
        hops, at = 1, parent
        while at is not None:  # a chain of strictly older members, so it ends
            assert uuids.index(at) < uuids.index(u)
            hops, at = hops + 1, parents[at]
        direct = min(fanout, MASTER_FANOUT)  # the master's children; the others' up to fanout
        if u != uuids[0]:
            # k (f^d - 1) / (f - 1) members within d hops: the tree is as shallow as it can be.
            depth = 1 if fanout == 1 else math.log(max(n - 1, 1) * (fanout - 1) / direct + 1, fanout)
            assert hops <= (n if fanout == 1 else math.ceil(depth - 1e-9))
        key = parent if parent is not None else uuids[0]
        if u != uuids[0]:
            children[key] = children.get(key, 0) + 1
    assert children.get(uuids[0], 0) <= direct
    assert all(count <= fanout for count in children.values())


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_a_relay_that_dies_or_pauses_costs_its_children_nothing(fault: str) -> None:
    # 60 simulated members, fanout 5 (three levels): a relay with children and grandchildren is
    # killed (or paused for less than the failure timeout). Its children beat the master
    # directly until their relay carries their beats again (or the list names a new one):
    # none of them is removed, and the killed relay is removed at the failure timeout.
    removed, killed = relay_faults(60, fanout=5, fault=fault, seed=4)
    if fault == "kill":
        assert removed == [killed]
    else:
        assert removed == []


@pytest.mark.parametrize("delay", [1.0, 2.0, 3.2])
def test_a_slow_master_is_not_flooded_with_direct_beats(delay: float) -> None:
    # 40 simulated members, fanout 5: the master answers every call `delay` seconds late (an
    # overloaded process; 3.2 s is past the relays' wait for its answers, which then say
    # "unanswered"). Its relays still carry every beat up and it still answers them, so their
    # members stay with them: the master gets about its five relays' messages an interval, not
    # the 30-39 of every member beating it directly (as before: they took late answers for a
    # dead relay). Nobody is removed.
    received, removed = slow_master(40, fanout=5, delay=delay, duration=20.0)
    assert received <= 2 * 5 + 4, received
    assert removed == []


def test_relayed_beats_renew_the_leases_of_a_chain_of_members() -> None:
    # fanout 1: a chain, each member beating the next older, and the master hearing the
    # youngest through three relays. Every member serves (holds its lease), and writes to keys
    # every member owns succeed; a middle relay killed costs nothing but its own partitions.
    with cluster(5, heartbeat_fanout=1, timing=Timing.fast()) as grids:
        nodes = [g._node for g in grids]
        order = list(grids[0].members())
        youngest = next(n for n in nodes if n.membership.me.uuid == order[-1].uuid)
        relay = order[-2].uuid
        carried = lambda: youngest.membership._relay.carried.get(relay, 0) > 0  # noqa: E731
        wait_for(carried, 10, message="the youngest's beats carried")
        assert youngest.membership._relay.parent == order[-2].uuid
        m = grids[0].get_map("chain")
        for i in range(200):
            m.put(f"k{i}", i)
        assert all(grids[4].get_map("chain").get(f"k{i}") == i for i in range(200))
        assert all(n.membership.holds_lease() for n in nodes)

        middle = next(g for g in grids if g._node.membership.me.uuid == order[2].uuid)
        grids.kill(middle)
        live = grids.live()
        wait_for(lambda: all(len(g.members()) == 4 for g in live), 15, message="the killed relay removed")
        assert live[0].wait_until_safe(30)
        assert {mm.uuid for mm in live[0].members()} == {mm.uuid for mm in order} - {order[2].uuid}
        assert all(live[-1].get_map("chain").get(f"k{i}") == i for i in range(200))
        for i in range(200):
            m.put(f"k{i}", -i)
        assert all(live[-1].get_map("chain").get(f"k{i}") == -i for i in range(200))


def test_a_malformed_relay_request_is_refused_and_the_member_keeps_serving() -> None:
    with cluster(2) as grids:
        address, name = grids[1].address, grids[1]._node.config.cluster
        with grpc.insecure_channel(address) as channel:
            stub = membership_pb2_grpc.MembershipStub(channel)
            me = grids[0]._node.membership.me.uuid
            bad = membership_pb2.HeartbeatRequest(cluster=name, uuid=me, list_version=1, master=me)
            bad.relayed.add(uuid="not a uuid\x00", list_version=1)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Heartbeat(bad, timeout=5)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # A beat for a master the member does not follow is answered "not relayed".
            other = membership_pb2.HeartbeatRequest(cluster=name, uuid=me, list_version=1, master="m" * 32)
            other.relayed.add(uuid=me, list_version=1)
            reply = stub.Heartbeat(other, timeout=5)
            assert [a.answered for a in reply.relayed] == [False]
        grids[0].get_map("m").put("k", 1)
        assert grids[1].get_map("m").get("k") == 1


def test_a_member_moves_its_beats_one_level_up_while_its_relay_carries_none() -> None:
    relaying = Relaying()
    relaying.choose(["r1", "r2"])  # its relay r1, whose relay is r2, whose is the master
    assert relaying.target(now=0.0, patience=1.5) == "r1"
    relaying.carried_by("r1", sent=0.5)
    assert relaying.target(now=1.9, patience=1.5) == "r1"  # carried 1.4 s ago: still trusted
    assert relaying.target(now=2.1, patience=1.5) == "r2"  # none carried for 1.6 s: one level up
    assert relaying.target(now=3.5, patience=1.5) == "r2"  # r2 gets its own patience
    assert relaying.target(now=3.7, patience=1.5) == ""  # r2 carried none either: the master
    relaying.carried_by("r1", sent=3.8)  # a probe of r1 was carried: back, and r2 starts afresh
    assert relaying.target(now=4.0, patience=1.5) == "r1"
    assert relaying.tried == {"r1": 0.0}


def test_a_relay_that_says_it_cannot_carry_is_left_at_once() -> None:
    relaying = Relaying()
    relaying.choose(["r1", "r2"])
    assert relaying.target(now=0.0, patience=1.5) == "r1"
    relaying.refused_by("r1")  # another master, still joining, or its address refuses
    assert relaying.target(now=0.1, patience=1.5) == "r2"
    relaying.refused_by("r2")
    assert relaying.target(now=0.2, patience=1.5) == ""
    # A new list that names another relay starts it with a clean record.
    relaying.choose(["r3"])
    assert relaying.target(now=0.3, patience=1.5) == "r3"
    assert relaying.parent == "r3"


def test_a_relay_whose_master_answers_late_is_kept() -> None:
    relaying = Relaying()
    relaying.choose(["r1", "r2"])
    assert relaying.target(now=0.0, patience=1.5, heard_within=4.0) == "r1"
    relaying.carried_by("r1", sent=0.5)
    # r1 replied at 2.6 (its answer for our beat was late, or not there yet), and its master
    # answered its own beats 2.5 s before: the master hears us through r1, only slowly.
    relaying.heard_from("r1", at=2.6, master_heard=2.5)
    assert relaying.target(now=3.0, patience=1.5, heard_within=4.0) == "r1"
    assert relaying.target(now=4.0, patience=1.5, heard_within=4.0) == "r1"
    # r1 replied nothing since (dead, paused): left once its last reply is a patience old.
    assert relaying.target(now=4.2, patience=1.5, heard_within=4.0) == "r2"
    # A relay the master no longer answers (cut off from it) is left after the patience.
    relaying.choose(["r3"])
    relaying.carried_by("r3", sent=5.0)
    relaying.heard_from("r3", at=6.9, master_heard=4.5)
    assert relaying.target(now=7.0, patience=1.5, heard_within=4.0) == ""
    # One that refuses forgets what it said.
    relaying.heard_from("r3", at=7.0, master_heard=0.5)
    relaying.refused_by("r3")
    assert relaying.views == {}


def test_unanswered_relayed_beats_travel_apart_from_refused_ones() -> None:
    reply = membership_pb2.HeartbeatResponse(status=0, list_version=3, uuid="m" * 32)
    reply.relayed.add(answered=True, status=0, list_version=3, uuid="m" * 32)
    reply.relayed.add(answered=False, unanswered=True)
    reply.relayed.add(answered=False)
    got = _heartbeat_reply(reply).relayed
    assert got[0] == HeartbeatReply(HeartbeatStatus.OK, 3, uuid="m" * 32)
    assert got[1] is UNANSWERED
    assert got[2] is None
