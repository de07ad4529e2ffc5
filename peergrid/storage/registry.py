"""The maps this member knows: their configuration, policies and owned usage.

Owner-side behaviour (eviction, max-idle, the bounds) follows the map's
configuration on the owning member, so a map must be configured the same way
on every member (``GridConfig.maps`` is the reliable place).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from peergrid.config import MapConfig
from peergrid.errors import ConfigError
from peergrid.storage.records import StorePolicy

_DEFAULT = MapConfig()


@dataclass
class Usage:
    """Entries and key+value bytes this member owns of one bounded map."""

    entries: int = 0
    nbytes: int = 0


class MapRegistry:
    """Map name -> configuration, store policy and usage, on one member."""

    def __init__(self, configs: Mapping[str, MapConfig]) -> None:
        self._configs: dict[str, MapConfig] = dict(configs)
        self._policies: dict[str, StorePolicy | None] = {}
        self.usage: dict[str, Usage] = {}

    def config(self, name: str) -> MapConfig:
        """The map's configuration (defaults if it was never configured here)."""
        return self._configs.get(name, _DEFAULT)

    def configured(self, name: str) -> MapConfig | None:
        """The map's configuration if it was configured on this member."""
        return self._configs.get(name)

    def configure(self, name: str, config: MapConfig) -> bool:
        """Register ``config`` for ``name``; True if it changed. Refuses a conflicting one."""
        current = self._configs.get(name)
        if current == config:
            return False
        if current is not None:
            raise ConfigError(
                f"map {name!r} is already configured differently on this member ({current}); "
                "configure each map once, the same way on every member (GridConfig.maps)"
            )
        self._configs[name] = config
        self._policies.pop(name, None)
        return True

    def reset(self, name: str, config: MapConfig | None) -> None:
        """Forget how ``name`` was configured here (a destroyed map): back to ``config`` (None:
        unconfigured)."""
        if config is None:
            self._configs.pop(name, None)
        else:
            self._configs[name] = config
        self._policies.pop(name, None)
        self.usage.pop(name, None)

    def policy(self, name: str) -> StorePolicy | None:
        """What the map's record stores must track, or None for plain maps."""
        try:
            return self._policies[name]
        except KeyError:
            config = self.config(name)
            policy = None
            if config.bounded or config.max_idle is not None:
                policy = StorePolicy(
                    max_idle=config.max_idle,
                    track_access=True,
                    lfu=config.bounded and config.eviction == "lfu",
                )
            self._policies[name] = policy
            return policy

    def write_behind(self) -> list[tuple[str, MapConfig]]:
        """Maps written to their store behind, with their configs."""
        return [(name, config) for name, config in self._configs.items() if config.write_behind is not None]

    def bounded(self) -> list[str]:
        """Names of maps with a size bound."""
        return [name for name, config in self._configs.items() if config.bounded]
