"""64 concurrent callers doing remote gets, as threads and as asyncio tasks, beside redis-py.

    python -m benchmarks.concurrency [--quick] [--unpinned] [--cpu N]

(also run at the end of ``python -m benchmarks``). Three members: two
``peergrid member`` processes and this process; every key read is owned by
another member, so each get crosses the network, and concurrent gets bound
for one member share frames. The reference is redis-py's GET on one
connection, measured in the same run, alternating with the subjects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from benchmarks._proc import Placement, free_port
from benchmarks._section import run_alone
from benchmarks.profile import process_cpu_ns

CALLERS = 64


@dataclass
class Settings:
    duration: float = 4.0
    rounds: int = 3
    keys: int = 5_000

    def quick(self) -> Settings:
        return Settings(duration=1.0, rounds=1, keys=1_000)


@dataclass
class Run:
    """What one subject did in one round: operations per second, and CPU microseconds per
    operation of every process involved."""

    ops: float
    cpu_us: float


def _cpu_ns(pids: list[int]) -> int:
    return sum(process_cpu_ns(pid) for pid in pids)


def _measured(pids: list[int], run: Callable[[], tuple[float, int]]) -> Run:
    """``run`` returns (ops/s, operations done); CPU of ``pids`` over it, per operation."""
    before = _cpu_ns(pids)
    ops, done = run()
    return Run(ops, (_cpu_ns(pids) - before) / max(1, done) / 1e3)


@contextlib.contextmanager
def _members(placement: Placement, cluster: str, pids: list[int]) -> Iterator[list[str]]:
    procs: list[subprocess.Popen[str]] = []
    addresses: list[str] = []
    try:
        for _ in range(2):
            argv = [
                sys.executable,
                "-m",
                "peergrid",
                "member",
                "--cluster",
                cluster,
                "--backup-count",
                "0",
                "--members",
                ",".join(addresses),
            ]
            proc = subprocess.Popen(placement.command(argv), stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            pids.append(proc.pid)
            assert proc.stdout is not None
            addresses.append(proc.stdout.readline().split()[-1])
        yield addresses
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _remote_keys(grid: object, keys: int) -> list[str]:
    return [f"k{i}" for i in range(keys) if grid.owner_of(f"k{i}").uuid != grid.uuid]  # type: ignore[attr-defined]


def threads_ops(m: object, keys: list[str], duration: float) -> float:
    """Gets per second from ``CALLERS`` threads."""
    return _threads(m, keys, duration)[0]


def _threads(m: object, keys: list[str], duration: float) -> tuple[float, int]:
    counts = [0] * CALLERS
    stop = time.perf_counter() + duration

    def work(i: int) -> None:
        rng = random.Random(i)
        while time.perf_counter() < stop:
            m.get(rng.choice(keys))  # type: ignore[attr-defined]
            counts[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(CALLERS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started), sum(counts)


def tasks_ops(cluster: str, seeds: list[str], keys: list[str], duration: float, pids: list[int]) -> Run:
    """Gets per second from ``CALLERS`` asyncio tasks on an AsyncGrid (a member of its own, in
    this process), and the CPU per get of ``pids`` while they ran (not while it joined)."""
    import peergrid

    async def main() -> Run:
        async with peergrid.AsyncGrid(cluster=cluster, members=seeds, backup_count=0) as grid:
            await grid.wait_until_safe(30)
            m = grid.get_map("c")
            remote = [k for k in keys if grid.node.manager.table.owner(_partition(k)) != grid.uuid]
            count = 0
            stop = time.perf_counter() + duration

            async def work(i: int) -> None:
                nonlocal count
                rng = random.Random(i)
                while time.perf_counter() < stop:
                    await m.get(rng.choice(remote))
                    count += 1

            before = _cpu_ns(pids)
            started = time.perf_counter()
            await asyncio.gather(*(work(i) for i in range(CALLERS)))
            ops = count / (time.perf_counter() - started)
            return Run(ops, (_cpu_ns(pids) - before) / max(1, count) / 1e3)

    return asyncio.run(main())


def _partition(key: str) -> int:
    from peergrid.partition import partition_of
    from peergrid.serialization import encode_key

    return partition_of(encode_key(key), 271)


def redis_ops(placement: Placement, keys: list[str], duration: float) -> Run:
    """redis-py GET on one connection, one caller; CPU of this process and redis-server."""
    import redis

    port = free_port()
    server = subprocess.Popen(
        placement.command(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]),
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, single_connection_client=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.mset(dict.fromkeys(keys, b"x" * 100))

        def gets() -> tuple[float, int]:
            rng = random.Random(0)
            count = 0
            stop = time.perf_counter() + duration
            started = time.perf_counter()
            while time.perf_counter() < stop:
                client.get(rng.choice(keys))
                count += 1
            return count / (time.perf_counter() - started), count

        return _measured([os.getpid(), server.pid], gets)
    finally:
        server.terminate()
        server.wait(10)


def measure(placement: Placement, settings: Settings) -> str:
    """Run the rounds and return the report section."""
    import peergrid

    cluster = f"conc-{uuid.uuid4().hex[:6]}"
    keys = [f"k{i}" for i in range(settings.keys)]
    threads: list[Run] = []
    tasks: list[Run] = []
    reference: list[Run] = []
    members: list[int] = []
    with _members(placement, cluster, members) as seeds:
        grid = peergrid.Grid(cluster=cluster, members=seeds, backup_count=0)
        pids = [os.getpid(), *members]
        try:
            grid.wait_until_safe(30)
            m = grid.get_map("c")
            for start in range(0, len(keys), 1000):
                m.put_all(dict.fromkeys(keys[start : start + 1000], b"x" * 100))
            remote = _remote_keys(grid, settings.keys)
            for round_ in range(settings.rounds):
                print(f"concurrency: round {round_ + 1}/{settings.rounds}", file=sys.stderr, flush=True)
                reference.append(redis_ops(placement, keys, settings.duration))
                threads.append(_measured(pids, partial(_threads, m, remote, settings.duration)))
                tasks.append(tasks_ops(cluster, [*seeds, grid.address], keys, settings.duration, pids))
        finally:
            grid.shutdown()

    def ratios(runs: list[Run]) -> str:
        ops = statistics.median(run.ops / ref.ops for run, ref in zip(runs, reference, strict=True))
        cpu = statistics.median(ref.cpu_us / run.cpu_us for run, ref in zip(runs, reference, strict=True))
        us = statistics.median(run.cpu_us for run in runs)
        rate = statistics.median(run.ops for run in runs)
        return f"{rate:,.0f} ops/s  {ops:.2f}x; {us:.0f} us CPU/op  {cpu:.2f}x"

    ref_us = statistics.median(run.cpu_us for run in reference)
    ref_ops = statistics.median(run.ops for run in reference)
    lines = [
        f"{CALLERS} concurrent callers, remote gets (3 members, keys owned by the other two)",
        f"  redis-py GET, one connection:  {ref_ops:,.0f} ops/s; {ref_us:.0f} us CPU/op (the reference)",
        f"  peergrid, {CALLERS} threads:       {ratios(threads)}",
        f"  peergrid, {CALLERS} asyncio tasks: {ratios(tasks)}",
        "  (ratios per round, median: ops/s over the reference's, and the reference's CPU per op over",
        "  peergrid's (every process: this one and the members); target: >= 1x the reference)",
        f"  placement: {placement.describe()}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_alone(argv, "python -m benchmarks.concurrency", __doc__ or "", measure, Settings())


if __name__ == "__main__":
    sys.exit(main())
