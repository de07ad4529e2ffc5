"""Measure peergrid beside its baselines (redis-server via redis-py, bare gRPC round trips,
a Python dict) and print figures with ratios against the baselines measured in the same run.

Measurement only: nothing here asserts on timings, and the exit code does not depend on
whether a target is met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from types import FrameType

from benchmarks import baselines, grid, report
from benchmarks._proc import Placement, Processes, cpus_allowed
from benchmarks._results import MemoryFigure, error_summary
from benchmarks._rounds import Outcome, interleave, run_rounds
from benchmarks._workload import Settings, Workload

BACKUP_COUNTS = (0, 1, 2)
EPILOG = """\
usage, from the repository root:
  python -m benchmarks              full run: 100k keys, 7 interleaved rounds (~4.5 min:
                                    ~1.5 min of it baselines, then peergrid's backup_count
                                    series and its 1M-entry memory probe)
  python -m benchmarks --quick      smoke run: every path, little data (~5 s of baselines,
                                    ~20 s with peergrid, which starts three clusters)
  python -m benchmarks --no-grid    baselines only (~1.5 min)

By default the benchmark process and every server it starts (redis-server, the gRPC
echo servers, peergrid members) are pinned to one CPU with taskset, as the ratios in
BENCHMARKS.md were taken; the report says how processes were placed. Progress goes to
stderr, the report to stdout. peergrid is skipped, with the reason printed, when it
cannot be imported or lacks the API the harness uses.
"""
QUICK_NOTE = (
    "--quick: a smoke run; its figures are not for comparison (e.g. memory per entry is "
    "dominated by fixed costs at so few entries)"
)
NOTES = [
    (
        f"dict paths time {baselines.MICRO_SAMPLE} calls per sample (one call is below the "
        "clock's resolution); their p50/p99 are per call"
    ),
    "'time/key' is 1/(keys/s) per round divided by redis-py GET's in the same round",
    (
        "memory: redis is INFO used_memory growth from an empty server, peergrid is the RSS "
        "growth of one single-member process; the last column subtracts the key+value bytes"
    ),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n\n", 1)[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument(
        "--unpinned", action="store_true", help="let the OS place every process (for contrast)"
    )
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to pin to (default: 0)")
    parser.add_argument("--no-grid", action="store_true", help="measure the baselines only")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every round's figures")
    sizes = parser.add_argument_group("sizes (in brackets: full-run default; --quick default)")
    full, quick = Settings(), Settings().quick()
    for f in fields(Settings):
        defaults = f"{getattr(full, f.name):,}; {getattr(quick, f.name):,}"
        sizes.add_argument(
            f"--{f.name.replace('_', '-')}", type=int, metavar="N",
            help=f"{f.metadata['help']} ({defaults})",
        )  # fmt: skip
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    base = Settings().quick() if args.quick else Settings()
    given = {f.name: getattr(args, f.name) for f in fields(Settings)}
    return Settings(**{**asdict(base), **{k: v for k, v in given.items() if v is not None}})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    placement = Placement(None if args.unpinned else frozenset({args.cpu}))
    placement.pin_current_process()  # before any library starts a thread: they inherit it
    signal.signal(signal.SIGTERM, _exit_on_signal)
    load_at_start = os.getloadavg()[0]
    try:
        results = measure(settings, placement, with_grid=not args.no_grid)
    except KeyboardInterrupt:
        print("interrupted; every child process has been stopped", file=sys.stderr)
        return 130
    results.load = (load_at_start, os.getloadavg()[0])
    if args.quick:
        results.notes.insert(0, QUICK_NOTE)
    print(report.render(results))
    if not args.no_grid:
        from benchmarks import nearcache

        settings_nc = nearcache.Settings().quick() if args.quick else nearcache.Settings()
        print()
        print(nearcache.measure(placement, settings_nc))
        from benchmarks import concurrency

        print()
        print(
            concurrency.measure(
                placement, concurrency.Settings().quick() if args.quick else concurrency.Settings()
            )
        )
        from benchmarks import served

        print()
        print(served.measure(placement, served.Settings().quick() if args.quick else served.Settings()))
    if args.json:
        args.json.write_text(json.dumps(report.as_json(results), indent=2))
    return 0


def measure(settings: Settings, placement: Placement, with_grid: bool) -> report.Results:
    workload = Workload(settings)
    with (
        tempfile.TemporaryDirectory(prefix="peergrid-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        procs = stack.enter_context(Processes(placement, Path(tmp)))
        base = baselines.start(stack, procs, workload)
        subject = (
            grid.start(stack, procs, workload)
            if with_grid
            else grid.Subject(unavailable="skipped with --no-grid")
        )
        outcomes = _main_rounds(base, subject, settings.rounds)
        placed = describe_placement(placement, procs)
        memory = [base.memory]
        if subject.unavailable is None:
            redis_set = base.path("redis.set")
            floors = [base.path("grpc.aio.stream"), base.path("grpc.aio.relay.thread")]
            outcomes |= grid.write_series(procs, workload, redis_set, BACKUP_COUNTS[1:], floors)
            memory += _grid_memory(procs, workload, subject.notes)
    return report.Results(
        settings,
        placed,
        {"Python": platform.python_version(), **base.versions},
        outcomes,
        memory,
        subject.unavailable,
        BACKUP_COUNTS if subject.unavailable is None else (),
        [*subject.notes, *NOTES],
    )


def _main_rounds(base: baselines.Baselines, subject: grid.Subject, rounds: int) -> dict[str, Outcome]:
    """Baselines and peergrid interleaved; outcomes listed baselines first, for the report."""
    paths = interleave(base.paths, subject.paths, grid.PAIRS)
    outcomes = run_rounds(paths, rounds, "baselines and peergrid")
    return {p.name: outcomes[p.name] for p in [*base.paths, *subject.paths]}


def _grid_memory(procs: Processes, workload: Workload, notes: list[str]) -> list[MemoryFigure]:
    try:
        return [grid.measure_memory(procs, workload)]
    except Exception as exc:
        notes.append(f"peergrid memory probe failed: {error_summary(exc)}")
        return []


def describe_placement(placement: Placement, procs: Processes) -> list[str]:
    lines = [placement.describe(), f"checked: benchmark process on CPUs {cpus_allowed('self')}"]
    lines += [f"checked: {', '.join(names)} on CPUs {cpus}" for cpus, names in procs.placements().items()]
    return lines


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `with`, stopping the children


if __name__ == "__main__":
    sys.exit(main())
