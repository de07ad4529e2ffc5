"""Partitioning: key -> partition (hashing) and partition -> members (ring, table)."""

from peergrid.partition.hashing import partition_of
from peergrid.partition.ring import Node, assign
from peergrid.partition.table import PartitionTable, build_table

__all__ = ["Node", "PartitionTable", "assign", "build_table", "partition_of"]
