"""A member's gRPC endpoint as an untrusted peer sees it: raw calls, any bytes (tests only).

`METHODS` describes every servicer method from the generated descriptors, so
a new RPC is covered by the fuzz test without editing it. `RawPeer` calls a
method with a protobuf message (or an iterator of them, for client streams)
or with raw bytes, which travel unchanged (identity serializers).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from peergrid.grid import Grid
from peergrid.transport._pb import events_pb2, map_pb2, membership_pb2, replication_pb2


@dataclass(frozen=True)
class Method:
    """One servicer method."""

    path: str
    """``/package.Service/Method``."""
    name: str
    """``Service.Method``."""
    client_streaming: bool
    server_streaming: bool
    request: Descriptor
    response: Descriptor

    @property
    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.request)

    @property
    def response_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.response)


def _methods() -> dict[str, Method]:
    found = {}
    for module in (membership_pb2, map_pb2, replication_pb2, events_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found[f"{service.name}.{method.name}"] = Method(
                    path=f"/{service.full_name}/{method.name}",
                    name=f"{service.name}.{method.name}",
                    client_streaming=method.client_streaming,
                    server_streaming=method.server_streaming,
                    request=method.input_type,
                    response=method.output_type,
                )
    return found


#: How many messages `RawPeer.call` reads from a server stream before cancelling it. An event
#: subscription sends a heartbeat at once, then one per heartbeat interval: read that one.
STREAM_READS = 4
_READS = {"Events.Subscribe": 1}

#: Every servicer method, by ``Service.Method``.
METHODS = _methods()


class RawPeer:
    """A plain grpc channel to a member, for calls no well-behaved member would make."""

    def __init__(
        self,
        address: str,
        credentials: grpc.ChannelCredentials | None = None,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        options = [("grpc.max_receive_message_length", 256 << 20), *(options or [])]
        if credentials is None:
            self.channel = grpc.insecure_channel(address, options=options)
        else:
            self.channel = grpc.secure_channel(address, credentials, options=options)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, name: str, request: Any, timeout: float = 10.0) -> Any:
        """Call ``Service.Method`` with a message (an iterable of them for client streams).

        Returns the response, or a list of the first `STREAM_READS` responses
        of a server stream (some never end: event subscriptions); raises
        ``grpc.RpcError`` with the member's status.
        """
        method = METHODS[name]
        serialize = _serializer
        deserialize = method.response_class.FromString
        return self._invoke(method, request, serialize, deserialize, timeout)

    def call_bytes(self, name: str, request: bytes | Iterable[bytes], timeout: float = 10.0) -> Any:
        """Like `call`, with raw bytes sent and received unchanged."""
        return self._invoke(METHODS[name], request, None, None, timeout)

    def _invoke(self, method: Method, request: Any, serialize: Any, deserialize: Any, timeout: float) -> Any:
        kinds = {
            (False, False): self.channel.unary_unary,
            (False, True): self.channel.unary_stream,
            (True, False): self.channel.stream_unary,
            (True, True): self.channel.stream_stream,
        }
        factory = kinds[(method.client_streaming, method.server_streaming)]
        stub = factory(method.path, request_serializer=serialize, response_deserializer=deserialize)
        if method.client_streaming and isinstance(request, bytes | Message):
            request = iter([request])
        answer = stub(request, timeout=timeout)
        if method.server_streaming:
            try:
                return list(itertools.islice(answer, _READS.get(method.name, STREAM_READS)))
            finally:
                answer.cancel()
        return answer


def _serializer(message: Message) -> bytes:
    return message.SerializeToString()


def data_of(grids: Iterable[Grid]) -> dict[str, Any]:
    """Every member's every copy: versions and entries, to compare before and after a request."""
    state: dict[str, Any] = {}
    for grid in grids:
        manager = grid._node.manager
        copies = {}
        for p, part in enumerate(manager.parts):
            if part is None:
                continue
            entries = {
                (name, key): (value, expire_at)
                for name, store in part.maps.items()
                for key, value, expire_at in store.items()
            }
            copies[p] = (part.version, entries)
        state[grid.uuid] = copies
    return state


def members_of(grids: Iterable[Grid]) -> dict[str, Any]:
    """Every member's member list (version and members)."""
    return {g.uuid: g._node.membership.members for g in grids}


def stream_frames(peer: RawPeer, frames: Iterable[Message], timeout: float = 10.0) -> Iterator[Any]:
    """Send frames on a MapService.Stream; yield the results as they come."""
    yield from peer.call("MapService.Stream", iter(list(frames)), timeout=timeout)
