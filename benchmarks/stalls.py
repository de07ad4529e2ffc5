"""Loop stalls from expiry: remote-get latency while many TTL'd entries live and expire.

    python -m benchmarks.stalls [--entries 1000000] [--seconds 20] [--backup-count 1]

Three members: two ``python -m benchmarks.stalls --member`` children and this process. Two
phases, in one run, on the same cluster:

- ``plain``: ``--entries`` entries without a TTL, then ``--seconds`` of remote gets;
- ``ttl``: the same entries with a TTL each, chosen so that they all live through the
  first half of the window and expire, spread evenly, through the second half.

The remote gets read keys of a small probe map (no TTL) owned by the two other members,
back to back from one thread; what they measure is how long those members' loops (and this
process's, which carries the call) leave a request waiting. Each member also runs a
loop-lag probe: a callback due every ``LAG_INTERVAL_S`` on the member's runtime loop that
records how late it ran; the worst lateness over a window is about the longest step the loop
ran in it. Printed: p50/p99/p99.9/max per phase, the ttl/plain ratio of each (the issue's
target: p99.9 within 2x), each member's worst loop lag, and the entries expired by the end.
Measurement only: nothing asserts on a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks._proc import Child, Placement, Processes, flags, free_port, wait_for_port, wait_until
from benchmarks._workload import key_name

HOST = "127.0.0.1"
CLUSTER = "bench-stalls"
CHUNK = 1_000
PROBE_KEYS = 5_000  # keys of the probe map; those owned elsewhere are read
LAG_INTERVAL_S = 0.002  # the loop-lag probe's period
LONG_STEP_S = 0.003  # with --steps, steps using more CPU than this are counted by what ran
SAMPLE_S = 0.001  # with --steps, how often the stack of a long step is sampled
SAMPLE_DEPTH = 5  # innermost frames counted per sample
SAMPLES_SHOWN = (
    8  # the most sampled stacks printed per member and window  # innermost frames counted per sample
)
LAG_REPORT_S = 0.25  # a child member prints its worst lag this often
TTL_LOAD_FACTOR = 1.8  # the ttl phase's load time planned for, in plain phase loads (default)
LOAD_ATTEMPTS = 5  # a load chunk ending indeterminate (a loaded machine) is sent again
JOIN_TIMEOUT_S = 120.0
SAFE_TIMEOUT_S = 600.0


class LagProbe:
    """How late a callback due every ``LAG_INTERVAL_S`` runs on a loop: the longest step."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._worst = 0.0
        loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        self._due = self._loop.time() + LAG_INTERVAL_S
        self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self._worst = max(self._worst, now - self._due)
        self._due = now + LAG_INTERVAL_S
        self._loop.call_at(self._due, self._tick)

    def take(self) -> float:
        """The worst lateness (seconds) since the last call (read from any thread)."""
        worst, self._worst = self._worst, 0.0
        return worst


class StepTimer:
    """With ``--steps``: the longest loop step since the last call, and what ran (every
    callback of every loop in the process is timed: a few per cent of overhead).

    Timed twice: wall clock, and the CPU time of the loop's thread (``time.thread_time``).
    On a shared machine a step's wall time includes the time the OS ran other processes;
    its CPU time is what the step itself costs, so the longest step is chosen by CPU time
    (its wall time is reported alongside).

    A step's name is only its outermost coroutine (a gRPC handler's is grpc's own wrapper), so
    a sampler thread also reads the stack of a step running longer than ``LONG_STEP_S`` every
    ``SAMPLE_S`` (it gets the GIL at the interpreter's switch interval, 5 ms) and counts the
    innermost frames: what the long steps spend their time in."""

    def __init__(self) -> None:
        self.worst: tuple[float, float, str] = (0.0, 0.0, "")  # (cpu s, wall s, what)
        self.long: dict[str, list[float]] = {}  # what ran -> [steps over LONG_STEP_S, most CPU s]
        self.samples: dict[str, int] = {}  # innermost frames of a long step -> samples
        self._running: tuple[int, float] | None = None  # (thread, began) of the step running
        run = asyncio.events.Handle._run
        wall, cpu = time.perf_counter, time.thread_time

        def timed(handle: asyncio.events.Handle) -> None:
            began, began_cpu = wall(), cpu()
            self._running = (threading.get_ident(), began)
            run(handle)
            self._running = None
            took_cpu = cpu() - began_cpu
            if took_cpu > LONG_STEP_S:
                name = _step_name(handle)
                if took_cpu > self.worst[0]:
                    self.worst = (took_cpu, wall() - began, name)
                seen = self.long.setdefault(name, [0, 0.0])
                seen[0] += 1
                seen[1] = max(seen[1], took_cpu)

        asyncio.events.Handle._run = timed  # type: ignore[assignment]
        threading.Thread(target=self._sample, name="stalls-sampler", daemon=True).start()

    def _sample(self) -> None:
        while True:
            time.sleep(SAMPLE_S)
            running = self._running
            if running is None or time.perf_counter() - running[1] < LONG_STEP_S:
                continue
            frame = sys._current_frames().get(running[0])
            names: list[str] = []
            while frame is not None and len(names) < SAMPLE_DEPTH:
                code = frame.f_code
                names.append(f"{code.co_name} ({Path(code.co_filename).name}:{frame.f_lineno})")
                frame = frame.f_back
            key = " < ".join(names)
            self.samples[key] = self.samples.get(key, 0) + 1

    def take(self) -> tuple[tuple[float, float, str], dict[str, list[float]], dict[str, int]]:
        """The longest step, the long ones by what ran, and the stack samples of long steps,
        since the last call."""
        worst, self.worst = self.worst, (0.0, 0.0, "")
        long, self.long = self.long, {}
        samples, self.samples = self.samples, {}
        return worst, long, samples


class GcTimer:
    """Python's cyclic GC pauses in this process (``gc.callbacks``): the longest, which
    generation, how many collections of each generation, and their total, since the last call.
    A collection runs inside whatever loop step allocated last, so a long step the step timer
    names may be a GC pause: this says which."""

    def __init__(self) -> None:
        self._began = self._began_cpu = 0.0
        self._reset()
        gc.callbacks.append(self._callback)

    def _reset(self) -> None:
        self.worst = (0.0, -1, 0.0)  # (wall seconds, generation, CPU seconds)
        self.counts = [0, 0, 0]
        self.total = 0.0
        self.worst_cpu = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began, self._began_cpu = time.perf_counter(), time.thread_time()
            return
        took, took_cpu = time.perf_counter() - self._began, time.thread_time() - self._began_cpu
        generation = info["generation"]
        self.counts[generation] += 1
        self.total += took
        self.worst_cpu = max(self.worst_cpu, took_cpu)
        if took > self.worst[0]:
            self.worst = (took, generation, took_cpu)

    def take(self) -> dict[str, Any]:
        """``gc_s`` (longest pause, wall), ``gc_gen``, ``gc_cpu_s`` (the longest in CPU time),
        ``gc_counts`` (per generation), ``gc_total_s``."""
        row = {
            "gc_s": self.worst[0],
            "gc_cpu_s": self.worst_cpu,
            "gc_gen": self.worst[1],
            "gc_counts": list(self.counts),
            "gc_total_s": self.total,
        }
        self._reset()
        return row


def _step_name(handle: asyncio.events.Handle) -> str:
    """What a step ran: a task's coroutine, then (after ``<``) where it awaits now, innermost
    last; or the callback's name."""
    callback = handle._callback  # type: ignore[attr-defined]
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        names: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None and len(names) < 8:
            names.append(str(getattr(coro, "__qualname__", type(coro).__name__)))
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        return " < ".join(names)
    return str(getattr(callback, "__qualname__", callback))


# ---------------------------------------------------------------------- child member
def member(args: argparse.Namespace) -> None:
    """A member with a lag probe, printing ``{"t": wall clock, "lag": seconds}`` lines
    (with ``--steps``, also the longest step and what ran)."""
    import peergrid

    signal.signal(signal.SIGTERM, _exit)
    steps = StepTimer() if args.steps else None
    gcs = GcTimer()
    members = [m for m in args.members.split(",") if m]
    grid = peergrid.Grid(
        cluster=CLUSTER, bind=args.bind, members=members, backup_count=args.backup_count, timing=_timing(args)
    )
    if args.gc_freeze:
        freeze_gc()
    try:
        probe = LagProbe(grid._node.loop)
        while True:
            time.sleep(LAG_REPORT_S)
            row: dict[str, Any] = {"t": time.time(), "lag": probe.take(), **gcs.take()}
            if steps is not None:
                (row["step_cpu_s"], row["step_s"], row["step"]), row["long"], row["samples"] = steps.take()
            print(json.dumps(row), flush=True)
    finally:
        grid.shutdown()


def freeze_gc() -> None:
    """What an application may do once its member started: move every object alive now (grpc,
    protobuf, the modules: ~34,000) out of the collector's reach, so a full collection walks
    only what was made since."""
    gc.collect()
    gc.freeze()


def _exit(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


# ---------------------------------------------------------------------- the run
@dataclass
class Phase:
    name: str
    latencies_ns: list[int] = field(default_factory=list)
    load_s: float = 0.0
    lag: dict[str, float] = field(default_factory=dict)  # member -> worst lag (s) in the window
    #: member -> longest step by CPU time (--steps): (cpu s, wall s, what ran)
    steps: dict[str, tuple[float, float, str]] = field(default_factory=dict)
    #: member -> what ran -> [steps over LONG_STEP_S of CPU, most CPU s] (--steps)
    long: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: member -> innermost frames of long steps -> samples (--steps)
    samples: dict[str, dict[str, int]] = field(default_factory=dict)
    gc: dict[str, dict[str, Any]] = field(default_factory=dict)  # member -> GcTimer.take() over the window
    #: member -> GcTimer.take() over the whole phase (its load too: where most collections run)
    gc_phase: dict[str, dict[str, Any]] = field(default_factory=dict)
    expired: int = 0
    errors: list[str] = field(default_factory=list)  # gets that failed (timed out), by error

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    def figures(self) -> dict[str, float]:
        """Milliseconds per call."""
        return {
            "p50": self.percentile(0.50),
            "p99": self.percentile(0.99),
            "p99.9": self.percentile(0.999),
            "max": max(self.latencies_ns) / 1e6,
        }


def run(args: argparse.Namespace) -> dict[str, Phase]:
    import peergrid

    placement = Placement(frozenset({args.cpu}) if args.cpu is not None else None)
    placement.pin_current_process()
    with (
        tempfile.TemporaryDirectory(prefix="peergrid-stalls-") as logs,
        Processes(placement, Path(logs)) as procs,
    ):
        options = {
            "--backup-count": args.backup_count,
            "--sweep-slice": args.sweep_slice,
            "--sweep-pause": args.sweep_pause,
        }
        addresses, children = start_members(procs, options, args.steps, gc_freeze=args.gc_freeze)
        grid = peergrid.Grid(
            cluster=CLUSTER,
            bind=f"{HOST}:0",
            members=addresses,
            backup_count=args.backup_count,
            timing=_timing(args),
        )
        try:
            wait_until(lambda: len(grid.members()) == 3, JOIN_TIMEOUT_S, "3 members")
            _safe(grid)
            if args.gc_freeze:
                freeze_gc()
            own = LagProbe(grid._node.loop)
            own_gc = (GcTimer(), GcTimer())  # (the window, the whole phase)
            remote = _probe_keys(grid)
            phases: dict[str, Phase] = {}
            for name in ("plain", "ttl"):
                estimate = phases["plain"].load_s if phases else 0.0
                phases[name] = _phase(grid, name, args, remote, estimate, own, own_gc, children)
            return phases
        finally:
            grid.shutdown()


def start_members(
    procs: Processes,
    options: dict[str, object],
    steps: bool,
    count: int = 2,
    gc_freeze: bool = False,
    seeds: Sequence[str] = (),
) -> tuple[list[str], list[Child]]:
    """``count`` child members with a lag probe (``member``), each joining ``seeds`` and the
    ones before it; their addresses and processes."""
    addresses = [f"{HOST}:{free_port(HOST)}" for _ in range(count)]
    children: list[Child] = []
    for index, address in enumerate(addresses):
        own = {**options, "--bind": address, "--members": ",".join([*seeds, *addresses[:index]])}
        extra = (["--steps"] if steps else []) + (["--gc-freeze"] if gc_freeze else [])
        child = procs.python(f"member {address}", "-m", "benchmarks.stalls", "--member", *extra, *flags(own))
        wait_for_port(child, HOST, int(address.rsplit(":", 1)[1]), JOIN_TIMEOUT_S)
        children.append(child)
    return addresses, children


def _safe(grid: Any) -> None:
    if not grid.wait_until_safe(timeout=SAFE_TIMEOUT_S):
        raise TimeoutError(f"cluster not safe after {SAFE_TIMEOUT_S:.0f} s")


def _probe_keys(grid: Any) -> list[str]:
    """Keys of a probe map (no TTL) that the two other members own."""
    keys = [f"probe:{i}" for i in range(PROBE_KEYS)]
    grid.get_map("probe").put_all(dict.fromkeys(keys, b"p" * 100))
    return [k for k in keys if grid.owner_of(k).uuid != grid.uuid]


def _phase(
    grid: Any,
    name: str,
    args: argparse.Namespace,
    remote: Sequence[str],
    estimate: float,
    own: LagProbe,
    own_gc: tuple[GcTimer, GcTimer],
    children: Sequence[Child],
) -> Phase:
    import peergrid

    phase = Phase(name)
    m = grid.get_map(f"stalls-{name}")
    value = b"v" * args.value_size
    half = args.seconds / 2
    began = time.monotonic()
    phase_from = time.time()
    own_gc[1].take()
    # ttl phase: deadlines spread over the window's second half. The window opens at a time
    # planned from the plain phase's load: loading with TTLs took up to 1.6x as long; a load
    # slower still opens it late (fewer entries expire in it: the report says how many).
    window_at = time.time() + estimate * args.ttl_load_factor + 5.0
    expire_from = window_at + half
    chunks = range(0, args.entries, CHUNK)
    retried = 0
    for j, start in enumerate(chunks):
        chunk = {key_name(i): value for i in range(start, min(args.entries, start + CHUNK))}
        for attempt in range(LOAD_ATTEMPTS):
            try:
                if name == "plain":
                    m.put_all(chunk)
                else:
                    deadline = expire_from + half * j / len(chunks)
                    m.put_all(chunk, ttl=max(deadline - time.time(), 0.5))
                break
            except peergrid.IndeterminateWriteError:  # (a put_all is safe to repeat)
                if attempt == LOAD_ATTEMPTS - 1:
                    raise
                retried += 1
    if retried:
        print(
            f"{name}: {retried} load chunks retried (indeterminate: an owner's lease ran out)",
            file=sys.stderr,
        )
    _safe(grid)
    phase.load_s = time.monotonic() - began
    print(f"{name}: {args.entries:,} entries loaded in {phase.load_s:.1f} s", file=sys.stderr)
    expired_before = m.stats().total.expirations if name == "ttl" else 0
    probe = grid.get_map("probe")
    if name == "ttl":
        time.sleep(max(0.0, window_at - time.time()))
    own.take()
    own_gc[0].take()
    window_from = time.time()
    clock = time.perf_counter_ns
    record = phase.latencies_ns.append
    stop = time.monotonic() + args.seconds
    i = 0
    while time.monotonic() < stop:
        key = remote[i % len(remote)]
        t0 = clock()
        try:
            probe.get(key)
        except peergrid.PeerGridError as exc:  # a timeout: counted at the time it took
            phase.errors.append(type(exc).__name__)
        record(clock() - t0)
        i += 1
    window_to = time.time()
    phase.lag["this process"] = own.take()
    phase.gc["this process"] = own_gc[0].take()
    phase.gc_phase["this process"] = own_gc[1].take()
    for child in children:
        (
            phase.lag[child.name],
            phase.steps[child.name],
            phase.gc[child.name],
            phase.long[child.name],
            phase.samples[child.name],
        ) = _child_lag(child, window_from, window_to)
        phase.gc_phase[child.name] = _child_lag(child, phase_from, window_to)[2]
    if name == "ttl":
        try:
            phase.expired = m.stats().total.expirations - expired_before
        except (peergrid.PeerGridError, TimeoutError) as exc:  # (the member's own wait ran out)
            print(f"{name}: expirations not counted: {exc}", file=sys.stderr)
        print(f"{name}: {phase.expired:,} entries expired during the window", file=sys.stderr)
    m.destroy()  # frees the phase's entries before the next one loads
    _safe(grid)
    return phase


def _child_lag(
    child: Child, window_from: float, window_to: float
) -> tuple[float, tuple[float, float, str], dict[str, Any], dict[str, list[float]], dict[str, int]]:
    """A child's worst loop lag in the window; with ``--steps`` its longest step (CPU s, wall
    s, what) and its long steps by what ran; its GC pauses (as ``GcTimer.take``)."""
    worst, step = 0.0, (0.0, 0.0, "")
    long: dict[str, list[float]] = {}
    samples: dict[str, int] = {}
    pauses: dict[str, Any] = {
        "gc_s": 0.0,
        "gc_gen": -1,
        "gc_cpu_s": 0.0,
        "gc_counts": [0, 0, 0],
        "gc_total_s": 0.0,
    }
    for line in child.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError):
            row = json.loads(line)
            if not window_from <= row["t"] <= window_to + LAG_REPORT_S:
                continue
            worst = max(worst, float(row["lag"]))
            if "step" in row:
                step = max(step, (float(row["step_cpu_s"]), float(row["step_s"]), str(row["step"])))
            for name, (count, most) in row.get("long", {}).items():
                seen = long.setdefault(name, [0, 0.0])
                seen[0] += count
                seen[1] = max(seen[1], most)
            for stack, count in row.get("samples", {}).items():
                samples[stack] = samples.get(stack, 0) + count
            if row.get("gc_s", 0.0) > pauses["gc_s"]:
                pauses["gc_s"], pauses["gc_gen"] = row["gc_s"], row["gc_gen"]
            pauses["gc_cpu_s"] = max(pauses["gc_cpu_s"], row.get("gc_cpu_s", 0.0))
            pauses["gc_counts"] = [
                a + b for a, b in zip(pauses["gc_counts"], row.get("gc_counts", [0] * 3), strict=True)
            ]
            pauses["gc_total_s"] += row.get("gc_total_s", 0.0)
    return worst, step, pauses, long, samples


def report(phases: dict[str, Phase], args: argparse.Namespace) -> dict[str, Any]:
    plain, ttl = phases["plain"].figures(), phases["ttl"].figures()
    print(
        f"\nremote get latency (ms), {args.entries:,} entries, backup_count {args.backup_count}, "
        f"{args.seconds:.0f} s windows, sweep slices {args.sweep_slice:g} ms / pauses {args.sweep_pause:g} ms"
    )
    print(f"{'':8} {'p50':>8} {'p99':>8} {'p99.9':>8} {'max':>8} {'calls':>8}")
    for name, figures in (("plain", plain), ("ttl", ttl)):
        row = " ".join(f"{figures[q]:8.2f}" for q in ("p50", "p99", "p99.9", "max"))
        print(f"{name:8} {row} {len(phases[name].latencies_ns):8,}")
    for name, phase in phases.items():
        if phase.errors:
            print(
                f"{name}: {len(phase.errors)} gets failed ({', '.join(sorted(set(phase.errors)))}), "
                "counted at the time they took"
            )
    ratios = {q: ttl[q] / plain[q] for q in plain}
    print(f"{'ttl/plain':8} " + " ".join(f"{ratios[q]:7.2f}x" for q in ("p50", "p99", "p99.9", "max")))
    print(f"target: p99.9 within 2x -> {'met' if ratios['p99.9'] <= 2 else 'NOT met'}")
    print("\nworst loop lag (ms) per member, per window:")
    for who in phases["plain"].lag:
        lags = "   ".join(f"{name} {phase.lag[who] * 1e3:8.1f}" for name, phase in phases.items())
        print(f"  {who:28} {lags}")
    print(
        "\nPython GC per member, per window: longest pause wall (generation) / its CPU, "
        "collections gen0/1/2, total wall (+load: the whole phase, its load too):"
    )
    for name, phase in phases.items():
        for span, by_member in (("", phase.gc), ("+load", phase.gc_phase)):
            for who, pauses in by_member.items():
                counts = "/".join(str(c) for c in pauses["gc_counts"])
                longest, cpu, total = (pauses[k] * 1e3 for k in ("gc_s", "gc_cpu_s", "gc_total_s"))
                print(
                    f"  {name + span:10} {who:28} {longest:7.1f} ms (gen {pauses['gc_gen']}) / "
                    f"{cpu:6.1f} ms CPU  {counts:>12}  {total:8.1f} ms"
                )
    if any(phase.steps for phase in phases.values()):
        print(f"\nloop steps over {LONG_STEP_S * 1e3:.0f} ms of CPU, per member (count, most CPU ms):")
    for name, phase in phases.items():
        for who, (cpu, wall, what) in phase.steps.items():
            print(
                f"  {name}: longest step on {who}: {cpu * 1e3:.1f} ms CPU ({wall * 1e3:.1f} ms wall) {what}"
            )
            for what_ran, (count, most) in sorted(phase.long[who].items(), key=lambda kv: -kv[1][1])[:6]:
                print(f"      {int(count):6} x, up to {most * 1e3:6.1f} ms: {what_ran}")
            for stack, count in sorted(phase.samples[who].items(), key=lambda kv: -kv[1])[:SAMPLES_SHOWN]:
                print(f"      {count:6} samples in: {stack}")
    print(f"\nentries expired during the ttl window: {phases['ttl'].expired:,} of {args.entries:,}")
    return {
        "entries": args.entries,
        "backup_count": args.backup_count,
        "seconds": args.seconds,
        "sweep_slice_ms": args.sweep_slice,
        "sweep_pause_ms": args.sweep_pause,
        "plain": plain,
        "ttl": ttl,
        "ratios": ratios,
        "lag_ms": {name: {k: v * 1e3 for k, v in p.lag.items()} for name, p in phases.items()},
        "expired": phases["ttl"].expired,
        "gc": {name: p.gc for name, p in phases.items()},
        "gc_phase": {name: p.gc_phase for name, p in phases.items()},
        "steps": {name: p.steps for name, p in phases.items()},
        "long_steps": {name: p.long for name, p in phases.items()},
        "samples": {name: p.samples for name, p in phases.items()},
        "errors": {name: len(p.errors) for name, p in phases.items()},
    }


def _default_timing() -> Any:
    import peergrid

    return peergrid.Timing()


def _timing(args: argparse.Namespace) -> Any:
    """The members' timings: the defaults, with the sweep's slice and pause given."""
    slice_s, pause_s = args.sweep_slice / 1e3, args.sweep_pause / 1e3
    return dataclasses.replace(_default_timing(), expiry_sweep_slice=slice_s, expiry_sweep_pause=pause_s)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stalls",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries per phase (default 1M)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window per phase (default 20)")
    parser.add_argument("--backup-count", type=int, default=1, help="backups per partition (default 1)")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    default = _default_timing()
    parser.add_argument(
        "--sweep-slice",
        type=float,
        default=default.expiry_sweep_slice * 1e3,
        help="Timing.expiry_sweep_slice in ms (default %(default)g)",
    )
    parser.add_argument(
        "--sweep-pause",
        type=float,
        default=default.expiry_sweep_pause * 1e3,
        help="Timing.expiry_sweep_pause in ms (default %(default)g)",
    )
    parser.add_argument(
        "--cpu", type=int, help="pin this process and the members to one CPU (default: unpinned)"
    )
    parser.add_argument(
        "--ttl-load-factor",
        type=float,
        default=TTL_LOAD_FACTOR,
        help="the ttl load's time planned for, in plain loads (default %(default)s; more on a busy "
        "machine, where a slower load opens the window late and fewer entries expire in it)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--steps", action="store_true", help="the child members also name their longest loop step (slower)"
    )
    parser.add_argument(
        "--gc-freeze", action="store_true", help="every member calls gc.freeze() once it started"
    )
    parser.add_argument("--member", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bind", help=argparse.SUPPRESS)
    parser.add_argument("--members", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.member:
        member(args)
        return 0
    signal.signal(signal.SIGTERM, _exit)
    figures = report(run(args), args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
