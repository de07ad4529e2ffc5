"""Statistics: local counters, the cluster aggregate, and Prometheus metrics."""

from __future__ import annotations

import urllib.request

from peergrid import MapConfig, NearCacheConfig
from peergrid.stats import Histogram
from peergrid.testing import cluster
from tests.conftest import wait_for


def test_histogram_percentiles_within_resolution() -> None:
    h = Histogram()
    for us in range(1, 1001):
        h.record(us / 1e6)
    assert abs(h.percentile(0.5) - 500e-6) / 500e-6 < 0.1
    assert abs(h.percentile(0.99) - 990e-6) / 990e-6 < 0.1
    assert Histogram().percentile(0.5) == 0.0


def test_local_stats_count_what_this_member_did(api) -> None:
    with cluster(2) as grids:
        m = api.map(grids[0], "s")
        for i in range(20):
            m.put(f"k{i}", i)
        for i in range(30):
            m.get(f"k{i}")
        m.get_all([f"k{i}" for i in range(5)])
        m.delete("k0")
        stats = m.local_stats()
        assert (stats.puts, stats.removes) == (20, 1)
        assert stats.gets == 35
        assert (stats.hits, stats.misses) == (25, 10)
        assert 0 < stats.get_latency_p50 <= stats.get_latency_p99 < 1
        assert 0 < stats.put_latency_p50 <= stats.put_latency_p99 < 1
        assert stats.backup_lag == 0
        other = api.map(grids[1], "s").local_stats()
        assert other.gets == 0
        assert stats.owned_entries + other.owned_entries == 19


def test_bulk_calls_are_counted_like_single_ones(api) -> None:
    # The async map once counted no get of get_all, and no latency of put_all.
    with cluster(2) as grids:
        m = api.map(grids[0], "bulk")
        m.put_all({f"k{i}": i for i in range(10)})
        assert m.get_all([f"k{i}" for i in range(5, 15)]) == {f"k{i}": i for i in range(5, 10)}
        stats = m.local_stats()
        assert stats.puts == 10
        assert stats.put_latency_p50 > 0
        assert (stats.gets, stats.hits, stats.misses) == (10, 5, 5)
        assert stats.get_latency_p50 > 0


def test_cluster_stats_add_up_every_member(api) -> None:
    with cluster(3) as grids:
        for grid in grids:
            api.map(grid, "agg").put_all({f"{grid.uuid}:{i}": i for i in range(10)})
            api.map(grid, "agg").get("nope")
        stats = api.map(grids[1], "agg").stats()
        assert set(stats.members) == {g.address for g in grids}
        assert stats.total.owned_entries == 30
        assert stats.total.backup_entries == 30
        assert stats.total.puts == 30
        assert stats.total.misses == 3


def test_prometheus_metrics_on_a_port_of_our_choosing(api) -> None:
    config = {"m": MapConfig(near_cache=NearCacheConfig())}
    with cluster(2, maps=config) as grids:
        port = grids[0].serve_metrics(0)
        m = api.map(grids[0], "m")
        m.put_all({f"k{i}": i for i in range(10)})
        wait_for(lambda: all(m.get(f"k{i}") == i for i in range(10)), 5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'peergrid_map_entries{copy="owned",map="m"' in text
        assert 'peergrid_map_puts_total{map="m"' in text
        assert "peergrid_cluster_members" in text
        assert "peergrid_near_cache_entries" in text
        assert "peergrid_map_latency_seconds" in text
