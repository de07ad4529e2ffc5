"""A trivial gRPC key-value servicer: the 'bare gRPC round trip' that peergrid's remote get
is compared with. Bytes in, bytes out, generic handlers, no .proto.

    python -m benchmarks._echo_server --port PORT --stack sync|aio --keys N --value-size B

`Get` (unary) and `Stream` (bidi, one response per request) answer a key with its value
from a dict of N keys, so request and response sizes match a peergrid get. With
``--forward ADDRESS`` (aio), `Stream` first sends each request to that server's `Stream` (one
stream per incoming stream) and answers once it answered: a primary that waits for its
backup, the least a replicated write costs over two aio hops. `Many` (bidi,
aio only) answers a request of newline-separated keys with their values concatenated: the
least a member could do for its share of a get_all.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from benchmarks._workload import Settings, Workload

SERVICE = "peergrid.bench.Echo"
GET = f"/{SERVICE}/Get"
STREAM = f"/{SERVICE}/Stream"
MANY = f"/{SERVICE}/Many"
SEPARATOR = b"\n"
SYNC_WORKERS = 8


def _handlers(table: dict[bytes, bytes], stack: str, forward: str = "") -> grpc.GenericRpcHandler:
    """Sync handlers for the sync server; coroutines for aio (a plain function there would
    hop to a thread pool on every call)."""

    def get(request: bytes, context: object) -> bytes:
        return table.get(request, b"")

    async def get_async(request: bytes, context: object) -> bytes:
        return table.get(request, b"")

    async def stream(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        async for request in requests:
            yield table.get(request, b"")

    async def many(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        async for request in requests:
            yield b"".join([table.get(key, b"") for key in request.split(SEPARATOR)])

    channel = grpc.aio.insecure_channel(forward) if forward else None

    async def relay(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        assert channel is not None
        call = channel.stream_stream(STREAM)()
        try:
            async for request in requests:
                await call.write(request)
                await call.read()  # the backup's ack
                yield table.get(request, b"")
        finally:
            call.cancel()

    if stack == "sync":
        methods = {"Get": grpc.unary_unary_rpc_method_handler(get)}
    else:
        methods = {
            "Get": grpc.unary_unary_rpc_method_handler(get_async),
            "Stream": grpc.stream_stream_rpc_method_handler(relay if forward else stream),
            "Many": grpc.stream_stream_rpc_method_handler(many),
        }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


def _serve_sync(port: int, handler: grpc.GenericRpcHandler) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=SYNC_WORKERS), handlers=[handler])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def _serve_aio(port: int, handler: Callable[[], grpc.GenericRpcHandler]) -> None:
    server = grpc.aio.server(handlers=[handler()])  # made on the running loop (a relay's channel)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stack", choices=["sync", "aio"], required=True)
    parser.add_argument("--keys", type=int, default=Settings.keys)
    parser.add_argument("--value-size", type=int, default=Settings.value_size)
    parser.add_argument("--forward", default="", help="aio: relay each Stream message to this server first")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent stops us with SIGTERM
    workload = Workload(Settings(keys=args.keys, value_size=args.value_size))
    table = {k.encode(): v for k, v in workload.items()}
    if args.stack == "sync":
        _serve_sync(args.port, _handlers(table, args.stack))
    else:
        asyncio.run(_serve_aio(args.port, lambda: _handlers(table, args.stack, args.forward)))


if __name__ == "__main__":
    main()
