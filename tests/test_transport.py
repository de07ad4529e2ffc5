"""The peer client's error border: every failure of a call is a PeerGridError."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Iterator

import grpc
import pytest

import peergrid
from peergrid.testing import cluster


@pytest.fixture
def silent_peer() -> Iterator[str]:
    """A gRPC server whose every call waits and never answers (a wedged peer)."""
    release = threading.Event()

    def wait(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(30)
        return b""

    class Silent(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(wait)

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((Silent(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        release.set()
        server.stop(None)


@pytest.mark.timeout(30)
def test_a_call_whose_channel_is_closed_under_it_is_a_peer_unavailable_error(silent_peer: str) -> None:
    # A member's list changed while it waited on a peer (the peer left, its channel dropped):
    # grpc cancels the call, and the caller gets PeerUnavailableError, not a CancelledError
    # that would look like its own task being cancelled.
    with cluster(1) as grids:
        node = grids[0]._node

        async def call_then_drop() -> type[BaseException] | None:
            client = node.peer(silent_peer)
            call = asyncio.ensure_future(client.heartbeat(node.uuid, 1, timeout=10))
            await asyncio.sleep(0.2)
            assert not call.done()
            await node._peers.drop(silent_peer)  # type: ignore[union-attr]
            try:
                await call
            except BaseException as exc:
                return type(exc)
            return None

        assert node.run(call_then_drop(), timeout=20) is peergrid.PeerUnavailableError


@pytest.mark.timeout(60)
def test_a_dead_address_refuses_and_a_wedged_peer_times_out(silent_peer: str) -> None:
    # The master removes members that are silent together only late (they may be starved of
    # CPU), unless their addresses refuse connections: no process serves there. A wedged (or
    # starved, or paused) process's kernel still accepts the connection: a timeout, not refused.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    with cluster(2) as grids:
        node, other = grids[0]._node, grids[1]
        address = other._node.address

        async def refused(target: str) -> bool | None:
            try:
                await node.peer(target).heartbeat(node.uuid, 1, timeout=1.0)
            except peergrid.PeerUnavailableError as exc:
                return exc.refused
            return None  # answered

        assert node.run(refused(address), timeout=10) is None  # its heartbeat stream is open
        assert node.run(refused(silent_peer), timeout=10) is False
        assert node.run(refused(closed), timeout=10) is True
        other.close()  # the stream to it ends; a new connection is refused
        assert node.run(refused(address), timeout=10) is True
