"""Prometheus metrics for one member: its maps' statistics, scraped over HTTP.

Needs the ``metrics`` extra (``pip install 'peergrid[metrics]'``, which brings
prometheus-client). ``Grid.serve_metrics(port)`` or ``GridConfig.metrics_port``
starts a server for this member alone (each member has its own registry, so
several members in one process do not collide). Figures are read on each
scrape; nothing is computed on the grid's hot paths for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from peergrid.errors import ConfigError
from peergrid.stats import LocalMapStats


class Snapshot(NamedTuple):
    """What one scrape reads of a member."""

    member: str
    """Its address."""
    members: int
    """Members it sees."""
    owned: int
    """Partitions it owns."""
    maps: dict[str, LocalMapStats]
    """Each map's statistics on it."""


_COUNTERS = {
    "gets": "Gets by this member's callers",
    "hits": "Gets that found a value",
    "misses": "Gets that found none",
    "puts": "Writes by this member's callers",
    "removes": "Deletes by this member's callers",
    "evictions": "Entries evicted by this member as owner",
    "expirations": "Entries expired by this member as owner",
    "near_cache_hits": "Gets served from the near cache",
    "near_cache_misses": "Near-cache lookups that missed (keys of other members' partitions)",
    "owner_local_gets": "Gets this member answered from its own partitions",
}


class _Collector:
    """Reads the member's statistics when Prometheus scrapes."""

    def __init__(self, read: Callable[[], Snapshot | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snapshot = self._read()
        if snapshot is None:  # the member stopped
            return
        member, stats = snapshot.member, snapshot.maps
        entries = GaugeMetricFamily(
            "peergrid_map_entries", "Live entries held", labels=["member", "map", "copy"]
        )
        nbytes = GaugeMetricFamily(
            "peergrid_map_bytes", "Key and value bytes held", labels=["member", "map", "copy"]
        )
        latency = GaugeMetricFamily(
            "peergrid_map_latency_seconds",
            "Call latency percentiles",
            labels=["member", "map", "op", "quantile"],
        )
        lag = GaugeMetricFamily(
            "peergrid_map_backup_lag", "Writes awaiting backup acks", labels=["member", "map"]
        )
        near = GaugeMetricFamily(
            "peergrid_near_cache_entries", "Near-cache entries", labels=["member", "map"]
        )
        counters = {
            name: CounterMetricFamily(f"peergrid_map_{name}", text, labels=["member", "map"])
            for name, text in _COUNTERS.items()
        }
        for name, s in stats.items():
            entries.add_metric([member, name, "owned"], s.owned_entries)
            entries.add_metric([member, name, "backup"], s.backup_entries)
            nbytes.add_metric([member, name, "owned"], s.owned_bytes)
            nbytes.add_metric([member, name, "backup"], s.backup_bytes)
            for op in ("get", "put"):
                for quantile in ("50", "99"):
                    value = getattr(s, f"{op}_latency_p{quantile}")
                    latency.add_metric([member, name, op, f"0.{quantile}"], value)
            lag.add_metric([member, name], s.backup_lag)
            near.add_metric([member, name], s.near_cache_entries)
            for counter, family in counters.items():
                family.add_metric([member, name], getattr(s, counter))
        members = GaugeMetricFamily("peergrid_cluster_members", "Members this member sees", labels=["member"])
        members.add_metric([member], snapshot.members)
        owned = GaugeMetricFamily(
            "peergrid_partitions_owned", "Partitions this member owns", labels=["member"]
        )
        owned.add_metric([member], snapshot.owned)
        yield from (entries, nbytes, latency, lag, near, members, owned, *counters.values())


def serve(read: Callable[[], Snapshot | None], port: int, host: str) -> tuple[Any, int]:
    """Start an HTTP server for a member's metrics (each scrape calls ``read``); return
    (server, bound port)."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise ConfigError(
            "Prometheus metrics need the metrics extra: pip install 'peergrid[metrics]'"
        ) from exc
    registry = CollectorRegistry()
    registry.register(_Collector(read))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)


class Endpoints:
    """A member's metrics servers (``Grid.serve_metrics``), stopped with it."""

    def __init__(self, read: Callable[[], Snapshot | None]) -> None:
        self._read = read
        self._servers: list[Any] = []

    def serve(self, port: int, host: str) -> int:
        """Start one; return its bound port."""
        server, bound = serve(self._read, port, host)
        self._servers.append(server)
        return bound

    def stop(self) -> None:
        """Stop them all."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
