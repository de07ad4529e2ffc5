"""Near-cache benchmark: hit latency, and a zipf(0.99) 95%-read workload against redis.

    python -m benchmarks.nearcache [--quick] [--unpinned] [--cpu N]

(also run at the end of ``python -m benchmarks``).

1. Near-cache hit latency: one member reading a key another member owns, after
   the first read cached it; each call timed on its own.
2. Three worker processes each run the same zipf(0.99) 95%-read / 5%-write
   sequence of 100-byte values for a few seconds: once as three peergrid
   members (each embedding a member, the map near-cached), once as three
   redis-py clients of one redis-server. Runs alternate; the ratio of
   aggregate ops/s is taken per pair of runs and the median printed, with the
   near cache's hit rate. Pinned to one CPU by default, like the other figures.
   The comparison is made with one calling thread per process (a script) and
   again with several (a threaded service: each thread its own stretch of the
   sequence; redis-py gets a pool of as many connections); and for peergrid with
   backup_count=1 (its default: every write also copied to a second member) and
   backup_count=0 (one copy, as the single redis-server holds), each against the
   same pair's redis run.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from benchmarks._proc import Placement, free_port
from benchmarks._section import run_alone

WORKERS = 3


@dataclass
class Settings:
    keys: int = 10_000
    duration: float = 5.0
    pairs: int = 3
    hit_samples: int = 200_000
    threads: tuple[int, ...] = (1, 16)  # calling threads per process, one comparison each
    backup_counts: tuple[int, ...] = (1, 0)  # peergrid's runs in each pair

    def quick(self) -> Settings:
        return Settings(
            keys=2_000,
            duration=1.5,
            pairs=1,
            hit_samples=20_000,
            threads=self.threads,
            backup_counts=self.backup_counts,
        )


@dataclass
class Run:
    ops_per_s: float
    hit_rate: float | None = None
    miss_rate: float | None = None  # near-cache misses (other members' keys fetched) per read


def hit_latency(samples: int) -> tuple[float, float]:
    """p50 and p99 (µs) of a near-cache hit, two in-process members."""
    import peergrid
    from peergrid.testing import cluster

    config = {"m": peergrid.MapConfig(near_cache=peergrid.NearCacheConfig(max_staleness=60.0))}
    with cluster(2, maps=config) as grids:
        reader = grids[1]
        key = next(f"k{i}" for i in range(1000) if reader.owner_of(f"k{i}").uuid != reader.uuid)
        grids[0].get_map("m").put(key, b"v" * 100)
        m = reader.get_map("m")
        deadline = time.monotonic() + 10
        while len(reader._node.maps.near_caches["m"]) == 0 and time.monotonic() < deadline:
            m.get(key)
        times = []
        clock = time.perf_counter_ns
        for _ in range(samples):
            start = clock()
            m.get(key)
            times.append(clock() - start)
        times.sort()
        return times[len(times) // 2] / 1000, times[int(len(times) * 0.99)] / 1000


class _Worker:
    def __init__(self, placement: Placement, argv: list[str]) -> None:
        command = placement.command([sys.executable, "-m", "benchmarks._nc_worker", *argv])
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self._line(60)
        if not line.startswith("ready"):
            raise RuntimeError(f"worker did not start: {line!r}")
        self.address = line.split()[1]

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if not line and time.monotonic() > deadline:
            raise RuntimeError("worker gave no answer")
        return line.strip()

    def say(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, int]:
        return json.loads(self._line(timeout))  # type: ignore[no-any-return]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.say("stop")
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def _workers(placement: Placement, argvs: list[list[str]]) -> Iterator[list[_Worker]]:
    started: list[_Worker] = []
    try:
        started.extend(_Worker(placement, argv) for argv in argvs)
        yield started
    finally:
        for worker in started:
            worker.stop()


def _measure(workers: list[_Worker], duration: float) -> list[dict[str, int]]:
    for worker in workers:
        worker.say("go")
    return [worker.result(duration + 60) for worker in workers]


def peergrid_run(placement: Placement, settings: Settings, seed: int, threads: int, backup_count: int) -> Run:
    cluster = f"nc-{uuid.uuid4().hex[:6]}"
    args = [str(settings.keys), str(seed), str(settings.duration), str(threads), str(backup_count)]
    first = _Worker(placement, ["peergrid", cluster, "", *args])
    try:
        with _workers(
            placement, [["peergrid", cluster, first.address, *args] for _ in range(WORKERS - 1)]
        ) as rest:
            results = _measure([first, *rest], settings.duration)
    finally:
        first.stop()
    ops = sum(r["reads"] + r["writes"] for r in results) / settings.duration
    reads = max(sum(r["reads"] for r in results), 1)
    hits = sum(r.get("near_hits", 0) for r in results)
    return Run(ops, hits / reads, sum(r.get("near_misses", 0) for r in results) / reads)


def redis_run(placement: Placement, settings: Settings, seed: int, threads: int) -> Run:
    import redis

    port = free_port()
    server = subprocess.Popen(
        placement.command(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        ),
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        pipe = client.pipeline(transaction=False)
        for i in range(settings.keys):  # the same keyspace the first peergrid member loads
            pipe.set(f"zipf:{i}", b"v" * 100)
        pipe.execute()
        args = [str(settings.keys), str(seed), str(settings.duration), str(threads), "-"]
        with _workers(
            placement, [["redis", f"127.0.0.1:{port}", "-", *args] for _ in range(WORKERS)]
        ) as workers:
            results = _measure(workers, settings.duration)
    finally:
        server.terminate()
        server.wait(10)
    return Run(sum(r["reads"] + r["writes"] for r in results) / settings.duration)


@dataclass
class Comparison:
    threads: int
    grid: dict[int, list[Run]]  # by backup_count
    redis: list[Run]

    def lines(self) -> list[str]:
        redis_ops = statistics.median(r.ops_per_s for r in self.redis)
        calling = f"{self.threads} calling thread{'s' if self.threads > 1 else ''} per process"
        lines = [f"  {calling}:", f"    redis-server, {WORKERS} redis-py clients: {redis_ops:,.0f} ops/s"]
        for backup_count, runs in self.grid.items():
            ratios = [g.ops_per_s / r.ops_per_s for g, r in zip(runs, self.redis, strict=True)]
            hit_rate = statistics.median(r.hit_rate or 0.0 for r in runs)
            miss_rate = statistics.median(r.miss_rate or 0.0 for r in runs)
            grid_ops = statistics.median(r.ops_per_s for r in runs)
            per_pair = ", ".join(f"{r:.2f}" for r in ratios)
            copies = BACKUPS.get(backup_count, f"backup_count={backup_count}")
            lines += [
                (
                    f"    peergrid, {WORKERS} members, {copies}: {grid_ops:,.0f} ops/s "
                    f"(of reads: near-cache hits {hit_rate:.1%}, misses {miss_rate:.1%}, "
                    "owner-local the rest)"
                ),
                (
                    f"      ratio peergrid/redis: {statistics.median(ratios):.2f}x "
                    f"(per pair: {per_pair})   (target >= 3x)"
                ),
            ]
        return lines


BACKUPS = {
    0: "backup_count=0 (one copy, as redis)",
    1: "backup_count=1 (default, two copies)",
}


def compare(placement: Placement, settings: Settings, threads: int) -> Comparison:
    """Alternating pairs of runs, redis and peergrid at each backup count, with ``threads``
    calling threads each."""
    result = Comparison(threads, {count: [] for count in settings.backup_counts}, [])
    for pair in range(settings.pairs):
        print(f"near cache: {threads} threads, pair {pair + 1}/{settings.pairs}", file=sys.stderr, flush=True)
        runs: list[int | None] = [None, *settings.backup_counts]  # None: the redis run
        for backup_count in runs if pair % 2 == 0 else runs[::-1]:
            if backup_count is None:
                result.redis.append(redis_run(placement, settings, pair, threads))
            else:
                run = peergrid_run(placement, settings, pair, threads, backup_count)
                result.grid[backup_count].append(run)
    return result


def measure(placement: Placement, settings: Settings) -> str:
    """Run everything and return the report section."""
    p50, p99 = hit_latency(settings.hit_samples)
    comparisons = [compare(placement, settings, threads) for threads in settings.threads]
    header = (
        f"near cache (zipf 0.99, 95% reads, 100-byte values, {settings.keys:,} keys, "
        f"{WORKERS} processes, {settings.duration:g} s per run, after warming each near cache until it "
        "holds every other member's key)"
    )
    lines = [header, f"  near-cache hit p50 {p50:.2f} µs, p99 {p99:.2f} µs   (target p50 <= 2 µs)"]
    for comparison in comparisons:
        lines.extend(comparison.lines())
    lines.append(f"  placement: {placement.describe()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_alone(argv, "python -m benchmarks.nearcache", __doc__ or "", measure, Settings())


if __name__ == "__main__":
    sys.exit(main())
