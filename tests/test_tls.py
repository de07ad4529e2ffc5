"""Mutual TLS: a cluster that serves only TLS, and peers without a valid certificate kept out.

Certificates come from trustme: a CA for the cluster, one certificate per
member (an IP subject alternative name, or a cluster-wide name with
``TLSConfig.server_name``), and a second CA that nobody trusts.
"""

from __future__ import annotations

import fractions
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
import trustme

import peergrid
from peergrid import Timing, TLSConfig
from peergrid.partition import partition_of
from peergrid.protocol import Code, Op
from peergrid.serialization import encode_key
from peergrid.testing import TestCluster, cluster
from peergrid.transport import frames
from peergrid.transport._pb import common_pb2, membership_pb2, replication_pb2
from tests.conftest import wait_for
from tests.rawgrpc import METHODS, RawPeer, data_of, members_of


@dataclass(frozen=True)
class Order:
    """A value only pickle carries (the cluster below uses serializer='pickle')."""

    id: int
    lines: frozenset[str]


def tls_for(ca: trustme.CA, *names: str, server_name: str = "") -> TLSConfig:
    """A member's TLS config: a certificate of ``ca`` for ``names``, trusting ``ca``."""
    cert = ca.issue_cert(*names)
    return TLSConfig(
        certificate=b"".join(pem.bytes() for pem in cert.cert_chain_pems),
        private_key=cert.private_key_pem.bytes(),
        ca_certificate=ca.cert_pem.bytes(),
        server_name=server_name,
    )


def channel_credentials(tls: TLSConfig | None, ca: trustme.CA, client_cert: bool) -> grpc.ChannelCredentials:
    """Credentials trusting ``ca``; with ``tls``'s certificate as client certificate if asked."""
    if not client_cert or tls is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem.bytes(),
        private_key=tls.private_key,
        certificate_chain=tls.certificate,
    )


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def stranger() -> trustme.CA:
    """A CA the cluster does not trust."""
    return trustme.CA()


@pytest.fixture(scope="module")
def secure(ca: trustme.CA) -> Iterator[TestCluster]:
    """Three TLS members, each with a certificate of its own, using pickle."""
    with cluster(3, tls=tls_for(ca, "127.0.0.1"), serializer="pickle") as grids:
        grids[0].get_map("m").put_all({f"k{i}": i for i in range(100)})
        assert grids.wait_until_safe()
        yield grids


def cluster_name(grids: TestCluster) -> str:
    return str(grids.options["cluster"])


# -- a TLS cluster works on every path ---------------------------------------------------------


@pytest.mark.timeout(120)
def test_every_path_runs_over_tls_with_pickle_values(ca: trustme.CA, stranger: trustme.CA) -> None:
    # Every member has a certificate of its own; the servers serve TLS only, so each path that
    # works below (joins, heartbeats, frame streams, backups, migration, failover, events) ran
    # over mutual TLS.
    with cluster(3, tls=tls_for(ca, "127.0.0.1"), serializer="pickle", backup_count=1) as grids:
        for grid in grids[1:]:
            assert grid.config.tls is not None
        a, b, c = grids
        orders = {f"o{i}": Order(i, frozenset({f"line{i}", "x"})) for i in range(200)}
        seen: list[object] = []
        heard = threading.Event()

        def on_added(event: object) -> None:
            seen.append(event)
            heard.set()

        a.get_map("orders").add_entry_listener(on_added=on_added)
        b.get_map("orders").put_all(orders)
        assert c.get_map("orders").get_all(list(orders)) == orders
        assert heard.wait(10), "no entry event reached the listener"
        assert b.get_map("orders").replace_if_same("o1", Order(1, frozenset({"line1", "x"})), "done")
        assert not b.get_map("orders").replace_if_same("o2", Order(2, frozenset()), "done")
        assert a.get_map("orders").get("o1") == "done"
        c.get_map("orders").put("frac", fractions.Fraction(1, 3))

        # Migration (Versions, Fetch, Install) to a member joining with its own certificate.
        d = grids.add(tls=tls_for(ca, "127.0.0.1"))
        assert grids.wait_until_safe()
        assert d.get_map("orders").local_stats().owned_entries > 0
        # Failover: promotion and backup rebuilds, over TLS.
        grids.kill(a)
        assert grids.wait_until_safe()
        assert d.get_map("orders").get("frac") == fractions.Fraction(1, 3)
        assert d.get_map("orders").get_all([f"o{i}" for i in range(2, 200)]) == {
            f"o{i}": orders[f"o{i}"] for i in range(2, 200)
        }
        # And none of it was plaintext: a plaintext peer gets nowhere.
        with RawPeer(b.address) as peer, pytest.raises(grpc.RpcError) as info:
            peer.call("Membership.GetMembers", membership_pb2.GetMembersRequest(cluster=cluster_name(grids)))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_one_name_for_the_whole_cluster_with_server_name(ca: trustme.CA) -> None:
    # Certificates that name no address: every member checks the cluster's name instead.
    name = "orders.peergrid.test"
    tls = tls_for(ca, name, server_name=name)
    with cluster(2, tls=tls) as grids:
        grids[0].get_map("m").put("k", 1)
        assert grids[1].get_map("m").get("k") == 1
        # The same certificates, dialled by address, fail the check: the name is what matters.
        with pytest.raises(peergrid.TLSError, match=r"seed at .*TLS handshake"):
            peergrid.Grid(
                cluster=grids.options["cluster"],
                members=[grids[0].address],
                tls=tls_for(ca, name),
                timing=Timing.fast(),
            )


# -- peers without a valid certificate -----------------------------------------------------------


def _requests(grids: TestCluster) -> dict[str, object]:
    """A well-formed request for every method: a member with a certificate would be served."""
    name = cluster_name(grids)
    version = grids[0]._node.membership.members.version
    key = encode_key("k1")
    p = partition_of(key, 271)
    put = frames.ops_to_pb(1, name, version, "intruder", [Op(Code.PUT, p, "m", key, b"\x80\x04K\x07.")])
    get = frames.ops_to_pb(2, name, version, "intruder", [Op(Code.GET, p, "m", key)])
    member = common_pb2.MemberInfo(uuid="e" * 32, address="127.0.0.1:1")
    chunk = replication_pb2.PartitionChunk(cluster=name, partition=p, version=10**6, last=True)
    by_method: dict[str, object] = {
        "Membership.Join": membership_pb2.JoinRequest(
            cluster=name, member=member, partition_count=271, serializer="pickle"
        ),
        "MapService.Execute": put,
        "MapService.Stream": iter([get, put]),
        "Replication.Install": iter([chunk]),
        "Replication.Fetch": replication_pb2.FetchRequest(cluster=name, partition=p),
    }
    for method_name, method in METHODS.items():
        if method_name not in by_method:
            message = method.request_class()
            if "cluster" in method.request.fields_by_name:
                message.cluster = name  # type: ignore[attr-defined]
            by_method[method_name] = message
    return by_method


IntruderCredentials = Callable[[TestCluster, trustme.CA, trustme.CA], grpc.ChannelCredentials | None]

INTRUDERS: dict[str, IntruderCredentials] = {
    "plaintext": lambda grids, ca, stranger: None,
    "tls-without-client-certificate": lambda grids, ca, stranger: channel_credentials(None, ca, False),
    "client-certificate-of-another-ca": lambda grids, ca, stranger: channel_credentials(
        tls_for(stranger, "127.0.0.1"), ca, True
    ),
}


@pytest.mark.parametrize("intruder", sorted(INTRUDERS))
def test_a_peer_without_a_valid_certificate_can_call_no_method(
    secure: TestCluster, ca: trustme.CA, stranger: trustme.CA, intruder: str
) -> None:
    data, members = data_of(secure), members_of(secure)
    credentials = INTRUDERS[intruder](secure, ca, stranger)
    with RawPeer(secure[0].address, credentials) as peer:
        for method, request in _requests(secure).items():
            with pytest.raises(grpc.RpcError) as info:
                peer.call(method, request, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, method
    assert data_of(secure) == data
    assert members_of(secure) == members


def test_a_peer_with_a_valid_certificate_is_served(secure: TestCluster, ca: trustme.CA) -> None:
    # The control for the test above: the same requests, with a certificate of the cluster CA.
    credentials = channel_credentials(tls_for(ca, "127.0.0.1"), ca, True)
    requests = _requests(secure)
    with RawPeer(secure[0].address, credentials) as peer:
        members = peer.call("Membership.GetMembers", requests["Membership.GetMembers"])
        answer = peer.call("MapService.Execute", requests["MapService.Execute"])
    assert [m.uuid for m in members.members] == [g.uuid for g in secure]
    assert len(answer.statuses) == 1


def test_a_member_without_tls_cannot_join(secure: TestCluster) -> None:
    # Its seeds never answer it (the handshake fails on their side); it asks whether they speak
    # TLS, and fails saying so, naming the seed, instead of starting a cluster of its own.
    members = members_of(secure)
    with pytest.raises(peergrid.TLSError, match=r"seed at .*serves TLS and this member does not"):
        peergrid.Grid(cluster=cluster_name(secure), members=[g.address for g in secure], timing=Timing.fast())
    assert members_of(secure) == members


def test_a_member_with_a_certificate_of_another_ca_cannot_join(
    secure: TestCluster, stranger: trustme.CA
) -> None:
    # It does not trust the cluster's certificates either: a TLS error, not a cluster of its own.
    members = members_of(secure)
    with pytest.raises(peergrid.TLSError, match=r"seed at .*TLS handshake"):
        peergrid.Grid(
            cluster=cluster_name(secure),
            members=[secure[0].address],
            tls=tls_for(stranger, "127.0.0.1"),
            serializer="pickle",
            timing=Timing.fast(),
        )
    assert members_of(secure) == members


def test_a_certificate_that_does_not_name_the_members_address_is_refused(
    secure: TestCluster, ca: trustme.CA
) -> None:
    # Signed by the cluster CA, but for another address: the master cannot verify the joiner
    # when it calls it back, so it is not admitted, and the error says why.
    members = members_of(secure)
    with pytest.raises(peergrid.JoinError, match="cannot reach the joining member"):
        peergrid.Grid(
            cluster=cluster_name(secure),
            members=[secure[0].address],
            tls=tls_for(ca, "10.9.9.9"),
            serializer="pickle",
            timing=Timing.fast(),
        )
    assert members_of(secure) == members
    wait_for(lambda: all(len(g.members()) == 3 for g in secure), 5)


def test_tls_config_is_checked(tmp_path) -> None:
    with pytest.raises(peergrid.ConfigError, match="PEM"):
        peergrid.Grid(tls=TLSConfig(b"not pem", b"x", b"y"))
    with pytest.raises(peergrid.ConfigError, match="cannot read the TLS certificate file"):
        TLSConfig.from_files(str(tmp_path / "missing.pem"), "k", "c")
    with pytest.raises(peergrid.ConfigError, match="TLSConfig"):
        peergrid.Grid(tls={"certificate": b""})


# -- this member's own TLS files: each mistake named, before anything is served


def _files(tmp_path, tls: TLSConfig) -> tuple[str, str, str]:
    paths = []
    for name in ("certificate", "private_key", "ca_certificate"):
        path = tmp_path / f"{name}.pem"
        path.write_bytes(getattr(tls, name))
        paths.append(str(path))
    return paths[0], paths[1], paths[2]


def test_swapped_tls_files_are_refused_by_from_files(tmp_path, ca: trustme.CA) -> None:
    cert, key, ca_file = _files(tmp_path, tls_for(ca, "127.0.0.1"))
    assert TLSConfig.from_files(cert, key, ca_file).certificate.startswith(b"-----BEGIN CERTIFICATE")
    with pytest.raises(peergrid.TLSConfigError, match=r"certificate .*holds a PEM .*PRIVATE KEY.*swapped"):
        TLSConfig.from_files(key, cert, ca_file)
    with pytest.raises(peergrid.TLSConfigError, match=r"ca_certificate .*not the cluster CA.*swapped"):
        TLSConfig.from_files(ca_file, key, cert)
    with pytest.raises(peergrid.TLSError):  # a TLSConfigError is a TLSError and a ConfigError
        TLSConfig.from_files(cert, ca_file, key)


def test_a_key_of_another_certificate_is_refused(ca: trustme.CA) -> None:
    mine, other = tls_for(ca, "127.0.0.1"), tls_for(ca, "127.0.0.1")
    mismatched = TLSConfig(mine.certificate, other.private_key, mine.ca_certificate)
    with pytest.raises(peergrid.TLSConfigError, match=r"is not the private key of tls\.certificate"):
        peergrid.Grid(tls=mismatched, serializer="pickle", timing=Timing.fast())


def test_grpc_refusing_the_credentials_at_bind_is_a_tls_config_error(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the cryptography package the pair is not checked up front; grpc then refuses
    # to bind, and the error says that the TLS files (not the address) are the cause.
    monkeypatch.setattr("peergrid.config._check_key_pair", lambda tls, files: None)
    mine, other = tls_for(ca, "127.0.0.1"), tls_for(ca, "127.0.0.1")
    mismatched = TLSConfig(mine.certificate, other.private_key, mine.ca_certificate)
    with pytest.raises(peergrid.TLSConfigError, match="refused this member's TLS credentials"):
        peergrid.Grid(tls=mismatched, serializer="pickle", timing=Timing.fast())
