"""The nemesis: faults injected into a running cluster of workers, one scenario at a time.

Each scenario's `Nemesis` method applies one fault, holds it, heals it and returns the
`Fault` windows it made (monotonic ns). Timings are drawn from the run's seeded random
generator and scaled by the members' failure timeout.

- ``kill``: SIGKILL a worker; restart it later on the same address (a new member).
- ``pause``: SIGSTOP a worker for 1.5-3x the failure timeout, then SIGCONT.
- ``pause-lock-holder``: the same, on a worker whose client holds a lock right now.
- ``cut-one``: one host drops all traffic to and from the others (INPUT and OUTPUT).
- ``split-2-3``: two hosts and the other three cannot reach each other, both ways.
- ``split-kill``: the same split, and one host of either side (at random) is SIGKILLed while
  cut off (an owner dying on its side before the sides merge); the network heals, then it
  restarts.
- ``rolling-restart``: SIGTERM (a graceful leave) and restart, one worker after another.

Network faults are iptables rules inside the hosts' own namespaces (``host.run``), so the
root namespace's firewall is never touched; healing flushes the INPUT and OUTPUT chains of
every host (the namespaces are ours and hold no other rule).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from tests.jepsen.history import Fault
from tests.netns import NetnsHost

SCENARIOS = ("kill", "pause", "pause-lock-holder", "cut-one", "split-2-3", "split-kill", "rolling-restart")
#: Runnable by hand (``runner``), not in the test runs: ``split-kill`` with the victim always on
#: the smaller side, or always on the larger side.
MORE_SCENARIOS = ("split-kill-smaller", "split-kill-larger")
#: Scenarios that cut the network: without quorum, counters and locks may diverge in them.
NETWORK_SCENARIOS = frozenset({"cut-one", "split-2-3", "split-kill", *MORE_SCENARIOS})


class FirewallError(RuntimeError):
    """An iptables command failed inside a host's namespace."""


@functools.cache
def iptables_command() -> tuple[str | None, str]:
    """``(binary, "")`` for the iptables that works inside a fresh namespace here, or
    ``(None, why not)``. Tries the nf_tables backend (``iptables``), then the legacy one."""
    if os.geteuid() != 0:
        return None, "the Jepsen tests need root (iptables inside network namespaces)"
    candidates = [name for name in ("iptables", "iptables-nft", "iptables-legacy") if shutil.which(name)]
    if not candidates:
        return None, "the Jepsen tests need iptables (apt-get install iptables)"
    probe = f"pgjepsen-probe-{os.getpid()}"
    errors: list[str] = []
    try:
        subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot create a network namespace to probe iptables: {exc}"
    try:
        for name in candidates:
            rule = ["-A", "INPUT", "-s", "192.0.2.1", "-j", "DROP"]  # TEST-NET-1: never routed
            done = subprocess.run(
                ["ip", "netns", "exec", probe, name, *rule],
                check=False,
                capture_output=True,
                text=True,
                timeout=10,
            )
            if done.returncode == 0:
                return name, ""
            errors.append(f"{name}: {done.stderr.strip()}")
    finally:
        subprocess.run(["ip", "netns", "delete", probe], check=False, capture_output=True, timeout=10)
    return None, "iptables does not work inside a network namespace here: " + "; ".join(errors)


def _iptables(host: NetnsHost, *args: str) -> None:
    binary, why = iptables_command()
    if binary is None:
        raise FirewallError(why)
    done = host.run([binary, "-w", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise FirewallError(f"{binary} {' '.join(args)} in {host.name}: {done.stderr.strip()}")


def isolate(host: NetnsHost, others: Sequence[NetnsHost]) -> None:
    """Drop every packet between ``host`` and ``others``, in ``host``'s namespace, both ways."""
    for other in others:
        _iptables(host, "-A", "INPUT", "-s", other.ip, "-j", "DROP")
        _iptables(host, "-A", "OUTPUT", "-d", other.ip, "-j", "DROP")


def heal_network(hosts: Sequence[NetnsHost]) -> None:
    """Remove every rule the nemesis added (flush INPUT and OUTPUT in every host)."""
    for host in hosts:
        _iptables(host, "-F", "INPUT")
        _iptables(host, "-F", "OUTPUT")


class Workers(Protocol):
    """What the nemesis needs of the runner's cluster of workers."""

    hosts: list[NetnsHost]
    names: list[str]
    """Host names (``h0``...), by host index."""

    def kill(self, index: int) -> None: ...
    def pause(self, index: int) -> None: ...
    def resume(self, index: int) -> None: ...
    def terminate(self, index: int) -> None: ...
    def restart(self, index: int) -> None: ...
    def lock_holders(self) -> list[int]: ...
    def settled(self) -> float | None: ...
    def safe(self) -> bool: ...


class Nemesis:
    """Faults on ``workers``, timed by ``rng`` and the failure timeout ``failure_timeout``."""

    def __init__(
        self,
        workers: Workers,
        rng: random.Random,
        failure_timeout: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.w = workers
        self.rng = rng
        self.ft = failure_timeout
        self.sleep = sleep

    def run(self, scenario: str) -> list[Fault]:
        """Apply one fault of ``scenario``, hold it, heal it; the fault windows."""
        method = {
            "kill": self.kill,
            "pause": self.pause,
            "pause-lock-holder": self.pause_lock_holder,
            "cut-one": self.cut_one,
            "split-2-3": self.split,
            "split-kill": self.split_kill,
            "split-kill-smaller": functools.partial(self.split_kill, larger=False),
            "split-kill-larger": functools.partial(self.split_kill, larger=True),
            "rolling-restart": self.rolling_restart,
        }[scenario]
        return method()

    def _hold(self, low: float, high: float) -> None:
        self.sleep(self.rng.uniform(low, high) * self.ft)

    def _target(self) -> int:
        return self.rng.randrange(len(self.w.names))

    def kill(self) -> list[Fault]:
        """SIGKILL one worker, wait, restart it on the same address.

        A killed holder holds nothing: its locks may go at once (its peers see its connections
        reset), so the window has no grace."""
        i = self._target()
        start = time.monotonic_ns()
        self.w.kill(i)
        self._hold(1.5, 3.0)
        self.w.restart(i)
        name = self.w.names[i]
        return [Fault("kill", frozenset({name}), start, time.monotonic_ns(), grace_ns=0, target=name)]

    def pause(self, target: int | None = None, kind: str = "pause") -> list[Fault]:
        """SIGSTOP one worker for 1.5-3x the failure timeout, then SIGCONT."""
        i = self._target() if target is None else target
        start = time.monotonic_ns()
        self.w.pause(i)
        try:
            self._hold(1.5, 3.0)
        finally:
            self.w.resume(i)
        name = self.w.names[i]
        return [Fault(kind, frozenset({name}), start, time.monotonic_ns(), target=name)]

    def pause_lock_holder(self) -> list[Fault]:
        """Pause a worker whose client holds a lock now (waits up to 3 s for one; else any)."""
        deadline = time.monotonic() + 3.0
        holders = self.w.lock_holders()
        while not holders and time.monotonic() < deadline:
            self.sleep(0.05)
            holders = self.w.lock_holders()
        target = self.rng.choice(holders) if holders else None
        return self.pause(target, kind="pause-lock-holder" if holders else "pause")

    def _partition(
        self, kind: str, side: Sequence[int], hold: Callable[[], None] | None = None
    ) -> list[Fault]:
        """Cut ``side`` off from the other hosts, both ways; run ``hold`` (by default, wait 2-4x
        the failure timeout) and heal."""
        hosts = self.w.hosts
        inside = [hosts[i] for i in side]
        outside = [h for i, h in enumerate(hosts) if i not in side]
        start = time.monotonic_ns()
        try:
            for host in inside:
                isolate(host, outside)
            for host in outside:
                isolate(host, inside)
            if hold is None:
                self._hold(2.0, 4.0)
            else:
                hold()
        finally:
            heal_network(hosts)
        target = ",".join(self.w.names[i] for i in side)
        return [Fault(kind, frozenset(self.w.names), start, time.monotonic_ns(), target=target)]

    def cut_one(self) -> list[Fault]:
        """One host cannot talk to any other, both ways."""
        return self._partition("cut-one", [self._target()])

    def split(self) -> list[Fault]:
        """Two hosts cannot talk to the other three, both ways."""
        return self._partition("split-2-3", self.rng.sample(range(len(self.w.names)), 2))

    def split_kill(self, larger: bool | None = None) -> list[Fault]:
        """Two hosts cannot talk to the other three; once the sides have noticed, one host is
        killed, of the two or of the three (``larger``; None: either, at random), and its side
        holds on without it (with ``min_cluster_size`` 1 the two sides serve, the killed host's
        partitions from its copies, and every write either side acknowledged must survive the
        merge; with 3, a side below it serves nothing until the heal: killed on the larger
        side, both sides can lose their quorum for good, and must still merge). The killed host
        restarts (a new member) either while the split holds, joining its side (whose writes
        the merge must bring, or keep), or once it healed."""
        side = self.rng.sample(range(len(self.w.names)), 2)
        others = [i for i in range(len(self.w.names)) if i not in side]
        if larger is None:
            larger = self.rng.random() < 0.5
        victim = self.rng.choice(others if larger else side)
        early = self.rng.random() < 0.5
        killed: int | None = None
        # (Started while split, the restart waits for its member to join, which with
        # min_cluster_size 3 may be only once the split healed: it runs beside the hold.)
        restarting: concurrent.futures.Future[None] | None = None
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="restart")

        def kill_inside() -> None:
            nonlocal killed, restarting
            self._hold(1.0, 2.0)
            killed = time.monotonic_ns()
            self.w.kill(victim)
            if early:
                self._hold(0.5, 1.5)
                restarting = pool.submit(self.w.restart, victim)
                self._hold(1.0, 1.5)
            else:
                self._hold(1.5, 3.0)

        try:
            faults = self._partition("split-kill", side, hold=kill_inside)
        finally:
            with pool:
                if restarting is not None:
                    restarting.result()
                elif killed is not None:
                    self.w.restart(victim)
        assert killed is not None
        name = self.w.names[victim]
        kill = Fault("kill", frozenset({name}), killed, time.monotonic_ns(), grace_ns=0, target=name)
        return [*faults, kill]

    def rolling_restart(self) -> list[Fault]:
        """Gracefully stop and restart every worker, one after another, in a random order;
        before the next, wait (bounded) for one cluster and for it to be safe, as an operator
        would. A graceful leave releases the leaver's locks at once: the windows have no grace."""
        faults = []
        order = list(range(len(self.w.names)))
        self.rng.shuffle(order)
        for i in order:
            start = time.monotonic_ns()
            self.w.terminate(i)
            self.w.restart(i)
            self.w.settled()
            self.w.safe()
            name = self.w.names[i]
            end = time.monotonic_ns()
            faults.append(Fault("rolling-restart", frozenset({name}), start, end, grace_ns=0, target=name))
        return faults
