"""Partition -> members: a consistent-hash ring with virtual nodes and bounded loads.

A pure module: no locks, no I/O, and no state but caches (each member's points,
the last ring built), so results depend on the arguments alone. A new assignment
is computed from a member set rather than an old one changed, so every member
that knows the same members computes the same assignment, whatever order it
learned them in.

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
import functools
import hashlib
import itertools
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
    nodes, every list is empty. The same as walking ``build_ring``'s pairs; see
    ``_ring`` for how the ring is built fast.
    """
    unique = sorted({node.uuid: node for node in nodes}.values(), key=lambda n: n.uuid)
    if not unique:
        return tuple(() for _ in range(partition_count))
    ring, base, codes = _ring(unique, vnodes, hash_fn)
    size = len(ring)
    n = len(unique)
    caps = load_caps(unique, partition_count, load_factor)
    cap = [caps[node.uuid] for node in unique]
    load = [0] * n
    wanted = min(replica_count, n)
    table = []
    for partition in range(partition_count):
        # The first ring point at or after the partition's (a key's code is below ``base``).
        at = bisect.bisect_left(ring, partition_point(partition, partition_count) * base)
        # Caps sum to at least the partition count, so some node is under its cap.
        while load[codes[ring[at % size] % base]] >= cap[codes[ring[at % size] % base]]:
            at += 1
        owner = codes[ring[at % size] % base]
        load[owner] += 1
        replicas = [owner]
        step = 1
        while len(replicas) < wanted:
            index = codes[ring[(at + step) % size] % base]
            if index not in replicas:
                replicas.append(index)
            step += 1
        table.append(tuple(unique[i].uuid for i in replicas))
    return tuple(table)


_TAG_BITS = 32
_Ring = tuple[list[int], int, "Sequence[int] | dict[int, int]"]


def _ring(unique: list[RingMember], vnodes: int, hash_fn: Hash) -> _Ring:
    """The ring as sorted ``point * base + code`` ints, ``base``, and code -> index in ``unique``.

    Every member derives a table at each of the cluster's list changes, and at 100 members the
    ring has 51,200 points (sorting pairs took ~100 ms). With the default hash each member's
    keys are remembered, coded with a 32-bit tag of its uuid, and the last ring is kept: a
    list that adds a member merges its keys into the last ring (~1 ms), one that removes
    some filters them out. Two points are ordered by tag rather than by uuid only if two
    64-bit points are equal, and then on every member alike. Otherwise (another hash, two
    uuids with one tag) codes are indices into ``unique``: sorted by point, then uuid.
    """
    counts = {node.uuid: max(1, round(vnodes * node.weight)) for node in unique}
    tags = {_tag(uuid): index for index, uuid in enumerate(counts)}
    if hash_fn is not ring_hash or len(tags) < len(counts):
        n = len(unique)
        keys = (
            point * n + index
            for index, node in enumerate(unique)
            for point in _points_of(node, counts, hash_fn)
        )
        return sorted(keys), n, range(n)
    global _last_ring
    last_counts, last = _last_ring
    gone = {_tag(uuid) for uuid, count in last_counts.items() if counts.get(uuid) != count}
    new = [uuid for uuid, count in counts.items() if last_counts.get(uuid) != count]
    if len(gone) + len(new) < len(counts) // 2 and not gone & tags.keys():
        mask = (1 << _TAG_BITS) - 1
        kept = [key for key in last if key & mask not in gone] if gone else list(last)
        ring = kept + list(itertools.chain.from_iterable(_keys(uuid, counts[uuid]) for uuid in new))
    else:
        ring = list(itertools.chain.from_iterable(_keys(uuid, count) for uuid, count in counts.items()))
    ring.sort()  # (sorted runs: a merge)
    _last_ring = (counts, ring)  # (replaced whole: members in other threads read it unlocked)
    return ring, 1 << _TAG_BITS, tags


# The last ring built with the default hash: the members' point counts, and its keys.
_last_ring: tuple[dict[str, int], list[int]] = ({}, [])


def _points_of(node: RingMember, counts: dict[str, int], hash_fn: Hash) -> list[int]:
    return sorted(hash_fn(f"{node.uuid}#{i}") for i in range(counts[node.uuid]))


@functools.lru_cache(maxsize=4096)
def _tag(uuid: str) -> int:
    return int.from_bytes(hashlib.blake2b(uuid.encode(), digest_size=_TAG_BITS // 8).digest(), "big")


@functools.lru_cache(maxsize=256)
def _keys(uuid: str, count: int) -> tuple[int, ...]:
    # Sorted, so that the ring's sort merges runs (~22 KiB a member of 512 points).
    tag = _tag(uuid)
    return tuple(sorted((ring_hash(f"{uuid}#{i}") << _TAG_BITS) | tag for i in range(count)))
