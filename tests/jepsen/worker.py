"""A worker: one peergrid member plus client threads that record every operation.

    python -m tests.jepsen.worker --config '{"host": "h0", "bind": "10.213.20.1:7100", ...}'

It starts a `peergrid.Grid`, prints one line ``{"ready": true, "address": ..., "uuid": ...}``,
and on the ``start`` command runs ``threads`` client threads until it is told to stop (a
command, SIGTERM, or the ``deadline``), appending every operation to its history file as JSON lines (see
`tests.jepsen.history`). While it runs it answers JSON commands read from stdin, one answer
line each (echoing the command's ``id``):

- ``{"cmd": "start"}``: start the client threads
- ``{"cmd": "members"}``: ``{"members": ["address/uuid", ...sorted]}``
- ``{"cmd": "safe", "seconds": 10}``: ``{"safe": grid.wait_until_safe(seconds)}``
- ``{"cmd": "freeze"}``: from now on the clients only read registers (their final values
  then show what the faults did to the last writes)
- ``{"cmd": "holding"}``: ``{"holding": [lock keys a client thread holds now]}``
- ``{"cmd": "stop_clients"}``: stop the client threads, wait for them; ``{"stopped": n}``
- ``{"cmd": "final_reads", "keys": [...]}``: read each key (recorded as final reads);
  ``{"values": {key: value}, "errors": {key: "Error: message"}}``
- ``{"cmd": "exit"}`` or the end of stdin: leave the cluster gracefully and exit 0.

SIGTERM is a graceful leave too (the client threads are stopped first). Logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import peergrid
from peergrid import errors

log = logging.getLogger("jepsen.worker")

#: Errors after which a write surely did not take effect (the member refused it before
#: applying anything, or the arguments were bad). Everything else is ``info``.
DEFINITE_FAILURES: tuple[type[BaseException], ...] = (
    errors.QuorumError,
    errors.PartitionLostError,
    errors.ArgumentError,
    errors.LimitExceededError,
    errors.CapacityError,
    errors.ProcessorError,
    errors.ConfigError,
)


def classify(f: str, exc: BaseException) -> str:
    """``fail`` or ``info`` for an operation that raised ``exc``.

    A read that raised changed nothing: ``fail``. A write fails only on an error that says it
    was refused before anything was applied; a lock not granted, or an unlock of a lock not
    held (``LockError``), changed nothing; any other error of a lock call is ``info``. Timeouts, indeterminate
    writes, a grid closed under a call, unknown errors: ``info`` (it may have been applied).
    """
    if f == "get":
        return "fail"
    if f in ("acquire", "release"):
        # Lock calls resend an attempt of unknown outcome (peergrid.maps.locks: `_settled`), so a
        # refusal of the resend (QuorumError...) says nothing about the first attempt.
        return "fail" if isinstance(exc, errors.LockError) else "info"
    if isinstance(exc, DEFINITE_FAILURES):
        return "fail"
    return "info"


class Recorder:
    """Appends history records to a file, one JSON line each, flushed at once (a SIGKILL
    loses at most the line being written)."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=repr)
        with self._lock:
            self._file.write(line + "\n")

    def call(
        self, process: str, f: str, key: str, value: Any, fn: Callable[[], Any], **extra: Any
    ) -> tuple[str, Any]:
        """Record the invocation, run ``fn``, record its completion; ``(type, result)``."""
        base = {"process": process, "f": f, "key": key, **extra}
        self.write({**base, "type": "invoke", "value": value, "time": time.monotonic_ns()})
        try:
            result = fn()
        except Exception as exc:  # every outcome is recorded, then judged
            kind = classify(f, exc)
            self.write(
                {
                    **base,
                    "type": kind,
                    "value": value,
                    "error": f"{type(exc).__name__}: {exc}",
                    "time": time.monotonic_ns(),
                }
            )
            return kind, exc
        done: dict[str, Any] = {**base, "type": "ok", "time": time.monotonic_ns()}
        if f == "get":
            done["value"] = result
        else:
            done["value"] = value
            done["result"] = result
        self.write(done)
        return "ok", result

    def close(self) -> None:
        with self._lock:
            self._file.close()


@dataclass
class Settings:
    """The worker's configuration (the ``--config`` JSON)."""

    host: str
    host_index: int
    hosts: int
    incarnation: int
    cluster: str
    bind: str
    seeds: list[str]
    history: str
    backup_count: int = 1
    min_cluster_size: int = 1
    heartbeat_fanout: int = 10
    timing: dict[str, float] = field(default_factory=dict)
    threads: int = 3
    registers: int = 10
    counters: int = 2
    locks: int = 2
    mix: dict[str, float] = field(default_factory=lambda: {"registers": 0.6, "counters": 0.25, "locks": 0.15})
    write_ratio: float = 0.5
    op_interval: float = 0.01
    lock_lease: float = 2.0
    lock_timeout: float = 0.3
    lock_hold: tuple[float, float] = (0.05, 0.3)
    seed: int = 0
    deadline: float | None = None
    """``time.monotonic()`` at which the clients stop by themselves."""


class Clients:
    """The client threads of one worker."""

    def __init__(self, grid: peergrid.Grid, settings: Settings, recorder: Recorder) -> None:
        self.grid = grid
        self.s = settings
        self.rec = recorder
        self.stop = threading.Event()
        self.holding: dict[int, str] = {}
        self.frozen = threading.Event()  # set: registers are only read from now on
        self._started = False
        self._threads = [
            threading.Thread(target=self._run, args=(t,), name=f"client-{t}", daemon=True)
            for t in range(settings.threads)
        ]

    def start(self) -> None:
        """Start the client threads (once)."""
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def join(self, timeout: float) -> int:
        """Stop the clients; wait up to ``timeout`` in all; how many ended."""
        self.stop.set()
        if not self._started:
            return 0
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(not t.is_alive() for t in self._threads)

    def owned(self, thread: int) -> list[str]:
        """The register keys this thread is the sole writer of."""
        s = self.s
        return [
            f"r{k}"
            for k in range(s.registers)
            if k % s.hosts == s.host_index and (k // s.hosts) % s.threads == thread
        ]

    def _run(self, thread: int) -> None:
        s = self.s
        process = f"{s.host}.{s.incarnation}/t{thread}"
        rng = random.Random(f"{s.seed}-{s.host}-{s.incarnation}-{thread}")
        m = self.grid.get_map("jepsen")
        mine = self.owned(thread)
        last: dict[str, Any] = {}  # what this sole writer believes its keys hold
        serial = 0
        kinds = list(s.mix)
        weights = [s.mix[k] for k in kinds]
        while not self.stop.is_set() and (s.deadline is None or time.monotonic() < s.deadline):
            kind = rng.choices(kinds, weights)[0]
            try:
                if kind == "registers":
                    serial += 1
                    self._register(m, process, rng, mine, last, f"{process}-{serial}")
                elif kind == "counters":
                    self._counter(m, process, rng)
                else:
                    self._lock(m, process, rng, thread)
            except errors.GridClosedError:
                return
            self.stop.wait(s.op_interval * rng.uniform(0.5, 1.5))

    def _register(
        self,
        m: peergrid.DistributedMap,
        process: str,
        rng: random.Random,
        mine: list[str],
        last: dict[str, Any],
        value: str,
    ) -> None:
        rec = self.rec
        if not mine or self.frozen.is_set() or rng.random() >= self.s.write_ratio:
            key = f"r{rng.randrange(self.s.registers)}"
            rec.call(process, "get", key, None, lambda: m.get(key))
            return
        key = rng.choice(mine)
        f = rng.choices(["set", "put", "cas", "delete"], [0.35, 0.35, 0.15, 0.15])[0]
        if f == "cas" and last.get(key) is None:
            f = "set"  # a cas needs a value to compare with: an absent key never matches
        if f == "set":
            kind, _ = rec.call(process, f, key, value, lambda: m.set(key, value))
            last[key] = value if kind == "ok" else None
        elif f == "put":
            kind, _ = rec.call(process, f, key, value, lambda: m.put(key, value))
            last[key] = value if kind == "ok" else None
        elif f == "cas":
            old = last.get(key)
            kind, result = rec.call(process, f, key, [old, value], lambda: m.replace_if_same(key, old, value))
            if kind == "ok" and result:
                last[key] = value
            elif kind != "ok":
                last[key] = None
        else:
            rec.call(process, f, key, None, lambda: m.delete(key))
            last[key] = None

    def _counter(self, m: peergrid.DistributedMap, process: str, rng: random.Random) -> None:
        key = f"c{rng.randrange(self.s.counters)}"
        if rng.random() < 0.8:
            self.rec.call(process, "incr", key, 1, lambda: m.increment(key, 1))
        else:
            self.rec.call(process, "get", key, None, lambda: m.get(key))

    def _lock(self, m: peergrid.DistributedMap, process: str, rng: random.Random, thread: int) -> None:
        s = self.s
        key = f"l{rng.randrange(s.locks)}"
        value = {"lease": s.lock_lease, "timeout": s.lock_timeout}
        kind, _ = self.rec.call(
            process,
            "acquire",
            key,
            value,
            lambda: _granted(m.try_lock(key, timeout=s.lock_timeout, lease=s.lock_lease)),
        )
        if kind == "fail":
            return
        self.holding[thread] = key
        try:
            if kind == "ok":
                self.stop.wait(rng.uniform(*s.lock_hold))
        finally:
            self.holding.pop(thread, None)
        self.rec.call(process, "release", key, None, lambda: m.unlock(key))


def _granted(token: int | None) -> int:
    if token is None:
        raise errors.LockError("not acquired within the timeout")
    return token


def _timing(values: dict[str, float]) -> peergrid.Timing:
    return peergrid.Timing(**values)


def serve(settings: Settings) -> int:
    """Run the worker until told to exit; the process's exit code."""
    recorder = Recorder(settings.history)
    seeds = [a for a in settings.seeds if a != settings.bind]
    grid = peergrid.Grid(
        cluster=settings.cluster,
        bind=settings.bind,
        members=seeds,
        backup_count=settings.backup_count,
        min_cluster_size=settings.min_cluster_size,
        heartbeat_fanout=settings.heartbeat_fanout,
        timing=_timing(settings.timing),
    )
    clients = Clients(grid, settings, recorder)
    out_lock = threading.Lock()
    leaving = threading.Event()

    def say(answer: dict[str, Any]) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(answer, default=repr) + "\n")
            sys.stdout.flush()

    def on_term(*_: Any) -> None:
        leaving.set()

    signal.signal(signal.SIGTERM, on_term)
    say({"ready": True, "address": grid.address, "uuid": grid.uuid, "pid": os.getpid()})
    threading.Thread(
        target=_commands, args=(grid, settings, clients, recorder, say, leaving), daemon=True
    ).start()
    leaving.wait()
    log.warning("worker %s leaving", settings.host)
    clients.join(timeout=_stop_timeout(settings))
    try:
        grid.shutdown()
    finally:
        recorder.close()
    return 0


def _stop_timeout(settings: Settings) -> float:
    return float(settings.timing.get("operation_timeout", 10.0)) * 2 + 5


def _commands(
    grid: peergrid.Grid,
    settings: Settings,
    clients: Clients,
    recorder: Recorder,
    say: Callable[[dict[str, Any]], None],
    leaving: threading.Event,
) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        answer: dict[str, Any] = {"id": command.get("id")}
        cmd = command.get("cmd")
        try:
            if cmd == "start":
                clients.start()
            elif cmd == "members":
                answer["members"] = sorted(f"{m.address}/{m.uuid}" for m in grid.members())
            elif cmd == "safe":
                answer["safe"] = grid.wait_until_safe(float(command.get("seconds", 10.0)))
            elif cmd == "freeze":
                clients.frozen.set()
            elif cmd == "holding":
                answer["holding"] = sorted(set(clients.holding.values()))
            elif cmd == "stop_clients":
                answer["stopped"] = clients.join(timeout=_stop_timeout(settings))
            elif cmd == "final_reads":
                answer.update(_final_reads(grid, settings, recorder, command["keys"]))
            elif cmd == "exit":
                say(answer)
                leaving.set()
                return
            else:
                answer["error"] = f"unknown command {cmd!r}"
        except Exception as exc:  # reported to the runner, which fails the run
            answer["error"] = f"{type(exc).__name__}: {exc}"
        say(answer)
    leaving.set()


def _final_reads(
    grid: peergrid.Grid, settings: Settings, recorder: Recorder, keys: list[str]
) -> dict[str, Any]:
    m = grid.get_map("jepsen")
    process = f"{settings.host}.{settings.incarnation}/final"
    values: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for key in keys:
        kind, result = recorder.call(process, "get", key, None, lambda key=key: m.get(key), final=True)
        if kind == "ok":
            values[key] = result
        else:
            failed[key] = f"{type(result).__name__}: {result}"
    return {"values": values, "errors": failed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.jepsen.worker")
    parser.add_argument("--config", required=True, help="the worker's settings as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(
        # INFO by default: a run that fails in CI, once, must say what membership and replication
        # did (a few dozen lines a worker); PEERGRID_JEPSEN_LOG=DEBUG for more, WARNING for less.
        level=os.environ.get("PEERGRID_JEPSEN_LOG", "INFO").upper(),
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    raw = json.loads(args.config)
    if "lock_hold" in raw:
        raw["lock_hold"] = tuple(raw["lock_hold"])
    settings = Settings(**raw)
    with contextlib.suppress(KeyboardInterrupt):
        return serve(settings)
    return 1


if __name__ == "__main__":
    sys.exit(main())
