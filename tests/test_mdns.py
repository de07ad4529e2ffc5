"""mDNS discovery against real zeroconf.

The namespace tests run one probe process (``_mdns_probe.py``) per network
namespace, so each member has its own host, interface and mDNS socket, as on
a real LAN. The loopback tests run members in this process on 127.0.0.1;
zeroconf is bound to that address, so nothing leaves the loopback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peergrid.cluster.mdns import DiscoveredPeer, MdnsDiscovery
from tests.netns import NetnsHost, bridge_network, loopback_multicast, netns_available

PROBE = Path(__file__).with_name("_mdns_probe.py")

# A probe starts (interpreter, imports, sockets) in 0.5-1 s, several seconds
# on a box with load 10. Discovery then takes about 1 s (name probing, then
# the first announcement); a goodbye is acted on at once. The deadlines leave
# room for a loaded CI box and keep a test under 30 s.
STARTUP_DEADLINE_S = 10.0
DISCOVERY_DEADLINE_S = 12.0
REMOVAL_DEADLINE_S = 10.0
CLOSE_DEADLINE_S = 3.0
SECOND_CLOSE_DEADLINE_S = 0.5  # a no-op; the slack is for a loaded 2-core box


# -- probe processes ---------------------------------------------------------


class Probe:
    """One `_mdns_probe.py` running in a namespace, its output collected by threads."""

    def __init__(self, host: NetnsHost, *, cluster: str, member_uuid: str, bind: str, port: int) -> None:
        self.uuid = member_uuid
        self.address = f"{host.ip}:{port}"
        self.cluster = cluster
        self._cond = threading.Condition()
        self.events: list[dict[str, Any]] = []  # guarded by _cond
        self.log_lines: list[str] = []  # guarded by _cond
        argv = [
            sys.executable,
            str(PROBE),
            "--cluster",
            cluster,
            "--uuid",
            member_uuid,
            "--host",
            bind,
            "--port",
            str(port),
        ]
        self.proc = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            for stream, sink in (
                (self.proc.stdout, self._on_event),
                (self.proc.stderr, self._on_log),
            )
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream: Any, sink: Callable[[str], None]) -> None:
        with stream:
            for line in stream:
                sink(line.rstrip("\n"))
        with self._cond:  # wake waiters: an exited probe fails them at once
            self._cond.notify_all()

    def _on_event(self, line: str) -> None:
        event = json.loads(line)
        event["received_at"] = time.monotonic()
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def _on_log(self, line: str) -> None:
        with self._cond:
            self.log_lines.append(line)
            self._cond.notify_all()

    def peer_sets(self) -> list[set[tuple[str, str, str]]]:
        """Every peer set the probe has reported, oldest first."""
        with self._cond:
            return [
                {(p["uuid"], p["address"], p["cluster"]) for p in e["peers"]}
                for e in self.events
                if e["event"] == "peers"
            ]

    def sees(self, *others: Probe) -> bool:
        """True when the latest reported peer set is exactly ``others``."""
        sets = self.peer_sets()
        return bool(sets) and sets[-1] == {(o.uuid, o.address, o.cluster) for o in others}

    def logged(self, text: str) -> int:
        """How many stderr lines so far contain ``text``."""
        with self._cond:
            return sum(text in line for line in self.log_lines)

    def wait_sees(self, others: list[Probe], timeout: float, what: str) -> float:
        return self.wait_for(functools.partial(self.sees, *others), timeout, what)

    def wait_logged(self, text: str, timeout: float) -> float:
        return self.wait_for(lambda: self.logged(text) > 0, timeout, f"log line {text!r}")

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Wait until ``condition`` holds; return how long it took, or fail with context."""
        started = time.monotonic()
        with self._cond:
            ok = self._cond.wait_for(lambda: condition() or self.proc.poll() is not None, timeout=timeout)
            done = condition()
        if not (ok and done):
            pytest.fail(f"{self.uuid}: {what} not within {timeout} s\n{self.describe()}")
        return time.monotonic() - started

    def stop(self) -> dict[str, Any]:
        """SIGTERM the probe (a graceful close) and return its ``closed`` event."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=CLOSE_DEADLINE_S + 5)
        for pump in self._pumps:  # they end at EOF, right after the exit
            pump.join(5)
        closed = self._closed_event()
        assert closed is not None, self.describe()
        return closed

    def _closed_event(self) -> dict[str, Any] | None:
        return self._first("closed")

    def _first(self, kind: str) -> dict[str, Any] | None:
        with self._cond:
            return next((e for e in self.events if e["event"] == kind), None)

    def wait_started(self, timeout: float) -> float:
        """Wait for the probe to be announcing; return the monotonic time it said so."""
        self.wait_for(lambda: self._first("started") is not None, timeout, "probe start")
        started = self._first("started")
        assert started is not None
        return float(started["received_at"])

    def describe(self) -> str:
        with self._cond:
            events = "\n  ".join(json.dumps(e) for e in self.events)
            logs = "\n  ".join(self.log_lines[-20:])
        return f"exit={self.proc.poll()}\nevents:\n  {events}\nstderr:\n  {logs}"


def _member_uuid(index: int) -> str:
    return f"{index:04x}{uuid.uuid4().hex[4:]}"


def _wait_all(probes: list[Probe], expected: Callable[[Probe], list[Probe]], what: str) -> str:
    """Wait until every probe sees exactly ``expected(probe)``; say how long each phase took.

    Starting a probe (interpreter, imports, sockets) is timed apart from
    discovery, so a slow box fails on the phase that was actually slow.
    """
    spawned = time.monotonic()
    start_deadline = spawned + STARTUP_DEADLINE_S
    last_start = max(p.wait_started(max(0.0, start_deadline - time.monotonic())) for p in probes)
    deadline = last_start + DISCOVERY_DEADLINE_S
    for probe in probes:
        probe.wait_sees(expected(probe), max(0.0, deadline - time.monotonic()), what)
    done = time.monotonic()
    return f"probes up in {last_start - spawned:.2f} s, {what} {done - last_start:.2f} s later"


@pytest.fixture
def three_hosts() -> Iterator[list[NetnsHost]]:
    """Three namespaces on one bridge; skips when namespaces cannot be made here."""
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    with bridge_network(3) as hosts:
        yield hosts


# -- namespace tests ---------------------------------------------------------


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_three_members_in_three_namespaces_discover_each_other(
    three_hosts: list[NetnsHost],
) -> None:
    # The third member binds the wildcard: it must announce its interface
    # address, not 0.0.0.0 and not its loopback.
    probes = [
        Probe(
            host,
            cluster="alpha",
            member_uuid=_member_uuid(i),
            port=7100 + i,
            bind="0.0.0.0" if i == 2 else host.ip,
        )
        for i, host in enumerate(three_hosts)
    ]

    timing = _wait_all(probes, lambda p: [o for o in probes if o is not p], "full discovery")

    print(f"three members: {timing}")
    for probe in probes:
        assert all(probe.uuid not in {u for u, _, _ in s} for s in probe.peer_sets())


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_member_of_another_cluster_is_ignored(three_hosts: list[NetnsHost]) -> None:
    alpha = [
        Probe(host, cluster="alpha", member_uuid=_member_uuid(i), bind=host.ip, port=7200 + i)
        for i, host in enumerate(three_hosts[:2])
    ]
    beta = Probe(
        three_hosts[2],
        cluster="beta",
        member_uuid=_member_uuid(2),
        bind=three_hosts[2].ip,
        port=7202,
    )

    _wait_all(alpha, lambda p: [o for o in alpha if o is not p], "alpha discovery")
    # The log line proves the foreign announcement arrived and was judged,
    # so the absence checked below is not just slowness.
    for probe in alpha:
        line = (
            f"ignoring mDNS peer {beta.uuid} at {beta.address}: "
            "it announces cluster 'beta', this member is in 'alpha'"
        )
        probe.wait_logged(line, DISCOVERY_DEADLINE_S)
    for other in alpha:
        beta.wait_logged(f"ignoring mDNS peer {other.uuid} at {other.address}", DISCOVERY_DEADLINE_S)

    for probe in alpha:
        assert all(beta.uuid not in {u for u, _, _ in s} for s in probe.peer_sets())
        assert probe.logged(beta.uuid) == 1, "logged once per peer"
    assert all(s == set() for s in beta.peer_sets())


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_gracefully_closed_member_disappears(three_hosts: list[NetnsHost]) -> None:
    probes = [
        Probe(host, cluster="alpha", member_uuid=_member_uuid(i), bind=host.ip, port=7300 + i)
        for i, host in enumerate(three_hosts)
    ]
    _wait_all(probes, lambda p: [o for o in probes if o is not p], "full discovery")
    leaving, staying = probes[2], probes[:2]

    started = time.monotonic()
    closed = leaving.stop()

    assert leaving.proc.returncode == 0, leaving.describe()
    assert closed["first_close_s"] < CLOSE_DEADLINE_S
    assert closed["second_close_s"] < SECOND_CLOSE_DEADLINE_S
    for probe in staying:
        others = [o for o in staying if o is not probe]
        probe.wait_sees(others, REMOVAL_DEADLINE_S, "removal")
    print(f"closed member vanished from the others in {time.monotonic() - started:.2f} s")


# -- loopback tests (in process) ---------------------------------------------


@pytest.fixture
def loopback() -> Iterator[None]:
    """mDNS on 127.0.0.1 in the current namespace, MULTICAST set on lo if needed."""
    lo = subprocess.run(
        ["ip", "-o", "link", "show", "dev", "lo"], capture_output=True, text=True, check=False
    )
    has_flag = "MULTICAST" in lo.stdout.split(">", 1)[0]
    if not has_flag and os.geteuid() != 0:
        pytest.skip("lo lacks MULTICAST and setting it needs root")
    with loopback_multicast():
        yield


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds; return how long it took, or fail."""
    started = time.monotonic()
    deadline = started + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def _loopback_member(cluster: str, port: int, on_change: Callable[[], None] | None = None) -> MdnsDiscovery:
    return MdnsDiscovery(
        cluster=cluster,
        member_uuid=uuid.uuid4().hex,
        host="127.0.0.1",
        port=port,
        on_change=on_change,
    )


def _mdns_threads() -> set[threading.Thread]:
    """zeroconf's loop and browser threads and ours; other tests' threads don't count."""
    markers = ("zeroconf", "_run_loop", "peergrid-mdns")
    return {t for t in threading.enumerate() if any(m in t.name for m in markers)}


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("loopback")
def test_loopback_members_discover_leave_and_close_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A cluster name of its own keeps other runs on this host out of the way.
    cluster = f"lo-{uuid.uuid4().hex[:8]}"
    threads_before = _mdns_threads()
    changed = threading.Event()

    def explode() -> None:
        raise RuntimeError("on_change bug")

    a = _loopback_member(cluster, 7401, on_change=changed.set)
    b = _loopback_member(cluster, 7402, on_change=explode)
    caplog.set_level(logging.ERROR, logger="peergrid.cluster.mdns")
    try:
        a.start()
        b.start()
        with pytest.raises(RuntimeError):
            a.start()
        _wait_until(
            lambda: len(a.peers()) == 1 and len(b.peers()) == 1,
            DISCOVERY_DEADLINE_S,
            "loopback discovery",
        )
        # peers() changes just before on_change runs, on another thread.
        assert changed.wait(DISCOVERY_DEADLINE_S)
        assert a.peers() == [DiscoveredPeer(uuid=b._uuid, address="127.0.0.1:7402", cluster=cluster)]
        assert b.peers()[0].address == "127.0.0.1:7401"
        # b's callback raised into nothing: discovery went on and it was logged.
        _wait_until(
            lambda: any("on_change callback raised" in r.message for r in caplog.records),
            DISCOVERY_DEADLINE_S,
            "the on_change error logged",
        )

        started = time.monotonic()
        b.close()
        first = time.monotonic() - started
        b.close()
        second = time.monotonic() - started - first
        assert first < CLOSE_DEADLINE_S
        assert second < SECOND_CLOSE_DEADLINE_S
        assert b.peers() == []
        _wait_until(lambda: a.peers() == [], REMOVAL_DEADLINE_S, "removal after goodbye")
    finally:
        a.close()
        b.close()
    leaked = _mdns_threads() - threads_before
    assert not leaked, f"threads left running: {leaked}"


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("loopback")
def test_start_and_close_inside_a_running_event_loop() -> None:
    # The grid's async core calls start()/close() on its loop thread. zeroconf
    # would attach to that loop and then skip goodbyes on close(); the peer
    # vanishing at once shows the goodbyes went out.
    cluster = f"lo-{uuid.uuid4().hex[:8]}"
    watcher = _loopback_member(cluster, 7501)
    watcher.start()
    try:

        async def member_lifetime() -> None:
            member = _loopback_member(cluster, 7502)
            member.start()
            deadline = time.monotonic() + DISCOVERY_DEADLINE_S
            while not (watcher.peers() and member.peers()):
                assert time.monotonic() < deadline, "discovery inside an event loop"
                await asyncio.sleep(0.02)
            member.close()

        asyncio.run(member_lifetime())
        _wait_until(lambda: watcher.peers() == [], REMOVAL_DEADLINE_S, "goodbye from a loop-thread close")
    finally:
        watcher.close()


# -- no network ---------------------------------------------------------------


@pytest.mark.timeout(10)
def test_close_without_start_is_a_no_op_twice() -> None:
    member = _loopback_member("c", 7600)
    member.close()
    member.close()
    assert member.peers() == []
    with pytest.raises(RuntimeError):
        member.start()


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": "localhost"},
        {"port": 0},
        {"port": 70000},
        {"member_uuid": ""},
        {"member_uuid": "a.b"},
        {"member_uuid": "x" * 64},
        {"cluster": ""},
        {"cluster": "c" * 250},
    ],
)
def test_announcements_that_cannot_work_are_rejected(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"cluster": "c", "member_uuid": "ab12", "host": "127.0.0.1"}
    args["port"] = 7000
    args.update(kwargs)
    with pytest.raises(ValueError):
        MdnsDiscovery(**args)
