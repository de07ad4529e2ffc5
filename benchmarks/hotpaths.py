"""The two hot read paths, of this tree and of another, in one run: before/after a change.

    python -m benchmarks.hotpaths --against /work/main [--rounds 7] [--samples 2000]

An owner-local get (a key of the calling member's own partition; on a map without a near
cache, and on one with a near cache, looked up first) and a near-cache hit (a key of another
member's, cached), on two in-process members, 100-byte values. Each round starts
one child process per tree (``PYTHONPATH`` set to it), alternating, the order reversed every
other round; a child times ``samples`` batches of 100 calls of each path and reports the
median per call. Printed: each tree's median over rounds, and this tree's ratio to the other
taken per round (median and range): neighbours in time drift together on a shared machine.
Measurement only: nothing asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._proc import Placement

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
BATCH = 100


def child(samples: int) -> dict[str, float]:
    """Time both paths in this process (the peergrid on ``PYTHONPATH``); µs per call."""
    import peergrid
    from peergrid.testing import cluster

    config = {"m": peergrid.MapConfig(near_cache=peergrid.NearCacheConfig(max_staleness=60.0))}
    with cluster(2, maps=config) as grids:
        reader = grids[1]
        keys = [f"k{i}" for i in range(1000)]
        mine = next(k for k in keys if reader.owner_of(k).uuid == reader.uuid)
        theirs = next(k for k in keys if reader.owner_of(k).uuid != reader.uuid)
        grids[0].get_map("m").put_all({mine: b"v" * 100, theirs: b"v" * 100})
        m = reader.get_map("m")
        near = reader._node.maps.near_caches["m"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the owner's lease came and the key is cached
            before = near.hits
            m.get(theirs)
            if near.hits > before:
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("the near cache never served a hit")
        plain = reader.get_map("plain")  # no near cache
        plain.put(mine, b"v" * 100)
        figures = {}
        for path, get, key in (
            ("owner_local_get", plain.get, mine),
            ("owner_local_near", m.get, mine),  # a map with a near cache: looked up first
            ("near_cache_hit", m.get, theirs),
        ):
            clock = time.perf_counter_ns
            per_call = []
            for _ in range(samples):
                start = clock()
                for _ in range(BATCH):
                    get(key)
                per_call.append((clock() - start) / BATCH / 1000)
            figures[path] = statistics.median(per_call)
        return figures


def run_child(tree: Path, samples: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, str(HERE), "--child", "--samples", str(samples)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=tree,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", type=Path, help="the other tree (e.g. /work/main)", required=False)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument(
        "--cpu",
        type=int,
        default=0,
        help="pin the children to this CPU (default 0; -1: unpinned). Unpinned on a 2-vCPU VM, a "
        "child's figures were bimodal (1.4 or 2.3 µs an owner-local get) by where it ran",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.samples)))
        return
    if args.cpu >= 0:
        Placement(frozenset({args.cpu})).pin_current_process()  # the children inherit it
    trees = {"this": ROOT}
    if args.against is not None:
        trees["other"] = args.against.resolve()
    rounds: list[dict[str, dict[str, float]]] = []
    for r in range(args.rounds + 1):  # the first round warms up, dropped
        order = list(trees.items()) if r % 2 == 0 else list(reversed(trees.items()))
        figures = {label: run_child(tree, args.samples) for label, tree in order}
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: {figures}", file=sys.stderr)
        if r:
            rounds.append(figures)
    for path in ("owner_local_get", "owner_local_near", "near_cache_hit"):
        line = [f"{path:16}"]
        for label, tree in trees.items():
            line.append(f"{label} ({tree}) {statistics.median(f[label][path] for f in rounds):.3f} µs")
        if "other" in trees:
            ratios = sorted(f["this"][path] / f["other"][path] for f in rounds)
            line.append(
                f"this/other {statistics.median(ratios):.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f})"
            )
        print(" | ".join(line))


if __name__ == "__main__":
    main()
