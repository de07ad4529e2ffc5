"""The peer client's error border: every failure of a call is a PeerGridError."""

from __future__ import annotations

import asyncio
import concurrent.futures
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
