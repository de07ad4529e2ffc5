"""The versioned partition table, derived from the member list.

Every member that has member list version ``v`` computes the same table ``v``;
a table is replaced only by one of a newer version, never changed in place.
Members that are gracefully leaving are in the member list but own nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from peergrid.partition.ring import RingMember, assign


@dataclass(frozen=True)
class PartitionTable:
    """Replica lists of every partition at one member-list version."""

    version: int
    replicas: tuple[tuple[str, ...], ...]
    """``replicas[p]``: uuids of partition ``p``'s owner, then its backups."""
    _index: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def partition_count(self) -> int:
        """Number of partitions."""
        return len(self.replicas)

    def owner(self, partition: int) -> str | None:
        """The owner's uuid, or None when no member can own partitions."""
        replicas = self.replicas[partition]
        return replicas[0] if replicas else None

    def replica_index(self, partition: int, uuid: str) -> int | None:
        """0 for the owner, 1.. for backups, None when ``uuid`` holds no copy."""
        try:
            return self.replicas[partition].index(uuid)
        except ValueError:
            return None

    def owned_by(self, uuid: str) -> tuple[int, ...]:
        """Partitions ``uuid`` owns."""
        if uuid not in self._index:
            self._index[uuid] = tuple(p for p, r in enumerate(self.replicas) if r and r[0] == uuid)
        return self._index[uuid]


def build_table(
    version: int,
    members: Sequence[tuple[str, float, bool]],
    partition_count: int,
    replica_count: int,
    vnodes: int,
) -> PartitionTable:
    """The table for ``(uuid, weight, leaving)`` members; leaving members own nothing."""
    nodes = [RingMember(uuid, weight) for uuid, weight, leaving in members if not leaving]
    return PartitionTable(version, assign(nodes, partition_count, replica_count, vnodes))
