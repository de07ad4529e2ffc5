"""The runner: one Jepsen-style run of a scenario, from building the network to the verdicts.

``run(scenario, seed, settings)`` builds ``settings.hosts`` network namespaces on a bridge
(`tests.netns.bridge_network`), starts a worker (`tests.jepsen.worker`) on each, waits for one
cluster, starts the clients, lets them run, applies the scenario's faults (`tests.jepsen.nemesis`)
at seeded random times, heals, waits for one cluster again (timing it), lets the clients run a
little longer, stops them, asks every worker for final reads, stops the workers and runs every
checker (`tests.jepsen.checkers`) over the merged history.

A problem of the harness itself (a worker that crashed or never became ready, a command that
got no answer) raises `HarnessError`; what the checkers find is in `RunResult.verdicts`. Every
run keeps its directory: histories (``h0.1.jsonl``: host 0, first incarnation), worker logs
(``h0.1.log``), the nemesis's log (``nemesis.jsonl``) and ``result.txt``.

By hand (as root)::

    python -m tests.jepsen.runner split-2-3 --seed 3 --min-cluster-size 1
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.jepsen import checkers
from tests.jepsen.history import REGISTER_WRITES, Fault, Operation, pair, read_jsonl
from tests.jepsen.nemesis import MORE_SCENARIOS, SCENARIOS, Nemesis, heal_network, iptables_command
from tests.netns import NetnsHost, bridge_network, netns_available

ROOT = Path(__file__).resolve().parents[2]
CHECKERS = ("lost-writes", "linearizable", "counters", "locks", "resurrection", "heal", "final-reads")


def default_timing() -> dict[str, float]:
    """Short member timings for CI: heartbeats every 0.2 s, dead after 1.2 s of silence."""
    return {
        "heartbeat_interval": 0.2,
        "failure_timeout": 1.2,
        "join_timeout": 1.0,
        "join_retry_interval": 0.1,
        "rpc_timeout": 1.0,
        "operation_timeout": 3.0,
        "retry_max": 0.05,
        "shutdown_timeout": 10.0,
        "anti_entropy_interval": 1.0,
        "expiry_sweep_interval": 0.5,
        "lock_retry_max": 0.05,
        "discovery_interval": 0.5,
    }


@dataclass(frozen=True)
class RunSettings:
    """Everything a run depends on besides its scenario and seed."""

    hosts: int = 5
    min_cluster_size: int = 3
    heartbeat_fanout: int = 10
    """1: the members form a chain of heartbeat relays (cluster.relay), the youngest beating
    the master through three of them; the default relays nothing among five."""
    backup_count: int = 2
    """Two backups: a 2-3 split leaves a copy of every partition on the majority side (with
    one backup, a partition whose both copies sit on the minority is lost there, which the
    contract allows: two members "failed at once")."""
    threads: int = 3
    registers: int = 15
    counters: int = 3
    locks: int = 2
    op_interval: float = 0.01
    lock_lease: float = 2.0
    warmup: float = 3.0
    """Seconds of workload before the first fault."""
    faults: int = 3
    """Fault cycles (apply, hold, heal, wait for one cluster); rolling-restart does one."""
    gap: tuple[float, float] = (1.0, 2.0)
    """Seconds between the end of one fault cycle and the next fault."""
    post: float = 3.0
    """Seconds of workload after the last heal (registers only read: see ``_drive``)."""
    settle: float = 1.0
    """Seconds after the cluster is one and safe again that still count as the fault's window."""
    heal_extra: float = 10.0
    """One cluster must form within failure_timeout + this after a heal."""
    timing: dict[str, float] = field(default_factory=default_timing)
    subnet_prefix: str = "10.213.20"
    port: int = 7100
    lin_budget: int = checkers.DEFAULT_BUDGET
    log_dir: Path | None = None
    """Where run directories go (a temp dir by default)."""

    @property
    def failure_timeout(self) -> float:
        return float(self.timing["failure_timeout"])

    @property
    def quorum(self) -> bool:
        """True when min_cluster_size is a majority: reads are linearizable at all times."""
        return self.min_cluster_size > self.hosts // 2

    def short(self) -> str:
        relays = f" fanout={self.heartbeat_fanout}" if self.heartbeat_fanout < self.hosts - 1 else ""
        return f"mcs={self.min_cluster_size}/{self.hosts}{relays}"


class HarnessError(RuntimeError):
    """The harness failed (not the system under test): a worker crashed or did not answer."""


@dataclass
class RunResult:
    """What one run did and found."""

    scenario: str
    seed: int
    settings: RunSettings
    run_dir: Path
    ops: int = 0
    acked_writes: int = 0
    faults: list[Fault] = field(default_factory=list)
    heal_seconds: list[float | None] = field(default_factory=list)
    verdicts: dict[str, checkers.Verdict] = field(default_factory=dict)
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def failures(self, required: frozenset[str] | set[str] | tuple[str, ...]) -> list[str]:
        """The anomalies (and unknown verdicts) of the ``required`` checkers."""
        found = []
        for name in required:
            verdict = self.verdicts.get(name)
            if verdict is None:
                continue
            found += [f"[{name}] {a}" for a in verdict.anomalies]
            found += [f"[{name}] unknown: {u}" for u in verdict.unknown]
        return found

    def row(self) -> list[str]:
        heal = [h for h in self.heal_seconds if h is not None]
        worst = f"{max(heal):.1f}" if heal else "-"
        if len(heal) < len(self.heal_seconds):
            worst = "never"
        return [
            self.scenario,
            str(self.seed),
            self.settings.short(),
            str(self.ops),
            str(self.acked_writes),
            str(len(self.faults)),
            *(self.verdicts[name].summary() if name in self.verdicts else "-" for name in CHECKERS[:5]),
            worst,
            f"{self.wall_seconds:.0f}",
        ]

    def report(self, per_checker: int | None = None) -> str:
        """The row, then the anomalies (at most ``per_checker`` of each checker; None: all),
        then where the logs are."""
        lines = [table([self])]
        for name, verdict in self.verdicts.items():
            found = [f"[{name}] {a}" for a in verdict.anomalies]
            found += [f"[{name}] unknown: {u}" for u in verdict.unknown]
            if per_checker is not None and len(found) > per_checker:
                more = len(found) - per_checker
                found = [*found[:per_checker], f"[{name}] ... and {more} more (all in result.txt)"]
            lines += found
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"histories and worker logs: {self.run_dir}")
        return "\n".join(lines)


HEADER = [
    "scenario",
    "seed",
    "settings",
    "ops",
    "acked",
    "faults",
    "lost-writes",
    "linearizable",
    "counters",
    "locks",
    "resurrection",
    "heal s",
    "wall s",
]


def table(results: list[RunResult]) -> str:
    """A plain-text table, one row per run."""
    rows = [HEADER, *(r.row() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


# ---------------------------------------------------------------------- one worker process
class WorkerProcess:
    """One incarnation of a worker on one host, driven over stdin/stdout."""

    def __init__(self, host: NetnsHost, config: dict[str, Any], log_path: Path) -> None:
        self.name = f"{config['host']}.{config['incarnation']}"
        self.log_path = log_path
        self._log: IO[str] = log_path.open("w")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GRPC_VERBOSITY": "ERROR"}
        self.proc = host.popen(
            [sys.executable, "-m", "tests.jepsen.worker", "--config", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            cwd=ROOT,
            env=env,
        )
        self.expected_exit = False
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._ids = iter(range(1, 1 << 62))
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                with contextlib.suppress(json.JSONDecodeError):
                    self._answers.put(json.loads(line))
        self._answers.put(None)

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        answer = self._next(timeout)
        if answer is None or not answer.get("ready"):
            raise HarnessError(f"worker {self.name} did not start: {answer!r}; {self.tail()}")
        return answer

    def _next(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self._answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"worker {self.name} did not answer within {timeout}s") from None

    def command(self, cmd: str, timeout: float, **args: Any) -> dict[str, Any]:
        """Send one command; its answer. TimeoutError when none came in time (a paused
        worker); HarnessError when the worker is gone or answered with an error."""
        with self._lock:
            ident = next(self._ids)
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps({"id": ident, "cmd": cmd, **args}) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                raise HarnessError(f"worker {self.name} is gone ({exc}); {self.tail()}") from exc
            deadline = time.monotonic() + timeout
            while True:
                answer = self._next(max(0.0, deadline - time.monotonic()))
                if answer is None:
                    self._answers.put(None)
                    raise HarnessError(f"worker {self.name} exited during {cmd!r}; {self.tail()}")
                if answer.get("id") == ident:
                    if "error" in answer:
                        raise HarnessError(f"worker {self.name}: {cmd!r} failed: {answer['error']}")
                    return answer

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signum)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def reap(self, timeout: float) -> bool:
        """Wait for the process to end; True if it did."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        self._log.close()
        return True

    def tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            self._log.flush()
            text = self.log_path.read_text().splitlines()[-lines:]
            return f"log {self.log_path}: " + " | ".join(text)
        return f"log {self.log_path}"


# ---------------------------------------------------------------------- the cluster of workers
class Cluster:
    """The workers of one run, one per host; implements what the nemesis needs."""

    def __init__(self, hosts: list[NetnsHost], settings: RunSettings, run_dir: Path, seed: int) -> None:
        self.hosts = hosts
        self.names = [f"h{i}" for i in range(len(hosts))]
        self.s = settings
        self.run_dir = run_dir
        self.seed = seed
        self.addresses = [f"{h.ip}:{settings.port}" for h in hosts]
        self.cluster_name = f"jepsen-{seed}-{os.getpid()}"
        self.incarnation = [0] * len(hosts)
        self.workers: list[WorkerProcess | None] = [None] * len(hosts)
        self.paused: set[int] = set()
        self.clients_started = False
        self._events = (run_dir / "nemesis.jsonl").open("a", buffering=1)
        self._pool = concurrent.futures.ThreadPoolExecutor(len(hosts))

    def log(self, event: str, **fields: Any) -> None:
        self._events.write(json.dumps({"time": time.monotonic_ns(), "event": event, **fields}) + "\n")

    def _config(self, i: int) -> dict[str, Any]:
        s = self.s
        return {
            "host": self.names[i],
            "host_index": i,
            "hosts": len(self.hosts),
            "incarnation": self.incarnation[i],
            "cluster": self.cluster_name,
            "bind": self.addresses[i],
            "seeds": self.addresses,
            "history": str(self.run_dir / f"{self.names[i]}.{self.incarnation[i]}.jsonl"),
            "backup_count": s.backup_count,
            "min_cluster_size": s.min_cluster_size,
            "heartbeat_fanout": s.heartbeat_fanout,
            "timing": s.timing,
            "threads": s.threads,
            "registers": s.registers,
            "counters": s.counters,
            "locks": s.locks,
            "op_interval": s.op_interval,
            "lock_lease": s.lock_lease,
            "seed": self.seed,
        }

    def _start(self, i: int) -> WorkerProcess:
        self.incarnation[i] += 1
        config = self._config(i)
        worker = WorkerProcess(
            self.hosts[i], config, self.run_dir / f"{self.names[i]}.{self.incarnation[i]}.log"
        )
        self.workers[i] = worker
        worker.wait_ready(60.0)
        self.log("started", host=self.names[i], incarnation=self.incarnation[i], pid=worker.proc.pid)
        return worker

    def start_all(self) -> None:
        """Start host 0's worker, then the others together (they join it)."""
        self._start(0)
        list(self._pool.map(self._start, range(1, len(self.hosts))))

    def start_clients(self) -> None:
        self.clients_started = True
        self.broadcast("start")

    def broadcast(self, cmd: str) -> None:
        """Send ``cmd`` to every worker (HarnessError if one does not answer)."""
        for i in range(len(self.hosts)):
            try:
                self._worker(i).command(cmd, 10.0)
            except TimeoutError as exc:
                raise HarnessError(f"{cmd!r}: {exc}; {self._worker(i).tail()}") from exc

    def _worker(self, i: int) -> WorkerProcess:
        worker = self.workers[i]
        if worker is None:
            raise HarnessError(f"no worker on {self.names[i]}")
        return worker

    def live(self) -> list[int]:
        return [i for i, w in enumerate(self.workers) if w is not None and w.alive()]

    def check_alive(self) -> None:
        """HarnessError naming a worker that exited without the nemesis asking it to."""
        for worker in self.workers:
            if worker is not None and not worker.alive() and not worker.expected_exit:
                raise HarnessError(f"worker {worker.name} exited ({worker.proc.returncode}); {worker.tail()}")

    # -- nemesis operations
    def kill(self, i: int) -> None:
        worker = self._worker(i)
        worker.expected_exit = True
        worker.signal(signal.SIGKILL)
        worker.reap(10.0)
        self.log("killed", host=self.names[i])

    def pause(self, i: int) -> None:
        self._worker(i).signal(signal.SIGSTOP)
        self.paused.add(i)
        self.log("paused", host=self.names[i])

    def resume(self, i: int) -> None:
        self._worker(i).signal(signal.SIGCONT)
        self.paused.discard(i)
        self.log("resumed", host=self.names[i])

    def terminate(self, i: int) -> None:
        worker = self._worker(i)
        worker.expected_exit = True
        worker.signal(signal.SIGTERM)
        limit = self.s.timing.get("shutdown_timeout", 10.0) + 2 * self.s.timing["operation_timeout"] + 10
        if not worker.reap(limit):
            worker.signal(signal.SIGKILL)
            worker.reap(10.0)
            self.log("leave-hung", host=self.names[i])
            raise HarnessError(
                f"worker {worker.name} did not leave within {limit}s of SIGTERM; {worker.tail()}"
            )
        self.log("terminated", host=self.names[i], code=worker.proc.returncode)

    def restart(self, i: int) -> None:
        worker = self._start(i)
        if self.clients_started:
            worker.command("start", 10.0)

    def settled(self) -> float | None:
        """Wait for one cluster (as after a heal); the seconds it took, or None."""
        return self.wait_one_cluster(self.s.failure_timeout + self.s.heal_extra)

    def safe(self, timeout: float = 20.0) -> bool:
        """Wait (bounded) until a worker says the cluster is safe (no migration, backups in
        sync); whether it did. Logged either way."""
        i = self.live()[0]
        try:
            safe = bool(self._worker(i).command("safe", timeout + 5, seconds=timeout)["safe"])
        except TimeoutError:
            safe = False
        self.log("safe" if safe else "not-safe", asked=self.names[i])
        return safe

    def lock_holders(self) -> list[int]:
        def ask(i: int) -> bool:
            try:
                return bool(self._worker(i).command("holding", 1.0)["holding"])
            except (TimeoutError, HarnessError):
                return False

        live = [i for i in self.live() if i not in self.paused]
        return [i for i, holds in zip(live, self._pool.map(ask, live), strict=True) if holds]

    # -- views
    def views(self) -> list[list[str] | None]:
        def ask(i: int) -> list[str] | None:
            try:
                return list(self._worker(i).command("members", 2.0)["members"])
            except TimeoutError:
                return None

        return list(self._pool.map(ask, range(len(self.hosts))))

    def wait_one_cluster(self, timeout: float) -> float | None:
        """Wait until every worker reports the same member list (addresses and uuids), one
        member on each host's address; the seconds it took, or None after ``timeout``."""
        started = time.monotonic()
        want = sorted(self.addresses)
        views: list[list[str] | None] = []
        while time.monotonic() - started < timeout:
            self.check_alive()
            views = self.views()
            first = views[0]
            if (
                first is not None
                and all(v == first for v in views)
                and sorted(m.split("/", 1)[0] for m in first) == want
            ):
                took = time.monotonic() - started
                self.log("one-cluster", seconds=took)
                return took
            time.sleep(0.1)
        self.log("not-one-cluster", views=views)
        return None

    def stop_clients(self) -> None:
        timeout = 2 * self.s.timing["operation_timeout"] + 10
        list(
            self._pool.map(lambda i: self._worker(i).command("stop_clients", timeout), range(len(self.hosts)))
        )

    def final_reads(self, keys: list[str], patience: float = 15.0) -> dict[str, list[str]]:
        """Every worker reads every key (again, until it succeeds or ``patience`` ends);
        the keys each worker could not read."""

        def read(i: int) -> list[str]:
            missing = list(keys)
            deadline = time.monotonic() + patience
            while missing:
                answer = self._worker(i).command("final_reads", 60.0, keys=missing)
                missing = sorted(answer["errors"])
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            return missing

        return dict(zip(self.names, self._pool.map(read, range(len(self.hosts))), strict=True))

    def exit_all(self) -> None:
        def leave(i: int) -> None:
            worker = self._worker(i)
            worker.expected_exit = True
            with contextlib.suppress(TimeoutError, HarnessError):
                worker.command("exit", 5.0)
            if not worker.reap(self.s.timing.get("shutdown_timeout", 10.0) + 10):
                worker.signal(signal.SIGKILL)
                worker.reap(10.0)

        list(self._pool.map(leave, range(len(self.hosts))))

    def close(self) -> None:
        """Resume, kill and reap whatever still runs (the network goes with bridge_network)."""
        for i, worker in enumerate(self.workers):
            if worker is not None and worker.alive():
                worker.expected_exit = True
                if i in self.paused:
                    worker.signal(signal.SIGCONT)
                worker.signal(signal.SIGKILL)
                worker.reap(10.0)
        self._pool.shutdown(wait=True)
        self._events.close()


# ---------------------------------------------------------------------- a run
def availability() -> str | None:
    """None when runs can be made here, else why not (for pytest.skip)."""
    reason = netns_available()
    if reason is not None:
        return reason
    binary, why = iptables_command()
    return why if binary is None else None


def run(scenario: str, seed: int, settings: RunSettings | None = None) -> RunResult:
    """One run of ``scenario`` (one of `SCENARIOS`); HarnessError if the harness failed."""
    if scenario not in SCENARIOS + MORE_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS + MORE_SCENARIOS)}")
    s = settings or RunSettings()
    base = s.log_dir or Path(tempfile.gettempdir()) / "peergrid-jepsen"
    base.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{scenario}-mcs{s.min_cluster_size}-seed{seed}-", dir=base))
    result = RunResult(scenario, seed, s, run_dir)
    started = time.monotonic()
    rng = random.Random(f"{scenario}-{seed}")
    windows: list[tuple[int, int]] = []
    with bridge_network(s.hosts, subnet_prefix=s.subnet_prefix) as hosts:
        cluster = Cluster(hosts, s, run_dir, seed)
        try:
            _drive(cluster, scenario, rng, s, result, windows)
        except TimeoutError as exc:  # a worker that stopped answering: the harness's problem
            raise HarnessError(f"{exc} (a hung worker: see its log in {run_dir})") from exc
        finally:
            with contextlib.suppress(Exception):
                heal_network(hosts)
            cluster.close()
    _judge(result, windows)
    result.wall_seconds = time.monotonic() - started
    (run_dir / "result.txt").write_text(result.report() + "\n")
    (run_dir / "faults.json").write_text(
        json.dumps([dataclasses.asdict(f) for f in result.faults], default=list)
    )
    return result


def _drive(
    cluster: Cluster,
    scenario: str,
    rng: random.Random,
    s: RunSettings,
    result: RunResult,
    windows: list[tuple[int, int]],
) -> None:
    cluster.start_all()
    if cluster.wait_one_cluster(30.0) is None:
        raise HarnessError(
            f"the {s.hosts} workers did not form one cluster within 30s; logs in {cluster.run_dir}"
        )
    cluster.start_clients()
    time.sleep(s.warmup)
    nemesis = Nemesis(cluster, rng, s.failure_timeout)
    cycles = 1 if scenario == "rolling-restart" else s.faults
    for _ in range(cycles):
        time.sleep(rng.uniform(*s.gap))
        cluster.log("fault", scenario=scenario)
        faults = nemesis.run(scenario)
        result.faults += faults
        for fault in faults:
            cluster.log("window", kind=fault.kind, target=fault.target, start=fault.start, end=fault.end)
        cluster.log("healed", scenario=scenario)
        took = cluster.settled()
        result.heal_seconds.append(took)
        # The window lasts until the cluster is safe again (merges and migrations done), and
        # `settle` more: one member list is not yet one copy of the data.
        cluster.safe()
        end = time.monotonic_ns() + int(s.settle * 1e9)
        windows.append((min(f.start for f in faults), end))
    # No register write after the last heal: the final reads then show what the faults did
    # to the last writes (a later write would hide a lost or resurrected one).
    cluster.broadcast("freeze")
    time.sleep(s.post)
    cluster.check_alive()
    cluster.stop_clients()
    keys = [f"r{k}" for k in range(s.registers)] + [f"c{k}" for k in range(s.counters)]
    unread = cluster.final_reads(keys)
    result.verdicts["final-reads"] = checkers.Verdict(
        "final-reads",
        anomalies=[
            f"{host} could not read {', '.join(missing)}" for host, missing in unread.items() if missing
        ],
        checked=len(keys) * s.hosts,
    )
    cluster.exit_all()


def _judge(result: RunResult, windows: list[tuple[int, int]]) -> None:
    s = result.settings
    ops = pair(read_jsonl(sorted(result.run_dir.glob("h*.jsonl"))))
    result.ops = sum(1 for op in ops if not op.final)
    result.acked_writes = sum(1 for op in ops if _acked_write(op))
    timing = s.timing
    grace = int((timing["failure_timeout"] - timing["heartbeat_interval"] - 0.05) * 1e9)
    excluded = [] if s.quorum else windows
    result.verdicts.update(
        {
            "lost-writes": checkers.lost_writes(ops),
            "linearizable": checkers.linearizable(ops, exclude_reads_in=excluded, budget=s.lin_budget),
            "counters": checkers.counters(ops, exclude_reads_in=excluded),
            "locks": checkers.locks(ops, result.faults, holder_grace_ns=grace),
            "resurrection": checkers.resurrection(ops),
        }
    )
    limit = s.failure_timeout + s.heal_extra
    result.verdicts["heal"] = checkers.Verdict(
        "heal",
        anomalies=[
            f"fault {n + 1}: not one cluster within {limit:.1f}s of the heal"
            for n, took in enumerate(result.heal_seconds)
            if took is None
        ],
        checked=len(result.heal_seconds),
    )


def _acked_write(op: Operation) -> bool:
    if op.type != "ok" or op.final:
        return False
    if op.f == "cas":
        return bool(op.result)
    return op.f in REGISTER_WRITES or op.f == "incr"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.jepsen.runner", description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=SCENARIOS + MORE_SCENARIOS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-cluster-size", type=int, default=3)
    parser.add_argument("--heartbeat-fanout", type=int, default=RunSettings.heartbeat_fanout)
    parser.add_argument("--faults", type=int, default=RunSettings.faults)
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    reason = availability()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    settings = dataclasses.replace(
        RunSettings(),
        min_cluster_size=args.min_cluster_size,
        heartbeat_fanout=args.heartbeat_fanout,
        faults=args.faults,
        log_dir=args.log_dir,
    )
    result = run(args.scenario, args.seed, settings)
    print(result.report(per_checker=5))
    return 0 if all(v.valid for v in result.verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
