"""Partitioning: key -> partition (hashing) and partition -> members (ring, table)."""

from peergrid.partition.hashing import partition_of
from peergrid.partition.ring import RingMember, assign
from peergrid.partition.table import PartitionTable, build_table

__all__ = ["PartitionTable", "RingMember", "assign", "build_table", "partition_of"]
