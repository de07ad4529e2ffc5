"""Bulk calls and the loops: what a large put_all or get_all does to everyone else's gets.

    python -m benchmarks.bulk [--entries 30000] [--rounds 3] [--cpu 0]

Three members: two ``python -m benchmarks.stalls --member --steps`` children (a loop-lag
probe, and their longest loop step by CPU time) and this process. One thread does remote
gets of a small probe map back to back (keys owned by the two other members), and another
sets of the same keys, through the phases: ``quiet`` (nothing else), ``put_all`` (this
process stores ``--entries`` entries in one call, ``--rounds`` times), ``get_all`` (it reads
them back in one call, ``--rounds`` times) and ``join`` (a fourth member joins once a map
holds ``--join-entries`` entries; until the cluster is safe again).
Printed per phase: each bulk call's time (or its error), the probe gets' and sets'
p50/p99/max, and each member's worst loop lag and longest step (CPU ms; with the GC's
longest pause inside the window beside it, as a collection runs inside some step).
Measurement only: nothing asserts on a timing. (Before ``Limits.max_frame_ops``, a put_all
of 30,000 entries pinned to one core held each owner's loop ~2 s in one step and failed with
its lease run out; docs/performance.md.)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import stalls
from benchmarks._proc import Child, Placement, Processes, wait_until

HOST = stalls.HOST
PROBE_KEYS = 2_000
QUIET_S = 3.0
SETTLE_S = 0.5  # after the last bulk call, before the window closes (its acks, its backups)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import peergrid

    placement = Placement(frozenset({args.cpu}) if args.cpu is not None else None)
    placement.pin_current_process()
    with (
        tempfile.TemporaryDirectory(prefix="peergrid-bulk-") as logs,
        Processes(placement, Path(logs)) as procs,
    ):
        options = {"--backup-count": 1}
        addresses, children = stalls.start_members(procs, options, steps=True, gc_freeze=args.gc_freeze)
        grid = peergrid.Grid(cluster=stalls.CLUSTER, bind=f"{HOST}:0", members=addresses, backup_count=1)
        try:
            wait_until(lambda: len(grid.members()) == 3, stalls.JOIN_TIMEOUT_S, "3 members")
            stalls._safe(grid)
            if args.gc_freeze:
                stalls.freeze_gc()
            probe = grid.get_map("probe")
            keys = [f"probe:{i}" for i in range(PROBE_KEYS)]
            probe.put_all(dict.fromkeys(keys, b"p" * 100))
            remote = [k for k in keys if grid.owner_of(k).uuid != grid.uuid]
            data = {f"bulk:{i}": b"v" * args.value_size for i in range(args.entries)}
            bulk = grid.get_map("bulk")
            calls = {
                "quiet": lambda: time.sleep(QUIET_S),
                "put_all": lambda: bulk.put_all(data),
                "get_all": lambda: len(bulk.get_all(list(data))),
            }
            phases = [
                _phase(name, call, 1 if name == "quiet" else args.rounds, probe, remote, children)
                for name, call in calls.items()
            ]
            if args.join_entries:
                # Not timed: the entries the joining member takes its share of.
                held = grid.get_map("held")
                for start in range(0, args.join_entries, args.entries):
                    end = min(args.join_entries, start + args.entries)
                    held.put_all({f"held:{i}": b"v" * args.value_size for i in range(start, end)})
                stalls._safe(grid)
                join = [*addresses, grid.address]
                phases.append(
                    _phase(
                        "join", lambda: _join(procs, join, children, args, grid), 1, probe, remote, children
                    )
                )
            return phases
        finally:
            grid.shutdown()


def _join(
    procs: Processes, members: list[str], children: list[Child], args: argparse.Namespace, grid: Any
) -> None:
    """A fourth member joins; returns once the cluster is safe again (every partition it takes
    over transferred, every backup rebuilt)."""
    _, joined = stalls.start_members(
        procs, {"--backup-count": 1}, steps=True, count=1, gc_freeze=args.gc_freeze, seeds=members
    )
    children.extend(joined)
    wait_until(lambda: len(grid.members()) == 4, stalls.JOIN_TIMEOUT_S, "4 members")
    stalls._safe(grid)


def _phase(
    name: str, call: Any, rounds: int, probe: Any, remote: list[str], children: list[Child]
) -> dict[str, Any]:
    import peergrid

    latencies: list[float] = []
    set_latencies: list[float] = []
    stop = threading.Event()
    value = b"p" * 100

    errors: Counter[str] = Counter()  # by probe and type

    def probing(call: Any, into: list[float], name: str) -> None:
        i = 0
        while not stop.is_set():
            began = time.perf_counter()
            try:
                call(remote[i % len(remote)])
            except peergrid.PeerGridError as exc:  # counted at the time it took, and by type
                errors[f"{name} {type(exc).__name__}"] += 1
            into.append(time.perf_counter() - began)
            i += 1

    probers = [
        threading.Thread(target=probing, args=(probe.get, latencies, "get"), name="probe-gets"),
        threading.Thread(
            target=probing, args=(lambda k: probe.set(k, value), set_latencies, "set"), name="probe-sets"
        ),
    ]
    window_from = time.time()
    for prober in probers:
        prober.start()
    outcomes: list[str] = []
    for _ in range(rounds):
        began = time.perf_counter()
        try:
            call()
            outcomes.append(f"{time.perf_counter() - began:.2f} s")
        except peergrid.PeerGridError as exc:
            outcomes.append(f"{type(exc).__name__} after {time.perf_counter() - began:.2f} s")
    time.sleep(SETTLE_S)
    stop.set()
    for prober in probers:
        prober.join()
    window_to = time.time()
    latencies.sort()
    set_latencies.sort()
    members = {}
    for child in children:
        lag, (step_cpu, _, what), pauses, _, _ = stalls._child_lag(child, window_from, window_to)
        members[child.name] = {
            "lag_ms": lag * 1e3,
            "step_cpu_ms": step_cpu * 1e3,
            "step": what,
            "gc_cpu_ms": pauses["gc_cpu_s"] * 1e3,
        }
    return {
        "phase": name,
        "calls": outcomes,
        "gets": len(latencies),
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "max_ms": latencies[-1] * 1e3,
        "sets": len(set_latencies),
        "set_p50_ms": set_latencies[len(set_latencies) // 2] * 1e3,
        "set_p99_ms": set_latencies[int(len(set_latencies) * 0.99)] * 1e3,
        "set_max_ms": set_latencies[-1] * 1e3,
        "errors": dict(errors),
        "members": members,
    }


def report(phases: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"bulk calls of {args.entries:,} entries, {args.rounds} rounds; remote gets meanwhile")
    for p in phases:
        calls = ", ".join(p["calls"]) if p["phase"] != "quiet" else "-"
        print(f"\n{p['phase']}: calls {calls}")
        print(
            f"  probe gets: {p['gets']:,}, p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms, "
            f"max {p['max_ms']:.1f} ms"
        )
        print(
            f"  probe sets: {p['sets']:,}, p50 {p['set_p50_ms']:.2f} ms, p99 {p['set_p99_ms']:.2f} ms, "
            f"max {p['set_max_ms']:.1f} ms"
        )
        if p["errors"]:
            print("  probe errors: " + ", ".join(f"{n} {what}" for what, n in sorted(p["errors"].items())))
        for member, m in p["members"].items():
            print(
                f"  {member}: worst loop lag {m['lag_ms']:.1f} ms; longest step {m['step_cpu_ms']:.1f} ms "
                f"of CPU (longest GC pause {m['gc_cpu_ms']:.1f} ms)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bulk",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--entries", type=int, default=30_000, help="entries per bulk call (default 30,000)")
    parser.add_argument("--rounds", type=int, default=3, help="bulk calls per phase (default 3)")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    parser.add_argument("--cpu", type=int, default=0, help="pin this process and the members to this CPU")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="every member calls gc.freeze() once it started"
    )
    parser.add_argument(
        "--join-entries",
        type=int,
        default=300_000,
        help="then a fourth member joins a map of this many entries (0: no join phase)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    phases = run(args)
    report(phases, args)
    if args.json:
        Path(args.json).write_text(json.dumps(phases, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
