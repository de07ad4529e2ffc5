"""Child processes for the benchmarks: placement on CPUs, free ports, guaranteed cleanup.

Every server the benchmarks talk to (redis-server, the gRPC echo servers, peergrid members)
is started through `Processes`, which stops all of them when its `with` block exits, whether
the block finished, raised, or was interrupted (Ctrl-C, or SIGTERM turned into SystemExit by
`__main__`). Children run in their own session so a terminal Ctrl-C reaches only the
benchmark process, which then stops them in order instead of racing them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class Placement:
    """Which CPUs the benchmark process and its children may run on (None: the OS decides)."""

    cpus: frozenset[int] | None

    @property
    def cpu_list(self) -> str:
        return ",".join(str(c) for c in sorted(self.cpus or ()))

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed with `taskset -c CPUS` when pinned (taskset execs, the pid stays)."""
        if self.cpus is None:
            return list(argv)
        return ["taskset", "-c", self.cpu_list, *argv]

    def pin_current_process(self) -> None:
        """Pin every thread that exists now; threads started later inherit the mask."""
        if self.cpus is None:
            return
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread may end meanwhile
                os.sched_setaffinity(int(tid), self.cpus)

    def describe(self) -> str:
        if self.cpus is None:
            return f"unpinned: the OS places every process on any of CPUs {cpus_allowed('self')}"
        return (
            f"pinned: the benchmark client and every server process on CPU {self.cpu_list} "
            f"(taskset -c {self.cpu_list})"
        )


def cpus_allowed(pid: int | str) -> str:
    """The kernel's Cpus_allowed_list for a process's threads (distinct lists joined by
    ' and '), to show placement as it really is."""
    lists = set()
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):  # a thread may end meanwhile
            lists.update(
                line.split(":", 1)[1].strip()
                for line in status.read_text().splitlines()
                if line.startswith("Cpus_allowed_list:")
            )
    return " and ".join(sorted(lists)) or "?"


def flags(options: dict[str, object]) -> list[str]:
    """{"--port": 1, "--save": ""} -> ["--port", "1", "--save", ""]"""
    return [str(item) for pair in options.items() for item in pair]


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out for `host` (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait(self, timeout: float) -> int:
        """Wait for the child to exit by itself; its exit code."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still running after {timeout:.0f} s") from None

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with code {code}:\n{self.log_tail()}")


class Processes:
    """Starts children under one placement; stops every one of them on exit (newest first)."""

    def __init__(self, placement: Placement, log_dir: Path) -> None:
        self.placement = placement
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(self, name: str, argv: Sequence[str]) -> Child:
        log_path = self.log_dir / f"{len(self.children):02d}-{_slug(name)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                self.placement.command(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=_child_env(),
                start_new_session=True,
            )
        child = Child(name, popen, log_path)
        self.children.append(child)
        return child

    def python(self, name: str, *args: str) -> Child:
        """Start `python ARGS` with this interpreter, from the repository root."""
        return self.start(name, [sys.executable, *args])

    def stop(self, child: Child) -> None:
        """Stop one child now (SIGTERM, then SIGKILL after a grace period)."""
        if child in self.children:
            self.children.remove(child)
        _stop(child.popen)

    def stop_all(self) -> None:
        while self.children:
            _stop(self.children.pop().popen)

    def placements(self) -> dict[str, list[str]]:
        """CPU list -> names of the running children allowed on it, as the kernel says."""
        by_cpus: dict[str, list[str]] = {}
        for child in self.children:
            if child.popen.poll() is None:
                by_cpus.setdefault(cpus_allowed(child.pid), []).append(child.name)
        return by_cpus

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _stop(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is not None:
        return
    popen.terminate()
    try:
        popen.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT)
    return env


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def wait_for_port(child: Child, host: str, port: int, timeout: float = 20.0) -> None:
    """Wait until `child` accepts TCP connections on host:port (or fail with its log)."""

    def accepting() -> bool:
        child.check_alive()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((host, port)) == 0

    wait_until(accepting, timeout, f"{child.name} to listen on {host}:{port}")
