"""Partition -> members: a consistent-hash ring with virtual nodes and bounded loads.

A pure module: no locks, no I/O, no state. A new assignment is computed from a
member set rather than an old one changed, so every member that knows the
same members computes the same assignment, whatever order it learned them in.

Each member puts ``vnodes * weight`` points on a 64-bit ring. Partition ``p``
sits at the evenly spaced point ``p * 2**64 / partition_count`` (evenly spaced
points halve the churn of hashed ones: a joining member's share then depends on
its arcs only). Its owner is the first member clockwise whose load is under its
cap — consistent hashing with bounded loads, as Olric uses: with only 271
partitions a plain ring leaves some members 1.5x the mean, the cap keeps every
member within ``load_factor`` of its fair share. Backups are the next distinct
members clockwise after the owner's point, uncapped, so that when an owner
dies its first backup is usually the next owner and promotion moves no data.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

RING_BITS = 64
RING_SIZE = 1 << RING_BITS

Hash = Callable[[str], int]


def ring_hash(label: str) -> int:
    """A stable 64-bit hash of a label (BLAKE2b; never Python's salted ``hash``)."""
    return int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class RingMember:
    """A member as the ring sees it."""

    uuid: str
    weight: float = 1.0


def build_ring(nodes: Sequence[RingMember], vnodes: int, hash_fn: Hash = ring_hash) -> list[tuple[int, str]]:
    """Sorted ``(point, uuid)`` pairs: ``max(1, round(vnodes * weight))`` points per node."""
    points = [
        (hash_fn(f"{node.uuid}#{i}"), node.uuid)
        for node in nodes
        for i in range(max(1, round(vnodes * node.weight)))
    ]
    points.sort()
    return points


def load_caps(nodes: Sequence[RingMember], partition_count: int, load_factor: float) -> dict[str, int]:
    """The most partitions each node may own: ``load_factor`` times its weighted share.

    Caps are raised together, one at a time, until they can hold every partition.
    """
    total = sum(node.weight for node in nodes)
    caps = {
        node.uuid: max(1, math.floor(load_factor * partition_count * node.weight / total)) for node in nodes
    }
    while sum(caps.values()) < partition_count:
        for uuid in caps:
            caps[uuid] += 1
    return caps


def partition_point(partition: int, partition_count: int) -> int:
    """The evenly spaced ring point of a partition."""
    return partition * RING_SIZE // partition_count


def assign(
    nodes: Sequence[RingMember],
    partition_count: int,
    replica_count: int,
    vnodes: int,
    load_factor: float = 1.25,
    hash_fn: Hash = ring_hash,
) -> tuple[tuple[str, ...], ...]:
    """Replica lists (owner first, then backups) of every partition.

    Each list holds ``min(replica_count, len(nodes))`` distinct uuids. With no
    nodes, every list is empty.
    """
    unique = sorted({node.uuid: node for node in nodes}.values(), key=lambda n: n.uuid)
    if not unique:
        return tuple(() for _ in range(partition_count))
    ring = build_ring(unique, vnodes, hash_fn)
    points = [point for point, _ in ring]
    caps = load_caps(unique, partition_count, load_factor)
    loads = dict.fromkeys(caps, 0)
    wanted = min(replica_count, len(unique))
    table = []
    for partition in range(partition_count):
        start = bisect.bisect_left(points, partition_point(partition, partition_count))
        owner_at = _first_under_cap(ring, start, loads, caps)
        owner = ring[owner_at % len(ring)][1]
        loads[owner] += 1
        table.append(_with_backups(ring, owner_at, owner, wanted))
    return tuple(table)


def _first_under_cap(
    ring: list[tuple[int, str]], start: int, loads: dict[str, int], caps: dict[str, int]
) -> int:
    # Caps sum to at least the partition count, so some node is under its cap.
    for step in range(len(ring)):
        uuid = ring[(start + step) % len(ring)][1]
        if loads[uuid] < caps[uuid]:
            return start + step
    raise AssertionError("caps cannot hold the partitions")  # pragma: no cover


def _with_backups(ring: list[tuple[int, str]], owner_at: int, owner: str, wanted: int) -> tuple[str, ...]:
    replicas = [owner]
    step = 1
    while len(replicas) < wanted:
        uuid = ring[(owner_at + step) % len(ring)][1]
        if uuid not in replicas:
            replicas.append(uuid)
        step += 1
    return tuple(replicas)
