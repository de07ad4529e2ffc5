"""Throwaway multi-host networks built from Linux network namespaces, for tests.

`bridge_network(count)` gives ``count`` "hosts", each a network namespace with
one interface ``eth0`` addressed ``<prefix>.<i+1>/24``, all plugged into one
Linux bridge. The bridge lives in a namespace of its own (the "hub"), so the
root namespace gains no interface, address or route, and its firewall never
sees the traffic::

    root ns:   (nothing but the namespace handles in /run/netns)
    hub ns:    br0 ── p0 ── p1 ── ... (veth ends, no addresses)
                       │     │
    host i:          eth0  eth0   <prefix>.<i+1>/24, 224.0.0.0/4 routed on eth0

Names carry the pid and a counter, so parallel sessions and leftovers of a
killed run never clash; leftovers whose pid is gone are removed when a new
network is built. Everything is torn down on exit, even after an exception,
and every process running inside the namespaces is killed first.

Traffic stays on the bridge: nothing here routes to or from any other
network, and tests must only address the hosts' own ``.ip`` values.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["NetnsHost", "bridge_network", "loopback_multicast", "netns_available"]

_PREFIX = "pgtest"
_NAME_RE = re.compile(rf"^{_PREFIX}-(\d+)-\d+-")
_SEQ = itertools.count()
_IP_TIMEOUT_S = 10.0
_TERM_GRACE_S = 3.0


@dataclass
class NetnsHost:
    """One namespace of a `bridge_network`: a host with a single interface."""

    name: str
    """The namespace name (for ``ip netns exec``)."""
    ip: str
    """The host's IPv4 address on the bridge."""
    interface: str = "eth0"
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside this namespace; it is killed when the network goes."""
        proc: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kw)
        self._procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside this namespace to completion (`subprocess.run` keywords)."""
        kw.setdefault("timeout", _IP_TIMEOUT_S)
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], check=False, **kw)

    def _stop_processes(self) -> None:
        """Terminate what popen started, then kill whatever is left."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(_TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@functools.cache
def netns_available() -> str | None:
    """None when namespaces, veths and bridges can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "network namespace tests need iproute2's `ip`"
    probe = _ns_name("probe")
    try:
        _ip("netns", "add", probe)
        try:
            _ip("-n", probe, "link add br0 type bridge")
            _ip("-n", probe, "link add v0 type veth peer name v1")
        finally:
            _delete_namespace(probe)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot create network namespaces, bridges or veths here: {exc}"
    return None


@contextlib.contextmanager
def bridge_network(count: int, subnet_prefix: str = "10.213.7") -> Iterator[list[NetnsHost]]:
    """Build ``count`` namespaces on one bridge; yield them; tear everything down.

    Host ``i`` gets ``<subnet_prefix>.<i+1>/24``. Raises ValueError for a
    count that does not fit the /24, and CalledProcessError if ``ip`` fails.
    """
    if not 1 <= count <= 253:
        raise ValueError(f"count must be in 1..253, got {count}")
    _reap_leftovers()
    tag = f"{_PREFIX}-{os.getpid()}-{next(_SEQ)}"
    hub = f"{tag}-hub"
    namespaces: list[str] = []
    hosts: list[NetnsHost] = []
    try:
        _ip("netns", "add", hub)
        namespaces.append(hub)
        _make_bridge(hub)
        for i in range(count):
            host = NetnsHost(name=f"{tag}-h{i}", ip=f"{subnet_prefix}.{i + 1}")
            _ip("netns", "add", host.name)
            namespaces.append(host.name)
            hosts.append(host)
            _plug(hub, port=f"p{i}", host=host)
        yield hosts
    finally:
        for host in hosts:
            host._stop_processes()
        for name in reversed(namespaces):
            _delete_namespace(name)


@contextlib.contextmanager
def loopback_multicast() -> Iterator[None]:
    """Set MULTICAST on this namespace's ``lo`` for the duration; restore it after.

    The 6.x kernels tried deliver mDNS on a loopback without the flag
    (zeroconf pins the interface and loops its sends back); setting it for
    the test removes one thing a different kernel could disagree with.
    """
    flags = subprocess.run(
        ["ip", "-o", "link", "show", "dev", "lo"],
        check=True,
        capture_output=True,
        text=True,
        timeout=_IP_TIMEOUT_S,
    ).stdout
    already = "MULTICAST" in flags.split(">", 1)[0]
    if not already:
        _ip("link set dev lo multicast on")
    try:
        yield
    finally:
        if not already:
            _ip("link set dev lo multicast off")


def _make_bridge(hub: str) -> None:
    # No STP and no forward delay: ports forward the moment they are up.
    # Snooping off: mDNS sits in 224.0.0.0/24, which is flooded anyway, but a
    # snooping bridge that has not seen a querier is one more thing to doubt.
    _ip("-n", hub, "link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0")
    _ip("-n", hub, "link set dev br0 up")


def _plug(hub: str, *, port: str, host: NetnsHost) -> None:
    """Connect ``host`` to the hub's bridge with a veth pair and configure it."""
    dev = host.interface
    _ip("-n", hub, f"link add {port} type veth peer name {dev} netns {host.name}")
    _ip("-n", hub, f"link set dev {port} master br0 up")
    _ip("-n", host.name, "link set dev lo up")
    _ip("-n", host.name, f"addr add {host.ip}/24 dev {dev}")
    _ip("-n", host.name, f"link set dev {dev} multicast on up")
    # There is no default route, so a multicast send that names no interface
    # fails with ENETUNREACH. zeroconf pins its interface (IP_MULTICAST_IF) and
    # does not need this; plain sockets and other tools do.
    _ip("-n", host.name, f"route add 224.0.0.0/4 dev {dev}")


def _delete_namespace(name: str) -> None:
    """Kill every process inside ``name`` and delete it; never raises."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        pids = subprocess.run(
            ["ip", "netns", "pids", name],
            check=False,
            capture_output=True,
            text=True,
            timeout=_IP_TIMEOUT_S,
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        # Deleting the namespace destroys its veth ends, and with them the
        # peers in the hub; the hub's bridge goes with the hub.
        subprocess.run(
            ["ip", "netns", "delete", name],
            check=False,
            capture_output=True,
            timeout=_IP_TIMEOUT_S,
        )


def _reap_leftovers() -> None:
    """Delete namespaces of ours left behind by runs whose process is gone."""
    try:
        listing = subprocess.run(
            ["ip", "netns", "list"], check=True, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return
    for line in listing.splitlines():
        name = line.split(" ", 1)[0]
        match = _NAME_RE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _delete_namespace(name)


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (killed, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _ns_name(suffix: str) -> str:
    return f"{_PREFIX}-{os.getpid()}-{next(_SEQ)}-{suffix}"


def _ip(*parts: str) -> None:
    """Run one ``ip`` command, raising CalledProcessError with its stderr.

    Each part is split on whitespace, so ``_ip("-n", ns, "link set dev lo up")``
    reads like the shell; our names never contain spaces.
    """
    argv = ["ip", *(word for part in parts for word in part.split())]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=_IP_TIMEOUT_S)
