"""One worker of the near-cache benchmark, in its own process (see benchmarks/nearcache.py).

    python -m benchmarks._nc_worker peergrid CLUSTER SEEDS KEYS SEED DURATION THREADS BACKUP_COUNT
    python -m benchmarks._nc_worker redis HOST:PORT - KEYS SEED DURATION THREADS -

Prints "ready <address>" once joined (or connected), waits for "go" on stdin,
runs the zipf(0.99) 95%-read workload for DURATION seconds on THREADS threads
(each its own stretch of the sequence, sharing the process's one member or
redis-py client) and prints one JSON line of counts.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
import sys
import threading
import time
from typing import Any

READ_SHARE = 0.95
ZIPF_S = 0.99
VALUE = b"v" * 100


def zipf_sequence(keys: int, seed: int, length: int = 200_000) -> list[tuple[int, bool]]:
    """``length`` (key index, is_read) draws: zipf(0.99) over ``keys`` keys, 95% reads."""
    weights = list(itertools.accumulate(1.0 / (i + 1) ** ZIPF_S for i in range(keys)))
    total = weights[-1]
    rng = random.Random(seed)
    return [
        (bisect.bisect_left(weights, rng.random() * total), rng.random() < READ_SHARE) for _ in range(length)
    ]


def run(
    get: Any, put: Any, sequence: list[tuple[int, bool]], names: list[str], duration: float, threads: int = 1
) -> dict[str, int]:
    """Run the sequence for ``duration`` seconds on ``threads`` threads; total counts."""
    if threads == 1:
        return _run_one(get, put, sequence, names, time.perf_counter() + duration)
    deadline = time.perf_counter() + duration
    step = len(sequence) // threads
    results: list[dict[str, int]] = []

    def one(start: int) -> None:
        counts = _run_one(get, put, sequence[start:] + sequence[:start], names, deadline)
        results.append(counts)  # list.append is atomic

    workers = [threading.Thread(target=one, args=(i * step,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"reads": sum(r["reads"] for r in results), "writes": sum(r["writes"] for r in results)}


def _run_one(
    get: Any, put: Any, sequence: list[tuple[int, bool]], names: list[str], deadline: float
) -> dict[str, int]:
    reads = writes = 0
    for index, is_read in itertools.cycle(sequence):
        if is_read:
            get(names[index])
            reads += 1
        else:
            put(names[index], VALUE)
            writes += 1
        if (reads + writes) % 256 == 0 and time.perf_counter() >= deadline:
            break
    return {"reads": reads, "writes": writes}


def main() -> None:
    kind, target, seeds, keys, seed, duration, threads, backup_count = sys.argv[1:9]
    names = [f"zipf:{i}" for i in range(int(keys))]
    sequence = zipf_sequence(int(keys), int(seed))
    if kind == "peergrid":
        import peergrid

        config = peergrid.MapConfig(near_cache=peergrid.NearCacheConfig(max_entries=int(keys)))
        grid = peergrid.Grid(
            cluster=target,
            members=[s for s in seeds.split(",") if s],
            backup_count=int(backup_count),
            maps={"zipf": config},
        )
        m = grid.get_map("zipf")
        if not seeds.strip(","):  # the first member loads the keyspace, before the others join
            for start in range(0, len(names), 1000):
                m.put_all(dict.fromkeys(names[start : start + 1000], VALUE))
        print(f"ready {grid.address}", flush=True)
        get, put = m.get, m.set
    else:
        import redis

        host, port = target.rsplit(":", 1)
        client = redis.Redis(host=host, port=int(port), max_connections=int(threads))
        client.ping()
        print(f"ready {target}", flush=True)
        get, put = client.get, client.set
    for line in sys.stdin:
        if line.strip() == "go":
            break
    if kind == "peergrid":
        grid.wait_until_safe(60)
        # Warm the near cache: steady state is what we measure. It holds an owner's entries once
        # that owner's first heartbeat came (its lease), so warm until it holds every other
        # member's key, within a deadline.
        others = sum(1 for name in names if grid.owner_of(name).uuid != grid.uuid)
        deadline = time.monotonic() + 30
        while True:
            for start in range(0, len(names), 500):
                m.get_all(names[start : start + 500])
            if m.local_stats().near_cache_entries >= others or time.monotonic() > deadline:
                break
    if kind == "peergrid":
        before = m.local_stats()  # the warm-up's misses are not the workload's
    counts = run(get, put, sequence, names, float(duration), int(threads))
    if kind == "peergrid":
        stats = m.local_stats()
        counts |= {
            "near_hits": stats.near_cache_hits - before.near_cache_hits,
            "near_misses": stats.near_cache_misses - before.near_cache_misses,
        }
    print(json.dumps(counts), flush=True)
    for line in sys.stdin:  # wait for "stop": members leave together, not while others still measure
        if line.strip() == "stop":
            break
    if kind == "peergrid":
        grid.shutdown()


if __name__ == "__main__":
    main()
