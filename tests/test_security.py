"""Cluster isolation on every path, the plaintext bind warning, and pickle never loaded by default."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import msgpack
import pytest
import trustme

import peergrid
from peergrid import Timing
from peergrid.partition import partition_of
from peergrid.protocol import Chunk, Code, Effect, MemberList, Op, Terms
from peergrid.serialization import encode_key
from peergrid.testing import TestCluster, cluster
from peergrid.transport import frames
from peergrid.transport._pb import map_pb2, replication_pb2
from tests.rawgrpc import METHODS, RawPeer, data_of, members_of
from tests.test_tls import _requests, tls_for


@pytest.fixture(scope="module")
def pair() -> Iterator[TestCluster]:
    with cluster(2, cluster="isolated") as grids:
        grids[0].get_map("m").put_all({f"k{i}": i for i in range(50)})
        assert grids.wait_until_safe()
        yield grids


# -- another cluster, on every path ------------------------------------------------------------


def _with_cluster(request: object, name: str) -> object:
    """``request`` (a message, or an iterator of them) claiming cluster ``name``."""
    if hasattr(request, "__next__"):
        return iter([_with_cluster(message, name) for message in request])  # type: ignore[attr-defined]
    copy = type(request)()  # type: ignore[call-arg]
    copy.CopyFrom(request)  # type: ignore[attr-defined]
    copy.cluster = name  # type: ignore[attr-defined]
    return copy


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_request_of_another_cluster_is_refused_naming_both_names(pair: TestCluster, method: str) -> None:
    data, members = data_of(pair), members_of(pair)
    request = _with_cluster(_requests(pair)[method], "intruders")
    with RawPeer(pair[1].address) as peer, pytest.raises(grpc.RpcError) as info:
        peer.call(method, request)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'isolated'" in info.value.details()
    assert "'intruders'" in info.value.details()
    assert data_of(pair) == data
    assert members_of(pair) == members


@pytest.mark.timeout(30)
def test_a_member_of_another_cluster_is_refused_on_every_call(pair: TestCluster) -> None:
    # The same refusals through peergrid's own client, as a member of another cluster makes them:
    # each surfaces as ClusterNameMismatchError, and nothing changes.
    data, members = data_of(pair), members_of(pair)
    with peergrid.Grid(cluster="intruders", timing=Timing.fast()) as other:
        node = other._node
        target = pair[1].address
        key = encode_key("k1")
        p = partition_of(key, 271)
        them = MemberList(1, other.uuid, tuple(other.members()))

        def client():  # type: ignore[no-untyped-def]
            return node.peer(target)  # on the member's loop: grpc.aio channels belong to it

        async def fetch_all() -> None:
            async for _ in client().fetch(them, p):
                pass

        async def install() -> None:
            async def chunks():  # type: ignore[no-untyped-def]
                yield Chunk(p, 10**6, (Effect(1, "m", key, b"\x01"),), True)

            await client().install(chunks())

        async def stream() -> None:
            frames_out = await client().open_stream()
            await frames_out.send(1, 1, other.uuid, [Op(Code.PUT, p, "m", key, b"\x01")])
            await frames_out.receive()

        calls = {
            "join": lambda: client().join(node.membership.me, Terms(271, "msgpack")),
            "heartbeat": lambda: client().heartbeat(other.uuid, 1),
            "publish": lambda: client().publish(them),
            "execute (unary frame)": lambda: client().execute(1, other.uuid, [Op(Code.GET, p, "m", key)]),
            "stream (frame stream)": stream,
            "versions": lambda: client().versions(them, [p]),
            "fetch": fetch_all,
            "install": install,
            "release": lambda: client().release(10**6, [p]),
            "merge": lambda: client().merge(them),
        }

        async def run(call):  # type: ignore[no-untyped-def]
            return await call()

        for what, call in calls.items():
            with pytest.raises(peergrid.PeerGridError) as info:
                node.run(run(call), timeout=10)
            if what.startswith("stream"):
                # The stream is refused too; a frame stream reports it as a broken stream.
                assert "isolated" in str(info.value) or "closed" in str(info.value), str(info.value)
            else:
                assert isinstance(info.value, peergrid.ClusterNameMismatchError), (what, info.value)
                assert "'isolated'" in str(info.value)
                assert "'intruders'" in str(info.value)
    assert data_of(pair) == data
    assert members_of(pair) == members


# -- binding without TLS -------------------------------------------------------------------------

RISK = "anyone who can reach this port can read and write every map"


@pytest.mark.parametrize("bind", ["0.0.0.0:0", "[::]:0"])
def test_binding_beyond_loopback_without_tls_warns_of_the_risk(
    bind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="peergrid")
    try:
        grid = peergrid.Grid(bind=bind, timing=Timing.fast())
    except peergrid.PeerGridError as exc:  # pragma: no cover - a host without IPv6
        pytest.skip(f"cannot bind {bind} here: {exc}")
    grid.shutdown()
    warnings = [r for r in caplog.records if RISK in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "TLS" in warnings[0].getMessage()


@pytest.mark.parametrize("bind", ["127.0.0.1:0", "localhost:0", "127.0.0.2:0"])
def test_loopback_without_tls_does_not_warn(bind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="peergrid")
    with peergrid.Grid(bind=bind, timing=Timing.fast()):
        pass
    assert not [r for r in caplog.records if RISK in r.getMessage()]


def test_any_address_with_tls_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="peergrid")
    with peergrid.Grid(bind="0.0.0.0:0", tls=tls_for(trustme.CA(), "127.0.0.1"), timing=Timing.fast()):
        pass
    assert not [r for r in caplog.records if RISK in r.getMessage()]


def test_the_default_bind_is_loopback() -> None:
    with peergrid.Grid(timing=Timing.fast()) as grid:
        assert grid.address.startswith("127.0.0.1:")


# -- pickle payloads against the default serializer -----------------------------------------------


class _CreatesFile:
    """Unpickling this opens (creates) a file: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_a_pickle_payload_sent_to_a_member_is_never_loaded(pair: TestCluster, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_CreatesFile(marker))
    # The payload is live: unpickled, it creates its file (here, in a throwaway process).
    control = tmp_path / "control"
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=pickle.dumps(_CreatesFile(control)),
        check=True,
        timeout=30,
    )
    assert control.exists()

    name = "isolated"
    a, b = pair
    version = a._node.membership.members.version
    key = encode_key("evil")
    p = partition_of(key, 271)
    owner = a if a.owner_of("evil").uuid == a.uuid else b
    backup = b if owner is a else a
    honest = msgpack.packb({"total": 5})
    pair[0].get_map("m").put("honest", {"total": 5})
    honest_key = encode_key("honest")
    hp = partition_of(honest_key, 271)
    honest_owner = a if a.owner_of("honest").uuid == a.uuid else b

    def frame(*ops: Op) -> map_pb2.Frame:
        return frames.ops_to_pb(1, name, version, backup.uuid, list(ops))  # a member's name

    with RawPeer(owner.address) as peer:
        # As a value: stored as bytes, as every value is; the owner never decodes it.
        stored = peer.call("MapService.Execute", frame(Op(Code.PUT, p, "m", key, payload)))
        assert list(stored.statuses) == [0]
    with RawPeer(honest_owner.address) as peer:
        # As replace_if_same's expected value: the owner compares decoded values, with msgpack.
        compared = peer.call(
            "MapService.Execute",
            frame(Op(Code.REPLACE_IF_SAME, hp, "m", honest_key, honest, expect=payload)),
        )
        assert list(compared.statuses) == [0]
        assert list(compared.found) == [False]  # not replaced: msgpack could not decode it
        [streamed] = peer.call(
            "MapService.Stream",
            frame(Op(Code.REPLACE_IF_SAME, hp, "m", honest_key, payload, expect=payload)),
        )
        assert list(streamed.statuses) == [0]
    with RawPeer(backup.address) as peer:
        # In a partition transfer to the backup: stored as bytes.
        chunk = replication_pb2.PartitionChunk(
            cluster=name,
            partition=p,
            version=10**9,
            entries=[map_pb2.Effect(kind=1, map="m", key=key, value=payload)],
            last=True,
            sender=owner.uuid,  # in a member's name: a copy from no member is refused
        )
        peer.call("Replication.Install", iter([chunk]))

    # Read back through the API on both members: the default serializer refuses it, runs nothing.
    for grid in pair:
        with pytest.raises(peergrid.SerializationError):
            grid.get_map("m").get("evil")
        # The owner compares the stored payload with msgpack: not equal, nothing replaced.
        assert grid.get_map("m").replace_if_same("evil", {"x": 1}, {"y": 2}) is False
    assert pair[1].get_map("m").get("honest") == {"total": 5}
    assert not marker.exists(), "a pickle payload was loaded"
    pair[0].get_map("m").delete("evil")
