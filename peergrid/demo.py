"""``peergrid demo``: a small cluster, data written, a member killed, nothing lost.

Two members run in this process (a writer and a reader); the others are
``peergrid member`` processes. Entries are written through the writer and
read through the reader; then, while a writer thread keeps writing, one
member process is killed with SIGKILL (no hand-over) and every acknowledged
entry is read back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from peergrid.errors import ConfigError, IndeterminateWriteError, PeerGridError
from peergrid.grid import Grid

START_TIMEOUT = 30.0


def _say(text: str = "") -> None:
    print(text, flush=True)


@contextmanager
def _member_process(cluster: str, seed: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    argv = [sys.executable, "-m", "peergrid", "member", "--cluster", cluster, "--members", seed]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)  # noqa: S603 - our own interpreter
    try:
        line = _first_line(proc)
        yield proc, line.rsplit(" ", 1)[-1]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _first_line(proc: subprocess.Popen[str]) -> str:
    """The member's "listening on" line, or an error if it does not come in time."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(START_TIMEOUT)
    if not lines or "listening on" not in lines[0]:
        proc.kill()
        raise PeerGridError(f"a member process did not start within {START_TIMEOUT}s")
    return lines[0].strip()


def _ownership(grid: Grid, keys: list[str], names: dict[str, str]) -> None:
    owners = Counter(grid.owner_of(key) for key in keys)
    _say(f"  {'member':<22} {'runs in':<16} {'owns':>6}")
    for member in grid.members():
        _say(
            f"  {member.address:<22} {names.get(member.address, 'a process'):<16} {owners.get(member, 0):>6}"
        )


class _Writer(threading.Thread):
    """Keeps writing new entries, recording which were acknowledged."""

    def __init__(self, grid: Grid) -> None:
        super().__init__(daemon=True)
        self.map = grid.get_map("demo-live")
        self.acked: dict[str, int] = {}
        self.unknown = 0
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"live:{i}"
            try:
                self.map.set(key, i)
                self.acked[key] = i
            except IndeterminateWriteError:
                self.unknown += 1
            except PeerGridError:
                self.failed += 1
            i += 1


def run_demo(members: int = 4, entries: int = 5000) -> int:
    """Run the demo; return the process exit code (``ConfigError`` for fewer than 3 members or
    fewer than 1 entry)."""
    if isinstance(members, bool) or not isinstance(members, int) or members < 3:
        raise ConfigError(f"the demo needs at least 3 members (2 here and 1 to kill), got {members!r}")
    if isinstance(entries, bool) or not isinstance(entries, int) or entries < 1:
        raise ConfigError(f"the demo needs at least 1 entry to write, got {entries!r}")
    cluster = f"demo-{uuid.uuid4().hex[:6]}"
    _say(f"peergrid demo: cluster {cluster!r}, {members} members on loopback, backup_count=1")
    with (
        Grid(cluster=cluster) as writer,
        Grid(cluster=cluster, members=[writer.address]) as reader,
        _processes(cluster, writer.address, members - 2) as procs,
    ):
        return _run(writer, reader, procs, entries)


@contextmanager
def _processes(cluster: str, seed: str, count: int) -> Iterator[list[tuple[subprocess.Popen[str], str]]]:
    started: list[tuple[subprocess.Popen[str], str]] = []
    managers = [_member_process(cluster, seed) for _ in range(count)]
    try:
        started.extend(manager.__enter__() for manager in managers)
        yield started
    finally:
        for manager in reversed(managers[: len(started)]):
            manager.__exit__(None, None, None)


def _run(writer: Grid, reader: Grid, procs: list[tuple[subprocess.Popen[str], str]], entries: int) -> int:
    if not writer.wait_until_safe(timeout=30):
        raise PeerGridError("the cluster did not settle within 30s")
    names = {writer.address: "this (writer)", reader.address: "this (reader)"}
    _say(f"{len(writer.members())} members joined: {', '.join(m.address for m in writer.members())}")

    data = {f"user:{i}": {"id": i, "name": f"user {i}"} for i in range(entries)}
    keys = list(data)
    started = time.perf_counter()
    for start in range(0, entries, 500):
        writer.get_map("users").put_all({k: data[k] for k in keys[start : start + 500]})
    elapsed = time.perf_counter() - started
    _say(f"\nwrote {entries} entries through {writer.address} in {elapsed:.2f}s ({entries / elapsed:,.0f}/s)")
    started = time.perf_counter()
    found = reader.get_map("users").get_all(keys)
    elapsed = time.perf_counter() - started
    _say(f"read {len(found)}/{entries} through {reader.address} in {elapsed:.2f}s")
    _ownership(reader, keys, names)

    live = _Writer(writer)
    live.start()
    time.sleep(1.0)
    victim, victim_address = procs[0]
    _say(f"\nkilling {victim_address} with SIGKILL (no hand-over) while a writer keeps writing...")
    killed_at = time.perf_counter()
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    one_per_partition = _key_per_partition(reader, keys)
    reader.get_map("users").get_all(one_per_partition)  # blocks until every partition is served
    served = time.perf_counter() - killed_at
    safe = reader.wait_until_safe(timeout=60)
    rebuilt = time.perf_counter() - killed_at
    live.stop.set()
    live.join()
    _say(
        f"every partition served again {served:.1f}s after the kill; backups rebuilt after {rebuilt:.1f}s"
        + ("" if safe else " (not yet safe!)")
    )

    found = reader.get_map("users").get_all(keys)
    acked = reader.get_map("demo-live").get_all(list(live.acked))
    lost = entries - len(found) + sum(1 for k, v in live.acked.items() if acked.get(k) != v)
    _say(
        f"read {len(found)}/{entries} entries and {len(acked)}/{len(live.acked)} acknowledged live writes "
        f"({live.unknown} indeterminate, {live.failed} failed): "
        + ("nothing lost" if lost == 0 else f"{lost} LOST")
    )
    _ownership(reader, keys, names)
    return 0 if lost == 0 and safe else 1


def _key_per_partition(grid: Grid, keys: list[str]) -> list[str]:
    from peergrid.partition import partition_of
    from peergrid.serialization import encode_key

    chosen: dict[int, str] = {}
    for key in keys:
        chosen.setdefault(partition_of(encode_key(key), grid.config.partition_count), key)
    return list(chosen.values())
