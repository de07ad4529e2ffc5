"""A hostile peer in its own process, driven over stdin (tests only).

``python -m tests.attacker ADDRESS CLUSTER`` speaks raw gRPC (grpc.aio) to the
member at ADDRESS and runs one JSON command per line, answering one JSON line
each. What it opens stays open (subscriptions are read as fast as they come,
unless told not to) until ``release``; end of input releases everything and
exits. Running the attacker in its own process keeps its CPU out of the test
process, where a legitimate member measures its latency.

Commands (``op``):

- ``subscribe`` ``count``, ``interval``, ``values``, ``read`` (default true),
  ``spoof`` (a distinct made-up subscriber uuid per subscription), ``map``:
  open subscriptions; answers how many were accepted (first message
  received) and the refusals by status code, with the first refusal's details.
- ``map_stats`` ``count``, ``size``: MapStats calls, each naming a distinct
  map of ``size`` characters; answers the status codes seen.
- ``streams`` ``count``: frame streams opened and left idle (no frame sent).
- ``connections`` ``count``: TCP connections that never speak HTTP/2
  (half-open from the member's side: the handshake never completes).
- ``stats``: messages received so far on open subscriptions, and how many are open.
- ``release``: cancel and close everything opened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
import uuid
from typing import Any

import grpc

from peergrid.transport._pb import events_pb2, events_pb2_grpc, map_pb2_grpc

_OPEN_TIMEOUT = 20.0  # seconds a subscription may take to answer its first message
_CONCURRENCY = 200  # calls opened at once


class Attacker:
    def __init__(self, address: str, cluster: str) -> None:
        self.address = address
        self.cluster = cluster
        options = [
            ("grpc.max_receive_message_length", 256 << 20),
            ("grpc.max_send_message_length", 256 << 20),
        ]
        self.channel = grpc.aio.insecure_channel(address, options=options)
        self.events = events_pb2_grpc.EventsStub(self.channel)
        self.maps = map_pb2_grpc.MapServiceStub(self.channel)
        self.calls: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.sockets: list[asyncio.StreamWriter] = []
        self.received = 0

    async def run(self, command: dict[str, Any]) -> Any:
        handler = getattr(self, f"do_{command.pop('op')}")
        return await handler(**command)

    async def do_subscribe(
        self,
        count: int,
        interval: float,
        values: bool = False,
        read: bool = True,
        spoof: bool = False,
        map: str = "m",  # noqa: A002 - the request's field name
    ) -> dict[str, Any]:
        outcomes: collections.Counter[str] = collections.Counter()
        details: list[str] = []
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one() -> None:
            request = events_pb2.SubscribeRequest(
                cluster=self.cluster,
                subscriber=uuid.uuid4().hex if spoof else "",
                map=map,
                values=values,
                heartbeat_interval=interval,
            )
            async with gate:
                call = self.events.Subscribe(request)
                try:
                    await asyncio.wait_for(call.read(), _OPEN_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    outcomes[exc.code().name] += 1
                    details.append(exc.details() or "")
                    return
                except TimeoutError:
                    outcomes["NO_ANSWER"] += 1
                    call.cancel()
                    return
            outcomes["OK"] += 1
            self.calls.append(call)
            if read:
                self.tasks.append(asyncio.ensure_future(self._drain(call)))

        await asyncio.gather(*(one() for _ in range(count)))
        return {"accepted": outcomes.pop("OK", 0), "refused": dict(outcomes), "detail": details[:1]}

    async def _drain(self, call: Any) -> None:
        # read(), not `async for`: grpc does not allow both styles on one call.
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            while await call.read() is not grpc.aio.EOF:
                self.received += 1

    async def do_map_stats(self, count: int, size: int) -> dict[str, int]:
        outcomes: collections.Counter[str] = collections.Counter()
        gate = asyncio.Semaphore(_CONCURRENCY if size < 1 << 16 else 1)  # huge ones one at a time

        async def one(i: int) -> None:
            name = f"{i:08d}".ljust(size, "x")
            async with gate:
                try:
                    await self.events.MapStats(events_pb2.MapStatsRequest(cluster=self.cluster, map=name))
                    outcomes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    outcomes[exc.code().name] += 1

        await asyncio.gather(*(one(i) for i in range(count)))
        return dict(outcomes)

    async def do_streams(self, count: int) -> dict[str, int]:
        opened = 0
        for _ in range(count):
            call = self.maps.Stream()  # no frame is ever written
            self.calls.append(call)
            opened += 1
        # Established once the member has the calls (a frame stream answers nothing until a frame).
        await asyncio.gather(*(c.wait_for_connection() for c in self.calls[-count:]), return_exceptions=True)
        return {"opened": opened}

    async def do_connections(self, count: int) -> dict[str, int]:
        host, _, port = self.address.rpartition(":")
        opened = 0
        for _ in range(count):
            try:
                _, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                break
            self.sockets.append(writer)
            opened += 1
        return {"opened": opened}

    async def do_stats(self) -> dict[str, int]:
        live = sum(1 for c in self.calls if not c.done())
        return {"received": self.received, "open": live}

    async def do_release(self) -> dict[str, int]:
        for call in self.calls:
            call.cancel()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.sockets:
            writer.close()
        released = len(self.calls) + len(self.sockets)
        self.calls, self.tasks, self.sockets = [], [], []
        return {"released": released}


async def main(address: str, cluster: str) -> None:
    attacker = Attacker(address, cluster)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while line := await reader.readline():
        try:
            answer = {"ok": True, "result": await attacker.run(json.loads(line))}
        except Exception as exc:
            answer = {"ok": False, "error": repr(exc)}
        print(json.dumps(answer), flush=True)
    await attacker.do_release()
    await attacker.channel.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
