"""Transport: the gRPC server and the peer clients, the only package that imports grpc.

Generated code is fenced in ``_pb`` (regenerate with ``python protos/generate.py``);
``convert`` turns its messages into domain objects and back, so no other layer
sees a protobuf message.
"""

from peergrid.transport.client import FrameStream, PeerClient, Peers
from peergrid.transport.server import Handlers, Server

__all__ = ["FrameStream", "Handlers", "PeerClient", "Peers", "Server"]
