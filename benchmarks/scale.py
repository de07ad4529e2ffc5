"""Scale: N member processes on this machine, started together, as an operator would.

    python -m benchmarks.scale --members 10,40,100        # ~2 min per size at defaults
    python -m benchmarks.scale --members 20 --idle 300    # five idle minutes

For each N: start N ``peergrid member`` processes at once with the same three seeds and the
default timings; report when every member lists all N (joined) and when the cluster is safe,
whether any member exited or removed a live member, the load rate of ``--entries`` entries,
the idle CPU of each member over ``--idle`` seconds (mean, max and the master's), then kill
one member (SIGKILL) and time until every entry is readable again and until safe, then stop
one gracefully (SIGTERM) and time until safe, checking every entry after each.

Measurement only: nothing here asserts on timings. Progress goes to stderr, the table to
stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REMOVED = ("removing it", "was dropped from cluster")
TAKEN_OVER = "partitions it took over"  # peergrid.replication: a new owner serves


class Member:
    """One ``peergrid member --commands`` process, driven over stdin (JSON lines)."""

    def __init__(self, port: int, seeds: Sequence[str], cpus: str | None, extra: Sequence[str]) -> None:
        argv = [sys.executable, "-m", "peergrid", "member", "--cluster", "scale", "--commands"]
        argv += ["--bind", f"127.0.0.1:{port}", "--members", ",".join(seeds), *extra]
        if cpus:
            argv = ["taskset", "-c", cpus, *argv]
        self.address = f"127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.log_times: list[float] = []  # monotonic time each log line arrived
        self.started: float | None = None
        self._owed = 0  # answers of commands that timed out, still to come (skipped)
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_log, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.started is None and "listening on" in line:
                self.started = time.monotonic()
                continue
            self.lines.put(line)
        self.lines.put("")

    def _pump_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log_times.append(time.monotonic())
            self.log.append(line.rstrip("\n"))

    def first_log(self, text: str, after: float) -> float | None:
        """When the first log line containing ``text`` arrived after ``after`` (monotonic)."""
        for at, line in zip(list(self.log_times), list(self.log), strict=False):
            if at >= after and text in line:
                return at
        return None

    def last_log(self, text: str, after: float, before: float) -> float | None:
        """When the last log line containing ``text`` arrived between ``after`` and ``before``."""
        times = [
            at
            for at, line in zip(list(self.log_times), list(self.log), strict=False)
            if after <= at <= before and text in line
        ]
        return max(times, default=None)

    def write_log(self, path: str, t0: float) -> None:
        with open(path, "w") as f:
            for at, line in zip(list(self.log_times), list(self.log), strict=False):
                f.write(f"{at - t0:9.3f} {line}\n")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def command(self, wait: float = 60.0, **command: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + wait
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                # Its answer still comes, and must not be taken for the next command's.
                self._owed += 1
                raise TimeoutError(f"{self.address}: no answer within {wait}s") from None
            if not line or not self._owed:
                break
            self._owed -= 1  # the late answer of a command that timed out
        if not line:
            raise RuntimeError(f"{self.address} exited: {self.log[-3:]}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"{self.address}: {answer['error']}: {answer['message']}")
        return answer["result"]

    def cpu_seconds(self) -> float | None:
        """CPU seconds used so far; None once the process has exited."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return None
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def removals(self) -> list[str]:
        return [line for line in list(self.log) if any(r in line for r in REMOVED)]

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signum)

    def close(self) -> None:
        if self.alive:
            self.signal(signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(10)


@dataclass
class Figures:
    n: int
    joined: float | None = None
    safe: float | None = None
    exited: int = 0
    removed_live: int = 0
    start_cpu_mean: float | None = None  # CPU seconds per member from its start to "all joined"
    start_cpu_master: float | None = None
    load_rate: float | None = None
    idle_mean: float | None = None
    idle_max: float | None = None
    idle_master: float | None = None
    check: float | None = None  # one full check of every entry, healthy
    kill_removed: float | None = None  # kill -> the master logs the victim's removal
    kill_taken_over: float | None = None  # kill -> the last new owner logs it serves
    kill_served: float | None = None
    kill_safe: float | None = None
    leave_safe: float | None = None
    lost: int = 0
    notes: list[str] = field(default_factory=list)


def progress(text: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def until(condition: Any, timeout: float, pause: float = 0.25) -> float | None:
    """Seconds until ``condition()`` is true, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(TimeoutError, RuntimeError):
            if condition():
                return time.monotonic() - start
        time.sleep(pause)
    return None


def listen_ports(n: int) -> list[int]:
    """``n`` free ports below the ephemeral range: a hundred members dialling each other use
    thousands of ephemeral ports, and one may take a port a member is about to bind."""
    low = 20_000
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = min(low, int(f.read().split()[0]) - n - 1)
    ports: list[int] = []
    candidate = random.randrange(max(1025, low - 10_000), low - n)
    while len(ports) < n:
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", candidate))
            ports.append(candidate)
        candidate += 1
    return ports


def precompile() -> None:
    """Write peergrid's bytecode once, as installing a wheel does: a member process that starts
    from source it must compile (an editable install with ``PYTHONDONTWRITEBYTECODE`` set, as on
    CI machines) spends ~0.16 s more CPU importing peergrid, which a hundred members starting
    at once on two cores pay ~8 s of the start for."""
    import compileall

    import peergrid

    compileall.compile_dir(os.path.dirname(peergrid.__file__), quiet=1)


def run_size(n: int, args: argparse.Namespace) -> Figures:
    figures = Figures(n)
    ports = listen_ports(n)
    seeds = [f"127.0.0.1:{p}" for p in ports[:3]]
    extra = ["--backup-count", "1", "--heartbeat-fanout", str(args.heartbeat_fanout)]
    extra += ["-v"] if args.log_dir else []  # INFO logs when kept
    progress(f"N={n}: starting {n} members together (seeds {', '.join(seeds)})")
    members: list[Member] = []
    t0 = time.monotonic()
    try:
        members = [Member(port, seeds, args.cpus, extra) for port in ports]
        everyone = {m.address for m in members}

        complete: set[str] = set()  # members seen listing everyone

        def has_everyone(m: Member) -> bool:
            return set(m.command(wait=10, op="members")) == everyone

        def all_joined() -> bool:
            # Asked in parallel: asked one after the other, a hundred members starved of CPU take
            # seconds a round, and the figure measured the asking. Those seen complete are asked
            # again only once all were, to confirm that all are at once.
            if any(m.started is None or not m.alive for m in members):
                return False  # (one that exited never joins: the run reports it)
            ask = [m for m in members if m.address not in complete] or members
            answers = list(pool.map(has_everyone, ask))
            if len(ask) == len(members) and all(answers):
                return True
            complete.difference_update(m.address for m in ask)
            complete.update(m.address for m, done in zip(ask, answers, strict=True) if done)
            return False

        with ThreadPoolExecutor(32) as pool:
            joined = until(all_joined, args.join_timeout)
        figures.exited = sum(not m.alive for m in members)
        if joined is None:
            figures.notes.append(f"not all joined within {args.join_timeout:.0f}s")
            return figures
        figures.joined = time.monotonic() - t0
        first = members[0]
        spent = {m.address: m.cpu_seconds() for m in members}
        counted = [s for s in spent.values() if s is not None]
        figures.start_cpu_mean = sum(counted) / len(counted) if counted else None
        figures.start_cpu_master = spent.get(first.command(op="members")[0])
        if first.command(wait=args.join_timeout + 10, op="safe", timeout=args.join_timeout):
            figures.safe = time.monotonic() - t0
        progress(f"N={n}: joined {figures.joined:.1f}s, safe {figures.safe}")

        start = time.monotonic()
        first.command(wait=600, op="fill", map="scale", count=args.entries)
        figures.load_rate = args.entries / (time.monotonic() - start)
        first.command(wait=130, op="safe", timeout=120)

        progress(f"N={n}: idle for {args.idle:.0f}s")
        before = {m.address: m.cpu_seconds() for m in members}
        master = first.command(op="members")[0]
        time.sleep(args.idle)
        after = {m.address: m.cpu_seconds() for m in members}
        used = {
            address: (end - start) / args.idle * 100
            for address, start in before.items()
            if start is not None and (end := after[address]) is not None
        }
        figures.idle_mean = sum(used.values()) / len(used)
        figures.idle_max = max(used.values())
        figures.idle_master = used.get(master)
        figures.removed_live = sum(len(m.removals()) for m in members)
        figures.exited = sum(not m.alive for m in members)

        # A kill: the victim is neither a seed nor the master.
        victim = members[-1]
        checker = members[1]
        start = time.monotonic()
        checker.command(wait=60, op="check", map="scale", count=args.entries)
        figures.check = time.monotonic() - start
        progress(f"N={n}: killing {victim.address}")
        victim.signal(signal.SIGKILL)
        start = time.monotonic()
        figures.kill_served = until(
            lambda: checker.command(wait=60, op="check", map="scale", count=args.entries) == 0, 120, 0.1
        )
        if checker.command(wait=130, op="safe", timeout=120):
            figures.kill_safe = time.monotonic() - start
        master_member = next((m for m in members if m.address == master), None)
        if master_member is not None:
            removed_at = master_member.first_log(f"{victim.address} was not heard from", start)
            figures.kill_removed = None if removed_at is None else removed_at - start
        if figures.kill_served is not None:
            # The new owners log when they serve what they took over: the last such line before
            # the check passed is when every partition was served again (the check only bounds it).
            served = [m.last_log(TAKEN_OVER, start, start + figures.kill_served) for m in members]
            figures.kill_taken_over = max((at - start for at in served if at is not None), default=None)
        progress(f"N={n}: killed at t={start - t0:.3f}s")
        figures.lost += checker.command(wait=130, op="check", map="scale", count=args.entries)

        leaver = members[-2]
        progress(f"N={n}: stopping {leaver.address} gracefully")
        leaver.signal(signal.SIGTERM)
        start = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):
            leaver.proc.wait(60)
        if checker.command(wait=130, op="safe", timeout=120):
            figures.leave_safe = time.monotonic() - start
        figures.lost += checker.command(wait=130, op="check", map="scale", count=args.entries)
        return figures
    finally:
        for m in members:
            m.signal(signal.SIGKILL)
        for m in members:
            m.close()
        if args.log_dir:
            os.makedirs(args.log_dir, exist_ok=True)
            for m in members:
                m.write_log(os.path.join(args.log_dir, f"n{n}-{m.address.rsplit(':', 1)[1]}.log"), t0)
        if args.verbose:
            for m in members:
                for line in m.log[-5:]:
                    print(f"{m.address}: {line}", file=sys.stderr)


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def report(results: list[Figures], args: argparse.Namespace) -> None:
    where = f"taskset -c {args.cpus}" if args.cpus else "unpinned"
    print(
        f"\n## Scale: N member processes, default timings, backup_count=1, "
        f"heartbeat_fanout={args.heartbeat_fanout}, {args.entries:,} entries, {where}"
    )
    rows = [
        ("all joined (s)", lambda f: fmt(f.joined)),
        ("safe (s)", lambda f: fmt(f.safe)),
        ("members exited", lambda f: str(f.exited)),
        ("live members removed", lambda f: str(f.removed_live)),
        ("CPU per member from its start to all joined, mean (s)", lambda f: fmt(f.start_cpu_mean, ".2f")),
        ("... of the master (s)", lambda f: fmt(f.start_cpu_master, ".2f")),
        ("load (entries/s)", lambda f: fmt(f.load_rate, ",.0f")),
        (f"idle CPU per member, mean over {args.idle:.0f}s (% of a core)", lambda f: fmt(f.idle_mean, ".2f")),
        ("idle CPU per member, max", lambda f: fmt(f.idle_max, ".2f")),
        ("idle CPU of the master", lambda f: fmt(f.idle_master, ".2f")),
        ("idle CPU, all members", lambda f: fmt(None if f.idle_mean is None else f.idle_mean * f.n, ".0f")),
        ("one check of every entry, healthy (s)", lambda f: fmt(f.check, ".2f")),
        ("kill -> the master removes it (s)", lambda f: fmt(f.kill_removed)),
        ("kill -> the last new owner serves (s; from the members' logs)", lambda f: fmt(f.kill_taken_over)),
        ("kill -> every entry readable (s; a check that began after it ends)", lambda f: fmt(f.kill_served)),
        ("kill -> safe (s)", lambda f: fmt(f.kill_safe)),
        ("graceful leave -> safe (s)", lambda f: fmt(f.leave_safe)),
        ("entries lost", lambda f: str(f.lost)),
    ]
    print("| | " + " | ".join(f"N={f.n}" for f in results) + " |")
    print("|---|" + "---|" * len(results))
    for name, cell in rows:
        print(f"| {name} | " + " | ".join(cell(f) for f in results) + " |")
    for f in results:
        for note in f.notes:
            print(f"- N={f.n}: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", default="10,40", help="comma-separated cluster sizes (default 10,40)")
    parser.add_argument("--entries", type=int, default=100_000, help="entries to load (default 100,000)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured")
    parser.add_argument("--join-timeout", type=float, default=120.0, help="seconds to wait for all to join")
    parser.add_argument(
        "--heartbeat-fanout", type=int, default=10, help="members' heartbeat_fanout (10000: no relays)"
    )
    parser.add_argument("--cpus", default=None, help="taskset CPU list for the members (default: unpinned)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each member's last log lines")
    parser.add_argument("--log-dir", default=None, help="write member logs here (timed from the start)")
    args = parser.parse_args(argv)
    precompile()
    results = []
    for n in (int(x) for x in args.members.split(",")):
        results.append(run_size(n, args))
        report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
