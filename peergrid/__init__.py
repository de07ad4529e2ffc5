"""peergrid: an embedded peer-to-peer data grid for Python.

Every process that creates a ``peergrid.Grid`` becomes a member of the
cluster: it stores a share of every distributed map, keeps backup copies of
its neighbours' shares, and answers its peers over gRPC::

    import peergrid

    with peergrid.Grid(cluster="orders", members=["10.0.0.5:5701"]) as grid:
        users = grid.get_map("users")
        users.put("user:1", {"name": "Alice"}, ttl=300)
        users.get("user:1")
"""

from peergrid.aio import AsyncGrid, AsyncMap
from peergrid.config import (
    GridConfig,
    Limits,
    MapConfig,
    NearCacheConfig,
    Timing,
    TLSConfig,
    WriteBehindConfig,
)
from peergrid.errors import (
    ArgumentError,
    BindError,
    CapacityError,
    ClusterError,
    ClusterNameMismatchError,
    ConfigError,
    ForkError,
    GridClosedError,
    IndeterminateWriteError,
    JoinError,
    KeyTypeError,
    LimitExceededError,
    LockError,
    OperationTimeoutError,
    PartitionLostError,
    PeerGridError,
    PeerUnavailableError,
    ProcessorError,
    QuorumError,
    RemoteError,
    ResultTooLargeError,
    SerializationError,
    StoreError,
    TLSConfigError,
    TLSError,
)
from peergrid.events.model import EntryEvent
from peergrid.grid import Grid
from peergrid.maps.cached import CacheInfo
from peergrid.maps.entry import EntryView
from peergrid.maps.locks import AsyncLockHandle, LockHandle
from peergrid.maps.sync import DistributedMap
from peergrid.owner.processors import Entry, entry_processor
from peergrid.protocol import Member
from peergrid.serialization import register_type
from peergrid.stats import LocalMapStats, MapStats

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "AsyncGrid",
    "AsyncLockHandle",
    "AsyncMap",
    "BindError",
    "CacheInfo",
    "CapacityError",
    "ClusterError",
    "ClusterNameMismatchError",
    "ConfigError",
    "DistributedMap",
    "Entry",
    "EntryEvent",
    "EntryView",
    "ForkError",
    "Grid",
    "GridClosedError",
    "GridConfig",
    "IndeterminateWriteError",
    "JoinError",
    "KeyTypeError",
    "LimitExceededError",
    "Limits",
    "LocalMapStats",
    "LockError",
    "LockHandle",
    "MapConfig",
    "MapStats",
    "Member",
    "NearCacheConfig",
    "OperationTimeoutError",
    "PartitionLostError",
    "PeerGridError",
    "PeerUnavailableError",
    "ProcessorError",
    "QuorumError",
    "RemoteError",
    "ResultTooLargeError",
    "SerializationError",
    "StoreError",
    "TLSConfig",
    "TLSConfigError",
    "TLSError",
    "Timing",
    "WriteBehindConfig",
    "__version__",
    "entry_processor",
    "register_type",
]
