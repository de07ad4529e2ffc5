"""Map statistics on one member: counters and latency histograms.

Counters are plain integers bumped on the hot path; under concurrent threads
an increment can, rarely, be lost (Python's ``+=`` is not atomic), which is
the price of not taking a lock per operation. Latencies go into a log-scale
histogram (8 buckets per doubling, ~9% resolution) from which percentiles are
read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

_BUCKETS_PER_DOUBLING = 8
_BUCKETS = 64 * _BUCKETS_PER_DOUBLING
_log2 = math.log2  # bound once: every get and put records its latency


class Histogram:
    """Durations in a log-scale histogram; percentiles read back to ~9%."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.total = 0

    def record(self, seconds: float) -> None:
        """Count one duration."""
        ns = seconds * 1e9
        bucket = int(_log2(ns) * _BUCKETS_PER_DOUBLING) if ns > 1 else 0
        if bucket >= _BUCKETS:
            bucket = _BUCKETS - 1
        self.counts[bucket] += 1
        self.total += 1

    def percentile(self, q: float) -> float:
        """The duration (seconds) below which a fraction ``q`` of the recorded ones fall; 0 if none."""
        if not self.total:
            return 0.0
        rank = q * self.total
        seen = 0
        for bucket, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return float(2 ** ((bucket + 0.5) / _BUCKETS_PER_DOUBLING)) / 1e9
        return 0.0

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts to this one."""
        for i, count in enumerate(other.counts):
            self.counts[i] += count
        self.total += other.total


class MapCounters:
    """What one member counted for one map."""

    __slots__ = (
        "evictions",
        "expirations",
        "get_latency",
        "gets",
        "hits",
        "misses",
        "owner_local_gets",
        "put_latency",
        "puts",
        "removes",
        "store_failures",
        "store_loads",
        "store_writes",
    )

    def __init__(self) -> None:
        self.gets = 0  # gets by this member's callers (get, get_all keys, contains_key)
        self.hits = 0  # of which found a value
        self.misses = 0  # of which found none
        self.owner_local_gets = 0  # of which were answered from this member's own partitions
        self.puts = 0  # writes by this member's callers
        self.removes = 0  # deletes by this member's callers
        self.evictions = 0  # entries this member evicted as owner
        self.expirations = 0  # entries this member expired as owner
        self.store_loads = 0  # keys this member loaded from the map's store as owner
        self.store_writes = 0  # writes this member made to the map's store as owner
        self.store_failures = 0  # store calls that failed (each also logged)
        self.get_latency = Histogram()
        self.put_latency = Histogram()


@dataclass(frozen=True)
class LocalMapStats:
    """What one member holds of one map, and what it counted.

    Entry counts and bytes are this member's share; operation counters and
    latencies are of the calls this member's callers made (wherever the keys
    lived); evictions and expirations are of entries this member owned.
    Latencies are in seconds.
    """

    owned_entries: int = 0
    """Live entries in partitions this member owns."""
    backup_entries: int = 0
    """Live entries in backup copies this member holds."""
    owned_bytes: int = 0
    """Serialized key and value bytes in owned partitions."""
    backup_bytes: int = 0
    """Serialized key and value bytes in backup copies."""
    gets: int = 0
    hits: int = 0
    misses: int = 0
    puts: int = 0
    removes: int = 0
    get_latency_p50: float = 0.0
    get_latency_p99: float = 0.0
    put_latency_p50: float = 0.0
    put_latency_p99: float = 0.0
    evictions: int = 0
    expirations: int = 0
    near_cache_entries: int = 0
    near_cache_hits: int = 0
    """Gets (and keys of ``get_all``, ``contains_key``) served from the near cache."""
    near_cache_misses: int = 0
    """Near-cache lookups that missed: keys of other members' partitions, fetched from their
    owners. Keys of this member's own partitions are never near-cached and not counted here."""
    backup_lag: int = 0
    """Writes to owned partitions that backups have not acknowledged yet (the worst partition)."""
    store_loads: int = 0
    """Keys loaded from the map's store (read-through) by this member as owner."""
    store_writes: int = 0
    """Writes this member made to the map's store as owner."""
    store_failures: int = 0
    """Store calls that failed on this member (each is also logged)."""
    write_behind_pending: int = 0
    """Writes queued for the store on partitions this member owns (write-behind)."""
    owner_local_gets: int = 0
    """Gets (and keys of ``get_all``) this member answered from its own
    partitions on the caller's thread, with no hop (also counted in ``gets``)."""

    def as_dict(self) -> dict[str, float]:
        """The figures by name."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class MapStats:
    """A map's statistics over the cluster: each member's, and their sum."""

    total: LocalMapStats
    """Counters summed over members; latency percentiles are the worst member's."""
    members: dict[str, LocalMapStats]
    """Each member's statistics, by address."""


_WORST = {"get_latency_p50", "get_latency_p99", "put_latency_p50", "put_latency_p99", "backup_lag"}


def aggregate(per_member: dict[str, dict[str, float]]) -> MapStats:
    """Sum members' figures (taking the worst latency and lag)."""
    names = [f.name for f in fields(LocalMapStats)]
    totals: dict[str, float] = dict.fromkeys(names, 0.0)
    members = {}
    for address, values in per_member.items():
        members[address] = _local(values)
        for name in names:
            value = values.get(name, 0.0)
            totals[name] = max(totals[name], value) if name in _WORST else totals[name] + value
    return MapStats(total=_local(totals), members=members)


def _local(values: dict[str, float]) -> LocalMapStats:
    kwargs: dict[str, float | int] = {}
    for f in fields(LocalMapStats):
        value = values.get(f.name, 0.0)
        kwargs[f.name] = value if f.type in ("float", float) else int(value)
    return LocalMapStats(**kwargs)  # type: ignore[arg-type]


def counters_in(table: dict[str, MapCounters], name: str) -> MapCounters:
    """Map ``name``'s counters in ``table``, made on first use."""
    counters = table.get(name)
    if counters is None:
        counters = table[name] = MapCounters()
    return counters
