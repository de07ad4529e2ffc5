"""Replication: backups, migration, repair and release of partition copies."""

from peergrid.replication.manager import PartitionManager

__all__ = ["PartitionManager"]
