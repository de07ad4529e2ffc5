"""Grid: embed a member of a peergrid cluster in this process (sync API)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, overload

from peergrid.config import GridConfig
from peergrid.errors import ArgumentError, ConfigError
from peergrid.maps.core import Caller, check_types, map_config, recover_lost_partitions
from peergrid.maps.sync import DistributedMap, SyncDriver
from peergrid.member.loop import check_not_forked, track
from peergrid.member.node import Node
from peergrid.partition import partition_of
from peergrid.protocol import Member
from peergrid.serialization import Key, encode_key

F = TypeVar("F", bound=Callable[..., Any])
K = TypeVar("K", bound=Key)
V = TypeVar("V")


class Grid:
    """A member of a peergrid cluster, embedded in this process.

    ``Grid(...)`` binds its gRPC server, joins the cluster through the seeds in
    ``members`` (or forms a new one alone) and returns once joined. Leaving the
    ``with`` block, or ``shutdown()``, hands this member's partitions over to
    the others and stops it::

        with peergrid.Grid(cluster="orders", members=["10.0.0.5:5701"]) as grid:
            users = grid.get_map("users")
            users.put("user:1", {"name": "Alice"}, ttl=300)

    Options are those of ``peergrid.GridConfig`` (cluster, bind, members,
    discovery, backup_count, ...), passed as keywords or as ``config=``.
    Raises ``ConfigError`` for an unknown or invalid option,
    ``ClusterNameMismatchError`` when the seeds belong to another cluster.
    """

    def __init__(self, config: GridConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError("pass either config=GridConfig(...) or keyword options, not both")
        if config is None:
            config = GridConfig.from_kwargs(**options)
        elif not isinstance(config, GridConfig):
            raise ConfigError(f"config must be a peergrid.GridConfig, got {type(config).__qualname__}")
        else:
            config.validate()
        self.config = config
        self._node = Node(config)
        self._maps: dict[str, DistributedMap[Any, Any]] = {}
        track(self._node)  # in a forked child, every call on it raises GridClosedError
        self._node.start()

    # ------------------------------------------------------------------ identity
    @property
    def address(self) -> str:
        """``host:port`` this member's gRPC server is bound to."""
        return self._node.address

    @property
    def uuid(self) -> str:
        """This member's uuid (new at every start)."""
        return self._node.uuid

    @property
    def closed(self) -> bool:
        """True after ``shutdown()``."""
        return self._node.closed

    def members(self) -> list[Member]:
        """The current member list, oldest first (each with ``.address`` and ``.uuid``)."""
        check_not_forked(self._node)
        return self._node.members()

    def owner_of(self, key: Key) -> Member | None:
        """The member that currently owns ``key``'s partition (in every map)."""
        check_not_forked(self._node)
        partition = partition_of(encode_key(key), self.config.partition_count)
        return self._node.owner_of(partition)

    # ------------------------------------------------------------------ maps
    @overload
    def get_map(
        self, name: str, *, key_type: None = None, value_type: None = None, **options: Any
    ) -> DistributedMap[Any, Any]: ...
    @overload
    def get_map(
        self, name: str, *, key_type: type[K], value_type: type[V], **options: Any
    ) -> DistributedMap[K, V]: ...
    @overload
    def get_map(
        self, name: str, *, key_type: type[K], value_type: None = None, **options: Any
    ) -> DistributedMap[K, Any]: ...
    @overload
    def get_map(
        self, name: str, *, key_type: None = None, value_type: type[V], **options: Any
    ) -> DistributedMap[Any, V]: ...
    def get_map(
        self, name: str, *, key_type: Any = None, value_type: Any = None, **options: Any
    ) -> DistributedMap[Any, Any]:
        """The distributed map ``name`` (the same name is the same map on every member).

        ``key_type`` (``str``, ``bytes`` or ``int``) and ``value_type`` type the map for a type
        checker: ``grid.get_map("users", key_type=str, value_type=dict)`` is a
        ``DistributedMap[str, dict]``, whose ``get`` returns ``dict | None``. Nothing is checked
        at run time beyond ``key_type`` being a key type; without them the map is
        ``DistributedMap[Any, Any]``. (Annotating works too:
        ``users: DistributedMap[str, User] = grid.get_map("users")``, for value types such as a
        ``TypedDict`` that are no runtime class.)

        Options are those of ``peergrid.MapConfig``: ``ttl``, ``ttl_jitter``,
        ``max_idle``, ``max_entries``, ``max_bytes``, ``eviction``,
        ``near_cache=peergrid.NearCacheConfig(...)``. They override
        ``GridConfig.maps[name]``; a map is configured once per member (asking
        again with other options raises ``ConfigError``), and should be
        configured the same way on every member.
        """
        self._node.ensure_open()
        check_types(key_type, value_type)
        existing = self._maps.get(name)
        if existing is not None and not options and not existing.destroyed:
            return existing
        config = map_config(self._node, name, options)
        handle: DistributedMap[Any, Any] = DistributedMap(self._node, name, config)
        self._maps[name] = handle
        return handle

    # ------------------------------------------------------------------ safety
    def wait_until_safe(self, timeout: float = 10.0) -> bool:
        """Wait until no migration runs and every backup is in sync, on every member.

        Returns True once safe, False if ``timeout`` seconds pass first.
        """
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
            raise ArgumentError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        check_not_forked(self._node)
        return bool(self._node.run(self._node.cluster_safe(timeout), timeout=timeout + 5))

    def is_safe(self) -> bool:
        """True when, right now, every member reports nothing left to move."""
        return self.wait_until_safe(timeout=0)

    def add_partition_lost_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(partition)`` when a partition this member owns lost every copy."""
        check_not_forked(self._node)
        self._node.add_partition_lost_listener(listener)

    def recover_lost_partitions(self) -> list[int]:
        """Serve every lost partition again, empty, on whichever member owns it.

        After more than ``backup_count`` members died at once, the partitions
        that lost every copy raise ``PartitionLostError`` rather than pretend
        to be empty. Call this once the loss is acknowledged (the data is gone,
        or will be reloaded); returns the partitions that serve again.
        """
        caller = Caller(self._node, "grid")
        return SyncDriver(caller).do(recover_lost_partitions(caller))

    def serve_metrics(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve this member's Prometheus metrics over HTTP; return the bound port.

        Needs ``pip install 'peergrid[metrics]'``. The server stops with the grid.
        """
        return self._node.serve_metrics(port, host)

    # ------------------------------------------------------------------ lifecycle
    def shutdown(self) -> None:
        """Hand this member's partitions over, leave the cluster and stop. Safe to call twice."""
        self._node.shutdown(graceful=True)

    close = shutdown

    def __enter__(self) -> Grid:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.members())} members"
        return f"Grid(cluster={self.config.cluster!r}, address={self.address!r}, {state})"

    # ------------------------------------------------------------------ compute
    def register_processor(self, name: str, fn: Callable[..., Any]) -> None:
        """Register ``fn`` as entry processor ``name`` on this member.

        ``fn(entry, *args)`` runs on the owner of the key it is called for, so
        register it under the same name on every member (or use the
        module-level ``@peergrid.entry_processor``, which registers it for
        every member of the process). See ``peergrid.owner.processors``.
        """
        self._node.processors.register(name, fn)

    def cached(
        self,
        map_name: str,
        ttl: float | None = None,
        *,
        timeout: float = 1.0,
        claim_ttl: float = 30.0,
        key: Callable[..., Any] | None = None,
        typed: bool = False,
    ) -> Callable[[F], F]:
        """Cache the decorated functions' results in map ``map_name``, keyed by their arguments.

        ``ttl`` (seconds) bounds how long a result is served (None: the map's
        default, or until evicted). Concurrent misses of one key, from any
        member, run the function once (``claim_ttl`` bounds how long the others
        wait for a claimer). Exceptions are not cached. Each grid call waits at
        most ``timeout`` seconds: when the grid cannot answer in time the function
        runs directly (a *bypass*, logged and counted). ``key``, a function of
        the call's arguments, gives what the key is made of instead of the
        arguments (a method is cached through it: ``key=lambda self, x: [self.id,
        x]``); ``typed=True`` caches arguments of different types apart (``1`` and
        ``1.0``), as ``functools.lru_cache(typed=True)``. The wrapper's
        ``cache_info()`` returns the counts, ``cache_key(*args, **kwargs)`` the
        map key of a call (to delete it), ``cache_clear()`` deletes the function's
        results (returns how many). Raises ``ArgumentError`` for a bad option.
        See ``peergrid.maps.cached``.
        """
        from peergrid.maps.cached import cached_sync

        node = self._node

        def open_map(timeout: float | None) -> DistributedMap[Any, Any]:
            if timeout is None:
                return DistributedMap(node, map_name, node.registry.configured(map_name))
            return DistributedMap(
                node, map_name, node.registry.configured(map_name), timeout=timeout, strict=True
            )

        return cached_sync(node, open_map, map_name, ttl, timeout, claim_ttl, key, typed)
