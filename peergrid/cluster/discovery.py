"""Where a member finds peers besides its static seeds: mDNS, when configured.

Discovered addresses are hints, never proof of membership: membership joins
through them with the same checks as static seeds (cluster name, TLS, the
join call-back), ignoring, with a log line, a peer that fails them.
"""

from __future__ import annotations

import asyncio

from peergrid.cluster.mdns import MdnsDiscovery
from peergrid.config import GridConfig
from peergrid.errors import ConfigError


class Discovery:
    """This member's discovery: announces it and lists the peers it sees (loop thread)."""

    def __init__(self, config: GridConfig, uuid: str) -> None:
        self._config = config
        self._uuid = uuid
        self._mdns: MdnsDiscovery | None = None

    @property
    def enabled(self) -> bool:
        """True when peers are discovered (``discovery="mdns"``)."""
        return self._config.discovery == "mdns"

    async def start(self, host: str, port: int) -> None:
        """Announce this member, serving on ``host:port``, and start looking for peers.

        Raises ``ConfigError`` when mDNS cannot run on ``host``.
        """
        if not self.enabled:
            return
        try:
            mdns = MdnsDiscovery(
                cluster=self._config.cluster,
                member_uuid=self._uuid,
                host=host,
                port=port,
                timing=self._config.timing,
            )
            # Opening the multicast sockets may block briefly: not on the member's loop.
            await asyncio.to_thread(mdns.start)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"cannot run mDNS discovery on {host}: {exc}") from exc
        self._mdns = mdns

    def addresses(self) -> list[str]:
        """Addresses of the members of our cluster that discovery sees now (never ours)."""
        return [peer.address for peer in self._mdns.peers()] if self._mdns is not None else []

    async def close(self) -> None:
        """Stop announcing (goodbyes sent) and looking; safe twice."""
        mdns, self._mdns = self._mdns, None
        if mdns is not None:
            await asyncio.to_thread(mdns.close)
