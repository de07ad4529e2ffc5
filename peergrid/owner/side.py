"""The owner's side of a member, built as one unit: its write path and what hangs on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peergrid.config import GridConfig
from peergrid.events.publisher import EventPublisher
from peergrid.owner.compute import ComputeOps, WritePath
from peergrid.owner.executor import Executor
from peergrid.owner.processors import ProcessorRegistry
from peergrid.owner.stores import StoreOps
from peergrid.owner.writes import OwnerWrites
from peergrid.protocol import MemberList
from peergrid.replication import PartitionManager
from peergrid.serialization import Serializer
from peergrid.serialization.codec import values_equal
from peergrid.stats import MapCounters
from peergrid.storage import journal
from peergrid.storage.registry import MapRegistry


@dataclass(frozen=True)
class OwnerSide:
    """What runs operations as the owner of this member's partitions (loop thread)."""

    writes: OwnerWrites
    """Around every write: bounds, eviction, events; expiry sweeps."""
    stores: StoreOps
    """Read-through, write-through, write-behind against maps' stores."""
    processors: ProcessorRegistry
    """The entry processors registered on this member."""
    executor: Executor
    """Validates and runs each operation, replicates its writes."""
    compute: ComputeOps
    """Entry processors and locks, on the executor's write path."""


@dataclass(frozen=True)
class MemberView:
    """What the owner's side asks of its member (each read when needed: they change)."""

    members: Callable[[], MemberList]
    has_quorum: Callable[[], bool]
    has_lease: Callable[[], bool]
    contributor: Callable[[], str]
    """Whose increments this member's are, in counters' journals (new at every (re-)join)."""


def build(
    config: GridConfig,
    registry: MapRegistry,
    manager: PartitionManager,
    publisher: EventPublisher,
    serializer: Serializer,
    counters_of: Callable[[str], MapCounters],
    window: journal.Window,
    member: MemberView,
) -> OwnerSide:
    """The owner's side of one member, wired."""
    writes = OwnerWrites(registry, manager, publisher, counters_of, config.timing)
    stores = StoreOps(registry, manager, writes, serializer, counters_of, config.limits.store_threads)
    processors = ProcessorRegistry()

    def compute_ops(path: WritePath) -> ComputeOps:
        return ComputeOps(
            path,
            stores,
            processors,
            serializer,
            registry,
            manager,
            writes,
            member.members,
            config.limits.max_value_bytes,
            member.contributor,
        )

    executor = Executor(
        config,
        manager,
        lambda: member.members().version,
        member.has_quorum,
        member.has_lease,
        values_equal(serializer),
        registry,
        publisher,
        writes,
        stores,
        window,
        compute_ops,
    )
    compute = executor.compute
    assert isinstance(compute, ComputeOps)
    return OwnerSide(writes, stores, processors, executor, compute)
