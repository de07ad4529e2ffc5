"""Members in their own OS processes (``peergrid member``), driven over stdin."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Any

START_TIMEOUT = 30.0


class MemberProcess:
    """A ``peergrid member --commands`` process."""

    def __init__(self, cluster: str, seeds: list[str], *extra: str) -> None:
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
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        first = self._next(START_TIMEOUT)
        if "listening on" not in first:
            self.kill()
            raise RuntimeError(f"member process did not start: {first!r}")
        self.address = first.split()[-1]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

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

    def stop(self) -> None:
        """SIGTERM and wait for the graceful leave (kill after 20s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
