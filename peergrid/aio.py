"""AsyncGrid: the same API as ``Grid`` for asyncio code (its maps: ``peergrid.maps.aio``).

Starting and stopping a member run off the caller's loop; the member runs on
its own loop thread, so a busy application loop cannot delay its heartbeats.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, TypeVar, overload

from peergrid.config import GridConfig
from peergrid.errors import ArgumentError, ConfigError
from peergrid.maps.aio import AsyncDriver, AsyncMap
from peergrid.maps.core import Caller, check_types, map_config, recover_lost_partitions
from peergrid.member.loop import check_not_forked, track
from peergrid.member.node import Node
from peergrid.partition import partition_of
from peergrid.protocol import Member
from peergrid.serialization import Key, encode_key

__all__ = ["AsyncGrid", "AsyncMap"]

F = TypeVar("F", bound=Callable[..., Any])
K = TypeVar("K", bound=Key)
V = TypeVar("V")


class AsyncGrid:
    """A member for asyncio code: ``async with peergrid.AsyncGrid(...) as grid:``.

    Also ``grid = await peergrid.AsyncGrid(...)``. Starting (binding and
    joining) runs off the caller's loop, so it does not stall the application.
    """

    def __init__(self, config: GridConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError("pass either config=GridConfig(...) or keyword options, not both")
        self.config = config if config is not None else GridConfig.from_kwargs(**options)
        self.config.validate()
        self._node: Node | None = None
        self._maps: dict[str, AsyncMap[Any, Any]] = {}

    async def start(self) -> AsyncGrid:
        """Bind, join and return self (idempotent)."""
        if self._node is None:
            node = Node(self.config)
            track(node)  # in a forked child, every call on it raises GridClosedError
            await asyncio.to_thread(node.start)
            self._node = node
        return self

    def __await__(self) -> Generator[Any, None, AsyncGrid]:
        return self.start().__await__()

    async def __aenter__(self) -> AsyncGrid:
        return await self.start()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    @property
    def node(self) -> Node:
        if self._node is None:
            raise ConfigError("the AsyncGrid is not started: use 'async with' or 'await AsyncGrid(...)'")
        check_not_forked(self._node)
        return self._node

    @property
    def address(self) -> str:
        """``host:port`` this member is bound to."""
        return self.node.address

    @property
    def uuid(self) -> str:
        """This member's uuid."""
        return self.node.uuid

    def members(self) -> list[Member]:
        """The current member list, oldest first."""
        return self.node.members()

    def owner_of(self, key: Key) -> Member | None:
        """The member that currently owns ``key``'s partition (in every map); no call is made."""
        node = self.node
        return node.owner_of(partition_of(encode_key(key), node.config.partition_count))

    @overload
    def get_map(
        self, name: str, *, key_type: None = None, value_type: None = None, **options: Any
    ) -> AsyncMap[Any, Any]: ...
    @overload
    def get_map(
        self, name: str, *, key_type: type[K], value_type: type[V], **options: Any
    ) -> AsyncMap[K, V]: ...
    @overload
    def get_map(
        self, name: str, *, key_type: type[K], value_type: None = None, **options: Any
    ) -> AsyncMap[K, Any]: ...
    @overload
    def get_map(
        self, name: str, *, key_type: None = None, value_type: type[V], **options: Any
    ) -> AsyncMap[Any, V]: ...
    def get_map(
        self, name: str, *, key_type: Any = None, value_type: Any = None, **options: Any
    ) -> AsyncMap[Any, Any]:
        """The distributed map ``name``; options as ``Grid.get_map`` (``peergrid.MapConfig``), and
        ``key_type``/``value_type`` for a type checker, as there (``AsyncMap[str, dict]``)."""
        node = self.node
        node.ensure_open()
        check_types(key_type, value_type)
        existing = self._maps.get(name)
        if existing is not None and not options and not existing.destroyed:
            return existing
        handle: AsyncMap[Any, Any] = AsyncMap(node, name, map_config(node, name, options))
        self._maps[name] = handle
        return handle

    async def wait_until_safe(self, timeout: float = 10.0) -> bool:
        """True once no migration runs and every backup is in sync; False after ``timeout``."""
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
            raise ArgumentError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        node = self.node
        node.ensure_open()
        future = asyncio.run_coroutine_threadsafe(node.cluster_safe(timeout), node.loop)
        return await asyncio.wrap_future(future)

    def add_partition_lost_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(partition)`` when a partition this member owns lost every copy."""
        self.node.add_partition_lost_listener(listener)

    async def recover_lost_partitions(self) -> list[int]:
        """Serve every lost partition again, empty (see ``Grid.recover_lost_partitions``)."""
        caller = Caller(self.node, "grid")
        return await AsyncDriver(caller).do(recover_lost_partitions(caller))

    async def shutdown(self) -> None:
        """Hand partitions over, leave and stop (safe to call twice)."""
        if self._node is not None:
            await asyncio.to_thread(self._node.shutdown)

    close = shutdown

    # ------------------------------------------------------------------ compute
    def register_processor(self, name: str, fn: Callable[..., Any]) -> None:
        """Register ``fn`` as entry processor ``name`` on this member (see ``Grid.register_processor``)."""
        self.node.processors.register(name, fn)

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
        """Cache the decorated ``async def`` functions' results in map ``map_name``, keyed by
        their arguments; the options as for ``Grid.cached``. The wrapper's ``cache_clear()``
        is a coroutine (``await f.cache_clear()``)."""
        from peergrid.maps.cached import cached_async

        node = self.node

        def open_map(timeout: float | None) -> AsyncMap[Any, Any]:
            if timeout is None:
                return AsyncMap(node, map_name, node.registry.configured(map_name))
            return AsyncMap(node, map_name, node.registry.configured(map_name), timeout=timeout, strict=True)

        return cached_async(node, open_map, map_name, ttl, timeout, claim_ttl, key, typed)
