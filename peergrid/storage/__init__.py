"""Storage: per (map, partition) record stores and the operations on them."""

from peergrid.storage.partition import Partition
from peergrid.storage.records import Records

__all__ = ["Partition", "Records"]
