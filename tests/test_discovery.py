"""Grids that find each other by mDNS (real zeroconf, on loopback, in this process).

Members started at the same moment with ``discovery="mdns"`` and no seeds end
up in one cluster: they find each other within a second or two, join through
the usual checks, and instances that formed before they saw each other merge.
A peer announced by mDNS that fails the checks (no certificate) is ignored.
The multi-host version, one member per network namespace, is in
``test_multihost.py``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
import trustme

import peergrid
from peergrid import Timing
from tests.conftest import wait_for
from tests.netns import loopback_multicast
from tests.test_tls import tls_for

SETTLE = 30.0


@pytest.fixture
def loopback() -> Iterator[None]:
    """mDNS on 127.0.0.1 in the current namespace, MULTICAST set on lo if needed."""
    lo = subprocess.run(
        ["ip", "-o", "link", "show", "dev", "lo"], capture_output=True, text=True, check=False
    )
    if "MULTICAST" not in lo.stdout.split(">", 1)[0] and os.geteuid() != 0:
        pytest.skip("mDNS on loopback needs MULTICAST on lo, and setting it needs root")
    with loopback_multicast():
        yield


def start_together(count: int, **options: object) -> list[peergrid.Grid]:
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(peergrid.Grid, **options) for _ in range(count)]
        return [f.result(timeout=60) for f in futures]


def one_cluster(grids: list[peergrid.Grid]) -> bool:
    uuids = {g.uuid for g in grids}
    return all({m.uuid for m in g.members()} == uuids for g in grids)


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("loopback")
@pytest.mark.parametrize(
    "join_timeout",
    [
        pytest.param(5.0, id="they-see-each-other-while-joining"),  # the lowest uuid forms it
        pytest.param(0.2, id="each-starts-alone-then-they-merge"),
    ],
)
def test_members_started_together_find_each_other_and_form_one_cluster(join_timeout: float) -> None:
    cluster = f"mdns-{uuid.uuid4().hex[:8]}"
    timing = dataclasses.replace(Timing.fast(), join_timeout=join_timeout)
    grids = start_together(3, cluster=cluster, discovery="mdns", timing=timing)
    try:
        wait_for(lambda: one_cluster(grids), SETTLE, message="one cluster of three")
        assert grids[0].wait_until_safe(SETTLE)
        grids[0].get_map("m").put_all({f"k{i}": i for i in range(100)})
        for grid in grids:
            assert grid.get_map("m").get_all([f"k{i}" for i in range(100)]) == {
                f"k{i}": i for i in range(100)
            }
    finally:
        for grid in grids:
            grid._node.kill()


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("loopback")
def test_a_discovered_peer_without_a_certificate_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="peergrid")
    cluster = f"mdns-{uuid.uuid4().hex[:8]}"
    ca = trustme.CA()
    secure = start_together(
        2, cluster=cluster, discovery="mdns", tls=tls_for(ca, "127.0.0.1"), timing=Timing.fast()
    )
    outsider = None
    try:
        wait_for(lambda: one_cluster(secure), SETTLE, message="the TLS members in one cluster")
        outsider = peergrid.Grid(cluster=cluster, discovery="mdns", timing=Timing.fast())
        # The TLS members see it announced, ask it for its member list, fail the handshake:
        # a log line, and nothing else.
        wait_for(
            lambda: any(
                "ignoring" in r.getMessage() and outsider.address in r.getMessage() for r in caplog.records
            ),
            SETTLE,
            message="the outsider logged as ignored",
        )
        assert one_cluster(secure)
        assert [m.uuid for m in outsider.members()] == [outsider.uuid]
        outsider.get_map("m").put("k", "forged")
        assert secure[0].get_map("m").get("k") is None
    finally:
        for grid in [*secure, *([outsider] if outsider else [])]:
            grid._node.kill()


def test_mdns_needs_an_ip_address_to_announce() -> None:
    with pytest.raises(peergrid.ConfigError, match="IP address"):
        peergrid.Grid(discovery="mdns", bind="localhost:0")
