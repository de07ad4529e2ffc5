"""Members in their own OS processes (``peergrid member``), driven over stdin."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

START_TIMEOUT = 30.0


class MemberProcess:
    """A ``peergrid member --commands`` process.

    ``popen`` starts it (``subprocess.Popen`` by default; a network namespace's
    ``NetnsHost.popen`` to run it on another "host").
    """

    def __init__(
        self, cluster: str, seeds: list[str], *extra: str, popen: Callable[..., Any] = subprocess.Popen
    ) -> None:
        self.cluster = cluster
        argv = [
            sys.executable,
            "-m",
            "peergrid",
            "member",
            "--cluster",
            cluster,
            "--fast",
            "--commands",
            "--members",
            ",".join(seeds),
            *extra,
        ]
        self.proc = popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self.log_lines: list[str] = []  # its stderr: warnings and errors it logged
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_log, daemon=True).start()
        first = self._next(START_TIMEOUT)
        if "listening on" not in first:
            self.kill()
            raise RuntimeError(f"member process did not start: {first!r} {self.log_lines[-5:]}")
        self.address = first.split()[-1]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self._lines.put(line)
        self._lines.put("")

    def _pump_log(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.log_lines.append(line.rstrip("\n"))
                sys.stderr.write(line)  # still shown with the test's output

    def logged(self, text: str) -> bool:
        """True once the process logged a line containing ``text``."""
        return any(text in line for line in list(self.log_lines))

    def _next(self, timeout: float) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer from the member process within {timeout}s") from None

    def command(self, timeout: float = 30.0, **command: Any) -> Any:
        """Run one map command through this member; raise RuntimeError on an error answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self._next(timeout))
        if not answer["ok"]:
            raise RuntimeError(f"{answer['error']}: {answer['message']}")
        return answer["result"]

    def kill(self) -> None:
        """SIGKILL: no hand-over, no goodbye."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._close_stdin()

    def stop(self) -> None:
        """SIGTERM and wait for the graceful leave (kill after 20s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_stdin()

    def _close_stdin(self) -> None:
        # The pump threads close stdout and stderr when they reach the end.
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
