"""What a write costs the whole cluster, with and without near caches on the map.

    python -m benchmarks.writecost [--rounds N] [--sets N] [--threads N] [--unpinned] [--cpu N]

Three member processes (``backup_count=1``) hold a map of 2,000 keys; every member reads
every key first (so with near caches each one holds the others' entries), then one member
sets keys other members own, ``--sets`` of them from ``--threads`` threads, while the other
two only serve. The figure is the CPU time of all three processes over the sets (from
``/proc/PID/stat``: it holds on a loaded machine, where the zipf workload's ops/s do not),
per set: a map with near caches against one without, in alternating rounds. The difference
is what keeping the other members' near caches current costs a write (events, and the
near caches' own work). Measurement only; nothing here asserts on anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

from benchmarks._proc import Placement, _child_env

KEYS = [f"w:{i}" for i in range(2000)]
VALUE = b"v" * 100


def worker(cluster: str, seeds: str, writer: bool, sets: int, threads: int, near: bool) -> None:
    """One member: load (the first), read every key, then set (the writer) or serve."""
    import peergrid

    config = peergrid.MapConfig(near_cache=peergrid.NearCacheConfig(max_entries=10_000) if near else None)
    grid = peergrid.Grid(
        cluster=cluster, bind="127.0.0.1:0", members=[s for s in seeds.split(",") if s], maps={"w": config}
    )
    m = grid.get_map("w")
    if not seeds:
        m.put_all(dict.fromkeys(KEYS, VALUE))
    print(f"ready {grid.address}", flush=True)
    sys.stdin.readline()
    grid.wait_until_safe(60)
    m.get_all(KEYS)
    print("warm", flush=True)
    sys.stdin.readline()
    if writer:
        remote = [k for k in KEYS if grid.owner_of(k).uuid != grid.uuid]

        def run(first: int) -> None:
            for i in range(first, sets, threads):
                m.set(remote[i % len(remote)], VALUE)

        callers = [threading.Thread(target=run, args=(j,)) for j in range(threads)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
    print("done", flush=True)
    sys.stdin.readline()  # killed meanwhile


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(sets: int, threads: int, near: bool) -> float:
    """µs of CPU (all three processes) per set."""
    cluster = f"wc-{uuid.uuid4().hex[:6]}"
    procs: list[subprocess.Popen[str]] = []

    def start(seeds: str, writer: bool) -> str:
        args = [cluster, seeds, "1" if writer else "0", str(sets), str(threads), "1" if near else "0"]
        # Started from this pinned process, the workers inherit its CPU mask.
        command = [sys.executable, "-m", "benchmarks.writecost", "--worker", *args]
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_child_env()
        )
        procs.append(proc)
        assert proc.stdout is not None
        return proc.stdout.readline().split()[1]

    def say_all(word: str, reply: str) -> None:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(word + "\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != reply:
                raise RuntimeError(f"a worker answered {line!r}, not {reply!r}")

    try:
        first = start("", writer=False)
        start(first, writer=False)
        start(first, writer=True)
        say_all("go", "warm")
        before = sum(_cpu_seconds(p.pid) for p in procs)
        say_all("go", "done")
        used = sum(_cpu_seconds(p.pid) for p in procs) - before
        return used / sets * 1e6
    finally:  # killed, not shut down: members leaving one by one would only log about it
        for proc in procs:
            proc.kill()
            proc.wait(60)


def main(argv: list[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.writecost", description=summary)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind of map (alternating)")
    parser.add_argument("--sets", type=int, default=3000, help="sets per round")
    parser.add_argument("--threads", type=int, default=1, help="threads of the setting member")
    parser.add_argument("--unpinned", action="store_true", help="let the OS place every process")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to pin to (default: 0)")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        cluster, seeds, writer, sets, threads, near = args.worker
        worker(cluster, seeds, writer == "1", int(sets), int(threads), near == "1")
        return 0
    placement = Placement(None if args.unpinned else frozenset({args.cpu}))
    placement.pin_current_process()
    figures: dict[bool, list[float]] = {False: [], True: []}
    started = time.monotonic()
    for _ in range(args.rounds):
        for near in (False, True):
            figures[near].append(one_round(args.sets, args.threads, near))
    plain, cached = statistics.median(figures[False]), statistics.median(figures[True])
    print(
        f"CPU per set, 3 members, backup_count=1, {args.threads} setting thread(s), "
        f"{args.rounds} rounds of {args.sets:,} sets each (medians; all rounds in brackets)"
    )
    print(f"  without near caches  {plain:7.0f} µs  {[round(x) for x in figures[False]]}")
    print(f"  with near caches     {cached:7.0f} µs  {[round(x) for x in figures[True]]}")
    print(f"  near caches' share   {cached - plain:7.0f} µs  ({cached / plain:.2f}x)")
    print(f"  placement: {placement.describe()}; {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
