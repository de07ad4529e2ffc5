"""CPU per 1,000 remote gets, on the member that serves them and on the caller, beside the bare
aio stream's echo server and client per 1,000 messages.

    python -m benchmarks.served [--quick] [--unpinned] [--cpu N]

(also run at the end of ``python -m benchmarks``). Three members, backup_count=0: two
``peergrid member`` processes and this process, which reads keys owned by one of the others
(the *owner*) one get at a time. The floor is the benchmark's bare stream: a grpc.aio bidi
stream to a generic handler in a child process echoing bytes, one message each way, its
client on an event loop in this process. CPU time comes from ``/proc/PID/task/*/schedstat``
(every thread of the process), so it holds on a loaded machine where wall times do not. The
paths alternate over rounds; the figures are medians over rounds.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import baselines, grid
from benchmarks._proc import Placement, Processes
from benchmarks._section import run_alone
from benchmarks._workload import Settings as WorkloadSettings
from benchmarks._workload import Workload
from benchmarks.profile import process_cpu_ns


@dataclass
class Settings:
    calls: int = 3_000
    rounds: int = 3
    keys: int = 5_000

    def quick(self) -> Settings:
        return Settings(calls=300, rounds=1, keys=1_000)


@dataclass
class Round:
    """CPU microseconds per call of the serving and the calling process, and wall per call."""

    server_us: float
    caller_us: float
    wall_us: float


def _measure(server_pid: int, run: Callable[[], None], calls: int) -> Round:
    me = os.getpid()
    server, caller = process_cpu_ns(server_pid), process_cpu_ns(me)
    started = time.perf_counter_ns()
    run()
    wall = time.perf_counter_ns() - started
    server, caller = process_cpu_ns(server_pid) - server, process_cpu_ns(me) - caller
    return Round(server / calls / 1e3, caller / calls / 1e3, wall / calls / 1e3)


def measure(placement: Placement, settings: Settings) -> str:
    """Run the rounds; the section of the report."""
    workload = Workload(WorkloadSettings(keys=settings.keys))
    gets: list[Round] = []
    stream: list[Round] = []
    with (
        tempfile.TemporaryDirectory(prefix="peergrid-served-") as tmp,
        Processes(placement, Path(tmp)) as procs,
        contextlib.ExitStack() as stack,
    ):
        cluster = grid.start_cluster(stack, procs, backup_count=0)
        grid.load(cluster, workload)
        owner_of = grid.owner_lookup(cluster.grid)
        assert owner_of is not None, "grid.owner_of is missing"
        by_address = {child.name.split()[-1]: child.pid for child in procs.children}
        owner = sorted(by_address)[0]
        keys = [k for k in workload.keys if owner_of(k) == owner]
        m = cluster.map
        echo = baselines.AioEcho(baselines.start_echo(procs, "aio", workload))
        stack.callback(echo.close)
        echo_pid = procs.children[-1].pid
        raw = [k.encode() for k in keys]
        n = settings.calls

        def remote_gets() -> None:
            for i in range(n):
                m.get(keys[i % len(keys)])

        def echoes() -> None:
            echo.stream([raw[i % len(raw)] for i in range(n)])

        remote_gets()  # warm-up: the pipe, the stream, the caches
        echoes()
        for r in range(settings.rounds):
            order = [(gets, by_address[owner], remote_gets), (stream, echo_pid, echoes)]
            for results, pid, run in order if r % 2 == 0 else reversed(order):
                results.append(_measure(pid, run, n))
    return _render(gets, stream, settings, placement)


def _median(rounds: list[Round], field: str) -> float:
    return float(statistics.median(getattr(r, field) for r in rounds))


def _render(gets: list[Round], stream: list[Round], settings: Settings, placement: Placement) -> str:
    rows = [
        ("CPU, serving: the owner member / the echo server", "server_us"),
        ("CPU, calling: this process (its member included) / the stream's client", "caller_us"),
        ("wall time", "wall_us"),
    ]
    title = (
        "remote gets against the bare aio stream (one message each way), per 1,000 calls "
        f"({settings.rounds} rounds of {settings.calls:,}, medians; backup_count=0)"
    )
    lines = [
        title,
        f"  {'ms per 1,000':72s} {'peergrid':>8s} {'stream':>8s} {'ratio':>7s}",
    ]
    for label, field in rows:
        ours, floor = _median(gets, field), _median(stream, field)
        lines.append(f"  {label:72s} {ours:8.0f} {floor:8.0f} {ours / floor:6.2f}x")
    lines.append(f"  placement: {placement.describe()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_alone(argv, "python -m benchmarks.served", __doc__ or "", measure, Settings())


if __name__ == "__main__":
    raise SystemExit(main())
