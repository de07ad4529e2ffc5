"""Membership: versioned member lists, joining, leaving, members starting together."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import socket
import time
import uuid

import pytest

import peergrid
from peergrid import Timing
from peergrid.protocol import Member, MemberList
from peergrid.testing import cluster
from tests.conftest import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_members_agree_on_one_list_oldest_first() -> None:
    with cluster(4) as grids:
        lists = [[m.uuid for m in g.members()] for g in grids]
        assert all(lst == [g.uuid for g in grids] for lst in lists)
        versions = {g._node.membership.members.version for g in grids}
        assert len(versions) == 1


@pytest.mark.parametrize(
    ("setting", "ours", "theirs"),
    [("backup_count", 1, 0), ("async_backup_count", 0, 1), ("vnodes", 512, 64), ("partition_count", 271, 64)],
)
def test_a_member_configured_to_place_partitions_otherwise_cannot_join(
    setting: str, ours: int, theirs: int
) -> None:
    # Before the check, such a member joined, and writes then waited for copies their backups
    # refused, or bounced between two members that each thought the other owned the partition,
    # until their deadline.
    timing = Timing.fast()
    with cluster(1, timing=timing, **{setting: ours}) as grids:
        with pytest.raises(
            peergrid.JoinError,
            match=f"{setting} differs: cluster .* uses {ours}, the joining member {theirs}",
        ):
            peergrid.Grid(
                cluster=grids.options["cluster"],
                members=[grids[0].address],
                timing=timing,
                **{setting: theirs},
            )
        assert [m.uuid for m in grids[0].members()] == [grids[0].uuid]
        grids[0].get_map("m").put("k", 1)


def test_a_member_that_counts_quorums_otherwise_cannot_join() -> None:
    # With another min_cluster_size, a member would judge quorums otherwise than the rest: as
    # master on the smaller side of a split it would drop the silent members and serve, where
    # the others' min_cluster_size forbids it (two sides serving the same partitions).
    timing = Timing.fast()
    with cluster(1, timing=timing) as grids:
        with pytest.raises(
            peergrid.JoinError,
            match=r"min_cluster_size differs: cluster .* uses 1, the joining member 2",
        ):
            peergrid.Grid(
                cluster=grids.options["cluster"],
                members=[grids[0].address],
                timing=timing,
                min_cluster_size=2,
            )
        assert [m.uuid for m in grids[0].members()] == [grids[0].uuid]


def test_a_member_that_would_serve_past_the_clusters_failure_timeout_cannot_join() -> None:
    # Its owner lease (derived from its failure_timeout of 3 s: ~2.1 s) would outlive the 1 s
    # after which the others declare a silent member dead and promote its backups.
    fast = Timing.fast()
    with cluster(1, timing=fast) as grids:
        with pytest.raises(
            peergrid.JoinError,
            match=r"timing.failure_timeout differs: cluster .* uses 1.0, the joining member 3.0",
        ):
            peergrid.Grid(
                cluster=grids.options["cluster"],
                members=[grids[0].address],
                timing=dataclasses.replace(fast, failure_timeout=3.0),
            )
        assert [m.uuid for m in grids[0].members()] == [grids[0].uuid]


def test_an_older_member_list_is_ignored(grids3) -> None:
    a, b, _ = grids3
    current = b._node.membership.members
    master = current.find(current.master_uuid)
    assert master is not None
    stale = MemberList(current.version - 1, master.uuid, (master, Member(b.uuid, b.address)))

    async def publish() -> None:
        await a._node.peer(b.address).publish(stale)

    a._node.run(publish(), timeout=5)
    assert b._node.membership.members == current


def test_joining_through_a_member_that_is_not_the_master() -> None:
    with cluster(2) as grids:
        newcomer = peergrid.Grid(
            cluster=grids.options["cluster"], members=[grids[1].address], timing=Timing.fast()
        )
        try:
            assert len(newcomer.members()) == 3
            assert newcomer.members()[0].uuid == grids[0].uuid  # the master stays the oldest
        finally:
            newcomer.shutdown()


@pytest.mark.parametrize("layout", ["all-seed-all", "pair-and-a-latecomer", "chain"])
def test_members_started_at_the_same_moment_form_one_cluster(layout: str) -> None:
    ports = [free_port() for _ in range(3)]
    addresses = [f"127.0.0.1:{p}" for p in ports]
    seeds = {
        "all-seed-all": [addresses, addresses, addresses],
        # Two members seeded with each other, a third seeded with both: each sees a different set.
        "pair-and-a-latecomer": [[addresses[1]], [addresses[0]], addresses[:2]],
        "chain": [[addresses[1]], [addresses[2]], [addresses[0]]],
    }[layout]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(
                peergrid.Grid, cluster=f"together-{layout}", bind=address, members=seed, timing=Timing.fast()
            )
            for address, seed in zip(addresses, seeds, strict=True)
        ]
        grids = [f.result(timeout=60) for f in futures]
    try:
        wait_for(lambda: all(len(g.members()) == 3 for g in grids), 10, message="one cluster of three")
        assert grids[0].wait_until_safe(20)
        grids[0].get_map("m").put("k", 1)
        assert all(g.get_map("m").get("k") == 1 for g in grids)
    finally:
        for grid in grids:
            grid.shutdown()


@pytest.mark.timeout(120)
def test_members_sharing_three_seeds_form_one_cluster_without_a_merge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Ten members started together, all with the same three seeds. Two that are no seeds never
    # ask each other; when both had lower uuids than every seed, each found itself the lowest
    # starting member and formed a cluster of its own (merged seconds later). The seeds now
    # tell each asker the lowest starting member they know of. Three starts, as a split needs
    # the two lowest uuids to be no seeds' (about half the starts).
    caplog.set_level(logging.INFO, logger="peergrid")
    for attempt in range(3):
        caplog.clear()
        seeds = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        binds = [*seeds, *["127.0.0.1:0"] * 7]
        cluster = f"shared-seeds-{attempt}-{uuid.uuid4().hex[:6]}"
        with concurrent.futures.ThreadPoolExecutor(len(binds)) as pool:
            futures = [
                pool.submit(peergrid.Grid, cluster=cluster, bind=bind, members=seeds, timing=Timing.fast())
                for bind in binds
            ]
            grids = [f.result(timeout=60) for f in futures]
        try:
            wait_for(lambda gs=grids: all(len(g.members()) == len(gs) for g in gs), 30, message="one cluster")
            formed = [r.getMessage() for r in caplog.records if "forming the cluster" in r.getMessage()]
            merged = [r.getMessage() for r in caplog.records if "runs as two instances" in r.getMessage()]
            assert len(formed) == 1, formed
            assert merged == []
        finally:
            for grid in grids:
                grid._node.kill()


def test_a_restarted_process_on_the_same_address_replaces_its_old_self() -> None:
    with cluster(2) as grids:
        address = grids[1].address
        grids.kill(grids[1])
        again = peergrid.Grid(
            cluster=grids.options["cluster"], bind=address, members=[grids[0].address], timing=Timing.fast()
        )
        try:
            wait_for(lambda: [m.address for m in grids[0].members()].count(address) == 1, 10)
            assert len(grids[0].members()) == 2
            assert grids[0].wait_until_safe(20)
        finally:
            again.shutdown()


def test_shutdown_leaves_the_cluster() -> None:
    with cluster(3) as grids:
        grids[2].shutdown()
        wait_for(lambda: len(grids[0].members()) == 2 and len(grids[1].members()) == 2, 10)
        assert grids[2].closed


def test_map_handles_read_fresh_data_after_their_member_rejoined() -> None:
    # A member dropped from the list (it was paused, or cut off) drops its data and joins again.
    # Map handles made before must not keep reading its old copies.
    with cluster(2) as grids:
        a, b = grids
        handle = b.get_map("m")
        keys = [f"k{i}" for i in range(100)]
        handle.put_all(dict.fromkeys(keys, "old"))

        async def drop_b() -> None:
            a._node.membership._remove({b.uuid}, a.uuid)

        a._node.run(drop_b(), timeout=5)
        wait_for(lambda: len(a.members()) == 2 and len(b.members()) == 2, 10, message="b back")
        assert grids.wait_until_safe()
        a.get_map("m").put_all(dict.fromkeys(keys, "new"))
        assert set(handle.get_all(keys).values()) == {"new"}
        assert {handle.get(k) for k in keys} == {"new"}


def test_only_the_master_is_heartbeated_and_a_member_whose_heartbeats_stop_goes_after_twice_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Every member heartbeats the master alone (the master one member in rotation): the
    # cluster's heartbeats grow with N, not N squared. A member whose heartbeats stop reaching
    # the master while it still answers (the master's rotation reaches it) is not removed at the
    # failure timeout, but once its own heartbeats stay away for twice as long: its lease ran
    # out long ago, and its partitions need a new owner.
    caplog.set_level(logging.INFO, logger="peergrid")
    timing = Timing.fast()
    with cluster(4, timing=timing) as grids:
        master = next(g for g in grids if g._node.membership.is_master)
        others = [g for g in grids if g is not master]
        for g in others:
            assert [m.uuid for m in g._node.membership._targets()] == [master.uuid]
        assert len(master._node.membership._targets()) == 1
        quiet = others[-1]
        stopped = time.time()
        quiet._node.membership._targets = list  # type: ignore[method-assign]  # its heartbeats stop
        wait_for(
            lambda: quiet.uuid not in {m.uuid for m in master.members()},
            30,
            message="the quiet member removed once its heartbeats stayed away",
        )
        removal = next(r for r in caplog.records if "its heartbeats have not arrived" in r.getMessage())
        # Counted from its last heartbeat, which may have come up to an interval before we
        # stopped them (a run once measured 1.995 s from here).
        assert removal.created - stopped >= 2 * timing.failure_timeout - timing.heartbeat_interval


def test_a_member_that_was_asked_before_it_was_up_is_admitted_without_a_false_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The README's quickstart: two members with the same two seeds, the second started later.
    # The first asked the second's address while nothing served there, so its channel to it was
    # backing off; its call back to the joiner failed at once, and the joiner printed that the
    # master "cannot reach the joining member" before a retry got in.
    caplog.set_level(logging.WARNING, logger="peergrid")
    ports = [free_port(), free_port()]
    seeds = [f"127.0.0.1:{p}" for p in ports]
    timing = Timing.fast()
    with (
        peergrid.Grid(cluster="late-seed", bind=seeds[0], members=seeds, timing=timing) as a,
        peergrid.Grid(cluster="late-seed", bind=seeds[1], members=seeds, timing=timing) as b,
    ):
        assert {m.uuid for m in a.members()} == {a.uuid, b.uuid}
    assert not [r.getMessage() for r in caplog.records if "cannot reach the joining member" in r.getMessage()]


def test_a_killed_member_whose_address_refuses_goes_once_its_lease_has_run_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No process serves a killed member's address: once its lease has certainly run out, the
    # master removes it without waiting for the rest of the failure timeout (and says why).
    caplog.set_level(logging.WARNING, logger="peergrid.cluster")
    with cluster(4, timing=Timing.fast()) as grids:
        victim = grids[3]
        grids.kill(victim)
        wait_for(
            lambda: all(len(g.members()) == 3 for g in grids.live()), 10, message="the killed member removed"
        )
        removals = [
            r.getMessage()
            for r in caplog.records
            if victim.address in r.getMessage() and "removing" in r.getMessage()
        ]
        assert removals
        assert "its address refuses" in removals[0], removals
        assert grids.live()[0].wait_until_safe(20)
