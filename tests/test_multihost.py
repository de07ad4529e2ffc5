"""Members on separate hosts that find each other by mDNS: ``peergrid member`` processes, one
per network namespace on a bridge (tests/netns.py), each bound to its own address.

They are started together with no seed list: they find each other, form one cluster and serve
each other's gets. With TLS on (certificates naming each host's address, passed as files), a
fourth host's member without a certificate is kept out while the three keep serving.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import wait_for
from tests.netns import NetnsHost, bridge_network, netns_available
from tests.processes import MemberProcess

SETTLE = 60.0
PORT = 7000


@pytest.fixture
def hosts() -> Iterator[list[NetnsHost]]:
    """Four hosts on one bridge; skips (saying why) where namespaces cannot be made."""
    reason = netns_available()
    if reason is not None:
        pytest.skip(f"multi-host mDNS tests need network namespaces: {reason}")
    with bridge_network(4, subnet_prefix="10.213.9") as network:
        yield network


def member(host: NetnsHost, cluster: str, *extra: str) -> MemberProcess:
    """``peergrid member --discovery mdns`` on ``host``, bound to its address, no seeds."""
    return MemberProcess(
        cluster, [], "--discovery", "mdns", "--bind", f"{host.ip}:{PORT}", *extra, popen=host.popen
    )


def start_together(hosts: list[NetnsHost], cluster: str, *extra: str) -> list[MemberProcess]:
    """Start a member on each host at the same moment (each waits for its own start)."""
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        futures = [pool.submit(member, host, cluster, *extra) for host in hosts]
        return [f.result() for f in futures]


def wait_members(procs: list[MemberProcess], count: int, timeout: float = SETTLE) -> list[str]:
    """Wait until every process sees the same ``count`` members; return their addresses."""
    deadline = time.monotonic() + timeout
    views: list[list[str]] = []
    while time.monotonic() < deadline:
        views = [sorted(p.command(op="members")) for p in procs]
        if all(len(v) == count for v in views) and all(v == views[0] for v in views):
            return views[0]
        time.sleep(0.2)
    pytest.fail(f"not one cluster of {count} within {timeout}s: {views}")


def serve_each_others_gets(procs: list[MemberProcess]) -> None:
    for n, proc in enumerate(procs):
        for i in range(40):
            proc.command(op="set", map="shared", key=f"p{n}:{i}", value=[n, i])
    assert procs[0].command(op="safe", timeout=30)
    for proc in procs:
        for other in range(len(procs)):
            keys = [f"p{other}:{i}" for i in range(40)]
            assert proc.command(op="get_all", map="shared", keys=keys) == {
                f"p{other}:{i}": [other, i] for i in range(40)
            }
        assert proc.command(op="size", map="shared") == 40 * len(procs)


def stop_all(procs: list[MemberProcess]) -> None:
    for proc in procs:
        proc.kill()


@pytest.mark.netns
@pytest.mark.timeout(180)
def test_three_hosts_find_each_other_by_mdns_and_serve_each_others_gets(hosts: list[NetnsHost]) -> None:
    cluster = f"hosts-{uuid.uuid4().hex[:8]}"
    procs = start_together(hosts[:3], cluster, "--fast")
    try:
        addresses = wait_members(procs, 3)
        assert addresses == sorted(f"{h.ip}:{PORT}" for h in hosts[:3])
        serve_each_others_gets(procs)
    finally:
        stop_all(procs)


def write_tls_files(directory: Path, ca: trustme.CA, host: NetnsHost) -> list[str]:
    """The ``--tls-*`` options for a member on ``host``: its certificate names its address."""
    cert = ca.issue_cert(host.ip)
    files = {"cert": directory / f"{host.ip}.pem", "key": directory / f"{host.ip}.key"}
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ["--tls-cert", str(files["cert"]), "--tls-key", str(files["key"]), "--tls-ca", str(ca_file)]


@pytest.mark.netns
@pytest.mark.timeout(180)
def test_with_tls_a_host_without_a_certificate_is_kept_out(hosts: list[NetnsHost], tmp_path: Path) -> None:
    cluster = f"hosts-{uuid.uuid4().hex[:8]}"
    ca = trustme.CA()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(
                member,
                host,
                cluster,
                "--fast",
                "--serializer",
                "pickle",
                *write_tls_files(tmp_path, ca, host),
            )
            for host in hosts[:3]
        ]
        secure = [f.result() for f in futures]
    procs = list(secure)
    try:
        wait_members(secure, 3)
        # Same cluster name, announced on the same network, no certificate.
        outsider = member(hosts[3], cluster, "--fast")
        procs.append(outsider)
        serve_each_others_gets(secure)
        # The master of the three found it by mDNS, asked it for its member list, and failed the
        # TLS handshake: logged, and ignored.
        outsider_at = f"{hosts[3].ip}:{PORT}"
        wait_for(
            lambda: any(p.logged(f"ignoring {outsider_at}") for p in secure),
            SETTLE,
            interval=0.2,
            message="the outsider logged as ignored",
        )
        assert outsider.command(op="members") == [outsider_at]
        assert sorted(wait_members(secure, 3)) == sorted(f"{h.ip}:{PORT}" for h in hosts[:3])
        outsider.command(op="set", map="shared", key="p0:0", value="forged")
        assert secure[1].command(op="get", map="shared", key="p0:0") == [0, 0]
        assert outsider.command(op="size", map="shared") == 1
        serve_each_others_gets(secure)
    finally:
        stop_all(procs)
