"""Failover time and migration rate, with default timings.

    python -m benchmarks.failover [--quick] [--entries N]

1. Failover: three members (this process and two ``peergrid member``
   processes) hold data with backup_count=1; one process is killed with
   SIGKILL. Reported: the time until every partition is served again (a read of
   one key per partition succeeds), and until the cluster is safe (backups
   rebuilt).
2. Migration: two members hold N entries of 100-byte values (default 1M); a
   third joins. Reported: the time until the cluster is safe again, and the
   entries the newcomer received (owned and backup) per second.

Not pinned: failover is about timings, not CPU ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

VALUE = b"v" * 100


@contextlib.contextmanager
def member_process(cluster: str, seed: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    argv = [sys.executable, "-m", "peergrid", "member", "--cluster", cluster, "--members", seed]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline().split()[-1]
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def load(m: object, entries: int) -> float:
    started = time.perf_counter()
    for start in range(0, entries, 2000):
        m.put_all({f"e{i}": VALUE for i in range(start, min(entries, start + 2000))})  # type: ignore[attr-defined]
    return entries / (time.perf_counter() - started)


def one_key_per_partition(grid: object, entries: int) -> list[str]:
    from peergrid.partition import partition_of
    from peergrid.serialization import encode_key

    chosen: dict[int, str] = {}
    for i in range(entries):
        chosen.setdefault(partition_of(encode_key(f"e{i}"), 271), f"e{i}")
        if len(chosen) == 271:
            break
    return list(chosen.values())


def failover(entries: int) -> list[str]:
    import peergrid

    cluster = f"fo-{uuid.uuid4().hex[:6]}"
    with (
        peergrid.Grid(cluster=cluster) as grid,
        member_process(cluster, grid.address) as (victim, _),
        member_process(cluster, grid.address),
    ):
        grid.wait_until_safe(60)
        m = grid.get_map("data")
        load(m, entries)
        grid.wait_until_safe(60)
        probe = one_key_per_partition(grid, entries)
        killed = time.perf_counter()
        os.kill(victim.pid, signal.SIGKILL)
        found = m.get_all(probe)  # waits (within the operation timeout) until every partition is served
        served = time.perf_counter() - killed
        safe = grid.wait_until_safe(120)
        rebuilt = time.perf_counter() - killed
        timing = peergrid.Timing()
        header = (
            f"failover (default timings: heartbeat {timing.heartbeat_interval:g} s, "
            f"failure_timeout {timing.failure_timeout:g} s), {entries:,} entries, 3 members:"
        )
        return [
            header,
            f"  SIGKILL -> every partition served again: {served:.2f} s ({len(found)}/{len(probe)} read)",
            f"  SIGKILL -> safe (backups rebuilt): {rebuilt:.2f} s{'' if safe else ' (NOT SAFE)'}",
        ]


def migration(entries: int) -> list[str]:
    import peergrid

    cluster = f"mig-{uuid.uuid4().hex[:6]}"
    with peergrid.Grid(cluster=cluster) as grid, member_process(cluster, grid.address):
        grid.wait_until_safe(60)
        m = grid.get_map("data")
        rate = load(m, entries)
        grid.wait_until_safe(120)
        started = time.perf_counter()
        with member_process(cluster, grid.address) as (_, newcomer):
            safe = grid.wait_until_safe(600)
            took = time.perf_counter() - started
            stats = m.stats().members.get(newcomer)
            moved = (stats.owned_entries + stats.backup_entries) if stats is not None else 0
        header = (
            f"migration: a third member joins two holding {entries:,} entries of 100-byte values "
            f"(loaded at {rate:,.0f} entries/s with backup_count=1):"
        )
        result = (
            f"  join -> safe: {took:.1f} s; the newcomer received {moved:,} entries (owned + backup): "
            f"{moved / took:,.0f} entries/s{'' if safe else ' (NOT SAFE)'}"
        )
        return [header, result]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.failover", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="20k entries instead of 1M")
    parser.add_argument("--entries", type=int, default=None, help="entries for the migration (default 1M)")
    args = parser.parse_args(argv)
    entries = args.entries or (20_000 if args.quick else 1_000_000)
    print("\n".join(failover(min(entries, 100_000))))
    print("\n".join(migration(entries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
