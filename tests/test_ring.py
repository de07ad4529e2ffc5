"""Placement: the ring and the partition table, as arithmetic and as properties."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from peergrid.partition import RingMember, assign, build_table
from peergrid.partition.ring import RING_SIZE, build_ring, load_caps
from tests.strategies import member_lists

P = 271


def owners(table: tuple[tuple[str, ...], ...]) -> list[str]:
    return [replicas[0] for replicas in table]


def test_owner_is_first_member_clockwise_with_an_obvious_hash() -> None:
    # Labels are "<uuid>#<i>"; this hash puts member "a" at 0, "b" at 1/3, "c" at 2/3 of the ring.
    spots = {"a": 0, "b": RING_SIZE // 3, "c": 2 * RING_SIZE // 3}

    def obvious(label: str) -> int:
        return spots[label.split("#", maxsplit=1)[0]]

    table = assign([RingMember("a"), RingMember("b"), RingMember("c")], 3, 2, vnodes=1, hash_fn=obvious)
    # Partition p sits at p/3 of the ring: exactly on a, b and c's points.
    assert table == (("a", "b"), ("b", "c"), ("c", "a"))


def test_backups_are_distinct_and_follow_the_owner() -> None:
    table = assign([RingMember(f"m{i}") for i in range(5)], P, 3, vnodes=64)
    for replicas in table:
        assert len(replicas) == 3
        assert len(set(replicas)) == 3


def test_fewer_members_than_replicas_gives_every_member_a_copy() -> None:
    table = assign([RingMember("x"), RingMember("y")], P, 4, vnodes=64)
    assert all(sorted(replicas) == ["x", "y"] for replicas in table)


def test_no_members_no_owners() -> None:
    assert assign([], 5, 2, vnodes=8) == ((), (), (), (), ())


def test_caps_hold_every_partition_even_with_many_members() -> None:
    nodes = [RingMember(f"m{i}") for i in range(400)]
    assert sum(load_caps(nodes, P, 1.25).values()) >= P


@settings(max_examples=60, deadline=None)
@given(uuids=member_lists(1, 10), seed=st.randoms(use_true_random=False))
def test_table_is_the_same_for_the_same_members_in_any_order(uuids: list[str], seed) -> None:
    shuffled = list(uuids)
    seed.shuffle(shuffled)
    first = assign([RingMember(u) for u in uuids], P, 2, vnodes=128)
    second = assign([RingMember(u) for u in shuffled], P, 2, vnodes=128)
    assert first == second


@settings(max_examples=60, deadline=None)
@given(uuids=member_lists(3, 10))
def test_no_member_owns_more_than_125_percent_of_the_mean(uuids: list[str]) -> None:
    counts = Counter(owners(assign([RingMember(u) for u in uuids], P, 1, vnodes=512)))
    mean = P / len(uuids)
    assert max(counts.values()) <= 1.25 * mean


@settings(max_examples=60, deadline=None)
@given(uuids=member_lists(4, 11))
def test_a_join_moves_about_one_nth_of_the_owners(uuids: list[str]) -> None:
    before = owners(assign([RingMember(u) for u in uuids[:-1]], P, 1, vnodes=512))
    after = owners(assign([RingMember(u) for u in uuids], P, 1, vnodes=512))
    moved = sum(1 for b, a in zip(before, after, strict=True) if b != a)
    n = len(uuids)
    # The ideal is P/n. Bounded loads add a cascade when the caps shrink (an
    # 11th member lowers every cap from 33 to 30): measured over 700 random
    # member lists of 11, the mean is 1.05 P/n, the 99th percentile 1.38 P/n and
    # the worst 1.58 P/n; hypothesis found one at 1.502 P/n. "About 1.5/n" is
    # checked with that tail's margin.
    assert moved <= 1.6 * P / n


@settings(max_examples=30, deadline=None)
@given(uuids=member_lists(2, 8))
def test_a_leave_hands_the_leavers_partitions_mostly_to_their_first_backup(uuids: list[str]) -> None:
    before = assign([RingMember(u) for u in uuids], P, 2, vnodes=512)
    gone = uuids[0]
    after = assign([RingMember(u) for u in uuids[1:]], P, 2, vnodes=512)
    orphaned = [p for p, replicas in enumerate(before) if replicas[0] == gone]
    promoted = sum(1 for p in orphaned if after[p][0] == before[p][1])
    # Promotion moves no data; bounded loads may route a few elsewhere.
    assert promoted >= 0.6 * len(orphaned)


def test_weight_scales_the_share() -> None:
    nodes = [RingMember("heavy", 2.0), RingMember("a"), RingMember("b"), RingMember("c")]
    counts = Counter(owners(assign(nodes, P, 1, vnodes=256)))
    assert counts["heavy"] > 1.5 * max(counts["a"], counts["b"], counts["c"]) * 0.8


def test_leaving_members_own_nothing() -> None:
    table = build_table(7, [("a", 1.0, False), ("b", 1.0, True), ("c", 1.0, False)], P, 2, 64)
    assert table.version == 7
    assert all("b" not in replicas for replicas in table.replicas)
    assert table.owned_by("b") == ()
    assert sorted(set(table.owned_by("a")) | set(table.owned_by("c"))) == list(range(P))


def walked(nodes: list[RingMember], partition_count: int, replica_count: int, vnodes: int) -> tuple:
    """The assignment as the module docstring says it, by walking ``build_ring``'s pairs."""
    unique = sorted({n.uuid: n for n in nodes}.values(), key=lambda n: n.uuid)
    ring = build_ring(unique, vnodes)
    caps = load_caps(unique, partition_count, 1.25)
    loads = dict.fromkeys(caps, 0)
    table = []
    for p in range(partition_count):
        at = next(
            i
            for i, (point, _) in enumerate([*ring, (RING_SIZE, "")])
            if point >= p * RING_SIZE // partition_count
        )
        while loads[ring[at % len(ring)][1]] >= caps[ring[at % len(ring)][1]]:
            at += 1
        replicas = [ring[at % len(ring)][1]]
        loads[replicas[0]] += 1
        step = 1
        while len(replicas) < min(replica_count, len(unique)):
            uuid = ring[(at + step) % len(ring)][1]
            if uuid not in replicas:
                replicas.append(uuid)
            step += 1
        table.append(tuple(replicas))
    return tuple(table)


@settings(max_examples=40, deadline=None)
@given(
    uuids=member_lists(1, 12),
    weights=st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0]), min_size=12, max_size=12),
    partition_count=st.sampled_from([7, 31, 271]),
    replica_count=st.integers(1, 4),
    vnodes=st.sampled_from([1, 16, 64]),
)
def test_assign_is_the_walk_of_the_ring(uuids, weights, partition_count, replica_count, vnodes) -> None:
    # assign() builds the ring its own (faster) way: it must place exactly as the plain walk.
    nodes = [RingMember(u, w) for u, w in zip(uuids, weights, strict=False)]
    assert assign(nodes, partition_count, replica_count, vnodes) == walked(
        nodes, partition_count, replica_count, vnodes
    )
