"""The namespace harness itself: hosts reach each other, and nothing outlives it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.netns import bridge_network, netns_available

# A one-shot UDP echo: prints "ready", answers one datagram, exits.
ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
print("ready", flush=True)
data, peer = s.recvfrom(100)
s.sendto(data.upper(), peer)
"""
ECHO_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(b"hello", (sys.argv[1], 9999))
print(s.recvfrom(100)[0].decode())
"""


@pytest.fixture(autouse=True)
def _need_netns() -> None:
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)


def _namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True).stdout
    return {line.split(" ", 1)[0] for line in listing.splitlines()}


def _root_links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True).stdout


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_hosts_reach_each_other_and_leave_nothing_behind() -> None:
    links_before = _root_links()

    with bridge_network(2, subnet_prefix="10.213.8") as (a, b):
        names = {a.name, b.name}
        assert names <= _namespaces()
        assert (a.ip, b.ip) == ("10.213.8.1", "10.213.8.2")
        server = b.popen([sys.executable, "-c", ECHO_SERVER, b.ip], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        reply = a.run([sys.executable, "-c", ECHO_CLIENT, b.ip], capture_output=True, text=True)
        assert reply.stdout.strip() == "HELLO", reply.stderr
        assert server.wait(5) == 0
        server.stdout.close()
        # The root namespace gained no interface: the bridge lives in the hub.
        assert _root_links() == links_before

    assert not names & _namespaces()
    assert _root_links() == links_before


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_teardown_after_an_exception_kills_processes_and_deletes_namespaces() -> None:
    started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def fail_inside_network() -> None:
        with bridge_network(1) as (host,):
            started.append((host.name, host.popen(["sleep", "60"])))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside_network()

    [(name, sleeper)] = started
    assert sleeper.poll() is not None
    assert name not in _namespaces()
